// `npm run bench:query`: query latency against a large history. Seeds a fresh DATA_DIR with N
// readings (20,000 devices, a third each meters, vehicles and battery units, spread over the last
// 29 days; each vehicle linked to a meter) straight into the embedded engine — pre-encoded
// RowBinary, one INSERT … FROM INFILE per table per block into the kind's ingest table, so the
// materialized views fill the rollups as the service's own writes do — then starts the service on that directory and
// times GetVehiclePerformance, GetFleetSummary and ListAlerts through a real gRPC client.
//   npm run bench:query -- --rows 50000000 --json out/query-50m.json
// With --data-dir DIR the seeded directory is kept there and reused by later runs with the same
// --rows and --devices (the history then ends when it was seeded, not now: see seed_age_hours).
// With --ingest-compress N the fleet load (bench/fleet-load.ts, 20,000 devices, one reading a
// minute each, clocks sped up N times) runs against the service while the calls are timed, so
// the answers are measured while readings are being stored, as operators ask them.
// With --redis the service keeps live state in a private redis-server (REDIS_URL), filled before
// the service starts with each device's newest reading from the seeded history, as the in-process
// store fills itself after a start; the fleet calls then read 20,000 devices' state from Redis.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { FleetService } from "../gen/wattstream/fleet/v1/fleet_service_pb.js";
import { seedHistory, type SeedResult } from "./query-seed.js";
import { RESTORE_SLICES, restoreNewestReadings } from "../src/analytics/newest-readings.js";
import { loadConfig } from "../src/config.js";
import { openHistoryClient } from "../src/store/history/clickhouse-client.js";
import { RedisLiveStore } from "../src/store/live/redis-live-store.js";
import { redisServerAvailable, startRedisServer, type RedisServer } from "../test/support/redis-server.js";
import { performanceAnswers } from "../test/support/performance-answers.js";
import { builtService, startServiceProcess, type ServiceProcess } from "../test/support/service-process.js";
import { cpuSeconds, peakRssBytes } from "./process-stats.js";

const { values } = parseArgs({
  options: {
    rows: { type: "string", default: "5000000" },
    devices: { type: "string", default: "20000" },
    "block-rows": { type: "string", default: "1000000" },
    json: { type: "string" },
    // Calls per RPC (after warm-up), and the most time each RPC's series may take in all.
    "perf-calls": { type: "string", default: "300" },
    "perf-warmup": { type: "string", default: "20" },
    "fleet-calls": { type: "string", default: "20" },
    "alerts-calls": { type: "string", default: "20" },
    "call-timeout": { type: "string", default: "60" },
    "series-budget": { type: "string", default: "180" },
    // Keep the seeded directory (printed) instead of removing it.
    keep: { type: "boolean", default: false },
    // Seed into DIR once and reuse it on later runs (never removed).
    "data-dir": { type: "string" },
    // Run the fleet ingest load at this time compression during the timed calls (0: none).
    "ingest-compress": { type: "string", default: "0" },
    // Keep live state in a private redis-server, filled from the seeded history.
    redis: { type: "boolean", default: false },
  },
});

const rows = Number(values.rows);
const devices = Number(values.devices);
const callTimeoutMs = Number(values["call-timeout"]) * 1000;
const seriesBudgetMs = Number(values["series-budget"]) * 1000;
if (!(rows > 0) || !(devices >= 3)) throw new Error("--rows must be > 0 and --devices at least 3");

const reuse = values["data-dir"] !== undefined;
const root = reuse ? path.resolve(values["data-dir"]!) : mkdtempSync(path.join(tmpdir(), "wattstream-query-bench-"));
const dataDir = path.join(root, "data");
const seedFile = path.join(root, "seed.json");
mkdirSync(dataDir, { recursive: true });
let service: ServiceProcess | undefined;
let redis: RedisServer | undefined;
let ingestLoad: ChildProcess | undefined;
const ingestCompress = Number(values["ingest-compress"]);
const log = (msg: string) => console.error(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);

