// IngestService handlers: translate between the wire and the ingest engine, nothing more.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  IngestReadingsResponseSchema,
  IngestService,
  RejectedReadingSchema,
  RejectReason,
  StreamReadingsResponseSchema,
  SyncReadingsResponseSchema,
  type IngestReadingsRequest,
  type StreamReadingsRequest,
  type SyncReadingsRequest,
  type SyncReadingsResponse,
} from "../../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import type { Reading } from "../../gen/wattstream/telemetry/v1/reading_pb.js";
import { eventIdentity } from "../process/history-rows.js";
import { receivedFrom, type ReceivedReading } from "../pipeline/received-reading.js";
import type { Authenticator } from "../auth/authenticator.js";
import { principalKey, type Principal } from "../auth/principal.js";
import type { CallLimits } from "../config.js";
import type { DeviceRateLimit } from "../pipeline/device-rate-limit.js";
import { addOutcome, emptyOutcome, type IngestEngine, type IngestOutcome, type ReadingRejection } from "../pipeline/ingest-engine.js";
import type { IngestMetrics } from "../observe/metrics.js";
import { AckQueue } from "./ack-queue.js";
import { FAILED, NOTHING_QUEUED, ReadLoopEvents } from "./read-loop-events.js";

export interface StreamLimits extends CallLimits {
  /** Most readings per batch; a larger message is split, smaller ones arriving together merge. */
  readonly maxBatchReadings: number;
  /** Batches of one stream being stored at once; beyond it the stream is not read. */
  readonly maxBatchesInFlightPerStream: number;
}

export interface IngestHandlerDeps {
  readonly engine: IngestEngine;
  readonly limits: StreamLimits;
  readonly metrics: IngestMetrics;
  readonly rateLimit: DeviceRateLimit;
  /** Unset when authentication is off. */
  readonly authenticator: Authenticator | undefined;
}

export class IngestHandler implements ServiceImpl<typeof IngestService> {
  private readonly engine: IngestEngine;
  private readonly limits: StreamLimits;
  private readonly metrics: IngestMetrics;
  /** Open ingest calls per authenticated device. */
  private readonly openCallsByDevice = new Map<string, number>();

  constructor(private readonly deps: IngestHandlerDeps) {
    ({ engine: this.engine, limits: this.limits, metrics: this.metrics } = deps);
  }

  async streamReadings(requests: AsyncIterable<StreamReadingsRequest>, ctx: HandlerContext) {
    return this.streamReceived(received(requests), ctx);
  }

  /** StreamReadings from messages already scanned (the lean gRPC path). */
  async streamReceived(requests: AsyncIterable<ReceivedMessage>, ctx: HandlerContext) {
    const total = emptyOutcome();
    await this.tracked("StreamReadings", ctx, () => this.ingestStream(requests, ctx, (batch) => addOutcome(total, batch)));
    return create(StreamReadingsResponseSchema, toCounts(total));
  }

  async ingestReadings(request: IngestReadingsRequest, ctx: HandlerContext) {
    return this.ingestReceived({ readings: request.readings.map(receivedFrom) }, ctx);
  }

  /** IngestReadings from a message already scanned (the lean gRPC path). */
  async ingestReceived(request: ReceivedMessage, ctx: HandlerContext) {
    const total = emptyOutcome();
    const onSettled = (batch: IngestOutcome) => addOutcome(total, batch);
    await this.tracked("IngestReadings", ctx, () =>
      request.readings.length <= this.limits.maxBatchReadings
        ? this.ingestOneBatch(request.readings, ctx, onSettled)
        : this.ingestStream(once(request), ctx, onSettled),
    );
    return create(IngestReadingsResponseSchema, toCounts(total));
  }

  syncReadings(requests: AsyncIterable<SyncReadingsRequest>, ctx: HandlerContext): AsyncIterable<SyncReadingsResponse> {
    return this.syncReceived(received(requests), ctx);
  }

  /**
   * SyncReadings from messages already scanned (the lean gRPC path). Acknowledgements flow back
   * while the stream stays open: each settled batch, in stream order, advances `acknowledged` and
   * reports its rejections.
   */
  syncReceived(requests: AsyncIterable<ReceivedMessage>, ctx: HandlerContext): AsyncIterable<SyncReadingsResponse> {
    const acks = new AckQueue<SyncReadingsResponse>();
    let acknowledged = 0;
    let accepted = 0;
    let duplicates = 0;
    // The queue ends once every batch has settled (or fails with the stream's error).
    void this.tracked("SyncReadings", ctx, () =>
      this.ingestStream(requests, ctx, (batch, count) => {
        acknowledged += count;
        accepted += batch.accepted;
        duplicates += batch.duplicates;
        acks.push(
          create(SyncReadingsResponseSchema, {
            acknowledged: BigInt(acknowledged),
            accepted: BigInt(accepted),
            duplicates: BigInt(duplicates),
            rejected: batch.rejected.map(toRejected),
          }),
        );
      }),
    ).then(
      () => acks.end(),
      (error: unknown) => acks.fail(error),
    );
    return acks;
  }

