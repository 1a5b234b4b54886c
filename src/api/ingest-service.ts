// IngestService handlers: translate between the wire and the ingest pipeline, nothing more.
import { create } from "@bufbuild/protobuf";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import {
  IngestReadingsResponseSchema,
  IngestService,
  RejectedReadingSchema,
  StreamReadingsResponseSchema,
  type IngestReadingsRequest,
  type StreamReadingsRequest,
} from "../../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import type { Reading } from "../../gen/wattstream/telemetry/v1/reading_pb.js";
import { addOutcome, emptyOutcome, type IngestOutcome, type IngestPipeline } from "../pipeline/ingest-pipeline.js";

export class IngestHandler implements ServiceImpl<typeof IngestService> {
  constructor(
    private readonly pipeline: IngestPipeline,
    /** Readings of one call stored together; a larger stream or message is stored in slices. */
    private readonly maxBatchReadings: number,
  ) {}

  async streamReadings(requests: AsyncIterable<StreamReadingsRequest>, ctx: HandlerContext) {
    const total = emptyOutcome();
    let pending: Reading[] = [];
    let firstIndex = 0;
    for await (const request of requests) {
      ctx.signal.throwIfAborted();
      pending.push(...request.readings);
      while (pending.length >= this.maxBatchReadings) {
        const batch = pending.slice(0, this.maxBatchReadings);
        pending = pending.slice(this.maxBatchReadings);
        addOutcome(total, await this.pipeline.ingest(batch, firstIndex));
        firstIndex += batch.length;
      }
    }
    if (pending.length > 0) addOutcome(total, await this.pipeline.ingest(pending, firstIndex));
    return create(StreamReadingsResponseSchema, toResponse(total));
  }

  async ingestReadings(request: IngestReadingsRequest) {
    const total = emptyOutcome();
    for (let start = 0; start < request.readings.length; start += this.maxBatchReadings) {
      const batch = request.readings.slice(start, start + this.maxBatchReadings);
      addOutcome(total, await this.pipeline.ingest(batch, start));
    }
    return create(IngestReadingsResponseSchema, toResponse(total));
  }
}

function toResponse(outcome: IngestOutcome) {
  return {
    accepted: BigInt(outcome.accepted),
    duplicates: BigInt(outcome.duplicates),
    rejected: outcome.rejected.map((r) =>
      create(RejectedReadingSchema, {
        index: r.index,
        eventId: r.eventId,
        reason: r.reason,
        message: r.message,
        retryable: r.retryable,
      }),
    ),
  };
}
