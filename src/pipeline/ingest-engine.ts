// One batch of readings through the engine:
//   admit (bounded rows in flight) → process in a worker (decode, validate, score, encode) → claim event
//   ids → check history for ids the ledger cannot vouch for → queue rows with the table batchers
//   (group commit across all calls) → once durable: commit ids, update live state → count.
// A reading is counted accepted only after the insert carrying it was acknowledged. When storage
// fails, the call fails retryably and the batch's claims are released once its rows are known not
// to be in history, so the device resends and nothing it was told is stored is lost or doubled.
import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import { RejectReason } from "../../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import type { IngestConfig } from "../config.js";
import { packBatteryTrends } from "../process/battery-trends.js";
import { eventIdentity, type DeviceKind, type RowIdentity } from "../process/history-rows.js";
import type { HistoryWriteListener } from "../analytics/performance-snapshot.js";
import { unpackLiveUpdates } from "../process/live-updates.js";
import type { ProcessedBatch, ProcessTask, TablePayload } from "../process/process-batch.js";
import type { StoredEventFinder } from "../store/history/stored-events.js";
import { InsertFailedError, type TableBatcher } from "../store/history/table-batcher.js";
import { hashEvent } from "../store/live/ledger-shard.js";
import type { EventKey, LiveStore } from "../store/live/live-store.js";
import { LiveStateWriter } from "../store/live/live-state-writer.js";
import type { IngestMetrics } from "../observe/metrics.js";
import { InFlightLimit } from "./in-flight-limit.js";
import { toProcessInput, type ReceivedReading } from "./received-reading.js";

export interface ReadingRejection {
  /** Position of the reading in its call, counting across all messages of a stream. */
  readonly index: number;
  readonly eventId: string;
  readonly reason: RejectReason;
  readonly message: string;
  readonly retryable: boolean;
}

export interface IngestOutcome {
  accepted: number;
  duplicates: number;
  readonly rejected: ReadingRejection[];
}

export function emptyOutcome(): IngestOutcome {
  return { accepted: 0, duplicates: 0, rejected: [] };
}

/** Adds a batch's counts to a call's running total. */
export function addOutcome(total: IngestOutcome, batch: IngestOutcome): void {
  total.accepted += batch.accepted;
  total.duplicates += batch.duplicates;
  total.rejected.push(...batch.rejected);
}

/** How long a device should wait before resending after a retryable failure, in ms. */
export const RETRY_DELAY_MS = 1_000;

/** Longest pause between lookups of a failed insert's rows while storage does not answer, in ms. */
const LOOKUP_RETRY_MAX_MS = 5_000;

/**
 * A retryable failure carrying its retry delay both ways a client may look for it: the gRPC
 * retry pushback trailer and an HTTP-style Retry-After.
 */
export function unavailable(what: string, cause?: unknown): ConnectError {
  return new ConnectError(
    `${what}: resend the readings not yet confirmed in ${RETRY_DELAY_MS / 1000} s (those already stored will count as duplicates)`,
    Code.Unavailable,
    { "grpc-retry-pushback-ms": String(RETRY_DELAY_MS), "retry-after": String(Math.ceil(RETRY_DELAY_MS / 1000)) },
    undefined,
    cause,
  );
}

/** Runs a batch's CPU work; the worker pool in production. */
export type BatchProcessor = (task: ProcessTask) => Promise<ProcessedBatch>;

export interface IngestEngineDeps {
  readonly process: BatchProcessor;
  readonly liveStore: LiveStore;
  readonly batchers: Readonly<Record<DeviceKind, TableBatcher>>;
  readonly stored: StoredEventFinder;
  readonly limits: IngestConfig;
  readonly log: Logger;
  readonly metrics: IngestMetrics;
  /** Told of each write of rows to history before it starts, and once every attempt has settled. */
  readonly historyWrites?: HistoryWriteListener | undefined;
  readonly now?: () => number;
}

/** A batch admitted and waiting to be merged with others submitted in the same turn. */
interface WaitingBatch {
  readonly readings: readonly ReceivedReading[];
  readonly firstIndex: number;
  readonly resolve: (outcome: IngestOutcome) => void;
  readonly reject: (error: unknown) => void;
}

