// Energy totals for vehicle performance. Whole minutes come from the per-minute rollups
// (meter_minutes, vehicle_minutes, fed by materialized views); only the partial minutes at an
// interval's edges are read from raw history, with FINAL so a leftover duplicate row counts once.
// The sum therefore equals a sum over the raw rows in the interval.
import type { ClickHouseClient } from "@clickhouse/client";
import type { MeterInterval } from "./vehicle-links.js";

const MINUTE_MS = 60_000;

/** Most meter intervals one query may carry (each becomes a clause of the query). */
export const MAX_METER_INTERVALS = 500;

export interface MeterTotals {
  readonly kwhConsumedAc: number;
  readonly readings: number;
}

export interface VehicleTotals {
  readonly kwhDeliveredDc: number;
  readonly batteryTempSum: number;
  readonly readings: number;
}

/**
 * The whole minutes inside [fromMs, toMs): [fullFromMs, fullToMs). Empty (fullFromMs = fullToMs)
 * when the interval holds no whole minute; then everything is read from raw rows.
 */
export function wholeMinutes(fromMs: number, toMs: number): { fullFromMs: number; fullToMs: number } {
  const fullFromMs = Math.ceil(fromMs / MINUTE_MS) * MINUTE_MS;
  const fullToMs = Math.floor(toMs / MINUTE_MS) * MINUTE_MS;
  return fullFromMs < fullToMs ? { fullFromMs, fullToMs } : { fullFromMs: fromMs, fullToMs: fromMs };
}

const ms = (param: string) => `fromUnixTimestamp64Milli({${param}:Int64}, 'UTC')`;

export async function queryVehicleTotals(client: ClickHouseClient, vehicleId: string, fromMs: number, toMs: number): Promise<VehicleTotals> {
  const { fullFromMs, fullToMs } = wholeMinutes(fromMs, toMs);
  const result = await client.query({
    query: `SELECT sum(dc) AS dc, sum(temp) AS temp, sum(n) AS n FROM (
              SELECT sum(kwh_delivered_dc) AS dc, sum(battery_temp) AS temp, count() AS n
              FROM vehicle_readings FINAL
              WHERE device_id = {device:String}
                AND observed_at >= ${ms("from")} AND observed_at < ${ms("to")}
                AND NOT (observed_at >= ${ms("fullFrom")} AND observed_at < ${ms("fullTo")})
              UNION ALL
              SELECT sum(kwh_delivered_dc), sum(battery_temp_sum), sum(readings)
              FROM vehicle_minutes
              WHERE device_id = {device:String} AND minute >= ${ms("fullFrom")} AND minute < ${ms("fullTo")}
            )`,
    query_params: { device: vehicleId, from: fromMs, to: toMs, fullFrom: fullFromMs, fullTo: fullToMs },
    format: "JSONEachRow",
  });
  const [row] = await result.json<{ dc: number; temp: number; n: string | number }>();
  return { kwhDeliveredDc: Number(row?.dc ?? 0), batteryTempSum: Number(row?.temp ?? 0), readings: Number(row?.n ?? 0) };
}

/** AC totals over the meter intervals, which must not overlap per meter (see meterIntervals). */
export async function queryMeterTotals(client: ClickHouseClient, intervals: readonly MeterInterval[]): Promise<MeterTotals> {
  if (intervals.length === 0) return { kwhConsumedAc: 0, readings: 0 };
  if (intervals.length > MAX_METER_INTERVALS) {
    throw new RangeError(`${intervals.length} meter intervals in one window; at most ${MAX_METER_INTERVALS} are supported`);
  }
  const params: Record<string, string | number> = {};
  const raw: string[] = [];
  const rollup: string[] = [];
  intervals.forEach((interval, i) => {
    const { fullFromMs, fullToMs } = wholeMinutes(interval.fromMs, interval.toMs);
    Object.assign(params, { [`m${i}`]: interval.meterId, [`f${i}`]: interval.fromMs, [`t${i}`]: interval.toMs, [`ff${i}`]: fullFromMs, [`ft${i}`]: fullToMs });
    // Clauses are built from the index only; every value travels as a query parameter.
    raw.push(
      `(device_id = {m${i}:String} AND observed_at >= ${ms(`f${i}`)} AND observed_at < ${ms(`t${i}`)}` +
        ` AND NOT (observed_at >= ${ms(`ff${i}`)} AND observed_at < ${ms(`ft${i}`)}))`,
    );
    rollup.push(`(device_id = {m${i}:String} AND minute >= ${ms(`ff${i}`)} AND minute < ${ms(`ft${i}`)})`);
  });
  const result = await client.query({
    query: `SELECT sum(ac) AS ac, sum(n) AS n FROM (
              SELECT sum(kwh_consumed_ac) AS ac, count() AS n FROM meter_readings FINAL WHERE ${raw.join(" OR ")}
              UNION ALL
              SELECT sum(kwh_consumed_ac), sum(readings) FROM meter_minutes WHERE ${rollup.join(" OR ")}
            )`,
    query_params: params,
    format: "JSONEachRow",
  });
  const [row] = await result.json<{ ac: number; n: string | number }>();
  return { kwhConsumedAc: Number(row?.ac ?? 0), readings: Number(row?.n ?? 0) };
}
