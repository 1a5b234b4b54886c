// The embedded live store: the LiveStore contract in this process's memory, for the one-command
// quick start and single-process sites. Expired entries are dropped lazily and by a periodic sweep;
// beyond its capacity the ledger forgets its oldest stored ids and says so (see forgetOldest).
import type {
  ClaimResult,
  ClaimStatus,
  DeviceStanding,
  EventKey,
  FleetSurvey,
  LiveState,
  LiveStateListener,
  LiveStateUpdate,
  LiveStore,
  SurveyOptions,
} from "./live-store.js";
import { eventIdentity } from "../../process/history-rows.js";
import { BATCH_COMMIT_MIN_EVENTS, compareDeviceIds, healthLevelOf, newestPerDevice } from "./live-store.js";

/**
 * The events one batch claimed: every entry of the batch holds this one object, so that committing
 * the batch is one write (see commitClaims), not a write per event.
 */
interface Claim {
  /** The claiming batch's token. */
  readonly claimedBy: string;
  /**
   * When the lease ends: after that the claim is stale, and the next claimer takes it over.
   * Extended by renewClaims.
   */
  leaseEndsAtMs: number;
  /** When the entry is forgotten: never before the lease ends. */
  expiresAtMs: number;
  /** When the batch committed its events, which are then stored; undefined while in flight. */
  committedAtMs: number | undefined;
}

/**
 * An event stored on its own (found in history, or committed event by event) is only its expiry,
 * in whole seconds since the epoch: a small integer V8 keeps in the map's slot, where an object per
 * event (millions of them over the dedupe window) cost an allocation each and much of the
 * collector's time. Events stored with their batch keep pointing at the batch's committed Claim.
 */
type Committed = number;

type EventEntry = Claim | Committed;

const expiresAtMs = (entry: EventEntry) => (typeof entry === "number" ? entry * 1000 : entry.expiresAtMs);
const isStored = (entry: EventEntry) => typeof entry === "number" || entry.committedAtMs !== undefined;

/**
 * The most entries the ledger may reach, all shards together (so any one of them too). A
 * JavaScript Map holds at most 2^24 entries counting the slots of deleted ones; kept to half of
 * that, deleting makes room instead of growing the table (V8 rehashes in place once half its
 * slots are deleted), so it never throws.
 */
export const MAX_LEDGER_ENTRIES = 2 ** 23;

/** The most stored ids the ledger may be asked to hold, leaving room for claims in flight. */
export const MAX_LEDGER_EVENTS = 8_000_000;

/**
 * Forgetting frees this share of a shard at once, so that it — and the history lookup of the
 * ledger's new start it causes — runs now and then, not per batch.
 */
const FORGET_SHARE = 0.1;

export interface MemoryLiveStoreOptions {
  /**
   * The most event ids held, at most MAX_LEDGER_EVENTS (the default); beyond it the oldest
   * stored ones are forgotten.
   */
  readonly maxEvents?: number;
  /** Maps the ledger is split into (a power of two); each forgets and grows on its own. */
  readonly shards?: number;
  /** How often expired dedupe entries are swept, in ms. */
  readonly sweepIntervalMs?: number;
  /** The clock, for tests of expiry. */
  readonly now?: () => number;
}

export class MemoryLiveStore implements LiveStore {
  /**
   * The ledger, split by a hash of the event's identity: a map stops the event loop while it
   * grows or rehashes, for a time that follows its size (~0.7 s at 4M ids in one map), so each
   * shard holding 1/16 of the ids keeps those pauses short.
   */
  private readonly shards: LedgerShard[];
  private readonly shardMask: number;
  /** Claims not yet committed, by token; those whose lease ended are dropped by the sweep. */
  private readonly openClaims = new Map<string, Claim>();
  private readonly live = new Map<string, LiveState>();
  /** The keys of `live` in UTF-8 byte order, for paging through the fleet, but those in newDeviceIds. */
  private sortedDeviceIds: string[] = [];
  /**
   * Devices first seen since the fleet was last paged, merged in when it next is: inserting each
   * in place moved the whole array, so a restart restoring a large fleet took quadratic time.
   */
  private newDeviceIds: string[] = [];
  private readonly listeners = new Set<LiveStateListener>();
  private readonly now: () => number;
  private readonly sweepTimer: NodeJS.Timeout;
  /**
   * Since when every stored id is held: this process remembers nothing from before it started,
   * and moves this on when a shard forgets ids to stay within its share of maxEvents.
   */
  private ledgerSinceMs: number;
  /** The shortest dedupe window ids were committed with; with an expiry it bounds when one was committed. */
  private shortestWindowMs = Infinity;