/** Where one submitted batch lies within merged readings. */
interface BatchSource {
  readonly start: number;
  readonly count: number;
  /** The call-wide index of the batch's first reading. */
  readonly firstIndex: number;
}

/** A batch of this process between its claim and its settling (see trackClaimed). */
interface ClaimedBatch {
  readonly ledgerSinceMs: number;
  /** The readings it claimed, once it knows them. */
  claimed: readonly Candidate[];
  readonly settled: Promise<void>;
}

/** The first copy in a batch of a (device, event): the key the live store claims, and where its row is. */
interface Candidate extends EventKey {
  readonly kind: DeviceKind;
  /** Position in the batch. */
  readonly offset: number;
  /** Row number within its table payload. */
  readonly row: number;
  readonly observedAtMs: number;
}

/** A copy of a (device, event) that is not the first in its batch, and the first copy it follows. */
interface Repeat {
  readonly offset: number;
  readonly first: Candidate;
}

/**
 * The table pickFirstCopies finds copies in: candidate number + 1 per slot, 0 for empty. One for
 * the process, as picking runs synchronously, one batch at a time; it only grows.
 */
let firstCopySlots = new Int32Array(1 << 12);

/**
 * The first copy in the batch of each (device, event) of its valid rows, by position in the
 * batch, and the copies that repeat one. The tables' rows are not in the batch's order (battery
 * rows are sorted by time), so a copy earlier in the batch than the one taken so far takes its
 * place. Kept in a Map by an identity string, then by event id, this cost each reading a string or
 * a Map entry that the batch held until it settled; an open-addressing table over the candidates,
 * hashed as the in-process ledger hashes, costs neither.
 */
function pickFirstCopies(
  readings: readonly ReceivedReading[],
  tables: ProcessedBatch["tables"],
): { readonly candidates: Candidate[]; readonly repeats: Repeat[] } {
  let rows = 0;
  for (const table of Object.values(tables)) rows += table.offsets.length;
  const size = 2 ** Math.ceil(Math.log2(Math.max(16, 2 * rows)));
  if (firstCopySlots.length < size) firstCopySlots = new Int32Array(size);
  const slots = firstCopySlots;
  const mask = size - 1;
  const candidates: Candidate[] = [];
  const repeatsOf: { readonly offset: number; readonly candidate: number }[] = [];
  try {
    for (const [kind, table] of Object.entries(tables) as [DeviceKind, TablePayload][]) {
      table.offsets.forEach((offset, row) => {
        const { deviceId, eventId, observedAtMs } = readings[offset]!;
        // observedAtMs: converted as the validator converts it for the stored row (the worker
        // checked they agree), so a history lookup matches it; a valid row always has one.
        const candidate: Candidate = { kind, offset, row, deviceId, eventId, observedAtMs: observedAtMs! };
        for (let slot = hashEvent(deviceId, eventId) & mask; ; slot = (slot + 1) & mask) {
          const held = slots[slot]!;
          if (held === 0) {
            slots[slot] = candidates.push(candidate);
            return;
          }
          const first = candidates[held - 1]!;
          if (first.eventId !== eventId || first.deviceId !== deviceId) continue;
          if (first.offset < offset) {
            repeatsOf.push({ offset, candidate: held - 1 });
          } else {
            repeatsOf.push({ offset: first.offset, candidate: held - 1 });
            candidates[held - 1] = candidate;
          }
          return;
        }
      });
    }
  } finally {
    slots.fill(0, 0, size);
  }
  return { candidates, repeats: repeatsOf.map(({ offset, candidate }) => ({ offset, first: candidates[candidate]! })) };
}

export class IngestEngine {
  readonly inFlight: InFlightLimit;
  private readonly now: () => number;
  private waiting: WaitingBatch[] = [];
  private mergeScheduled = false;
  /** The newest observed_at stored before the ledger's start, looked up once per ledger start. */
  private ledgerHorizon: { readonly sinceMs: number; readonly newestBeforeMs: Promise<number> } | undefined;
  /** Batches past their claim and not yet settled, each with the ledger start its claim saw. */
  private readonly claimedBatches = new Set<ClaimedBatch>();
  /** Batches settling together write their live state as one. */
  private readonly liveStateWriter: LiveStateWriter;

