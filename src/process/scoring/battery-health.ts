// Health score for battery backup units: a documented heuristic, version 1.
//
// Pure and synchronous: no I/O, no clock, no randomness, so it runs inline or inside a Piscina
// worker and gives the same answer for the same input on every machine. The only memory between
// readings is the BatteryTrend the caller keeps in the unit's live state and passes back.
//
// Every number the rules use lives in BATTERY_SCORE_V1 below. A different algorithm, or different
// numbers, is a new version: stored rows carry the version that scored them and are never
// rewritten (docs/scoring.md).
import type { HealthLevel } from "./health-level.js";

export type { HealthLevel } from "./health-level.js";

/** The version stamped on every score this module produces. */
export const BATTERY_SCORE_VERSION = 1;

export type Recommendation = "NONE" | "INSPECT" | "SERVICE" | "REPLACE";

/** Why points were taken off; stable tags, safe to store and match on. */
export type BatteryReason =
  | "HEAT"
  | "SUSTAINED_HEAT"
  | "VOLTAGE_SAG"
  | "SEVERE_SAG"
  | "ERROR_CODES"
  | "REPEATED_ERRORS";

/**
 * What one unit's score remembers from one reading to the next. Undefined for a unit never seen.
 * Its meaning belongs to BATTERY_SCORE_VERSION 1: a later version may not read it the same way.
 */
export interface BatteryTrend {
  /** The unit's own reference voltage, in V: rises quickly, falls slowly (see baselineAlpha*). */
  baselineVoltage: number;
  /** Exponentially weighted moving average of temperature, in °C. */
  tempEwma: number;
  /** How many consecutive in-order readings, up to the latest, carried at least one error code. */
  errorStreak: number;
  /** How many in-order readings have been folded into this trend. */
  samples: number;
  /** observed_at of the newest reading folded in, epoch ms. */
  lastObservedAtMs: number;
}

export interface BatteryInput {
  /** Pack voltage, in V. */
  readonly voltage: number;
  /** Pack temperature, in °C. */
  readonly temperature: number;
  /** Error codes the unit reported with this reading; duplicates count once. */
  readonly errorCodes: readonly string[];
  /** When the unit observed the reading, epoch ms. */
  readonly observedAtMs: number;
}

export interface BatteryScore {
  /** 100 is healthy, 0 is the worst; an integer. */
  score: number;
  level: HealthLevel;
  recommendation: Recommendation;
  /** The rules that took points off (before rounding), in a fixed order; empty when none did. */
  reasons: BatteryReason[];
  /** BATTERY_SCORE_VERSION: store it with the score. */
  version: number;
  /** The trend to keep for the next reading (the same object when the reading was out of order). */
  trend: BatteryTrend;
}

/** A piecewise-linear curve: (x, y) points with ascending x; flat before the first and after the last. */
type Curve = readonly (readonly [x: number, y: number])[];

/**
 * Version 1's numbers, all in one place. Penalties are points off 100.
 */