  constructor(options: MemoryLiveStoreOptions = {}) {
    this.now = options.now ?? Date.now;
    const maxEvents = options.maxEvents ?? MAX_LEDGER_EVENTS;
    if (!(maxEvents >= 1 && maxEvents <= MAX_LEDGER_EVENTS)) {
      throw new RangeError(`maxEvents must be from 1 to ${MAX_LEDGER_EVENTS}, not ${maxEvents}`);
    }
    const shards = options.shards ?? 16;
    if (!(Number.isInteger(Math.log2(shards)) && shards <= 1024)) throw new RangeError(`shards must be a power of two up to 1024, not ${shards}`);
    this.shards = Array.from({ length: shards }, () => new LedgerShard(Math.ceil(maxEvents / shards)));
    this.shardMask = shards - 1;
    this.ledgerSinceMs = this.now();
    this.sweepTimer = setInterval(() => this.sweep(), options.sweepIntervalMs ?? 60_000);
    this.sweepTimer.unref();
  }

  async claimEvents(keys: readonly EventKey[], token: string, leaseMs: number, rememberMs: number): Promise<ClaimResult> {
    const now = this.now();
    const claim: Claim = { claimedBy: token, leaseEndsAtMs: now + leaseMs, expiresAtMs: now + Math.max(leaseMs, rememberMs), committedAtMs: undefined };
    this.openClaims.set(token, claim);
    const statuses = keys.map((key): ClaimStatus => {
      const id = eventKey(key);
      const shard = this.shardOf(id);
      const entry = shard.events.get(id);
      const live = entry !== undefined && expiresAtMs(entry) > now;
      if (live && isStored(entry)) return "duplicate";
      if (live && (entry as Claim).leaseEndsAtMs > now) return "in_flight";
      if (entry === undefined && shard.full) {
        this.ledgerSinceMs = Math.max(this.ledgerSinceMs, shard.forgetOldest(now, this.shortestWindowMs));
      }
      shard.events.set(id, claim);
      return live ? "reclaimed" : "claimed";
    });
    return { statuses, ledgerSinceMs: this.ledgerSinceMs };
  }

  async commitEvents(keys: readonly EventKey[], token: string, windowMs: number): Promise<void> {
    // Rounded up, so an entry is never forgotten before its window ends.
    const committed: Committed = Math.ceil((this.now() + windowMs) / 1000);
    this.shortestWindowMs = Math.min(this.shortestWindowMs, windowMs);
    for (const key of keys) {
      const id = eventKey(key);
      const { events } = this.shardOf(id);
      const entry = events.get(id);
      if (typeof entry === "object" && entry.claimedBy !== token) continue;
      events.set(id, committed);
    }
  }

  async commitClaims(token: string, keys: readonly EventKey[], windowMs: number): Promise<void> {
    const claim = this.openClaims.get(token);
    this.openClaims.delete(token);
    if (claim !== undefined && keys.length >= BATCH_COMMIT_MIN_EVENTS) {
      claim.committedAtMs = this.now();
      return;
    }
    // A small batch, or one swept after its lease ended: the entries that still hold its claim
    // become bare expiries one by one, as events stored on their own are.
    await this.commitEvents(keys, token, windowMs);
  }

