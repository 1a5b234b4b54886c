// FleetService: vehicle–meter links, vehicle charging performance, live state, battery health,
// alerts and fleet totals. Translates between the wire and the analytics queries (src/analytics/)
// and the live store; the numbers are computed there and in ClickHouse.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { randomBytes } from "node:crypto";
import type { ClickHouseClient } from "@clickhouse/client";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { LRUCache } from "lru-cache";
import {
  AlertKind,
  FleetService,
  type GetDeviceHealthRequest,
  type GetDeviceHealthResponseSchema,
  type GetLiveStateRequest,
  type GetLiveStateResponseSchema,
  type GetFleetSummaryRequest,
  type GetFleetSummaryResponseSchema,
  type GetVehiclePerformanceRequest,
  type GetVehiclePerformanceResponseSchema,
  type ListAlertsRequest,
  type ListAlertsResponseSchema,
  type LinkVehicleToMeterRequest,
  type LinkVehicleToMeterResponseSchema,
  type ListVehicleLinksRequest,
  type ListVehicleLinksResponseSchema,
  type VehicleLinkSchema,
  type WatchLiveStateRequest,
  type WatchLiveStateResponseSchema,
} from "../../gen/wattstream/fleet/v1/fleet_service_pb.js";
import { healthWindow, queryHealthTrend, queryLatestBatteryScore } from "../analytics/battery-health.js";
import { collectFleetAlerts, pageOfAlerts, type FleetAlert, type FleetAlertKind } from "../analytics/fleet-alerts.js";
import { queryDeviceTotals, queryFleetWindow, type DeviceTotalsSource } from "../analytics/fleet-efficiency.js";
import { belowEfficiencyThreshold, summarizeFleet } from "../analytics/fleet-summary.js";
import { VehicleLinkCache, type VehicleLinkCacheOptions } from "../analytics/vehicle-link-cache.js";
import { insertVehicleLink, listVehicleLinks, meterIntervals, type MeterInterval, type StoredLink } from "../analytics/vehicle-links.js";
import type { PerformanceSnapshot } from "../analytics/performance-snapshot.js";
import { MAX_METER_INTERVALS, queryPerformanceTotals, type PerformanceTotals } from "../analytics/vehicle-performance.js";
import type { FleetConfig } from "../config.js";
import { surveyFleet } from "../store/live/live-pages.js";
import type { LiveState, LiveStore } from "../store/live/live-store.js";
import { watchLiveState } from "../store/live/live-watch.js";
import { RollupsBehindError } from "../store/history/reads-after-rollups.js";
import { batteryScore, deviceLiveState, healthLevel } from "./device-live-state.js";
import { decodePageToken, encodePageToken } from "./page-token.js";

/** window_hours 0 means this. */
export const DEFAULT_WINDOW_HOURS = 24;
/** Longest window GetVehiclePerformance answers, in hours (30 days, the ingest horizon). */
export const MAX_WINDOW_HOURS = 720;
const MAX_DEVICE_ID_BYTES = 128;
/** page_size 0 means this. */
export const DEFAULT_PAGE_SIZE = 100;
export const MAX_PAGE_SIZE = 1_000;
/** Most device_ids one GetLiveState or WatchLiveState call may name. */
export const MAX_DEVICE_IDS = 1_000;
const HOUR_MS = 3_600_000;
const MINUTE_MS = 60_000;

/** How long a ListAlerts answer's list is kept for its later pages, in ms. */
const ALERT_LIST_TTL_MS = 10 * MINUTE_MS;
/** Most lists kept at once, and most alerts in them all (a whole fleet's list is ~150 B an alert). */
const ALERT_LISTS_KEPT = 64;
const ALERT_LISTS_MAX_ALERTS = 200_000;

export interface FleetHandlerOptions {
  readonly linkCache?: VehicleLinkCacheOptions;
  /**
   * Every device's default window, read once a minute (performance-snapshot.ts): GetVehiclePerformance
   * answers from it without a statement where it can, GetFleetSummary and ListAlerts take its totals.
   */
  readonly performanceSnapshot?: PerformanceSnapshot | undefined;
  /** Told where each GetVehiclePerformance answer's totals came from. */
  readonly countPerformanceAnswer?: (source: "snapshot" | "statement") => void;
}

