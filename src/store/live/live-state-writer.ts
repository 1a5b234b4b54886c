// Live-state writes of batches that settle close together, written as one. Under load many batches
// settle at once — every batch whose rows were in one insert — and a busy device has readings in
// several of them: written batch by batch, Redis read and rewrote its state once per batch, where
// one write of the newest per device does the same (newest-wins and last_seen are order-free).
import type { LiveStateUpdate, LiveStore } from "./live-store.js";

/** The batches gathered for the next write, and the promise every one of them waits on. */
class Gathered {
  readonly batches: (readonly LiveStateUpdate[])[] = [];
  resolve!: () => void;
  reject!: (error: unknown) => void;
  readonly written = new Promise<void>((resolve, reject) => {
    this.resolve = resolve;
    this.reject = reject;
  });
}

export class LiveStateWriter {
  private gathering: Gathered | undefined;
  private writing = false;

  constructor(private readonly store: Pick<LiveStore, "applyLiveState">) {}

  /**
   * Applies updates together with those of every other batch written in the same turn of the event
   * loop or while the write before is in flight; resolves once they are applied (and fails as that
   * write does), so a call still answers only after its readings are in live state.
   */
  write(updates: readonly LiveStateUpdate[]): Promise<void> {
    if (updates.length === 0) return Promise.resolve();
    this.gathering ??= new Gathered();
    this.gathering.batches.push(updates);
    if (!this.writing) {
      this.writing = true;
      setImmediate(() => void this.drain());
    }
    return this.gathering.written;
  }

  /** One write at a time: what arrives meanwhile is gathered for the next. */
  private async drain(): Promise<void> {
    while (this.gathering !== undefined) {
      const gathered = this.gathering;
      this.gathering = undefined;
      const { batches } = gathered;
      try {
        await this.store.applyLiveState(batches.length === 1 ? batches[0]! : batches.flat());
        gathered.resolve();
      } catch (error) {
        gathered.reject(error);
      }
    }
    this.writing = false;
  }
}