  async releaseEvents(keys: readonly EventKey[], token: string): Promise<void> {
    for (const key of keys) {
      const id = eventKey(key);
      const { events } = this.shardOf(id);
      const entry = events.get(id);
      if (typeof entry === "object" && entry.claimedBy === token && entry.committedAtMs === undefined) events.delete(id);
    }
  }

  async renewClaims(token: string, leaseMs: number): Promise<boolean> {
    const claim = this.openClaims.get(token);
    const now = this.now();
    if (claim === undefined || claim.leaseEndsAtMs <= now) return false;
    claim.leaseEndsAtMs = now + leaseMs;
    claim.expiresAtMs = Math.max(claim.expiresAtMs, claim.leaseEndsAtMs);
    return true;
  }

  async applyLiveState(updates: readonly LiveStateUpdate[]): Promise<void> {
    for (const update of newestPerDevice(updates)) {
      const current = this.live.get(update.deviceId);
      const lastSeenMs = Math.max(update.receivedAtMs, current?.lastSeenMs ?? 0);
      const revision = (current?.revision ?? 0) + 1;
      let next: LiveState;
      if (current === undefined || update.observedAtMs >= current.observedAtMs) {
        // Literals of two fixed shapes, not a spread: this runs once per reading.
        const { deviceId, kind, observedAtMs, values, trend } = update;
        next =
          trend === undefined
            ? { deviceId, kind, observedAtMs, lastSeenMs, values, revision }
            : { deviceId, kind, observedAtMs, lastSeenMs, values, trend, revision };
      } else {
        if (lastSeenMs === current.lastSeenMs) continue;
        next = { ...current, lastSeenMs, revision };
      }
      if (current === undefined) this.newDeviceIds.push(update.deviceId);
      this.live.set(update.deviceId, next);
      for (const listener of this.listeners) listener(next);
    }
  }

  async listDevices(afterId: string | undefined, limit: number): Promise<string[]> {
    const ids = this.deviceIds();
    const from = afterId === undefined ? 0 : indexAfter(ids, afterId);
    return ids.slice(from, from + limit);
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

  /** Every device, sorted. */
  private deviceIds(): string[] {
    if (this.newDeviceIds.length > 0) {
      this.sortedDeviceIds = mergeSorted(this.sortedDeviceIds, this.newDeviceIds.sort(compareDeviceIds));
      this.newDeviceIds = [];
    }
    return this.sortedDeviceIds;
  }

  async getLiveState(deviceIds: readonly string[]): Promise<(LiveState | undefined)[]> {
    return deviceIds.map((id) => this.live.get(id));
  }

  async surveyDevices(deviceIds: readonly string[], onlineSinceMs: number, options: SurveyOptions = {}): Promise<FleetSurvey> {
    const listAttention = options.attention ?? true;
    let devices = 0;
    let online = 0;
    const batteryLevels = new Map<string, number>();
    const attention: DeviceStanding[] = [];
    for (const id of deviceIds) {
      const state = this.live.get(id);
      if (state === undefined) continue;
      devices++;
      const level = state.kind === "battery" ? healthLevelOf(state.values) : undefined;
      if (level !== undefined) batteryLevels.set(level, (batteryLevels.get(level) ?? 0) + 1);
      const silent = state.lastSeenMs < onlineSinceMs;
      if (!silent) online++;
      if (listAttention && (silent || level === "CRITICAL")) {
        attention.push({ deviceId: id, kind: state.kind, observedAtMs: state.observedAtMs, lastSeenMs: state.lastSeenMs, level });
      }
    }
    return { devices, online, batteryLevels, attention };
  }

  async getTrends(deviceIds: readonly string[]): Promise<(Readonly<Record<string, number>> | undefined)[]> {
    return deviceIds.map((id) => this.live.get(id)?.trend);
  }

  async ping(): Promise<void> {}

  async close(): Promise<void> {
    clearInterval(this.sweepTimer);
    this.listeners.clear();
  }

  private shardOf(id: string): LedgerShard {
    // FNV-1a over the identity's tail, where event ids differ most.
    let hash = 0x811c9dc5;
    for (let i = Math.max(0, id.length - 16); i < id.length; i++) hash = Math.imul(hash ^ id.charCodeAt(i), 0x01000193);
    return this.shards[(hash ^ (hash >>> 16)) & this.shardMask]!;
  }

  private sweep(): void {
    const now = this.now();
    for (const { events } of this.shards) for (const [id, entry] of events) if (expiresAtMs(entry) <= now) events.delete(id);
    for (const [token, claim] of this.openClaims) if (claim.leaseEndsAtMs <= now) this.openClaims.delete(token);
  }
}

/** The index of the first of the sorted `ids` ordered after `id`. */
function indexAfter(ids: readonly string[], id: string): number {
  let low = 0;
  let high = ids.length;
  while (low < high) {
    const mid = (low + high) >>> 1;
    if (compareDeviceIds(ids[mid]!, id) <= 0) low = mid + 1;
    else high = mid;
  }
  return low;
}

/** Two sorted lists of distinct ids as one sorted list. */
function mergeSorted(a: readonly string[], b: readonly string[]): string[] {
  const merged = new Array<string>(a.length + b.length);
  let i = 0;
  let j = 0;
  let k = 0;
  while (i < a.length && j < b.length) merged[k++] = compareDeviceIds(a[i]!, b[j]!) < 0 ? a[i++]! : b[j++]!;
  while (i < a.length) merged[k++] = a[i++]!;
  while (j < b.length) merged[k++] = b[j++]!;
  return merged;
}

function eventKey(key: EventKey): string {
  return key.identity ?? eventIdentity(key.deviceId, key.eventId);
}

/** One shard of the ledger: its ids in insertion order, which is claim order (oldest first). */
class LedgerShard {
  readonly events = new Map<string, EventEntry>();
  /** Normally maxEvents; above it while claims in flight fill the shard, so each new id does not rescan it. */
  private forgetAtSize: number;

