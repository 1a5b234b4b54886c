// Micro-benchmarks of per-reading work the service's main thread does today and cheaper forms of
// it, on readings of the throughput bench's shape: protobuf-es decoding frames of 100 readings,
// re-encoding batches of 2,000 for the worker, the service's scan for the few fields the main
// thread needs (src/pipeline/received-reading.ts, which replaced the first two), and the
// structured clone of the worker's per-device live-state updates as objects or with their values
// as JSON strings. Prints µs per reading (or update).
// Run: node --import tsx bench/main-thread-costs.ts
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { IngestReadingsRequestSchema, StreamReadingsRequestSchema } from "../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import type { Reading } from "../gen/wattstream/telemetry/v1/reading_pb.js";
import { scanReadings, toProcessInput } from "../src/pipeline/received-reading.js";
import { benchReading } from "./limit.js";

const FRAMES = 2_000;
const PER_FRAME = 100;
const READINGS = FRAMES * PER_FRAME;

function time(name: string, units: number, run: () => void): void {
  run();
  const started = performance.now();
  for (let i = 0; i < 3; i++) run();
  console.log(`${name}: ${(((performance.now() - started) / 3 / units) * 1000).toFixed(3)} µs`);
}

const now = Date.now();
let sequence = 0;
const frames = Array.from({ length: FRAMES }, () =>
  toBinary(
    StreamReadingsRequestSchema,
    create(StreamReadingsRequestSchema, { readings: Array.from({ length: PER_FRAME }, () => benchReading(sequence++, 20_000, now, "run-abc-w0")) }),
  ),
);
let decoded: Reading[] = [];
time("decode frames (protobuf-es), per reading", READINGS, () => {
  decoded = frames.flatMap((frame) => fromBinary(StreamReadingsRequestSchema, frame).readings);
});
time("re-encode batches of 2,000 for the worker, per reading", READINGS, () => {
  for (let i = 0; i < decoded.length; i += 2_000) {
    toBinary(IngestReadingsRequestSchema, create(IngestReadingsRequestSchema, { readings: decoded.slice(i, i + 2_000) }));
  }
});
time("scan frames for ids, time and kind, and join them for the worker (the service's own code), per reading", READINGS, () => {
  for (let i = 0; i < frames.length; i += 20) toProcessInput(frames.slice(i, i + 20).flatMap((frame) => scanReadings(frame).readings));
});

const updates = Array.from({ length: 2_000 }, (_, i) => ({
  deviceId: `bbu-${i}`,
  kind: "battery",
  observedAtMs: now + i,
  values: { event_id: `run-abc-w0-${i}`, voltage: 48.1, temperature: 30, error_codes: [], health_score: 87.5, health_level: 1, recommendation: "ok", score_version: "battery-health/2" },
  trend: { ewmaVoltage: 48.1, ewmaTemp: 30, lastMs: now, samples: 12 },
}));
const asJson = updates.map((u) => ({ ...u, values: JSON.stringify(u.values), trend: JSON.stringify(u.trend) }));
time("structured clone of live-state updates as objects, per update", 2_000 * 3, () => {
  for (let i = 0; i < 3; i++) structuredClone(updates);
});
time("values and trend to JSON strings, per update", 2_000 * 3, () => {
  for (let i = 0; i < 3; i++) updates.map((u) => ({ ...u, values: JSON.stringify(u.values), trend: JSON.stringify(u.trend) }));
});
time("structured clone of live-state updates with JSON strings, per update", 2_000 * 3, () => {
  for (let i = 0; i < 3; i++) structuredClone(asJson);
});
