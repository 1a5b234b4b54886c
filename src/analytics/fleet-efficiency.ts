// Fleet-wide energy and charging efficiency over a window. Totals come from the per-minute rollups
// with only the window's partial edge minutes read from raw history (as for one vehicle, in
// vehicle-performance.ts), so they equal sums over the raw rows. A vehicle's efficiency is
// computed exactly as GetVehiclePerformance computes it: DC over the AC of the meters it was
// linked to, while it was linked to them.
import type { ClickHouseClient } from "@clickhouse/client";
import { listLinksStartingBefore, meterIntervals } from "./vehicle-links.js";
import { MAX_METER_INTERVALS, queryMeterTotals, wholeMinutes } from "./vehicle-performance.js";

/** Vehicles whose AC side is queried at once. */
const METER_QUERY_CONCURRENCY = 4;

export interface FleetEnergy {
  readonly kwhConsumedAc: number;
  readonly kwhDeliveredDc: number;
}

export interface VehicleWindowTotals {
  readonly vehicleId: string;
  readonly kwhDeliveredDc: number;
  readonly readings: number;
}

export interface VehicleEfficiency extends VehicleWindowTotals {
  /** Meter intervals the vehicle was linked to within the window. */
  readonly linkIntervals: number;
  readonly kwhConsumedAc: number;
  /** DC / AC; undefined without a link or without AC energy (or with too many link intervals). */
  readonly ratio: number | undefined;
}

const ms = (param: string) => `fromUnixTimestamp64Milli({${param}:Int64}, 'UTC')`;

function windowParams(fromMs: number, toMs: number) {
  const { fullFromMs, fullToMs } = wholeMinutes(fromMs, toMs);
  return { from: fromMs, to: toMs, fullFrom: fullFromMs, fullTo: fullToMs };
}

/** Raw rows in [from, to) outside the whole minutes [fullFrom, fullTo). */
const EDGES = `observed_at >= ${ms("from")} AND observed_at < ${ms("to")}
               AND NOT (observed_at >= ${ms("fullFrom")} AND observed_at < ${ms("fullTo")})`;
const WHOLE = `minute >= ${ms("fullFrom")} AND minute < ${ms("fullTo")}`;

/** AC and DC energy of the whole fleet within [fromMs, toMs). */
export async function queryFleetEnergy(client: ClickHouseClient, fromMs: number, toMs: number): Promise<FleetEnergy> {
  const result = await client.query({
    query: `SELECT
              (SELECT sum(kwh_consumed_ac) FROM meter_readings FINAL WHERE ${EDGES})
                + (SELECT sum(kwh_consumed_ac) FROM meter_minutes WHERE ${WHOLE}) AS ac,
              (SELECT sum(kwh_delivered_dc) FROM vehicle_readings FINAL WHERE ${EDGES})
                + (SELECT sum(kwh_delivered_dc) FROM vehicle_minutes WHERE ${WHOLE}) AS dc`,
    query_params: windowParams(fromMs, toMs),
    format: "JSONEachRow",
  });
  const [row] = await result.json<{ ac: number | null; dc: number | null }>();
  return { kwhConsumedAc: Number(row?.ac ?? 0), kwhDeliveredDc: Number(row?.dc ?? 0) };
}

/** Every vehicle with readings within [fromMs, toMs), with its DC energy and reading count. */
export async function queryVehicleWindowTotals(client: ClickHouseClient, fromMs: number, toMs: number): Promise<VehicleWindowTotals[]> {
  const result = await client.query({
    query: `SELECT device_id, sum(dc) AS dc, sum(n) AS n FROM (
              SELECT device_id, sum(kwh_delivered_dc) AS dc, count() AS n FROM vehicle_readings FINAL WHERE ${EDGES} GROUP BY device_id
              UNION ALL
              SELECT device_id, sum(kwh_delivered_dc), sum(readings) FROM vehicle_minutes WHERE ${WHOLE} GROUP BY device_id
            )
            GROUP BY device_id
            HAVING n > 0
            ORDER BY device_id`,
    query_params: windowParams(fromMs, toMs),
    format: "JSONEachRow",
  });
  const rows = await result.json<{ device_id: string; dc: number; n: string | number }>();
  return rows.map((r) => ({ vehicleId: r.device_id, kwhDeliveredDc: Number(r.dc), readings: Number(r.n) }));
}

/**
 * The charging efficiency of every vehicle with readings within [fromMs, toMs). One AC query per
 * linked vehicle (a few at a time): fine for fleets of hundreds to a few thousand vehicles.
 */
export async function queryFleetEfficiency(client: ClickHouseClient, fromMs: number, toMs: number): Promise<VehicleEfficiency[]> {
  const [vehicles, links] = await Promise.all([queryVehicleWindowTotals(client, fromMs, toMs), listLinksStartingBefore(client, toMs)]);
  const out: VehicleEfficiency[] = new Array(vehicles.length);
  let next = 0;
  const worker = async () => {
    while (next < vehicles.length) {
      const i = next++;
      const vehicle = vehicles[i]!;
      const intervals = meterIntervals(links.get(vehicle.vehicleId) ?? [], fromMs, toMs);
      if (intervals.length === 0 || intervals.length > MAX_METER_INTERVALS) {
        out[i] = { ...vehicle, linkIntervals: intervals.length, kwhConsumedAc: 0, ratio: undefined };
        continue;
      }
      const meter = await queryMeterTotals(client, intervals);
      const ac = meter.kwhConsumedAc;
      out[i] = { ...vehicle, linkIntervals: intervals.length, kwhConsumedAc: ac, ratio: ac > 0 ? vehicle.kwhDeliveredDc / ac : undefined };
    }
  };
  await Promise.all(Array.from({ length: Math.min(METER_QUERY_CONCURRENCY, vehicles.length) }, worker));
  return out;
}
