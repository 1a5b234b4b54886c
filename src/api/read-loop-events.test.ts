import { setImmediate as nextTurn } from "node:timers/promises";
import v8 from "node:v8";
import vm from "node:vm";
import { describe, expect, it } from "vitest";
import { FAILED, NOTHING_QUEUED, ReadLoopEvents, type CallbackReads, type ReadLoopEvent } from "./read-loop-events.js";

// The collector, to see what a long stream keeps alive.
v8.setFlagsFromString("--expose-gc");
const collectGarbage = vm.runInNewContext("gc") as () => void;

/** An iterator whose messages the test hands over one by one, as a stream's body delivers them. */
class Inbox<M> implements AsyncIterator<M> {
  private readonly queued: M[] = [];
  private reader: { resolve(r: IteratorResult<M>): void; reject(e: unknown): void } | undefined;

  next(): Promise<IteratorResult<M>> {
    const message = this.queued.shift();
    if (message !== undefined) return Promise.resolve({ done: false, value: message });
    return new Promise((resolve, reject) => (this.reader = { resolve, reject }));
  }

  deliver(message: M): void {
    if (this.reader === undefined) this.queued.push(message);
    else this.reader.resolve({ done: false, value: message });
    this.reader = undefined;
  }

  break(error: Error): void {
    this.reader?.reject(error);
  }
}

/** A source that hands its messages to callbacks (CallbackReads), as the lean gRPC path's reader does; it has no next(). */
class CallbackInbox<M> implements AsyncIterator<M>, CallbackReads<M> {
  private readonly queued: M[] = [];
  private error: Error | undefined;
  private reader: { arrived(r: IteratorResult<M>): void; failed(e: unknown): void } | undefined;
  /** Reads asked for while nothing was there, and the callbacks each was given. */
  readonly waits: { arrived: unknown; failed: unknown }[] = [];

  next(): Promise<IteratorResult<M>> {
    throw new Error("a source read through callbacks is not asked for promises");
  }

  readNextInto(arrived: (r: IteratorResult<M>) => void, failed: (e: unknown) => void): void {
    const message = this.queued.shift();
    if (message !== undefined) arrived({ done: false, value: message });
    else if (this.error !== undefined) failed(this.error);
    else {
      this.reader = { arrived, failed };
      this.waits.push({ arrived, failed });
    }
  }

  deliver(message: M): void {
    const reader = this.reader;
    this.reader = undefined;
    if (reader === undefined) this.queued.push(message);
    else reader.arrived({ done: false, value: message });
  }

  break(error: Error): void {
    const reader = this.reader;
    this.reader = undefined;
    if (reader === undefined) this.error = error;
    else reader.failed(error);
  }
}

/** Whether `promise` is still pending after this turn of the event loop and the next. */
async function pendingAfterTurns(promise: Promise<unknown>): Promise<boolean> {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  await nextTurn();
  await nextTurn();
  return !settled;
}

/** Takes `count` messages through the events, as a stream's read loop does; weak references to each. */
async function readMessages(inbox: { deliver(message: object): void }, events: ReadLoopEvents<object>, count: number): Promise<WeakRef<object>[]> {
  const read: WeakRef<object>[] = [];
  events.readNext();
  for (let i = 0; i < count; i++) {
    const message = { readings: new Uint8Array(1024) };
    read.push(new WeakRef(message));
    inbox.deliver(message);
    await events.next(i % 2 === 0);
    events.readNext();
  }
  return read;
}

/** A test's message source: messages and failures handed over one by one, as a stream's body delivers them. */
type TestInbox<M> = AsyncIterator<M> & { deliver(message: M): void; break(error: Error): void };

/** The two kinds of source the read loop reads: a promise per read, or callbacks (the lean gRPC path's reader). */
const SOURCES = [
  { kind: "a promise per read", make: <M>(): TestInbox<M> => new Inbox<M>() },
  { kind: "callbacks (CallbackReads)", make: <M>(): TestInbox<M> => new CallbackInbox<M>() },
];