  constructor(private readonly deps: IngestEngineDeps) {
    this.now = deps.now ?? Date.now;
    this.inFlight = new InFlightLimit(deps.limits.maxRowsInFlight);
    this.liveStateWriter = new LiveStateWriter(deps.liveStore);
  }

  /**
   * Admits one batch, then ingests it. Resolves once the batch is admitted, with a promise of its
   * outcome, so a stream can keep reading while earlier batches are stored. firstIndex is the
   * call-wide index of readings[0]. `opening` marks a call's first batch: while the engine is full
   * it is refused at once (UNAVAILABLE with a retry delay), whereas a later batch of an open
   * stream waits for room — the stream is not read meanwhile, and HTTP/2 flow control slows the
   * sender.
   */
  async submit(
    readings: readonly ReceivedReading[],
    firstIndex: number,
    options: { opening: boolean; signal?: AbortSignal },
  ): Promise<{ readonly outcome: Promise<IngestOutcome> }> {
    // (Wrapped: a promise resolved with a promise would wait for the inner one.)
    if (readings.length === 0) return { outcome: Promise.resolve(emptyOutcome()) };
    if (options.opening) {
      if (!this.inFlight.tryAcquire(readings.length)) {
        this.deps.metrics.refusedCalls.inc({ reason: "capacity" });
        throw unavailable("the service is at capacity (storage is behind)");
      }
    } else {
      await this.inFlight.acquire(readings.length, options.signal);
    }
    const outcome = new Promise<IngestOutcome>((resolve, reject) => {
      this.waiting.push({ readings, firstIndex, resolve, reject });
      this.scheduleMerged();
    })
      .finally(() => this.inFlight.release(readings.length));
    return { outcome };
  }

  /**
   * Batches submitted in the same turn of the event loop — from different calls too — are
   * processed as one: one worker task, one claim, one commit. Many small calls (a fleet of devices
   * sending a reading each) then cost little more than one large one.
   */
  private scheduleMerged(): void {
    if (this.mergeScheduled) return;
    this.mergeScheduled = true;
    setImmediate(() => {
      this.mergeScheduled = false;
      while (this.waiting.length > 0) {
        const group: WaitingBatch[] = [];
        let count = 0;
        while (this.waiting.length > 0 && (group.length === 0 || count + this.waiting[0]!.readings.length <= this.deps.limits.maxBatchReadings)) {
          const batch = this.waiting.shift()!;
          group.push(batch);
          count += batch.readings.length;
        }
        const readings = group.length === 1 ? group[0]!.readings : group.flatMap((b) => b.readings);
        let start = 0;
        const sources = group.map((b) => {
          const source = { start, count: b.readings.length, firstIndex: b.firstIndex };
          start += b.readings.length;
          return source;
        });
        this.ingestAdmitted(readings, sources).then(
          (outcomes) =>
            group.forEach((b, i) => {
              const outcome = outcomes[i]!;
              if (outcome instanceof ConnectError) b.reject(outcome);
              else b.resolve(outcome);
            }),
          (error: unknown) => group.forEach((b) => b.reject(error)),
        );
      }
    });
  }

