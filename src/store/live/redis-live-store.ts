// The LiveStore contract on Redis. Every key of a device carries the device id as a hash tag, so a
// device's keys share a cluster slot; each operation is one Lua call per batch (per 1,000 keys of
// it), because a call costs the client ~2 µs per id against ~16 µs per pipelined command.
import { Redis } from "ioredis";
import type { DeviceKind } from "../../process/history-rows.js";
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
import { BATCH_COMMIT_MIN_EVENTS, healthLevelOf, newestPerDevice } from "./live-store.js";

/** How much observed time one ledger bucket of a device spans. */
const LEDGER_BUCKET_MS = 3_600_000;

/**
 * The value of an event id in the ledger once its reading is stored on its own (found in history,
 * or part of a batch only some of whose tables were stored), and of a claim token's key once every
 * event it still holds is stored. A claimed id holds its claimer's token.
 */
const COMMITTED = "=";
/** The value of a claim token's key while its lease runs (the key's TTL is the lease). */
const HELD = "+";

// The ledger keeps a device's event ids in one hash per hour of observed time (a bucket), each id
// a field holding its claimer's token or COMMITTED. A key per event cost ~175-220 B per reading
// (the key, its expiry entry and the keyspace's overhead); a field in an hour's hash costs ~35-55 B
// while the hash stays in Redis's compact encoding (up to 512 ids, by default), and the bucket's
// TTL stands for all of its ids (docs/capacity.md has the measurements). Bucketing by
// observed time keeps the window's meaning: a bucket lives until the window has passed since its
// hour ended (or, for an hour already over when it is written, since then), so the ledger holds
// every id observed within the window, and one observed before it is checked against history
// anyway. A resend carries its reading's original observed_at (as the history check relies on
// too), so it finds its bucket.
//
// Each script takes the buckets' keys in KEYS, ending in their hour (hours since 1970), and in
// ARGV how many of the call's ids each bucket has, joined by commas, then the ids bucket by
// bucket (an argument per id and bucket: arguments are most of what a call costs the client).
// keep() sets a bucket's expiry: once, for an hour not yet over (its end is fixed; read with PTTL
// rather than set with PEXPIREAT's NX, which Redis before 7.0 lacks); moved on, for an hour over
// (from now). The hour is read from the key's last 12 characters first (up to 8 characters: any
// year from 830 to 13377): matched from the start of the key, the pattern is tried at every
// position, which was ~0.7 µs per bucket, a fifth of a claimed id's cost in redis-server.
const BUCKETS = `
local function sizes(joined)
  local out = {}
  for n in string.gmatch(joined, '%d+') do out[#out + 1] = tonumber(n) end
  return out
end
local function keep(bucket, now, ms)
  local ends = (tonumber(string.match(bucket, 'ids:(%-?%d+)$', -12) or string.match(bucket, 'ids:(%-?%d+)$')) + 1) * ${LEDGER_BUCKET_MS}
  if ends > now then
    if redis.call('PTTL', bucket) == -1 then redis.call('PEXPIREAT', bucket, string.format('%.0f', ends + ms)) end
  else
    redis.call('PEXPIREAT', bucket, string.format('%.0f', now + ms))
  end
end`;