try {
  let seed: SeedResult & { seededAtMs: number; devices: number };
  if (reuse && existsSync(seedFile)) {
    seed = JSON.parse(readFileSync(seedFile, "utf8")) as typeof seed;
    if (seed.rows !== rows || seed.devices !== devices) {
      throw new Error(`${root} holds ${seed.rows} rows of ${seed.devices} devices, not ${rows} of ${devices}: use another --data-dir`);
    }
    log(`reusing ${root}, seeded ${((Date.now() - seed.seededAtMs) / 3_600_000).toFixed(2)} h ago`);
  } else {
    if (reuse && readdirSync(dataDir).length > 0) throw new Error(`${dataDir} is not empty but has no seed.json: remove it or use another --data-dir`);
    const seededAtMs = Date.now();
    const seeded = await seedHistory({
      dataDir,
      spoolDir: path.join(root, "spool"),
      database: "wattstream",
      rows,
      devices,
      blockRows: Number(values["block-rows"]),
      log,
    });
    seed = { ...seeded, seededAtMs, devices };
    if (reuse) writeFileSync(seedFile, JSON.stringify(seed));
  }

  let restored: Record<string, unknown> | undefined;
  if (values.redis) {
    if (!redisServerAvailable()) throw new Error("--redis needs redis-server on the PATH");
    redis = await startRedisServer();
    // What the in-process store does after a start, done here into Redis before the service holds
    // the data directory: each device's newest reading within the service's restore window.
    const startedRestore = performance.now();
    const history = await openHistoryClient({ url: undefined, username: "default", password: "", database: "wattstream", dataDir });
    const store = new RedisLiveStore({ url: redis.url });
    try {
      await store.connect();
      const restoredDevices = await restoreNewestReadings(history.client, (updates) => store.applyLiveState(updates), {
        // The service's default LIVE_RESTORE_WINDOW, as its own restore would use.
        sinceMs: Date.now() - loadConfig({}).liveRestoreWindowMs,
        ...RESTORE_SLICES,
      });
      restored = { devices: restoredDevices, ms: Math.round(performance.now() - startedRestore) };
    } finally {
      await store.close();
      await history.client.close();
    }
    log(`live state written to redis-server: ${JSON.stringify(restored)}`);
  }

  log("starting the service on the seeded DATA_DIR");
  const entry = builtService();
  const startedAt = performance.now();
  service = await startServiceProcess(
    {
      PORT: "0",
      HOST: "127.0.0.1",
      DATA_DIR: dataDir,
      LOG_LEVEL: "info",
      CLICKHOUSE_DATABASE: "wattstream",
      ...(redis ? { REDIS_URL: redis.url } : {}),
      // Node flags for the service alone, for comparisons.
      ...(process.env.SERVICE_NODE_OPTIONS ? { NODE_OPTIONS: process.env.SERVICE_NODE_OPTIONS } : {}),
    },
    300_000,
    entry,
  );
  const serviceStartSeconds = (performance.now() - startedAt) / 1000;
  log(`serving on ${service.target} after ${serviceStartSeconds.toFixed(1)} s`);
  if (restored === undefined) {
    // The in-process live store is refilled from history in the background after a start; its
    // statements would share the engine with the calls timed here. Time the steady state, and say
    // how long the restore took.
    restored = await waitForLog(service, "live state restored from history", 600_000);
    log(`live state restored: ${JSON.stringify({ devices: restored.devices, ms: restored.ms })}`);
  }
  const client = createClient(FleetService, createGrpcTransport({ baseUrl: `http://${service.target}` }));

  if (ingestCompress > 0) {
    const args = ["--import", "tsx", "bench/fleet-load.ts", "--target", service.target, "--compress", String(ingestCompress), "--seconds", "3600"];
    log(`ingest load while timing: ${args.slice(2).join(" ")}`);
    ingestLoad = spawn(process.execPath, args, { stdio: "ignore" });
    await new Promise((resolve) => setTimeout(resolve, 5_000));
  }
  const vehicles = seed.vehicleIds;
  const pick = () => vehicles[Math.floor(Math.random() * vehicles.length)]!;
  const samples: Record<string, unknown> = {};
  // The service's own CPU over the timed calls (with ingest load, that load's too).
  const pid = service.child.pid!;
  const cpuBefore = cpuSeconds(pid);
  /** Calls untimed first: the first of each kind pays for code run for the first time. */
  const warmUp = async (calls: number, call: () => Promise<unknown>) => {
    for (let i = 0; i < calls; i++) await call();
  };

  // GetVehiclePerformance, default 24 h window ending now, for random vehicles.
  log(`GetVehiclePerformance: ${values["perf-warmup"]} warm-up + ${values["perf-calls"]} calls`);
  // The first call starts the service's read of every device's default window, and calls are
  // answered by statements until it is done: warm up on the path the series will time, so its first
  // calls do not run that code cold (20 warm-ups on the statement path left p99 at 9–15 ms, 300 at
  // 8.7 ms). A service with the snapshot off never gets there; then the calls are all statements.
  const untilSnapshot = { calls: 0, ms: 0 };
  const startedWaiting = performance.now();
  while (untilSnapshot.calls < 1_000 && (await performanceAnswers(`http://${service.target}`)).snapshot === 0) {
    await client.getVehiclePerformance({ vehicleId: pick() });
    untilSnapshot.calls++;
    if (untilSnapshot.calls > 1) await new Promise((resolve) => setTimeout(resolve, 10));
  }
  untilSnapshot.ms = Math.round(performance.now() - startedWaiting);
  log(`  the snapshot answered after ${untilSnapshot.calls} calls, ${untilSnapshot.ms} ms`);
  for (let i = 0; i < Number(values["perf-warmup"]); i++) await client.getVehiclePerformance({ vehicleId: pick() });
  const perf = await series(Number(values["perf-calls"]), async () => {
    const reply = await client.getVehiclePerformance({ vehicleId: pick() }, { timeoutMs: callTimeoutMs });
    samples.get_vehicle_performance ??= {
      vehicle_readings: Number(reply.vehicleReadingCount),
      meter_readings: Number(reply.meterReadingCount),
      efficiency_ratio: reply.efficiencyRatio,
      alert_kind: reply.alert?.kind,
    };
  });
  log(summary("GetVehiclePerformance", perf));
  const answers = await performanceAnswers(`http://${service.target}`);
  log(`  answered from the snapshot of every device's window: ${answers.snapshot}, by a statement: ${answers.statement} (warm-ups included)`);

  // The same window named explicitly (window_end at the last whole minute): the same answer, always
  // from a statement of its own, as a window other than the default is.
  log(`GetVehiclePerformance, the same 24 h with window_end named: 5 warm-up + ${values["perf-calls"]} calls`);
  const lastWholeMinute = () => timestampFromMs(Math.floor(Date.now() / 60_000) * 60_000);
  await warmUp(5, () => client.getVehiclePerformance({ vehicleId: pick(), windowEnd: lastWholeMinute() }, { timeoutMs: callTimeoutMs }));
  const perfStatement = await series(Number(values["perf-calls"]), async () => {
    await client.getVehiclePerformance({ vehicleId: pick(), windowEnd: lastWholeMinute() }, { timeoutMs: callTimeoutMs });
  });
  log(summary("GetVehiclePerformance, window_end named", perfStatement));

  // The same with the longest window (30 days): reads the whole history of the vehicle's rollups.
  log("GetVehiclePerformance, window_hours 720: 5 warm-up + 50 calls");
  await warmUp(5, () => client.getVehiclePerformance({ vehicleId: pick(), windowHours: 720 }, { timeoutMs: callTimeoutMs }));
  const perf720 = await series(50, async () => {
    await client.getVehiclePerformance({ vehicleId: pick(), windowHours: 720 }, { timeoutMs: callTimeoutMs });
  });
  log(summary("GetVehiclePerformance 720 h", perf720));

  log(`GetFleetSummary: 2 warm-up + up to ${values["fleet-calls"]} calls (timeout ${callTimeoutMs / 1000} s each, ${seriesBudgetMs / 1000} s in all)`);
  await warmUp(2, () => client.getFleetSummary({}, { timeoutMs: callTimeoutMs }));
  const fleet = await series(Number(values["fleet-calls"]), async () => {
    const reply = await client.getFleetSummary({}, { timeoutMs: callTimeoutMs });
    samples.get_fleet_summary ??= {
      total_kwh_consumed_ac: reply.totalKwhConsumedAc,
      total_kwh_delivered_dc: reply.totalKwhDeliveredDc,
      vehicles_with_efficiency: reply.efficiencyBuckets.reduce((n, b) => n + Number(b.vehicles), 0),
      vehicles_without_efficiency: Number(reply.vehiclesWithoutEfficiency),
      online_devices: Number(reply.onlineDevices),
      offline_devices: Number(reply.offlineDevices),
    };
  });
  log(summary("GetFleetSummary", fleet));

  log(`ListAlerts (first page): 2 warm-up + up to ${values["alerts-calls"]} calls`);
  await warmUp(2, () => client.listAlerts({}, { timeoutMs: callTimeoutMs }));
  const alerts = await series(Number(values["alerts-calls"]), async () => {
    const reply = await client.listAlerts({}, { timeoutMs: callTimeoutMs });
    samples.list_alerts ??= {
      alerts_on_first_page: reply.alerts.length,
      kinds: [...new Set(reply.alerts.map((a) => a.kind))],
      more_pages: reply.nextPageToken !== "",
    };
  });
  log(summary("ListAlerts", alerts));

  const serviceCpuSeconds = cpuSeconds(pid) - cpuBefore;
  const servicePeakRss = peakRssBytes(pid);
  ingestLoad?.kill();
  ingestLoad = undefined;
  const exit = await service.stop(60_000);
  service = undefined;

  const result = {
    scenario: "query",
    // The fields every scenario writes; those of ingest are null here (no readings are timed).
    readings_per_second: null,
    ack_latency_ms: null,
    service_cpu_seconds: round(serviceCpuSeconds),
    service_peak_rss_bytes: servicePeakRss,
    limit_readings_per_second: null,
    limit_protobuf_decode_readings_per_second: null,
    ratio_to_limit: null,
    rows: seed.rows,
    load_seconds: round(seed.loadSeconds),
    load_rows_per_second: round(seed.rows / seed.loadSeconds),
    get_vehicle_performance_ms: perf.stats,
    get_vehicle_performance_statement_ms: perfStatement.stats,
    get_vehicle_performance_720h_ms: perf720.stats,
    get_fleet_summary_ms: fleet.stats,
    list_alerts_ms: alerts.stats,
    details: {
      devices,
      data_dir_reused: reuse,
      seed_age_hours: round((Date.now() - seed.seededAtMs) / 3_600_000),
      vehicles: vehicles.length,
      links: seed.links,
      rows_per_table: seed.rowsPerTable,
      history_days: 29,
      encode_seconds: round(seed.encodeSeconds),
      insert_wait_seconds: round(seed.insertWaitSeconds),
      parts_after_load: seed.partsAfterLoad,
      service_start_seconds: round(serviceStartSeconds),
      live_store: redis ? "redis" : "in-process",
      live_restore: {
        devices: restored.devices,
        ms: restored.ms,
        note: redis ? "written to redis-server from history before the service started" : "the service's own restore, awaited before the calls were timed",
      },
      service_exit_code: exit,
      ingest_load_during_calls:
        ingestCompress > 0 ? `bench/fleet-load.ts --compress ${ingestCompress} (20,000 devices, ${Math.round((20_000 * ingestCompress) / 60)} readings/s offered)` : "none",
      windows:
        "GetVehiclePerformance: 24 h (default), the same 24 h with window_end named, and 720 h, random vehicle each call; GetFleetSummary and ListAlerts: 24 h",
      vehicle_performance_answers: {
        ...answers,
        calls_before_the_first_from_the_snapshot: untilSnapshot.calls,
        ms_before_the_first_from_the_snapshot: untilSnapshot.ms,
        note:
          "where the default-window calls' totals came from (/metrics, warm-ups included): the snapshot of every device's window read once a minute, " +
          "or a statement of their own (the first calls of a minute, while its snapshot is read); the warm-ups began once one call had been answered from it; " +
          "get_vehicle_performance_statement_ms always takes a statement",
      },
      service_cpu_seconds_is: "the service's CPU from the first timed call to the last, warm-ups included",
      percentiles: "nearest rank over each series' calls; with 20 calls p99 is the slowest of them",
      live_state:
        "every device's newest reading from the seeded history: the fleet calls read all of it, and judge online/offline at the call's time (the history ends when it was seeded)",
      errors: { get_vehicle_performance: perf.errors, get_fleet_summary: fleet.errors, list_alerts: alerts.errors },
      samples,
      machine: { cpus: (await import("node:os")).availableParallelism(), node: process.version },
    },
  };
  const text = JSON.stringify(result, null, 2);
  console.log(text);
  if (values.json) writeFileSync(values.json, `${text}\n`);
} finally {
  ingestLoad?.kill();
  service?.kill();
  await redis?.stop();
  if (reuse || values.keep) log(`kept ${root}`);
  else rmSync(root, { recursive: true, force: true });
}

