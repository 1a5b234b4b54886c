// One contract, two stores: the embedded store and Redis (a real redis-server on a free port)
// must behave the same for every caller.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { redisServerAvailable, startRedisServer, type RedisServer } from "../../../test/support/redis-server.js";
import type { LiveStateUpdate, LiveStore } from "./live-store.js";
import { MemoryLiveStore } from "./memory-live-store.js";
import { RedisLiveStore } from "./redis-live-store.js";

const LEASE_MS = 30_000;
const WINDOW_MS = 7 * 86_400_000;

function contract(name: string, open: () => Promise<LiveStore>) {
  describe(`LiveStore contract: ${name}`, () => {
    let store: LiveStore;
    beforeAll(async () => {
      store = await open();
    });
    afterAll(async () => {
      await store?.close();
    });

    const device = () => `dev-${randomUUID()}`;

    it("claims new events once; a second claimer sees them in flight", async () => {
      const d = device();
      const keys = [{ deviceId: d, eventId: "e1" }, { deviceId: d, eventId: "e2" }];
      expect((await store.claimEvents(keys, "batch-a", LEASE_MS)).statuses).toEqual(["claimed", "claimed"]);
      expect((await store.claimEvents(keys, "batch-b", LEASE_MS)).statuses).toEqual(["in_flight", "in_flight"]);
    });

    it("counts committed events as duplicates", async () => {
      const d = device();
      const keys = [{ deviceId: d, eventId: "e1" }];
      await store.claimEvents(keys, "a", LEASE_MS);
      await store.commitEvents(keys, WINDOW_MS);
      expect((await store.claimEvents(keys, "b", LEASE_MS)).statuses).toEqual(["duplicate"]);
    });

    it("lets a resend claim released events at once", async () => {
      const d = device();
      const keys = [{ deviceId: d, eventId: "e1" }];
      await store.claimEvents(keys, "a", LEASE_MS);
      await store.releaseEvents(keys, "a");
      expect((await store.claimEvents(keys, "b", LEASE_MS)).statuses).toEqual(["claimed"]);
    });

    it("does not release another batch's claim", async () => {
      const d = device();
      const keys = [{ deviceId: d, eventId: "e1" }];
      await store.claimEvents(keys, "a", LEASE_MS);
      await store.releaseEvents(keys, "someone-else");
      expect((await store.claimEvents(keys, "b", LEASE_MS)).statuses).toEqual(["in_flight"]);
    });

    it("frees a claim when its lease runs out", async () => {
      const d = device();
      const keys = [{ deviceId: d, eventId: "e1" }];
      await store.claimEvents(keys, "a", 50);
      await new Promise((resolve) => setTimeout(resolve, 120));
      expect((await store.claimEvents(keys, "b", LEASE_MS)).statuses).toEqual(["claimed"]);
    });

    it("keeps event ids apart per device", async () => {
      const [d1, d2] = [device(), device()];
      await store.claimEvents([{ deviceId: d1, eventId: "1" }], "a", LEASE_MS);
      await store.commitEvents([{ deviceId: d1, eventId: "1" }], WINDOW_MS);
      expect((await store.claimEvents([{ deviceId: d2, eventId: "1" }], "b", LEASE_MS)).statuses).toEqual(["claimed"]);
    });

    it("keeps the newest reading by observed_at, while last_seen follows arrival", async () => {
      const d = device();
      const update = (observedAtMs: number, receivedAtMs: number, voltage: number): LiveStateUpdate => ({
        deviceId: d,
        kind: "meter",
        observedAtMs,
        receivedAtMs,
        values: { voltage },
      });
      await store.applyLiveState([update(2_000, 10_000, 231)]);
      // A backlog reading observed earlier arrives later: it must not overwrite the state.
      await store.applyLiveState([update(1_000, 20_000, 229)]);
      const [state] = await store.getLiveState([d]);
      expect(state).toEqual({ deviceId: d, kind: "meter", observedAtMs: 2_000, lastSeenMs: 20_000, values: { voltage: 231 } });

      // Within one batch, the newest wins regardless of order.
      await store.applyLiveState([update(5_000, 30_000, 240), update(3_000, 30_000, 235)]);
      const [after] = await store.getLiveState([d]);
      expect(after?.observedAtMs).toBe(5_000);
      expect(after?.values).toEqual({ voltage: 240 });
    });

    it("says since when its ledger is complete, and keeps saying the same", async () => {
      const before = Date.now();
      const d = device();
      const first = await store.claimEvents([{ deviceId: d, eventId: "x" }], "a", LEASE_MS);
      const second = await store.claimEvents([{ deviceId: d, eventId: "y" }], "a", LEASE_MS);
      expect(first.ledgerSinceMs).toBeLessThanOrEqual(before);
      expect(second.ledgerSinceMs).toBe(first.ledgerSinceMs);
    });

    it("keeps a scorer's trend with the newest reading", async () => {
      const d = device();
      const base = { deviceId: d, kind: "battery" as const, receivedAtMs: 1, values: { voltage: 48 } };
      await store.applyLiveState([{ ...base, observedAtMs: 2_000, trend: { baselineVoltage: 48.5, samples: 3 } }]);
      await store.applyLiveState([{ ...base, observedAtMs: 1_000, trend: { baselineVoltage: 40, samples: 1 } }]);
      const [state] = await store.getLiveState([d]);
      expect(state?.trend).toEqual({ baselineVoltage: 48.5, samples: 3 });
    });

    it("answers undefined for a device never seen", async () => {
      expect(await store.getLiveState([device()])).toEqual([undefined]);
    });
  });
}

contract("embedded", async () => new MemoryLiveStore());

const haveRedis = redisServerAvailable();
let server: RedisServer | undefined;
describe.skipIf(!haveRedis)("with a real redis-server", () => {
  beforeAll(async () => {
    server = await startRedisServer();
  });
  afterAll(async () => {
    await server?.stop();
  });
  contract("redis", async () => {
    const store = new RedisLiveStore({ url: server!.url, keyPrefix: `test-${randomUUID()}:` });
    await store.connect();
    return store;
  });
});