// KEYS: the ledger-since key, the ledger-run key, the token's key, then buckets. ARGV: token,
// lease ms, now ms, remember ms, the prefix of token keys, the buckets' sizes, then their ids.
// Answers the ledger's start, then per id, bucket by bucket, 0 claimed, 1 duplicate, 2 in flight,
// 3 reclaimed.
// The ledger starts again (now) whenever this Redis is not the one that answered the last claim —
// by its run_id, which every start of redis-server draws anew: an empty Redis holds no ids, and
// one that loaded a snapshot or an append-only file after a crash, or a replica promoted in a
// failover, may lack the ids committed last, with nothing in it saying which (the ledger's start
// itself came back with the snapshot). A server that gives no run_id (some Redis-compatible ones,
// or an ACL user denied INFO, which is in @dangerous) only has the ledger restart when its start
// is gone; the service warns of it when it starts (recognisesRestarts). An id holds its claimer's
// token until its bucket expires, and the token's key says what became of the claim: held while
// the lease runs, committed once the claimer stored every event it holds (one write per batch,
// where a write per event was ~45 % of the ledger's cost in Redis; smaller batches than
// BATCH_COMMIT_MIN_EVENTS still commit event by event), and gone once the lease ran out without a
// commit. An event whose claim lapsed (its holder died after storing the rows, perhaps) is then
// taken over as "reclaimed", which sends the reading to the history check instead of looking like
// an event never seen. Leases run on Redis's clock, the one every claimer shares. (The token keys
// are read without being declared in KEYS, like the several devices' slots of one call: on Redis
// Cluster this script would have to change.)
const CLAIM_EVENTS = `${BUCKETS}
local info = redis.pcall('INFO', 'server')
local run = type(info) == 'string' and string.match(info, 'run_id:(%x+)') or nil
local restarted = run and redis.call('GET', KEYS[2]) ~= run
if restarted then redis.call('SET', KEYS[2], run) end
local since = tonumber(redis.call('GET', KEYS[1]))
if not since or (restarted and since < tonumber(ARGV[3])) then
  redis.call('SET', KEYS[1], ARGV[3])
  since = tonumber(ARGV[3])
end
local out = { since }
redis.call('SET', KEYS[3], '${HELD}', 'PX', ARGV[2])
local token, now, remember = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local size = sizes(ARGV[6])
local at = 7
for b = 4, #KEYS do
  local bucket, n = KEYS[b], size[b - 3]
  -- Whether this call wrote to the bucket: one it only read has its expiry from the write before.
  local wrote = false
  for i = at, at + n - 1 do
    local id = ARGV[i]
    -- Most ids are new: one HSETNX claims them; only a taken id is read.
    local holder = nil
    if redis.call('HSETNX', bucket, id, token) == 0 then holder = redis.call('HGET', bucket, id) else wrote = true end
    local status = 0
    if holder == '${COMMITTED}' then
      status = 1
    elseif holder then
      local claim = redis.call('GET', ARGV[5] .. holder)
      if claim == '${COMMITTED}' then
        status = 1
      elseif claim then
        status = 2
      else
        redis.call('HSET', bucket, id, token)
        wrote = true
        status = 3
      end
    end
    out[#out + 1] = status
  end
  if wrote then keep(bucket, now, remember) end
  at = at + n
end
return out`;

// KEYS: the token's key. ARGV: window ms. Commits the token's claims at once while its key is
// still held: then Redis kept every id the claim wrote. Answers 0 when the key is gone — the lease
// ran out, or Redis lost its data (a restart without persistence) — and the caller commits event
// by event instead (COMMIT_EVENTS), which writes back the ids Redis lost: otherwise a resend of a
// reading stored by a batch in flight across the restart would find no id, be claimed afresh and
// be stored twice (the fault suite caught this).
const COMMIT_CLAIMS = `
if redis.call('GET', KEYS[1]) ~= '${HELD}' then return 0 end
redis.call('SET', KEYS[1], '${COMMITTED}', 'PX', ARGV[1])
return 1`;

// KEYS: buckets. ARGV: token, now ms, window ms, the buckets' sizes, then their ids. Commits the
// ids the token still holds and those Redis lost; not one another batch has claimed since.
const COMMIT_EVENTS = `${BUCKETS}
local token, now, window = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local size = sizes(ARGV[4])
local at = 5
for b = 1, #KEYS do
  local bucket, n = KEYS[b], size[b]
  -- An id still held has its bucket's expiry from the claim; one Redis lost is written back.
  local lost = false
  for i = at, at + n - 1 do
    local holder = redis.call('HGET', bucket, ARGV[i])
    if not holder then lost = true end
    if not holder or holder == token then redis.call('HSET', bucket, ARGV[i], '${COMMITTED}') end
  end
  if lost then keep(bucket, now, window) end
  at = at + n
end
return #KEYS`;

