// Live-state writes of batches that settle close together, written as one. Under load many batches
// settle at once — every batch whose rows were in one insert — and a busy device has readings in
// several of them: written batch by batch, Redis read and rewrote its state once per batch, where
// one write of the newest per device does the same (newest-wins and last_seen are order-free).
import type { LiveStateUpdate, LiveStore } from "./live-store.js";

interface Waiter {
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

export class LiveStateWriter {
  private pending: (readonly LiveStateUpdate[])[] = [];
  private waiters: Waiter[] = [];
  private writing = false;

  constructor(private readonly store: Pick<LiveStore, "applyLiveState">) {}

  /**
   * Applies updates together with those of every other batch written in the same turn of the event
   * loop or while the write before is in flight; resolves once they are applied (and fails as that
   * write does), so a call still answers only after its readings are in live state.
   */
  write(updates: readonly LiveStateUpdate[]): Promise<void> {
    if (updates.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.pending.push(updates);
      this.waiters.push({ resolve, reject });
      if (this.writing) return;
      this.writing = true;
      setImmediate(() => void this.drain());
    });
  }

  /** One write at a time: what arrives meanwhile waits for it and goes in the next. */
  private async drain(): Promise<void> {
    while (this.pending.length > 0) {
      const updates = this.pending.length === 1 ? this.pending[0]! : this.pending.flat();
      const waiters = this.waiters;
      this.pending = [];
      this.waiters = [];
      try {
        await this.store.applyLiveState(updates);
        for (const waiter of waiters) waiter.resolve();
      } catch (error) {
        for (const waiter of waiters) waiter.reject(error);
      }
    }
    this.writing = false;
  }
}