type LinkReply = MessageInitShape<typeof LinkVehicleToMeterResponseSchema>;
type ListReply = MessageInitShape<typeof ListVehicleLinksResponseSchema>;
type PerformanceReply = MessageInitShape<typeof GetVehiclePerformanceResponseSchema>;
type LinkShape = MessageInitShape<typeof VehicleLinkSchema>;
type LiveStateReply = MessageInitShape<typeof GetLiveStateResponseSchema>;
type HealthReply = MessageInitShape<typeof GetDeviceHealthResponseSchema>;
type AlertsReply = MessageInitShape<typeof ListAlertsResponseSchema>;
type SummaryReply = MessageInitShape<typeof GetFleetSummaryResponseSchema>;
type WatchReply = MessageInitShape<typeof WatchLiveStateResponseSchema>;

export class FleetHandler implements ServiceImpl<typeof FleetService> {
  /** The links the answers read (ListVehicleLinks reads storage itself). */
  private readonly links: VehicleLinkCache;
  /** Every device's default window, where this process writes all history. */
  private readonly snapshot: PerformanceSnapshot | undefined;
  private readonly countPerformanceAnswer: (source: "snapshot" | "statement") => void;
  /** Every device's window totals for the fleet-wide calls: from the snapshot where it holds the window. */
  private readonly deviceTotals: DeviceTotalsSource = (client, fromMs, toMs) =>
    this.snapshot?.fleetTotals(fromMs, toMs) ?? queryDeviceTotals(client, fromMs, toMs);
  /**
   * Each paged ListAlerts answer's whole list, by the id its page tokens carry, so that later
   * pages page through exactly what the first page saw: judged again, a device that reported
   * meanwhile would move ahead of the cursor (its alert skipped) or lose its offline alert.
   */
  private readonly alertLists = new LRUCache<string, readonly FleetAlert[]>({
    max: ALERT_LISTS_KEPT,
    ttl: ALERT_LIST_TTL_MS,
    maxSize: ALERT_LISTS_MAX_ALERTS,
    sizeCalculation: (alerts) => Math.max(1, alerts.length),
  });

  constructor(
    private readonly client: ClickHouseClient,
    private readonly config: FleetConfig,
    private readonly live: LiveStore,
    private readonly now: () => number = Date.now,
    options: FleetHandlerOptions = {},
  ) {
    this.links = new VehicleLinkCache(client, options.linkCache ?? {});
    this.snapshot = options.performanceSnapshot;
    this.countPerformanceAnswer = options.countPerformanceAnswer ?? (() => undefined);
  }

  async linkVehicleToMeter(request: LinkVehicleToMeterRequest): Promise<LinkReply> {
    const vehicleId = deviceId("vehicle_id", request.vehicleId);
    const meterId = deviceId("meter_id", request.meterId);
    if (request.validFrom === undefined) throw invalid("valid_from is required");
    const validFromMs = toMs(request.validFrom);
    const validUntilMs = request.validUntil === undefined ? undefined : toMs(request.validUntil);
    if (validUntilMs !== undefined && validUntilMs <= validFromMs) {
      throw invalid(`valid_until (${new Date(validUntilMs).toISOString()}) must be after valid_from (${new Date(validFromMs).toISOString()})`);
    }
    const link: StoredLink = { vehicleId, meterId, validFromMs, validUntilMs };
    try {
      await storage(() => insertVehicleLink(this.client, link));
    } finally {
      // Even a failed insert may have been stored; the next answer reads the links again.
      this.links.invalidate();
    }
    return { link: linkShape(link) };
  }

  async listVehicleLinks(request: ListVehicleLinksRequest): Promise<ListReply> {
    const vehicleId = deviceId("vehicle_id", request.vehicleId);
    const links = await storage(() => listVehicleLinks(this.client, vehicleId));
    return { links: links.map(linkShape) };
  }