// KEYS: the token's key. ARGV: lease ms. Extends the lease while it runs: an id holds the token
// until its bucket expires, so the token's key alone says whether the claim is held.
const RENEW_CLAIMS = `
if redis.call('GET', KEYS[1]) ~= '${HELD}' then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1`;

// KEYS: the token's key, then buckets. ARGV: token, the buckets' sizes, then their ids. Deletes
// only claims this token still holds, and none once it committed them.
const RELEASE_EVENTS = `${BUCKETS}
if redis.call('GET', KEYS[1]) == '${COMMITTED}' then return 0 end
local size = sizes(ARGV[2])
local at = 3
for b = 2, #KEYS do
  local bucket, n = KEYS[b], size[b - 1]
  for i = at, at + n - 1 do
    if redis.call('HGET', bucket, ARGV[i]) == ARGV[1] then redis.call('HDEL', bucket, ARGV[i]) end
  end
  at = at + n
end
return #KEYS - 1`;

// KEYS: the device set, then live-state hashes. ARGV: the change channel, then per hash device id,
// kind, observed_at, received_at, values JSON, trend JSON (empty when the device's scorer keeps
// none) and health level (a battery unit's; empty when not scored, or another kind). Newest
// observed_at wins; last_seen only moves forward. Times stay strings end to end, so epoch
// milliseconds never pass through a float format. Every change counts the hash's revision up
// (LiveState.revision), a last_seen moved alone too. A battery unit's level is a field of its own so
// that surveying the fleet reads it without decoding the values. Each change is published on the
// channel as the device's whole new state, so a watcher needs no read of its own — when any service
// process is subscribed: with no watcher anywhere, encoding and publishing every change was ~20 %
// of this script's time for nothing (a process subscribes while it has a watch open). (Like the hashes of
// several devices, the device set is a key of its own slot: on Redis Cluster this script would
// have to be split per slot.)
const APPLY_LIVE_STATE = `
local devices = KEYS[1]
local channel = ARGV[1]
local watched = redis.call('PUBSUB', 'NUMSUB', channel)[2] > 0
for i = 2, #KEYS do
  local key = KEYS[i]
  local at = 1 + (i - 2) * 7
  local id, kind, observed, received = ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[at + 4]
  local values, trend, level = ARGV[at + 5], ARGV[at + 6], ARGV[at + 7]
  local current = redis.call('HMGET', key, 'observed_at', 'last_seen', 'revision')
  local currentObserved = tonumber(current[1])
  local lastSeen = current[2] or '0'
  local revision = (tonumber(current[3]) or 0) + 1
  local seenLater = tonumber(received) > tonumber(lastSeen)
  if seenLater then lastSeen = received end
  if currentObserved == nil or tonumber(observed) >= currentObserved then
    local fields = { 'kind', kind, 'observed_at', observed, 'values', values, 'last_seen', lastSeen, 'revision', revision }
    if trend ~= '' then fields[#fields + 1] = 'trend'; fields[#fields + 1] = trend end
    if kind == 'battery' then fields[#fields + 1] = 'level'; fields[#fields + 1] = level end
    redis.call('HSET', key, unpack(fields))
    if currentObserved == nil then redis.call('ZADD', devices, 'NX', 0, id) end
    if watched then
      redis.call('PUBLISH', channel, cjson.encode({ id = id, kind = kind, observed_at = observed, last_seen = lastSeen, values = values, revision = revision }))
    end
  elseif seenLater then
    redis.call('HSET', key, 'last_seen', lastSeen, 'revision', revision)
    if watched then
      -- Read only here: copying every stored reading's values into the script for a rare backlog
      -- reading that someone watches was most of what the read cost.
      local stored = redis.call('HMGET', key, 'kind', 'values')
      redis.call('PUBLISH', channel, cjson.encode({ id = id, kind = stored[1], observed_at = current[1], last_seen = lastSeen, values = stored[2], revision = revision }))
    end
  end
end
return #KEYS - 1`;

