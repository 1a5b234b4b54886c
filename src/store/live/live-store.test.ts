// One contract, two stores: the embedded store and Redis (a real redis-server on a free port)
// must behave the same for every caller.
import { randomUUID } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import fc from "fast-check";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { redisServerAvailable, startRedisServer, type RedisServer } from "../../../test/support/redis-server.js";
import { BATCH_COMMIT_MIN_EVENTS, compareDeviceIds, type ClaimStatus, type LiveState, type LiveStateUpdate, type LiveStore } from "./live-store.js";
import { MemoryLiveStore } from "./memory-live-store.js";
import { RedisLiveStore } from "./redis-live-store.js";

const LEASE_MS = 30_000;
const WINDOW_MS = 7 * 86_400_000;
/** When the test readings were observed: now, as for a live fleet. */
const OBSERVED_MS = Date.now();
const HOUR_MS = 3_600_000;

async function waitFor(done: () => boolean | Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await done())) {
    if (Date.now() > deadline) throw new Error("timed out waiting");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

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
      const keys = [{ deviceId: d, eventId: "e1", observedAtMs: OBSERVED_MS }, { deviceId: d, eventId: "e2", observedAtMs: OBSERVED_MS }];
      expect((await store.claimEvents(keys, "batch-a", LEASE_MS, WINDOW_MS)).statuses).toEqual(["claimed", "claimed"]);
      expect((await store.claimEvents(keys, "batch-b", LEASE_MS, WINDOW_MS)).statuses).toEqual(["in_flight", "in_flight"]);
    });

    it("counts committed events as duplicates", async () => {
      const d = device();
      const keys = [{ deviceId: d, eventId: "e1", observedAtMs: OBSERVED_MS }];
      await store.claimEvents(keys, "a", LEASE_MS, WINDOW_MS);
      await store.commitEvents(keys, "a", WINDOW_MS);
      expect((await store.claimEvents(keys, "b", LEASE_MS, WINDOW_MS)).statuses).toEqual(["duplicate"]);
    });

    // Small batches commit event by event, large ones in one step: both must answer the same.
    describe.each([
      ["a small batch", 3],
      ["a batch committed in one step", BATCH_COMMIT_MIN_EVENTS + 1],
    ])("committing %s", (_, size) => {
      const eventsOf = (d: string) => Array.from({ length: size }, (_, i) => ({ deviceId: d, eventId: `e${i}`, observedAtMs: OBSERVED_MS }));
      const statuses = (first: ClaimStatus, next: ClaimStatus, rest: ClaimStatus) => [first, next, ...Array<ClaimStatus>(size - 2).fill(rest)];

      it("marks stored every event the batch's token still holds, and none it released", async () => {
        const d = device();
        const [t, u] = [randomUUID(), randomUUID()];
        const keys = eventsOf(d);
        await store.claimEvents(keys, t, LEASE_MS, WINDOW_MS);
        await store.releaseEvents(keys.slice(0, 1), t);
        await store.commitClaims(t, keys.slice(1), WINDOW_MS);
        expect((await store.claimEvents(keys, u, LEASE_MS, WINDOW_MS)).statuses).toEqual(statuses("claimed", "duplicate", "duplicate"));
        // A release after the commit takes nothing back.
        await store.releaseEvents(keys.slice(1), t);
        expect((await store.claimEvents(keys.slice(1), randomUUID(), LEASE_MS, WINDOW_MS)).statuses.every((s) => s === "duplicate")).toBe(true);
      });

      it("marks stored a batch whose lease ran out, but not the events another batch took over meanwhile", async () => {
        const d = device();
        const [slow, reclaimer] = [randomUUID(), randomUUID()];
        const keys = eventsOf(d);
        await store.claimEvents(keys, slow, 50, WINDOW_MS);
        await new Promise((resolve) => setTimeout(resolve, 120));
        expect((await store.claimEvents(keys.slice(0, 1), reclaimer, LEASE_MS, WINDOW_MS)).statuses).toEqual(["reclaimed"]);
        // The slow batch's insert landed after all: what it still holds is stored.
        await store.commitClaims(slow, keys, WINDOW_MS);
        expect((await store.claimEvents(keys, randomUUID(), LEASE_MS, WINDOW_MS)).statuses).toEqual(statuses("in_flight", "duplicate", "duplicate"));
        await store.commitClaims(reclaimer, keys.slice(0, 1), WINDOW_MS);
        expect((await store.claimEvents(keys, randomUUID(), LEASE_MS, WINDOW_MS)).statuses.every((s) => s === "duplicate")).toBe(true);
      });
    });

    it("lets a resend claim released events at once", async () => {
      const d = device();
      const keys = [{ deviceId: d, eventId: "e1", observedAtMs: OBSERVED_MS }];
      await store.claimEvents(keys, "a", LEASE_MS, WINDOW_MS);
      await store.releaseEvents(keys, "a");
      expect((await store.claimEvents(keys, "b", LEASE_MS, WINDOW_MS)).statuses).toEqual(["claimed"]);
    });

    it("does not release another batch's claim", async () => {
      const d = device();
      const keys = [{ deviceId: d, eventId: "e1", observedAtMs: OBSERVED_MS }];
      await store.claimEvents(keys, "a", LEASE_MS, WINDOW_MS);
      await store.releaseEvents(keys, "someone-else");
      expect((await store.claimEvents(keys, "b", LEASE_MS, WINDOW_MS)).statuses).toEqual(["in_flight"]);
    });

    it("hands a claim whose lease ran out to the next claimer as reclaimed, which then holds it", async () => {
      const d = device();
      const keys = [{ deviceId: d, eventId: "e1", observedAtMs: OBSERVED_MS }];
      await store.claimEvents(keys, "a", 50, WINDOW_MS);
      await new Promise((resolve) => setTimeout(resolve, 120));
      // "a" may have stored the reading and died before committing: not a plain "claimed".
      expect((await store.claimEvents(keys, "b", LEASE_MS, WINDOW_MS)).statuses).toEqual(["reclaimed"]);
      expect((await store.claimEvents(keys, "c", LEASE_MS, WINDOW_MS)).statuses).toEqual(["in_flight"]);
      // The lapsed holder can no longer release what "b" holds now; "b" can.
      await store.releaseEvents(keys, "a");
      expect((await store.claimEvents(keys, "c", LEASE_MS, WINDOW_MS)).statuses).toEqual(["in_flight"]);
      await store.releaseEvents(keys, "b");
      expect((await store.claimEvents(keys, "c", LEASE_MS, WINDOW_MS)).statuses).toEqual(["claimed"]);
    });

    it("extends a held claim's lease on renewal, and no claim that is over", async () => {
      const d = device();
      const [held, committed, lapsed] = ["held", "committed", "lapsed"].map((t) => `${t}-${randomUUID()}`) as [string, string, string];
      // The committed batch large enough to commit in one step, as a batch whose insert landed late
      // may have been.
      const keys = (t: string) => Array.from({ length: t === committed ? BATCH_COMMIT_MIN_EVENTS : 1 }, (_, i) => ({ deviceId: d, eventId: `${t}-${i}`, observedAtMs: OBSERVED_MS }));
      for (const t of [held, committed, lapsed]) await store.claimEvents(keys(t), t, t === lapsed ? 30 : 300, WINDOW_MS);
      await store.commitClaims(committed, keys(committed), WINDOW_MS);
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(await store.renewClaims(held, 600)).toBe(true);
      expect(await store.renewClaims(committed, 600)).toBe(false);
      expect(await store.renewClaims(lapsed, 600)).toBe(false);
      expect((await store.claimEvents(keys(committed), "next", LEASE_MS, WINDOW_MS)).statuses.every((s) => s === "duplicate")).toBe(true);
      // Past the first lease, inside the renewed one: still in flight; after it, taken over.
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect((await store.claimEvents(keys(held), "next", LEASE_MS, WINDOW_MS)).statuses).toEqual(["in_flight"]);
      await new Promise((resolve) => setTimeout(resolve, 400));
      expect((await store.claimEvents(keys(held), "next", LEASE_MS, WINDOW_MS)).statuses).toEqual(["reclaimed"]);
    });

    it("forgets a lapsed claim once the remember time is over", async () => {
      const d = device();
      // Observed in an hour already over: Redis's ledger counts the remember time from the end of
      // the hour the reading was observed in, or from the claim when that hour is over.
      const keys = [{ deviceId: d, eventId: "e1", observedAtMs: OBSERVED_MS - 2 * HOUR_MS }];
      await store.claimEvents(keys, "a", 50, 100);
      await new Promise((resolve) => setTimeout(resolve, 180));
      expect((await store.claimEvents(keys, "b", LEASE_MS, WINDOW_MS)).statuses).toEqual(["claimed"]);
    });

    it("finds a resend by its original observed_at among a device's ids of many hours, in any order", async () => {
      const d = device();
      // Interleaved hours, so that ids of one hour are not neighbours in the batch.
      const hours = [0, 1, 0, 5, 1, 0, 30 * 24];
      const keys = hours.map((h, i) => ({ deviceId: d, eventId: `e${i}`, observedAtMs: OBSERVED_MS - h * HOUR_MS }));
      const some = [keys[1]!, keys[3]!, keys[5]!];
      expect((await store.claimEvents(some, "first", LEASE_MS, WINDOW_MS)).statuses).toEqual(["claimed", "claimed", "claimed"]);
      const whole = await store.claimEvents(keys, "second", LEASE_MS, WINDOW_MS);
      expect(whole.statuses).toEqual(["claimed", "in_flight", "claimed", "in_flight", "claimed", "in_flight", "claimed"]);
      await store.commitEvents(some, "first", WINDOW_MS);
      await store.commitEvents(keys, "second", WINDOW_MS);
      const resent = [...keys].reverse();
      expect((await store.claimEvents(resent, "third", LEASE_MS, WINDOW_MS)).statuses.every((s) => s === "duplicate")).toBe(true);
    });

    it("remembers a reading observed long before the window, claimed or stored, from its claim", async () => {
      const d = device();
      const old = [{ deviceId: d, eventId: "backlog", observedAtMs: OBSERVED_MS - 30 * 24 * HOUR_MS }];
      await store.claimEvents(old, "uploader", LEASE_MS, WINDOW_MS);
      // A second sender of the same backlog must wait, not store it beside the first.
      expect((await store.claimEvents(old, "other", LEASE_MS, WINDOW_MS)).statuses).toEqual(["in_flight"]);
      await store.commitEvents(old, "uploader", WINDOW_MS);
      expect((await store.claimEvents(old, "resend", LEASE_MS, WINDOW_MS)).statuses).toEqual(["duplicate"]);
    });

    it("keeps event ids apart per device", async () => {
      const [d1, d2] = [device(), device()];
      await store.claimEvents([{ deviceId: d1, eventId: "1", observedAtMs: OBSERVED_MS }], "a", LEASE_MS, WINDOW_MS);
      await store.commitEvents([{ deviceId: d1, eventId: "1", observedAtMs: OBSERVED_MS }], "a", WINDOW_MS);
      expect((await store.claimEvents([{ deviceId: d2, eventId: "1", observedAtMs: OBSERVED_MS }], "b", LEASE_MS, WINDOW_MS)).statuses).toEqual(["claimed"]);
    });

    it("keeps devices and their events apart whatever characters their ids hold", async () => {
      const d = device();
      // Ids are any text: written into keys as they are, these pairs would name one event…
      const twins = [
        { deviceId: d, eventId: "b}:e:c", observedAtMs: OBSERVED_MS },
        { deviceId: `${d}}:e:b`, eventId: "c", observedAtMs: OBSERVED_MS },
        { deviceId: `${d}%7D:e:b`, eventId: "c", observedAtMs: OBSERVED_MS },
      ];
      expect((await store.claimEvents([twins[0]!], "a", LEASE_MS, WINDOW_MS)).statuses).toEqual(["claimed"]);
      await store.commitEvents([twins[0]!], "a", WINDOW_MS);
      expect((await store.claimEvents(twins.slice(1), "b", LEASE_MS, WINDOW_MS)).statuses).toEqual(["claimed", "claimed"]);
      // …and an event one device's live state.
      const stateOf = `${d}}:e:y`;
      await store.applyLiveState([{ deviceId: stateOf, kind: "meter", observedAtMs: 1_000, receivedAtMs: 2_000, values: { voltage: 230 } }]);
      expect((await store.claimEvents([{ deviceId: d, eventId: "y}:live", observedAtMs: OBSERVED_MS }], "c", LEASE_MS, WINDOW_MS)).statuses).toEqual(["claimed"]);
      await store.commitEvents([{ deviceId: d, eventId: "y}:live", observedAtMs: OBSERVED_MS }], "c", WINDOW_MS);
      expect((await store.getLiveState([stateOf]))[0]).toMatchObject({ deviceId: stateOf, observedAtMs: 1_000 });
      expect((await store.claimEvents([{ deviceId: d, eventId: "y}:live", observedAtMs: OBSERVED_MS }], "d", LEASE_MS, WINDOW_MS)).statuses).toEqual(["duplicate"]);
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
      // Two changes: the reading, then its last_seen moved alone.
      expect(state).toEqual({ deviceId: d, kind: "meter", observedAtMs: 2_000, lastSeenMs: 20_000, values: { voltage: 231 }, revision: 2 });

      // Within one batch, the newest wins regardless of order.
      await store.applyLiveState([update(5_000, 30_000, 240), update(3_000, 30_000, 235)]);
      const [after] = await store.getLiveState([d]);
      expect(after?.observedAtMs).toBe(5_000);
      expect(after?.values).toEqual({ voltage: 240 });
    });

    it("says since when its ledger is complete, and keeps saying the same", async () => {
      const before = Date.now();
      const d = device();
      const first = await store.claimEvents([{ deviceId: d, eventId: "x", observedAtMs: OBSERVED_MS }], "a", LEASE_MS, WINDOW_MS);
      const second = await store.claimEvents([{ deviceId: d, eventId: "y", observedAtMs: OBSERVED_MS }], "a", LEASE_MS, WINDOW_MS);
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

    it("lists device ids in UTF-8 byte order, a page at a time", async () => {
      const tag = randomUUID();
      // "é" (U+00E9) sorts before "\u{1F600}" in UTF-8 bytes and in UTF-16 code units alike, but
      // "\uFF5E" sorts after "\u{1F600}" only in UTF-16; byte order is what Redis keeps.
      const ids = ["b", "a", "é", "\u{1F600}", "\uFF5E", "a0"].map((suffix) => `${tag}-${suffix}`);
      for (const id of ids) {
        await store.applyLiveState([{ deviceId: id, kind: "meter", observedAtMs: 1, receivedAtMs: 1, values: {} }]);
      }
      const expected = [...ids].sort(compareDeviceIds);
      expect(expected.at(-2)).toBe(`${tag}-\uFF5E`);
      // Other tests' devices share the store: collect everything, keep this test's.
      const seen: string[] = [];
      let after: string | undefined;
      for (;;) {
        const page = await store.listDevices(after, 4);
        expect(page.length).toBeLessThanOrEqual(4);
        if (page.length === 0) break;
        seen.push(...page);
        after = page.at(-1);
      }
      expect(seen.filter((id) => id.startsWith(tag))).toEqual(expected);
      expect([...seen].sort(compareDeviceIds)).toEqual(seen);
      expect(await store.listDevices(expected[1], 2).then((p) => p.slice(0, 2))).toEqual(expected.slice(2, 4));
    });

    it("keeps the fleet's order as devices keep appearing between pages", async () => {
      const tag = randomUUID();
      const ids = (suffixes: string[]) => suffixes.map((suffix) => `${tag}-${suffix}`);
      const listed = async () => {
        const seen: string[] = [];
        let after: string | undefined;
        for (let page = await store.listDevices(after, 3); page.length > 0; page = await store.listDevices(after, 3)) {
          seen.push(...page);
          after = page.at(-1);
        }
        return seen.filter((id) => id.startsWith(tag));
      };
      const appear = (devices: string[]) =>
        store.applyLiveState(devices.map((deviceId) => ({ deviceId, kind: "meter" as const, observedAtMs: 1, receivedAtMs: 1, values: {} })));
      const first = ids(["m", "c", "x", "\u{1F600}"]);
      await appear(first);
      expect(await listed()).toEqual([...first].sort(compareDeviceIds));
      // New ids land before, between and after the known ones; a known one again adds nothing.
      const second = ids(["a", "n", "d", "\uFF5E", "z", "m"]);
      await appear(second);
      expect(await listed()).toEqual([...new Set([...first, ...second])].sort(compareDeviceIds));
    });

    it("a subscriber sees each applied newer reading, with a revision per change, and stops seeing them once unsubscribed", async () => {
      const d = device();
      const seen: LiveState[] = [];
      const unsubscribe = await store.subscribe((state) => {
        if (state.deviceId === d) seen.push(state);
      });
      const countBefore = store.subscriberCount;
      expect(countBefore).toBeGreaterThanOrEqual(1);
      const update = (observedAtMs: number, receivedAtMs: number, voltage: number): LiveStateUpdate => ({
        deviceId: d,
        kind: "battery",
        observedAtMs,
        receivedAtMs,
        values: { voltage, event_id: `e-${observedAtMs}` },
      });
      await store.applyLiveState([update(1_000, 10_000, 48)]);
      await store.applyLiveState([update(2_000, 11_000, 49)]);
      // A backlog reading changes only last_seen; a stale arrival changes nothing and is not sent.
      await store.applyLiveState([update(500, 12_000, 40)]);
      await store.applyLiveState([update(400, 5_000, 41)]);
      // Within one batch only the newest is applied.
      await store.applyLiveState([update(4_000, 13_000, 51), update(3_000, 13_000, 50)]);
      // Another reading of the same observed_at, received earlier (its batch settled later): it
      // replaces the state though neither time moves; only the revision tells it is the newer.
      await store.applyLiveState([{ ...update(4_000, 12_500, 52), values: { voltage: 52, event_id: "e-4000-again" } }]);
      await waitFor(() => seen.length >= 5);
      expect(seen.map((s) => [s.observedAtMs, s.lastSeenMs, s.values.voltage, s.revision])).toEqual([
        [1_000, 10_000, 48, 1],
        [2_000, 11_000, 49, 2],
        [2_000, 12_000, 49, 3],
        [4_000, 13_000, 51, 4],
        [4_000, 13_000, 52, 5],
      ]);
      expect(seen[0]).toMatchObject({ deviceId: d, kind: "battery", values: { voltage: 48, event_id: "e-1000" } });
      expect((await store.getLiveState([d]))[0]).toMatchObject({ values: { voltage: 52 }, revision: 5 });

      unsubscribe();
      unsubscribe();
      expect(store.subscriberCount).toBe(countBefore - 1);
      await store.applyLiveState([update(5_000, 14_000, 52)]);
      // A later subscriber's delivery proves the unsubscribed one had its chance.
      const later: LiveState[] = [];
      const stop = await store.subscribe((state) => state.deviceId === d && later.push(state));
      await store.applyLiveState([update(6_000, 15_000, 53)]);
      await waitFor(() => later.length >= 1);
      stop();
      expect(seen).toHaveLength(5);
    });

    it("applies only the newest of a device's updates in one call, whatever their order: one change, one notice", async () => {
      const d = device();
      const seen: LiveState[] = [];
      const unsubscribe = await store.subscribe((state) => {
        if (state.deviceId === d) seen.push(state);
      });
      const update = (observedAtMs: number, voltage: number): LiveStateUpdate => ({
        deviceId: d,
        kind: "battery",
        observedAtMs,
        receivedAtMs: 20_000,
        values: { voltage, event_id: `e-${observedAtMs}` },
      });
      await store.applyLiveState([update(1_000, 48), update(2_000, 49)]);
      await waitFor(() => seen.length >= 1);
      // A later notice would have arrived with this one's: the store notifies as it applies.
      await store.applyLiveState([update(3_000, 50)]);
      await waitFor(() => seen.length >= 2);
      unsubscribe();
      expect(seen.map((s) => [s.observedAtMs, s.values.voltage, s.revision])).toEqual([
        [2_000, 49, 1],
        [3_000, 50, 2],
      ]);
    });

    it("in one call, keeps the newest reading and the latest arrival of a device's updates, whichever carries which", async () => {
      const d = device();
      const update = (observedAtMs: number, receivedAtMs: number): LiveStateUpdate => ({
        deviceId: d,
        kind: "meter",
        observedAtMs,
        receivedAtMs,
        values: { voltage: observedAtMs / 10, event_id: `e-${observedAtMs}` },
      });
      // The newest reading arrived before a backlog reading; then a newer one arrives, earlier still.
      await store.applyLiveState([update(2_000, 30_000), update(1_000, 40_000), update(3_000, 35_000)]);
      const [state] = await store.getLiveState([d]);
      expect([state!.observedAtMs, state!.values.voltage, state!.lastSeenMs]).toEqual([3_000, 300, 40_000]);
    });

    it("answers undefined for a device never seen", async () => {
      expect(await store.getLiveState([device()])).toEqual([undefined]);
    });

    it("answers thousands of devices at once, in the order asked, with their trends", async () => {
      const known = Array.from({ length: 1_250 }, (_, i) => ({ deviceId: device(), voltage: 40 + (i % 10), samples: i }));
      await store.applyLiveState(
        known.map(({ deviceId, voltage, samples }) => ({
          deviceId,
          kind: "battery" as const,
          observedAtMs: 1_000,
          receivedAtMs: 2_000,
          values: { voltage },
          trend: { samples },
        })),
      );
      // Known and unknown interleaved, more than one call's worth for Redis.
      const asked = known.flatMap((k) => [k.deviceId, device()]);
      const states = await store.getLiveState(asked);
      expect(states).toHaveLength(asked.length);
      states.forEach((state, i) => {
        if (i % 2 === 1) return expect(state).toBeUndefined();
        const { deviceId, voltage, samples } = known[i / 2]!;
        expect(state).toEqual({ deviceId, kind: "battery", observedAtMs: 1_000, lastSeenMs: 2_000, values: { voltage }, trend: { samples }, revision: 1 });
      });
      expect(await store.getTrends(asked)).toEqual(asked.map((_, i) => (i % 2 === 1 ? undefined : { samples: known[i / 2]!.samples })));
    });

    it("claims, commits, releases and applies batches far larger than one Redis call takes", async () => {
      // 60,000 devices' live state with seven script arguments each overflowed the stack when
      // passed to one call; every operation now splits a batch, and must answer as one.
      const d = device();
      const keys = Array.from({ length: 60_000 }, (_, i) => ({ deviceId: d, eventId: `e${i}`, observedAtMs: OBSERVED_MS }));
      const first = await store.claimEvents(keys.slice(0, 30_000), "a", LEASE_MS, WINDOW_MS);
      expect(first.statuses.every((s) => s === "claimed")).toBe(true);
      await store.commitEvents(keys.slice(0, 20_000), "a", WINDOW_MS);
      await store.releaseEvents(keys.slice(20_000, 30_000), "a");
      const again = await store.claimEvents(keys, "b", LEASE_MS, WINDOW_MS);
      expect(again.ledgerSinceMs).toBe(first.ledgerSinceMs);
      expect(again.statuses).toEqual(keys.map((_, i) => (i < 20_000 ? "duplicate" : "claimed")));

      const units = Array.from({ length: 60_000 }, () => device());
      await store.applyLiveState(
        units.map((deviceId, i) => ({ deviceId, kind: "battery" as const, observedAtMs: i, receivedAtMs: 7, values: { health_level: "OK" }, trend: { samples: i } })),
      );
      const states = await store.getLiveState(units);
      expect(states.map((s) => s?.observedAtMs)).toEqual(units.map((_, i) => i));
      expect((await store.getTrends(units)).map((t) => t?.samples)).toEqual(units.map((_, i) => i));
      expect((await store.surveyDevices(units, 0)).batteryLevels.get("OK")).toBe(60_000);
    });

    it("surveys thousands of devices: counts for all, the standing of the silent and of CRITICAL units", async () => {
      const levels = ["OK", "WARN", "CRITICAL", undefined] as const;
      const onlineSinceMs = 10_000;
      // Half of them battery units, at every level and not scored; every fifth device silent.
      const fleet = Array.from({ length: 2_600 }, (_, i) => ({
        deviceId: device(),
        kind: i % 3 === 0 ? ("meter" as const) : i % 6 === 1 ? ("vehicle" as const) : ("battery" as const),
        level: levels[i % 4],
        lastSeenMs: i % 5 === 0 ? onlineSinceMs - 1 - i : onlineSinceMs + i,
        observedAtMs: 1_000 + i,
      }));
      await store.applyLiveState(
        fleet.map(({ deviceId, kind, level, lastSeenMs, observedAtMs }) => ({
          deviceId,
          kind,
          observedAtMs,
          receivedAtMs: lastSeenMs,
          // A meter's or vehicle's values never give it a level, whatever they hold.
          values: level === undefined ? { voltage: 48 } : { health_level: level, health_score: 10 },
        })),
      );
      // A unit that was CRITICAL and is OK since its newest reading; a backlog reading at CRITICAL after it.
      const recovered = fleet.find((d) => d.kind === "battery" && d.level === "CRITICAL" && d.lastSeenMs >= onlineSinceMs)!;
      const later = { deviceId: recovered.deviceId, kind: "battery" as const, receivedAtMs: recovered.lastSeenMs };
      await store.applyLiveState([{ ...later, observedAtMs: recovered.observedAtMs + 1, values: { health_level: "OK" } }]);
      await store.applyLiveState([{ ...later, observedAtMs: 1, values: { health_level: "CRITICAL" } }]);
      const expected = fleet.map((d) => (d === recovered ? { ...d, level: "OK", observedAtMs: d.observedAtMs + 1 } : d));

      const asked = expected.flatMap((d) => [d.deviceId, device()]);
      const survey = await store.surveyDevices(asked, onlineSinceMs);
      const standing = (d: (typeof expected)[number]) => ({
        deviceId: d.deviceId,
        kind: d.kind,
        observedAtMs: d.observedAtMs,
        lastSeenMs: d.lastSeenMs,
        level: d.kind === "battery" ? (d.level ?? "") : undefined,
      });
      expect(survey.devices).toBe(2_600);
      expect(survey.online).toBe(expected.filter((d) => d.lastSeenMs >= onlineSinceMs).length);
      const batteries = expected.filter((d) => d.kind === "battery").map((d) => d.level ?? "");
      expect(Object.fromEntries(survey.batteryLevels)).toEqual({
        OK: batteries.filter((l) => l === "OK").length,
        WARN: batteries.filter((l) => l === "WARN").length,
        CRITICAL: batteries.filter((l) => l === "CRITICAL").length,
        "": batteries.filter((l) => l === "").length,
      });
      expect(survey.attention).toEqual(
        expected.filter((d) => d.lastSeenMs < onlineSinceMs || (d.kind === "battery" && d.level === "CRITICAL")).map(standing),
      );
      expect(survey.attention.some((s) => s.level === "CRITICAL" && s.lastSeenMs >= onlineSinceMs)).toBe(true);
      // The counts alone, as GetFleetSummary asks: the same counts, no list.
      expect(await store.surveyDevices(asked, onlineSinceMs, { attention: false })).toEqual({ ...survey, attention: [] });
      expect(await store.surveyDevices([], onlineSinceMs)).toEqual({ devices: 0, online: 0, batteryLevels: new Map(), attention: [] });
    });

    it("reads only trends as the newest reading left them, none for a device whose scorer keeps none", async () => {
      const [unit, meter] = [device(), device()];
      await store.applyLiveState([
        { deviceId: unit, kind: "battery", observedAtMs: 2_000, receivedAtMs: 1, values: {}, trend: { baselineVoltage: 48.5, samples: 3 } },
        { deviceId: meter, kind: "meter", observedAtMs: 2_000, receivedAtMs: 1, values: { voltage: 230 } },
      ]);
      // A backlog reading moves last_seen, not the trend.
      await store.applyLiveState([{ deviceId: unit, kind: "battery", observedAtMs: 1_000, receivedAtMs: 5, values: {}, trend: { baselineVoltage: 40, samples: 1 } }]);
      expect(await store.getTrends([unit, meter, device()])).toEqual([{ baselineVoltage: 48.5, samples: 3 }, undefined, undefined]);
      expect(await store.getTrends([])).toEqual([]);
    });
  });
}