  async getVehiclePerformance(request: GetVehiclePerformanceRequest): Promise<PerformanceReply> {
    const vehicleId = deviceId("vehicle_id", request.vehicleId);
    const meterId = request.meterId === undefined ? undefined : deviceId("meter_id", request.meterId);
    const hours = windowHours(request.windowHours);
    // Unset, the window ends at the last whole minute, as the fleet-wide calls' windows do: it is
    // then read from the minute rollups alone, two reads where edges inside a minute take four
    // (each read costs the engine a few ms however little it finds). A window_end given is kept
    // to the millisecond.
    const endMs = request.windowEnd === undefined ? Math.floor(Date.now() / MINUTE_MS) * MINUTE_MS : toMs(request.windowEnd);
    const startMs = endMs - hours * HOUR_MS;

    let intervals: MeterInterval[];
    if (meterId !== undefined) intervals = [{ meterId, fromMs: startMs, toMs: endMs }];
    else intervals = meterIntervals(await storage(() => this.links.linksOf(vehicleId)), startMs, endMs);
    if (intervals.length > MAX_METER_INTERVALS) {
      throw new ConnectError(
        `vehicle ${vehicleId} has ${intervals.length} link intervals in the window; at most ${MAX_METER_INTERVALS} are supported: shorten window_hours`,
        Code.FailedPrecondition,
      );
    }

    const defaultWindow = request.windowEnd === undefined && hours === DEFAULT_WINDOW_HOURS;
    let totals = defaultWindow ? this.snapshotTotals(vehicleId, intervals, startMs, endMs) : undefined;
    this.countPerformanceAnswer(totals === undefined ? "statement" : "snapshot");
    totals ??= await storage(() => queryPerformanceTotals(this.client, vehicleId, startMs, endMs, intervals));
    const { vehicle, meter } = totals;
    const ac = meter.kwhConsumedAc;
    const dc = vehicle.kwhDeliveredDc;
    // No AC energy leaves the ratio undefined: answer 0 with an alert, never NaN or Infinity.
    const efficiencyRatio = ac > 0 ? dc / ac : 0;
    const threshold = this.config.efficiencyAlertThreshold;

    let alert: { kind: AlertKind; message: string } = { kind: AlertKind.UNSPECIFIED, message: "" };
    if (intervals.length === 0) {
      alert = { kind: AlertKind.NO_LINK, message: `vehicle ${vehicleId} is linked to no meter within the window; link it or name meter_id` };
    } else if (vehicle.readings === 0) {
      alert = { kind: AlertKind.NO_DATA, message: `vehicle ${vehicleId} has no readings within the window` };
    } else if (ac <= 0) {
      alert = {
        kind: AlertKind.NO_AC_DATA,
        message: `the meters of vehicle ${vehicleId} (${[...new Set(intervals.map((i) => i.meterId))].join(", ")}) report no AC energy within the window (${meter.readings} readings)`,
      };
    } else if (belowEfficiencyThreshold(efficiencyRatio, threshold)) {
      alert = {
        kind: AlertKind.LOW_EFFICIENCY,
        message: `charging efficiency is ${percent(efficiencyRatio)} (${round(dc)} kWh DC / ${round(ac)} kWh AC), below the ${percent(threshold)} threshold`,
      };
    }

    return {
      totalKwhConsumedAc: ac,
      totalKwhDeliveredDc: dc,
      efficiencyRatio,
      avgBatteryTemp: vehicle.readings > 0 ? vehicle.batteryTempSum / vehicle.readings : 0,
      vehicleReadingCount: BigInt(vehicle.readings),
      meterReadingCount: BigInt(meter.readings),
      windowStart: timestampFromMs(startMs),
      windowEnd: timestampFromMs(endMs),
      alert,
    };
  }