// KEYS: live-state hashes. ARGV: online since, epoch ms; "1" to list attention, "0" for the counts
// alone (an empty attention string). Answers { counts, attention }: counts are
// devices with state, those last seen at or after ARGV[1], then battery units per level as level,
// count pairs; attention is one string, per device last seen before ARGV[1] or a battery unit at
// CRITICAL its index in KEYS, kind, observed_at, last_seen and level (empty for other kinds), all
// joined by commas: decoding five replies per device cost this process more than the survey saved
// (kinds and levels are the service's own words, never holding a comma). A battery hash written
// before the level had a field of its own has it read from its values.
const SURVEY_DEVICES = `
local since = tonumber(ARGV[1])
local listAttention = ARGV[2] ~= '0'
local devices, online = 0, 0
local levels = {}
local attention = {}
for i = 1, #KEYS do
  local h = redis.call('HMGET', KEYS[i], 'kind', 'observed_at', 'last_seen', 'level')
  if h[2] then
    devices = devices + 1
    local silent = tonumber(h[3] or '0') < since
    if not silent then online = online + 1 end
    local level = ''
    if h[1] == 'battery' then
      level = h[4]
      if not level then
        local values = cjson.decode(redis.call('HGET', KEYS[i], 'values') or '{}')
        level = type(values.health_level) == 'string' and values.health_level or ''
      end
      levels[level] = (levels[level] or 0) + 1
    end
    if listAttention and (silent or (h[1] == 'battery' and level == 'CRITICAL')) then
      local n = #attention
      attention[n + 1] = i
      attention[n + 2] = h[1]
      attention[n + 3] = h[2]
      attention[n + 4] = h[3] or '0'
      attention[n + 5] = level
    end
  end
end
local counts = { devices, online }
for level, n in pairs(levels) do
  counts[#counts + 1] = level
  counts[#counts + 1] = n
end
return { counts, table.concat(attention, ',') }`;

// KEYS: live-state hashes. Answers each hash's kind, observed_at, last_seen, values, trend and
// revision (nil where absent; observed_at nil for a device never seen). One call for a page of devices:
// pipelined, each HGETALL cost the client ~17 µs, and the fleet calls read every device's state;
// the values alone, without the field names, halve what the client decodes.
const GET_LIVE_STATES = `
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('HMGET', KEYS[i], 'kind', 'observed_at', 'last_seen', 'values', 'trend', 'revision')
end
return out`;

// KEYS: live-state hashes. Answers each one's trend JSON, empty where there is none.
const GET_TRENDS = `
local out = {}
for i = 1, #KEYS do
  out[i] = redis.call('HGET', KEYS[i], 'trend') or ''
end
return out`;

/**
 * Most keys (or devices) one script call takes, so that no one script holds Redis for long and a
 * call's arguments stay far below what a JavaScript spread can pass (a batch of 20,000 devices'
 * live state, seven arguments each, overflowed the stack).
 */
const KEYS_PER_CALL = 1_000;
/**
 * Script calls of one operation in flight at a time: enough to keep Redis busy while this process
 * encodes and decodes, few enough that a whole-fleet read does not queue a long run of scripts
 * ahead of ingest's.
 */
const CALLS_IN_FLIGHT = 4;

/** `call` over items KEYS_PER_CALL at a time, CALLS_IN_FLIGHT at once; its answers joined in order. */
async function inChunks<T, A>(items: readonly T[], call: (chunk: T[]) => Promise<A[]>): Promise<A[]> {
  const chunks: T[][] = [];
  for (let start = 0; start < items.length; start += KEYS_PER_CALL) chunks.push(items.slice(start, start + KEYS_PER_CALL));
  return (await inFlight(chunks, call)).flat();
}

