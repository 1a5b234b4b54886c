// IngestService handlers: translate between the wire and the ingest engine, nothing more.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import {
  IngestReadingsResponseSchema,
  IngestService,
  RejectedReadingSchema,
  StreamReadingsResponseSchema,
  SyncReadingsResponseSchema,
  type IngestReadingsRequest,
  type StreamReadingsRequest,
  type SyncReadingsRequest,
  type SyncReadingsResponse,
} from "../../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import type { Reading } from "../../gen/wattstream/telemetry/v1/reading_pb.js";
import { addOutcome, emptyOutcome, type IngestEngine, type IngestOutcome, type ReadingRejection } from "../pipeline/ingest-engine.js";
import type { IngestMetrics } from "../observe/metrics.js";

export interface StreamLimits {
  /** Most readings per batch; a larger message is split, smaller ones arriving together merge. */
  readonly maxBatchReadings: number;
  /** Batches of one stream being stored at once; beyond it the stream is not read. */
  readonly maxBatchesInFlightPerStream: number;
}

export class IngestHandler implements ServiceImpl<typeof IngestService> {
  constructor(
    private readonly engine: IngestEngine,
    private readonly limits: StreamLimits,
    private readonly metrics: IngestMetrics,
  ) {}

  async streamReadings(requests: AsyncIterable<StreamReadingsRequest>, ctx: HandlerContext) {
    const total = emptyOutcome();
    await this.tracked("StreamReadings", () => this.ingestStream(requests, ctx.signal, (batch) => addOutcome(total, batch)));
    return create(StreamReadingsResponseSchema, toCounts(total));
  }

  async ingestReadings(request: IngestReadingsRequest, ctx: HandlerContext) {
    const total = emptyOutcome();
    await this.tracked("IngestReadings", () =>
      this.ingestStream(once(request.readings), ctx.signal, (batch) => addOutcome(total, batch)),
    );
    return create(IngestReadingsResponseSchema, toCounts(total));
  }

