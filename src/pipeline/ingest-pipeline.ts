// One batch of readings through the pipeline: validate → claim event ids → store rows → commit
// ids and update live state → count. A reading is counted accepted only after its row is in
// ClickHouse; when storage fails the claims are released and the whole batch fails retryably,
// so the device resends and nothing it was told is stored is lost.
import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import { RejectReason } from "../../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import type { Reading } from "../../gen/wattstream/telemetry/v1/reading_pb.js";
import type { IngestConfig } from "../config.js";
import {
  emptyRowsByKind,
  type DeviceKind,
  type HistoryRow,
  type RowIdentity,
  type RowsByKind,
} from "../process/history-rows.js";
import { validateReading } from "../process/validate-reading.js";
import type { HistoryWriter } from "../store/history/history-writer.js";
import { storedEventKey, type StoredEventFinder } from "../store/history/stored-events.js";
import type { EventKey, LiveStateUpdate, LiveStore } from "../store/live/live-store.js";

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

export interface IngestPipelineDeps {
  readonly liveStore: LiveStore;
  readonly history: HistoryWriter;
  readonly stored: StoredEventFinder;
  readonly limits: IngestConfig;
  readonly log: Logger;
  readonly now?: () => number;
}

interface Candidate {
  readonly index: number;
  readonly key: EventKey;
  readonly value: HistoryRow;
}

export class IngestPipeline {
  private readonly now: () => number;

  constructor(private readonly deps: IngestPipelineDeps) {
    this.now = deps.now ?? Date.now;
  }

  /**
   * Ingests one batch. firstIndex is the call-wide index of readings[0]. Throws a retryable
   * ConnectError (UNAVAILABLE) when storage fails; nothing of the batch is then counted.
   */
  async ingest(readings: readonly Reading[], firstIndex: number): Promise<IngestOutcome> {
    const { limits, liveStore, history, log } = this.deps;
    const receivedAtMs = this.now();
    const outcome = emptyOutcome();

    const candidates: Candidate[] = [];
    const seenInBatch = new Set<string>();
    readings.forEach((reading, offset) => {
      const index = firstIndex + offset;
      const result = validateReading(reading, {
        nowMs: receivedAtMs,
        maxReadingAgeMs: limits.maxReadingAgeMs,
        maxClockSkewMs: limits.maxClockSkewMs,
      });
      if (!result.ok) {
        outcome.rejected.push({ index, eventId: reading.eventId, ...result.rejection, retryable: false });
        return;
      }
      const batchKey = storedEventKey(reading.deviceId, reading.eventId);
      if (seenInBatch.has(batchKey)) {
        outcome.duplicates++;
        return;
      }
      seenInBatch.add(batchKey);
      candidates.push({ index, key: { deviceId: reading.deviceId, eventId: reading.eventId }, value: result.value });
    });
    if (candidates.length === 0) return outcome;

    const token = randomUUID();
    const claim = await storageCall("live store", log, () =>
      liveStore.claimEvents(
        candidates.map((c) => c.key),
        token,
        limits.claimLeaseMs,
      ),
    );

    let claimed: Candidate[] = [];
    candidates.forEach((candidate, i) => {
      const status = claim.statuses[i];
      if (status === "claimed") {
        claimed.push(candidate);
      } else if (status === "duplicate") {
        outcome.duplicates++;
      } else {
        outcome.rejected.push({
          index: candidate.index,
          eventId: candidate.key.eventId,
          reason: RejectReason.IN_FLIGHT,
          message: `event_id ${JSON.stringify(candidate.key.eventId)} is being stored by another call; resend it later`,
          retryable: true,
        });
      }
    });

    const alreadyStored = await this.findStoredOutsideLedger(claimed, claim.ledgerSinceMs, receivedAtMs, token);
    if (alreadyStored.length > 0) {
      outcome.duplicates += alreadyStored.length;
      const storedSet = new Set(alreadyStored);
      claimed = claimed.filter((c) => !storedSet.has(c));
      // Remember them, so the next resend is answered from the ledger.
      await liveStore.commitEvents(alreadyStored.map((c) => c.key), limits.dedupeWindowMs).catch((error: unknown) => {
        log.warn({ err: error }, "could not commit event ids found in history");
      });
    }
    if (claimed.length === 0) return outcome;

    const claimedKeys = claimed.map((c) => c.key);
    try {
      await history.write(token, groupByKind(claimed), receivedAtMs);
    } catch (error) {
      await liveStore.releaseEvents(claimedKeys, token).catch((releaseError: unknown) => {
        // The claims then lapse with their lease; the resend waits at most that long.
        log.warn({ err: releaseError }, "could not release claims after a failed insert");
      });
      log.error({ err: error, rows: claimed.length }, "history insert failed; the batch is answered retryable");
      throw unavailable("history storage", error);
    }
    outcome.accepted += claimed.length;

    // The rows are durable, so the call succeeds whatever happens below. A failed commit only
    // means a resend after the lease could be stored again, which the history tables collapse.
    await liveStore.commitEvents(claimedKeys, limits.dedupeWindowMs).catch((error: unknown) => {
      log.warn({ err: error, rows: claimed.length }, "could not commit event ids after a durable insert");
    });
    await liveStore.applyLiveState(claimed.map((c) => liveStateUpdate(c.value, receivedAtMs))).catch((error: unknown) => {
      log.warn({ err: error }, "could not update live state");
    });
    return outcome;
  }

