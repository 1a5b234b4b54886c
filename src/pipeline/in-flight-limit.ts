// A bound on readings between admission and acknowledgement, so memory stays flat whatever the
// load: callers either get room at once (tryAcquire), or wait in order until enough is released.
export class InFlightLimit {
  private used = 0;
  private readonly waiters: { amount: number; grant: () => void; fail: (e: unknown) => void }[] = [];

  constructor(readonly capacity: number) {}

  get inFlight(): number {
    return this.used;
  }

  get waiting(): number {
    return this.waiters.length;
  }

  /** Takes room at once if there is some and nobody is waiting ahead. */
  tryAcquire(amount: number): boolean {
    if (this.waiters.length > 0 || !this.fits(amount)) return false;
    this.used += amount;
    return true;
  }

  /** Waits for room; rejects if the signal aborts first. */
  acquire(amount: number, signal?: AbortSignal): Promise<void> {
    if (this.tryAcquire(amount)) return Promise.resolve();
    signal?.throwIfAborted();
    return new Promise((resolve, reject) => {
      const waiter = {
        amount,
        grant: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        },
        fail: reject,
      };
      const onAbort = () => {
        const at = this.waiters.indexOf(waiter);
        if (at >= 0) this.waiters.splice(at, 1);
        reject(signal!.reason);
        this.grantWaiting();
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  release(amount: number): void {
    this.used -= amount;
    this.grantWaiting();
  }

  /** A batch larger than the whole capacity may still run alone, or it could never run. */
  private fits(amount: number): boolean {
    return this.used === 0 || this.used + amount <= this.capacity;
  }

  private grantWaiting(): void {
    while (this.waiters.length > 0 && this.fits(this.waiters[0]!.amount)) {
      const waiter = this.waiters.shift()!;
      this.used += waiter.amount;
      waiter.grant();
    }
  }
}