  /**
   * The default window's totals from the snapshot of every device's, when it holds the vehicle's
   * and those of the meters it was linked to for the whole window unchanged; undefined otherwise
   * (a link that starts or ends inside the window reads its part from the statement).
   */
  private snapshotTotals(vehicleId: string, intervals: readonly MeterInterval[], startMs: number, endMs: number): PerformanceTotals | undefined {
    const snapshot = this.snapshot;
    if (snapshot === undefined || intervals.some((i) => i.fromMs !== startMs || i.toMs !== endMs)) return undefined;
    const vehicle = snapshot.totals("vehicle", vehicleId, endMs);
    if (vehicle === undefined) return undefined;
    let kwhConsumedAc = 0;
    let readings = 0;
    for (const interval of intervals) {
      const meter = snapshot.totals("meter", interval.meterId, endMs);
      if (meter === undefined) return undefined;
      kwhConsumedAc += meter.kwh;
      readings += meter.readings;
    }
    return {
      vehicle: { kwhDeliveredDc: vehicle.kwh, batteryTempSum: vehicle.batteryTempSum, readings: vehicle.readings },
      meter: { kwhConsumedAc, readings },
    };
  }

  async getLiveState(request: GetLiveStateRequest): Promise<LiveStateReply> {
    const pageSize = pageSizeOf(request.pageSize);
    if (request.deviceIds.length > 0) {
      const ids = deviceIds(request.deviceIds);
      if (request.pageToken !== "") throw invalid("page_token pages through the whole fleet; leave it empty when naming device_ids");
      const states = await liveStorage(() => this.live.getLiveState(ids));
      return { devices: this.shapes(states), nextPageToken: "" };
    }
    const after = request.pageToken === "" ? undefined : decodePageToken(request.pageToken, isDevicePage).after;
    const ids = await liveStorage(() => this.live.listDevices(after, pageSize));
    const states = await liveStorage(() => this.live.getLiveState(ids));
    // A short page is the last; a full one may be followed by an empty last page.
    const nextPageToken = ids.length === pageSize ? encodePageToken({ after: ids.at(-1)! }) : "";
    return { devices: this.shapes(states), nextPageToken };
  }

  async *watchLiveState(request: WatchLiveStateRequest, context: HandlerContext): AsyncGenerator<WatchReply> {
    const ids = request.deviceIds.length > 0 ? deviceIds(request.deviceIds) : undefined;
    const states = watchLiveState(this.live, { deviceIds: ids, signal: context.signal, offlineAfterMs: this.config.offlineAfterMs, now: this.now });
    try {
      for await (const state of states) {
        yield { device: deviceLiveState(state, this.now(), this.config.offlineAfterMs) };
      }
    } catch (error) {
      if (context.signal.aborted) return;
      throw liveStoreError(error);
    }
  }

  async getDeviceHealth(request: GetDeviceHealthRequest): Promise<HealthReply> {
    const id = deviceId("device_id", request.deviceId);
    const hours = windowHours(request.windowHours);
    const { startMs, endMs } = healthWindow(this.now(), hours);
    const latest = await storage(() => queryLatestBatteryScore(this.client, id));
    if (latest === undefined) throw new ConnectError(`battery unit ${id} has no stored readings`, Code.NotFound);
    const trend = await storage(() => queryHealthTrend(this.client, id, latest.scoreVersion, startMs, endMs));
    return {
      deviceId: id,
      latest: batteryScore({
        health_score: latest.healthScore,
        health_level: latest.healthLevel,
        recommendation: latest.recommendation,
        score_version: latest.scoreVersion,
      }),
      observedAt: timestampFromMs(latest.observedAtMs),
      windowStart: timestampFromMs(startMs),
      windowEnd: timestampFromMs(endMs),
      trend: trend.map((p) => ({
        hourStart: timestampFromMs(p.hourStartMs),
        minHealthScore: p.minScore,
        avgHealthScore: p.avgScore,
        maxHealthScore: p.maxScore,
        readingCount: BigInt(p.readings),
      })),
    };
  }

