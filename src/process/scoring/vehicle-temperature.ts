// Temperature risk for an EV battery while it charges: a documented heuristic, version 1.
// Pure and synchronous, like every scorer (docs/scoring.md).
import type { HealthLevel } from "./health-level.js";

/** The version to store with every level this module produces. */
export const VEHICLE_SCORE_VERSION = 1;

/**
 * Version 1's thresholds, in °C. Vehicle readings are taken around charging sessions, so the
 * cold end follows Li-ion charging limits: below 0 °C charging plates lithium on the anode (the
 * BMS should throttle; worth a look), and below −20 °C the pack is outside even its discharge
 * range. The warm end follows the product's rule: from 40 °C ageing speeds up, from 50 °C the pack
 * is past most cells' charging limit (45 °C) with margin gone.
 */
export const VEHICLE_TEMPERATURE_V1 = {
  /** Below this: CRITICAL. */
  criticalBelowC: -20,
  /** Below this (and at or above criticalBelowC): WARN. */
  warnBelowC: 0,
  /** From this (and below criticalFromC): WARN. */
  warnFromC: 40,
  /** From this up: CRITICAL. */
  criticalFromC: 50,
} as const;

const V1 = VEHICLE_TEMPERATURE_V1;

/**
 * The risk a battery temperature carries during charging:
 * CRITICAL below −20 °C, WARN from −20 to below 0 °C, OK from 0 to below 40 °C,
 * WARN from 40 to below 50 °C, CRITICAL from 50 °C up.
 *
 * Throws RangeError for a non-finite temperature (validation rejects those before scoring), which
 * would otherwise compare false everywhere and pass as OK.
 */
export function vehicleTemperatureRisk(batteryTempC: number): HealthLevel {
  if (!Number.isFinite(batteryTempC)) {
    throw new RangeError(`vehicleTemperatureRisk: batteryTempC must be a finite number, got ${batteryTempC}`);
  }
  if (batteryTempC < V1.criticalBelowC || batteryTempC >= V1.criticalFromC) return "CRITICAL";
  if (batteryTempC < V1.warnBelowC || batteryTempC >= V1.warnFromC) return "WARN";
  return "OK";
}
