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
import { queryFleetEfficiency, type DeviceTotalsSource } from "./fleet-efficiency.js";
import { belowEfficiencyThreshold } from "./fleet-summary.js";
import type { LinkSource } from "./vehicle-links.js";

const HOUR_MS = 3_600_000;
const MINUTE_MS = 60_000;

export type FleetAlertKind = "LOW_EFFICIENCY" | "BATTERY_CRITICAL" | "BATTERY_FALLING" | "DEVICE_OFFLINE";

/** Kinds' ranks in the tie-break order. */
const KIND_RANK: Readonly<Record<FleetAlertKind, number>> = { LOW_EFFICIENCY: 0, BATTERY_CRITICAL: 1, BATTERY_FALLING: 2, DEVICE_OFFLINE: 3 };

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
  /** Where every device's window totals are read from; one statement when unset. */
  readonly deviceTotals?: DeviceTotalsSource;
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

/** Where an alert stands in the list: what compareAlerts reads, and what a page token keeps. */
export type AlertPosition = Pick<FleetAlert, "kind" | "deviceId" | "detectedAtMs">;

/** The order alerts are listed in: newest detected first, then by kind, then by device id. */
export function compareAlerts(a: AlertPosition, b: AlertPosition): number {
  return b.detectedAtMs - a.detectedAtMs || KIND_RANK[a.kind] - KIND_RANK[b.kind] || compareDeviceIds(a.deviceId, b.deviceId);
}

/**
 * The first `count` alerts in list order that come after `after` (all when undefined), and
 * whether more follow them. Picked without sorting the whole list: after an outage every device
 * may have an alert, and sorting 20,000 to answer a page of 100 was most of ListAlerts' own time
 * (~250k comparisons; picking the page takes about one per alert).
 */
export function pageOfAlerts<T extends AlertPosition>(alerts: readonly T[], after: AlertPosition | undefined, count: number): { page: T[]; more: boolean } {
  const page: T[] = [];
  let following = 0;
  for (const alert of alerts) {
    if (after !== undefined && compareAlerts(alert, after) <= 0) continue;
    following++;
    if (page.length === count && (count === 0 || compareAlerts(alert, page[count - 1]!) >= 0)) continue;
    // Binary insertion into the page, kept in order; the last one falls off when it is full.
    let low = 0;
    let high = page.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (compareAlerts(page[middle]!, alert) <= 0) low = middle + 1;
      else high = middle;
    }
    page.splice(low, 0, alert);
    if (page.length > count) page.pop();
  }
  return { page, more: following > count };
}

/** Every alert as of options.asOfMs, in no particular order (pageOfAlerts puts a page in order). */
export async function collectFleetAlerts(client: ClickHouseClient, live: LiveStore, options: FleetAlertOptions): Promise<FleetAlert[]> {
  const { asOfMs, offlineAfterMs } = options;
  // Efficiency is judged over a window ending at the last whole minute, read from rollups alone
  // (as GetFleetSummary's): a fleet-wide read of raw rows in a partial minute touches every part
  // holding that minute. Its LOW_EFFICIENCY alerts are detected at that window's end.
  const windowEndMs = Math.floor(asOfMs / MINUTE_MS) * MINUTE_MS;
  const startMs = windowEndMs - options.windowHours * HOUR_MS;
  const [efficiency, survey, falling] = await Promise.all([
    queryFleetEfficiency(client, startMs, windowEndMs, options.links, options.deviceTotals),
    surveyFleet(live, asOfMs - offlineAfterMs),
    queryFallingBatteryCandidates(client, startMs, BATTERY_SCORE_VERSION, options.batteryFallPoints),
  ]);
  // The survey gives what silence needs of every device; the few vehicles below the threshold,
  // battery units at CRITICAL and units that may be falling are then read whole, for their newest
  // reading and score.
  const lowVehicles = efficiency.filter((v) => v.ratio !== undefined && belowEfficiencyThreshold(v.ratio, options.efficiencyThreshold));
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
    if (asOfMs - standing.lastSeenMs > offlineAfterMs) alerts.push(new OfflineAlert(standing.deviceId, standing.lastSeenMs, asOfMs, offlineAfterMs, standing.observedAtMs));
  }
  return alerts;
}

/**
 * A device gone silent. Its message is written when read: a page shows a few of what may be every
 * device's alert after an outage (writing 20,000 took ~8 ms a call). A class, not an object
 * literal with a getter: V8 builds each such literal with an accessor of its own, ~20 ms for
 * 18,000 of them on the 2-core bench machine against ~1 ms for these.
 */
class OfflineAlert implements FleetAlert {
  readonly kind = "DEVICE_OFFLINE";
  readonly detectedAtMs: number;

  constructor(
    readonly deviceId: string,
    private readonly lastSeenMs: number,
    private readonly asOfMs: number,
    offlineAfterMs: number,
    readonly observedAtMs: number | undefined,
  ) {
    this.detectedAtMs = lastSeenMs + offlineAfterMs;
  }

  get message(): string {
    return `nothing received from ${this.deviceId} for ${duration(this.asOfMs - this.lastSeenMs)} (since ${new Date(this.lastSeenMs).toISOString()})`;
  }
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
