// The embedded live store: the LiveStore contract in this process's memory, for the one-command
// quick start and single-process sites. Expired entries are dropped lazily and by a periodic sweep.
import type { ClaimResult, ClaimStatus, EventKey, LiveState, LiveStateListener, LiveStateUpdate, LiveStore } from "./live-store.js";
import { eventIdentity } from "../../process/history-rows.js";
import { compareDeviceIds, newestPerDevice } from "./live-store.js";

/** An event some batch is storing. */
interface Claim {
  /** The claiming batch's token. */
  readonly claimedBy: string;
  /** When the lease ends: after that the claim is stale, and the next claimer takes it over. */
  readonly leaseEndsAtMs: number;
  /** When the entry is forgotten. */
  readonly expiresAtMs: number;
}

/**
 * An event once stored is only its expiry, in whole seconds since the epoch: a small integer V8
 * keeps in the map's slot, where an object per event (millions of them over the dedupe window)
 * cost an allocation each and much of the collector's time.
 */
type Committed = number;

type EventEntry = Claim | Committed;

const expiresAtMs = (entry: EventEntry) => (typeof entry === "number" ? entry * 1000 : entry.expiresAtMs);

export interface MemoryLiveStoreOptions {
  /** How often expired dedupe entries are swept, in ms. */
  readonly sweepIntervalMs?: number;
  /** The clock, for tests of expiry. */
  readonly now?: () => number;
}

export class MemoryLiveStore implements LiveStore {
  private readonly events = new Map<string, EventEntry>();
  private readonly live = new Map<string, LiveState>();
  /** The keys of `live`, kept sorted (UTF-8 byte order) for paging through the fleet. */
  private readonly deviceIds: string[] = [];
  private readonly listeners = new Set<LiveStateListener>();
  private readonly now: () => number;
  private readonly sweepTimer: NodeJS.Timeout;
  /** This process remembers nothing from before it started. */
  private readonly ledgerSinceMs: number;

  constructor(options: MemoryLiveStoreOptions = {}) {
    this.now = options.now ?? Date.now;
    this.ledgerSinceMs = this.now();
    this.sweepTimer = setInterval(() => this.sweep(), options.sweepIntervalMs ?? 60_000);
    this.sweepTimer.unref();
  }

  async claimEvents(keys: readonly EventKey[], token: string, leaseMs: number, rememberMs: number): Promise<ClaimResult> {
    const now = this.now();
    const claim: Claim = { claimedBy: token, leaseEndsAtMs: now + leaseMs, expiresAtMs: now + Math.max(leaseMs, rememberMs) };
    const statuses = keys.map((key): ClaimStatus => {
      const id = eventKey(key);
      const entry = this.events.get(id);
      const live = entry !== undefined && expiresAtMs(entry) > now;
      if (live && typeof entry === "number") return "duplicate";
      if (live && (entry as Claim).leaseEndsAtMs > now) return "in_flight";
      this.events.set(id, claim);
      return live ? "reclaimed" : "claimed";
    });
    return { statuses, ledgerSinceMs: this.ledgerSinceMs };
  }

  async commitEvents(keys: readonly EventKey[], windowMs: number): Promise<void> {
    // Rounded up, so an entry is never forgotten before its window ends.
    const committed: Committed = Math.ceil((this.now() + windowMs) / 1000);
    for (const key of keys) this.events.set(eventKey(key), committed);
  }

  async releaseEvents(keys: readonly EventKey[], token: string): Promise<void> {
    for (const key of keys) {
      const id = eventKey(key);
      const entry = this.events.get(id);
      if (typeof entry === "object" && entry.claimedBy === token) this.events.delete(id);
    }
  }

  async applyLiveState(updates: readonly LiveStateUpdate[]): Promise<void> {
    for (const update of newestPerDevice(updates)) {
      const current = this.live.get(update.deviceId);
      const lastSeenMs = Math.max(update.receivedAtMs, current?.lastSeenMs ?? 0);
      let next: LiveState;
      if (current === undefined || update.observedAtMs >= current.observedAtMs) {
        next = {
          deviceId: update.deviceId,
          kind: update.kind,
          observedAtMs: update.observedAtMs,
          lastSeenMs,
          values: update.values,
          ...(update.trend !== undefined ? { trend: update.trend } : {}),
        };
      } else {
        if (lastSeenMs === current.lastSeenMs) continue;
        next = { ...current, lastSeenMs };
      }
      if (current === undefined) this.insertDeviceId(update.deviceId);
      this.live.set(update.deviceId, next);
      for (const listener of this.listeners) listener(next);
    }
  }

  async listDevices(afterId: string | undefined, limit: number): Promise<string[]> {
    const from = afterId === undefined ? 0 : this.indexAfter(afterId);
    return this.deviceIds.slice(from, from + limit);
  }

  async subscribe(listener: LiveStateListener): Promise<() => void> {
    // A wrapper per subscription, so subscribing one function twice needs two unsubscribes.
    const entry: LiveStateListener = (state) => listener(state);
    this.listeners.add(entry);
    return () => void this.listeners.delete(entry);
  }

  get subscriberCount(): number {
    return this.listeners.size;
  }

  /** The index of the first id ordered after `id`. */
  private indexAfter(id: string): number {
    let low = 0;
    let high = this.deviceIds.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if (compareDeviceIds(this.deviceIds[mid]!, id) <= 0) low = mid + 1;
      else high = mid;
    }
    return low;
  }

  private insertDeviceId(id: string): void {
    this.deviceIds.splice(this.indexAfter(id), 0, id);
  }

  async getLiveState(deviceIds: readonly string[]): Promise<(LiveState | undefined)[]> {
    return deviceIds.map((id) => this.live.get(id));
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    clearInterval(this.sweepTimer);
    this.listeners.clear();
  }

  private sweep(): void {
    const now = this.now();
    for (const [id, entry] of this.events) if (expiresAtMs(entry) <= now) this.events.delete(id);
  }
}

function eventKey(key: EventKey): string {
  return key.identity ?? eventIdentity(key.deviceId, key.eventId);
}
