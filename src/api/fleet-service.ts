// FleetService: vehicle–meter links and vehicle charging performance. Translates between the wire
// and the analytics queries (src/analytics/); the numbers are computed there and in ClickHouse.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { ClickHouseClient } from "@clickhouse/client";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  AlertKind,
  FleetService,
  type GetVehiclePerformanceRequest,
  type GetVehiclePerformanceResponseSchema,
  type LinkVehicleToMeterRequest,
  type LinkVehicleToMeterResponseSchema,
  type ListVehicleLinksRequest,
  type ListVehicleLinksResponseSchema,
  type VehicleLinkSchema,
} from "../../gen/wattstream/fleet/v1/fleet_service_pb.js";
import { insertVehicleLink, listVehicleLinks, meterIntervals, type MeterInterval, type StoredLink } from "../analytics/vehicle-links.js";
import { MAX_METER_INTERVALS, queryMeterTotals, queryVehicleTotals } from "../analytics/vehicle-performance.js";
import type { FleetConfig } from "../config.js";

/** window_hours 0 means this. */
export const DEFAULT_WINDOW_HOURS = 24;
/** Longest window GetVehiclePerformance answers, in hours (30 days, the ingest horizon). */
export const MAX_WINDOW_HOURS = 720;
const MAX_DEVICE_ID_BYTES = 128;
const HOUR_MS = 3_600_000;

type LinkReply = MessageInitShape<typeof LinkVehicleToMeterResponseSchema>;
type ListReply = MessageInitShape<typeof ListVehicleLinksResponseSchema>;
type PerformanceReply = MessageInitShape<typeof GetVehiclePerformanceResponseSchema>;
type LinkShape = MessageInitShape<typeof VehicleLinkSchema>;

export class FleetHandler implements ServiceImpl<typeof FleetService> {
  constructor(
    private readonly client: ClickHouseClient,
    private readonly config: FleetConfig,
  ) {}

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
    await storage(() => insertVehicleLink(this.client, link));
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
    if (request.windowHours > MAX_WINDOW_HOURS) {
      throw invalid(`window_hours is ${request.windowHours}; it must be from 0 (meaning ${DEFAULT_WINDOW_HOURS}) to ${MAX_WINDOW_HOURS}`);
    }
    const hours = request.windowHours === 0 ? DEFAULT_WINDOW_HOURS : request.windowHours;
    const endMs = request.windowEnd === undefined ? Date.now() : toMs(request.windowEnd);
    const startMs = endMs - hours * HOUR_MS;

    let intervals: MeterInterval[];
    if (meterId !== undefined) intervals = [{ meterId, fromMs: startMs, toMs: endMs }];
    else intervals = meterIntervals(await storage(() => listVehicleLinks(this.client, vehicleId)), startMs, endMs);
    if (intervals.length > MAX_METER_INTERVALS) {
      throw new ConnectError(
        `vehicle ${vehicleId} has ${intervals.length} link intervals in the window; at most ${MAX_METER_INTERVALS} are supported: shorten window_hours`,
        Code.FailedPrecondition,
      );
    }

    const [vehicle, meter] = await storage(() =>
      Promise.all([queryVehicleTotals(this.client, vehicleId, startMs, endMs), queryMeterTotals(this.client, intervals)]),
    );
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
    } else if (efficiencyRatio < threshold) {
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
}

function linkShape(link: StoredLink): LinkShape {
  return {
    vehicleId: link.vehicleId,
    meterId: link.meterId,
    validFrom: timestampFromMs(link.validFromMs),
    validUntil: link.validUntilMs === undefined ? undefined : timestampFromMs(link.validUntilMs),
  };
}

/** Milliseconds since the epoch; history is stored with millisecond precision. */
function toMs(timestamp: Timestamp): number {
  return Math.floor(timestampMs(timestamp));
}

function deviceId(field: string, value: string): string {
  const bytes = Buffer.byteLength(value);
  if (bytes === 0) throw invalid(`${field} is required`);
  if (bytes > MAX_DEVICE_ID_BYTES) throw invalid(`${field} is ${bytes} bytes; at most ${MAX_DEVICE_ID_BYTES} are allowed`);
  return value;
}

function invalid(message: string): ConnectError {
  return new ConnectError(message, Code.InvalidArgument);
}

/** Runs a storage call; a failure becomes INTERNAL without the store's own message, cause kept. */
async function storage<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    if (error instanceof ConnectError) throw error;
    throw new ConnectError("the history store failed to answer", Code.Internal, undefined, undefined, error);
  }
}

const percent = (ratio: number) => `${(ratio * 100).toFixed(1)} %`;
const round = (kwh: number) => Math.round(kwh * 1000) / 1000;
