// Group commit for one history table: rows from every call and stream wait here together and go
// to ClickHouse as one insert. When the table is idle, a block is flushed at once (a lone device
// gets a fast answer). Under load — the previous insert ended less than a linger ago — the next
// block gathers until it holds minRowsPerInsert rows or lingerMs has passed, so inserts grow large
// (ClickHouse wants few large inserts; each costs a new part and later merges). Each waiter's
// promise settles only when the insert that carried its rows is acknowledged.
import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import type { DeviceKind } from "../../process/history-rows.js";
import type { HistorySink } from "./history-sink.js";
import { withTimeout } from "./with-timeout.js";

export interface TableBatcherOptions {
  /** Most rows one insert carries. */
  readonly maxRowsPerInsert?: number;
  /** Under load, a block waits for this many rows... */
  readonly minRowsPerInsert?: number;
  /** ...or for this long after the previous insert ended, in ms. */
  readonly lingerMs?: number;
  /** Most bytes of encoded rows one insert carries. */
  readonly maxBytesPerInsert?: number;
  /** How long one insert attempt may take before it counts as failed, in ms. */
  readonly insertTimeoutMs?: number;
  /** Attempts per block, the same dedupe token each time, before its waiters are failed. */
  readonly maxAttempts?: number;
  /** Pause before the first retry, doubling after each, in ms. */
  readonly retryDelayMs?: number;
}

/**
 * A block could not be stored in time. When an attempt timed out it may still land: `landed`
 * settles once every attempt has, true if any of them stored the block (they share one dedupe
 * token, so at most one copy exists).
 */
export class InsertFailedError extends Error {
  override readonly name = "InsertFailedError";
  constructor(
    message: string,
    /** Resolves once every attempt has ended: true if one of them was answered OK. */
    readonly landed: Promise<boolean>,
    /** Whether an attempt (one that timed out) was still running when the block failed. */
    readonly attemptsRunning: boolean,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

export interface FlushRecord {
  readonly kind: DeviceKind;
  readonly rows: number;
  readonly bytes: number;
  readonly durationMs: number;
  readonly ok: boolean;
}

interface Waiter {
  readonly payload: Uint8Array;
  readonly rows: number;
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

export class TableBatcher {
  private readonly maxRows: number;
  private readonly minRows: number;
  private readonly lingerMs: number;
  private lastInsertEndedAt = -Infinity;
  private lingerTimer: NodeJS.Timeout | undefined;
  private readonly maxBytes: number;
  private readonly insertTimeoutMs: number;
  private readonly maxAttempts: number;
  private readonly retryDelayMs: number;
  private waiting: Waiter[] = [];
  private waitingRows = 0;
  private flushing: Promise<void> | undefined;

  constructor(
    readonly kind: DeviceKind,
    private readonly sink: HistorySink,
    options: TableBatcherOptions = {},
    private readonly onFlush: (record: FlushRecord) => void = () => {},
  ) {
    this.maxRows = options.maxRowsPerInsert ?? 100_000;
    this.minRows = Math.min(options.minRowsPerInsert ?? 10_000, this.maxRows);
    this.lingerMs = options.lingerMs ?? 200;
    this.maxBytes = options.maxBytesPerInsert ?? 64 * 1024 * 1024;
    this.insertTimeoutMs = options.insertTimeoutMs ?? 10_000;
    this.maxAttempts = options.maxAttempts ?? 3;
    this.retryDelayMs = options.retryDelayMs ?? 200;
  }

  /** Rows waiting for an insert, not counting the one in flight. */
  get pendingRows(): number {
    return this.waitingRows;
  }

  /** Queues encoded rows; resolves when they are durable, rejects with InsertFailedError. */
  add(payload: Uint8Array, rows: number): Promise<void> {
    if (rows === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.waiting.push({ payload, rows, resolve, reject });
      this.waitingRows += rows;
      this.startFlush();
    });
  }

  /** Flushes everything queued, without lingering; resolves when all of it has settled. */
  async drain(): Promise<void> {
    this.lastInsertEndedAt = -Infinity;
    this.startFlush();
    while (this.flushing !== undefined) {
      await this.flushing;
      this.lastInsertEndedAt = -Infinity;
    }
  }

  private startFlush(): void {
    if (this.flushing !== undefined || this.waiting.length === 0) return;
    const lingerLeft = this.lastInsertEndedAt + this.lingerMs - performance.now();
    if (this.waitingRows < this.minRows && lingerLeft > 0) {
      this.lingerTimer ??= setTimeout(() => {
        this.lingerTimer = undefined;
        this.startFlush();
      }, lingerLeft);
      return;
    }
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
    const block = this.takeBlock();
    this.flushing = this.flush(block).finally(() => {
      this.lastInsertEndedAt = performance.now();
      this.flushing = undefined;
      this.startFlush();
    });
  }

  private takeBlock(): Waiter[] {
    let rows = 0;
    let bytes = 0;
    let count = 0;
    for (const waiter of this.waiting) {
      if (count > 0 && (rows + waiter.rows > this.maxRows || bytes + waiter.payload.length > this.maxBytes)) break;
      rows += waiter.rows;
      bytes += waiter.payload.length;
      count++;
    }
    const block = this.waiting.slice(0, count);
    this.waiting = this.waiting.slice(count);
    this.waitingRows -= rows;
    return block;
  }

  private async flush(block: Waiter[]): Promise<void> {
    const payload = Buffer.concat(block.map((w) => w.payload));
    const rows = block.reduce((sum, w) => sum + w.rows, 0);
    // One token for every attempt at this block: a retry after an unanswered attempt that did
    // land is recognised by ClickHouse and written once.
    const token = randomUUID();
    const attempts: Promise<void>[] = [];
    let attemptsRunning = 0;
    let lastError: unknown;
    for (let attempt = 1; attempt <= this.maxAttempts; attempt++) {
      const started = performance.now();
      try {
        const insert = this.sink.insert(this.kind, payload, token);
        attempts.push(insert);
        attemptsRunning++;
        const ended = () => attemptsRunning--;
        insert.then(ended, ended);
        await withTimeout(insert, this.insertTimeoutMs, () => new InsertTimeoutError(`no answer within ${this.insertTimeoutMs} ms`));
        this.onFlush({ kind: this.kind, rows, bytes: payload.length, durationMs: performance.now() - started, ok: true });
        for (const waiter of block) waiter.resolve();
        return;
      } catch (error) {
        this.onFlush({ kind: this.kind, rows, bytes: payload.length, durationMs: performance.now() - started, ok: false });
        lastError = error;
        if (attempt < this.maxAttempts) await sleep(this.retryDelayMs * 2 ** (attempt - 1));
      }
    }
    const landed = Promise.allSettled(attempts).then((results) => results.some((r) => r.status === "fulfilled"));
    const failure = new InsertFailedError(
      `insert of ${rows} rows into ${this.kind} history failed after ${this.maxAttempts} attempts`,
      landed,
      attemptsRunning > 0,
      { cause: lastError },
    );
    for (const waiter of block) waiter.reject(failure);
  }
}

class InsertTimeoutError extends Error {
  override readonly name = "InsertTimeoutError";
}
