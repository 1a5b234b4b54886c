// The `connections` load: as many concurrent long-lived SyncReadings streams (the firmware's
// hours-long bidi stream) as the service holds open. Opens --streams calls in steps of --step over
// one HTTP/2 connection per --per-connection streams; each stream sends one reading when it opens
// and one every --interval seconds, and the cumulative acknowledgements say when each is durable.
// After the ramp it holds every stream open for --hold seconds, then ends them all. With
// `--streams max` it opens steps until one fails or the service's resident memory (read from
// /proc for --service-pid) reaches --max-rss bytes: as many as the service holds within that.
//
// stdout carries one JSON line per event — {"event":"step",...}, {"event":"hold_start",...},
// {"event":"hold_end",...} (bench/run.ts samples the service's RSS between the last two) — and
// the result as the last line. The result's `hold` covers the readings written during the hold
// alone (the `fleet` scenario's streams, run.ts, measure that window): how many, their
// acknowledgement latency, and this process's CPU.
// `--phase random` has each stream's second reading fall at a random point of its first interval
// (and every interval after it), so that the streams of one step do not all write at once, as
// independent devices would not; by default they follow the first reading at each interval.
//   node --import tsx bench/connections-load.ts --target 127.0.0.1:8080 --streams 20000 --hold 20
import { parseArgs } from "node:util";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  SyncReadingsRequestSchema,
  SyncReadingsResponseSchema,
  type SyncReadingsResponse,
} from "../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { latencySummary, type LatencySummary } from "./latency.js";
import { deviceReading } from "./limit.js";
import { rssBytes } from "./process-stats.js";

const { values } = parseArgs({
  options: {
    target: { type: "string", default: "127.0.0.1:8080" },
    // Distinguishes the event ids of separate runs against one service, so none is a duplicate.
    run: { type: "string", default: "c" },
    streams: { type: "string", default: "20000" },
    // Seconds between a stream's readings after the first.
    interval: { type: "string", default: "30" },
    // Seconds every stream is held open after the ramp.
    hold: { type: "string", default: "20" },
    // Streams opened per ramp step; the next step starts once every stream of this one has its
    // first acknowledgement (or failed, or --step-timeout passed).
    step: { type: "string", default: "1000" },
    "step-timeout": { type: "string", default: "30" },
    // Streams per HTTP/2 connection (the server allows MAX_CONCURRENT_STREAMS, 1000 by default).
    "per-connection": { type: "string", default: "500" },
    // The ramp stops early when more than this fraction of a step's streams fail to open.
    "max-step-failures": { type: "string", default: "0.01" },
    // With --streams max: the service's process, and the resident memory at which the ramp stops.
    "service-pid": { type: "string" },
    "max-rss": { type: "string", default: String(1.5e9) },
    phase: { type: "string", default: "open" },
  },
});
if (values.phase !== "open" && values.phase !== "random") throw new Error("--phase must be open or random");
/** The most streams `--streams max` opens, whatever the memory: far past any two-core host's. */
const MAX_STREAMS = 200_000;

/** The result's figures over the hold alone. */
export interface HoldFigures {
  readonly seconds: number;
  /** Readings written during the hold. */
  readonly sent: number;
  /** Of those, how many were acknowledged (during the hold or while the streams closed after it). */
  readonly acknowledged: number;
  /** Of those, how many never were. */
  readonly unacknowledged: number;
  readonly ack_latency_ms: LatencySummary;
  /** This process's CPU during the hold. */
  readonly cpu_seconds: number;
}
const findMax = values.streams === "max";
const streamCount = findMax ? MAX_STREAMS : Number(values.streams);
const servicePid = values["service-pid"] === undefined ? undefined : Number(values["service-pid"]);
const maxRss = Number(values["max-rss"]);
if (findMax && servicePid === undefined) throw new Error("--streams max needs --service-pid, whose memory bounds the ramp");
const intervalMs = Number(values.interval) * 1000;
const holdMs = Number(values.hold) * 1000;
const stepSize = Number(values.step);
const stepTimeoutMs = Number(values["step-timeout"]) * 1000;
const perConnection = Number(values["per-connection"]);
const maxStepFailures = Number(values["max-step-failures"]);

const channels: grpc.Client[] = [];
/** The connection of stream `index`, made when its first stream opens. */
function channelOf(index: number): grpc.Client {
  const i = Math.floor(index / perConnection);
  // A distinct option per channel keeps grpc-js from sharing one subchannel (one connection)
  // between them.
  while (channels.length <= i) channels.push(new grpc.Client(values.target!, grpc.credentials.createInsecure(), { "wattstream.channel": channels.length }));
  return channels[i]!;
}