  /**
   * Ingests readings gathered from one or more batches (`sources`, each a range of `readings`);
   * answers one outcome per source — or, for a source that sent a reading the worker could not
   * decode as the main thread read it, the error its call fails with.
   */
  private async ingestAdmitted(readings: readonly ReceivedReading[], sources: readonly BatchSource[]): Promise<(IngestOutcome | ConnectError)[]> {
    const { limits, liveStore, log } = this.deps;
    const receivedAtMs = this.now();
    const outcomes = sources.map(() => emptyOutcome());
    const sourceOf = new Uint32Array(readings.length);
    sources.forEach((source, i) => sourceOf.fill(i, source.start, source.start + source.count));
    const outcomeOf = (offset: number) => outcomes[sourceOf[offset]!]!;
    const indexOf = (offset: number) => {
      const source = sources[sourceOf[offset]!]!;
      return source.firstIndex + offset - source.start;
    };
    // A reading repeated within the batch follows its first copy: a duplicate once that copy is
    // stored or found stored, in flight while another call holds it. Counted a duplicate at once,
    // a repeat would be answered settled while its first copy may yet fail to store.
    // The copies of each (device, event) after the first in the batch, by index in the calls.
    let repeats: readonly Repeat[] = [];
    const inFlight = new Set<Candidate>();
    const finish = () => {
      for (const { offset, first } of repeats) {
        if (inFlight.has(first)) outcomeOf(offset).rejected.push(inFlightRejection(indexOf(offset), first.eventId));
        else outcomeOf(offset).duplicates++;
      }
      return outcomes.map(sortRejected);
    };

    const processed = await this.process(readings, receivedAtMs);
    if (processed.undecodable.length > 0) return this.withoutMalformed(readings, sources, processed, sourceOf);
    for (const r of processed.rejected) {
      outcomeOf(r.offset).rejected.push({
        index: indexOf(r.offset),
        eventId: readings[r.offset]!.eventId,
        reason: r.reason as RejectReason,
        message: r.message,
        retryable: false,
      });
    }

    // Valid rows, the first copy of each (device, event) in the batch; later ones are repeats.
    const picked = pickFirstCopies(readings, processed.tables);
    const candidates = picked.candidates;
    repeats = picked.repeats;
    if (candidates.length === 0) return finish();

    // Unique per batch; short, since Redis keeps it in each claimed event's key for the window.
    const token = randomBytes(12).toString("base64url");
    let claim;
    try {
      claim = await liveStore.claimEvents(candidates, token, limits.claimLeaseMs, limits.dedupeWindowMs);
    } catch (error) {
      log.error({ err: error }, "live store failed; the batch is answered retryable");
      throw unavailable("the live store is unavailable", error);
    }

    // Ids this process's unsettled batches claimed under an earlier ledger (a Redis that has since
    // lost its data): the new ledger holds no claim of theirs, but they are in flight all the same.
    const heldUnderOlderLedger = this.identitiesClaimedBefore(claim.ledgerSinceMs);
    // Until this batch settles, its claims are kept (see keepClaims) and a history check under a
    // newer ledger waits for it (see newestStoredBeforeLedger).
    const claims = this.trackClaimed(token, claim.ledgerSinceMs);
    // Inserts that timed out but may still land: the batch has settled only once they have.
    const stillLanding: Promise<unknown>[] = [];
    try {
      let claimed: Candidate[] = [];
      // Taken over from a claim that lapsed: its holder may have stored the rows before it died.
      const reclaimed = new Set<Candidate>();
      // Claimed here although a batch of this process still holds them: given back below.
      const heldHere: EventKey[] = [];
      candidates.forEach((candidate, i) => {
        let status = claim.statuses[i];
        if ((status === "claimed" || status === "reclaimed") && heldUnderOlderLedger?.has(eventIdentity(candidate.deviceId, candidate.eventId))) {
          heldHere.push(candidate);
          status = "in_flight";
        }
        if (status === "claimed") claimed.push(candidate);
        else if (status === "reclaimed") {
          claimed.push(candidate);
          reclaimed.add(candidate);
        } else if (status === "duplicate") outcomeOf(candidate.offset).duplicates++;
        else {
          inFlight.add(candidate);
          outcomeOf(candidate.offset).rejected.push(inFlightRejection(indexOf(candidate.offset), candidate.eventId));
        }
      });
      claims.holding(claimed);
      if (heldHere.length > 0) {
        await liveStore.releaseEvents(heldHere, token).catch((error: unknown) => {
          // They lapse with the lease instead; meanwhile a resend is answered in flight.
          log.warn({ err: error }, "could not give back claims of ids another batch holds");
        });
      }

      const alreadyStored = await this.findStoredOutsideLedger(claimed, reclaimed, claim.ledgerSinceMs, receivedAtMs, token);
      if (alreadyStored.size > 0) {
        for (const c of alreadyStored) outcomeOf(c.offset).duplicates++;
        const known = claimed.filter((c) => alreadyStored.has(c));
        claimed = claimed.filter((c) => !alreadyStored.has(c));
        // Remember them, so the next resend is answered from the ledger.
        await liveStore.commitEvents(known, token, limits.dedupeWindowMs).catch((error: unknown) => {
          log.warn({ err: error }, "could not commit event ids found in history");
        });
      }
      if (claimed.length === 0) return finish();

      await this.store(claimed, processed, token, stillLanding);
      for (const c of claimed) outcomeOf(c.offset).accepted++;

      // The rows are durable: the call succeeds whatever happens below. A failed commit only means a
      // resend after the lease could be stored again, which the history tables collapse on merge.
      claims.committing();
      await liveStore.commitClaims(token, claimed, limits.dedupeWindowMs).catch((error: unknown) => {
        log.warn({ err: error, rows: claimed.length }, "could not commit event ids after a durable insert");
      });
      await this.liveStateWriter
        .write(unpackLiveUpdates(processed.live, receivedAtMs, readings))
        .catch((error: unknown) => log.warn({ err: error }, "could not update live state"));
      return finish();
    } finally {
      claims.settle(stillLanding);
    }
  }

