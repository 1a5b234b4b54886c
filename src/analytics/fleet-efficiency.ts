// Fleet-wide energy and charging efficiency over a window. Each device's totals come from the
// rollups in one statement: whole hours from meter_hours/vehicle_hours, the whole minutes outside
// them from the minute rollups ordered by time (*_minutes_by_time), and only the partial minutes
// at the window's edges from raw history (window-levels.ts), so they equal sums over the raw rows.
// A vehicle's efficiency is computed exactly as GetVehiclePerformance computes it: DC over the AC
// of the meters it was linked to, while it was linked to them. A meter linked for the whole window
// contributes its window total from that same statement; only intervals that start or end inside
// the window (a vehicle that moved chargers) are summed by a second, narrow query over those
// meters alone. The same per-device totals serve GetVehiclePerformance's default window
// (performance-snapshot.ts).
import type { ClickHouseClient } from "@clickhouse/client";
import { meterIntervals, storedLinks, type LinkSource, type MeterInterval } from "./vehicle-links.js";
import { MAX_METER_INTERVALS } from "./vehicle-performance.js";
import { wholeMinutes, windowLevels } from "./window-levels.js";

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

export interface FleetWindow {
  /** All meters' AC and all vehicles' DC within the window. */
  readonly energy: FleetEnergy;
  /** Every vehicle with readings within the window, in device id order. */
  readonly efficiency: VehicleEfficiency[];
}

const ms = (param: string) => `fromUnixTimestamp64Milli({${param}:Int64}, 'UTC')`;
/** A whole-second time in epoch ms, as a DateTime for comparing with minute and hour columns. */
const sec = (param: string) => `toDateTime(intDiv({${param}:Int64}, 1000), 'UTC')`;

/**
 * One kind's rows of the window at the level each lies in (see window-levels.ts). Every level is
 * read from a table ordered by time first, so each read narrows to its part of the window across
 * all devices, however the parts were merged — except the raw rows, which are ordered by device:
 * a window with partial minutes reads those from every part whose time range they touch. A
 * window on whole minutes (GetFleetSummary's) reads no raw rows at all.
 */
function levels(side: number, columns: { kwh: string; temp: string; rawTemp: string }, tables: { hours: string; minutes: string; raw: string }, raw: boolean): string {
  const branches = [
    `SELECT ${side} AS side, device_id, ${columns.kwh} AS kwh, ${columns.temp} AS temp, readings AS n FROM ${tables.hours}
       WHERE hour >= ${sec("hourFrom")} AND hour < ${sec("hourTo")}`,
    `SELECT ${side}, device_id, ${columns.kwh}, ${columns.temp}, readings FROM ${tables.minutes}
       WHERE minute >= ${sec("fullFrom")} AND minute < ${sec("fullTo")}
         AND NOT (minute >= ${sec("hourFrom")} AND minute < ${sec("hourTo")})`,
  ];
  if (raw) {
    branches.push(`SELECT ${side}, device_id, ${columns.kwh}, ${columns.rawTemp}, 1 FROM ${tables.raw} FINAL
       WHERE observed_at >= ${ms("from")} AND observed_at < ${ms("to")}
         AND NOT (observed_at >= ${ms("fullFrom")} AND observed_at < ${ms("fullTo")})`);
  }
  return branches.join("\nUNION ALL\n");
}

export interface DeviceWindowTotals {
  /** Meters: AC energy consumed; vehicles: DC energy delivered (kWh). */
  readonly kwh: number;
  /** Vehicles: the sum of their readings' battery temperatures (°C); meters: 0. */
  readonly batteryTempSum: number;
  readonly readings: number;
}

export interface FleetDeviceTotals {
  readonly meters: Map<string, DeviceWindowTotals>;
  /** In device id order. */
  readonly vehicles: Map<string, DeviceWindowTotals>;
}