  private async tracked(method: string, ctx: HandlerContext, run: () => Promise<void>): Promise<void> {
    const stop = this.metrics.callSeconds.startTimer({ method });
    this.metrics.openStreams.inc({ method });
    const principal = ctx.values.get(principalKey);
    const device = principal.kind === "device" ? principal.deviceId : undefined;
    try {
      if (device !== undefined) this.openCall(device);
      try {
        await run();
      } finally {
        if (device !== undefined) this.closeCall(device);
      }
      stop({ code: "ok" });
    } catch (error) {
      stop({ code: (error as { code?: unknown }).code !== undefined ? String((error as { code: unknown }).code) : "error" });
      throw error;
    } finally {
      this.metrics.openStreams.dec({ method });
    }
  }

  /** Counts a device's open call; refuses one beyond MAX_STREAMS_PER_DEVICE. */
  private openCall(device: string): void {
    const open = this.openCallsByDevice.get(device) ?? 0;
    if (open >= this.limits.maxStreamsPerDevice) {
      this.metrics.refusedCalls.inc({ reason: "device_streams" });
      throw new ConnectError(
        `device ${device} already has ${open} ingest calls open (at most ${this.limits.maxStreamsPerDevice}); send on one of them`,
        Code.ResourceExhausted,
      );
    }
    this.openCallsByDevice.set(device, open + 1);
  }

  private closeCall(device: string): void {
    const open = this.openCallsByDevice.get(device)! - 1;
    if (open === 0) this.openCallsByDevice.delete(device);
    else this.openCallsByDevice.set(device, open);
  }

  /**
   * What every batch passes before it is stored: the caller's credential still valid (a revoked
   * device's open stream stops at its next batch), only its own device's readings (others are
   * rejected PERMISSION_DENIED, per reading), and each device within its rate. Answers the
   * readings to store with their call-wide indexes, and the rejections.
   */
  private admit(principal: Principal, readings: ReceivedReading[], firstIndex: number): Admitted {
    const { authenticator, rateLimit } = this.deps;
    if (authenticator !== undefined && !authenticator.isStillValid(principal)) {
      throw new ConnectError("the credential was revoked while the call was open", Code.Unauthenticated);
    }
    let own = readings;
    let positions: number[] | undefined;
    const refused: ReadingRejection[] = [];
    if (principal.kind === "device" && readings.some((r) => r.deviceId !== principal.deviceId)) {
      own = [];
      positions = [];
      readings.forEach((reading, offset) => {
        if (reading.deviceId === principal.deviceId) {
          own.push(reading);
          positions!.push(firstIndex + offset);
        } else {
          refused.push({
            index: firstIndex + offset,
            eventId: reading.eventId,
            reason: RejectReason.PERMISSION_DENIED,
            message: `authenticated as device ${principal.deviceId}; may not write readings of device ${JSON.stringify(reading.deviceId)}`,
            retryable: false,
          });
        }
      });
    }
    let charged: readonly ReceivedReading[] | undefined;
    if (rateLimit.enabled && (own.length > 0 || refused.length > 0)) {
      // Readings refused as another device's are the caller's too: checking them is work done for
      // it, and free they would let a device past its limit. Not refunded if the batch fails.
      const refusedOwn = principal.kind === "device" && refused.length > 0 ? { deviceId: principal.deviceId, count: refused.length } : undefined;
      const waitMs = rateLimit.take(own, refusedOwn);
      if (waitMs > 0) {
        this.metrics.refusedCalls.inc({ reason: "device_rate" });
        throw new ConnectError(
          `a device sent more than ${this.limits.deviceReadingsPerSecond} readings per second (burst ${this.limits.deviceBurstReadings}, DEVICE_RATE_LIMIT): resend the readings not yet confirmed in ${(waitMs / 1000).toFixed(1)} s`,
          Code.ResourceExhausted,
          { "grpc-retry-pushback-ms": String(waitMs), "retry-after": String(Math.ceil(waitMs / 1000)) },
        );
      }
      charged = own;
    }
    return { own, positions, refused, charged };
  }

