import { setImmediate as nextTurn } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { settledWithin } from "../../test/support/settled-within.js";
import { AckQueue } from "./ack-queue.js";

/** A writer whose writes the test finishes one by one, as a stream drains. */
class SlowWriter {
  readonly started: number[] = [];
  private pending: { resolve(): void; reject(error: Error): void } | undefined;

  readonly write = (item: number): Promise<void> => {
    if (this.pending !== undefined) throw new Error("a write started before the previous one finished");
    this.started.push(item);
    return new Promise((resolve, reject) => (this.pending = { resolve, reject }));
  };

  async finish(): Promise<void> {
    const pending = this.pending!;
    this.pending = undefined;
    pending.resolve();
    await nextTurn();
  }

  async fail(error: Error): Promise<void> {
    const pending = this.pending!;
    this.pending = undefined;
    pending.reject(error);
    await nextTurn();
  }

  get busy(): boolean {
    return this.pending !== undefined;
  }
}

describe("AckQueue pulled (connect's path)", () => {
  it("gives what was pushed, in order, then the end", async () => {
    const acks = new AckQueue<number>();
    // The reader waits before anything is pushed, as a stream's writer does.
    const first = acks.next();
    acks.push(1);
    acks.push(2);
    acks.end();
    expect(await first).toEqual({ value: 1, done: false });
    expect(await acks.next()).toEqual({ value: 2, done: false });
    expect(await acks.next()).toEqual({ value: undefined, done: true });
  });

  it("gives the failure after what was pushed before it", async () => {
    const acks = new AckQueue<number>();
    acks.push(1);
    acks.fail(new Error("storage is unavailable"));
    expect(await acks.next()).toEqual({ value: 1, done: false });
    await expect(acks.next()).rejects.toThrow("storage is unavailable");
  });
});

describe("AckQueue pushed (the lean gRPC path's writeEach)", () => {
  it("writes one at a time, in order, and settles once the last is written after the end", async () => {
    const acks = new AckQueue<number>();
    const writer = new SlowWriter();
    acks.push(1);
    const written = acks.writeEach(writer.write);
    acks.push(2);
    acks.push(3);
    expect(writer.started).toEqual([1]);
    await writer.finish();
    expect(writer.started).toEqual([1, 2]);
    acks.end();
    await writer.finish();
    expect(await settledWithin(written, 10)).toBe("pending");
    await writer.finish();
    expect(writer.started).toEqual([1, 2, 3]);
    await expect(written).resolves.toBeUndefined();
  });

  it("writes what was pushed before the failure, then rejects with it", async () => {
    const acks = new AckQueue<number>();
    const writer = new SlowWriter();
    const written = acks.writeEach(writer.write);
    acks.push(1);
    acks.push(2);
    acks.fail(new Error("storage is unavailable"));
    await writer.finish();
    expect(await settledWithin(written, 10)).toBe("pending");
    await writer.finish();
    expect(writer.started).toEqual([1, 2]);
    await expect(written).rejects.toThrow("storage is unavailable");
  });

  it("stops at a failed write (the stream is gone): rejects with its error and writes nothing more", async () => {
    const acks = new AckQueue<number>();
    const writer = new SlowWriter();
    const written = acks.writeEach(writer.write);
    const refused = expect(written).rejects.toThrow("the stream is closed");
    acks.push(1);
    acks.push(2);
    await writer.fail(new Error("the stream is closed"));
    await refused;
    acks.push(3);
    acks.end();
    await nextTurn();
    expect(writer.started).toEqual([1]);
    expect(writer.busy).toBe(false);
  });
});
