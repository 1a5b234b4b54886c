import { setImmediate as nextTurn } from "node:timers/promises";
import v8 from "node:v8";
import vm from "node:vm";
import { describe, expect, it } from "vitest";
import { WakeUp } from "./wake-up.js";

// The collector, to see what a long wait keeps alive.
v8.setFlagsFromString("--expose-gc");
const collectGarbage = vm.runInNewContext("gc") as () => void;

/** Races `rounds` messages against the wake-up, as a stream's read loop does; weak references to each. */
async function readMessages(rounds: number, failure: () => Promise<unknown>): Promise<WeakRef<object>[]> {
  const read: WeakRef<object>[] = [];
  for (let i = 0; i < rounds; i++) {
    const message = { readings: new Uint8Array(1024) };
    read.push(new WeakRef(message));
    await Promise.race([Promise.resolve(message), failure()]);
  }
  return read;
}

async function stillAlive(read: WeakRef<object>[]): Promise<number> {
  // A weak reference holds its target until the job that made it ends.
  await nextTurn();
  collectGarbage();
  return read.filter((ref) => ref.deref() !== undefined).length;
}

describe("WakeUp", () => {
  it("lets what each wait was raced against go, on a loop that is never woken", async () => {
    const failed = new WakeUp<"failed">();
    const read = await readMessages(1_000, () => failed.wait());
    // At most the last wait's message, whose promise the wake-up still holds.
    expect(await stillAlive(read)).toBeLessThanOrEqual(1);
  });

  it("is the leak it replaces: one promise kept for the loop's life holds every message raced against it", async () => {
    const never = new Promise<"failed">(() => {});
    const read = await readMessages(1_000, () => never);
    expect(await stillAlive(read)).toBe(1_000);
  });

  it("wakes the wait in progress, and answers later waits at once", async () => {
    const failed = new WakeUp<string>();
    const waiting = failed.wait();
    failed.wake("first");
    failed.wake("second");
    expect(await waiting).toBe("first");
    expect(await failed.wait()).toBe("first");
  });

  it("answers a wait begun after the wake", async () => {
    const failed = new WakeUp<number>();
    failed.wake(7);
    expect(await Promise.race([failed.wait(), new Promise((resolve) => setTimeout(resolve, 1_000, "timed out"))])).toBe(7);
  });
});
