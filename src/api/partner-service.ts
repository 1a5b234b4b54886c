// PartnerService: what a business partner may know of the devices its key is scoped to — status,
// latest health, last reading — and nothing else.
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  DeviceStatus,
  GetDeviceStatusResponseSchema,
  HealthLevel,
  type GetDeviceStatusRequest,
  type PartnerService,
} from "../../gen/wattstream/partner/v1/partner_service_pb.js";
import { principalKey, type Principal } from "../auth/principal.js";
import { MAX_DEVICE_ID_BYTES } from "../process/reading-rules.js";
import type { LiveStore } from "../store/live/live-store.js";
import { isOnline } from "./device-live-state.js";
import { liveStorage } from "./fleet-service.js";

/** Decides whether a caller may read a device (the authenticator, or everyone with auth off). */
export type DeviceReadPolicy = (principal: Principal, deviceId: string) => boolean;

const LEVELS: Record<string, HealthLevel> = { OK: HealthLevel.OK, WARN: HealthLevel.WARN, CRITICAL: HealthLevel.CRITICAL };

export class PartnerHandler implements ServiceImpl<typeof PartnerService> {
  constructor(
    private readonly live: LiveStore,
    private readonly mayRead: DeviceReadPolicy,
    private readonly offlineAfterMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  async getDeviceStatus(request: GetDeviceStatusRequest, ctx: HandlerContext) {
    const serial = request.serial;
    if (serial === "" || Buffer.byteLength(serial) > MAX_DEVICE_ID_BYTES) {
      throw new ConnectError(`serial must be 1 to ${MAX_DEVICE_ID_BYTES} bytes`, Code.InvalidArgument);
    }
    // Checked before looking the device up, so a key learns nothing of devices outside its scope.
    if (!this.mayRead(ctx.values.get(principalKey), serial)) {
      throw new ConnectError(`this key may not read device ${JSON.stringify(serial)}`, Code.PermissionDenied);
    }
    const [state] = await liveStorage(() => this.live.getLiveState([serial]));
    if (state === undefined) throw new ConnectError(`device ${JSON.stringify(serial)} has not reported`, Code.NotFound);
    const values = state.values;
    const level =
      state.kind === "battery" ? LEVELS[String(values.health_level)] : state.kind === "vehicle" ? LEVELS[String(values.temp_risk)] : undefined;
    const score = state.kind === "battery" ? Number(values.health_score) : NaN;
    return create(GetDeviceStatusResponseSchema, {
      serial,
      status: isOnline(state.lastSeenMs, this.now(), this.offlineAfterMs) ? DeviceStatus.ONLINE : DeviceStatus.OFFLINE,
      healthScore: Number.isFinite(score) ? score : undefined,
      healthLevel: level ?? HealthLevel.UNSPECIFIED,
      lastReadingTime: timestampFromMs(state.observedAtMs),
      lastSeen: timestampFromMs(state.lastSeenMs),
    });
  }
}
