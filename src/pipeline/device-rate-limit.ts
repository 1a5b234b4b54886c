// Per-device rate limit: a token bucket per device, refilled at `readingsPerSecond` up to `burst`.
// One device flooding the service is refused (RESOURCE_EXHAUSTED with the wait before its bucket
// holds enough) while every other device goes on. Buckets live in this process: with several
// service processes behind a balancer, each enforces the limit on what it receives.
export interface RateLimitOptions {
  /** Sustained readings per second per device; 0 disables the limit. */
  readonly readingsPerSecond: number;
  /** The bucket's size: how many readings a device may send at once (a backlog after an outage). */
  readonly burst: number;
}

interface Bucket {
  tokens: number;
  updatedMs: number;
  /** Readings counted on the bucket during a take() (0 between them). */
  pending: number;
}

/** A reading as the limiter sees it: whose it is. */
export interface DeviceReading {
  readonly deviceId: string;
}

/** Buckets full for this long are forgotten, so memory follows the devices actually sending. */
const FORGET_FULL_AFTER_MS = 60_000;

export class DeviceRateLimit {
  private readonly buckets = new Map<string, Bucket>();
  private lastSweepMs = 0;

  constructor(
    private readonly options: RateLimitOptions,
    private readonly now: () => number = Date.now,
  ) {}

  get enabled(): boolean {
    return this.options.readingsPerSecond > 0;
  }

  /**
   * Takes one reading from its device's bucket for each of `readings`, and `extra.count` from
   * `extra.deviceId`'s, all or none. Answers 0 when taken, else how long (ms) until every device
   * named could send its readings.
   */
  take(readings: readonly DeviceReading[], extra?: { readonly deviceId: string; readonly count: number }): number {
    if (!this.enabled) return 0;
    const nowMs = this.now();
    this.sweep(nowMs);
    // Each device's readings are counted on its bucket: a batch names a device many times, and
    // counting them in a Map per batch was ~5 % of what the main thread allocated under the
    // throughput bench.
    const buckets = new Array<Bucket>(readings.length + (extra === undefined ? 0 : 1));
    for (let i = 0; i < readings.length; i++) (buckets[i] = this.refilled(readings[i]!.deviceId, nowMs)).pending++;
    if (extra !== undefined) (buckets[readings.length] = this.refilled(extra.deviceId, nowMs)).pending += extra.count;
    let waitMs = 0;
    for (const bucket of buckets) {
      // A request larger than the bucket can never pass whole; ask for the bucket to be full.
      const needed = Math.min(bucket.pending, this.options.burst);
      if (bucket.tokens < needed) waitMs = Math.max(waitMs, ((needed - bucket.tokens) / this.options.readingsPerSecond) * 1000);
    }
    for (const bucket of buckets) {
      if (waitMs === 0) bucket.tokens -= bucket.pending;
      bucket.pending = 0;
    }
    return Math.ceil(waitMs);
  }

  /** Gives back one reading per reading take() took, when the service (not the device) failed them. */
  refund(readings: readonly DeviceReading[]): void {
    for (const { deviceId } of readings) {
      const bucket = this.buckets.get(deviceId);
      if (bucket !== undefined) bucket.tokens = Math.min(this.options.burst, bucket.tokens + 1);
    }
  }

  /** Devices with a bucket: what the limiter holds in memory. */
  get trackedDevices(): number {
    return this.buckets.size;
  }

  private refilled(device: string, nowMs: number): Bucket {
    let bucket = this.buckets.get(device);
    if (bucket === undefined) {
      bucket = { tokens: this.options.burst, updatedMs: nowMs, pending: 0 };
      this.buckets.set(device, bucket);
      return bucket;
    }
    const elapsedMs = Math.max(0, nowMs - bucket.updatedMs);
    bucket.tokens = Math.min(this.options.burst, bucket.tokens + (elapsedMs / 1000) * this.options.readingsPerSecond);
    bucket.updatedMs = nowMs;
    return bucket;
  }

  private sweep(nowMs: number): void {
    if (nowMs - this.lastSweepMs < FORGET_FULL_AFTER_MS) return;
    this.lastSweepMs = nowMs;
    const refillMs = (this.options.burst / this.options.readingsPerSecond) * 1000;
    for (const [device, bucket] of this.buckets) {
      if (nowMs - bucket.updatedMs > Math.max(refillMs, FORGET_FULL_AFTER_MS)) this.buckets.delete(device);
    }
  }
}