const METHOD = "/wattstream.telemetry.v1.IngestService/SyncReadings";
function message(device: number, n: number): Buffer {
  const reading = deviceReading(device, `${values.run}-${device}-${n}`, Date.now(), n);
  return Buffer.from(toBinary(SyncReadingsRequestSchema, create(SyncReadingsRequestSchema, { readings: [reading] })));
}

interface Stream {
  readonly call: grpc.ClientDuplexStream<Buffer, SyncReadingsResponse>;
  /** Send times of the readings not yet acknowledged, oldest first. */
  readonly unacknowledged: number[];
  sent: number;
  acknowledged: number;
  /** The stream's readings stored so far, as its last answer says (acknowledged counts duplicates and rejections too). */
  accepted: number;
  open: boolean;
  timer?: NodeJS.Timeout;
  /** Resolves on the first acknowledgement or when the call ends, whichever is first. */
  readonly opened: Promise<void>;
}

const latencies: number[] = [];
/** The readings written during the hold: the steady state, after every stream has opened. */
const hold = { startedAt: Infinity, endedAt: Infinity, sent: 0, latencies: [] as number[] };
const inHold = (at: number) => at >= hold.startedAt && at < hold.endedAt;
/** Longest wait after the hold for its readings' acknowledgements before the streams are ended, in ms. */
const DRAIN_MS = 10_000;
const failures: Record<string, number> = {};
let opened = 0;
let openNow = 0;
let sent = 0;
let acks = 0;
let rejected = 0;
let endedByClient = false;
const streams: Stream[] = [];

function fail(code: string): void {
  failures[code] = (failures[code] ?? 0) + 1;
}

function openStream(index: number): Stream {
  let markOpened!: () => void;
  const stream: Stream = {
    call: channelOf(index).makeBidiStreamRequest<Buffer, SyncReadingsResponse>(
      METHOD,
      (bytes: Buffer) => bytes,
      (bytes: Buffer) => fromBinary(SyncReadingsResponseSchema, bytes),
      new grpc.Metadata(),
    ),
    unacknowledged: [],
    sent: 0,
    acknowledged: 0,
    accepted: 0,
    open: true,
    opened: new Promise<void>((resolve) => (markOpened = resolve)),
  };
  opened++;
  openNow++;
  const send = () => {
    if (!stream.open) return;
    const now = performance.now();
    stream.unacknowledged.push(now);
    stream.call.write(message(index, stream.sent++));
    sent++;
    if (inHold(now)) hold.sent++;
  };
  stream.call.on("data", (response: SyncReadingsResponse) => {
    const now = performance.now();
    const upTo = Number(response.acknowledged);
    for (; stream.acknowledged < upTo; stream.acknowledged++) {
      const sentAt = stream.unacknowledged.shift()!;
      latencies.push(now - sentAt);
      acks++;
      if (inHold(sentAt)) hold.latencies.push(now - sentAt);
    }
    rejected += response.rejected.length;
    stream.accepted = Number(response.accepted);
    markOpened();
  });
  const closed = () => {
    if (!stream.open) return;
    stream.open = false;
    openNow--;
    clearTimeout(stream.timer); // in Node, clearTimeout clears an interval too
    markOpened();
  };
  stream.call.on("error", (error: grpc.ServiceError) => {
    fail(grpc.status[error.code] ?? String(error.code));
    closed();
  });
  stream.call.on("status", (status: grpc.StatusObject) => {
    // The server ending a stream the client did not end is a failure even with status OK.
    if (status.code === grpc.status.OK && !endedByClient) fail("ENDED_BY_SERVER");
    closed();
  });
  send();
  if (values.phase === "open") stream.timer = setInterval(send, intervalMs);
  else {
    stream.timer = setTimeout(() => {
      if (!stream.open) return;
      send();
      stream.timer = setInterval(send, intervalMs);
    }, Math.random() * intervalMs);
  }
  return stream;
}

function emit(event: Record<string, unknown>): void {
  console.log(JSON.stringify(event));
}