  /**
   * Fails the calls that sent a malformed reading (as a message that does not decode fails them:
   * INVALID_ARGUMENT, nothing of the batch stored) and ingests the other calls' readings anew.
   */
  private async withoutMalformed(
    readings: readonly ReceivedReading[],
    sources: readonly BatchSource[],
    processed: ProcessedBatch,
    sourceOf: Uint32Array,
  ): Promise<(IngestOutcome | ConnectError)[]> {
    const failed = new Map<number, ConnectError>();
    for (const { offset, message } of processed.undecodable) {
      const source = sourceOf[offset]!;
      if (failed.has(source)) continue;
      const index = sources[source]!.firstIndex + offset - sources[source]!.start;
      failed.set(source, new ConnectError(`a message of the call is not a valid request: reading ${index} of the call: ${message}`, Code.InvalidArgument));
    }
    this.deps.log.warn({ calls: failed.size, readings: processed.undecodable.length }, "malformed readings: their calls are refused");
    const kept: ReceivedReading[] = [];
    const keptSources: BatchSource[] = [];
    sources.forEach((source, i) => {
      if (failed.has(i)) return;
      keptSources.push({ start: kept.length, count: source.count, firstIndex: source.firstIndex });
      kept.push(...readings.slice(source.start, source.start + source.count));
    });
    const keptOutcomes = kept.length > 0 ? await this.ingestAdmitted(kept, keptSources) : [];
    let next = 0;
    return sources.map((_, i) => failed.get(i) ?? keptOutcomes[next++]!);
  }

  private async process(readings: readonly ReceivedReading[], receivedAtMs: number): Promise<ProcessedBatch> {
    const { limits, liveStore } = this.deps;
    const batteryUnits = [...new Set(readings.filter((r) => r.kind === "battery").map((r) => r.deviceId))];
    // The scorer needs each unit's trend; live state is a cache, so without it units score fresh.
    const trends = batteryUnits.length === 0 ? [] : await liveStore.getTrends(batteryUnits).catch(() => []);
    const batteryTrends = packBatteryTrends(batteryUnits, trends);
    try {
      return await this.deps.process({
        ...toProcessInput(readings),
        receivedAtMs,
        batteryTrends,
        window: { nowMs: receivedAtMs, maxReadingAgeMs: limits.maxReadingAgeMs, maxClockSkewMs: limits.maxClockSkewMs },
      });
    } catch (error) {
      this.deps.log.error({ err: error }, "processing failed; the batch is answered retryable");
      throw unavailable("processing is unavailable", error);
    }
  }

