// `npm run bench`: starts the service itself (embedded ClickHouse in a fresh DATA_DIR, a real
// redis-server when one is installed), drives it from separate load-generator processes, and
// measures in the same run the limit it is compared with: how fast the embedded engine takes the
// same rows in one INSERT of pre-built data, and how fast protobuf decodes them. Prints and writes
// JSON.
//   npm run bench -- --scenario throughput --json out.json
//   npm run bench -- --scenario query --rows 50000000 --json out.json   (bench/query-bench.ts)
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import type { HoldFigures } from "./connections-load.js";
import { startInstantIngestServer } from "./instant-ingest-server.js";
import { measureLimit, median } from "./limit.js";
import { cpuSeconds, peakRssBytes, rssBytes, threadCpuSeconds } from "./process-stats.js";
import { redisServerAvailable, startRedisServer, type RedisServer } from "../test/support/redis-server.js";
import { builtService, startServiceProcess, type ServiceProcess } from "../test/support/service-process.js";

/** A problem the user can act on: printed without a stack. */
class BenchError extends Error {}

const SCENARIOS = ["throughput", "fleet", "connections", "query"] as const;
type Scenario = (typeof SCENARIOS)[number];

// `--scenario query` is the query bench (bench/query-bench.ts, also `npm run bench:query`), which
// loads millions of rows first and has options of its own: every argument goes to it unchanged.
const argv = process.argv.slice(2);
const queryScenarioAt = argv.findIndex((arg, i) => arg === "--scenario=query" || (arg === "--scenario" && argv[i + 1] === "query"));
if (queryScenarioAt >= 0) {
  const queryBench = fileURLToPath(new URL("./query-bench.ts", import.meta.url));
  const scenarioArgs = argv[queryScenarioAt] === "--scenario=query" ? 1 : 2;
  const passOn = [...argv.slice(0, queryScenarioAt), ...argv.slice(queryScenarioAt + scenarioArgs)];
  const { status } = spawnSync(process.execPath, ["--import", "tsx", queryBench, ...passOn], { stdio: "inherit" });
  process.exit(status ?? 1);
}

const { values } = parseArgs({
  options: {
    scenario: { type: "string", default: "throughput" },
    json: { type: "string" },
    seconds: { type: "string" },
    redis: { type: "string", default: "auto" },
    // Redis with an append-only file, as docker-compose.yml runs it (fsync every second).
    "redis-appendonly": { type: "boolean", default: false },
    "limit-rows": { type: "string", default: "300000" },
    // fleet: how much faster than real time the devices' one-reading-a-minute clock runs.
    compress: { type: "string", default: "10" },
    // fleet: how the devices send. "streams": each keeps a SyncReadings stream open and writes its
    // readings on it, as firmware does (bench/connections-load.ts); "unary": one IngestReadings
    // call per reading, as a browser or curl would (bench/fleet-load.ts; the default before
    // 2026-11-28).
    calls: { type: "string", default: "streams" },
    // fleet with unary calls: the load generator's gRPC client, grpc-js or http2.
    client: { type: "string", default: "grpc-js" },
    // throughput: concurrent StreamReadings calls (default 128). connections: how many
    // SyncReadings streams to open (default 20000; "max": until a step fails or the service's RSS
    // reaches --max-rss-gb), and how long to hold them all open.
    streams: { type: "string" },
    "max-rss-gb": { type: "string", default: "1.5" },
    hold: { type: "string", default: "20" },
    // fleet: how long the load runs against a server that answers at once (0: not at all).
    "floor-seconds": { type: "string", default: "10" },
  },
});
const scenario = values.scenario as Scenario;
// 128 throughput calls in flight (2,000 readings each, within MAX_ROWS_IN_FLIGHT's 200,000): with
// 64, each waiting ~1.2 s for its answer, the load's own window set the rate and the service's
// cores were ~30 % idle (+15–35 % readings/s at 128, alternated runs, docs/benchmarks.md).
const streams = values.streams ?? (scenario === "connections" ? "20000" : "128");
process.on("uncaughtException", (error) => {
  console.error(`bench: ${error instanceof BenchError ? error.message : error.stack}`);
  process.exit(2);
});
if (!SCENARIOS.includes(scenario)) fail(`--scenario must be one of ${SCENARIOS.join(", ")}`);
if (values.client !== "grpc-js" && values.client !== "http2") fail("--client must be grpc-js or http2");
if (values.calls !== "streams" && values.calls !== "unary") fail("--calls must be streams or unary");
const fleetOnStreams = scenario === "fleet" && values.calls === "streams";
if (fleetOnStreams && values.client !== "grpc-js") fail("--client applies to --calls unary; the streams load uses grpc-js");