  /**
   * Admits a batch and hands it to the engine; resolves once it is admitted, with its outcome to
   * come (readings refused before storing put back at their call-wide indexes). A batch the
   * service itself refuses or fails to store is given back to the device's rate: the resend it
   * must make is not the device's excess.
   */
  private async submitBatch(
    principal: Principal,
    readings: ReceivedReading[],
    firstIndex: number,
    signal: AbortSignal,
  ): Promise<{ readonly outcome: Promise<IngestOutcome> }> {
    const { own, positions, refused, charged } = this.admit(principal, readings, firstIndex);
    const refund = () => charged !== undefined && this.deps.rateLimit.refund(charged);
    let submitted: Awaited<ReturnType<IngestEngine["submit"]>>;
    try {
      submitted = await this.engine.submit(own, positions === undefined ? firstIndex : 0, { opening: firstIndex === 0, signal });
    } catch (error) {
      refund();
      throw error;
    }
    submitted.outcome.catch(refund);
    // (Wrapped, as the engine's: a promise resolved with a promise would wait for the inner one.)
    return { outcome: positions === undefined ? submitted.outcome : submitted.outcome.then((o) => withRefused(o, positions, refused)) };
  }

  /**
   * A call of one message that fits one batch — nearly every IngestReadings — answered as
   * ingestStream answers it, without the stream's read loop, timers and ordering of batches, which
   * one batch needs none of (~9 % of the main thread's CPU per call at 1,300 unary calls a
   * second; docs/benchmarks.md).
   */
  private async ingestOneBatch(readings: ReceivedReading[], ctx: HandlerContext, onSettled: (outcome: IngestOutcome, count: number) => void): Promise<void> {
    if (readings.length > this.limits.maxReadingsPerMessage) throw tooManyReadings(readings.length, this.limits.maxReadingsPerMessage);
    if (readings.length === 0) return;
    const outcome = await (await this.submitBatch(ctx.values.get(principalKey), readings, 0, ctx.signal)).outcome;
    this.metrics.countOutcome(outcome);
    onSettled(outcome, readings.length);
  }

  /**
   * Reads messages, merges those that arrive together (and splits large ones) into batches, and
   * keeps up to maxBatchesInFlightPerStream batches being stored while it reads on. Each batch's
   * outcome is reported in stream order. On the first failure it stops reading, lets the batches
   * already submitted settle (so their claims are resolved), and throws.
   */
  private async ingestStream(
    requests: AsyncIterable<ReceivedMessage>,
    ctx: HandlerContext,
    onSettled: (outcome: IngestOutcome, count: number) => void,
  ): Promise<void> {
    const { maxBatchReadings, maxBatchesInFlightPerStream, maxReadingsPerMessage } = this.limits;
    const { signal } = ctx;
    const principal = ctx.values.get(principalKey);
    const inFlight: Submitted[] = [];
    let nextIndex = 0;
    let failure: unknown;
    // What the loop below waits for: the next message, the end of the turn while readings wait to
    // be submitted, or a failure (a batch's, or the stream's timers'), so that a device holding its
    // stream open for acknowledgements hears of a failure at once, not with its next message.
    const events = new ReadLoopEvents(requests[Symbol.asyncIterator]());

    // Reports settled batches from the front, so outcomes (and sync acknowledgements) keep
    // stream order; after a failure nothing later is reported, as nothing later is acknowledged.
    // Readings are counted in the metrics as they are answered.
    const reportSettled = () => {
      while (inFlight[0]?.settled) {
        const batch = inFlight[0];
        const waiting = inFlightIdentities(batch);
        // Only a reading answered in flight looks at the later batches.
        const later = waiting.size === 0 ? [] : inFlight.slice(1);
        if (waitsForLaterBatches(waiting, later)) return;
        inFlight.shift();
        if (batch.error !== undefined) {
          failure ??= batch.error;
          events.fail();
        } else if (failure === undefined) {
          const outcome = withRepeatsInOtherBatches(batch, waiting, later);
          this.metrics.countOutcome(outcome);
          onSettled(outcome, batch.count);
        }
        batch.concurrent = [];
      }
    };
    const submit = async (readings: ReceivedReading[]) => {
      const firstIndex = nextIndex;
      nextIndex += readings.length;
      const { outcome } = await this.submitBatch(principal, readings, firstIndex, signal);
      const batch: Submitted = { count: readings.length, readings, firstIndex, concurrent: inFlight.slice(), settled: false, done: Promise.resolve() };
      batch.done = outcome
        .then(
          (value) => void (batch.outcome = value),
          (error: unknown) => void (batch.error = error),
        )
        .finally(() => {
          batch.settled = true;
          reportSettled();
        });
      inFlight.push(batch);
      // The front batch may have settled and wait (unreported) for a later one: wait for a batch
      // still being stored, which there then is.
      while (inFlight.length >= maxBatchesInFlightPerStream && failure === undefined) await inFlight.find((b) => !b.settled)!.done;
    };

    const timers = new StreamTimers(this.limits, () => inFlight.length > 0, (error) => {
      failure ??= error;
      events.fail();
    });
    try {
      let pending: ReceivedReading[] = [];
      events.readNext();
      while (failure === undefined) {
        // Take every message that has already arrived; once none is waiting, store what we have.
        const result = await events.next(pending.length > 0);
        if (result === FAILED) break;
        if (result === NOTHING_QUEUED) {
          await submit(pending);
          pending = [];
          continue;
        }
        if (result.done) break;
        timers.messageReceived();
        if (result.value.readings.length > maxReadingsPerMessage) throw tooManyReadings(result.value.readings.length, maxReadingsPerMessage);
        pending.push(...result.value.readings);
        events.readNext();
        while (pending.length >= maxBatchReadings && failure === undefined) await submit(pending.splice(0, maxBatchReadings));
      }
      if (pending.length > 0 && failure === undefined) await submit(pending);
    } catch (error) {
      failure ??= asInvalidArgumentIfUndecodable(error);
    } finally {
      timers.clear();
    }
    await Promise.all(inFlight.map((batch) => batch.done));
    if (failure !== undefined) throw failure;
  }
}