/** Every meter's and vehicle's energy, battery temperature sum and reading count within [fromMs, toMs). */
export async function queryDeviceTotals(client: ClickHouseClient, fromMs: number, toMs: number): Promise<FleetDeviceTotals> {
  const w = windowLevels(fromMs, toMs);
  const raw = w.fullFromMs !== fromMs || w.fullToMs !== toMs;
  const meterColumns = { kwh: "kwh_consumed_ac", temp: "0", rawTemp: "0" };
  const vehicleColumns = { kwh: "kwh_delivered_dc", temp: "battery_temp_sum", rawTemp: "battery_temp" };
  const meterTables = { hours: "meter_hours", minutes: "meter_minutes_by_time", raw: "meter_readings" };
  const vehicleTables = { hours: "vehicle_hours", minutes: "vehicle_minutes_by_time", raw: "vehicle_readings" };
  const result = await client.query({
    query: `SELECT side, device_id, sum(kwh) AS kwh, sum(temp) AS temp, sum(n) AS n FROM (
              ${levels(0, meterColumns, meterTables, raw)}
              UNION ALL
              ${levels(1, vehicleColumns, vehicleTables, raw)}
            )
            GROUP BY side, device_id
            HAVING n > 0
            ORDER BY side, device_id`,
    query_params: { from: w.fromMs, to: w.toMs, fullFrom: w.fullFromMs, fullTo: w.fullToMs, hourFrom: w.hourFromMs, hourTo: w.hourToMs },
    // One JSON document, parsed at once: a row at a time, the client's stream of JSONCompactEachRow
    // cost ~2 µs a row on this process's thread, and this answer has a row per device.
    format: "JSONCompact",
  });
  return deviceTotalsOf((await result.json<TotalsRow>()).data);
}

/**
 * The named devices' totals over [fromMs, toMs), a window of whole minutes, from the minute
 * rollups ordered by device: a narrow read for a few devices, where queryDeviceTotals reads the
 * whole fleet's window.
 */
export async function queryDeviceTotalsOf(client: ClickHouseClient, deviceIds: readonly string[], fromMs: number, toMs: number): Promise<FleetDeviceTotals> {
  const { fullFromMs, fullToMs } = wholeMinutes(fromMs, toMs);
  if (fullFromMs !== fromMs || fullToMs !== toMs) throw new RangeError("queryDeviceTotalsOf reads windows of whole minutes only");
  if (deviceIds.length === 0) return deviceTotalsOf([]);
  const range = `device_id IN {ids:Array(String)} AND minute >= ${sec("from")} AND minute < ${sec("to")}`;
  const result = await client.query({
    // The same columns as queryDeviceTotals, so one parser reads both.
    query: `SELECT 0 AS side, device_id, sum(kwh_consumed_ac) AS kwh, 0 AS temp, sum(readings) AS n FROM meter_minutes WHERE ${range}
              GROUP BY device_id HAVING n > 0
            UNION ALL
            SELECT 1, device_id, sum(kwh_delivered_dc), sum(battery_temp_sum), sum(readings) AS n FROM vehicle_minutes WHERE ${range}
              GROUP BY device_id HAVING n > 0`,
    query_params: { ids: deviceIds, from: fromMs, to: toMs },
    format: "JSONCompact",
  });
  return deviceTotalsOf((await result.json<TotalsRow>()).data);
}

/** A device's window totals as both statements answer them: side (0 meter, 1 vehicle), id, kWh, temperature sum, readings. */
type TotalsRow = [number, string, number, number, string | number];

function deviceTotalsOf(rows: readonly TotalsRow[]): FleetDeviceTotals {
  const meters = new Map<string, DeviceWindowTotals>();
  const vehicles = new Map<string, DeviceWindowTotals>();
  for (const [side, deviceId, kwh, temp, n] of rows) {
    (Number(side) === 0 ? meters : vehicles).set(deviceId, { kwh: Number(kwh), batteryTempSum: Number(temp), readings: Number(n) });
  }
  return { meters, vehicles };
}

/** Every device's totals over a window; queryDeviceTotals, or a copy of them kept up to date (performance-snapshot.ts). */
export type DeviceTotalsSource = (client: ClickHouseClient, fromMs: number, toMs: number) => Promise<FleetDeviceTotals>;

/** The fleet's energy and every vehicle's charging efficiency within [fromMs, toMs). */
export async function queryFleetWindow(
  client: ClickHouseClient,
  fromMs: number,
  toMs: number,
  links: LinkSource = storedLinks(client),
  deviceTotals: DeviceTotalsSource = queryDeviceTotals,
): Promise<FleetWindow> {
  const [totals, linksByVehicle] = await Promise.all([deviceTotals(client, fromMs, toMs), links.linksStartingBefore(toMs)]);
  let kwhConsumedAc = 0;
  for (const meter of totals.meters.values()) kwhConsumedAc += meter.kwh;
  const vehicles: VehicleWindowTotals[] = [];
  let kwhDeliveredDc = 0;
  for (const [vehicleId, vehicle] of totals.vehicles) {
    vehicles.push({ vehicleId, kwhDeliveredDc: vehicle.kwh, readings: vehicle.readings });
    kwhDeliveredDc += vehicle.kwh;
  }

  const intervalsOf = vehicles.map((vehicle) => meterIntervals(linksByVehicle.get(vehicle.vehicleId) ?? [], fromMs, toMs));
  const whole = (interval: MeterInterval) => interval.fromMs === fromMs && interval.toMs === toMs;
  const partialAc = await queryAcByVehicle(
    client,
    intervalsOf.map((intervals) => (intervals.length > MAX_METER_INTERVALS ? [] : intervals.filter((interval) => !whole(interval)))),
  );
  const efficiency = vehicles.map((vehicle, i): VehicleEfficiency => {
    const intervals = intervalsOf[i]!;
    if (intervals.length === 0 || intervals.length > MAX_METER_INTERVALS) {
      return { ...vehicle, linkIntervals: intervals.length, kwhConsumedAc: 0, ratio: undefined };
    }
    let ac = partialAc.get(i) ?? 0;
    for (const interval of intervals) if (whole(interval)) ac += totals.meters.get(interval.meterId)?.kwh ?? 0;
    return { ...vehicle, linkIntervals: intervals.length, kwhConsumedAc: ac, ratio: ac > 0 ? vehicle.kwhDeliveredDc / ac : undefined };
  });
  return { energy: { kwhConsumedAc, kwhDeliveredDc }, efficiency };
}

