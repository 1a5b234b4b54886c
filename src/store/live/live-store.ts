// The live store: per-device live state (newest reading wins by observed_at) and the dedupe
// ledger of event ids. Two implementations keep one contract: Redis for real deployments and an
// in-process store for a single embedded process. It is a fast filter and a cache; ClickHouse
// holds the record of truth.
import type { DeviceKind } from "../../process/history-rows.js";

/** One reading's identity for dedupe: event ids are unique per device, not fleet-wide. */
export interface EventKey {
  readonly deviceId: string;
  readonly eventId: string;
  /**
   * When the device observed the reading, epoch ms: a resend carries its original observed_at.
   * The Redis ledger files ids by the hour they were observed in (see redis-live-store.ts).
   */
  readonly observedAtMs: number;
}

/**
 * What a claim found:
 * - "claimed": this caller now holds the event for the lease; it must commit or release it;
 * - "duplicate": the event was stored before (committed within the dedupe window);
 * - "in_flight": another caller holds it right now; the sender should retry later;
 * - "reclaimed": this caller now holds the event, taken over from an earlier claim whose lease ran
 *   out without a commit or a release. Its holder may have stored the reading and died before
 *   committing (a process killed between the insert and the commit), so the history store must be
 *   checked before the reading is stored again.
 */
export type ClaimStatus = "claimed" | "duplicate" | "in_flight" | "reclaimed";

export interface ClaimResult {
  /** One status per key, in order. */
  readonly statuses: ClaimStatus[];
  /**
   * Since when the dedupe ledger is complete, epoch ms: when this store started remembering (an
   * in-process store's start, a Redis that lost its data). Events committed before then are not
   * in the ledger, so a "claimed" answer for one observed before then must be checked against
   * the history store.
   */
  readonly ledgerSinceMs: number;
}

export interface LiveStateUpdate {
  readonly deviceId: string;
  readonly kind: DeviceKind;
  /** When the device observed this reading, epoch ms. */
  readonly observedAtMs: number;
  /** When the service received it, epoch ms. */
  readonly receivedAtMs: number;
  /** The reading's values, as stored. */
  readonly values: Readonly<Record<string, unknown>>;
  /** State a scorer carries from one reading of the device to the next (a battery's trend). */
  readonly trend?: Readonly<Record<string, number>> | undefined;
}

export interface LiveState {
  readonly deviceId: string;
  readonly kind: DeviceKind;
  /** observed_at of the newest reading, epoch ms. */
  readonly observedAtMs: number;
  /** When the service last received any reading from the device, epoch ms. */
  readonly lastSeenMs: number;
  /** The newest reading's values. */
  readonly values: Readonly<Record<string, unknown>>;
  /** The scorer's state as of the newest reading, if it keeps one. */
  readonly trend?: Readonly<Record<string, number>> | undefined;
  /**
   * How many times the store has changed this device's state, counting from 1: of two states of a
   * device from one store, the higher revision is the newer. It orders what observed_at and
   * last_seen cannot — a reading replacing another of the same observed_at, received in the same
   * millisecond or settled out of order — for a watcher whose change notices can arrive after a
   * read of the state they precede. A store that lost its data counts again from 1.
   */
  readonly revision: number;
}

/** What the fleet-wide calls need of one device's live state: no values, no trend. */
export interface DeviceStanding {
  readonly deviceId: string;
  readonly kind: DeviceKind;
  readonly observedAtMs: number;
  readonly lastSeenMs: number;
  /** A battery unit's latest health level ("" when not scored); undefined for other kinds. */
  readonly level: string | undefined;
}

export interface SurveyOptions {
  /** List the devices that need attention (FleetSurvey.attention); true when unset. */
  readonly attention?: boolean;
}

/**
 * The fleet-wide view of a set of devices' live state: counts for all of them, and the standing of
 * only those that need attention. Reading every device's whole state for this cost the Redis store
 * ~4 µs per device in this process (decoding each reading's values) and ~3 µs in Redis.
 */
export interface FleetSurvey {
  /** Devices with live state. */
  readonly devices: number;
  /** Of them, those last seen at or after the survey's onlineSinceMs. */
  readonly online: number;
  /** Battery units by latest health level ("" when not scored). */
  readonly batteryLevels: ReadonlyMap<string, number>;
  /** Devices last seen before onlineSinceMs, and battery units at CRITICAL, in the order surveyed. */
  readonly attention: readonly DeviceStanding[];
}

/** The health level a battery unit's reading was scored at, as live state keeps it. */
export function healthLevelOf(values: Readonly<Record<string, unknown>>): string {
  return typeof values.health_level === "string" ? values.health_level : "";
}

/** Receives a device's live state after a change. */
export type LiveStateListener = (state: LiveState) => void;

/**
 * The fewest events a batch commits in one step (LiveStore.commitClaims); smaller batches commit
 * event by event. The one step leaves a record of the batch for the whole dedupe window (a key of
 * ~100–190 B in Redis, an object in the in-process store): against ~35 B per event in Redis's ledger,
 * a fleet calling with one reading at a time would have multiplied the ledger's memory, where from
 * this size on it adds at most ~6 B per event and saves the per-event write.
 */
export const BATCH_COMMIT_MIN_EVENTS = 32;