  /**
   * Acknowledgements flow back while the stream stays open: each settled batch, in stream order,
   * advances `acknowledged` and reports its rejections.
   */
  async *syncReadings(requests: AsyncIterable<SyncReadingsRequest>, ctx: HandlerContext): AsyncGenerator<SyncReadingsResponse> {
    const acks = new AckQueue();
    let acknowledged = 0;
    let accepted = 0;
    let duplicates = 0;
    const ingesting = this.tracked("SyncReadings", () =>
      this.ingestStream(requests, ctx.signal, (batch, count) => {
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
    yield* acks;
    await ingesting;
  }

  private async tracked(method: string, run: () => Promise<void>): Promise<void> {
    const stop = this.metrics.callSeconds.startTimer({ method });
    this.metrics.openStreams.inc({ method });
    try {
      await run();
      stop({ code: "ok" });
    } catch (error) {
      stop({ code: (error as { code?: unknown }).code !== undefined ? String((error as { code: unknown }).code) : "error" });
      throw error;
    } finally {
      this.metrics.openStreams.dec({ method });
    }
  }

  /**
   * Reads messages, merges those that arrive together (and splits large ones) into batches, and
   * keeps up to maxBatchesInFlightPerStream batches being stored while it reads on. Each batch's
   * outcome is reported in stream order. On the first failure it stops reading, lets the batches
   * already submitted settle (so their claims are resolved), and throws.
   */
  private async ingestStream(
    requests: AsyncIterable<{ readings: Reading[] }>,
    signal: AbortSignal,
    onSettled: (outcome: IngestOutcome, count: number) => void,
  ): Promise<void> {
    const { maxBatchReadings, maxBatchesInFlightPerStream } = this.limits;
    const inFlight: Submitted[] = [];
    let nextIndex = 0;
    let failure: unknown;
    // Wakes the read loop when a batch fails, so a device that holds its stream open (waiting for
    // acknowledgements) hears of the failure at once, not with its next message.
    let wakeOnFailure!: (value: typeof FAILED) => void;
    const failed = new Promise<typeof FAILED>((resolve) => (wakeOnFailure = resolve));

    // Reports settled batches from the front, so outcomes (and sync acknowledgements) keep
    // stream order; after a failure nothing later is reported, as nothing later is acknowledged.
    const reportSettled = () => {
      while (inFlight[0]?.settled) {
        const batch = inFlight.shift()!;
        if (batch.error !== undefined) {
          failure ??= batch.error;
          wakeOnFailure(FAILED);
        } else if (failure === undefined) onSettled(batch.outcome!, batch.count);
      }
    };
    const submit = async (readings: Reading[]) => {
      const { outcome } = await this.engine.submit(readings, nextIndex, { opening: nextIndex === 0, signal });
      nextIndex += readings.length;
      const batch: Submitted = { count: readings.length, settled: false, done: Promise.resolve() };
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
      while (inFlight.length >= maxBatchesInFlightPerStream && failure === undefined) await inFlight[0]!.done;
    };

    try {
      const iterator = requests[Symbol.asyncIterator]();
      let pending: Reading[] = [];
      let next = iterator.next();
      while (failure === undefined) {
        // Take every message that has already arrived; once none is waiting, store what we have.
        const result = await Promise.race(pending.length === 0 ? [next, failed] : [next, failed, nothingQueued()]);
        if (result === FAILED) break;
        if (result === NOTHING_QUEUED) {
          await submit(pending);
          pending = [];
          continue;
        }
        if (result.done) break;
        pending.push(...result.value.readings);
        next = iterator.next();
        while (pending.length >= maxBatchReadings && failure === undefined) await submit(pending.splice(0, maxBatchReadings));
      }
      if (pending.length > 0 && failure === undefined) await submit(pending);
    } catch (error) {
      failure ??= asInvalidArgumentIfUndecodable(error);
    }
    await Promise.all(inFlight.map((batch) => batch.done));
    if (failure !== undefined) throw failure;
  }
}

interface Submitted {
  readonly count: number;
  settled: boolean;
  outcome?: IngestOutcome;
  error?: unknown;
  done: Promise<void>;
}

/**
 * connect-es reports a stream message it cannot decode as INTERNAL ("parse binary: …"); for the
 * device it is a bad request, final, not a server fault. (A unary request is decoded before any
 * handler runs, so IngestReadings still answers INTERNAL.)
 */
function asInvalidArgumentIfUndecodable(error: unknown): unknown {
  if (error instanceof ConnectError && error.code === Code.Internal && error.rawMessage.startsWith("parse binary")) {
    return new ConnectError(`a message of the stream is not a valid request: ${error.rawMessage}`, Code.InvalidArgument);
  }
  return error;
}

const NOTHING_QUEUED = Symbol("nothing queued");
const FAILED = Symbol("a batch failed");

/** Resolves after the messages already received have been delivered to the reader. */
function nothingQueued(): Promise<typeof NOTHING_QUEUED> {
  return new Promise((resolve) => setImmediate(() => resolve(NOTHING_QUEUED)));
}

async function* once(readings: Reading[]): AsyncGenerator<{ readings: Reading[] }> {
  yield { readings };
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

/** A queue the sync handler yields from: acknowledgements pushed as batches settle. */
class AckQueue implements AsyncIterable<SyncReadingsResponse> {
  private readonly items: SyncReadingsResponse[] = [];
  private finished = false;
  private error: unknown;
  private wake: (() => void) | undefined;

  push(item: SyncReadingsResponse): void {
    this.items.push(item);
    this.notify();
  }

  end(): void {
    this.finished = true;
    this.notify();
  }

  fail(error: unknown): void {
    this.error = error;
    this.finished = true;
    this.notify();
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<SyncReadingsResponse> {
    for (;;) {
      while (this.items.length > 0) yield this.items.shift()!;
      if (this.finished) {
        if (this.error !== undefined) throw this.error;
        return;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