  /**
   * Queues the claimed rows with each table's batcher and waits until they are durable. Tables
   * that were stored keep their claims committed even if another table failed, so the resend
   * counts them as duplicates; a failed table's claims are kept until every attempt has settled,
   * then committed for the rows that landed all the same and released for the others.
   */
  private async store(claimed: readonly Candidate[], processed: ProcessedBatch, token: string, stillLanding: Promise<unknown>[]): Promise<void> {
    const { batchers, liveStore, limits, log } = this.deps;
    const byKind = new Map<DeviceKind, Candidate[]>();
    for (const c of claimed) {
      const list = byKind.get(c.kind);
      if (list) list.push(c);
      else byKind.set(c.kind, [c]);
    }
    const kinds = [...byKind.keys()];
    // Withdrawn once every attempt has settled: at once when all landed, or after the failed
    // tables' attempts are over (an attempt that timed out may land later).
    const written = this.deps.historyWrites?.writing(claimed) ?? (() => undefined);
    const results = await Promise.allSettled(
      kinds.map((kind) => {
        const rows = byKind.get(kind)!;
        return batchers[kind].add(selectRows(processed.tables[kind]!, rows), rows.length);
      }),
    );
    const failures = results.flatMap((r, i) => (r.status === "rejected" ? [{ kind: kinds[i]!, error: r.reason as unknown }] : []));
    if (failures.length === 0) {
      written();
      return;
    }

    const stored = kinds.filter((_, i) => results[i]!.status === "fulfilled").flatMap((k) => byKind.get(k)!);
    await liveStore.commitEvents(stored, token, limits.dedupeWindowMs).catch(() => undefined);
    // Claims settled before the answer where that is quick (every attempt over, the lookup
    // answered): a device that resends at once then finds them settled, not in flight. Not when
    // an attempt still runs or storage does not answer the lookup: the call fails then.
    const settledOrStuck: Promise<unknown>[] = [];
    const landingHere: Promise<unknown>[] = [];
    for (const { kind, error } of failures) {
      const rows = byKind.get(kind)!;
      // An attempt that timed out may still land. Until every attempt has settled the claims are
      // kept (a resend is answered in flight); then they are committed if the rows landed, or
      // released so the resend can store them.
      const landed = error instanceof InsertFailedError ? error.landed : Promise.resolve(false);
      let lookupFailed!: () => void;
      const lookupFailing = new Promise<void>((resolve) => (lookupFailed = resolve));
      const claimsSettled = landed
        .then((yes) => (yes ? rows : this.landedDespiteFailure(kind, rows, lookupFailed)))
        .then((landedRows) => {
          const landedSet = new Set(landedRows);
          return Promise.all([
            liveStore.commitEvents(landedRows, token, limits.dedupeWindowMs),
            liveStore.releaseEvents(rows.filter((c) => !landedSet.has(c)), token),
          ]);
        })
        .catch((settleError: unknown) => {
          // The claims then lapse with their lease; the resend waits at most that long.
          log.warn({ err: settleError }, "could not settle claims after a failed insert");
        });
      stillLanding.push(claimsSettled);
      landingHere.push(landed.catch(() => undefined));
      if (!(error instanceof InsertFailedError && error.attemptsRunning)) settledOrStuck.push(Promise.race([claimsSettled, lookupFailing]));
    }
    void Promise.all(landingHere).then(written);
    if (settledOrStuck.length > 0) await Promise.race([Promise.all(settledOrStuck), sleep(RETRY_DELAY_MS, undefined, { ref: false })]);
    log.error({ err: failures[0]!.error, tables: failures.map((f) => f.kind) }, "history insert failed; the batch is answered retryable");
    throw unavailable("history storage is unavailable", failures[0]!.error);
  }

  /**
   * The rows of a block whose every attempt failed that are in history all the same. An attempt
   * can fail after writing — the answer lost with the connection, or a view's insert failing after
   * the table's part was committed — and releasing such rows' claims would let a resend store them
   * a second time (under a new dedupe token: twice in the rollups). So they are looked up before
   * the claims are given back, again and again while storage does not answer; the claims are kept
   * meanwhile (a resend is answered in flight).
   */
  private async landedDespiteFailure(kind: DeviceKind, rows: readonly Candidate[], onFirstFailure: () => void): Promise<readonly Candidate[]> {
    const identities: RowIdentity[] = rows.map((c) => ({ device_id: c.deviceId, event_id: c.eventId, observed_at: c.observedAtMs }));
    for (let attempt = 0; ; attempt++) {
      try {
        const found = await this.deps.stored.findStored(kind, identities);
        return rows.filter((c) => found.has(eventIdentity(c.deviceId, c.eventId)));
      } catch (error) {
        if (attempt === 0) {
          onFirstFailure();
          this.deps.log.warn({ err: error, kind }, "could not look up the rows of a failed insert; their claims are kept until it can");
        }
        await sleep(Math.min(LOOKUP_RETRY_MAX_MS, RETRY_DELAY_MS * 2 ** attempt), undefined, { ref: false });
      }
    }
  }

