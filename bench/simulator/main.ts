// npm run simulate -- [options]: a fleet of meters, EVs and battery backup units streaming to a
// running service the way firmware does. See docs/simulator.md, or run with --help.
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { FleetService } from "../../gen/wattstream/fleet/v1/fleet_service_pb.js";
import type { Reading } from "../../gen/wattstream/telemetry/v1/reading_pb.js";
import {
  ClientStats,
  createTransport,
  DeviceClient,
  limitConcurrentCalls,
  toWireReading,
  type IngestTransport,
  type TransportKind,
} from "./device-client.js";
import { addApiKey, addDevice, revokeApiKey, updateCredentials } from "../../src/auth/credentials.js";
import { createRandom, deriveSeed, FleetModel } from "./fleet-model.js";
import { formatSummary, ProgressReporter, type LinkSummary, type ProgressSnapshot, type SimulationSummary } from "./progress.js";

const USAGE = `Usage: npm run simulate -- [options]

Streams a simulated fleet's readings to a running wattstream service over StreamReadings.

Target
  --target HOST:PORT        service address (default localhost:8080)
  --transport KIND          grpc (@grpc/grpc-js, default) | connect (connect-node, Connect
                            protocol over HTTP/2) | connect-grpc (connect-node, gRPC) |
                            sync (connect-node, gRPC, the bidirectional SyncReadings) |
                            unary (connect-node, gRPC, IngestReadings: an upload per request)
  --credentials FILE        the service's credentials file (AUTH=on): register every simulated
                            device with a token, and an operator key for the links, in it
Fleet
  --meters N                smart meters (default 10)
  --vehicles N              EVs; vehicle i charges from meter i % meters (default 10)
  --batteries N             battery backup units (default 5)
  --seed N                  seed: the same seed and options give the same fleet (default 1)
  --faulty-share X          share of chargers below 85 % efficient (default 0.1)
  --aging-share X           share of battery units that age: worn (WARN) and failing (CRITICAL)
                            in turn (default 0.3)
  --offline-share X         share of devices that go offline and upload a backlog (default 0.1)
  --malformed-share X       share of readings sent malformed on purpose (default 0)
  --lost-answer-share X     share of answers "lost" on the way back, so the device resends
                            and the service counts duplicates (default 0.01)
  --prefix NAME             device id prefix (default sim)
Time
  --interval SECONDS        simulated time between two readings of a device, ≥ 0.001 (default 60)
  --compress FACTOR         simulated seconds per wall second; 1440 = a day in a minute (default 1)
  --duration SECONDS        wall time to run (default 60); then devices reconnect and drain
  --start ISO               simulated start (default: now − duration × compress, so the
                            simulated clock ends at about now)
Uploads
  --frame N                 readings per StreamReadings message (default 100)
  --max-call-readings N     most readings per call (default 1000)
  --upload-every SECONDS    a device uploads new readings at most this often (default 1)
  --max-calls N             calls open at once across the fleet (default 100)
  --deadline SECONDS        deadline of one call (default 30)
  --drain-timeout SECONDS   how long to wait at the end for backlogs to upload (default 30)
Output
  --json FILE               also write the summary as JSON (- for stdout)
  --quiet                   no progress line
  --no-link                 do not register the vehicles' meter links with FleetService
                            (by default they are, as the run starts, waiting for the service)
  --help

Exit status: 0 when every reading was acknowledged or rejected as not retryable (and every link
registered), 1 when some were still unacknowledged at the end or a link was not registered, 2 for
a bad option.`;

class UsageError extends Error {}

/** Most readings one run may generate: far beyond any run that ends in a day, below a typo's. */
const MAX_RUN_READINGS = 1e9;