/** The charging efficiency of every vehicle with readings within [fromMs, toMs). */
export async function queryFleetEfficiency(
  client: ClickHouseClient,
  fromMs: number,
  toMs: number,
  links?: LinkSource,
  deviceTotals?: DeviceTotalsSource,
): Promise<VehicleEfficiency[]> {
  return (await queryFleetWindow(client, fromMs, toMs, links, deviceTotals)).efficiency;
}

/** AC energy per vehicle (by its position in `intervalsByVehicle`) over its meter intervals. */
async function queryAcByVehicle(client: ClickHouseClient, intervalsByVehicle: readonly MeterInterval[][]): Promise<Map<number, number>> {
  const vehicle: number[] = [];
  const meter: string[] = [];
  const from: number[] = [];
  const to: number[] = [];
  const fullFrom: number[] = [];
  const fullTo: number[] = [];
  intervalsByVehicle.forEach((intervals, v) => {
    for (const interval of intervals) {
      const whole = wholeMinutes(interval.fromMs, interval.toMs);
      vehicle.push(v);
      meter.push(interval.meterId);
      from.push(interval.fromMs);
      to.push(interval.toMs);
      fullFrom.push(whole.fullFromMs);
      fullTo.push(whole.fullToMs);
    }
  });
  if (vehicle.length === 0) return new Map();
  const t = (column: string) => `fromUnixTimestamp64Milli(${column}, 'UTC')`;
  const result = await client.query({
    query: `WITH intervals AS (
              SELECT iv.1 AS v, iv.2 AS m, iv.3 AS f, iv.4 AS t, iv.5 AS ff, iv.6 AS ft
              FROM (SELECT arrayJoin(arrayZip({v:Array(UInt32)}, {m:Array(String)}, {f:Array(Int64)}, {t:Array(Int64)},
                                              {ff:Array(Int64)}, {ft:Array(Int64)})) AS iv)
            )
            SELECT v, sum(ac) AS ac FROM (
              SELECT i.v AS v, sum(r.kwh_consumed_ac) AS ac
              FROM meter_minutes AS r INNER JOIN intervals AS i ON r.device_id = i.m
              WHERE r.device_id IN {meters:Array(String)}
                AND r.minute >= ${t("i.ff")} AND r.minute < ${t("i.ft")}
                AND r.minute >= ${t("{minFrom:Int64}")} AND r.minute < ${t("{maxTo:Int64}")}
              GROUP BY v
              UNION ALL
              SELECT i.v AS v, sum(r.kwh_consumed_ac) AS ac
              FROM meter_readings AS r FINAL INNER JOIN intervals AS i ON r.device_id = i.m
              WHERE r.device_id IN {meters:Array(String)}
                AND r.observed_at >= ${t("i.f")} AND r.observed_at < ${t("i.t")}
                AND NOT (r.observed_at >= ${t("i.ff")} AND r.observed_at < ${t("i.ft")})
                AND r.observed_at >= ${t("{minFrom:Int64}")} AND r.observed_at < ${t("{maxTo:Int64}")}
              GROUP BY v
            )
            GROUP BY v`,
    query_params: {
      v: vehicle,
      m: meter,
      meters: [...new Set(meter)],
      f: from,
      t: to,
      ff: fullFrom,
      ft: fullTo,
      minFrom: from.reduce((a, b) => Math.min(a, b)),
      maxTo: to.reduce((a, b) => Math.max(a, b)),
    },
    format: "JSONEachRow",
  });
  const rows = await result.json<{ v: number; ac: number }>();
  return new Map(rows.map((r) => [Number(r.v), Number(r.ac)]));
}