contract("embedded", async () => new MemoryLiveStore());

describe("compareDeviceIds", () => {
  // Its sign must be that of comparing the UTF-8 bytes (Redis's order), which it skips where it can.
  const sign = (n: number) => Math.sign(n);
  const bytes = (a: string, b: string) => sign(Buffer.compare(Buffer.from(a), Buffer.from(b)));

  it("orders any two strings as their UTF-8 bytes, lone surrogates included", () => {
    // Shared prefixes, so that most pairs differ somewhere inside rather than at the first unit.
    const unit = fc.oneof(fc.string({ unit: "binary", maxLength: 3 }), fc.constantFrom("a", "é", "\uFF5E", "\u{1F600}", "\uD83D", "\uDE00", "\uE000"));
    const text = fc.array(unit, { maxLength: 4 }).map((parts) => parts.join(""));
    fc.assert(
      fc.property(text, text, text, (prefix, a, b) => {
        expect(sign(compareDeviceIds(prefix + a, prefix + b))).toBe(bytes(prefix + a, prefix + b));
      }),
      { numRuns: 5_000 },
    );
  });

  it("puts a prefix first and equal ids level", () => {
    expect(sign(compareDeviceIds("meter-1", "meter-10"))).toBe(-1);
    expect(compareDeviceIds("meter-1", "meter-1")).toBe(0);
    expect(sign(compareDeviceIds("meter-\uFF5E", "meter-\u{1F600}"))).toBe(-1);
  });
});