const started = performance.now();
let rampStoppedEarly: string | undefined;
/** With --streams max, what ended the ramp when it was not a failing step. */
let maxReachedBy: string | undefined;
for (let first = 0; first < streamCount; first += stepSize) {
  const step: Stream[] = [];
  for (let i = first; i < Math.min(streamCount, first + stepSize); i++) step.push(openStream(i));
  streams.push(...step);
  const stepStarted = performance.now();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.all(step.map((s) => s.opened)),
    new Promise((resolve) => (timer = setTimeout(resolve, stepTimeoutMs))),
  ]);
  clearTimeout(timer);
  const notOpen = step.filter((s) => !s.open || s.acknowledged === 0).length;
  emit({
    event: "step",
    streams_opened: opened,
    streams_open: openNow,
    step_seconds: (performance.now() - stepStarted) / 1000,
    step_not_open: notOpen,
    failures,
  });
  console.error(`connections: ${openNow}/${opened} open, step took ${((performance.now() - stepStarted) / 1000).toFixed(1)} s, ${notOpen} of the step not acknowledged`);
  if (notOpen > maxStepFailures * step.length) {
    rampStoppedEarly = `${notOpen} of ${step.length} streams of the step from ${first} were not acknowledged within ${stepTimeoutMs / 1000} s`;
    break;
  }
  if (findMax) {
    const rss = rssBytes(servicePid!);
    if (rss >= maxRss) {
      maxReachedBy = `the service's resident memory reached ${(rss / 1e9).toFixed(2)} GB (--max-rss ${(maxRss / 1e9).toFixed(2)} GB) with ${openNow} streams open`;
      break;
    }
  }
}
const rampSeconds = (performance.now() - started) / 1000;

const openAtHold = openNow;
emit({ event: "hold_start", streams_open: openAtHold });
hold.startedAt = performance.now();
const cpuAtHold = process.cpuUsage();
await new Promise((resolve) => setTimeout(resolve, holdMs));
hold.endedAt = performance.now();
const holdCpu = process.cpuUsage(cpuAtHold);
const openAtEnd = openNow;
emit({ event: "hold_end", streams_open: openAtEnd });
const elapsedS = (performance.now() - started) / 1000;
// Everything over the same span, up to the hold's end: readings sent as the streams close are not
// counted as sent and then missing.
const acksInRun = acks;
const sentInRun = sent;
const acceptedInRun = streams.reduce((n, s) => n + s.accepted, 0);

// Stop writing, and let the readings written during the hold be acknowledged before any stream
// ends. Ending every stream at once is work the service then does all together (each stream's
// last acknowledgement, trailers and teardown); a reading still waiting at that moment waited for
// it too, and in `fleet` those last ~0.5 s of readings reached ~1–2 % of the hold's: the tail
// measured the load's own teardown, which no fleet does (2026-11-28, afternoon, docs/benchmarks.md).
for (const s of streams) clearTimeout(s.timer);
const drainDeadline = performance.now() + DRAIN_MS;
while (performance.now() < drainDeadline && streams.some((s) => s.open && s.unacknowledged.length > 0)) {
  await new Promise((resolve) => setTimeout(resolve, 20));
}

// End every stream as a device would (half-close) and wait for the server to finish them, so
// the service stops with nothing in flight.
endedByClient = true;
for (const s of streams) {
  if (s.open) s.call.end();
}
let closeTimer: NodeJS.Timeout | undefined;
await Promise.race([
  Promise.all(streams.map((s) => (s.open ? new Promise<void>((resolve) => s.call.once("status", () => resolve())) : undefined))),
  new Promise((resolve) => (closeTimer = setTimeout(resolve, 15_000))),
]);
clearTimeout(closeTimer);
const stillOpenAfterEnd = streams.filter((s) => s.open).length;
for (const channel of channels) channel.close();

// A reading written during the hold and never acknowledged (its stream failed, or the service
// still had it when the streams were ended and closed) counts against the hold.
const holdUnacknowledged = streams.reduce((n, s) => n + s.unacknowledged.filter(inHold).length, 0);
console.log(
  JSON.stringify({
    streams_requested: findMax ? "max" : streamCount,
    streams_opened: opened,
    streams_open_at_hold: openAtHold,
    streams_open_at_end: openAtEnd,
    streams_not_closed_cleanly: stillOpenAfterEnd,
    connections: channels.length,
    ramp_seconds: rampSeconds,
    ramp_stopped_early: rampStoppedEarly ?? null,
    ramp_stopped_by_memory: maxReachedBy ?? null,
    failures,
    sent: sentInRun,
    accepted: acceptedInRun,
    acks_received: acksInRun,
    rejected,
    errors: Object.values(failures).reduce((a, b) => a + b, 0),
    elapsed_s: elapsedS,
    readings_per_second: acceptedInRun / elapsedS,
    call_latency_ms: latencySummary(latencies),
    hold: {
      seconds: (hold.endedAt - hold.startedAt) / 1000,
      sent: hold.sent,
      acknowledged: hold.latencies.length,
      unacknowledged: holdUnacknowledged,
      ack_latency_ms: latencySummary(hold.latencies),
      cpu_seconds: (holdCpu.user + holdCpu.system) / 1e6,
    } satisfies HoldFigures,
  }),
);
process.exit(0);
