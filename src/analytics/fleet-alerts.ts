// What needs attention across the fleet, as of one moment: vehicles charging below the efficiency
// threshold over a window (as GetVehiclePerformance judges them), battery units whose latest
// level is CRITICAL or whose score fell fast (by some points from its highest in the window), and
// devices silent for longer than the inactivity timeout. Live state (every device's newest reading
// and last arrival) comes from the live store; efficiency and score peaks from ClickHouse.
import type { ClickHouseClient } from "@clickhouse/client";
import { surveyFleet } from "../store/live/live-pages.js";
import { compareDeviceIds, healthLevelOf, type LiveStore } from "../store/live/live-store.js";
import { BATTERY_SCORE_VERSION } from "../process/scoring/battery-health.js";
import { queryFallingBatteryCandidates } from "./battery-health.js";
import { queryFleetEfficiency } from "./fleet-efficiency.js";
import type { LinkSource } from "./vehicle-links.js";

const HOUR_MS = 3_600_000;
const MINUTE_MS = 60_000;

export type FleetAlertKind = "LOW_EFFICIENCY" | "BATTERY_CRITICAL" | "BATTERY_FALLING" | "DEVICE_OFFLINE";

/** Kinds in their tie-break order. */
const KIND_ORDER: readonly FleetAlertKind[] = ["LOW_EFFICIENCY", "BATTERY_CRITICAL", "BATTERY_FALLING", "DEVICE_OFFLINE"];

export interface FleetAlert {
  readonly kind: FleetAlertKind;
  readonly deviceId: string;
  readonly message: string;
  readonly detectedAtMs: number;
  /** The device's newest reading's observed_at; undefined when live state does not know it. */
  readonly observedAtMs: number | undefined;
}

export interface FleetAlertOptions {
  /** Where vehicle–meter links are read from; storage when unset. */
  readonly links?: LinkSource;
  readonly asOfMs: number;
  /** The window over which efficiency is judged, ending at the last whole minute at asOfMs. */
  readonly windowHours: number;
  readonly efficiencyThreshold: number;
  readonly offlineAfterMs: number;
  /**
   * A battery unit not at CRITICAL whose newest score is this many points or more below its
   * highest since the window's first hour began is falling fast.
   */
  readonly batteryFallPoints: number;
}

/** The order alerts are listed in: newest detected first, then by kind, then by device id. */
export function compareAlerts(a: Pick<FleetAlert, "kind" | "deviceId" | "detectedAtMs">, b: typeof a): number {
  return (
    b.detectedAtMs - a.detectedAtMs || KIND_ORDER.indexOf(a.kind) - KIND_ORDER.indexOf(b.kind) || compareDeviceIds(a.deviceId, b.deviceId)
  );
}

