// A wake-up call that a loop can wait for again and again, as a stream's read loop waits for its
// next message or the stream's failure, whichever comes first.
//
// Each wait gets a promise of its own. Racing one promise kept for the loop's life instead leaks:
// Promise.race leaves a reaction on every promise it is given until that promise settles, and each
// reaction holds the race's result — for the read loop, the message it read. A device's stream
// that never fails kept every message it sent alive that way until the stream ended, up to
// MAX_STREAM_DURATION (an hour by default). Measured (docs/benchmarks.md): ~550 B per message; with
// 2,000 streams sending 2 readings a second for a minute, the heap left after a full collection
// grew 38 → 166 MB, against ~60 MB throughout with a promise per wait.
export class WakeUp<T> {
  private resolveWait: ((value: T) => void) | undefined;
  private woken: { readonly value: T } | undefined;

  /** Resolves with the value of the first wake(), whether it came before this wait or during it. */
  wait(): Promise<T> {
    if (this.woken !== undefined) return Promise.resolve(this.woken.value);
    // Replaces the previous wait's resolver: that promise, and what a race hung on it, can go.
    return new Promise((resolve) => (this.resolveWait = resolve));
  }

  /** Wakes the current wait and answers every later one at once; only the first value counts. */
  wake(value: T): void {
    this.woken ??= { value };
    this.resolveWait?.(this.woken.value);
    this.resolveWait = undefined;
  }
}
