// The watch's own rules, on the embedded store: current state first, changes after, the latest
// state only for a consumer that fell behind, a device sent again when it goes silent, and nothing
// left subscribed when it ends.
import { describe, expect, it } from "vitest";
import type { LiveState, LiveStateListener, LiveStateUpdate } from "./live-store.js";
import { watchLiveState } from "./live-watch.js";
import { MemoryLiveStore } from "./memory-live-store.js";

/**
 * The embedded store with its change notices held back until released: Redis delivers them on a
 * connection of their own, so a notice can arrive after a read of a newer state — a race the real
 * parts cannot be made to lose on demand. `afterSubscribe` runs between a watch's subscribing and
 * its first read.
 */
class LateNotices extends MemoryLiveStore {
  private readonly held: (() => void)[] = [];
  afterSubscribe: (() => Promise<void>) | undefined;

  override async subscribe(listener: LiveStateListener): Promise<() => void> {
    const unsubscribe = await super.subscribe((state) => this.held.push(() => listener(state)));
    await this.afterSubscribe?.();
    return unsubscribe;
  }

  /** Delivers the oldest `count` held notices. */
  release(count = Infinity): void {
    for (const deliver of this.held.splice(0, count)) deliver();
  }
}

const update = (deviceId: string, observedAtMs: number, voltage = 230): LiveStateUpdate => ({
  deviceId,
  kind: "meter",
  observedAtMs,
  receivedAtMs: observedAtMs,
  values: { voltage },
});

