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
import { hashEvent, LedgerShard, STORED_ALONE } from "./ledger-shard.js";
import { BATCH_COMMIT_MIN_EVENTS, compareDeviceIds, healthLevelOf, newestPerDevice } from "./live-store.js";

/**
 * The events one batch claimed: every entry of the batch holds this claim's number, so that
 * committing the batch is one write (see commitClaims), not a write per event. An event stored on
 * its own (found in history, or committed event by event) holds only its expiry.
 */
interface Claim {
  readonly number: number;
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
  /** Entries holding it: it is dropped once none does and its batch is done with it (see isOpen). */
  entries: number;
}

/**
 * The most entries the ledger may reach, all shards together (so any one of them too): at ~100
 * bytes an entry (ids of ~30 characters) and room to grow into, about 1–2 GB. (Set when the
 * ledger was a JavaScript Map, which holds at most 2^24 entries counting deleted ones.)
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
   * The ledger (see ledger-shard.ts), split by a hash of the event's identity: a shard stops the
   * event loop while it grows or compacts, for a time that follows its size (as a Map did, ~0.7 s
   * at 4M ids in one), so each shard holding 1/16 of the ids keeps those pauses short.
   */
  private readonly shards: LedgerShard[];
  /** log2 of the shards' count: a hash's top bits pick its shard. */
  private readonly shardBits: number;
  /** Each shard's share of maxEvents. */
  private readonly shardMaxEvents: number;
  /** Per shard, the size at which it next forgets (see forgetOldest). */
  private readonly forgetAtSize: number[];
  /** Claims held by an entry or still open, by number. */
  private readonly claims = new Map<number, Claim>();
  private nextClaimNumber = 1;
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
    this.shards = Array.from({ length: shards }, () => new LedgerShard());
    this.shardBits = Math.log2(shards);
    this.shardMaxEvents = Math.ceil(maxEvents / shards);
    this.forgetAtSize = this.shards.map(() => this.shardMaxEvents);
    this.ledgerSinceMs = this.now();
    this.sweepTimer = setInterval(() => this.sweep(), options.sweepIntervalMs ?? 60_000);
    this.sweepTimer.unref();
  }

  async claimEvents(keys: readonly EventKey[], token: string, leaseMs: number, rememberMs: number): Promise<ClaimResult> {
    const now = this.now();
    const previous = this.openClaims.get(token);
    if (previous !== undefined) this.closeClaim(previous);
    const claim: Claim = {
      number: this.nextClaimNumber++,
      claimedBy: token,
      leaseEndsAtMs: now + leaseMs,
      expiresAtMs: now + Math.max(leaseMs, rememberMs),
      committedAtMs: undefined,
      entries: 0,
    };
    this.claims.set(claim.number, claim);
    this.openClaims.set(token, claim);
    const statuses = keys.map(({ deviceId, eventId }): ClaimStatus => {
      const hash = hashEvent(deviceId, eventId);
      const index = this.shardIndexOf(hash);
      const shard = this.shards[index]!;
      const entry = shard.find(deviceId, eventId, hash);
      if (entry < 0) {
        if (shard.size >= this.forgetAtSize[index]!) this.ledgerSinceMs = Math.max(this.ledgerSinceMs, this.forgetOldest(index, now));
        shard.append(deviceId, eventId, hash, claim.number);
        claim.entries++;
        return "claimed";
      }
      const holder = shard.holderOf(entry);
      const holding = holder === STORED_ALONE ? undefined : this.claims.get(holder)!;
      const live = (holding === undefined ? shard.expirySecondsOf(entry) * 1000 : holding.expiresAtMs) > now;
      if (live && (holding === undefined || holding.committedAtMs !== undefined)) return "duplicate";
      if (live && holding!.leaseEndsAtMs > now) return "in_flight";
      this.hold(shard, entry, claim);
      return live ? "reclaimed" : "claimed";
    });
    return { statuses, ledgerSinceMs: this.ledgerSinceMs };
  }

  async commitEvents(keys: readonly EventKey[], token: string, windowMs: number): Promise<void> {
    // Rounded up, so an entry is never forgotten before its window ends.
    const committedSeconds = Math.ceil((this.now() + windowMs) / 1000);
    this.shortestWindowMs = Math.min(this.shortestWindowMs, windowMs);
    for (const { deviceId, eventId } of keys) {
      const hash = hashEvent(deviceId, eventId);
      const shard = this.shards[this.shardIndexOf(hash)]!;
      const entry = shard.find(deviceId, eventId, hash);
      if (entry < 0) {
        shard.append(deviceId, eventId, hash, STORED_ALONE, committedSeconds);
        continue;
      }
      const holder = shard.holderOf(entry);
      if (holder !== STORED_ALONE && this.claims.get(holder)!.claimedBy !== token) continue;
      this.storeAlone(shard, entry, committedSeconds);
    }
  }

  async commitClaims(token: string, keys: readonly EventKey[], windowMs: number): Promise<void> {
    const claim = this.openClaims.get(token);
    if (claim !== undefined) {
      this.closeClaim(claim);
      if (keys.length >= BATCH_COMMIT_MIN_EVENTS) {
        claim.committedAtMs = this.now();
        return;
      }
    }
    // A small batch, or one swept after its lease ended: the entries that still hold its claim
    // become stored on their own one by one, as events stored on their own are.
    await this.commitEvents(keys, token, windowMs);
  }

  async releaseEvents(keys: readonly EventKey[], token: string): Promise<void> {
    for (const { deviceId, eventId } of keys) {
      const hash = hashEvent(deviceId, eventId);
      const shard = this.shards[this.shardIndexOf(hash)]!;
      const entry = shard.find(deviceId, eventId, hash);
      if (entry < 0) continue;
      const holder = shard.holderOf(entry);
      if (holder === STORED_ALONE) continue;
      const claim = this.claims.get(holder)!;
      if (claim.claimedBy === token && claim.committedAtMs === undefined) this.removeEntry(shard, entry);
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
    // Only the newest of a device's updates in one call is applied, as in Redis: one change and one
    // notice per device. An indexed loop: this runs once per reading.
    const newest = newestPerDevice(updates);
    for (let i = 0; i < newest.length; i++) {
      const update = newest[i]!;
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
      if (this.listeners.size > 0) for (const listener of this.listeners) listener(next);
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

  private shardIndexOf(hash: number): number {
    // The top bits of a multiplicative mix: the table within the shard probes from the low bits.
    return this.shardBits === 0 ? 0 : Math.imul(hash, 0x9e3779b1) >>> (32 - this.shardBits);
  }

  /** Gives the entry to `claim`, letting go of what held it. */
  private hold(shard: LedgerShard, entry: number, claim: Claim): void {
    const previous = shard.holderOf(entry);
    shard.setHolder(entry, claim.number);
    claim.entries++;
    if (previous !== STORED_ALONE) this.letGo(previous);
  }

  private storeAlone(shard: LedgerShard, entry: number, expirySeconds: number): void {
    const previous = shard.holderOf(entry);
    shard.setHolder(entry, STORED_ALONE, expirySeconds);
    if (previous !== STORED_ALONE) this.letGo(previous);
  }

  private removeEntry(shard: LedgerShard, entry: number): void {
    const previous = shard.holderOf(entry);
    shard.remove(entry);
    if (previous !== STORED_ALONE) this.letGo(previous);
  }

  private letGo(claimNumber: number): void {
    const claim = this.claims.get(claimNumber)!;
    if (--claim.entries === 0 && !this.isOpen(claim)) this.claims.delete(claimNumber);
  }

  /** Whether its batch may still commit, renew or release it. */
  private isOpen(claim: Claim): boolean {
    return this.openClaims.get(claim.claimedBy) === claim;
  }

  /** Its batch is done with the claim, which stays as long as entries hold it. */
  private closeClaim(claim: Claim): void {
    this.openClaims.delete(claim.claimedBy);
    if (claim.entries === 0) this.claims.delete(claim.number);
  }

  private expiresAtMs(shard: LedgerShard, entry: number): number {
    const holder = shard.holderOf(entry);
    return holder === STORED_ALONE ? shard.expirySecondsOf(entry) * 1000 : this.claims.get(holder)!.expiresAtMs;
  }

  /**
   * Makes room in a shard by forgetting its oldest stored ids (and expired claims), from its
   * front, down to 90 % of its capacity. Claims still in flight are kept: they are few, and
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
  private forgetOldest(index: number, now: number): number {
    const shard = this.shards[index]!;
    const target = Math.floor(this.shardMaxEvents * (1 - FORGET_SHARE));
    let forgottenCommittedBeforeMs = -Infinity;
    shard.forEachOldestFirst((entry) => {
      if (shard.size <= target) return false;
      const holder = shard.holderOf(entry);
      if (holder === STORED_ALONE) {
        // Committed with expiry ceil((t + window) / 1000) s, so at t ≤ expiry − window.
        forgottenCommittedBeforeMs = Math.max(forgottenCommittedBeforeMs, shard.expirySecondsOf(entry) * 1000 - this.shortestWindowMs + 1);
        this.removeEntry(shard, entry);
        return true;
      }
      const claim = this.claims.get(holder)!;
      if (claim.committedAtMs !== undefined) {
        forgottenCommittedBeforeMs = Math.max(forgottenCommittedBeforeMs, claim.committedAtMs + 1);
        this.removeEntry(shard, entry);
      } else if (claim.expiresAtMs <= now) {
        this.removeEntry(shard, entry);
      }
      return true;
    });
    // Claims in flight are never forgotten, so the shard can stay above target until they are
    // stored; look again only after as many new ids as a pass frees.
    this.forgetAtSize[index] = Math.max(this.shardMaxEvents, shard.size + (this.shardMaxEvents - target));
    return Math.min(forgottenCommittedBeforeMs, now + 1);
  }

  private sweep(): void {
    const now = this.now();
    for (const shard of this.shards) {
      shard.forEachOldestFirst((entry) => {
        if (this.expiresAtMs(shard, entry) <= now) this.removeEntry(shard, entry);
        return true;
      });
    }
    // Deleting from a Map while iterating it is defined: the iteration goes on with what is left.
    for (const claim of this.openClaims.values()) if (claim.leaseEndsAtMs <= now) this.closeClaim(claim);
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
