// The embedded live store: the LiveStore contract in this process's memory, for the one-command
// quick start and single-process sites. Expired entries are dropped lazily and by a periodic sweep;
// beyond its capacity the ledger forgets its oldest stored ids and says so (see evict).
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

/**
 * The most entries the ledger's map may reach. A JavaScript Map holds at most 2^24 entries counting
 * the slots of deleted ones; kept to half of that, deleting makes room instead of growing the
 * table (V8 rehashes in place once half its slots are deleted), so it never throws.
 */
export const MAX_LEDGER_ENTRIES = 2 ** 23;

/** The most stored ids the ledger may be asked to hold, leaving room for claims in flight. */
export const MAX_LEDGER_EVENTS = 8_000_000;

/**
 * Eviction frees this share of the capacity at once, so that it — and the history lookup of the
 * new horizon it causes — runs now and then, not per batch.
 */
const EVICT_SHARE = 0.1;

export interface MemoryLiveStoreOptions {
  /**
   * The most event ids held, at most MAX_LEDGER_EVENTS (the default); beyond it the oldest
   * stored ones are forgotten.
   */
  readonly maxEvents?: number;
  /** How often expired dedupe entries are swept, in ms. */
  readonly sweepIntervalMs?: number;
  /** The clock, for tests of expiry. */
  readonly now?: () => number;
}

export class MemoryLiveStore implements LiveStore {
  /** In insertion order, which is claim order: the front holds the oldest ids. */
  private readonly events = new Map<string, EventEntry>();
  private readonly live = new Map<string, LiveState>();
  /** The keys of `live`, kept sorted (UTF-8 byte order) for paging through the fleet. */
  private readonly deviceIds: string[] = [];
  private readonly listeners = new Set<LiveStateListener>();
  private readonly now: () => number;
  private readonly sweepTimer: NodeJS.Timeout;
  private readonly maxEvents: number;
  /** Normally maxEvents; above it while claims in flight fill the ledger, so each new id does not rescan it. */
  private evictAtSize: number;
  /**
   * Since when every stored id is held: this process remembers nothing from before it started,
   * and moves this on when it forgets ids to stay within maxEvents.
   */
  private ledgerSinceMs: number;
  /** The shortest dedupe window ids were committed with; with an expiry it bounds when one was committed. */
  private shortestWindowMs = Infinity;

  constructor(options: MemoryLiveStoreOptions = {}) {
    this.now = options.now ?? Date.now;
    this.maxEvents = options.maxEvents ?? MAX_LEDGER_EVENTS;
    if (!(this.maxEvents >= 1 && this.maxEvents <= MAX_LEDGER_EVENTS)) {
      throw new RangeError(`maxEvents must be from 1 to ${MAX_LEDGER_EVENTS}, not ${this.maxEvents}`);
    }
    this.evictAtSize = this.maxEvents;
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
      if (entry === undefined && this.events.size >= this.evictAtSize) this.evict(now);
      this.events.set(id, claim);
      return live ? "reclaimed" : "claimed";
    });
    return { statuses, ledgerSinceMs: this.ledgerSinceMs };
  }

  async commitEvents(keys: readonly EventKey[], windowMs: number): Promise<void> {
    // Rounded up, so an entry is never forgotten before its window ends.
    const committed: Committed = Math.ceil((this.now() + windowMs) / 1000);
    this.shortestWindowMs = Math.min(this.shortestWindowMs, windowMs);
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

  /**
   * Makes room by forgetting the oldest stored ids (and expired claims), from the front of the
   * map, down to 90 % of the capacity. Claims still in flight are kept: they are few, and forgetting one would
   * let a resend be stored twice. The ledger is then complete only for ids committed after the
   * newest one forgotten, so ledgerSinceMs moves there; the engine looks up in history any
   * reading that could have been stored before it (as after a restart).
   */
  private evict(now: number): void {
    const target = Math.floor(this.maxEvents * (1 - EVICT_SHARE));
    let forgottenCommittedBeforeMs = this.ledgerSinceMs;
    for (const [id, entry] of this.events) {
      if (this.events.size <= target) break;
      if (typeof entry === "number") {
        // Committed with expiry ceil((t + window) / 1000) s, so at t ≤ expiry − window.
        forgottenCommittedBeforeMs = Math.max(forgottenCommittedBeforeMs, entry * 1000 - this.shortestWindowMs + 1);
        this.events.delete(id);
      } else if (entry.expiresAtMs <= now) {
        this.events.delete(id);
      }
    }
    this.ledgerSinceMs = forgottenCommittedBeforeMs;
    // Claims in flight are never forgotten, so the map can stay above target until they are
    // stored; rescan only after as many new ids again.
    this.evictAtSize = Math.max(this.maxEvents, this.events.size + (this.maxEvents - target));
  }

  private sweep(): void {
    const now = this.now();
    for (const [id, entry] of this.events) if (expiresAtMs(entry) <= now) this.events.delete(id);
  }
}

function eventKey(key: EventKey): string {
  return key.identity ?? eventIdentity(key.deviceId, key.eventId);
}