interface Cli {
  readonly target: string;
  readonly transport: TransportKind;
  readonly meters: number;
  readonly vehicles: number;
  readonly batteries: number;
  readonly seed: number;
  readonly faultyShare: number;
  readonly agingShare: number;
  readonly offlineShare: number;
  readonly malformedShare: number;
  readonly lostAnswerShare: number;
  readonly prefix: string;
  readonly intervalMs: number;
  readonly compress: number;
  readonly durationMs: number;
  readonly startMs: number | undefined;
  readonly frame: number;
  readonly maxCallReadings: number;
  readonly uploadEveryMs: number;
  readonly maxCalls: number;
  readonly deadlineMs: number;
  readonly drainTimeoutMs: number;
  readonly json: string | undefined;
  readonly quiet: boolean;
  /** Register each vehicle's link to its meter with FleetService before streaming. */
  readonly link: boolean;
  /** The service's credentials file, when it authenticates: devices and a key are issued in it. */
  readonly credentialsFile: string | undefined;
  readonly help: boolean;
}

/**
 * Tells the service which meter each vehicle charges from, from the simulated start on, so its
 * efficiency answers compare the right energy (FleetService.LinkVehicleToMeter).
 */
/** Codes after which registering a link is tried again, as a device resends after them. */
const RETRYABLE_LINK_CODES = new Set([Code.Unavailable, Code.DeadlineExceeded, Code.ResourceExhausted, Code.Aborted]);

/** What became of registering the vehicles' links. */
export interface LinkRegistration {
  readonly wanted: number;
  readonly registered: number;
  /** Why the rest were not: the service refused (say, no operator key), or the run ended first. */
  readonly failure?: string;
}

/**
 * Registers each vehicle's link with FleetService while the devices stream: a service not up yet
 * is waited for with backoff (0.5 s doubling to 5 s) as the devices wait for it, until `over()`.
 * A refusal (no operator key for a service with AUTH=on, say) stops it, and is reported: readings
 * still flow, the efficiency answers then say NO_LINK.
 */
async function registerLinks(
  target: string,
  devices: FleetModel["devices"],
  startMs: number,
  apiKey: string | undefined,
  over: () => boolean,
): Promise<LinkRegistration> {
  const client = createClient(FleetService, createGrpcTransport({ baseUrl: `http://${target}` }));
  const headers = apiKey === undefined ? undefined : { "x-api-key": apiKey };
  const vehicles = devices.flatMap((d) => (d.kind === "vehicle" && d.meterId !== undefined ? [{ id: d.id, meterId: d.meterId }] : []));
  let registered = 0;
  let delayMs = 500;
  while (registered < vehicles.length) {
    const vehicle = vehicles[registered]!;
    try {
      await client.linkVehicleToMeter({ vehicleId: vehicle.id, meterId: vehicle.meterId, validFrom: timestampFromMs(startMs) }, { headers, timeoutMs: 10_000 });
      registered++;
      delayMs = 500;
    } catch (error) {
      const e = ConnectError.from(error);
      const failure = `${Code[e.code]}: ${e.rawMessage}`;
      if (!RETRYABLE_LINK_CODES.has(e.code)) return { wanted: vehicles.length, registered, failure };
      if (over()) return { wanted: vehicles.length, registered, failure: `the run ended first (last: ${failure})` };
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      delayMs = Math.min(5_000, delayMs * 2);
    }
  }
  return { wanted: vehicles.length, registered };
}

/**
 * Registers every simulated device in the service's credentials file with a fresh token, and an
 * operator key (for the links), as `npm run devices` would; the service picks them up in a second.
 */
async function issueCredentials(file: string, devices: FleetModel["devices"], prefix: string): Promise<{ tokens: Map<string, string>; apiKey: string }> {
  const tokens = new Map<string, string>();
  // Under the file's lock, as `npm run devices` changes it: neither run loses the other's change.
  const { key } = await updateCredentials(file, (read) => {
    let credentials = read;
    for (const device of devices) {
      const added = addDevice(credentials, device.id);
      credentials = added.credentials;
      tokens.set(device.id, added.token);
    }
    const keyName = `simulator-${prefix}`;
    if (credentials.apiKeys[keyName]?.revokedAt === undefined && credentials.apiKeys[keyName] !== undefined) {
      credentials = revokeApiKey(credentials, keyName);
    }
    return addApiKey(credentials, keyName, { role: "operator" });
  });
  await new Promise((resolve) => setTimeout(resolve, 2_000)); // the service re-reads the file every second
  return { tokens, apiKey: key };
}