describe("watchLiveState", () => {
  it("sends a device's latest state once to a consumer that fell behind, in first-changed order", async () => {
    const store = new MemoryLiveStore();
    await store.applyLiveState([update("a", 1)]);
    const abort = new AbortController();
    const watch = watchLiveState(store, { deviceIds: ["a", "b"], signal: abort.signal });
    expect((await watch.next()).value).toMatchObject({ deviceId: "a", observedAtMs: 1 });

    // Five changes of a, one of b, one of a device not watched — none read yet.
    for (let at = 2; at <= 6; at++) await store.applyLiveState([update("a", at)]);
    await store.applyLiveState([update("b", 3), update("c", 9)]);
    const next = async () => ((await watch.next()).value as LiveState).observedAtMs;
    expect([await next(), await next()]).toEqual([6, 3]);

    abort.abort();
    expect((await watch.next()).done).toBe(true);
    expect(store.subscriberCount).toBe(0);
    await store.close();
  });

  it("waits for the next change, and unsubscribes when the consumer stops iterating", async () => {
    const store = new MemoryLiveStore();
    await store.applyLiveState([update("a", 5)]);
    const watch = watchLiveState(store, { signal: new AbortController().signal });
    const first = await watch.next();
    expect(first.value).toMatchObject({ deviceId: "a", observedAtMs: 5 });
    const pending = watch.next();
    await store.applyLiveState([update("a", 7)]);
    expect((await pending).value).toMatchObject({ observedAtMs: 7 });
    expect(store.subscriberCount).toBe(1);
    await watch.return(undefined);
    expect(store.subscriberCount).toBe(0);
    await store.close();
  });

  describe("with an inactivity timeout", () => {
    const OFFLINE_AFTER_MS = 300;
    const seen = (deviceId: string, atMs: number): LiveStateUpdate => ({ deviceId, kind: "meter", observedAtMs: atMs, receivedAtMs: atMs, values: { voltage: 230 } });

    it("sends a device again once it has been silent for the timeout, and not before", async () => {
      const store = new MemoryLiveStore();
      const start = Date.now();
      await store.applyLiveState([seen("a", start)]);
      const abort = new AbortController();
      const watch = watchLiveState(store, { signal: abort.signal, offlineAfterMs: OFFLINE_AFTER_MS });
      expect((await watch.next()).value).toMatchObject({ deviceId: "a", lastSeenMs: start });

      // Heard from again before the timeout: sent as a change; its silence now counts from then.
      await new Promise((resolve) => setTimeout(resolve, 150));
      const again = Date.now();
      await store.applyLiveState([seen("a", again)]);
      expect((await watch.next()).value).toMatchObject({ lastSeenMs: again });

      const silent = await watch.next();
      const sentAt = Date.now();
      expect(silent.value).toMatchObject({ deviceId: "a", lastSeenMs: again });
      // Sent once the timeout had passed since the last reading, not the first one's.
      expect(sentAt - again).toBeGreaterThan(OFFLINE_AFTER_MS);
      expect(sentAt - again).toBeLessThan(OFFLINE_AFTER_MS + 1_000);

      // Offline, it is not sent again until it reports.
      const next = watch.next();
      const outcome = await Promise.race([next.then(() => "sent"), new Promise((resolve) => setTimeout(resolve, 2 * OFFLINE_AFTER_MS, "quiet"))]);
      expect(outcome).toBe("quiet");
      const back = Date.now();
      await store.applyLiveState([seen("a", back)]);
      expect((await next).value).toMatchObject({ lastSeenMs: back });

      abort.abort();
      await store.close();
    });

    it("does not send again a device already silent when the watch starts, nor one whose silence it is not told of", async () => {
      const store = new MemoryLiveStore();
      await store.applyLiveState([seen("old", Date.now() - 10 * OFFLINE_AFTER_MS)]);
      const abort = new AbortController();
      const watch = watchLiveState(store, { signal: abort.signal, offlineAfterMs: OFFLINE_AFTER_MS });
      expect((await watch.next()).value).toMatchObject({ deviceId: "old" });
      const quiet = watchLiveState(store, { signal: abort.signal });
      expect((await quiet.next()).value).toMatchObject({ deviceId: "old" });
      const fresh = Date.now();
      await store.applyLiveState([seen("new", fresh)]);
      expect((await watch.next()).value).toMatchObject({ deviceId: "new" });
      expect((await quiet.next()).value).toMatchObject({ deviceId: "new" });

      // Only the watch told of the timeout sends "new" again, once; "old" never.
      expect((await watch.next()).value).toMatchObject({ deviceId: "new", lastSeenMs: fresh });
      const more = await Promise.race([
        Promise.race([watch.next(), quiet.next()]).then(() => "sent"),
        new Promise((resolve) => setTimeout(resolve, 3 * OFFLINE_AFTER_MS, "quiet")),
      ]);
      expect(more).toBe("quiet");
      abort.abort();
      await store.close();
    });

    it("sends a silent device although other devices keep changing faster than the consumer reads", async () => {
      const store = new MemoryLiveStore();
      const start = Date.now();
      await store.applyLiveState([seen("quiet", start), seen("busy", start)]);
      const abort = new AbortController();
      const watch = watchLiveState(store, { signal: abort.signal, offlineAfterMs: OFFLINE_AFTER_MS });
      await watch.next();
      await watch.next();
      let quietAgain: LiveState | undefined;
      while (quietAgain === undefined && Date.now() - start < 5 * OFFLINE_AFTER_MS) {
        // A change is always waiting when the consumer reads (its notice delivered first).
        await store.applyLiveState([seen("busy", Date.now())]);
        await new Promise((resolve) => setTimeout(resolve, 10));
        const state = (await watch.next()).value as LiveState;
        if (state.deviceId === "quiet") quietAgain = state;
      }
      expect(quietAgain).toMatchObject({ deviceId: "quiet", lastSeenMs: start });
      abort.abort();
      await store.close();
    });

    it("sends a device that reported while the consumer was slow as it is now, not as it went silent", async () => {
      const store = new MemoryLiveStore();
      const start = Date.now();
      await store.applyLiveState([seen("x", start), seen("y", start)]);
      const abort = new AbortController();
      const watch = watchLiveState(store, { signal: abort.signal, offlineAfterMs: OFFLINE_AFTER_MS });
      await watch.next();
      await watch.next();
      await new Promise((resolve) => setTimeout(resolve, OFFLINE_AFTER_MS + 100));
      // Both went silent and were read together; before y's silence is read by the consumer, y reports.
      expect((await watch.next()).value).toMatchObject({ deviceId: "x", lastSeenMs: start });
      const back = Date.now();
      await store.applyLiveState([seen("y", back)]);
      expect((await watch.next()).value).toMatchObject({ deviceId: "y", lastSeenMs: back });
      abort.abort();
      await store.close();
    });

    it("waits quietly for a timeout longer than a timer can hold", async () => {
      const store = new MemoryLiveStore();
      await store.applyLiveState([seen("a", Date.now())]);
      let clockReads = 0;
      const abort = new AbortController();
      const watch = watchLiveState(store, {
        signal: abort.signal,
        offlineAfterMs: 30 * 86_400_000,
        now: () => {
          clockReads++;
          return Date.now();
        },
      });
      await watch.next();
      const waiting = watch.next();
      const before = clockReads;
      await new Promise((resolve) => setTimeout(resolve, 300));
      // Node fires a timer of more than 2^31 - 1 ms at once: the watch would spin on it.
      expect(clockReads - before).toBeLessThan(10);
      abort.abort();
      await waiting;
      await store.close();
    });
  });

  it("sends a reading that replaced the state at the same observed_at, though its last_seen is no later", async () => {
    const store = new MemoryLiveStore();
    const reading = (eventId: string, receivedAtMs: number): LiveStateUpdate => ({
      deviceId: "a",
      kind: "meter",
      observedAtMs: 50,
      receivedAtMs,
      values: { event_id: eventId, voltage: 230 },
    });
    await store.applyLiveState([reading("e2", 101)]);
    const abort = new AbortController();
    const watch = watchLiveState(store, { deviceIds: ["a"], signal: abort.signal });
    expect((await watch.next()).value).toMatchObject({ values: { event_id: "e2" } });
    // Two batches of the same observation settled out of order: the store now holds e1.
    await store.applyLiveState([reading("e1", 100)]);
    const [now] = await store.getLiveState(["a"]);
    expect(now?.values.event_id).toBe("e1");
    const next = await Promise.race([watch.next().then((r) => r.value), new Promise((resolve) => setTimeout(resolve, 500, "nothing sent"))]);
    expect(next).toMatchObject({ values: { event_id: "e1" } });
    abort.abort();
    await store.close();
  });

  it("does not turn back to a state replaced at the same observed_at when its notice comes late", async () => {
    const store = new LateNotices();
    const reading = (eventId: string, observedAtMs: number): LiveStateUpdate => ({
      deviceId: "a",
      kind: "meter",
      observedAtMs,
      receivedAtMs: 100,
      values: { event_id: eventId, voltage: 230 },
    });
    // Between the watch's subscribing and its read, two readings of one observation, received in
    // the same millisecond: the second replaces the first, and their notices are still on the way.
    store.afterSubscribe = async () => {
      await store.applyLiveState([reading("e1", 50)]);
      await store.applyLiveState([reading("e2", 50)]);
    };
    const abort = new AbortController();
    const watch = watchLiveState(store, { deviceIds: ["a"], signal: abort.signal });
    expect((await watch.next()).value).toMatchObject({ values: { event_id: "e2" }, revision: 2 });

    // e1's notice arrives, then e2's, then a newer reading's: only the newer reading is a change.
    const next = watch.next();
    store.release(1);
    await new Promise((resolve) => setImmediate(resolve));
    store.release(1);
    await store.applyLiveState([reading("e3", 60)]);
    store.release();
    expect((await next).value).toMatchObject({ observedAtMs: 60, values: { event_id: "e3" } });
    abort.abort();
    await store.close();
  });
});