  /**
   * Extends the token's lease, every third of it, until stop(). Config keeps the lease longer than
   * every attempt of one insert, but a batch can outlive it while this process still works on it:
   * queued behind another block whose attempts are timing out, waiting for the batches of an
   * earlier ledger before its history check, or after its own attempts timed out with a statement
   * the engine has not answered, which may still land. Let the claims lapse then, and a resend
   * would be taken over, found nowhere in history yet, and stored a second time once the first
   * insert landed. While this process lives, such resends are answered in flight instead (an
   * insert that never returns keeps them so until the process restarts, which inserts its spool
   * again first); if it dies, the lease runs out as before. Most batches settle long before the
   * first renewal is due, so they cost a timer and nothing in the live store.
   */
  private keepClaims(token: string): { stop(): void } {
    const { liveStore, limits, log } = this.deps;
    let stopped = false;
    let warned = false;
    const renew = () => {
      liveStore.renewClaims(token, limits.claimLeaseMs).then(
        (held) => {
          if (!held && !stopped && !warned) {
            warned = true;
            log.warn({ token }, "the claims of a batch still being stored were lost (lease over, or the live store lost them): a resend may be stored again");
          }
        },
        (error: unknown) => {
          if (!warned) log.warn({ err: error }, "could not extend the claims of a batch still being stored; trying again");
          warned = true;
        },
      );
    };
    const timer = setInterval(renew, Math.max(1, Math.floor(limits.claimLeaseMs / 3)));
    timer.unref();
    return {
      stop: () => {
        stopped = true;
        clearInterval(timer);
      },
    };
  }

  /**
   * The ledger answers "claimed" for any event it does not hold. It cannot hold events committed
   * before it started (a restart of the embedded store, a Redis that lost its data), nor those
   * whose entry expired with the dedupe window. A reading that could be one of those is looked up
   * in history instead: one observed no later than the newest reading stored before the ledger
   * started, or observed before the window. So is a reading taken over from a lapsed claim (its
   * holder may have died between storing it and committing it). In steady state fresh readings
   * skip this entirely.
   */
  private async findStoredOutsideLedger(
    claimed: readonly Candidate[],
    reclaimed: ReadonlySet<Candidate>,
    ledgerSinceMs: number,
    receivedAtMs: number,
    token: string,
  ): Promise<Set<Candidate>> {
    const { limits, stored, liveStore, log } = this.deps;
    if (claimed.length === 0) return new Set();
    try {
      // A reading is committed no earlier than it was observed minus the allowed clock skew.
      const expiredBeforeMs = receivedAtMs - limits.dedupeWindowMs + limits.maxClockSkewMs;
      const newestBeforeLedgerMs = await this.newestStoredBeforeLedger(ledgerSinceMs);
      const unsure = claimed.filter(
        (c) => reclaimed.has(c) || c.observedAtMs <= expiredBeforeMs || c.observedAtMs <= newestBeforeLedgerMs,
      );
      if (unsure.length === 0) return new Set();
      const found = new Set<string>();
      for (const kind of new Set(unsure.map((c) => c.kind))) {
        const rows: RowIdentity[] = unsure
          .filter((c) => c.kind === kind)
          .map((c) => ({ device_id: c.deviceId, event_id: c.eventId, observed_at: c.observedAtMs }));
        for (const key of await stored.findStored(kind, rows)) found.add(key);
      }
      return new Set(unsure.filter((c) => found.has(eventIdentity(c.deviceId, c.eventId))));
    } catch (error) {
      await liveStore.releaseEvents(claimed, token).catch(() => undefined);
      log.error({ err: error }, "history lookup failed; the batch is answered retryable");
      throw unavailable("history storage is unavailable", error);
    }
  }