export const BATTERY_SCORE_V1 = {
  /**
   * Heat penalty by temperature (°C → points). Li-ion backup packs age fastest above ~35 °C and
   * most datasheets stop at 45 °C (charge) and 60 °C (discharge): nothing up to 35, 15 at 45,
   * 40 at 55, 60 from 60 up.
   */
  heatCurve: [
    [35, 0],
    [45, 15],
    [55, 40],
    [60, 60],
  ] as Curve,
  /** Weight of the newest reading in the temperature EWMA; 0.2 needs ~3 hot readings in a row to move it. */
  tempEwmaAlpha: 0.2,
  /** The temperature EWMA above which heat counts as sustained, °C (strictly above). */
  sustainedHeatC: 45,
  /** Readings the trend must hold before heat can count as sustained. */
  sustainedHeatMinSamples: 3,
  /** Extra points off while heat is sustained: heat that lasts ages the pack, a spike does not. */
  sustainedHeatPenalty: 15,
  /**
   * Weight of a reading above the baseline: the baseline rises quickly to the unit's own resting
   * or float voltage, whatever its nominal (12, 48, 400 V …).
   */
  baselineAlphaUp: 0.2,
  /**
   * Weight of a reading below the baseline: small, so a 10 % sag stays visible for ~130 readings
   * instead of becoming the new normal at once.
   */
  baselineAlphaDown: 0.01,
  /**
   * Sag penalty by (baseline − voltage) / baseline (fraction → points): nothing up to 3 %, 25 at
   * 10 %, 40 from 15 % up. A voltage above the baseline is no sag.
   */
  sagCurve: [
    [0.03, 0],
    [0.1, 25],
    [0.15, 40],
  ] as Curve,
  /** A sag strictly above this fraction is SEVERE_SAG: a persistent cause (worn or failed cells). */
  severeSagFraction: 0.15,
  /** Points off per distinct error code in this reading … */
  errorCodePenalty: 10,
  /** … up to this many. */
  maxErrorCodesPenalty: 30,
  /** Consecutive readings with codes (this one included) that make errors REPEATED_ERRORS. */
  repeatedErrorStreak: 3,
  /** Extra points off for repeated errors: a fault that keeps coming back is not a glitch. */
  repeatedErrorsPenalty: 20,
  /** Lowest score that is OK. */
  okMinScore: 70,
  /** Lowest score that is WARN; below it is CRITICAL. */
  warnMinScore: 40,
} as const;

const V1 = BATTERY_SCORE_V1;

/** The level a score falls in: ≥ 70 OK, 40–69 WARN, < 40 CRITICAL. */
export function healthLevelForScore(score: number): HealthLevel {
  if (score >= V1.okMinScore) return "OK";
  if (score >= V1.warnMinScore) return "WARN";
  return "CRITICAL";
}

/**
 * Scores one battery reading against the unit's trend and returns the trend to keep.
 *
 * A reading observed before trend.lastObservedAtMs (a backlog arriving late) is still scored, on
 * its own values against the trend as it stands, but is not folded in: the trend comes back as
 * the same object, unchanged. Its persistence rules fire only when the reading itself shows the
 * symptom (heat above 45 °C, at least one code) and the stored trend says it persists. A reading
 * at exactly lastObservedAtMs is another reading of that moment and is folded in.
 *
 * Throws RangeError for a non-finite voltage, temperature or observedAtMs (validation rejects
 * those before scoring). A trend with a non-finite or impossible field is discarded, as if the
 * unit were new: a fresh start beats a NaN that would stick forever.
 */
