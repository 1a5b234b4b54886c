// Feeds the rollups with blocks already stored in history, a batch at a time per table, off the
// acknowledgement's path. A block is acknowledged once it is in its history table; its rollups
// (the minute, hourly and by-time ones) follow within `intervalMs`, in one insert with the other
// blocks of that time, which costs the engine a few parts a second instead of several per small
// insert. Anyone about to read the rollups asks for `caughtUp()` first: it feeds what is queued
// at once and resolves when every block stored before the call is in the rollups, so an answer
// never misses a reading that was acknowledged before it was asked for.
//
// A batch that fails is tried again, the same blocks under the same dedupe token, until it lands
// or the feed closes. What is left unfed when the process dies is in the spool, and the next start
// rebuilds those blocks' rollup groups from history (recoverSpool).
import { setTimeout as sleep } from "node:timers/promises";
import { LRUCache } from "lru-cache";
import type { DeviceKind } from "../../process/history-rows.js";

/** A block in its history table, waiting for its rollups. */
export interface StoredBlock {
  readonly payload: Buffer;
  /** The block's insert_deduplication_token: one block, however many attempts stored it. */
  readonly token: string;
}

export interface RollupFeedOptions {
  /** Longest a stored block waits for its rollups while nobody reads them, in ms. */
  readonly intervalMs?: number;
  /** Pause before trying a failed batch again, doubling up to maxRetryDelayMs. */
  readonly retryDelayMs?: number;
  readonly maxRetryDelayMs?: number;
  /** Told of each failed attempt (the batch is tried again). */
  readonly onError?: (kind: DeviceKind, error: unknown, blocks: number) => void;
}

/** Writes one batch of stored blocks into the kind's rollups; the same blocks must write nothing new the second time. */
export type FeedBatch<B extends StoredBlock> = (kind: DeviceKind, blocks: readonly B[]) => Promise<void>;

/** How many blocks' tokens are remembered, to feed each block once however many attempts store it. */
const REMEMBERED_TOKENS = 100_000;

interface Batch<B> {
  readonly blocks: B[];
  readonly fed: Promise<void>;
  readonly resolve: () => void;
}

interface KindState<B> {
  /** Blocks gathering for the next feed. */
  next: Batch<B>;
  /** The batch being fed, if any. */
  running: Batch<B> | undefined;
  timer: NodeJS.Timeout | undefined;
  /** Someone waits for `next`: feed it as soon as the running batch is done. */
  urgent: boolean;
}

export class RollupFeed<B extends StoredBlock = StoredBlock> {
  private readonly intervalMs: number;
  private readonly retryDelayMs: number;
  private readonly maxRetryDelayMs: number;
  private readonly kinds = new Map<DeviceKind, KindState<B>>();
  private readonly seenTokens = new LRUCache<string, true>({ max: REMEMBERED_TOKENS });
  private closing = false;

  constructor(
    private readonly feedBatch: FeedBatch<B>,
    private readonly options: RollupFeedOptions = {},
  ) {
    this.intervalMs = options.intervalMs ?? 1_000;
    this.retryDelayMs = options.retryDelayMs ?? 200;
    this.maxRetryDelayMs = options.maxRetryDelayMs ?? 5_000;
  }

  /** Blocks stored but not yet in the rollups. */
  get pendingBlocks(): number {
    let count = 0;
    for (const state of this.kinds.values()) count += state.next.blocks.length + (state.running?.blocks.length ?? 0);
    return count;
  }

  /**
   * Queues a block that is now in history. Answers false, and queues nothing, for a block already
   * queued or fed (a second attempt at it also reported success).
   */
  add(kind: DeviceKind, block: B): boolean {
    if (this.seenTokens.has(block.token)) return false;
    this.seenTokens.set(block.token, true);
    const state = this.stateOf(kind);
    state.next.blocks.push(block);
    this.schedule(kind, state);
    return true;
  }

  /** Feeds what is queued now and resolves once every block added before the call is in the rollups. */
  caughtUp(): Promise<void> {
    const waits: Promise<void>[] = [];
    for (const [kind, state] of this.kinds) {
      if (state.running !== undefined) waits.push(state.running.fed);
      if (state.next.blocks.length > 0) {
        waits.push(state.next.fed);
        state.urgent = true;
        this.schedule(kind, state);
      }
    }
    return Promise.all(waits).then(() => undefined);
  }

  /**
   * Feeds everything queued, trying failed batches again until timeoutMs has passed; then stops.
   * Answers whether every block was fed (what was not stays in the spool for the next start).
   */
  async close(timeoutMs: number): Promise<boolean> {
    const done = this.caughtUp().then(() => true);
    const fedAll = await Promise.race([done, sleep(timeoutMs, false, { ref: false })]);
    this.closing = true;
    for (const state of this.kinds.values()) clearTimeout(state.timer);
    return fedAll && this.pendingBlocks === 0;
  }

  private stateOf(kind: DeviceKind): KindState<B> {
    let state = this.kinds.get(kind);
    if (state === undefined) {
      state = { next: newBatch(), running: undefined, timer: undefined, urgent: false };
      this.kinds.set(kind, state);
    }
    return state;
  }

  private schedule(kind: DeviceKind, state: KindState<B>): void {
    if (state.running !== undefined || state.next.blocks.length === 0 || this.closing) return;
    if (state.urgent) {
      clearTimeout(state.timer);
      state.timer = undefined;
      this.start(kind, state);
      return;
    }
    state.timer ??= setTimeout(() => {
      state.timer = undefined;
      this.start(kind, state);
    }, this.intervalMs);
  }

  private start(kind: DeviceKind, state: KindState<B>): void {
    if (state.running !== undefined || state.next.blocks.length === 0) return;
    const batch = state.next;
    state.next = newBatch();
    state.running = batch;
    state.urgent = false;
    void this.feedUntilStored(kind, batch).then(() => {
      // Before anyone waiting hears of it, so that pendingBlocks no longer counts the batch.
      state.running = undefined;
      batch.resolve();
      this.schedule(kind, state);
    }, () => {
      // Closed before the batch was written: its blocks stay in the spool; nothing resolves.
      state.running = undefined;
    });
  }

  /** Resolves once the batch is written; rejects if the feed closes first. */
  private async feedUntilStored(kind: DeviceKind, batch: Batch<B>): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.feedBatch(kind, batch.blocks);
        return;
      } catch (error) {
        this.options.onError?.(kind, error, batch.blocks.length);
        if (this.closing) throw error;
        await sleep(Math.min(this.retryDelayMs * 2 ** attempt, this.maxRetryDelayMs));
        if (this.closing) throw error;
      }
    }
  }
}

function newBatch<B>(): Batch<B> {
  let resolve!: () => void;
  const fed = new Promise<void>((r) => (resolve = r));
  return { blocks: [], fed, resolve };
}