const valueOf = (event: ReadLoopEvent<string>) => (typeof event === "symbol" || event.done === true ? event : event.value);

describe.each(SOURCES)("ReadLoopEvents reading a source with $kind", ({ make }) => {
  /** Events over a source already holding `messages`, as a stream's body that delivered them together. */
  function eventsOver(...messages: string[]): { inbox: TestInbox<string>; events: ReadLoopEvents<string> } {
    const inbox = make<string>();
    for (const message of messages) inbox.deliver(message);
    return { inbox, events: new ReadLoopEvents(inbox) };
  }

  it("gives messages in order, one for each read asked for", async () => {
    const { inbox, events } = eventsOver("a", "b");
    events.readNext();
    expect(valueOf(await events.next(false))).toBe("a");
    events.readNext();
    expect(valueOf(await events.next(false))).toBe("b");
    events.readNext();
    const waiting = events.next(false);
    expect(await pendingAfterTurns(waiting)).toBe(true);
    inbox.deliver("c");
    expect(valueOf(await waiting)).toBe("c");
  });

  it("answers NOTHING_QUEUED only once a turn of the event loop has brought no message", async () => {
    const { events } = eventsOver("a", "b");
    events.readNext();
    expect(valueOf(await events.next(false))).toBe("a");
    // "b" has arrived together with "a": it comes before the turn ends.
    events.readNext();
    expect(valueOf(await events.next(true))).toBe("b");
    events.readNext();
    expect(await events.next(true)).toBe(NOTHING_QUEUED);
  });

  it("does not let the end of a turn answer a later wait once a message answered its own", async () => {
    const { inbox, events } = eventsOver();
    events.readNext();
    const first = events.next(true);
    inbox.deliver("a");
    expect(valueOf(await first)).toBe("a");
    events.readNext();
    // Without readings held, only a message or a failure answers.
    expect(await pendingAfterTurns(events.next(false))).toBe(true);
  });

  it("wakes the wait in progress on failure, and answers every later wait at once, before any message", async () => {
    const { inbox, events } = eventsOver();
    events.readNext();
    const waiting = events.next(false);
    events.fail();
    expect(await waiting).toBe(FAILED);
    inbox.deliver("late");
    expect(await events.next(true)).toBe(FAILED);
  });

  it("gives a read's error as the wait's rejection, whether it came during the wait or before it", async () => {
    const { inbox: during, events } = eventsOver();
    events.readNext();
    const waiting = events.next(false);
    during.break(new Error("the stream was reset"));
    await expect(waiting).rejects.toThrow("the stream was reset");

    const { inbox: before, events: early } = eventsOver();
    early.readNext();
    before.break(new Error("the body ended inside a message"));
    await nextTurn();
    await expect(early.next(false)).rejects.toThrow("the body ended inside a message");
  });

  it("keeps none of the messages it gave, however long the stream and its last wait", async () => {
    const inbox = make<object>();
    const events = new ReadLoopEvents(inbox);
    const read = await readMessages(inbox, events, 1_000);
    // The stream now waits (for a message that never comes), as a device's stream between readings.
    void events.next(false);
    // A weak reference holds its target until the job that made it ends.
    await nextTurn();
    collectGarbage();
    expect(read.filter((ref) => ref.deref() !== undefined)).toHaveLength(0);
  });
});

describe("ReadLoopEvents reading a source with callbacks", () => {
  it("asks it for no promise, and gives it the same two callbacks for every read", async () => {
    const inbox = new CallbackInbox<string>();
    const events = new ReadLoopEvents(inbox);
    // CallbackInbox.next() throws: every read goes through readNextInto.
    for (const message of ["a", "b", "c"]) {
      events.readNext();
      const waiting = events.next(false);
      inbox.deliver(message);
      expect(valueOf(await waiting)).toBe(message);
    }
    expect(inbox.waits).toHaveLength(3);
    expect(new Set(inbox.waits.map((w) => w.arrived)).size).toBe(1);
    expect(new Set(inbox.waits.map((w) => w.failed)).size).toBe(1);
  });
});