function parseCli(argv: string[]): Cli {
  const str = { type: "string" } as const;
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        target: str,
        transport: str,
        meters: str,
        vehicles: str,
        batteries: str,
        seed: str,
        "faulty-share": str,
        "aging-share": str,
        "offline-share": str,
        "malformed-share": str,
        "lost-answer-share": str,
        prefix: str,
        interval: str,
        compress: str,
        duration: str,
        start: str,
        frame: str,
        "max-call-readings": str,
        "upload-every": str,
        "max-calls": str,
        deadline: str,
        "drain-timeout": str,
        json: str,
        credentials: str,
        quiet: { type: "boolean" },
        "no-link": { type: "boolean" },
        help: { type: "boolean" },
      },
    }));
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const v = values as Record<string, string | boolean | undefined>;
  const number = (name: string, fallback: number, check: { min?: number; max?: number; integer?: boolean; above?: number } = {}) => {
    const raw = v[name];
    if (raw === undefined) return fallback;
    const n = Number(raw);
    const bad =
      typeof raw !== "string" ||
      raw.trim() === "" ||
      !Number.isFinite(n) ||
      (check.integer === true && !Number.isInteger(n)) ||
      (check.min !== undefined && n < check.min) ||
      (check.max !== undefined && n > check.max) ||
      (check.above !== undefined && n <= check.above);
    if (bad) {
      const bounds =
        check.min !== undefined && check.max !== undefined
          ? ` from ${check.min} to ${check.max}`
          : check.min !== undefined
            ? ` ≥ ${check.min}`
            : check.above !== undefined
              ? ` > ${check.above}`
              : "";
      const want = `${check.integer ? "a whole number" : "a number"}${bounds}`;
      throw new UsageError(`--${name} is ${JSON.stringify(raw)}; it must be ${want}`);
    }
    return n;
  };
  const share = (name: string, fallback: number) => number(name, fallback, { min: 0, max: 1 });
  const count = (name: string, fallback: number) => number(name, fallback, { min: 0, integer: true });
  const seconds = (name: string, fallback: number) => number(name, fallback, { above: 0 }) * 1000;

  const transport = (v.transport as string | undefined) ?? "grpc";
  if (!["grpc", "connect", "connect-grpc", "sync", "unary"].includes(transport)) {
    throw new UsageError(`--transport is ${JSON.stringify(transport)}; it must be grpc, connect, connect-grpc, sync or unary`);
  }
  let startMs: number | undefined;
  if (v.start !== undefined) {
    startMs = Date.parse(v.start as string);
    if (!Number.isFinite(startMs)) throw new UsageError(`--start is ${JSON.stringify(v.start)}; it must be an ISO 8601 time, e.g. 2026-11-25T00:00:00Z`);
  }
  const cli: Cli = {
    target: (v.target as string | undefined) ?? "localhost:8080",
    transport: transport as TransportKind,
    meters: count("meters", 10),
    vehicles: count("vehicles", 10),
    batteries: count("batteries", 5),
    seed: number("seed", 1, { integer: true }),
    faultyShare: share("faulty-share", 0.1),
    agingShare: share("aging-share", 0.3),
    offlineShare: share("offline-share", 0.1),
    malformedShare: share("malformed-share", 0),
    lostAnswerShare: share("lost-answer-share", 0.01),
    prefix: (v.prefix as string | undefined) ?? "sim",
    // observed_at is kept to the millisecond: a device cannot read more often than that.
    intervalMs: number("interval", 60, { min: 0.001 }) * 1000,
    compress: number("compress", 1, { above: 0 }),
    durationMs: seconds("duration", 60),
    startMs,
    frame: number("frame", 100, { min: 1, integer: true }),
    maxCallReadings: number("max-call-readings", 1000, { min: 1, integer: true }),
    uploadEveryMs: number("upload-every", 1, { min: 0 }) * 1000,
    maxCalls: number("max-calls", 100, { min: 1, integer: true }),
    deadlineMs: seconds("deadline", 30),
    drainTimeoutMs: number("drain-timeout", 30, { min: 0 }) * 1000,
    json: v.json as string | undefined,
    quiet: v.quiet === true,
    link: v["no-link"] !== true,
    credentialsFile: v.credentials as string | undefined,
    help: v.help === true,
  };
  if (cli.meters + cli.vehicles + cli.batteries === 0) throw new UsageError("the fleet is empty: give --meters, --vehicles or --batteries");
  const readings = ((cli.meters + cli.vehicles + cli.batteries) * cli.durationMs * cli.compress) / cli.intervalMs;
  if (readings > MAX_RUN_READINGS) {
    throw new UsageError(
      `the run would generate ${readings.toExponential(1)} readings (devices × --duration × --compress / --interval); at most ${MAX_RUN_READINGS.toExponential(0)}: lengthen --interval or shorten the run`,
    );
  }
  if (cli.prefix === "" || cli.prefix.length > 100) throw new UsageError("--prefix must be 1 to 100 characters");
  return cli;
}

