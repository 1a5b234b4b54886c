import { describe, expect, it } from "vitest";
import type { LiveStateUpdate, LiveStore } from "./live-store.js";
import { LiveStateWriter } from "./live-state-writer.js";
import { MemoryLiveStore } from "./memory-live-store.js";

const update = (deviceId: string, observedAtMs: number, receivedAtMs = observedAtMs): LiveStateUpdate => ({
  deviceId,
  kind: "meter",
  observedAtMs,
  receivedAtMs,
  values: { voltage: 230 + observedAtMs / 1_000 },
});

/** The real in-process store, with each write's size recorded and, when asked, held or failed. */
function recordedStore() {
  const store = new MemoryLiveStore();
  const writes: number[] = [];
  let gate: Promise<void> | undefined;
  let failNext = false;
  const recorded: Pick<LiveStore, "applyLiveState"> = {
    async applyLiveState(updates) {
      writes.push(updates.length);
      if (gate !== undefined) await gate;
      if (failNext) {
        failNext = false;
        throw new Error("live store down");
      }
      await store.applyLiveState(updates);
    },
  };
  return {
    store,
    recorded,
    writes,
    hold: () => {
      let release!: () => void;
      gate = new Promise((resolve) => (release = resolve));
      return () => {
        gate = undefined;
        release();
      };
    },
    failNextWrite: () => (failNext = true),
  };
}

describe("LiveStateWriter", () => {
  it("writes batches of one turn as one write, each answered once its state is in the store", async () => {
    const { store, recorded, writes } = recordedStore();
    const writer = new LiveStateWriter(recorded);
    const first = writer.write([update("a", 1_000), update("b", 1_000)]);
    const second = writer.write([update("a", 2_000), update("c", 1_000)]);
    await first;
    expect(writes).toEqual([4]);
    const [a, b, c] = await store.getLiveState(["a", "b", "c"]);
    expect([a!.observedAtMs, b!.observedAtMs, c!.observedAtMs]).toEqual([2_000, 1_000, 1_000]);
    // One change for device a, not two.
    expect(a!.revision).toBe(1);
    await second;
  });

  it("gathers what arrives while a write is in flight into the next one", async () => {
    const { store, recorded, writes, hold } = recordedStore();
    const writer = new LiveStateWriter(recorded);
    const release = hold();
    const first = writer.write([update("a", 1_000)]);
    await new Promise((resolve) => setImmediate(resolve));
    expect(writes).toEqual([1]);
    let laterSettled = false;
    const later = Promise.all([writer.write([update("a", 3_000, 5_000)]), writer.write([update("a", 2_000, 9_000)])]).then(() => (laterSettled = true));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(writes).toEqual([1]);
    expect(laterSettled).toBe(false);
    release();
    await first;
    await later;
    expect(writes).toEqual([1, 2]);
    const [a] = await store.getLiveState(["a"]);
    expect([a!.observedAtMs, a!.lastSeenMs, a!.revision]).toEqual([3_000, 9_000, 2]);
  });

  it("fails every batch of a failed write, and writes the next ones", async () => {
    const { store, recorded, failNextWrite } = recordedStore();
    const writer = new LiveStateWriter(recorded);
    failNextWrite();
    const failed = [writer.write([update("a", 1_000)]), writer.write([update("b", 1_000)])];
    await expect(Promise.all(failed.map((p) => p.then(() => "ok", (error: Error) => error.message)))).resolves.toEqual([
      "live store down",
      "live store down",
    ]);
    await writer.write([update("b", 2_000)]);
    expect(await store.getLiveState(["a", "b"])).toEqual([undefined, expect.objectContaining({ observedAtMs: 2_000 })]);
  });

  it("answers an empty batch at once, without a write", async () => {
    const { recorded, writes } = recordedStore();
    await new LiveStateWriter(recorded).write([]);
    expect(writes).toEqual([]);
  });
});
