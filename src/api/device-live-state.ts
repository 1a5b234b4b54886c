// Live state and scores on the wire: the store keeps a device's newest reading as the stored row's
// columns (snake_case, levels as strings); FleetService answers them as DeviceLiveState.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  DeviceKind,
  HealthLevel,
  Recommendation,
  type BatteryScoreSchema,
  type DeviceLiveStateSchema,
} from "../../gen/wattstream/fleet/v1/fleet_service_pb.js";
import type { DeviceKind as StoredKind } from "../process/history-rows.js";
import type { LiveState } from "../store/live/live-store.js";

export type DeviceLiveStateShape = MessageInitShape<typeof DeviceLiveStateSchema>;
export type BatteryScoreShape = MessageInitShape<typeof BatteryScoreSchema>;

const KINDS: Record<StoredKind, DeviceKind> = {
  meter: DeviceKind.METER,
  vehicle: DeviceKind.VEHICLE,
  battery: DeviceKind.BATTERY,
};

const LEVELS: Record<string, HealthLevel> = { OK: HealthLevel.OK, WARN: HealthLevel.WARN, CRITICAL: HealthLevel.CRITICAL };

const RECOMMENDATIONS: Record<string, Recommendation> = {
  NONE: Recommendation.NONE,
  INSPECT: Recommendation.INSPECT,
  SERVICE: Recommendation.SERVICE,
  REPLACE: Recommendation.REPLACE,
};

/** A stored level ("OK", "WARN", "CRITICAL"; "" when not scored) on the wire. */
export function healthLevel(stored: unknown): HealthLevel {
  return LEVELS[String(stored)] ?? HealthLevel.UNSPECIFIED;
}

/** A stored recommendation on the wire. */
export function recommendation(stored: unknown): Recommendation {
  return RECOMMENDATIONS[String(stored)] ?? Recommendation.UNSPECIFIED;
}

/** A battery row's score columns on the wire. */
export function batteryScore(row: Readonly<Record<string, unknown>>): BatteryScoreShape {
  return {
    healthScore: num(row.health_score),
    healthLevel: healthLevel(row.health_level),
    recommendation: recommendation(row.recommendation),
    scoreVersion: num(row.score_version),
  };
}

/** Whether a device last seen at lastSeenMs is online at nowMs. */
export function isOnline(lastSeenMs: number, nowMs: number, offlineAfterMs: number): boolean {
  return nowMs - lastSeenMs <= offlineAfterMs;
}

export function deviceLiveState(state: LiveState, nowMs: number, offlineAfterMs: number): DeviceLiveStateShape {
  const v = state.values;
  const base = {
    deviceId: state.deviceId,
    kind: KINDS[state.kind] ?? DeviceKind.UNSPECIFIED,
    eventId: typeof v.event_id === "string" ? v.event_id : "",
    observedAt: timestampFromMs(state.observedAtMs),
    lastSeen: timestampFromMs(state.lastSeenMs),
    online: isOnline(state.lastSeenMs, nowMs, offlineAfterMs),
  };
  switch (state.kind) {
    case "meter":
      return {
        ...base,
        sample: {
          case: "meter",
          value: { kwhConsumedAc: num(v.kwh_consumed_ac), voltage: num(v.voltage), registerKwhAc: optionalNum(v.register_kwh_ac) },
        },
      };
    case "vehicle":
      return {
        ...base,
        sample: {
          case: "vehicle",
          value: {
            soc: num(v.soc),
            kwhDeliveredDc: num(v.kwh_delivered_dc),
            batteryTemp: num(v.battery_temp),
            registerKwhDc: optionalNum(v.register_kwh_dc),
          },
        },
        score: { case: "vehicleScore", value: { tempRisk: healthLevel(v.temp_risk), scoreVersion: num(v.score_version) } },
      };
    case "battery":
      return {
        ...base,
        sample: {
          case: "battery",
          value: {
            voltage: num(v.voltage),
            temperature: num(v.temperature),
            errorCodes: Array.isArray(v.error_codes) ? v.error_codes.map(String) : [],
          },
        },
        score: { case: "batteryScore", value: batteryScore(v) },
      };
    default:
      return base;
  }
}

function num(value: unknown): number {
  const n = Number(value);
  return Number.isFinite(n) ? n : 0;
}

function optionalNum(value: unknown): number | undefined {
  return value === null || value === undefined ? undefined : num(value);
}