describe("the embedded store's dedupe window", () => {
  it("remembers a committed event for the window (to the next whole second), then forgets it", async () => {
    let now = 1_764_000_000_250;
    const store = new MemoryLiveStore({ now: () => now });
    try {
      const key = { deviceId: "meter-1", eventId: "e-1", observedAtMs: OBSERVED_MS };
      expect((await store.claimEvents([key], "t1", LEASE_MS, 10_000)).statuses).toEqual(["claimed"]);
      await store.commitEvents([key], "t1", 10_000);
      now += 10_000;
      expect((await store.claimEvents([key], "t2", LEASE_MS, 10_000)).statuses).toEqual(["duplicate"]);
      now += 1_000;
      expect((await store.claimEvents([key], "t3", LEASE_MS, 10_000)).statuses).toEqual(["claimed"]);
    } finally {
      await store.close();
    }
  });
});

describe("the embedded store's dedupe window, far ahead", () => {
  it("remembers an id committed alone for the longest window, whatever the date", async () => {
    // Ten years (DEDUPE_WINDOW's most) from 2097 ends past 2^32 seconds since the epoch.
    let now = Date.UTC(2097, 0, 1);
    const windowMs = 3650 * 86_400_000;
    const store = new MemoryLiveStore({ now: () => now });
    try {
      const key = { deviceId: "meter-1", eventId: "e-1", observedAtMs: OBSERVED_MS };
      await store.claimEvents([key], "t1", LEASE_MS, windowMs);
      await store.commitEvents([key], "t1", windowMs);
      now += 86_400_000;
      expect((await store.claimEvents([key], "t2", LEASE_MS, windowMs)).statuses).toEqual(["duplicate"]);
    } finally {
      await store.close();
    }
  });
});

