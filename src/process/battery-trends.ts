// Battery units' trends on their way to the worker, which needs each unit's trend to score its
// readings. As a record of objects keyed by device id, receiving it in the worker cost 0.6–1.5 µs
// per reading of a batch (a third of readings being battery units): the structured clone builds
// a dictionary-mode object and one object per trend, every property name written and read. The
// trends' fields are the scorer's fixed five numbers, so they cross as one Float64Array (moved,
// not copied) beside the ids.
import type { BatteryTrend } from "./scoring/battery-health.js";

/** A trend's fields, in the order they are packed. */
const TREND_FIELDS = ["baselineVoltage", "tempEwma", "errorStreak", "samples", "lastObservedAtMs"] as const satisfies readonly (keyof BatteryTrend)[];

export interface PackedBatteryTrends {
  readonly deviceIds: readonly string[];
  /** Per unit, its trend's TREND_FIELDS in order; NaN where a stored trend had no number. */
  readonly fields: Float64Array;
}

/** The units that have a trend, packed; units whose trend is undefined are left out. */
export function packBatteryTrends(
  deviceIds: readonly string[],
  trends: readonly (Readonly<Record<string, unknown>> | undefined)[],
): PackedBatteryTrends {
  const kept: string[] = [];
  const fields = new Float64Array(deviceIds.length * TREND_FIELDS.length);
  let at = 0;
  deviceIds.forEach((deviceId, i) => {
    const trend = trends[i];
    if (trend === undefined) return;
    kept.push(deviceId);
    for (const field of TREND_FIELDS) {
      const value = trend[field];
      // Live state is a cache that could hold anything: what is not a number is no number, and
      // the scorer then finds the trend unusable and starts the unit afresh, as it would have.
      fields[at++] = typeof value === "number" ? value : NaN;
    }
  });
  return { deviceIds: kept, fields: fields.subarray(0, at) };
}

/** The trends by device id, as the scorer takes them. */
export function unpackBatteryTrends(packed: PackedBatteryTrends): Map<string, BatteryTrend> {
  const trends = new Map<string, BatteryTrend>();
  const { fields } = packed;
  packed.deviceIds.forEach((deviceId, i) => {
    const at = i * TREND_FIELDS.length;
    trends.set(deviceId, {
      baselineVoltage: fields[at]!,
      tempEwma: fields[at + 1]!,
      errorStreak: fields[at + 2]!,
      samples: fields[at + 3]!,
      lastObservedAtMs: fields[at + 4]!,
    });
  });
  return trends;
}
