// The composition root: the only place that picks concrete parts (embedded or server ClickHouse,
// Redis or in-process live store) and wires them into the pipeline, the RPC routes and the port.
import type http from "node:http";
import type http2 from "node:http2";
import type { ClickHouseClient } from "@clickhouse/client";
import { createContextValues, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { ServerReflection } from "../gen/grpc/reflection/v1/reflection_pb.js";
import { FleetService } from "../gen/wattstream/fleet/v1/fleet_service_pb.js";
import { PartnerService } from "../gen/wattstream/partner/v1/partner_service_pb.js";
import { IngestService } from "../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { RESTORE_SLICES, restoreNewestReadings } from "./analytics/newest-readings.js";
import { queryDeviceTotals, queryDeviceTotalsOf } from "./analytics/fleet-efficiency.js";
import { PerformanceSnapshot } from "./analytics/performance-snapshot.js";
import { DEFAULT_WINDOW_HOURS, FleetHandler } from "./api/fleet-service.js";
import { HealthChecker, registerHealth } from "./api/health-service.js";
import { IngestHandler } from "./api/ingest-service.js";
import { PartnerHandler } from "./api/partner-service.js";
import { registerReflection } from "./api/reflection-service.js";
import { Authenticator } from "./auth/authenticator.js";
import { peerCertificateOf } from "./auth/peer-certificate.js";
import { peerCertificateKey } from "./auth/principal.js";
import { createRequestGate, type AccessPolicy } from "./auth/request-gate.js";
import { StartupError, type Config } from "./config.js";
import { IngestMetrics } from "./observe/metrics.js";
import { DeviceRateLimit } from "./pipeline/device-rate-limit.js";
import { IngestEngine } from "./pipeline/ingest-engine.js";
import { ProcessPool } from "./process/process-pool.js";
import type { DeviceKind } from "./process/history-rows.js";
import { bidiStreamingMethod, clientStreamingMethod, createLeanGrpcStreams, unaryMethod } from "./server/lean-grpc-streams.js";
import { scanReadings } from "./pipeline/received-reading.js";
import { Listener, type RequestHandler } from "./server/listener.js";
import { readTlsMaterial } from "./server/tls-material.js";
import { consoleHandler } from "./server/console-routes.js";
import { withCors } from "./server/cors.js";
import { probeHandler } from "./server/probe-routes.js";
import { openHistoryClient, STUCK_STATEMENT_MS, type HistoryClient } from "./store/history/clickhouse-client.js";
import { createHistorySink, type HistorySink } from "./store/history/history-sink.js";
import { readsAfterRollups } from "./store/history/reads-after-rollups.js";
import { TableBatcher } from "./store/history/table-batcher.js";
import { applyMigrations, loadMigrations } from "./store/history/migrations.js";
import { ClickHouseStoredEventFinder } from "./store/history/stored-events.js";
import type { LiveStore } from "./store/live/live-store.js";
import { MemoryLiveStore } from "./store/live/memory-live-store.js";
import { RedisLiveStore } from "./store/live/redis-live-store.js";

export interface RunningService {
  /** The port actually bound (useful when the configured port is 0). */
  readonly port: number;
  /** Graceful stop: refuse new calls, let in-flight ones finish, then close storage. Idempotent. */
  stop(): Promise<void>;
  /**
   * Resolves once every reading acknowledged so far is in the rollups too (the embedded engine
   * writes them up to ROLLUP_INTERVAL later; the service's answers wait for this themselves).
   */
  rollupsCaughtUp(): Promise<void>;
}

/** Seams for tests that must inject a fault a real part cannot produce on demand. */
export interface ServiceFaults {
  /** Wraps the real history sink, e.g. to fail or stall inserts. */
  readonly wrapHistorySink?: (sink: HistorySink) => HistorySink;
  /** Handed the service's history client once open, e.g. to hold one of its statements. */
  readonly onHistoryClient?: (history: HistoryClient) => void;
  /** Overrides STUCK_STATEMENT_MS, so that a test need not wait a minute for a stuck statement. */
  readonly stuckStatementMs?: number;
}

/** The scope each method needs; health checks and reflection stay open to balancers and tools. */
const ACCESS: AccessPolicy = {
  [IngestService.typeName]: { "*": "readings:write" },
  [FleetService.typeName]: { "*": "fleet:read", LinkVehicleToMeter: "fleet:write" },
  [PartnerService.typeName]: { "*": "devices:read" },
  [Health.typeName]: { "*": "public" },
  [ServerReflection.typeName]: { "*": "public" },
};

/** The fewest libuv threads the embedded engine's concurrent statements should have (see startService). */
const MIN_THREADPOOL_SIZE = 8;

export async function startService(config: Config, log: Logger, faults: ServiceFaults = {}): Promise<RunningService> {
  // Files first: a wrong one should stop the service before anything is opened.
  const tls = readTlsMaterial(config.tls, config.auth.clientCaFile);
  const authenticator = openAuthenticator(config, log);
  const stuckStatementMs = faults.stuckStatementMs ?? STUCK_STATEMENT_MS;
  // The worker threads load their module (1–2 s from TypeScript sources on a busy machine) while
  // the stores open; the listener opens once they have, so the first batch does not wait for it.
  const pool = new ProcessPool(config.ingest.workers);
  const workersReady = pool.warmUp();
  workersReady.catch(() => undefined);
  const { history, liveStore, stopRestore, realSink } = await openStores(config, log, faults, stuckStatementMs).catch(async (error: unknown) => {
    await pool.close();
    throw error;
  });
  const metrics = new IngestMetrics();
  const sink = faults.wrapHistorySink?.(realSink) ?? realSink;
  // The answers' reads: each that reads a rollup first waits for it to hold every block already stored.
  const answers = readsAfterRollups(history.client, realSink);
  const { inserts } = config.ingest;
  const batcherOptions = {
    maxRowsPerInsert: inserts.maxRowsPerInsert,
    minRowsPerInsert: inserts.minRowsPerInsert,
    lingerMs: inserts.lingerMs,
    insertTimeoutMs: inserts.timeoutMs,
    maxAttempts: inserts.maxAttempts,
  };
  const batcher = (kind: DeviceKind) =>
    new TableBatcher(kind, sink, batcherOptions, (record) => {
      metrics.recordFlush(record);
      log.debug(record, "insert attempt");
    });
  const batchers = { meter: batcher("meter"), vehicle: batcher("vehicle"), battery: batcher("battery") };
  const performanceSnapshot = config.fleet.performanceSnapshot
    ? new PerformanceSnapshot({
        windowMs: DEFAULT_WINDOW_HOURS * 3_600_000,
        load: (fromMs, toMs) => queryDeviceTotals(answers, fromMs, toMs),
        loadDevices: (deviceIds, fromMs, toMs) => queryDeviceTotalsOf(answers, deviceIds, fromMs, toMs),
        log,
      })
    : undefined;
  const engine = new IngestEngine({
    process: (task) => pool.run(task),
    liveStore,
    batchers,
    stored: new ClickHouseStoredEventFinder(history.client),
    limits: config.ingest,
    log,
    metrics,
    historyWrites: performanceSnapshot,
  });
  metrics.observeGauges({
    rowsInFlight: () => engine.inFlight.inFlight,
    rowsWaiting: () => Object.values(batchers).reduce((sum, b) => sum + b.pendingRows, 0),
    rollupBlocksWaiting: () => realSink.pendingRollupBlocks,
    workerQueue: () => pool.queueSize,
    workers: () => pool.threads,
  });
  metrics.observeLiveWatchers(() => liveStore.subscriberCount);
  metrics.observeBoundStatementWait(() => history.heldBoundStatementMs());

  // A statement binding parameters that the embedded engine never answers holds every later one
  // (chdb runs them one at a time process-wide): fleet calls and history lookups would all wait
  // behind it. Such an instance should get no traffic and, if it lasts, be restarted.
  let heldReported = false;
  const isReady = async () => {
    const heldMs = history.heldBoundStatementMs();
    if (heldMs >= stuckStatementMs) {
      if (!heldReported) {
        log.error(
          { heldMs: Math.round(heldMs) },
          "a statement binding parameters has not returned; the engine runs them one at a time, so every fleet call waits behind it: not ready until it returns (restart the service if it does not)",
        );
      }
      heldReported = true;
      throw new Error(`a statement on the history store has not returned for ${Math.round(heldMs / 1000)} s`);
    }
    heldReported = false;
    const ping = await history.client.ping();
    if (!ping.success) throw new Error("history store does not answer");
    await liveStore.ping();
  };
  const rateLimit = new DeviceRateLimit({ readingsPerSecond: config.calls.deviceReadingsPerSecond, burst: config.calls.deviceBurstReadings });
  const ingest = new IngestHandler({ engine, limits: { ...config.ingest, ...config.calls }, metrics, rateLimit, authenticator });
  const fleet = new FleetHandler(answers, config.fleet, liveStore, Date.now, {
    // The embedded engine locks its data directory to this process, so every link is written
    // through it and invalidates the copy: reloading it on a timer (~18 ms of the engine every
    // 5 s with 6,667 links, queued ahead of any call that came meanwhile) would buy nothing.
    linkCache: { maxAgeMs: history.embedded ? Infinity : config.fleet.linkCacheMaxAgeMs },
    performanceSnapshot,
    countPerformanceAnswer: (source) => metrics.performanceAnswers.inc({ source }),
  });
  const routes = (router: ConnectRouter) => {
    router.service(IngestService, ingest);
    router.service(
      FleetService,
      fleet,
    );
    router.service(
      PartnerService,
      new PartnerHandler(liveStore, (principal, deviceId) => authenticator?.mayRead(principal, deviceId) ?? true, config.fleet.offlineAfterMs),
    );
    registerHealth(
      router,
      new HealthChecker({
        services: [IngestService.typeName, FleetService.typeName, PartnerService.typeName, Health.typeName],
        isReady: () => isReady().then(() => true, () => false),
      }),
    );
    registerReflection(router, { services: [IngestService, FleetService, PartnerService, Health] });
  };

  // No shutdownSignal: connect links every call's signal to it with a listener, and an
  // EventTarget's add/removeEventListener costs grow with its listener count — with thousands of
  // concurrent calls that made each call cost milliseconds (measured). At shutdown the listener
  // destroys the connections still open after the grace period instead, which cancels their calls.
  const requestGate = createRequestGate(ACCESS, authenticator, (code, service) => metrics.deniedCalls.inc({ code, service }));
  // Only where a client certificate can identify a device: otherwise every call would carry a
  // context and a closure it never uses.
  const withPeerCertificate = authenticator !== undefined && config.auth.clientCaFile !== undefined;
  // The certificate is read from the connection's socket when the request gate asks for it.
  const peerCertificateValues = (socket: unknown) => createContextValues().set(peerCertificateKey, () => peerCertificateOf(socket));
  const contextValues = withPeerCertificate
    ? (req: http.IncomingMessage | http2.Http2ServerRequest) =>
        // Over HTTP/2 the request's socket is a proxy of the stream; the session's is the connection's.
        peerCertificateValues(("stream" in req ? req.stream.session?.socket : undefined) ?? req.socket)
    : undefined;
  const streamContextValues = withPeerCertificate ? (stream: http2.ServerHttp2Stream) => peerCertificateValues(stream.session?.socket) : undefined;
  // Paths that are not RPCs: the operator console, then the probes and metrics.
  const serveConsole = consoleHandler(log);
  const serveProbe = probeHandler(isReady, metrics.registry);
  const plainRoutes: RequestHandler = (req, res) => {
    if (!serveConsole(req, res)) serveProbe(req, res);
  };
  const connectHandler = connectNodeAdapter({
    routes,
    readMaxBytes: config.server.maxMessageBytes,
    writeMaxBytes: config.server.maxMessageBytes,
    maxTimeoutMs: config.server.maxTimeoutMs,
    fallback: plainRoutes,
    requestGate,
    ...(contextValues !== undefined && { contextValues }),
  });
  // The device streams over gRPC, the long-lived calls a host holds by the ten thousand, take the
  // lean path (src/server/lean-grpc-streams.ts); LEAN_GRPC_STREAMS=off sends them to connect too.
  const lean = config.leanGrpcStreams
    ? createLeanGrpcStreams({
        methods: [
          // Messages are scanned for the fields the main thread needs; the worker decodes the rest.
          bidiStreamingMethod(IngestService.method.syncReadings, (requests, ctx) => ingest.syncReceived(requests, ctx), scanReadings),
          clientStreamingMethod(IngestService.method.streamReadings, (requests, ctx) => ingest.streamReceived(requests, ctx), scanReadings),
          // Devices' and browsers' unary batches, and the fleet's questions, which dashboards ask
          // back to back (see unaryMethod).
          unaryMethod(IngestService.method.ingestReadings, (request, ctx) => ingest.ingestReceived(request, ctx), scanReadings),
          unaryMethod(FleetService.method.getVehiclePerformance, (request) => fleet.getVehiclePerformance(request)),
          unaryMethod(FleetService.method.getFleetSummary, (request) => fleet.getFleetSummary(request)),
          unaryMethod(FleetService.method.listAlerts, (request) => fleet.listAlerts(request)),
          unaryMethod(FleetService.method.getLiveState, (request) => fleet.getLiveState(request)),
          unaryMethod(FleetService.method.getDeviceHealth, (request) => fleet.getDeviceHealth(request)),
        ],
        requestGate,
        readMaxBytes: config.server.maxMessageBytes,
        writeMaxBytes: config.server.maxMessageBytes,
        maxTimeoutMs: config.server.maxTimeoutMs,
        contextValues: streamContextValues,
      })
    : undefined;
  // The lean path is offered each HTTP/2 stream first; what it declines reaches connect as a request.
  const listener = new Listener(withCors(config.corsOrigins, connectHandler), { limits: config.server, tls, streamRoute: lean });

  /**
   * Closes everything behind the listener, in order, once no call is running: on stop, and when the
   * listener cannot start — exiting with the engine's threads still at work could crash the process
   * (a segmentation fault in one exit of four, seen with an unusable HOST) instead of exiting 1.
   */
  const closeBehindListener = async (stage: (name: string, step: () => Promise<void>) => Promise<void>) => {
    performanceSnapshot?.close();
    await stage("inserts drained", async () => {
      await Promise.all(Object.values(batchers).map((b) => b.drain()));
    });
    await stage("workers stopped", () => pool.close());
    await stage("live state restore stopped", stopRestore);
    await stage("history sink closed", () => realSink.close());
    await stage("live store closed", () => liveStore.close());
    await stage("history client closed", () => history.client.close());
    authenticator?.stop();
  };

  const closeAfterFailedStart = () =>
    closeBehindListener((_name, step) => step()).catch((closeError: unknown) => log.warn({ err: closeError }, "closing after a failed start failed"));
  await workersReady.catch(async (error: unknown) => {
    await closeAfterFailedStart();
    throw new Error(`the worker threads cannot start (${(error as Error).message})`, { cause: error });
  });
  const port = await listener.listen(config.port, config.host).catch(async (error: unknown) => {
    await closeAfterFailedStart();
    throw new StartupError("HOST and PORT", `cannot listen on ${config.host} port ${config.port} (${(error as Error).message})`, { cause: error });
  });
  // The console's address as a browser on this host reaches it.
  const consoleHost = config.host === "0.0.0.0" || config.host === "::" ? "localhost" : config.host.includes(":") ? `[${config.host}]` : config.host;
  log.info(
    { port, host: config.host, tls: config.tls !== undefined, console: `${config.tls ? "https" : "http"}://${consoleHost}:${port}/` },
    "serving gRPC, gRPC-Web and Connect",
  );

  let stopping: Promise<void> | undefined;
  return {
    port,
    rollupsCaughtUp: () => realSink.rollupsCaughtUp(),
    stop() {
      stopping ??= (async () => {
        log.info({ graceMs: config.server.shutdownGraceMs }, "shutting down: finishing in-flight calls");
        // Calls still running when the grace period ends are cancelled (their devices resend).
        // Each stage is logged at debug, so a shutdown that stalls says what it waits for.
        const stage = async (name: string, step: () => Promise<void>) => {
          await step();
          log.debug({ stage: name }, "shutting down: stage done");
        };
        await stage("calls finished", () => listener.close(config.server.shutdownGraceMs));
        await closeBehindListener(stage);
        log.info("stopped");
      })();
      return stopping;
    },
  };
}

/** The authenticator, or undefined when AUTH=off — said loudly, as it lets anyone write anything. */
function openAuthenticator(config: Config, log: Logger): Authenticator | undefined {
  const { auth } = config;
  if (!auth.enabled) {
    log.warn(
      "AUTHENTICATION IS OFF (AUTH=off): any caller may write readings for any device and read the whole fleet. " +
        "For local development only; set AUTH=on and issue credentials with `npm run devices -- add <device-id>`.",
    );
    return undefined;
  }
  const authenticator = new Authenticator(auth.credentialsFile, log);
  authenticator.start();
  const counts = authenticator.counts;
  log.info({ credentialsFile: auth.credentialsFile, ...counts, clientCertificates: auth.clientCaFile !== undefined }, "authentication on");
  if (config.tls === undefined) {
    log.warn("authentication is on without TLS: tokens and keys cross the network in clear unless a proxy in front terminates TLS");
  }
  if (counts.devices === 0 && counts.apiKeys === 0) {
    log.warn({ credentialsFile: auth.credentialsFile }, "no credentials issued yet: every call will be refused until `npm run devices -- add` issues some");
  }
  return authenticator;
}

/** Opens the history store (migrated) and the live store, and the sink that writes history. */
async function openStores(config: Config, log: Logger, faults: ServiceFaults, stuckStatementMs: number) {
  const history = await openHistoryClient(config.clickhouse, {
    stuckAfterMs: stuckStatementMs,
    onStatementStuck: (runningMs) =>
      log.warn({ runningMs: Math.round(runningMs) }, "a statement on the engine's main connection is still running; later statements use a new connection"),
  }).catch((error: unknown) => {
    const { url, dataDir } = config.clickhouse;
    throw url === undefined
      ? new StartupError("DATA_DIR", `cannot open the embedded ClickHouse in ${dataDir} (${(error as Error).message})`, { cause: error })
      : new StartupError("CLICKHOUSE_URL", `cannot reach ClickHouse at ${redactUrl(url)} (${(error as Error).message})`, { cause: error });
  });
  faults.onHistoryClient?.(history);
  let live: Awaited<ReturnType<typeof openLiveStore>> | undefined;
  try {
    const applied = await applyMigrations(history.client, await loadMigrations());
    log.info(
      {
        embedded: history.embedded,
        database: history.database,
        dataDir: history.embedded ? config.clickhouse.dataDir : undefined,
        applied,
        // Inserts a killed process left unfinished, sent again so the rollups are whole.
        recoveredInserts: history.recoveredInserts,
      },
      "history store ready",
    );
    // Each statement on the embedded engine holds one of libuv's threads until it returns
    // (measured: six 1 s statements on six connections took 2 s with the default 4 threads, 1 s
    // with 8). The service keeps an insert per table and its reads going at once, and the threads
    // also serve the spool's file writes: with 4, an acknowledgement could wait for a slow fleet
    // query. libuv reads the size once, before this code runs, so it can only be set outside the
    // process.
    const threadpoolSize = Number(process.env.UV_THREADPOOL_SIZE) || 4;
    if (history.embedded && threadpoolSize < MIN_THREADPOOL_SIZE) {
      log.warn(
        { UV_THREADPOOL_SIZE: threadpoolSize },
        `UV_THREADPOOL_SIZE is below ${MIN_THREADPOOL_SIZE}: the embedded engine's statements will queue for libuv's threads; start with UV_THREADPOOL_SIZE=16 (npm start and the Docker image do)`,
      );
    }

    live = await openLiveStore(config, log, history.client);
    const realSink = await createHistorySink(history, {
      onLaneReplaced: (kind) =>
        log.warn({ table: kind }, "an insert is still running past its timeout; the table's next inserts use a new engine connection"),
      rollupIntervalMs: config.ingest.inserts.rollupIntervalMs,
      onRollupFeedError: (kind, error, blocks) =>
        log.warn({ table: kind, blocks, err: error }, "writing stored blocks into the rollups failed; trying again"),
    });
    return { history, liveStore: live.store, stopRestore: live.stopRestore, realSink };
  } catch (error) {
    // What opened is closed before the error goes on: a process exiting with the engine's threads
    // still at work can crash, and an embedding that carries on would keep the engine open.
    await live?.stopRestore().catch(() => undefined);
    await live?.store.close().catch(() => undefined);
    await history.client.close().catch(() => undefined);
    throw error;
  }
}

async function openLiveStore(config: Config, log: Logger, history: ClickHouseClient): Promise<{ store: LiveStore; stopRestore: () => Promise<void> }> {
  if (config.redisUrl === undefined) {
    log.info({ ledgerMaxEvents: config.ingest.memoryLedgerMaxEvents }, "live store: embedded (in-process; one service process only)");
    const store = new MemoryLiveStore({ maxEvents: config.ingest.memoryLedgerMaxEvents });
    return { store, stopRestore: restoreInBackground(store, config, log, history) };
  }
  const store = new RedisLiveStore({ url: config.redisUrl });
  await store.connect().catch((error: unknown) => {
    throw new StartupError("REDIS_URL", `cannot use Redis at ${redactUrl(config.redisUrl!)} (${(error as Error).message})`, { cause: error });
  });
  log.info({ redis: redactUrl(config.redisUrl) }, "live store: redis");
  const policy = await store.evictionPolicy();
  if (policy !== undefined && policy !== "noeviction") {
    log.warn(
      { maxmemoryPolicy: policy },
      "Redis may evict dedupe entries under memory pressure: a resend of an evicted event id could be stored twice. Set maxmemory-policy noeviction and size Redis for DEDUPE_WINDOW (docs/capacity.md)",
    );
  }
  if (!(await store.recognisesRestarts())) {
    log.warn(
      "Redis does not tell this user its run_id (INFO server): a Redis restart that keeps its data from a snapshot or an append-only file missing its last writes cannot be recognised, and a resend of a reading stored just before it could be stored twice. Allow INFO for this user, or run Redis without persistence (docs/capacity.md)",
    );
  }
  return { store, stopRestore: async () => {} };
}

/**
 * Fills the in-process live store, which starts empty, with each device's newest reading from
 * history (within LIVE_RESTORE_WINDOW), so a device silent since before a restart is still known —
 * and offline. In the background, newest first in slices from an hour to a day: the port opens at
 * once, ingest interleaves with the statements, and a reading arriving meanwhile wins over the restored
 * one (the store keeps the newest by observed_at). Answers a function that stops it and waits.
 */
function restoreInBackground(store: MemoryLiveStore, config: Config, log: Logger, history: ClickHouseClient): () => Promise<void> {
  let stopped = false;
  const started = performance.now();
  const done = restoreNewestReadings(history, (updates) => store.applyLiveState(updates), {
    sinceMs: Date.now() - config.liveRestoreWindowMs,
    ...RESTORE_SLICES,
    stopped: () => stopped,
  }).then(
    (devices) => log.info({ devices, ms: Math.round(performance.now() - started), complete: !stopped }, "live state restored from history"),
    (error: unknown) => log.error({ err: error }, "restoring live state from history failed; devices reappear as they report"),
  );
  return async () => {
    stopped = true;
    await done;
  };
}

function redactUrl(url: string): string {
  const parsed = new URL(url);
  if (parsed.password) parsed.password = "***";
  return parsed.toString();
}
