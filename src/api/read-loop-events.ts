// What a stream's read loop waits for, with one promise per wait: the stream's next message, the
// stream's failure, or — while the loop holds readings not yet submitted — the end of the event
// loop's current turn, by when every message that arrived together has been taken.
//
// The loop used to race three promises for each wait (the next message, a failure wake-up, a
// setImmediate), three races per message, each with its array, its own promise and a reaction on
// every promise raced: ~1.5 kB of garbage per message, and the last race of each message waited,
// with all of that, until the stream's next message (docs/benchmarks.md). Nothing here outlives
// the wait it serves either: a promise kept for the stream's life that every wait was raced against
// once held every message the stream read until it ended (the leak docs/benchmarks.md describes).
// A source that can hand its next message to callbacks (CallbackReads) is read without a promise,
// because whatever a read allocates lives until that next message — seconds, on a device's stream:
// it is promoted, and each one is garbage for a full collection to find (docs/benchmarks.md).

export const FAILED = Symbol("the stream failed");
export const NOTHING_QUEUED = Symbol("nothing more queued");
export type ReadLoopEvent<M> = IteratorResult<M> | typeof FAILED | typeof NOTHING_QUEUED;

type Arrived<M> = { readonly result: IteratorResult<M> } | { readonly error: unknown };

/**
 * A message source that gives its next message to callbacks instead of a promise (the lean gRPC
 * path's request reader): a read asked for while nothing has arrived keeps only the two callbacks,
 * which the read loop makes once per stream.
 */
export interface CallbackReads<M> {
  /** Calls one of the two, once, with the next message (or the end) or the error reading it; at once if it is there. */
  readNextInto(arrived: (result: IteratorResult<M>) => void, failed: (error: unknown) => void): void;
}

function readsIntoCallbacks<M>(messages: AsyncIterator<M>): messages is AsyncIterator<M> & CallbackReads<M> {
  return typeof (messages as Partial<CallbackReads<M>>).readNextInto === "function";
}

export class ReadLoopEvents<M> {
  /** The message read ahead (or the error reading it), until a wait takes it. */
  private arrived: Arrived<M> | undefined;
  private failed = false;
  private resolveWait: ((event: ReadLoopEvent<M>) => void) | undefined;
  private rejectWait: ((error: unknown) => void) | undefined;
  private turnEnd: NodeJS.Immediate | undefined;

  // Made once for the stream, not for each read.
  private readonly received = (result: IteratorResult<M>) => this.arrive({ result });
  private readonly readFailed = (error: unknown) => this.arrive({ error });

  constructor(private readonly messages: AsyncIterator<M>) {}

  /** Asks for the next message: once at the start, then once after each message taken. */
  readNext(): void {
    if (readsIntoCallbacks(this.messages)) this.messages.readNextInto(this.received, this.readFailed);
    else this.messages.next().then(this.received, this.readFailed);
  }

  /**
   * The next event: the stream's failure once there is one; else a message that has arrived (or
   * the error that reading it gave, as a rejection); else, with `orNothingQueued`, NOTHING_QUEUED
   * once this turn of the event loop has delivered none; else the first of those to come.
   */
  next(orNothingQueued: boolean): Promise<ReadLoopEvent<M>> {
    if (this.failed) return Promise.resolve(FAILED);
    const arrived = this.arrived;
    if (arrived !== undefined) {
      this.arrived = undefined;
      return "error" in arrived ? Promise.reject(arrived.error) : Promise.resolve(arrived.result);
    }
    return new Promise((resolve, reject) => {
      this.resolveWait = resolve;
      this.rejectWait = reject;
      if (orNothingQueued) this.turnEnd = setImmediate(() => this.settle(NOTHING_QUEUED));
    });
  }

  /** The stream failed: wakes the wait in progress and answers every later one at once. */
  fail(): void {
    this.failed = true;
    this.settle(FAILED);
  }

  private arrive(arrived: Arrived<M>): void {
    if (this.resolveWait === undefined) this.arrived = arrived;
    else if ("error" in arrived) this.settle(undefined, arrived.error);
    else this.settle(arrived.result);
  }

  private settle(event: ReadLoopEvent<M> | undefined, error?: unknown): void {
    const resolve = this.resolveWait;
    const reject = this.rejectWait;
    if (resolve === undefined || reject === undefined) return;
    this.resolveWait = this.rejectWait = undefined;
    clearImmediate(this.turnEnd);
    this.turnEnd = undefined;
    if (event === undefined) reject(error);
    else resolve(event);
  }
}