  async listAlerts(request: ListAlertsRequest): Promise<AlertsReply> {
    const pageSize = pageSizeOf(request.pageSize);
    // Later pages are evaluated as of the first page's time, so the order they page through holds.
    const cursor = request.pageToken === "" ? undefined : decodePageToken(request.pageToken, isAlertPage);
    const asked = request.windowHours === undefined ? undefined : windowHours(request.windowHours);
    if (cursor !== undefined && asked !== undefined && asked !== cursor.windowHours) {
      throw invalid(`window_hours is ${asked}, but the page_token pages through a ${cursor.windowHours} h window; leave it unset or the same`);
    }
    const hours = cursor?.windowHours ?? asked ?? DEFAULT_WINDOW_HOURS;
    const asOfMs = cursor?.asOfMs ?? this.now();
    // The first page's list when this process still has it; else (another process behind the
    // balancer, a restart, or ALERT_LIST_TTL_MS later) the fleet judged again as of the same time.
    const kept = cursor?.list === undefined ? undefined : this.alertLists.get(cursor.list);
    const all =
      kept ??
      (await storage(
        () =>
          collectFleetAlerts(this.client, this.live, {
            links: this.links,
            deviceTotals: this.deviceTotals,
            asOfMs,
            windowHours: hours,
            efficiencyThreshold: this.config.efficiencyAlertThreshold,
            offlineAfterMs: this.config.offlineAfterMs,
            batteryFallPoints: this.config.batteryFallAlertPoints,
          }),
        BOTH_STORES,
      ));
    const { page, more } = pageOfAlerts(all, cursor?.last, pageSize);
    const last = page.at(-1);
    let nextPageToken = "";
    if (more && last !== undefined) {
      let list = cursor?.list;
      if (kept === undefined) {
        list = randomBytes(9).toString("base64url");
        this.alertLists.set(list, all);
      }
      nextPageToken = encodePageToken({ asOfMs, windowHours: hours, list, last: { kind: last.kind, deviceId: last.deviceId, detectedAtMs: last.detectedAtMs } });
    }
    return {
      alerts: page.map((a) => ({
        kind: ALERT_KINDS[a.kind],
        deviceId: a.deviceId,
        message: a.message,
        detectedAt: timestampFromMs(a.detectedAtMs),
        observedAt: a.observedAtMs === undefined ? undefined : timestampFromMs(a.observedAtMs),
      })),
      nextPageToken,
    };
  }

  async getFleetSummary(request: GetFleetSummaryRequest): Promise<SummaryReply> {
    const hours = windowHours(request.windowHours);
    const nowMs = this.now();
    // The window ends at the last whole minute, so it is read from rollups alone: raw rows are
    // ordered by device, and a fleet-wide read of a partial minute touches every part that holds
    // that minute — after merges, a month's part. Online and offline are judged at now.
    const endMs = Math.floor(nowMs / MINUTE_MS) * MINUTE_MS;
    const startMs = endMs - hours * HOUR_MS;
    const [{ energy, efficiency }, survey] = await storage(
      () => Promise.all([queryFleetWindow(this.client, startMs, endMs, this.links, this.deviceTotals), surveyFleet(this.live, nowMs - this.config.offlineAfterMs, { attention: false })]),
      BOTH_STORES,
    );
    const summary = summarizeFleet(efficiency, survey);
    return {
      windowStart: timestampFromMs(startMs),
      windowEnd: timestampFromMs(endMs),
      totalKwhConsumedAc: energy.kwhConsumedAc,
      totalKwhDeliveredDc: energy.kwhDeliveredDc,
      efficiencyBuckets: summary.efficiencyBuckets.map((b) => ({
        lowerBound: b.lowerBound,
        upperBound: b.upperBound,
        vehicles: BigInt(b.vehicles),
      })),
      vehiclesWithoutEfficiency: BigInt(summary.vehiclesWithoutEfficiency),
      batteryLevels: summary.batteryLevels.map((l) => ({ level: healthLevel(l.level), devices: BigInt(l.devices) })),
      onlineDevices: BigInt(summary.online),
      offlineDevices: BigInt(summary.offline),
    };
  }

  private shapes(states: readonly (LiveState | undefined)[]) {
    const nowMs = this.now();
    return states.filter((s): s is LiveState => s !== undefined).map((s) => deviceLiveState(s, nowMs, this.config.offlineAfterMs));
  }
}

function linkShape(link: StoredLink): LinkShape {
  return {
    vehicleId: link.vehicleId,
    meterId: link.meterId,
    validFrom: timestampFromMs(link.validFromMs),
    validUntil: link.validUntilMs === undefined ? undefined : timestampFromMs(link.validUntilMs),
  };
}

