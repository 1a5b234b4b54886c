// Energy totals for vehicle performance. Whole minutes come from the per-minute rollups
// (meter_minutes, vehicle_minutes, fed by materialized views); only the partial minutes at an
// interval's edges are read from raw history, with FINAL so a leftover duplicate row counts once.
// The sum therefore equals a sum over the raw rows in the interval. An interval of whole minutes
// (the default window, and links that start and end with it) reads no raw rows at all.
//
// The vehicle's side and its meters' side are one statement: the embedded engine runs one
// statement at a time and each costs a few ms of fixed work (parsing, analysis, planning) before
// it reads anything, which for a single vehicle is most of the answer's time.
import type { ClickHouseClient } from "@clickhouse/client";
import type { MeterInterval } from "./vehicle-links.js";
import { wholeMinutes } from "./window-levels.js";

export { wholeMinutes } from "./window-levels.js";

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

export interface PerformanceTotals {
  readonly vehicle: VehicleTotals;
  readonly meter: MeterTotals;
}

/** A time in epoch ms, as a DateTime64 for comparing with observed_at. */
const ms = (param: string) => `fromUnixTimestamp64Milli({${param}:Int64}, 'UTC')`;
/** A whole-second time in epoch ms, as a DateTime for comparing with minute (cheaper than DateTime64). */
const sec = (param: string) => `toDateTime(intDiv({${param}:Int64}, 1000), 'UTC')`;

/**
 * The vehicle's DC totals over [fromMs, toMs) and the AC totals of the meter intervals, which must
 * not overlap per meter (see meterIntervals), in one statement.
 */
export async function queryPerformanceTotals(
  client: ClickHouseClient,
  vehicleId: string,
  fromMs: number,
  toMs: number,
  intervals: readonly MeterInterval[],
): Promise<PerformanceTotals> {
  if (intervals.length > MAX_METER_INTERVALS) {
    throw new RangeError(`${intervals.length} meter intervals in one window; at most ${MAX_METER_INTERVALS} are supported`);
  }
  const { fullFromMs, fullToMs } = wholeMinutes(fromMs, toMs);
  const params: Record<string, string | number> = { device: vehicleId, fullFrom: fullFromMs, fullTo: fullToMs };
  // Side 0: the vehicle (whole minutes, raw edges); side 1: its meters (the same per interval).
  // Each read costs the engine a few ms of planning whether or not it finds rows, so an edge
  // that is not there is not read.
  const branches = [
    `SELECT 0 AS side, sum(kwh_delivered_dc) AS kwh, sum(battery_temp_sum) AS temp, sum(readings) AS n
     FROM vehicle_minutes
     WHERE device_id = {device:String} AND minute >= ${sec("fullFrom")} AND minute < ${sec("fullTo")}`,
  ];
  if (hasPartialMinutes(fromMs, toMs, fullFromMs, fullToMs)) {
    Object.assign(params, { from: fromMs, to: toMs });
    branches.push(
      `SELECT 0, sum(kwh_delivered_dc), sum(battery_temp), count()
       FROM vehicle_readings FINAL
       WHERE device_id = {device:String} AND observed_at >= ${ms("from")} AND observed_at < ${ms("to")}
         AND NOT (observed_at >= ${ms("fullFrom")} AND observed_at < ${ms("fullTo")})`,
    );
  }
  if (intervals.length > 0) {
    const raw: string[] = [];
    const rollup: string[] = [];
    intervals.forEach((interval, i) => {
      const whole = wholeMinutes(interval.fromMs, interval.toMs);
      Object.assign(params, { [`m${i}`]: interval.meterId, [`ff${i}`]: whole.fullFromMs, [`ft${i}`]: whole.fullToMs });
      // Clauses are built from the index only; every value travels as a query parameter.
      rollup.push(`(device_id = {m${i}:String} AND minute >= ${sec(`ff${i}`)} AND minute < ${sec(`ft${i}`)})`);
      if (!hasPartialMinutes(interval.fromMs, interval.toMs, whole.fullFromMs, whole.fullToMs)) return;
      Object.assign(params, { [`f${i}`]: interval.fromMs, [`t${i}`]: interval.toMs });
      raw.push(
        `(device_id = {m${i}:String} AND observed_at >= ${ms(`f${i}`)} AND observed_at < ${ms(`t${i}`)}` +
          ` AND NOT (observed_at >= ${ms(`ff${i}`)} AND observed_at < ${ms(`ft${i}`)}))`,
      );
    });
    branches.push(`SELECT 1, sum(kwh_consumed_ac), 0, sum(readings) FROM meter_minutes WHERE ${rollup.join(" OR ")}`);
    if (raw.length > 0) branches.push(`SELECT 1, sum(kwh_consumed_ac), 0, count() FROM meter_readings FINAL WHERE ${raw.join(" OR ")}`);
  }
  const result = await client.query({ query: branches.join("\nUNION ALL\n"), query_params: params, format: "JSONCompactEachRow" });
  const rows = await result.json<[number, number, number, string | number]>();
  let dc = 0;
  let temp = 0;
  let vehicleReadings = 0;
  let ac = 0;
  let meterReadings = 0;
  for (const [side, kwh, tempSum, n] of rows) {
    if (Number(side) === 0) {
      dc += Number(kwh);
      temp += Number(tempSum);
      vehicleReadings += Number(n);
    } else {
      ac += Number(kwh);
      meterReadings += Number(n);
    }
  }
  return {
    vehicle: { kwhDeliveredDc: dc, batteryTempSum: temp, readings: vehicleReadings },
    meter: { kwhConsumedAc: ac, readings: meterReadings },
  };
}

/** Whether [fromMs, toMs) holds time outside its whole minutes [fullFromMs, fullToMs). */
function hasPartialMinutes(fromMs: number, toMs: number, fullFromMs: number, fullToMs: number): boolean {
  return fromMs < toMs && (fullFromMs !== fromMs || fullToMs !== toMs);
}
