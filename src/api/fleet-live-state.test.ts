// Whether a device counts as online, on a clock the test moves: GetLiveState through an in-memory
// router transport, on the embedded live store.
import { createClient, createRouterTransport } from "@connectrpc/connect";
import type { ClickHouseClient } from "@clickhouse/client";
import { describe, expect, it } from "vitest";
import { FleetService } from "../../gen/wattstream/fleet/v1/fleet_service_pb.js";
import { MemoryLiveStore } from "../store/live/memory-live-store.js";
import { FleetHandler } from "./fleet-service.js";

describe("GetLiveState online", () => {
  it("is true while last_seen is within OFFLINE_AFTER of now, false after", async () => {
    const store = new MemoryLiveStore();
    let nowMs = 1_000_000;
    // Live state never touches ClickHouse.
    const handler = new FleetHandler({} as ClickHouseClient, { efficiencyAlertThreshold: 0.85, offlineAfterMs: 60_000, batteryFallAlertPoints: 20, linkCacheMaxAgeMs: 5_000, performanceSnapshot: false }, store, () => nowMs);
    const fleet = createClient(FleetService, createRouterTransport((router) => router.service(FleetService, handler)));
    // A backlog reading observed long ago but received now still counts as seen now.
    await store.applyLiveState([{ deviceId: "m", kind: "meter", observedAtMs: 0, receivedAtMs: nowMs, values: { event_id: "e" } }]);

    const online = async () => (await fleet.getLiveState({ deviceIds: ["m"] })).devices[0]?.online;
    expect(await online()).toBe(true);
    nowMs += 60_000;
    expect(await online()).toBe(true);
    nowMs += 1;
    expect(await online()).toBe(false);
    await store.close();
  });
});