const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const dataDir = mkdtempSync(path.join(tmpdir(), "wattstream-bench-"));
let redis: RedisServer | undefined;
let service: ServiceProcess | undefined;

try {
  const useRedis = values.redis === "on" || (values.redis === "auto" && redisServerAvailable());
  if (useRedis) {
    const appendOnlyDir = values["redis-appendonly"] ? path.join(dataDir, "redis") : undefined;
    if (appendOnlyDir !== undefined) mkdirSync(appendOnlyDir);
    redis = await startRedisServer({ appendOnlyDir });
  }

  const env: Record<string, string> = {
    PORT: "0",
    HOST: "127.0.0.1",
    DATA_DIR: path.join(dataDir, "service"),
    LOG_LEVEL: "info",
    // Two cores: one worker leaves the other core to the main thread, the engine and the load.
    WORKER_THREADS: "1",
    ...(redis ? { REDIS_URL: redis.url } : {}),
    // Throughput wants few large inserts (30k rows or 0.5 s: +9 % readings/s and less CPU than 10k
    // or 0.2 s, five alternated pairs, docs/benchmarks.md); the fleet scenario wants fast
    // acknowledgements. Either can be overridden from the environment, for such comparisons.
    INSERT_LINGER: process.env.INSERT_LINGER ?? (scenario === "throughput" ? "500ms" : "20ms"),
    MIN_ROWS_PER_INSERT: process.env.MIN_ROWS_PER_INSERT ?? (scenario === "throughput" ? "30000" : "10000"),
    // Node flags for the service alone (the load generators keep NODE_OPTIONS), for comparisons.
    ...(process.env.SERVICE_NODE_OPTIONS ? { NODE_OPTIONS: process.env.SERVICE_NODE_OPTIONS } : {}),
  };
  // connections runs with the service's defaults: MAX_CONCURRENT_STREAMS (1000 per HTTP/2
  // connection) is above the 500 streams the load puts on each connection, and IDLE_TIMEOUT (5 min)
  // is far above the 30 s between a stream's readings, so neither needs raising.
  // What an operator runs: the service compiled, as `npm start` runs it.
  service = await startServiceProcess(env, 60_000, builtService());
  const pid = service.child.pid!;

  const seconds = Number(values.seconds ?? (scenario === "throughput" ? 20 : 20));
  // The fleet on streams: 20,000 devices, each on its own stream, 500 streams per connection, each
  // writing a reading when its stream opens and then one a minute (compressed) at a random phase;
  // measured over `hold` seconds once every stream is open.
  const fleetStreamArgs = (hold: number) => [
    ...["bench/connections-load.ts", "--streams", "20000", "--interval", String(60 / Number(values.compress)), "--hold", String(hold)],
    ...["--step", "1000", "--per-connection", "500", "--phase", "random"],
  ];
  const loadArgs =
    scenario === "throughput"
      ? ["bench/load-generator.ts", "--streams", streams, "--frames-per-call", "20", "--frame", "100"]
      : fleetOnStreams
        ? fleetStreamArgs(seconds)
        : scenario === "fleet"
          ? ["bench/fleet-load.ts", "--devices", "20000", "--interval", "60", "--compress", values.compress!, "--channels", "8", "--client", values.client!]
          : [
              ...["bench/connections-load.ts", "--streams", streams, "--interval", "30", "--hold", values.hold!, "--step", "1000", "--per-connection", "500"],
              ...(streams === "max" ? ["--service-pid", String(pid), "--max-rss", String(Number(values["max-rss-gb"]) * 1e9)] : []),
            ];

  // The measured window's edges: CPU (the service's, by thread, and redis-server's) and the
  // service's history inserts so far; Redis's command counters are zeroed at the start and read
  // at the end.
  const target = service.target;
  const readEdge = () => ({
    service: cpuSeconds(pid),
    threads: threadCpuSeconds(pid),
    redis: redis?.pid === undefined ? undefined : cpuSeconds(redis.pid),
    metrics: serviceMetrics(target),
  });
  let windowStart: ReturnType<typeof readEdge> | undefined;
  let windowEnd: ReturnType<typeof readEdge> | undefined;
  let redisReset: Promise<unknown> = Promise.resolve();
  let redisCommands: Promise<RedisCommandStats | undefined> = Promise.resolve(undefined);
  const startWindow = () => {
    windowStart = readEdge();
    if (redis !== undefined) redisReset = withRedisAdmin(redis.url, (admin) => admin.config("RESETSTAT"));
    return redisReset;
  };
  const endWindow = () => {
    windowEnd = readEdge();
    if (redis !== undefined) redisCommands = redisReset.then(() => withRedisAdmin(redis!.url, redisCommandStats));
  };
  let load: LoadResult;
  let warmup: LoadResult | undefined;
  // Every reading the run stored, warm-up (or the streams' ramp) included: what Redis holds after.
  let storedInRun: number | undefined;
  let connections: Record<string, unknown> | undefined;
  if (scenario === "connections") {
    // No warm-up: the point is memory per open stream, and the idle RSS is taken before any opens.
    const rssIdle = await idleRssBytes(pid);
    await startWindow();
    ({ load, details: connections } = await runConnectionsLoad(loadArgs, service.target, pid, rssIdle));
    endWindow();
  } else if (fleetOnStreams) {
    // No separate warm-up: opening the 20,000 streams, each writing its first reading, is one. The
    // window is the hold, every stream open.
    const rssIdle = await idleRssBytes(pid);
    const onEvent = (event: string) => {
      if (event === "hold_start") void startWindow();
      else if (event === "hold_end") endWindow();
    };
    const { load: whole, details } = await runConnectionsLoad(loadArgs, service.target, pid, rssIdle, onEvent);
    connections = details;
    load = holdOf(whole);
    storedInRun = whole.accepted;
  } else {
    // Warm up (JIT, worker start, first parts), then measure a clean window.
    warmup = await runLoad([...loadArgs, "--run", "warmup"], service.target, 3);
    await startWindow();
    load = await runLoad([...loadArgs, "--run", "measured"], service.target, seconds);
    endWindow();
  }
  if (windowStart === undefined || windowEnd === undefined) fail("the load ended without its measured window");
  const [start, end] = [windowStart, windowEnd];
  const redisCpu = start.redis === undefined || end.redis === undefined ? undefined : end.redis - start.redis;
  const redisCommandsRan = await redisCommands;
  const [startMetrics, endMetrics] = [await start.metrics, await end.metrics];
  const insertsByTable = insertRates(startMetrics?.inserts, endMetrics?.inserts, load.elapsed_s);
  const pauses = pausesInWindow(startMetrics, endMetrics);
  const peakRss = peakRssBytes(pid);
  const exit = await service.stop();
  service = undefined;
  if (exit !== 0) fail(`the service exited with ${exit}`);
  // What Redis holds after the run: the dedupe ledger of every reading stored (warm-up included)
  // and each device's live state.
  const redisMemory = redis === undefined ? undefined : await withRedisAdmin(redis.url, redisMemoryUse);

  // The limit, measured now on the same machine with the service stopped.
  const limit = await measureLimit(path.join(dataDir, "limit"), Number(values["limit-rows"]));
  // And for fleet, what the same load sees from a server that answers at once: the part of the
  // latency that is the load generator's own.
  const floorSeconds = Number(values["floor-seconds"]);
  const floor =
    scenario !== "fleet"
      ? undefined
      : await measureLoadFloor(floorSeconds, async (target) =>
          fleetOnStreams
            ? holdOf((await runConnectionsLoad([...fleetStreamArgs(floorSeconds), "--run", "floor"], target, undefined, undefined)).load)
            : runLoad([...loadArgs, "--run", "floor"], target, floorSeconds),
        );

  const result = {
    scenario,
    readings_per_second: round(load.readings_per_second),
    ack_latency_ms: {
      p50: round(load.call_latency_ms.p50),
      p99: round(load.call_latency_ms.p99),
      max: round(load.call_latency_ms.max),
    },
    service_cpu_seconds: round(end.service - start.service),
    service_peak_rss_bytes: peakRss,
    limit_readings_per_second: round(limit.insert_rows_per_second),
    limit_protobuf_decode_readings_per_second: round(limit.decode_readings_per_second),
    // Three significant figures: a fleet run at a few hundred readings/s is a ratio of ~0.0004.
    ratio_to_limit: Number((load.readings_per_second / limit.insert_rows_per_second).toPrecision(3)),
    details: {
      measured_seconds: round(load.elapsed_s),
      readings_sent: load.sent,
      readings_accepted: load.accepted,
      load_errors: load.errors,
      ack_latency_is:
        scenario === "throughput"
          ? "per StreamReadings call of 2,000 readings"
          : fleetOnStreams
            ? "per reading written during the hold (every stream open), from its write on its device's SyncReadings stream to the cumulative acknowledgement covering it"
            : scenario === "fleet"
              ? "per reading (one call each)"
              : "per reading, from its write on the open SyncReadings stream to the cumulative acknowledgement covering it",
      ...connections,
      live_store: redis ? (values["redis-appendonly"] ? "redis-server, appendonly everysec" : "redis-server, no persistence") : "embedded",
      // The service reads LEAN_GRPC_STREAMS from the environment the bench was started with.
      lean_grpc_streams: process.env.LEAN_GRPC_STREAMS ?? "on",
      // by_table: each history table's inserts in the window, from the service's /metrics (a
      // fleet reading's acknowledgement waits for its table's next insert and then for that one).
      inserts: { linger: env.INSERT_LINGER, min_rows: Number(env.MIN_ROWS_PER_INSERT), by_table: insertsByTable },
      // What held the service's main thread in the window, from its /metrics: garbage collections
      // by kind (each one's pause; a major collection's incremental marking runs between its
      // steps and shows in the event loop's delay instead) and the event loop's delay (sampled
      // every 10 ms, which the figures include).
      service_main_thread_pauses: pauses,
      // Where the service's CPU went, by thread name (MainThread, WorkerThread for the worker pool,
      // V8Worker for V8's background threads, MergeMutate for the engine's merges; the engine's
      // query threads are unnamed), over the same window as service_cpu_seconds.
      service_cpu_seconds_by_thread: Object.fromEntries(
        [...end.threads]
          .map(([name, seconds]) => [name, round(seconds - (start.threads.get(name) ?? 0), 2)] as const)
          .filter(([, seconds]) => seconds >= 0.05)
          .sort((a, b) => b[1] - a[1]),
      ),
      // The rest of the machine's CPU over the same window, where measured: the load generator's
      // own (throughput, fleet) and redis-server's.
      load_generator_cpu_seconds: load.cpu_seconds === undefined ? undefined : round(load.cpu_seconds),
      load_generator_floor: floor,
      redis_server_cpu_seconds: redisCpu === undefined ? undefined : round(redisCpu),
      redis_commands: redisCommandsRan,
      redis_used_memory_bytes: redisMemory?.usedBytes,
      redis_keys: redisMemory?.keys,
      readings_accepted_with_warmup: storedInRun ?? load.accepted + (warmup?.accepted ?? 0),
      limit: limit,
      machine: { cpus: (await import("node:os")).availableParallelism(), node: process.version },
      load_generator: loadArgs.join(" "),
    },
  };
  const text = JSON.stringify(result, null, 2);
  console.log(text);
  if (values.json) writeFileSync(values.json, `${text}\n`);
} finally {
  service?.kill();
  await redis?.stop();
  rmSync(dataDir, { recursive: true, force: true });
}

