// The acknowledgements of one SyncReadings stream, between the ingest loop that pushes them as its
// batches settle and the response's writer.

/**
 * An iterator of its own rather than an async generator: a stream waits on it
 * for most of its life, and a generator's machinery (its object, requests, frame and the promises
 * between them) was ~1 kB of the ~17.5 kB of heap an open stream holds, which 20,000 streams keep
 * and every full collection marks (docs/benchmarks.md). The lean gRPC path takes them pushed
 * (writeEach), so that nothing waits from one acknowledgement to the next; connect's path pulls.
 */
export class AckQueue<T> implements AsyncIterableIterator<T> {
  private readonly items: T[] = [];
  private finished = false;
  private error: unknown;
  private waiting: { resolve: (result: IteratorResult<T>) => void; reject: (error: unknown) => void } | undefined;
  /** The writer items are pushed to, once writeEach is called; `writing` while it writes one. */
  private writer: { write: (item: T) => Promise<void>; resolve: () => void; reject: (error: unknown) => void } | undefined;
  private writing = false;
  // Made once for the stream, not for each acknowledgement written.
  private readonly written = () => {
    this.writing = false;
    this.notify();
  };
  private readonly writeFailed = (error: unknown) => {
    this.writing = false;
    const writer = this.writer;
    // The stream is gone: the acknowledgements still to come are dropped, as return() drops them.
    this.stop();
    writer?.reject(error);
  };

  push(item: T): void {
    // Ended, failed, or stopped by its reader or writer: nothing more is read.
    if (this.finished) return;
    this.items.push(item);
    this.notify();
  }

  end(): void {
    this.finished = true;
    this.notify();
  }

  fail(error: unknown): void {
    if (this.finished) return;
    this.error = error;
    this.finished = true;
    this.notify();
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<T>> {
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.notify();
    });
  }

  /** The reader stopped (its stream is gone): the acknowledgements still to come are dropped. */
  return(): Promise<IteratorResult<T>> {
    this.stop();
    return Promise.resolve({ value: undefined, done: true });
  }

  /** Writes every acknowledgement with `write` as it comes, one at a time, in order (PushedResponses, lean-grpc-streams.ts). */
  writeEach(write: (item: T) => Promise<void>): Promise<void> {
    return new Promise((resolve, reject) => {
      this.writer = { write, resolve, reject };
      this.notify();
    });
  }

  private stop(): void {
    this.items.length = 0;
    this.finished = true;
    this.error = undefined;
    this.writer = undefined;
  }

  /** Hands the next item, or the end, to the writer or to the reader's waiting next(), if there is one. */
  private notify(): void {
    if (this.writer !== undefined) this.toWriter(this.writer);
    else this.toReader();
  }

  private toWriter(writer: NonNullable<AckQueue<T>["writer"]>): void {
    if (this.writing) return;
    const item = this.items.shift();
    if (item !== undefined) {
      this.writing = true;
      writer.write(item).then(this.written, this.writeFailed);
    } else if (this.finished) {
      this.writer = undefined;
      if (this.error !== undefined) writer.reject(this.error);
      else writer.resolve();
    }
  }

  private toReader(): void {
    const waiting = this.waiting;
    if (waiting === undefined) return;
    if (this.items.length > 0) {
      this.waiting = undefined;
      waiting.resolve({ value: this.items.shift()!, done: false });
    } else if (this.finished) {
      this.waiting = undefined;
      if (this.error !== undefined) waiting.reject(this.error);
      else waiting.resolve({ value: undefined, done: true });
    }
  }
}
