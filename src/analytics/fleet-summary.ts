// The fleet summary's distributions, from the vehicles' efficiency over the window and every
// device's live state: efficiency buckets, battery units by latest level, online and offline.
import type { FleetSurvey } from "../store/live/live-store.js";
import type { VehicleEfficiency } from "./fleet-efficiency.js";

/** Lower bounds of the efficiency buckets: 0.1 wide from 0 to 1, then one from 1 up. */
export const EFFICIENCY_BUCKET_BOUNDS: readonly number[] = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1];

/** Levels always listed, in this order; units not (yet) scored are listed only when there are some. */
const LEVELS = ["OK", "WARN", "CRITICAL"] as const;

export interface FleetDistributions {
  readonly efficiencyBuckets: { lowerBound: number; upperBound: number | undefined; vehicles: number }[];
  readonly vehiclesWithoutEfficiency: number;
  /** Battery units by their latest stored level ("" = not scored). */
  readonly batteryLevels: { level: string; devices: number }[];
  readonly online: number;
  readonly offline: number;
}

/** The distributions; survey's online count decides online and offline. */
export function summarizeFleet(efficiency: readonly VehicleEfficiency[], survey: FleetSurvey): FleetDistributions {
  const buckets = EFFICIENCY_BUCKET_BOUNDS.map((lowerBound, i) => ({
    lowerBound,
    upperBound: EFFICIENCY_BUCKET_BOUNDS[i + 1],
    vehicles: 0,
  }));
  let withoutEfficiency = 0;
  for (const v of efficiency) {
    if (v.ratio === undefined) {
      withoutEfficiency++;
      continue;
    }
    buckets[bucketOf(v.ratio)]!.vehicles++;
  }

  // The usual levels first, in order; any other (units not scored) after them, by name.
  const levels = new Map<string, number>(LEVELS.map((l) => [l, 0]));
  for (const [level, devices] of [...survey.batteryLevels].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    levels.set(level, (levels.get(level) ?? 0) + devices);
  }
  return {
    efficiencyBuckets: buckets,
    vehiclesWithoutEfficiency: withoutEfficiency,
    batteryLevels: [...levels].map(([level, devices]) => ({ level, devices })),
    online: survey.online,
    offline: survey.devices - survey.online,
  };
}

/**
 * How far below a bound a ratio may fall and still count as reaching it. Energy summed from
 * rollups, in whatever order the engine adds them, equals a sum over raw rows only to
 * floating-point tolerance: a vehicle at exactly 70 % (DC 10.5 / AC 15) may come out as
 * 0.6999999999999999 or 0.7 depending on that order, and must land in one bucket either way.
 */
export const BUCKET_BOUND_TOLERANCE = 1e-9;

/**
 * Whether a vehicle's ratio is below the efficiency alert threshold, with the buckets' tolerance:
 * a ratio that equals the threshold in exact arithmetic (DC 17 / AC 20 against 0.85) is not below
 * it, however its sums were added — so GetVehiclePerformance and ListAlerts, which add them in
 * different orders, judge every vehicle alike.
 */
export function belowEfficiencyThreshold(ratio: number, threshold: number): boolean {
  return ratio < threshold - BUCKET_BOUND_TOLERANCE;
}

/** The bucket of a ratio: the last whose lower bound it reaches (bounds are exact in decimal). */
function bucketOf(ratio: number): number {
  for (let i = EFFICIENCY_BUCKET_BOUNDS.length - 1; i > 0; i--) {
    if (ratio >= EFFICIENCY_BUCKET_BOUNDS[i]! - BUCKET_BOUND_TOLERANCE) return i;
  }
  return 0;
}