/** A request message's readings, as the engine holds them. */
export interface ReceivedMessage {
  readonly readings: ReceivedReading[];
}

interface Admitted {
  /** The readings to store (all of them unless some were another device's). */
  readonly own: ReceivedReading[];
  /** Call-wide index of each of `own`, when some readings were taken out. */
  readonly positions: number[] | undefined;
  /** Readings refused before storing, at their call-wide indexes. */
  readonly refused: ReadingRejection[];
  /** What was taken from the devices' rate buckets. */
  readonly charged: readonly ReceivedReading[] | undefined;
}

/** A batch's outcome with the readings refused before storing put back in, at call-wide indexes. */
function withRefused(outcome: IngestOutcome, positions: readonly number[], refused: readonly ReadingRejection[]): IngestOutcome {
  const rejected = [...refused, ...outcome.rejected.map((r) => ({ ...r, index: positions[r.index]! }))];
  rejected.sort((a, b) => a.index - b.index);
  return { accepted: outcome.accepted, duplicates: outcome.duplicates, rejected };
}

/**
 * A stream's two clocks: its whole life (MAX_STREAM_DURATION) and the time since its last message
 * while nothing of it is being stored (STREAM_IDLE_TIMEOUT) — an abandoned or trickling stream
 * must not hold a slot forever. Either ends the stream; 0 turns a clock off.
 */
class StreamTimers {
  private readonly lifetime: NodeJS.Timeout | undefined;
  private readonly idle: NodeJS.Timeout | undefined;

  constructor(limits: CallLimits, busy: () => boolean, end: (error: ConnectError) => void) {
    if (limits.maxStreamDurationMs > 0) {
      this.lifetime = setTimeout(() => {
        end(
          new ConnectError(
            `the stream reached its longest life (MAX_STREAM_DURATION, ${limits.maxStreamDurationMs} ms): open a new one and resend what was not confirmed`,
            Code.Unavailable,
            { "grpc-retry-pushback-ms": "0", "retry-after": "0" },
          ),
        );
      }, limits.maxStreamDurationMs);
    }
    if (limits.streamIdleTimeoutMs > 0) {
      const idle: NodeJS.Timeout = setTimeout(() => {
        if (busy()) idle.refresh();
        else end(new ConnectError(`no message for ${limits.streamIdleTimeoutMs} ms (STREAM_IDLE_TIMEOUT): the stream is closed`, Code.DeadlineExceeded));
      }, limits.streamIdleTimeoutMs);
      this.idle = idle;
    }
  }

  messageReceived(): void {
    this.idle?.refresh();
  }

  clear(): void {
    clearTimeout(this.lifetime);
    clearTimeout(this.idle);
  }
}

interface Submitted {
  readonly count: number;
  /** The batch's readings and the call-wide index of its first. */
  readonly readings: readonly ReceivedReading[];
  readonly firstIndex: number;
  /**
   * The call's batches still being stored when this one was submitted; emptied once it is
   * reported, so a long stream does not keep a chain of every batch it ever sent.
   */
  concurrent: readonly Submitted[];
  settled: boolean;
  outcome?: IngestOutcome;
  error?: unknown;
  done: Promise<void>;
}