describe("the embedded store's batch commit", () => {
  it("commits event by event a batch whose claim the sweep dropped after its lease", async () => {
    const store = new MemoryLiveStore({ sweepIntervalMs: 10 });
    try {
      const keys = Array.from({ length: BATCH_COMMIT_MIN_EVENTS }, (_, i) => ({ deviceId: "meter-1", eventId: `e${i}`, observedAtMs: OBSERVED_MS }));
      await store.claimEvents(keys, "slow", 20, WINDOW_MS);
      await new Promise((resolve) => setTimeout(resolve, 100));
      await store.commitClaims("slow", keys, WINDOW_MS);
      expect((await store.claimEvents(keys, "next", LEASE_MS, WINDOW_MS)).statuses.every((s) => s === "duplicate")).toBe(true);
    } finally {
      await store.close();
    }
  });

  it("forgets ids committed with their batch like any other, and moves its start past them", async () => {
    let now = 1_764_000_000_000;
    const store = new MemoryLiveStore({ maxEvents: BATCH_COMMIT_MIN_EVENTS, shards: 1, now: () => now });
    try {
      const first = Array.from({ length: BATCH_COMMIT_MIN_EVENTS }, (_, i) => ({ deviceId: "meter-1", eventId: `a${i}`, observedAtMs: OBSERVED_MS }));
      const { ledgerSinceMs: startedMs } = await store.claimEvents(first, "a", LEASE_MS, WINDOW_MS);
      now += 1_000;
      await store.commitClaims("a", first, WINDOW_MS);
      now += 1_000;
      const next = await store.claimEvents([{ deviceId: "meter-1", eventId: "b0", observedAtMs: OBSERVED_MS }], "b", LEASE_MS, WINDOW_MS);
      expect(next.statuses).toEqual(["claimed"]);
      // The forgotten ids were committed at startedMs + 1 s: a reading the ledger may have dropped
      // is one committed no later than its new start.
      expect(next.ledgerSinceMs).toBe(startedMs + 1_001);
      expect((await store.claimEvents(first.slice(-1), "c", LEASE_MS, WINDOW_MS)).statuses).toEqual(["duplicate"]);
    } finally {
      await store.close();
    }
  });
});

