// Micro-benchmarks of per-reading work the service's main thread does today and cheaper forms of
// it, on readings of the throughput bench's shape: protobuf-es decoding frames of 100 readings,
// re-encoding batches of 2,000 for the worker, the service's scan for the few fields the main
// thread needs (src/pipeline/received-reading.ts, which replaced the first two), and the
// crossing of the worker's per-device live-state updates to the main thread: as objects, as JSON,
// or packed as columns (what the service does). Prints µs per reading (or update).
// Run: node --import tsx bench/main-thread-costs.ts
import { MessageChannel, receiveMessageOnPort } from "node:worker_threads";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { IngestReadingsRequestSchema, StreamReadingsRequestSchema } from "../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import type { Reading } from "../gen/wattstream/telemetry/v1/reading_pb.js";
import { scanReadings, toProcessInput } from "../src/pipeline/received-reading.js";
import { packBatteryTrends } from "../src/process/battery-trends.js";
import { packLiveUpdates, unpackLiveUpdates, type LiveUpdate } from "../src/process/live-updates.js";
import { processBatch } from "../src/process/process-batch.js";
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

// The worker's live-state updates for one batch of 2,000 bench readings (a third of each kind), as
// processBatch makes them, crossing to the main thread three ways.
const batchReadings = frames.slice(0, 20).flatMap((frame) => scanReadings(frame).readings);
const batch = processBatch({
  ...toProcessInput(batchReadings),
  receivedAtMs: now,
  batteryTrends: packBatteryTrends([], []),
  window: { nowMs: now, maxReadingAgeMs: 30 * 86_400_000, maxClockSkewMs: 300_000 },
});
const updates = unpackLiveUpdates(batch.live, now, batchReadings).map(({ receivedAtMs: _, ...update }, i) => ({ ...update, offset: batch.live.offsets[i]! }) as LiveUpdate);
const n = updates.length;
// Many rounds each: pack and unpack are JavaScript, and must be measured once optimised.
const ROUNDS = 100;
time("structured clone of live-state updates as objects, per update", n * ROUNDS, () => {
  for (let i = 0; i < ROUNDS; i++) structuredClone(updates);
});
time("the updates as one JSON string: stringify, clone, parse, per update", n * ROUNDS, () => {
  for (let i = 0; i < ROUNDS; i++) JSON.parse(structuredClone(JSON.stringify(updates)));
});
time("the updates packed as columns (the service's packLiveUpdates), cloned, unpacked, per update", n * ROUNDS, () => {
  for (let i = 0; i < ROUNDS; i++) unpackLiveUpdates(structuredClone(packLiveUpdates(updates)), now, batchReadings);
});

// The same crossing over a MessagePort, as between the worker and the main thread, split by side:
// what the worker spends (packing, posting) and what the main thread spends (receiving, unpacking).
{
  const { port1, port2 } = new MessageChannel();
  const sides = { objects: { worker: 0, main: 0 }, packed: { worker: 0, main: 0 } };
  const rounds = 300;
  for (let round = 0; round < rounds; round++) {
    const warm = round >= 30;
    let started = performance.now();
    port1.postMessage(updates);
    let posted = performance.now();
    receiveMessageOnPort(port2);
    let received = performance.now();
    if (warm) {
      sides.objects.worker += posted - started;
      sides.objects.main += received - posted;
    }
    started = performance.now();
    port1.postMessage(packLiveUpdates(updates));
    posted = performance.now();
    unpackLiveUpdates(receiveMessageOnPort(port2)!.message as ReturnType<typeof packLiveUpdates>, now, batchReadings);
    received = performance.now();
    if (warm) {
      sides.packed.worker += posted - started;
      sides.packed.main += received - posted;
    }
  }
  port1.close();
  const perUpdate = (ms: number) => (((ms / (rounds - 30)) * 1000) / n).toFixed(3);
  for (const [form, side] of Object.entries(sides)) {
    console.log(`live-state updates as ${form} over a MessagePort, per update: worker ${perUpdate(side.worker)} µs, main thread ${perUpdate(side.main)} µs`);
  }
}