/** The service's defaults (MAX_CLOCK_SKEW, MAX_READING_AGE): readings outside are rejected. */
const SERVICE_CLOCK_SKEW_MS = 5 * 60_000;
const SERVICE_MAX_READING_AGE_MS = 30 * 86_400_000;
const TICK_MS = 100;

async function main(argv: string[]): Promise<number> {
  let cli: Cli;
  try {
    cli = parseCli(argv);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`simulate: ${error.message}\nRun with --help for the options.\n`);
    return 2;
  }
  if (cli.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }

  const wallNow = Date.now();
  const spanMs = cli.durationMs * cli.compress;
  // Whole seconds: readable timestamps, and a rerun within the same second (same seed) resends the
  // same event ids, which the service counts as duplicates.
  const startMs = cli.startMs ?? Math.floor((wallNow - spanMs) / 1000) * 1000;
  const endMs = startMs + spanMs;
  if (endMs > wallNow + SERVICE_CLOCK_SKEW_MS) {
    process.stderr.write(
      `simulate: warning: the simulated clock ends at ${iso(endMs)}, more than 5 min ahead of now; the service rejects those readings (OBSERVED_AT_IN_FUTURE)\n`,
    );
  }
  if (startMs < wallNow - SERVICE_MAX_READING_AGE_MS) {
    process.stderr.write(`simulate: warning: the simulated clock starts more than 30 days ago; the service rejects those readings (OBSERVED_AT_TOO_OLD)\n`);
  }
  if (spanMs < cli.intervalMs) {
    process.stderr.write(`simulate: warning: ${spanMs / 1000} simulated seconds is less than one --interval; no readings will be generated\n`);
  }

  const model = new FleetModel({
    seed: cli.seed,
    meters: cli.meters,
    vehicles: cli.vehicles,
    batteries: cli.batteries,
    intervalMs: cli.intervalMs,
    startMs,
    endMs,
    faultyShare: cli.faultyShare,
    offlineShare: cli.offlineShare,
    malformedShare: cli.malformedShare,
    agingShare: cli.agingShare,
    prefix: cli.prefix,
  });
  const devices = model.devices;
  const stats = new ClientStats();
  const transport: IngestTransport = limitConcurrentCalls(createTransport(cli.transport, cli.target), cli.maxCalls);
  const credentials = cli.credentialsFile === undefined ? undefined : await issueCredentials(cli.credentialsFile, devices, cli.prefix);
  const clients = devices.map(
    (d) =>
      new DeviceClient({
        deviceId: d.id,
        transport,
        stats,
        frameReadings: cli.frame,
        maxCallReadings: cli.maxCallReadings,
        minCallGapMs: cli.uploadEveryMs,
        callTimeoutMs: cli.deadlineMs,
        lostAnswerShare: cli.lostAnswerShare,
        random: createRandom(deriveSeed(cli.seed, "client", d.index)),
        ...(credentials !== undefined && { token: credentials.tokens.get(d.id)! }),
      }),
  );

  // In the background: the devices wait for a service that is not up yet, and so do the links.
  let runOver = false;
  const linking = cli.link ? registerLinks(cli.target, devices, startMs, credentials?.apiKey, () => runOver) : undefined;
  void linking?.then((result) => {
    if (result.failure !== undefined) {
      process.stderr.write(`simulate: registered ${result.registered} of ${result.wanted} vehicle links (${result.failure}); readings still flow, but efficiency answers will say NO_LINK\n`);
    }
  });

  process.stdout.write(
    `simulating ${cli.meters} meters, ${cli.vehicles} vehicles, ${cli.batteries} battery units (seed ${cli.seed}): ` +
      `${iso(startMs)} → ${iso(endMs)} at ×${cli.compress} in ${cli.durationMs / 1000} s, to ${cli.target} over ${cli.transport}\n`,
  );

  // Ground truth for the efficiency answer: energy in the valid readings generated.
  const energy = new Float64Array(devices.length);
  let generated = 0;
  let malformed = 0;
  let outages = 0;
  const online = devices.map(() => true);
  let simNowMs = startMs;
  let phase: ProgressSnapshot["phase"] = "running";
  const wallStart = performance.now();

  const progress = new ProgressReporter(process.stdout, () => ({
    elapsedS: (performance.now() - wallStart) / 1000,
    simulatedAtMs: simNowMs,
    phase,
    sent: stats.sent,
    acknowledged: stats.acknowledged,
    duplicates: stats.duplicates,
    rejected: stats.rejected,
    pending: clients.reduce((n, c) => n + c.pending, 0),
    retries: stats.retries,
    failedCalls: Object.values(stats.failedCalls).reduce((a, b) => a + b, 0),
    offline: online.filter((on) => !on).length,
    devices: devices.length,
  }));

  const advance = (elapsedMs: number) => {
    simNowMs = startMs + Math.min(elapsedMs, cli.durationMs) * cli.compress;
    // Connectivity first: readings observed while offline go to the outbox and wait.
    for (const d of devices) {
      const on = model.isOnline(d.index, simNowMs);
      if (on === online[d.index]) continue;
      online[d.index] = on;
      if (!on) outages++;
      clients[d.index]!.setOnline(on);
    }
    const byDevice = new Map<number, Reading[]>();
    for (const r of model.advanceTo(simNowMs)) {
      generated++;
      if (r.malformed !== undefined) malformed++;
      else if (r.sample.kind === "meter") energy[r.deviceIndex]! += r.sample.kwhConsumedAc;
      else if (r.sample.kind === "vehicle") energy[r.deviceIndex]! += r.sample.kwhDeliveredDc;
      let list = byDevice.get(r.deviceIndex);
      if (list === undefined) byDevice.set(r.deviceIndex, (list = []));
      list.push(toWireReading(r));
    }
    for (const [index, readings] of byDevice) clients[index]!.enqueue(readings);
  };

  // Ctrl-C once: stop the simulated clock and drain; twice: stop at once.
  let interrupted = false;
  let hardStop!: () => void;
  const hardStopped = new Promise<void>((resolve) => (hardStop = resolve));
  let wakeGenerator: (() => void) | undefined;
  const onSigint = () => {
    if (!interrupted) {
      interrupted = true;
      wakeGenerator?.();
      process.stderr.write("\nsimulate: interrupted; uploading what is buffered (Ctrl-C again to stop now)\n");
    } else {
      hardStop();
    }
  };
  process.on("SIGINT", onSigint);

  if (!cli.quiet) progress.start();
  try {
    for (;;) {
      const elapsed = performance.now() - wallStart;
      if (interrupted || elapsed >= cli.durationMs) break;
      advance(elapsed);
      await new Promise<void>((resolve) => {
        wakeGenerator = resolve;
        setTimeout(resolve, Math.min(TICK_MS, cli.durationMs - elapsed));
      });
    }
    if (!interrupted) advance(cli.durationMs);

    // The run is over: every device reconnects and uploads its backlog.
    phase = "draining";
    for (const [i, client] of clients.entries()) {
      online[i] = true;
      client.setOnline(true);
    }
    let drainTimer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(clients.map((c) => c.whenIdle())),
      new Promise<void>((resolve) => (drainTimer = setTimeout(resolve, cli.drainTimeoutMs))),
      hardStopped,
    ]);
    clearTimeout(drainTimer);
  } finally {
    runOver = true;
    for (const client of clients) client.stop();
    transport.close();
    progress.stop();
    process.off("SIGINT", onSigint);
  }
  const linked = await linking;

  const wallSeconds = (performance.now() - wallStart) / 1000;
  const pending = clients.reduce((n, c) => n + c.pending, 0);
  const meterIndex = new Map(devices.map((d) => [d.id, d.index]));
  const links: LinkSummary[] = devices.flatMap((d) => {
    if (d.kind !== "vehicle") return [];
    const meter = d.meterId === undefined ? undefined : devices[meterIndex.get(d.meterId)!];
    const ac = meter === undefined ? 0 : energy[meter.index]!;
    return [
      {
        vehicle: d.id,
        meter: d.meterId,
        chargerEfficiency: d.chargerEfficiency,
        faultyCharger: d.faultyCharger,
        sharedMeter: meter?.kind === "meter" && meter.vehicleIds.length > 1,
        // No charging in the run (or no AC at all) leaves nothing to compare.
        generatedEfficiency: ac > 0 && energy[d.index]! > 0 ? Math.round((energy[d.index]! / ac) * 10_000) / 10_000 : null,
      },
    ];
  });
  const summary: SimulationSummary = {
    ok: pending === 0 && (linked === undefined || linked.registered === linked.wanted),
    target: cli.target,
    transport: cli.transport,
    seed: cli.seed,
    wallSeconds: Math.round(wallSeconds * 1000) / 1000,
    interrupted,
    simulated: { start: iso(startMs), end: iso(endMs), reached: iso(simNowMs), intervalSeconds: cli.intervalMs / 1000, compress: cli.compress },
    fleet: {
      meters: cli.meters,
      vehicles: cli.vehicles,
      batteries: cli.batteries,
      offlineProne: devices.filter((d) => d.offline.length > 0).map((d) => d.id),
      links,
      linksRegistered: linked ?? null,
      batteryUnits: devices.flatMap((d) =>
        d.kind === "battery" ? [{ id: d.id, condition: d.condition, nominalVoltage: d.nominalVoltage, initialWear: d.initialWear }] : [],
      ),
    },
    readings: {
      generated,
      malformed,
      sent: stats.sent,
      resent: stats.resent,
      acknowledged: stats.acknowledged,
      accepted: stats.accepted,
      duplicates: stats.duplicates,
      rejected: stats.rejected,
      rejectedByReason: stats.rejectedByReason,
      retryableRejected: stats.retryableRejected,
      pending,
      maxBacklog: clients.reduce((n, c) => Math.max(n, c.maxBacklog), 0),
    },
    calls: {
      total: stats.calls,
      answered: stats.answeredCalls,
      failed: stats.failedCalls,
      retries: stats.retries,
      pushbacks: stats.pushbacks,
      lostAnswers: stats.lostAnswers,
      linkDrops: stats.linkDrops,
      maxRetryDelayMs: stats.maxRetryDelayMs,
      inconsistentAnswers: stats.inconsistentAnswers,
    },
    offline: { outages },
    rate: {
      acknowledgedPerSecond: Math.round(stats.acknowledged / wallSeconds),
      sentPerSecond: Math.round(stats.sent / wallSeconds),
    },
  };

  process.stdout.write(formatSummary(summary));
  if (cli.json === "-") process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  else if (cli.json !== undefined) writeFileSync(cli.json, `${JSON.stringify(summary, null, 2)}\n`);
  return summary.ok ? 0 : 1;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

process.exitCode = await main(process.argv.slice(2));
