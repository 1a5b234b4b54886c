// The watch's own rules, on the embedded store: current state first, changes after, the latest
// state only for a consumer that fell behind, and nothing left subscribed when it ends.
import { describe, expect, it } from "vitest";
import type { LiveState, LiveStateUpdate } from "./live-store.js";
import { watchLiveState } from "./live-watch.js";
import { MemoryLiveStore } from "./memory-live-store.js";

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
});