/** The identities of a batch's readings answered in flight: its own call may be storing them. */
function inFlightIdentities(batch: Submitted): Set<string> {
  const identities = new Set<string>();
  for (const r of batch.outcome?.rejected ?? []) {
    const reading = r.reason === RejectReason.IN_FLIGHT ? batch.readings[r.index - batch.firstIndex] : undefined;
    if (reading !== undefined) identities.add(eventIdentity(reading.deviceId, reading.eventId));
  }
  return identities;
}

/**
 * Whether the front batch, settled, must wait before it is reported: a reading it was answered in
 * flight for is also in a later batch of the stream that is still being stored. Batches claim as
 * the worker finishes them, so a small later batch can claim a repeated reading before a large
 * earlier one; once it has settled the earlier one's answer can say whether the call stored it.
 */
function waitsForLaterBatches(waiting: ReadonlySet<string>, later: readonly Submitted[]): boolean {
  if (waiting.size === 0) return false;
  return later.some((batch) => !batch.settled && batch.readings.some((r) => waiting.has(eventIdentity(r.deviceId, r.eventId))));
}

/**
 * The batch's outcome, with a reading its own call stored in another batch counted as the
 * duplicate it is. The engine, which sees batches one by one, answered it in flight (the claim was
 * the other batch's): an earlier batch of the stream in flight at the same time (settled by now,
 * as outcomes are reported in stream order), or a later one that claimed first and has settled
 * (see waitsForLaterBatches). Costs nothing unless something was in flight.
 */
function withRepeatsInOtherBatches(batch: Submitted, waiting: ReadonlySet<string>, later: readonly Submitted[]): IngestOutcome {
  const outcome = batch.outcome!;
  if (waiting.size === 0) return outcome;
  const storedElsewhere = new Set<string>();
  for (const other of [...batch.concurrent, ...later]) {
    if (other.outcome === undefined) continue;
    const notStored = new Set(other.outcome.rejected.map((r) => r.index));
    other.readings.forEach((reading, i) => {
      const identity = eventIdentity(reading.deviceId, reading.eventId);
      if (waiting.has(identity) && !notStored.has(other.firstIndex + i)) storedElsewhere.add(identity);
    });
  }
  let duplicates = outcome.duplicates;
  const rejected = outcome.rejected.filter((r) => {
    const reading = batch.readings[r.index - batch.firstIndex];
    const repeat = r.reason === RejectReason.IN_FLIGHT && reading !== undefined && storedElsewhere.has(eventIdentity(reading.deviceId, reading.eventId));
    if (repeat) duplicates++;
    return !repeat;
  });
  return { accepted: outcome.accepted, duplicates, rejected };
}

/**
 * connect-es reports a stream message it cannot decode as INTERNAL ("parse binary: …"); for the
 * device it is a bad request, final, not a server fault. (A unary request that does not read is
 * refused before any handler runs, so IngestReadings still answers INTERNAL for it.)
 */
function asInvalidArgumentIfUndecodable(error: unknown): unknown {
  if (error instanceof ConnectError && error.code === Code.Internal && error.rawMessage.startsWith("parse binary")) {
    return new ConnectError(`a message of the stream is not a valid request: ${error.rawMessage}`, Code.InvalidArgument);
  }
  return error;
}

function tooManyReadings(count: number, maxReadingsPerMessage: number): ConnectError {
  return new ConnectError(`a message carries ${count} readings; at most ${maxReadingsPerMessage} per message (MAX_READINGS_PER_MESSAGE): split it`, Code.InvalidArgument);
}

async function* once(message: ReceivedMessage): AsyncGenerator<ReceivedMessage> {
  yield message;
}

/** Messages connect decoded, as the engine holds them. */
async function* received(requests: AsyncIterable<{ readings: Reading[] }>): AsyncGenerator<ReceivedMessage> {
  for await (const request of requests) yield { readings: request.readings.map(receivedFrom) };
}

function toCounts(outcome: IngestOutcome) {
  return {
    accepted: BigInt(outcome.accepted),
    duplicates: BigInt(outcome.duplicates),
    rejected: outcome.rejected.map(toRejected),
  };
}

function toRejected(r: ReadingRejection) {
  return create(RejectedReadingSchema, {
    index: r.index,
    eventId: r.eventId,
    reason: r.reason,
    message: r.message,
    retryable: r.retryable,
  });
}