  /**
   * The ledger answers "claimed" for any event it does not hold. It cannot hold events committed
   * before it started (a restart of the embedded store, a Redis that lost its data), nor those
   * whose entry expired with the dedupe window. A reading observed early enough to be one of those
   * is looked up in history instead; in steady state fresh readings skip this entirely.
   */
  private async findStoredOutsideLedger(
    claimed: readonly Candidate[],
    ledgerSinceMs: number,
    receivedAtMs: number,
    token: string,
  ): Promise<Candidate[]> {
    const { limits, stored, liveStore, log } = this.deps;
    // A reading is committed no earlier than it was observed minus the allowed clock skew.
    const rememberedFromMs = Math.max(ledgerSinceMs, receivedAtMs - limits.dedupeWindowMs) + limits.maxClockSkewMs;
    const unsure = claimed.filter((c) => c.value.row.observed_at < rememberedFromMs);
    if (unsure.length === 0) return [];
    try {
      const found = new Set<string>();
      for (const [kind, rows] of Object.entries(groupByKind(unsure)) as [DeviceKind, RowIdentity[]][]) {
        for (const key of await stored.findStored(kind, rows)) found.add(key);
      }
      return unsure.filter((c) => found.has(storedEventKey(c.key.deviceId, c.key.eventId)));
    } catch (error) {
      await liveStore.releaseEvents(claimed.map((c) => c.key), token).catch(() => undefined);
      log.error({ err: error }, "history lookup failed; the batch is answered retryable");
      throw unavailable("history storage", error);
    }
  }
}

function groupByKind(candidates: readonly Candidate[]): RowsByKind {
  const rows = emptyRowsByKind();
  for (const { value } of candidates) {
    switch (value.kind) {
      case "meter":
        rows.meter.push(value.row);
        break;
      case "vehicle":
        rows.vehicle.push(value.row);
        break;
      case "battery":
        rows.battery.push(value.row);
        break;
    }
  }
  return rows;
}

function liveStateUpdate(value: HistoryRow, receivedAtMs: number): LiveStateUpdate {
  const { device_id, event_id, observed_at, ...values } = value.row;
  return { deviceId: device_id, kind: value.kind, observedAtMs: observed_at, receivedAtMs, values: { event_id, ...values } };
}

async function storageCall<T>(what: string, log: Logger, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    log.error({ err: error }, `${what} failed; the batch is answered retryable`);
    throw unavailable(what, error);
  }
}

/**
 * A retryable failure carrying its retry delay both ways a client may look for it: the gRPC
 * retry pushback trailer and an HTTP-style Retry-After.
 */
export function unavailable(what: string, cause: unknown): ConnectError {
  return new ConnectError(
    `${what} is unavailable: resend the readings not yet confirmed in ${RETRY_DELAY_MS / 1000} s (those already stored will count as duplicates)`,
    Code.Unavailable,
    { "grpc-retry-pushback-ms": String(RETRY_DELAY_MS), "retry-after": String(Math.ceil(RETRY_DELAY_MS / 1000)) },
    undefined,
    cause,
  );
}
