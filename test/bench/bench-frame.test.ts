// The throughput load generator writes its frames field by field (benchFrame) instead of building
// and encoding messages: the service must receive the very bytes protobuf-es would have sent, or
// the benchmark would measure different readings than it says.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { StreamReadingsRequestSchema } from "../../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { benchFrame, benchReading } from "../../bench/limit.js";

const encoded = (first: number, count: number, devices: number, nowMs: number, prefix: string) =>
  toBinary(StreamReadingsRequestSchema, create(StreamReadingsRequestSchema, { readings: Array.from({ length: count }, (_, i) => benchReading(first + i, devices, nowMs, prefix)) }));

describe("benchFrame", () => {
  it("writes the bytes encoding benchReading's messages gives", () => {
    // A whole second as now, so that some readings fall on one (no nanos); sequences crossing
    // multiples of 100 (a zero state of charge) and 1,000, and the device count wrapping around.
    for (const [first, count, devices, nowMs] of [
      [0, 100, 20_000, 1_764_000_000_000],
      [19_950, 100, 20_000, 1_764_000_000_123],
      [123_456, 1_000, 7, 1_764_000_000_999],
      [5, 1, 1, 1_000],
    ] as const) {
      expect(Buffer.from(benchFrame(first, count, devices, nowMs, "r-w3"))).toEqual(Buffer.from(encoded(first, count, devices, nowMs, "r-w3")));
    }
  });

  it("holds every reading, each with its own event id", () => {
    const frame = fromBinary(StreamReadingsRequestSchema, benchFrame(400, 100, 20_000, Date.now(), "x"));
    expect(frame.readings).toHaveLength(100);
    expect(new Set(frame.readings.map((r) => r.eventId)).size).toBe(100);
    expect(new Set(frame.readings.map((r) => r.sample.case))).toEqual(new Set(["meter", "vehicle", "battery"]));
  });
});
