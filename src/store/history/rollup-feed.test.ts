// The rollup feed's scheduling, with a stand-in for the insert so that it can fail on demand (the
// sink's tests feed the real engine): batches per table, each block once, retries of a failed
// batch as it was, and what caughtUp and close promise.
import { describe, expect, it, vi } from "vitest";
import type { DeviceKind } from "../../process/history-rows.js";
import { RollupFeed, type StoredBlock } from "./rollup-feed.js";

const block = (token: string): StoredBlock => ({ token, payload: Buffer.from(token) });

/** Records each batch the feed writes; fails the next `failures` of them. */
function recordingInsert(failures = 0) {
  const batches: { kind: DeviceKind; tokens: string[] }[] = [];
  let toFail = failures;
  const feed = async (kind: DeviceKind, blocks: readonly StoredBlock[]) => {
    if (toFail > 0) {
      toFail--;
      throw new Error("the engine refused the batch");
    }
    batches.push({ kind, tokens: blocks.map((b) => b.token) });
  };
  return { batches, feed, failForever: () => (toFail = Infinity), recover: () => (toFail = 0) };
}

describe("the rollup feed", () => {
  it("writes the blocks stored within an interval as one batch per table", async () => {
    const insert = recordingInsert();
    const feed = new RollupFeed(insert.feed, { intervalMs: 30 });
    feed.add("meter", block("m1"));
    feed.add("vehicle", block("v1"));
    feed.add("meter", block("m2"));
    expect(insert.batches).toEqual([]);
    // After the interval, however slow the machine is today.
    await vi.waitFor(() => expect(insert.batches).toHaveLength(2));
    expect(insert.batches).toEqual(
      expect.arrayContaining([
        { kind: "meter", tokens: ["m1", "m2"] },
        { kind: "vehicle", tokens: ["v1"] },
      ]),
    );
    expect(insert.batches).toHaveLength(2);
    expect(feed.pendingBlocks).toBe(0);
  });

  it("takes a block once, however many attempts report it stored", async () => {
    const insert = recordingInsert();
    const feed = new RollupFeed(insert.feed, { intervalMs: 600_000 });
    expect(feed.add("battery", block("b1"))).toBe(true);
    expect(feed.add("battery", block("b1"))).toBe(false);
    await feed.caughtUp();
    // Still once after it was written.
    expect(feed.add("battery", block("b1"))).toBe(false);
    await feed.caughtUp();
    expect(insert.batches).toEqual([{ kind: "battery", tokens: ["b1"] }]);
  });

  it("answers caughtUp at once when nothing is waiting, and only after the write otherwise", async () => {
    const insert = recordingInsert();
    const feed = new RollupFeed(insert.feed, { intervalMs: 600_000 });
    await feed.caughtUp();
    feed.add("meter", block("m1"));
    await feed.caughtUp();
    expect(insert.batches).toEqual([{ kind: "meter", tokens: ["m1"] }]);
  });

  it("covers in caughtUp a block stored while the batch before it is being written", async () => {
    let release!: () => void;
    const batches: string[][] = [];
    const feed = new RollupFeed(
      async (_kind, blocks) => {
        if (batches.length === 0) await new Promise<void>((resolve) => (release = resolve));
        batches.push(blocks.map((b) => b.token));
      },
      { intervalMs: 600_000 },
    );
    feed.add("meter", block("m1"));
    const first = feed.caughtUp();
    await new Promise((resolve) => setImmediate(resolve));
    feed.add("meter", block("m2"));
    let second = false;
    const both = feed.caughtUp().then(() => (second = true));
    release();
    await first;
    await both;
    expect(second).toBe(true);
    expect(batches).toEqual([["m1"], ["m2"]]);
  });

  it("tries a failed batch again, the same blocks, until it is written", async () => {
    const insert = recordingInsert(2);
    const errors: number[] = [];
    const feed = new RollupFeed(insert.feed, { intervalMs: 600_000, retryDelayMs: 5, onError: (_kind, _error, blocks) => errors.push(blocks) });
    feed.add("vehicle", block("v1"));
    feed.add("vehicle", block("v2"));
    await feed.caughtUp();
    expect(errors).toEqual([2, 2]);
    expect(insert.batches).toEqual([{ kind: "vehicle", tokens: ["v1", "v2"] }]);
  });

  it("says at close whether every block was written, and stops trying when it was not", async () => {
    const insert = recordingInsert();
    const feed = new RollupFeed(insert.feed, { intervalMs: 600_000, retryDelayMs: 5 });
    feed.add("meter", block("m1"));
    expect(await feed.close(1_000)).toBe(true);
    expect(insert.batches).toEqual([{ kind: "meter", tokens: ["m1"] }]);

    const failing = recordingInsert();
    failing.failForever();
    const stuck = new RollupFeed(failing.feed, { intervalMs: 600_000, retryDelayMs: 5 });
    stuck.add("meter", block("m2"));
    expect(await stuck.close(50)).toBe(false);
    failing.recover();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(failing.batches, "no attempt after close").toEqual([]);
  });
});
