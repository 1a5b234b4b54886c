// A load generator for the ingest path, run as its own process so its CPU is not the service's:
// N concurrent StreamReadings calls over @grpc/grpc-js, each sending frames of readings as fast as
// the service takes them, for a fixed time. Prints one JSON line of what it saw.
//   node --import tsx bench/load-generator.ts --target 127.0.0.1:8080 --streams 8 --seconds 20
import { parseArgs } from "node:util";
import { fromBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { StreamReadingsResponseSchema, type StreamReadingsResponse } from "../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { latencySummary } from "./latency.js";
import { benchFrame } from "./limit.js";

const { values } = parseArgs({
  options: {
    target: { type: "string", default: "127.0.0.1:8080" },
    // Distinguishes the event ids of separate runs against one service, so none is a duplicate.
    run: { type: "string", default: "r" },
    streams: { type: "string", default: "8" },
    seconds: { type: "string", default: "20" },
    frame: { type: "string", default: "100" },
    "frames-per-call": { type: "string", default: "50" },
    devices: { type: "string", default: "20000" },
    worker: { type: "string", default: "0" },
  },
});
const streams = Number(values.streams);
const seconds = Number(values.seconds);
const frameSize = Number(values.frame);
const framesPerCall = Number(values["frames-per-call"]);
const devices = Number(values.devices);
const workerId = Number(values.worker);

// Messages are encoded once per call, outside the timing of the call itself.
const serialize = (bytes: Buffer) => bytes;
const client = new grpc.Client(values.target!, grpc.credentials.createInsecure(), {
  "grpc.max_send_message_length": 64 * 1024 * 1024,
});

let sequence = 0;
function frame(): Buffer {
  const bytes = benchFrame(sequence, frameSize, devices, Date.now(), `${values.run}-w${workerId}`);
  sequence += frameSize;
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function call(): Promise<{ response: StreamReadingsResponse; latencyMs: number; sent: number }> {
  return new Promise((resolve, reject) => {
    const frames = Array.from({ length: framesPerCall }, frame);
    const started = performance.now();
    const stream = client.makeClientStreamRequest<Buffer, StreamReadingsResponse>(
      "/wattstream.telemetry.v1.IngestService/StreamReadings",
      serialize,
      (bytes: Buffer) => fromBinary(StreamReadingsResponseSchema, bytes),
      (error, response) =>
        error ? reject(error) : resolve({ response: response!, latencyMs: performance.now() - started, sent: frameSize * framesPerCall }),
    );
    for (const bytes of frames) stream.write(bytes);
    stream.end();
  });
}

const deadline = Date.now() + seconds * 1000;
const latencies: number[] = [];
let sent = 0;
let accepted = 0;
let duplicates = 0;
let rejected = 0;
let errors = 0;
const started = performance.now();
const cpuAtStart = process.cpuUsage();
await Promise.all(
  Array.from({ length: streams }, async () => {
    while (Date.now() < deadline) {
      const callStarted = performance.now();
      try {
        const result = await call();
        sent += result.sent;
        accepted += Number(result.response.accepted);
        duplicates += Number(result.response.duplicates);
        rejected += result.response.rejected.length;
        latencies.push(result.latencyMs);
      } catch {
        // A failed call counts in the latencies too, at the time it failed: leaving it out
        // would make the tail look better the worse it is.
        latencies.push(performance.now() - callStarted);
        errors++;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  }),
);
const elapsedS = (performance.now() - started) / 1000;
const cpu = process.cpuUsage(cpuAtStart);
client.close();
console.log(
  JSON.stringify({
    sent,
    accepted,
    duplicates,
    rejected,
    errors,
    elapsed_s: elapsedS,
    readings_per_second: accepted / elapsedS,
    // This process's own CPU over the run: it shares the machine with the service.
    cpu_seconds: (cpu.user + cpu.system) / 1e6,
    call_latency_ms: latencySummary(latencies),
  }),
);