/** Every alert as of options.asOfMs, in list order. */
export async function collectFleetAlerts(client: ClickHouseClient, live: LiveStore, options: FleetAlertOptions): Promise<FleetAlert[]> {
  const { asOfMs, offlineAfterMs } = options;
  // Efficiency is judged over a window ending at the last whole minute, read from rollups alone
  // (as GetFleetSummary's): a fleet-wide read of raw rows in a partial minute touches every part
  // holding that minute. Its LOW_EFFICIENCY alerts are detected at that window's end.
  const windowEndMs = Math.floor(asOfMs / MINUTE_MS) * MINUTE_MS;
  const startMs = windowEndMs - options.windowHours * HOUR_MS;
  const [efficiency, survey, falling] = await Promise.all([
    queryFleetEfficiency(client, startMs, windowEndMs, options.links),
    surveyFleet(live, asOfMs - offlineAfterMs),
    queryFallingBatteryCandidates(client, startMs, BATTERY_SCORE_VERSION, options.batteryFallPoints),
  ]);
  // The survey gives what silence needs of every device; the few vehicles below the threshold,
  // battery units at CRITICAL and units that may be falling are then read whole, for their newest
  // reading and score.
  const lowVehicles = efficiency.filter((v) => v.ratio !== undefined && v.ratio < options.efficiencyThreshold);
  const critical = survey.attention.filter((s) => s.level === "CRITICAL");
  const details = await live.getLiveState([
    ...lowVehicles.map((v) => v.vehicleId),
    ...critical.map((s) => s.deviceId),
    ...falling.map((f) => f.deviceId),
  ]);
  const vehicleStates = details.slice(0, lowVehicles.length);
  const criticalStates = details.slice(lowVehicles.length, lowVehicles.length + critical.length);
  const fallingStates = details.slice(lowVehicles.length + critical.length);
  const alerts: FleetAlert[] = [];

  lowVehicles.forEach((v, i) => {
    alerts.push({
      kind: "LOW_EFFICIENCY",
      deviceId: v.vehicleId,
      message:
        `charging efficiency over the ${options.windowHours} h window is ${percent(v.ratio!)} ` +
        `(${round(v.kwhDeliveredDc)} kWh DC / ${round(v.kwhConsumedAc)} kWh AC), below the ${percent(options.efficiencyThreshold)} threshold`,
      detectedAtMs: windowEndMs,
      observedAtMs: vehicleStates[i]?.observedAtMs,
    });
  });
  criticalStates.forEach((state) => {
    // A unit that left CRITICAL between the survey and this read is judged by its newer reading.
    if (state === undefined || healthLevelOf(state.values) !== "CRITICAL") return;
    alerts.push({
      kind: "BATTERY_CRITICAL",
      deviceId: state.deviceId,
      message: `battery unit ${state.deviceId} scored ${String(state.values.health_score)} of 100 (CRITICAL): ${String(state.values.recommendation).toLowerCase()} it`,
      detectedAtMs: state.observedAtMs,
      observedAtMs: state.observedAtMs,
    });
  });
  falling.forEach(({ deviceId, peakScore }, i) => {
    const state = fallingStates[i];
    // Judged by the newest reading: a unit at CRITICAL has its own alert, and a score of another
    // version is not comparable with the peak.
    if (state === undefined || healthLevelOf(state.values) === "CRITICAL" || state.values.score_version !== BATTERY_SCORE_VERSION) return;
    const score = Number(state.values.health_score);
    if (!(peakScore - score >= options.batteryFallPoints)) return;
    alerts.push({
      kind: "BATTERY_FALLING",
      deviceId,
      message: `battery unit ${deviceId} scored ${score} of 100, down ${peakScore - score} points from ${peakScore} within the ${options.windowHours} h window`,
      detectedAtMs: state.observedAtMs,
      observedAtMs: state.observedAtMs,
    });
  });
  for (const standing of survey.attention) {
    const silentMs = asOfMs - standing.lastSeenMs;
    if (silentMs > offlineAfterMs) {
      alerts.push({
        kind: "DEVICE_OFFLINE",
        deviceId: standing.deviceId,
        // Written when read: a page shows a few of what may be every device's alert after an
        // outage, and writing 20,000 took ~8 ms a call against ~4 ms for the getters.
        get message() {
          return `nothing received from ${standing.deviceId} for ${duration(silentMs)} (since ${new Date(standing.lastSeenMs).toISOString()})`;
        },
        detectedAtMs: standing.lastSeenMs + offlineAfterMs,
        observedAtMs: standing.observedAtMs,
      });
    }
  }
  return alerts.sort(compareAlerts);
}

const percent = (ratio: number) => `${(ratio * 100).toFixed(1)} %`;
const round = (kwh: number) => Math.round(kwh * 1000) / 1000;

function duration(ms: number): string {
  const minutes = Math.floor(ms / 60_000);
  if (minutes < 1) return `${Math.floor(ms / 1000)} s`;
  if (minutes < 120) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  return hours < 48 ? `${hours} h` : `${Math.floor(hours / 24)} d`;
}