/** The first log line with this message, waiting for it up to timeoutMs. */
async function waitForLog(service: ServiceProcess, msg: string, timeoutMs: number): Promise<Record<string, unknown>> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const line = service.logs.find((entry) => entry.msg === msg);
    if (line !== undefined) return line;
    if (performance.now() > deadline) throw new Error(`the service did not log "${msg}" within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

interface Series {
  stats: { p50: number; p90: number; p99: number; max: number; first: number; calls: number; timed_out: number; failed: number };
  errors: string[];
}

/** Runs `call` up to `calls` times one after another (within the series budget); latencies in ms. */
async function series(calls: number, call: () => Promise<void>): Promise<Series> {
  const latencies: number[] = [];
  const errors: string[] = [];
  let timedOut = 0;
  let failed = 0;
  const started = performance.now();
  for (let i = 0; i < calls; i++) {
    if (i > 0 && performance.now() - started > seriesBudgetMs) break;
    const t = performance.now();
    try {
      await call();
      latencies.push(performance.now() - t);
    } catch (error) {
      const e = ConnectError.from(error);
      if (e.code === Code.DeadlineExceeded) timedOut++;
      else failed++;
      if (errors.length < 5) errors.push(`${Code[e.code]}: ${e.rawMessage.slice(0, 200)}`);
      // A timed-out call counts at its timeout in the percentiles: it did not answer faster.
      latencies.push(performance.now() - t);
    }
  }
  // The series' first call, apart: it pays for code the service runs for the first time.
  const first = latencies[0] ?? 0;
  latencies.sort((a, b) => a - b);
  const at = (q: number) => (latencies.length === 0 ? 0 : latencies[Math.min(latencies.length - 1, Math.ceil(q * latencies.length) - 1)]!);
  return {
    stats: { p50: round(at(0.5)), p90: round(at(0.9)), p99: round(at(0.99)), max: round(latencies.at(-1) ?? 0), first: round(first), calls: latencies.length, timed_out: timedOut, failed },
    errors,
  };
}

function summary(name: string, s: Series): string {
  const { p50, p90, p99, max, calls, timed_out, failed } = s.stats;
  return `${name}: p50 ${p50} ms, p90 ${p90} ms, p99 ${p99} ms, max ${max} ms over ${calls} calls (${timed_out} timed out, ${failed} failed)`;
}

function round(n: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