describe("the embedded store's capacity", () => {
  const keysOf = (from: number, count: number) =>
    Array.from({ length: count }, (_, i) => ({ deviceId: `meter-${(from + i) % 7}`, eventId: `e-${from + i}`, observedAtMs: OBSERVED_MS }));

  it("forgets its oldest stored ids beyond maxEvents and moves its start past them; claims in flight stay", async () => {
    let now = 1_764_000_000_000;
    // One shard, so "oldest" is across every id.
    const store = new MemoryLiveStore({ maxEvents: 100, shards: 1, now: () => now });
    try {
      const started = (await store.claimEvents([], "t0", LEASE_MS, WINDOW_MS)).ledgerSinceMs;
      // The oldest claim is still being stored when the ledger fills up.
      const inFlight = keysOf(-1, 1);
      await store.claimEvents(inFlight, "slow", 600_000, WINDOW_MS);
      // 99 ids stored one second apart: the ledger is full.
      for (let i = 0; i < 99; i++) {
        now += 1_000;
        await store.claimEvents(keysOf(i, 1), `t${i}`, LEASE_MS, WINDOW_MS);
        await store.commitEvents(keysOf(i, 1), `t${i}`, WINDOW_MS);
      }
      const full = await store.claimEvents(keysOf(0, 99), "check", LEASE_MS, WINDOW_MS);
      expect(full.statuses.every((s) => s === "duplicate")).toBe(true);
      expect(full.ledgerSinceMs).toBe(started);

      // 10 new ids: room for them is made by forgetting the oldest stored ones, down to 90 % of
      // the capacity (the in-flight claim at the front is kept).
      now += 1_000;
      const fresh = await store.claimEvents(keysOf(1_000, 10), "fresh", LEASE_MS, WINDOW_MS);
      expect(fresh.statuses.every((s) => s === "claimed")).toBe(true);
      const forgotten = 10;
      const kept = await store.claimEvents(keysOf(forgotten, 99 - forgotten), "kept", LEASE_MS, WINDOW_MS);
      expect(kept.statuses.every((s) => s === "duplicate")).toBe(true);
      // The ledger now vouches only for ids stored after the newest forgotten one: that id was
      // committed at started + 10 s (its expiry rounded up to a whole second).
      const newestForgottenAt = started + forgotten * 1_000;
      expect(kept.ledgerSinceMs).toBeGreaterThan(newestForgottenAt);
      expect(kept.ledgerSinceMs).toBeLessThanOrEqual(newestForgottenAt + 1_000);
      const oldest = await store.claimEvents(keysOf(0, forgotten), "oldest", LEASE_MS, WINDOW_MS);
      expect(oldest.statuses.every((s) => s === "claimed")).toBe(true);
      expect((await store.claimEvents(inFlight, "other", LEASE_MS, WINDOW_MS)).statuses).toEqual(["in_flight"]);
    } finally {
      await store.close();
    }
  });

  it("split into shards, keeps the newest ids and forgets the oldest through a long run of fresh ids", async () => {
    let now = 1_764_000_000_000;
    const store = new MemoryLiveStore({ maxEvents: 1_000, shards: 16, now: () => now });
    try {
      let since = (await store.claimEvents([], "t0", LEASE_MS, WINDOW_MS)).ledgerSinceMs;
      const started = since;
      for (let batch = 0; batch < 50; batch++) {
        now += 100;
        const keys = keysOf(batch * 100, 100);
        const claim = await store.claimEvents(keys, `b${batch}`, LEASE_MS, WINDOW_MS);
        expect(claim.statuses.every((s) => s === "claimed")).toBe(true);
        expect(claim.ledgerSinceMs).toBeGreaterThanOrEqual(since);
        since = claim.ledgerSinceMs;
        await store.commitEvents(keys, `b${batch}`, WINDOW_MS);
      }
      // Each shard holds its newest ~56–63 of ~312 ids: the newest 500 overall are all still
      // there, the first 100 all gone, and the ledger's start has moved past them.
      const newest = await store.claimEvents(keysOf(4_500, 500), "n", LEASE_MS, WINDOW_MS);
      expect(newest.statuses.every((s) => s === "duplicate")).toBe(true);
      expect(since).toBeGreaterThan(started);
      const oldest = await store.claimEvents(keysOf(0, 100), "o", LEASE_MS, WINDOW_MS);
      expect(oldest.statuses.every((s) => s === "claimed")).toBe(true);
    } finally {
      await store.close();
    }
  });

  it("never moves its start past now, though expiries are rounded up to whole seconds", async () => {
    // The engine asks history once per start for the newest reading received before it; a start
    // in the future would let ids committed after that question be forgotten under it.
    let now = 1_764_000_000_100;
    const store = new MemoryLiveStore({ maxEvents: 2, shards: 1, now: () => now });
    try {
      for (const id of ["a", "b", "c", "d"]) {
        now += 1;
        const key = { deviceId: "meter-1", eventId: id, observedAtMs: OBSERVED_MS };
        const claim = await store.claimEvents([key], id, LEASE_MS, WINDOW_MS);
        expect(claim.statuses).toEqual(["claimed"]);
        expect(claim.ledgerSinceMs).toBeLessThanOrEqual(now + 1);
        await store.commitEvents([key], id, WINDOW_MS);
      }
      expect((await store.claimEvents([], "e", LEASE_MS, WINDOW_MS)).ledgerSinceMs).toBeGreaterThan(1_764_000_000_100);
    } finally {
      await store.close();
    }
  });

  it("refuses a capacity a JavaScript Map cannot keep", () => {
    expect(() => new MemoryLiveStore({ maxEvents: 16_000_000 })).toThrow(/maxEvents must be from 1 to 8000000/);
    expect(() => new MemoryLiveStore({ shards: 12 })).toThrow(/shards must be a power of two/);
  });
});

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

  /** Runs `test` with a store on keys of its own and a plain client to look at what it wrote. */
  async function withOwnKeys(test: (store: RedisLiveStore, admin: Redis, prefix: string) => Promise<void>): Promise<void> {
    const prefix = `test-${randomUUID()}:`;
    const store = new RedisLiveStore({ url: server!.url, keyPrefix: prefix });
    const admin = new Redis(server!.url);
    try {
      await store.connect();
      await test(store, admin, prefix);
    } finally {
      admin.disconnect();
      await store.close();
    }
  }

  it("surveys a battery unit whose state was written before its level had a field of its own", async () => {
    await withOwnKeys(async (store, admin, prefix) => {
      const values = { health_level: "CRITICAL", health_score: 12 };
      await store.applyLiveState([{ deviceId: "old-unit", kind: "battery", observedAtMs: 5, receivedAtMs: 20, values }]);
      expect(await admin.hdel(`${prefix}{old-unit}:live`, "level")).toBe(1);
      const survey = await store.surveyDevices(["old-unit"], 10);
      expect([...survey.batteryLevels]).toEqual([["CRITICAL", 1]]);
      expect(survey.attention).toEqual([{ deviceId: "old-unit", kind: "battery", observedAtMs: 5, lastSeenMs: 20, level: "CRITICAL" }]);
    });
  });

  it("writes back the ids of a batch that was in flight while Redis restarted, once the batch commits", async () => {
    // A batch claims, Redis restarts empty (no persistence), the batch's rows land and it commits:
    // a resend must then be a duplicate, not a fresh claim to be stored again.
    const store = new RedisLiveStore({ url: server!.url, keyPrefix: `test-${randomUUID()}:` });
    try {
      await store.connect();
      // Large enough to be committed in one step, the way that lost the ids at first.
      const keys = Array.from({ length: BATCH_COMMIT_MIN_EVENTS }, (_, i) => ({ deviceId: "meter-restart", eventId: `e${i}`, observedAtMs: OBSERVED_MS }));
      expect((await store.claimEvents(keys, "in-flight", LEASE_MS, WINDOW_MS)).statuses.every((s) => s === "claimed")).toBe(true);
      await server!.restart();
      await waitFor(() => store.ping().then(() => true, () => false));
      await store.commitClaims("in-flight", keys, WINDOW_MS);
      expect((await store.claimEvents(keys, "resend", LEASE_MS, WINDOW_MS)).statuses.every((s) => s === "duplicate")).toBe(true);
    } finally {
      await store.close();
    }
  });

  it("starts its ledger again when Redis restarted from a snapshot that still held the ledger's start", async () => {
    // The snapshot has the ledger's start and the ids claimed before it, not those claimed since:
    // the new start is what sends a resend of those to the history check.
    const snapshotted = await startRedisServer({ snapshotDir: mkdtempSync(path.join(tmpdir(), "wattstream-rdb-")) });
    const store = new RedisLiveStore({ url: snapshotted.url });
    const admin = new Redis(snapshotted.url);
    admin.on("error", () => {});
    try {
      await store.connect();
      const before = [{ deviceId: "meter-snap", eventId: "before", observedAtMs: OBSERVED_MS }];
      const { ledgerSinceMs: startedMs } = await store.claimEvents(before, "a", LEASE_MS, WINDOW_MS);
      await store.commitClaims("a", before, WINDOW_MS);
      await admin.save();
      await new Promise((resolve) => setTimeout(resolve, 5));
      const after = [{ deviceId: "meter-snap", eventId: "after", observedAtMs: OBSERVED_MS }];
      expect((await store.claimEvents(after, "b", LEASE_MS, WINDOW_MS)).ledgerSinceMs).toBe(startedMs);
      await store.commitClaims("b", after, WINDOW_MS);

      await snapshotted.restart();
      await waitFor(() => store.ping().then(() => true, () => false));
      const resent = await store.claimEvents([...before, ...after], "c", LEASE_MS, WINDOW_MS);
      expect(resent.statuses).toEqual(["duplicate", "claimed"]);
      expect(resent.ledgerSinceMs).toBeGreaterThan(startedMs);
      // Once: the next claim against the same Redis keeps the new start.
      expect((await store.claimEvents([], "d", LEASE_MS, WINDOW_MS)).ledgerSinceMs).toBe(resent.ledgerSinceMs);
    } finally {
      admin.disconnect();
      await store.close();
      await snapshotted.stop();
    }
  });

  it("claims for a user denied INFO, and says it cannot recognise a restart then", async () => {
    // Managed Redis often grants "+@all -@dangerous", and INFO is in @dangerous.
    const admin = new Redis(server!.url);
    const user = `limited-${randomUUID().slice(0, 8)}`;
    await admin.call("ACL", "SETUSER", user, "on", ">secret", "~*", "&*", "+@all", "-@dangerous");
    const url = new URL(server!.url);
    url.username = user;
    url.password = "secret";
    const limited = new RedisLiveStore({ url: url.toString(), keyPrefix: `test-${randomUUID()}:` });
    const full = new RedisLiveStore({ url: server!.url, keyPrefix: `test-${randomUUID()}:` });
    try {
      await limited.connect();
      await full.connect();
      expect(await limited.recognisesRestarts()).toBe(false);
      expect(await full.recognisesRestarts()).toBe(true);
      const keys = [{ deviceId: "meter-acl", eventId: "e1", observedAtMs: OBSERVED_MS }];
      expect((await limited.claimEvents(keys, `acl-${randomUUID()}`, LEASE_MS, WINDOW_MS)).statuses).toEqual(["claimed"]);
    } finally {
      await limited.close();
      await full.close();
      await admin.call("ACL", "DELUSER", user);
      admin.disconnect();
    }
  });

  it("keeps a record of a batch for the dedupe window only when it committed the batch in one step", async () => {
    // The record is a key per batch: kept for a fleet's one-reading calls it would nearly double
    // the ledger's memory, so small batches commit event by event and leave none behind.
    await withOwnKeys(async (store, admin, prefix) => {
      const records = async () => {
        const keys = await admin.keys(`${prefix}claim:*`);
        return Promise.all(keys.map((key) => admin.pttl(key)));
      };
      for (const [token, size] of [["small", 3], ["large", BATCH_COMMIT_MIN_EVENTS]] as const) {
        const keys = Array.from({ length: size }, (_, i) => ({ deviceId: "meter-records", eventId: `${token}-${i}`, observedAtMs: OBSERVED_MS }));
        await store.claimEvents(keys, token, 200, WINDOW_MS);
        await store.commitClaims(token, keys, WINDOW_MS);
      }
      await new Promise((resolve) => setTimeout(resolve, 400));
      const left = await records();
      expect(left).toHaveLength(1);
      expect(left[0]).toBeGreaterThan(WINDOW_MS - 60_000);
    });
  });

  it("keeps a device's ids in one hash per hour of observed time, each expiring a window after its hour", async () => {
    // Every ledger key must expire, or the ledger grows for good; a key per id cost ~150 B more per
    // reading than a field in an hour's hash.
    await withOwnKeys(async (store, admin, prefix) => {
      const hourOf = (ms: number) => Math.floor(ms / HOUR_MS);
      const now = Date.now();
      // The last one's hour has more digits than today's, which the scripts read back from the key.
      const observed = [now, now - 1, now - 3 * HOUR_MS, now - 30 * 24 * HOUR_MS, Date.UTC(20_000, 0, 1)];
      const keys = observed.map((observedAtMs, i) => ({ deviceId: "meter-hours", eventId: `e${i}`, observedAtMs }));
      await store.claimEvents(keys, "hours", LEASE_MS, WINDOW_MS);
      await store.commitEvents(keys, "hours", WINDOW_MS);
      const buckets = (await admin.keys(`${prefix}{meter-hours}:*`)).sort();
      const expected = [...new Set(observed.map(hourOf))].map((hour) => `${prefix}{meter-hours}:ids:${hour}`).sort();
      // The first two share the current hour (unless the test runs across its end).
      expect(buckets).toEqual(expected);
      for (const bucket of buckets) {
        const hour = Number(bucket.split(":").pop());
        const hourEndMs = (hour + 1) * HOUR_MS;
        const expiresAtMs = Date.now() + (await admin.pttl(bucket));
        // An hour not yet over is kept the window past its end; an hour over, the window past now.
        const due = Math.max(hourEndMs, now) + WINDOW_MS;
        expect(Math.abs(expiresAtMs - due)).toBeLessThan(5_000);
      }
      expect(await admin.hlen(`${prefix}{meter-hours}:ids:${hourOf(now - 3 * HOUR_MS)}`)).toBe(1);
    });
  });

  it("reports Redis's eviction policy, so the service can warn of one that may drop ledger keys", async () => {
    const store = new RedisLiveStore({ url: server!.url });
    const admin = new Redis(server!.url);
    try {
      await store.connect();
      expect(await store.evictionPolicy()).toBe("noeviction");
      await admin.config("SET", "maxmemory-policy", "volatile-lru");
      expect(await store.evictionPolicy()).toBe("volatile-lru");
    } finally {
      await admin.config("SET", "maxmemory-policy", "noeviction");
      admin.disconnect();
      await store.close();
    }
  });
});
