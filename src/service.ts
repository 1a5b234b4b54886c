// The composition root: the only place that picks concrete parts (embedded or server ClickHouse,
// Redis or in-process live store) and wires them into the pipeline, the RPC routes and the port.
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { Logger } from "pino";
import { Health } from "../gen/grpc/health/v1/health_pb.js";
import { IngestService } from "../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { HealthChecker, registerHealth } from "./api/health-service.js";
import { IngestHandler } from "./api/ingest-service.js";
import { registerReflection } from "./api/reflection-service.js";
import type { Config } from "./config.js";
import { IngestPipeline } from "./pipeline/ingest-pipeline.js";
import { Listener } from "./server/listener.js";
import { probeHandler } from "./server/probe-routes.js";
import { openHistoryClient } from "./store/history/clickhouse-client.js";
import { ClickHouseHistoryWriter } from "./store/history/history-writer.js";
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
}

export async function startService(config: Config, log: Logger): Promise<RunningService> {
  const history = await openHistoryClient(config.clickhouse);
  const applied = await applyMigrations(history.client, await loadMigrations());
  log.info(
    { embedded: history.embedded, database: history.database, dataDir: history.embedded ? config.clickhouse.dataDir : undefined, applied },
    "history store ready",
  );

  const liveStore = await openLiveStore(config, log);
  const pipeline = new IngestPipeline({
    liveStore,
    history: new ClickHouseHistoryWriter(history.client, history.embedded),
    stored: new ClickHouseStoredEventFinder(history.client),
    limits: config.ingest,
    log,
  });

  const isReady = async () => {
    const ping = await history.client.ping();
    if (!ping.success) throw new Error("history store does not answer");
    await liveStore.ping();
  };
  const routes = (router: ConnectRouter) => {
    router.service(IngestService, new IngestHandler(pipeline, config.ingest.maxBatchReadings));
    registerHealth(
      router,
      new HealthChecker({
        services: [IngestService.typeName],
        isReady: () => isReady().then(() => true, () => false),
      }),
    );
    registerReflection(router, { services: [IngestService, Health] });
  };

  const shutdown = new AbortController();
  const handler = connectNodeAdapter({
    routes,
    readMaxBytes: config.server.maxMessageBytes,
    writeMaxBytes: config.server.maxMessageBytes,
    maxTimeoutMs: config.server.maxTimeoutMs,
    shutdownSignal: shutdown.signal,
    fallback: probeHandler(isReady),
  });
  const listener = new Listener(handler, { limits: config.server, tls: config.tls });
  const port = await listener.listen(config.port, config.host);
  log.info({ port, host: config.host, tls: config.tls !== undefined }, "serving gRPC, gRPC-Web and Connect");

  let stopping: Promise<void> | undefined;
  return {
    port,
    stop() {
      stopping ??= (async () => {
        log.info({ graceMs: config.server.shutdownGraceMs }, "shutting down: finishing in-flight calls");
        // Calls still running when the grace period ends are cancelled (their devices resend).
        const cancel = setTimeout(() => shutdown.abort(), config.server.shutdownGraceMs);
        await listener.close(config.server.shutdownGraceMs + 1_000);
        clearTimeout(cancel);
        await liveStore.close();
        await history.client.close();
        log.info("stopped");
      })();
      return stopping;
    },
  };
}

async function openLiveStore(config: Config, log: Logger): Promise<LiveStore> {
  if (config.redisUrl === undefined) {
    log.info("live store: embedded (in-process; one service process only)");
    return new MemoryLiveStore();
  }
  const store = new RedisLiveStore({ url: config.redisUrl });
  await store.connect();
  log.info({ redis: redactUrl(config.redisUrl) }, "live store: redis");
  return store;
}

function redactUrl(url: string): string {
  const parsed = new URL(url);
  if (parsed.password) parsed.password = "***";
  return parsed.toString();
}