export interface LiveStore {
  /**
   * Claims each event for leaseMs under token (unique to this call: a later claim under the same
   * token may replace what commitClaims and releaseEvents know of this one). A claim neither
   * committed nor released is remembered for rememberMs (the dedupe window) after its lease ends,
   * so that the next claimer is told "reclaimed" rather than "claimed".
   */
  claimEvents(keys: readonly EventKey[], token: string, leaseMs: number, rememberMs: number): Promise<ClaimResult>;
  /**
   * Marks stored, event by event, those of `keys` still claimed under token, for windowMs — and
   * with Redis those whose key Redis lost since the claim, which are written back. An event another
   * batch has taken over since (its lease ran out) stays that batch's: it checks history itself.
   */
  commitEvents(keys: readonly EventKey[], token: string, windowMs: number): Promise<void>;
  /**
   * Marks stored every event still claimed under token — those of `keys` it claimed and neither
   * released nor lost to a reclaimer — in one step for the whole token where the store can and
   * there are at least BATCH_COMMIT_MIN_EVENTS of them (the per-event commit was most of what
   * committing cost Redis). Each then counts as a duplicate until its claim's remember time ends:
   * claim with rememberMs = windowMs, the dedupe window. Call it only once every event the token
   * still holds is stored.
   */
  commitClaims(token: string, keys: readonly EventKey[], windowMs: number): Promise<void>;
  /** Gives up claims still held under token, so a resend can claim them at once. */
  releaseEvents(keys: readonly EventKey[], token: string): Promise<void>;
  /**
   * Extends the lease of the claims still held under token to leaseMs from now, while an insert of
   * theirs that the caller gave up waiting for may still land. Answers false when its lease is
   * already over (or lost with Redis's data) or the token committed in one step (commitClaims);
   * renewing a claim committed or released event by event is harmless.
   */
  renewClaims(token: string, leaseMs: number): Promise<boolean>;
  /**
   * Applies readings to live state: a reading replaces the state only if it was observed at or
   * after the current one (a backlog never overwrites fresher state); last_seen always advances.
   */
  applyLiveState(updates: readonly LiveStateUpdate[]): Promise<void>;
  /** Live state of each device, or undefined for a device never seen. */
  getLiveState(deviceIds: readonly string[]): Promise<(LiveState | undefined)[]>;
  /**
   * The fleet-wide view of these devices (see FleetSurvey); devices never seen are not counted.
   * With `attention: false` its attention list is left empty: the counts alone cost a fraction
   * of listing every silent device.
   */
  surveyDevices(deviceIds: readonly string[], onlineSinceMs: number, options?: SurveyOptions): Promise<FleetSurvey>;
  /**
   * Only the scorer's trend of each device, as getLiveState has it (undefined for a device never
   * seen or whose scorer keeps none): the ingest path reads every battery unit's per batch.
   */
  getTrends(deviceIds: readonly string[]): Promise<(Readonly<Record<string, number>> | undefined)[]>;
  /**
   * Ids of devices with live state, in UTF-8 byte order, each after afterId (exclusive; undefined
   * for the first), at most limit of them: page through the fleet by passing the last id back.
   */
  listDevices(afterId: string | undefined, limit: number): Promise<string[]>;
  /**
   * The change feed: listener gets a device's new state each time applyLiveState changes it (a
   * newer reading, or only last_seen for a backlog reading) — with Redis, in any process sharing
   * it. Resolves once the feed is live, so a state read afterwards misses no change; the returned
   * function unsubscribes (idempotent). A listener must not throw.
   */
  subscribe(listener: LiveStateListener): Promise<() => void>;
  /** Listeners currently subscribed to the change feed. */
  readonly subscriberCount: number;
  /** Resolves when the store answers. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

/**
 * Keeps only the newest update per device (ties: the later one), with the latest received time of
 * any, as the store would. The worker sends one update per device per batch, so for a batch
 * written alone the usual answer is `updates` itself: no copy per update on the main thread, where
 * this runs for every reading. Batches written together (LiveStateWriter) repeat busy devices.
 */
export function newestPerDevice(updates: readonly LiveStateUpdate[]): readonly LiveStateUpdate[] {
  const devices = new Set<string>();
  for (const update of updates) {
    if (devices.has(update.deviceId)) return newestOfRepeated(updates);
    devices.add(update.deviceId);
  }
  return updates;
}

function newestOfRepeated(updates: readonly LiveStateUpdate[]): LiveStateUpdate[] {
  const newest = new Map<string, LiveStateUpdate>();
  for (const update of updates) {
    const current = newest.get(update.deviceId);
    // A copy only where the received time must be carried over: the usual newer update is kept as
    // it is (this runs for every reading of batches written together).
    if (current === undefined || (update.observedAtMs >= current.observedAtMs && update.receivedAtMs >= current.receivedAtMs)) {
      newest.set(update.deviceId, update);
    } else if (update.observedAtMs >= current.observedAtMs) {
      newest.set(update.deviceId, { ...update, receivedAtMs: current.receivedAtMs });
    } else if (update.receivedAtMs > current.receivedAtMs) {
      newest.set(update.deviceId, { ...current, receivedAtMs: update.receivedAtMs });
    }
  }
  return [...newest.values()];
}

/** Orders device ids as Redis orders sorted-set members of one score: by their UTF-8 bytes. */
export function compareDeviceIds(a: string, b: string): number {
  // UTF-16 code units below the surrogates order as their UTF-8 bytes do, so ids compare in place
  // up to their first difference; only a difference involving a surrogate or U+E000–U+FFFF (where
  // the two orders part) is settled on the bytes. Encoding every pair was ~80 µs per new device.
  const shorter = Math.min(a.length, b.length);
  for (let i = 0; i < shorter; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    if (x < 0xd800 && y < 0xd800) return x - y;
    return Buffer.compare(Buffer.from(a), Buffer.from(b));
  }
  return a.length - b.length;
}
