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

export const FAILED = Symbol("the stream failed");
export const NOTHING_QUEUED = Symbol("nothing more queued");
export type ReadLoopEvent<M> = IteratorResult<M> | typeof FAILED | typeof NOTHING_QUEUED;

type Arrived<M> = { readonly result: IteratorResult<M> } | { readonly error: unknown };

export class ReadLoopEvents<M> {
  /** The message read ahead (or the error reading it), until a wait takes it. */
  private arrived: Arrived<M> | undefined;
  private failed = false;
  private resolveWait: ((event: ReadLoopEvent<M>) => void) | undefined;
  private rejectWait: ((error: unknown) => void) | undefined;
  private turnEnd: NodeJS.Immediate | undefined;

  constructor(private readonly messages: AsyncIterator<M>) {}

  /** Asks for the next message: once at the start, then once after each message taken. */
  readNext(): void {
    this.messages.next().then(
      (result) => this.arrive({ result }),
      (error: unknown) => this.arrive({ error }),
    );
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