export function scoreBattery(input: BatteryInput, trend: BatteryTrend | undefined): BatteryScore {
  requireFinite("voltage", input.voltage);
  requireFinite("temperature", input.temperature);
  requireFinite("observedAtMs", input.observedAtMs);

  const prior = trend !== undefined && isUsableTrend(trend) ? trend : undefined;
  const distinctCodes = new Set(input.errorCodes).size;
  const hasCodes = distinctCodes > 0;
  const inOrder = prior === undefined || input.observedAtMs >= prior.lastObservedAtMs;

  // Sag is judged against the baseline before this reading, so a reading never softens its own sag.
  const sag = prior === undefined || prior.baselineVoltage <= 0 ? 0 : (prior.baselineVoltage - input.voltage) / prior.baselineVoltage;

  let next: BatteryTrend;
  let sustainedHeat: boolean;
  let repeatedErrors: boolean;
  if (inOrder) {
    next = foldIn(prior, input, hasCodes);
    sustainedHeat = next.tempEwma > V1.sustainedHeatC && next.samples >= V1.sustainedHeatMinSamples;
    repeatedErrors = next.errorStreak >= V1.repeatedErrorStreak;
  } else {
    // prior is defined here: a reading can only be out of order against a trend.
    next = trend as BatteryTrend;
    const p = prior as BatteryTrend;
    sustainedHeat =
      input.temperature > V1.sustainedHeatC && p.tempEwma > V1.sustainedHeatC && p.samples >= V1.sustainedHeatMinSamples;
    repeatedErrors = hasCodes && p.errorStreak >= V1.repeatedErrorStreak;
  }

  const reasons: BatteryReason[] = [];
  let penalty = 0;

  const heat = curve(V1.heatCurve, input.temperature);
  if (heat > 0) {
    penalty += heat;
    reasons.push("HEAT");
  }
  if (sustainedHeat) {
    penalty += V1.sustainedHeatPenalty;
    reasons.push("SUSTAINED_HEAT");
  }
  const sagPoints = curve(V1.sagCurve, sag);
  if (sagPoints > 0) {
    penalty += sagPoints;
    reasons.push("VOLTAGE_SAG");
  }
  const severeSag = sag > V1.severeSagFraction;
  if (severeSag) reasons.push("SEVERE_SAG");
  if (hasCodes) {
    penalty += Math.min(distinctCodes * V1.errorCodePenalty, V1.maxErrorCodesPenalty);
    reasons.push("ERROR_CODES");
  }
  if (repeatedErrors) {
    penalty += V1.repeatedErrorsPenalty;
    reasons.push("REPEATED_ERRORS");
  }

  const score = Math.round(Math.min(100, Math.max(0, 100 - penalty)));
  const level = healthLevelForScore(score);
  const persistent = sustainedHeat || repeatedErrors || severeSag;
  return {
    score,
    level,
    recommendation: recommend(level, persistent),
    reasons,
    version: BATTERY_SCORE_VERSION,
    trend: next,
  };
}

function recommend(level: HealthLevel, persistentCause: boolean): Recommendation {
  switch (level) {
    case "OK":
      return "NONE";
    case "WARN":
      return "INSPECT";
    case "CRITICAL":
      return persistentCause ? "REPLACE" : "SERVICE";
  }
}

/** The trend after an in-order reading; the first reading initialises every average from itself. */
function foldIn(prior: BatteryTrend | undefined, input: BatteryInput, hasCodes: boolean): BatteryTrend {
  if (prior === undefined) {
    return {
      baselineVoltage: input.voltage,
      tempEwma: input.temperature,
      errorStreak: hasCodes ? 1 : 0,
      samples: 1,
      lastObservedAtMs: input.observedAtMs,
    };
  }
  const alpha = input.voltage >= prior.baselineVoltage ? V1.baselineAlphaUp : V1.baselineAlphaDown;
  return {
    baselineVoltage: prior.baselineVoltage + alpha * (input.voltage - prior.baselineVoltage),
    tempEwma: prior.tempEwma + V1.tempEwmaAlpha * (input.temperature - prior.tempEwma),
    errorStreak: hasCodes ? prior.errorStreak + 1 : 0,
    samples: prior.samples + 1,
    lastObservedAtMs: input.observedAtMs,
  };
}

function isUsableTrend(t: BatteryTrend): boolean {
  return (
    Number.isFinite(t.baselineVoltage) &&
    t.baselineVoltage >= 0 &&
    Number.isFinite(t.tempEwma) &&
    Number.isInteger(t.errorStreak) &&
    t.errorStreak >= 0 &&
    Number.isInteger(t.samples) &&
    t.samples >= 1 &&
    Number.isFinite(t.lastObservedAtMs)
  );
}

function curve(points: Curve, x: number): number {
  const first = points[0];
  const last = points[points.length - 1];
  if (first === undefined || last === undefined) return 0;
  if (x <= first[0]) return first[1];
  if (x >= last[0]) return last[1];
  for (let i = 1; i < points.length; i++) {
    const [x1, y1] = points[i] as readonly [number, number];
    if (x <= x1) {
      const [x0, y0] = points[i - 1] as readonly [number, number];
      return y0 + ((x - x0) / (x1 - x0)) * (y1 - y0);
    }
  }
  return last[1];
}

function requireFinite(name: string, value: number): void {
  if (!Number.isFinite(value)) throw new RangeError(`scoreBattery: ${name} must be a finite number, got ${value}`);
}