/**
 * Milliseconds since the epoch, rounded to the nearest as a reading's observed_at is when it is
 * stored (history keeps milliseconds), so a window or link edge and a reading at the same instant
 * compare equal.
 */
function toMs(timestamp: Timestamp): number {
  return timestampMs(timestamp);
}

function deviceId(field: string, value: string): string {
  const bytes = Buffer.byteLength(value);
  if (bytes === 0) throw invalid(`${field} is required`);
  if (bytes > MAX_DEVICE_ID_BYTES) throw invalid(`${field} is ${bytes} bytes; at most ${MAX_DEVICE_ID_BYTES} are allowed`);
  return value;
}

function deviceIds(ids: readonly string[]): string[] {
  if (ids.length > MAX_DEVICE_IDS) throw invalid(`device_ids names ${ids.length} devices; at most ${MAX_DEVICE_IDS} are allowed`);
  return ids.map((id, i) => deviceId(`device_ids[${i}]`, id));
}

function windowHours(hours: number): number {
  if (hours > MAX_WINDOW_HOURS) throw invalid(`window_hours is ${hours}; it must be from 0 (meaning ${DEFAULT_WINDOW_HOURS}) to ${MAX_WINDOW_HOURS}`);
  return hours === 0 ? DEFAULT_WINDOW_HOURS : hours;
}

function pageSizeOf(pageSize: number): number {
  if (pageSize > MAX_PAGE_SIZE) throw invalid(`page_size is ${pageSize}; it must be from 0 (meaning ${DEFAULT_PAGE_SIZE}) to ${MAX_PAGE_SIZE}`);
  return pageSize === 0 ? DEFAULT_PAGE_SIZE : pageSize;
}

interface AlertPage {
  readonly asOfMs: number;
  readonly windowHours: number;
  /** The id of the first page's list in alertLists. */
  readonly list?: string;
  readonly last: { readonly kind: FleetAlertKind; readonly deviceId: string; readonly detectedAtMs: number };
}

function isAlertPage(value: unknown): value is AlertPage {
  const page = value as Partial<AlertPage> | null;
  return (
    typeof page === "object" &&
    page !== null &&
    Number.isSafeInteger(page.asOfMs) &&
    Number.isSafeInteger(page.windowHours) &&
    (page.list === undefined || typeof page.list === "string") &&
    typeof page.last === "object" &&
    page.last !== null &&
    typeof page.last.deviceId === "string" &&
    Number.isSafeInteger(page.last.detectedAtMs) &&
    Object.hasOwn(ALERT_KINDS, page.last.kind)
  );
}

const ALERT_KINDS: Record<FleetAlertKind, AlertKind> = {
  LOW_EFFICIENCY: AlertKind.LOW_EFFICIENCY,
  BATTERY_CRITICAL: AlertKind.BATTERY_CRITICAL,
  BATTERY_FALLING: AlertKind.BATTERY_FALLING,
  DEVICE_OFFLINE: AlertKind.DEVICE_OFFLINE,
};

function isDevicePage(value: unknown): value is { after: string } {
  return typeof value === "object" && value !== null && typeof (value as { after?: unknown }).after === "string";
}

function invalid(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}

/** Runs a storage call; a failure becomes INTERNAL without the store's own message, cause kept. */
async function storage<T>(call: () => Promise<T>, what = "the history store"): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (error instanceof ConnectError) throw error;
    if (error instanceof RollupsBehindError) throw new ConnectError(error.message, Code.Unavailable, undefined, undefined, error);
    throw new ConnectError(`${what} failed to answer`, Code.Internal, undefined, undefined, error);
  }
}

const BOTH_STORES = "the history store or the live store";

/** Runs a live store call; a failure becomes UNAVAILABLE (the store may come back), cause kept. */
export async function liveStorage<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw liveStoreError(error);
  }
}

function liveStoreError(error: unknown): ConnectError {
  if (error instanceof ConnectError) return error;
  return new ConnectError("the live store failed to answer; retry shortly", Code.Unavailable, undefined, undefined, error);
}

const percent = (ratio: number) => `${(ratio * 100).toFixed(1)} %`;
const round = (kwh: number) => Math.round(kwh * 1000) / 1000;
