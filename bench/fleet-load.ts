// The `fleet` load: many devices, each sending one reading per interval (time-compressed), one
// unary IngestReadings call per reading over a few shared HTTP/2 channels — what a large fleet of
// slow, independent devices looks like. Reports each reading's acknowledgement latency.
// `--client grpc-js` (the default) calls through @grpc/grpc-js as firmware teams' clients do;
// `--client http2` makes the same gRPC calls on Node's HTTP/2 client directly, at ~60 % of
// grpc-js's CPU per call, for when the load generator's own cost on the shared cores is what
// limits the run (docs/benchmarks.md).
//   node --import tsx bench/fleet-load.ts --target 127.0.0.1:8080 --devices 20000 --interval 60 --compress 10 --seconds 20
import http2 from "node:http2";
import net from "node:net";
import { parseArgs } from "node:util";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  IngestReadingsRequestSchema,
  IngestReadingsResponseSchema,
  type IngestReadingsResponse,
} from "../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { ENVELOPE_HEADER_BYTES, grpcEnvelope } from "./instant-ingest-server.js";
import { latencySummary } from "./latency.js";
import { deviceReading } from "./limit.js";

const { values } = parseArgs({
  options: {
    target: { type: "string", default: "127.0.0.1:8080" },
    // Distinguishes the event ids of separate runs against one service, so none is a duplicate.
    run: { type: "string", default: "r" },
    devices: { type: "string", default: "20000" },
    interval: { type: "string", default: "60" },
    compress: { type: "string", default: "10" },
    seconds: { type: "string", default: "20" },
    channels: { type: "string", default: "8" },
    client: { type: "string", default: "grpc-js" },
  },
});
if (values.client !== "grpc-js" && values.client !== "http2") throw new Error("--client must be grpc-js or http2");
const INGEST_PATH = "/wattstream.telemetry.v1.IngestService/IngestReadings";
/** A reading not acknowledged within 10 s counts as failed: the run must end on time. */
const DEADLINE_MS = 10_000;
const devices = Number(values.devices);
const periodMs = (Number(values.interval) * 1000) / Number(values.compress);
const seconds = Number(values.seconds);
const channels =
  values.client === "grpc-js"
    ? Array.from(
        { length: Number(values.channels) },
        // A distinct option per channel keeps grpc-js from sharing one subchannel between them.
        (_, i) => new grpc.Client(values.target!, grpc.credentials.createInsecure(), { "wattstream.channel": i }),
      )
    : [];
const portAt = values.target!.lastIndexOf(":");
const [host, port] = [values.target!.slice(0, portAt), Number(values.target!.slice(portAt + 1))];
const sessions =
  values.client === "http2"
    ? Array.from({ length: Number(values.channels) }, () => {
        // As grpc-js does: small messages go out at once.
        const session = http2.connect(`http://${values.target}`, { createConnection: () => net.connect({ host, port, noDelay: true }) });
        session.on("error", () => {});
        return session;
      })
    : [];

function reading(device: number, n: number): Buffer {
  const r = deviceReading(device, `${values.run}-${device}-${n}`, Date.now(), n);
  return Buffer.from(toBinary(IngestReadingsRequestSchema, create(IngestReadingsRequestSchema, { readings: [r] })));
}

function send(device: number, n: number): Promise<{ ok: boolean; latencyMs: number }> {
  return values.client === "grpc-js" ? sendGrpcJs(device, n) : sendHttp2(device, n);
}

function sendGrpcJs(device: number, n: number): Promise<{ ok: boolean; latencyMs: number }> {
  const started = performance.now();
  return new Promise((resolve) => {
    channels[device % channels.length]!.makeUnaryRequest<Buffer, IngestReadingsResponse>(
      INGEST_PATH,
      (b: Buffer) => b,
      (b: Buffer) => fromBinary(IngestReadingsResponseSchema, b),
      reading(device, n),
      new grpc.Metadata(),
      { deadline: Date.now() + DEADLINE_MS },
      (error, response) =>
        resolve({ ok: !error && response?.accepted === 1n, latencyMs: performance.now() - started }),
    );
  });
}

/** The same call as a gRPC client makes it: one HTTP/2 stream, the request in one envelope, the status in the trailers. */
function sendHttp2(device: number, n: number): Promise<{ ok: boolean; latencyMs: number }> {
  const started = performance.now();
  const body = grpcEnvelope(reading(device, n));
  return new Promise((resolve) => {
    let stream: http2.ClientHttp2Stream;
    try {
      stream = sessions[device % sessions.length]!.request({
        ":method": "POST",
        ":path": INGEST_PATH,
        "content-type": "application/grpc+proto",
        te: "trailers",
        "grpc-timeout": `${DEADLINE_MS}m`,
      });
    } catch {
      resolve({ ok: false, latencyMs: performance.now() - started });
      return;
    }
    const chunks: Buffer[] = [];
    let status: unknown;
    // A trailers-only answer (an error) carries its status in the headers.
    stream.once("response", (headers) => (status = headers["grpc-status"]));
    stream.once("trailers", (trailers) => (status = trailers["grpc-status"]));
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("error", () => {});
    const deadline = setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), DEADLINE_MS);
    stream.once("close", () => {
      clearTimeout(deadline);
      const response = Buffer.concat(chunks);
      let ok = false;
      if (status === "0" && response.length >= ENVELOPE_HEADER_BYTES) {
        try {
          const length = response.readUInt32BE(1);
          ok = fromBinary(IngestReadingsResponseSchema, response.subarray(ENVELOPE_HEADER_BYTES, ENVELOPE_HEADER_BYTES + length)).accepted === 1n;
        } catch {
          ok = false;
        }
      }
      resolve({ ok, latencyMs: performance.now() - started });
    });
    stream.end(body);
  });
}

// Each device's first reading falls at a random point of its first period, so load is even.
const cpuAtStart = process.cpuUsage();
const startAt = performance.now();
const nextDue = Array.from({ length: devices }, () => startAt + Math.random() * periodMs);
const sequence = new Array<number>(devices).fill(0);
const deadline = startAt + seconds * 1000;
const latencies: number[] = [];
let sent = 0;
let acknowledged = 0;
let failed = 0;
const pending = new Set<Promise<void>>();

// Devices sorted by due time would be a heap; a 5 ms sweep over 20k entries is cheap enough.
while (performance.now() < deadline) {
  const now = performance.now();
  for (let d = 0; d < devices; d++) {
    if (nextDue[d]! > now) continue;
    nextDue[d]! += periodMs;
    sent++;
    const p = send(d, sequence[d]!++).then((result) => {
      if (result.ok) acknowledged++;
      else failed++;
      // A failed reading counts too, at the time it failed (its deadline when it timed out):
      // leaving it out would make the tail look better the worse it is.
      latencies.push(result.latencyMs);
      pending.delete(p);
    });
    pending.add(p);
  }
  await new Promise((resolve) => setTimeout(resolve, 5));
}
await Promise.all(pending);
const elapsedS = (performance.now() - startAt) / 1000;
const cpu = process.cpuUsage(cpuAtStart);
for (const channel of channels) channel.close();
for (const session of sessions) session.close();
console.log(
  JSON.stringify({
    sent,
    accepted: acknowledged,
    errors: failed,
    elapsed_s: elapsedS,
    readings_per_second: acknowledged / elapsedS,
    call_latency_ms: latencySummary(latencies),
    cpu_seconds: (cpu.user + cpu.system) / 1e6,
  }),
);