/** `call` for each task, CALLS_IN_FLIGHT at once; its answers in the tasks' order. */
async function inFlight<T, A>(tasks: readonly T[], call: (task: T) => Promise<A>): Promise<A[]> {
  const answers: A[] = new Array(tasks.length);
  let next = 0;
  const lane = async () => {
    while (next < tasks.length) {
      const index = next++;
      answers[index] = await call(tasks[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(CALLS_IN_FLIGHT, tasks.length) }, lane));
  return answers;
}

/** A run of a batch's ids, grouped by ledger bucket, as one script call takes them. */
interface LedgerCall {
  /** The buckets' keys. */
  readonly buckets: string[];
  /** How many ids each bucket has. */
  readonly sizes: number[];
  /** The ids, bucket by bucket. */
  readonly ids: string[];
}

/** CLAIM_EVENTS's answers, by number. */
const CLAIM_STATUSES: readonly ClaimStatus[] = ["claimed", "duplicate", "in_flight", "reclaimed"];

/** A change as APPLY_LIVE_STATE publishes it. */
interface PublishedChange {
  readonly id: string;
  readonly kind: DeviceKind;
  readonly observed_at: string;
  readonly last_seen: string;
  readonly values: string;
  readonly revision: number;
}

interface LiveStoreCommands {
  claimEvents(numKeys: number, ...args: (string | number)[]): Promise<number[]>;
  commitEvents(numKeys: number, ...args: (string | number)[]): Promise<number>;
  commitClaims(numKeys: number, ...args: (string | number)[]): Promise<number>;
  releaseEvents(numKeys: number, ...args: (string | number)[]): Promise<number>;
  renewClaims(numKeys: number, ...args: (string | number)[]): Promise<number>;
  applyLiveState(numKeys: number, ...args: (string | number)[]): Promise<number>;
  getLiveStates(numKeys: number, ...keys: string[]): Promise<(string | null)[][]>;
  getTrends(numKeys: number, ...keys: string[]): Promise<string[]>;
  surveyDevices(numKeys: number, ...args: (string | number)[]): Promise<[(string | number)[], string]>;
}

export interface RedisLiveStoreOptions {
  readonly url: string;
  /** Prefix of every key, so several deployments (or tests) can share one Redis. */
  readonly keyPrefix?: string;
}

export class RedisLiveStore implements LiveStore {
  private readonly redis: Redis;
  private readonly commands: LiveStoreCommands;
  private readonly prefix: string;
  private readonly listeners = new Set<LiveStateListener>();
  /** The change feed's own connection (a subscribed connection can run no other command). */
  private subscriber: Redis | undefined;
  private subscribing: Promise<void> | undefined;
  private lastError: Error | undefined;

  constructor(options: RedisLiveStoreOptions) {
    this.prefix = options.keyPrefix ?? "ws:";
    this.redis = new Redis(options.url, {
      // Fail calls fast while Redis is down instead of queueing them without bound; the caller
      // answers the device retryably.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      lazyConnect: true,
    });
    // Errors surface on the calls that fail; without a listener ioredis would log them unhandled.
    // The last is kept: a failed connect says only "Connection is closed", this says why.
    this.redis.on("error", (error: Error) => (this.lastError = error));
    this.redis.defineCommand("claimEvents", { lua: CLAIM_EVENTS });
    this.redis.defineCommand("commitEvents", { lua: COMMIT_EVENTS });
    this.redis.defineCommand("commitClaims", { lua: COMMIT_CLAIMS });
    this.redis.defineCommand("releaseEvents", { lua: RELEASE_EVENTS });
    this.redis.defineCommand("renewClaims", { lua: RENEW_CLAIMS });
    this.redis.defineCommand("applyLiveState", { lua: APPLY_LIVE_STATE });
    this.redis.defineCommand("getLiveStates", { lua: GET_LIVE_STATES });
    this.redis.defineCommand("getTrends", { lua: GET_TRENDS });
    this.redis.defineCommand("surveyDevices", { lua: SURVEY_DEVICES });
    this.commands = this.redis as unknown as LiveStoreCommands;
  }

  /** Connects and checks that Redis answers; call once before use. Fails saying why. */
  async connect(): Promise<void> {
    try {
      await this.redis.connect();
      await this.redis.ping();
    } catch (error) {
      const reason = this.lastError ?? (error as Error);
      this.redis.disconnect();
      throw new Error(reason.message, { cause: error });
    }
  }

  /**
   * Redis's `maxmemory-policy`, or undefined where CONFIG is not allowed (many managed services).
   * Every ledger key has a TTL, so any policy but `noeviction` may drop one under memory pressure
   * without moving `ledger-since`, and a resend of that id within the window would be stored again.
   */
  async evictionPolicy(): Promise<string | undefined> {
    try {
      const [, policy] = (await this.redis.config("GET", "maxmemory-policy")) as string[];
      return policy;
    } catch {
      return undefined;
    }
  }

  /**
   * Whether this Redis tells its run_id to this user, by which the ledger recognises a restart
   * that may have lost its last writes (see CLAIM_EVENTS). Without it only a Redis that comes back
   * empty is recognised: one that loads a snapshot or an append-only file missing its last writes
   * could then let a resend be stored twice.
   */
  async recognisesRestarts(): Promise<boolean> {
    try {
      return /run_id:[0-9a-f]+/.test(await this.redis.info("server"));
    } catch {
      return false;
    }
  }

  async claimEvents(keys: readonly EventKey[], token: string, leaseMs: number, rememberMs: number): Promise<ClaimResult> {
    const ledgerSince = `${this.prefix}ledger-by-hour-since`;
    const remember = Math.max(leaseMs, rememberMs);
    const now = Date.now();
    const claim = ({ buckets, sizes, ids }: LedgerCall) =>
      this.commands.claimEvents(
        buckets.length + 3,
        ledgerSince,
        `${this.prefix}ledger-run`,
        this.claimKey(token),
        ...buckets,
        token,
        leaseMs,
        now,
        remember,
        this.claimKey(""),
        sizes.join(","),
        ...ids,
      );
    const calls = this.ledgerCalls(keys);
    // With no ids, one call still answers the ledger's start.
    const answers = calls.length === 0 ? [await claim({ buckets: [], sizes: [], ids: [] })] : await inFlight(calls, claim);
    // Every call answers the ledger's start; a later one differs only if Redis lost its data in
    // between, and the later start is the safe one (more readings are checked against history).
    const ledgerSinceMs = Math.max(...answers.map(([since]) => since!));
    return { ledgerSinceMs, statuses: answers.flatMap(([, ...statuses]) => statuses.map((answer) => CLAIM_STATUSES[answer]!)) };
  }

  async commitEvents(keys: readonly EventKey[], token: string, windowMs: number): Promise<void> {
    await inFlight(this.ledgerCalls(keys), ({ buckets, sizes, ids }) =>
      this.commands.commitEvents(buckets.length, ...buckets, token, Date.now(), windowMs, sizes.join(","), ...ids),
    );
  }

  async commitClaims(token: string, keys: readonly EventKey[], windowMs: number): Promise<void> {
    if (keys.length >= BATCH_COMMIT_MIN_EVENTS && (await this.commands.commitClaims(1, this.claimKey(token), windowMs)) === 1) return;
    await this.commitEvents(keys, token, windowMs);
  }

  async releaseEvents(keys: readonly EventKey[], token: string): Promise<void> {
    await inFlight(this.ledgerCalls(keys), ({ buckets, sizes, ids }) =>
      this.commands.releaseEvents(buckets.length + 1, this.claimKey(token), ...buckets, token, sizes.join(","), ...ids),
    );
  }

  async renewClaims(token: string, leaseMs: number): Promise<boolean> {
    return (await this.commands.renewClaims(1, this.claimKey(token), leaseMs)) === 1;
  }

  async applyLiveState(updates: readonly LiveStateUpdate[]): Promise<void> {
    await inChunks(newestPerDevice(updates), async (newest) => {
      const args: (string | number)[] = [this.devicesKey(), ...newest.map((u) => this.liveKey(u.deviceId)), this.channel()];
      for (const u of newest) {
        const level = u.kind === "battery" ? healthLevelOf(u.values) : "";
        args.push(u.deviceId, u.kind, u.observedAtMs, u.receivedAtMs, JSON.stringify(u.values), u.trend ? JSON.stringify(u.trend) : "", level);
      }
      return [await this.commands.applyLiveState(newest.length + 1, ...args)];
    });
  }

  async listDevices(afterId: string | undefined, limit: number): Promise<string[]> {
    if (limit <= 0) return [];
    // Every member has score 0, so the set is ordered by member bytes and BYLEX pages through it.
    return this.redis.zrangebylex(this.devicesKey(), afterId === undefined ? "-" : `(${afterId}`, "+", "LIMIT", 0, limit);
  }

  async subscribe(listener: LiveStateListener): Promise<() => void> {
    const entry: LiveStateListener = (state) => listener(state);
    this.listeners.add(entry);
    try {
      await (this.subscribing ??= this.openSubscriber());
    } catch (error) {
      this.listeners.delete(entry);
      this.subscribing = undefined;
      throw error;
    }
    return () => void this.listeners.delete(entry);
  }

  get subscriberCount(): number {
    return this.listeners.size;
  }

  /** One subscribed connection per store, shared by every listener of this process. */
  private async openSubscriber(): Promise<void> {
    // The same options (lazy connect, no offline queue); ioredis resubscribes after a reconnect.
    // Changes published while it is disconnected are missed: watchers see the next one.
    const subscriber = this.redis.duplicate();
    subscriber.on("error", () => {});
    subscriber.on("message", (_channel: string, message: string) => this.dispatch(message));
    try {
      await subscriber.connect();
      await subscriber.subscribe(this.channel());
    } catch (error) {
      subscriber.disconnect();
      throw error;
    }
    this.subscriber = subscriber;
  }

  private dispatch(message: string): void {
    if (this.listeners.size === 0) return;
    const change = JSON.parse(message) as PublishedChange;
    const state: LiveState = {
      deviceId: change.id,
      kind: change.kind,
      observedAtMs: Number(change.observed_at),
      lastSeenMs: Number(change.last_seen),
      values: JSON.parse(change.values) as Record<string, unknown>,
      revision: Number(change.revision),
    };
    for (const listener of this.listeners) listener(state);
  }

  async getLiveState(deviceIds: readonly string[]): Promise<(LiveState | undefined)[]> {
    if (deviceIds.length === 0) return [];
    const replies = await inChunks(deviceIds, (ids) => this.commands.getLiveStates(ids.length, ...ids.map((id) => this.liveKey(id))));
    return replies.map(([kind, observedAt, lastSeen, values, trend, revision], i): LiveState | undefined => {
      if (observedAt == null) return undefined;
      const state: LiveState = {
        deviceId: deviceIds[i]!,
        kind: kind as DeviceKind,
        observedAtMs: Number(observedAt),
        lastSeenMs: Number(lastSeen),
        values: JSON.parse(values ?? "{}") as Record<string, unknown>,
        // A hash written before revisions were kept has none until its next change.
        revision: Number(revision ?? 0),
      };
      return trend == null ? state : { ...state, trend: JSON.parse(trend) as Record<string, number> };
    });
  }

  async getTrends(deviceIds: readonly string[]): Promise<(Readonly<Record<string, number>> | undefined)[]> {
    const trends = await inChunks(deviceIds, (ids) => this.commands.getTrends(ids.length, ...ids.map((id) => this.liveKey(id))));
    return trends.map((trend) => (trend === "" ? undefined : (JSON.parse(trend) as Record<string, number>)));
  }

  async surveyDevices(deviceIds: readonly string[], onlineSinceMs: number, options: SurveyOptions = {}): Promise<FleetSurvey> {
    const listAttention = (options.attention ?? true) ? "1" : "0";
    // One reply per script call, in the order of the calls' chunks of deviceIds.
    const replies = await inChunks(deviceIds, async (ids) => {
      const keys = ids.map((id) => this.liveKey(id));
      return [await this.commands.surveyDevices(keys.length, ...keys, onlineSinceMs, listAttention)];
    });
    let devices = 0;
    let online = 0;
    const batteryLevels = new Map<string, number>();
    const attention: DeviceStanding[] = [];
    replies.forEach(([counts, joined], chunk) => {
      devices += Number(counts[0]);
      online += Number(counts[1]);
      for (let i = 2; i < counts.length; i += 2) {
        const level = String(counts[i]);
        batteryLevels.set(level, (batteryLevels.get(level) ?? 0) + Number(counts[i + 1]));
      }
      const first = chunk * KEYS_PER_CALL - 1; // the script's indexes count from 1
      const standing = joined === "" ? [] : joined.split(",");
      for (let i = 0; i < standing.length; i += 5) {
        const kind = standing[i + 1] as DeviceKind;
        attention.push({
          deviceId: deviceIds[first + Number(standing[i])]!,
          kind,
          observedAtMs: Number(standing[i + 2]),
          lastSeenMs: Number(standing[i + 3]),
          level: kind === "battery" ? String(standing[i + 4]) : undefined,
        });
      }
    });
    return { devices, online, batteryLevels, attention };
  }

  async ping(): Promise<void> {
    await this.redis.ping();
  }

  async close(): Promise<void> {
    this.listeners.clear();
    await this.subscribing?.catch(() => undefined);
    if (this.subscriber !== undefined) await this.subscriber.quit().catch(() => this.subscriber?.disconnect());
    await this.redis.quit().catch(() => this.redis.disconnect());
  }

  /**
   * The batch's ids in order, in calls of at most KEYS_PER_CALL, each run of ids of one bucket —
   * the device's hour of observed time — passed under one key. Only neighbours are grouped: a
   * device's readings come together in a call, and a table keyed by bucket cost the client more
   * than it saved Redis where, as under the throughput load, most buckets have one id per batch.
   */
  private ledgerCalls(keys: readonly EventKey[]): LedgerCall[] {
    const calls: LedgerCall[] = [];
    let call: LedgerCall = { buckets: [], sizes: [], ids: [] };
    let deviceId: string | undefined;
    let hour = NaN;
    for (const key of keys) {
      if (call.ids.length === KEYS_PER_CALL) {
        calls.push(call);
        call = { buckets: [], sizes: [], ids: [] };
        deviceId = undefined;
      }
      const keyHour = Math.floor(key.observedAtMs / LEDGER_BUCKET_MS);
      if (key.deviceId !== deviceId || keyHour !== hour) {
        deviceId = key.deviceId;
        hour = keyHour;
        call.buckets.push(`${deviceKeys(this.prefix, deviceId)}ids:${hour}`);
        call.sizes.push(0);
      }
      call.ids.push(key.eventId);
      call.sizes[call.sizes.length - 1]!++;
    }
    if (call.ids.length > 0) calls.push(call);
    return calls;
  }

  /** What became of the claims a token made; the ids it claimed hold the token. */
  private claimKey(token: string): string {
    return `${this.prefix}claim:${token}`;
  }

  /** Every device with live state, as members of score 0. */
  private devicesKey(): string {
    return `${this.prefix}devices`;
  }

  private channel(): string {
    return `${this.prefix}live-changes`;
  }

  private liveKey(deviceId: string): string {
    return `${deviceKeys(this.prefix, deviceId)}live`;
  }
}

/**
 * How a device's keys begin: `PREFIX{DEVICE}:`, then `ids:HOUR` for each ledger bucket (HOUR: hours
 * since 1970 of observed time) and `live` for its state, the device id a hash tag so that they
 * share a Cluster slot. Ids are any text. While event ids were part of keys (`e:EVENT`, before
 * 2026-11-28), a device id holding `}` written as it is would let keys meet — device `a` with
 * event `b}:e:c` and device `a}:e:b` with event `c` — so such an id is written with `%` and `}`
 * escaped, its tag then followed by `~` where no other key has it; every other id keeps the keys
 * it always had. Kept so that such devices keep their live state. (The tag ends at the first `}`,
 * so the marker after it tells the two forms apart, and the rest of the key after that cannot
 * reach back into the tag.)
 */
function deviceKeys(prefix: string, deviceId: string): string {
  if (!deviceId.includes("}")) return `${prefix}{${deviceId}}:`;
  return `${prefix}{${deviceId.replaceAll("%", "%25").replaceAll("}", "%7D")}}~`;
}