  constructor(private readonly maxEvents: number) {
    this.forgetAtSize = maxEvents;
  }

  get full(): boolean {
    return this.events.size >= this.forgetAtSize;
  }

  /**
   * Makes room by forgetting the oldest stored ids (and expired claims), from the front of the
   * map, down to 90 % of the capacity. Claims still in flight are kept: they are few, and
   * forgetting one would let a resend be stored twice. Answers a time before which every
   * forgotten id was committed: the ledger is complete only for ids committed after it, so the
   * store's ledgerSinceMs moves there, and the engine looks up in history any reading that could
   * have been stored before it (as after a restart).
   *
   * That time is never later than now (+1 ms): the engine asks history once per value of
   * ledgerSinceMs, for the newest reading received before it, and the answer must already cover
   * every row whose id the ledger may drop under that same value. A time in the future (an expiry
   * rounded up to the second) would let an id committed after the question, and forgotten later
   * under the same value, escape it (a test caught this as a resend stored twice).
   */
  forgetOldest(now: number, shortestWindowMs: number): number {
    const target = Math.floor(this.maxEvents * (1 - FORGET_SHARE));
    let forgottenCommittedBeforeMs = -Infinity;
    for (const [id, entry] of this.events) {
      if (this.events.size <= target) break;
      if (typeof entry === "number") {
        // Committed with expiry ceil((t + window) / 1000) s, so at t ≤ expiry − window.
        forgottenCommittedBeforeMs = Math.max(forgottenCommittedBeforeMs, entry * 1000 - shortestWindowMs + 1);
        this.events.delete(id);
      } else if (entry.committedAtMs !== undefined) {
        forgottenCommittedBeforeMs = Math.max(forgottenCommittedBeforeMs, entry.committedAtMs + 1);
        this.events.delete(id);
      } else if (entry.expiresAtMs <= now) {
        this.events.delete(id);
      }
    }
    // Claims in flight are never forgotten, so the shard can stay above target until they are
    // stored; look again only after as many new ids as a pass frees.
    this.forgetAtSize = Math.max(this.maxEvents, this.events.size + (this.maxEvents - target));
    return Math.min(forgottenCommittedBeforeMs, now + 1);
  }
}