  /**
   * Registers a batch that claimed under token while the ledger said ledgerSinceMs and keeps its
   * claims from now on. Call `committing` just before committing them (the lease has done its job;
   * a renewal would find them committed), and `settle` when the batch is answered, with any of its
   * inserts that may still land: it has settled once they have, and its claims are kept until then.
   */
  private trackClaimed(
    token: string,
    ledgerSinceMs: number,
  ): { holding(claimed: readonly Candidate[]): void; committing(): void; settle(stillLanding: readonly Promise<unknown>[]): void } {
    let settled!: () => void;
    const batch: ClaimedBatch = { ledgerSinceMs, claimed: [], settled: new Promise<void>((resolve) => (settled = resolve)) };
    this.claimedBatches.add(batch);
    const keeping = this.keepClaims(token);
    return {
      holding: (claimed) => {
        batch.claimed = claimed;
      },
      committing: () => keeping.stop(),
      settle: (stillLanding) => {
        void Promise.allSettled(stillLanding).then(() => {
          keeping.stop();
          this.claimedBatches.delete(batch);
          settled();
        });
      },
    };
  }

  /**
   * The ids held by this process's unsettled batches that claimed under a ledger older than
   * ledgerSinceMs, or undefined when there are none (always, but for a while after Redis lost its
   * data). Such a batch may yet store its rows however long that takes, and keeps its claims in
   * this process only: answering them in flight here is what keeps a resend from being stored a
   * second time meanwhile (a batch may outlive a lease: see keepClaims).
   */
  private identitiesClaimedBefore(ledgerSinceMs: number): Set<string> | undefined {
    let held: Set<string> | undefined;
    for (const batch of this.claimedBatches) {
      if (batch.ledgerSinceMs >= ledgerSinceMs || batch.claimed.length === 0) continue;
      held ??= new Set();
      for (const c of batch.claimed) held.add(eventIdentity(c.deviceId, c.eventId));
    }
    return held;
  }

  private newestStoredBeforeLedger(ledgerSinceMs: number): Promise<number> {
    if (this.ledgerHorizon?.sinceMs !== ledgerSinceMs) {
      // Batches of this process claimed under an earlier ledger (a Redis that has since lost its
      // data) may still be storing rows received before this ledger started. While they do, a
      // resend of one of their readings is answered in flight (identitiesClaimedBefore); looked
      // up before they land, the horizon would still miss their rows, for a resend that comes
      // after they settled without writing their ids back to the new ledger: wait for them
      // first, at most a lease — an insert the engine never answers would otherwise hold the
      // lookup, and every batch behind it, for ever. (Another process's such batches are not
      // known here.)
      const older = [...this.claimedBatches].filter((batch) => batch.ledgerSinceMs < ledgerSinceMs).map((batch) => batch.settled);
      const waited =
        older.length === 0 ? Promise.resolve() : Promise.race([Promise.all(older), sleep(this.deps.limits.claimLeaseMs, undefined, { ref: false })]);
      const newestBeforeMs = waited.then(() => this.deps.stored.newestObservedReceivedBefore(ledgerSinceMs));
      this.ledgerHorizon = { sinceMs: ledgerSinceMs, newestBeforeMs };
      // A failed lookup is tried again by the next batch.
      newestBeforeMs.catch(() => {
        if (this.ledgerHorizon?.newestBeforeMs === newestBeforeMs) this.ledgerHorizon = undefined;
      });
    }
    return this.ledgerHorizon.newestBeforeMs;
  }
}

/** The encoded rows of a table payload that are still to be stored, without re-encoding. */
function selectRows(table: TablePayload, rows: readonly Candidate[]): Buffer {
  const all = Buffer.from(table.payload.buffer, table.payload.byteOffset, table.payload.byteLength);
  if (rows.length === table.offsets.length) return all;
  return Buffer.concat(rows.map((c) => all.subarray(c.row === 0 ? 0 : table.rowEnds[c.row - 1]!, table.rowEnds[c.row]!)));
}

/** A reading another call is storing right now: the device resends it later. */
function inFlightRejection(index: number, eventId: string): ReadingRejection {
  return {
    index,
    eventId,
    reason: RejectReason.IN_FLIGHT,
    message: `event_id ${JSON.stringify(eventId)} is being stored by another call; resend it later`,
    retryable: true,
  };
}

function sortRejected(outcome: IngestOutcome): IngestOutcome {
  outcome.rejected.sort((a, b) => a.index - b.index);
  return outcome;
}