interface LoadResult {
  sent: number;
  accepted: number;
  errors: number;
  elapsed_s: number;
  readings_per_second: number;
  call_latency_ms: { p50: number; p99: number; max: number };
  /** The load generator's own CPU, when it reports it. */
  cpu_seconds?: number;
}

/** The service's RSS with nothing connected: the median of three samples a second apart. */
async function idleRssBytes(pid: number): Promise<number> {
  const idle: number[] = [];
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    idle.push(rssBytes(pid));
  }
  return median(idle);
}

/**
 * Runs the connections load as its own process and samples the service's RSS (VmRSS) every second
 * while the load holds every stream open (between its hold_start and hold_end lines).
 */
async function runConnectionsLoad(
  args: string[],
  target: string,
  pid: number | undefined,
  rssIdle: number | undefined,
  onEvent: (event: string) => void = () => {},
): Promise<{ load: SyncLoadResult; details: Record<string, unknown> }> {
  const child = spawn(process.execPath, ["--import", "tsx", ...args, "--target", target], {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines: Record<string, unknown>[] = [];
  let holding = false;
  let openAtHold = 0;
  const atHold: number[] = [];
  let peakDuringLoad = 0;
  createInterface({ input: child.stdout }).on("line", (line) => {
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
    lines.push(entry);
    if (typeof entry.event === "string") onEvent(entry.event);
    if (entry.event === "hold_start") {
      holding = true;
      openAtHold = entry.streams_open as number;
    } else if (entry.event === "hold_end") holding = false;
  });
  const sampler = setInterval(() => {
    if (pid === undefined) return;
    const rss = rssBytes(pid);
    peakDuringLoad = Math.max(peakDuringLoad, rss);
    if (holding) atHold.push(rss);
  }, 1000);
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  clearInterval(sampler);
  if (code !== 0) fail(`connections load exited with ${code}`);
  const load = lines.at(-1) as unknown as SyncLoadResult & Record<string, unknown>;
  // The RSS at full hold is the median of the once-a-second samples (garbage collection moves it).
  const rssAtHold = atHold.length > 0 ? median(atHold) : 0;
  return {
    load,
    details: {
      streams_open_at_peak: openAtHold,
      streams_open_at_end: load.streams_open_at_end,
      rss_idle_bytes: rssIdle,
      rss_at_hold_bytes: rssAtHold,
      rss_per_stream_bytes: openAtHold > 0 && rssIdle !== undefined ? Math.round((rssAtHold - rssIdle) / openAtHold) : null,
      rss_at_hold_samples_bytes: atHold,
      rss_max_during_load_bytes: peakDuringLoad,
      streams: {
        requested: load.streams_requested,
        opened: load.streams_opened,
        connections: load.connections,
        ramp_seconds: round(load.ramp_seconds as number),
        ramp_stopped_early: load.ramp_stopped_early,
        ramp_stopped_by_memory: load.ramp_stopped_by_memory,
        failures: load.failures,
        acks_received: load.acks_received,
        rejected: load.rejected,
        not_closed_cleanly: load.streams_not_closed_cleanly,
      },
      ramp: lines.filter((l) => l.event === "step").map((l) => ({ open: l.streams_open, seconds: round(l.step_seconds as number, 2) })),
    },
  };
}

/**
 * The load run against bench/instant-ingest-server.ts, which answers every call (and acknowledges
 * every stream message) at once and stores nothing: its latency is the load generator's own on
 * this machine (its gRPC client, its event loop, the scheduler), the floor under what it measures
 * of the service. `drive` runs the load against the target it is given.
 */
async function measureLoadFloor(seconds: number, drive: (target: string) => Promise<LoadResult>): Promise<Record<string, unknown> | undefined> {
  if (seconds <= 0) return undefined;
  const server = await startInstantIngestServer();
  try {
    const load = await drive(server.target);
    return {
      against: "bench/instant-ingest-server.ts, which answers every call and stream message at once",
      measured_seconds: round(load.elapsed_s),
      readings_per_second: round(load.readings_per_second),
      ack_latency_ms: { p50: round(load.call_latency_ms.p50), p99: round(load.call_latency_ms.p99), max: round(load.call_latency_ms.max) },
      load_generator_cpu_seconds: load.cpu_seconds === undefined ? undefined : round(load.cpu_seconds),
      errors: load.errors,
    };
  } finally {
    await server.close();
  }
}

/** What the SyncReadings load (bench/connections-load.ts) prints, in part. */
interface SyncLoadResult extends LoadResult {
  rejected: number;
  hold: HoldFigures;
}

/**
 * The fleet on streams as a load result over the hold alone: the readings written in it, their
 * acknowledgement latency, and the load generator's CPU in it. A reading written then and never
 * acknowledged is an error, as is any rejection of the run (none is expected of fresh readings).
 */
function holdOf(load: SyncLoadResult): LoadResult {
  const { hold } = load;
  return {
    sent: hold.sent,
    accepted: hold.acknowledged,
    errors: load.errors + hold.unacknowledged + load.rejected,
    elapsed_s: hold.seconds,
    readings_per_second: hold.acknowledged / hold.seconds,
    call_latency_ms: hold.ack_latency_ms,
    cpu_seconds: hold.cpu_seconds,
  };
}

/** Runs one load generator as its own process and reads the JSON line it prints. */
async function runLoad(args: string[], target: string, seconds: number): Promise<LoadResult> {
  const child = spawn(process.execPath, ["--import", "tsx", ...args, "--target", target, "--seconds", String(seconds)], {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
  if (code !== 0) fail(`load generator exited with ${code}`);
  return JSON.parse(out.trim().split("\n").at(-1)!) as LoadResult;
}

function round(value: number, digits = 1): number {
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

function fail(message: string): never {
  throw new BenchError(message);
}

/** `use` on a connection of its own to the bench's redis-server, closed after. */
async function withRedisAdmin<T>(url: string, use: (admin: Redis) => Promise<T>): Promise<T> {
  const admin = new Redis(url);
  try {
    return await use(admin);
  } finally {
    admin.disconnect();
  }
}

/**
 * A service's stored history inserts so far, by table (from its /metrics): how many, rows,
 * seconds, and how many took at most 0.5 s and at most 1 s (its histogram's buckets).
 */
type InsertTotals = Map<string, InsertTotal>;
interface InsertTotal {
  inserts: number;
  rows: number;
  seconds: number;
  withinHalfSecond: number;
  withinSecond: number;
}
/** A table's totals before its first insert. (A function: the bench runs before this module's later constants are set.) */
function noInserts(): InsertTotal {
  return { inserts: 0, rows: 0, seconds: 0, withinHalfSecond: 0, withinSecond: 0 };
}

/** What one read of a service's /metrics tells the bench. */
interface ServiceMetrics {
  readonly inserts: InsertTotals;
  /** Garbage collections so far by kind (major, minor, incremental, weakcb): how many, seconds paused. */
  readonly gc: Map<string, { count: number; seconds: number }>;
  /** The event loop's delay since the previous read of /metrics (prom-client resets it on each). */
  readonly eventLoopDelay: { maxSeconds: number; p99Seconds: number } | undefined;
}

/** The service's /metrics, read (which also starts its event-loop delay afresh); undefined when it does not answer. */
async function serviceMetrics(target: string): Promise<ServiceMetrics | undefined> {
  try {
    const text = await (await fetch(`http://${target}/metrics`)).text();
    const inserts: InsertTotals = new Map();
    // Rows are recorded for stored inserts only, so durations are taken of those alone too.
    const insertPattern = /^wattstream_insert_(rows_sum|rows_count|duration_seconds_sum)\{table="([^"]+)"(?:,result="([^"]+)")?\} (\S+)$/gm;
    for (const [, series, table, result, value] of text.matchAll(insertPattern)) {
      const entry = inserts.get(table!) ?? noInserts();
      if (series === "rows_sum") entry.rows = Number(value);
      else if (series === "rows_count") entry.inserts = Number(value);
      else if (result === "ok") entry.seconds = Number(value);
      inserts.set(table!, entry);
    }
    const bucketPattern = /^wattstream_insert_duration_seconds_bucket\{le="(0\.5|1)",table="([^"]+)",result="ok"\} (\S+)$/gm;
    for (const [, le, table, value] of text.matchAll(bucketPattern)) {
      const entry = inserts.get(table!) ?? noInserts();
      if (le === "0.5") entry.withinHalfSecond = Number(value);
      else entry.withinSecond = Number(value);
      inserts.set(table!, entry);
    }
    const gc = new Map<string, { count: number; seconds: number }>();
    for (const [, series, kind, value] of text.matchAll(/^wattstream_nodejs_gc_duration_seconds_(sum|count)\{kind="([^"]+)"\} (\S+)$/gm)) {
      const entry = gc.get(kind!) ?? { count: 0, seconds: 0 };
      if (series === "sum") entry.seconds = Number(value);
      else entry.count = Number(value);
      gc.set(kind!, entry);
    }
    const gauge = (name: string) => text.match(new RegExp(`^wattstream_nodejs_eventloop_lag_${name}_seconds (\\S+)$`, "m"))?.[1];
    const [max, p99] = [gauge("max"), gauge("p99")];
    const eventLoopDelay = max === undefined || p99 === undefined ? undefined : { maxSeconds: Number(max), p99Seconds: Number(p99) };
    return { inserts, gc, eventLoopDelay };
  } catch {
    return undefined;
  }
}

/** Between two reads of /metrics: each kind of garbage collection's count and pauses, and the event loop's delay. */
function pausesInWindow(start: ServiceMetrics | undefined, end: ServiceMetrics | undefined) {
  if (start === undefined || end === undefined) return undefined;
  const gc = Object.fromEntries(
    [...end.gc].map(([kind, at]) => {
      const before = start.gc.get(kind) ?? { count: 0, seconds: 0 };
      const count = at.count - before.count;
      const ms = (at.seconds - before.seconds) * 1000;
      return [kind, { count, ms: round(ms), mean_ms: count > 0 ? round(ms / count) : null }];
    }),
  );
  const delay = end.eventLoopDelay;
  return {
    gc,
    event_loop_delay_ms: delay === undefined ? undefined : { p99: round(delay.p99Seconds * 1000), max: round(delay.maxSeconds * 1000) },
  };
}

/** Per table, between two InsertTotals: stored inserts a second, rows and ms per insert, and how many took over 0.5 s and over 1 s. */
function insertRates(start: InsertTotals | undefined, end: InsertTotals | undefined, seconds: number) {
  if (start === undefined || end === undefined) return undefined;
  return Object.fromEntries(
    [...end].map(([table, at]) => {
      const before = start.get(table) ?? noInserts();
      const inserts = at.inserts - before.inserts;
      return [
        table,
        {
          per_second: round(inserts / seconds, 2),
          rows_per_insert: inserts > 0 ? round((at.rows - before.rows) / inserts) : null,
          ms_per_insert: inserts > 0 ? round(((at.seconds - before.seconds) / inserts) * 1000) : null,
          // A fleet's tail: one insert this slow holds every reading of its table waiting for it.
          over_half_second: inserts - (at.withinHalfSecond - before.withinHalfSecond),
          over_one_second: inserts - (at.withinSecond - before.withinSecond),
        },
      ];
    }),
  );
}

type RedisCommandStats = Record<string, { calls: number; usec_per_call: number }>;

/**
 * What Redis ran since its counters were reset, per command (INFO commandstats): calls, and
 * microseconds of its CPU per call. A script's commands are counted both inside it and in its
 * EVALSHA, whose time includes theirs.
 */
async function redisCommandStats(admin: Redis): Promise<RedisCommandStats> {
  const stats: RedisCommandStats = {};
  for (const [, command, calls, perCall] of (await admin.info("commandstats")).matchAll(/cmdstat_([^:]+):calls=(\d+),usec=\d+,usec_per_call=([\d.]+)/g)) {
    stats[command!] = { calls: Number(calls), usec_per_call: Number(perCall) };
  }
  return stats;
}

/** Redis's used_memory (INFO memory) and how many keys it holds. */
async function redisMemoryUse(admin: Redis): Promise<{ usedBytes: number; keys: number }> {
  const usedBytes = Number(/used_memory:(\d+)/.exec(await admin.info("memory"))?.[1]);
  return { usedBytes, keys: await admin.dbsize() };
}
