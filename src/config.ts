// The service's whole configuration, read once from the environment and validated at start-up.
// Every other module gets its settings passed in; none reads process.env itself.
import ms from "ms";
import os from "node:os";
import path from "node:path";
import { MAX_LEDGER_ENTRIES, MAX_LEDGER_EVENTS } from "./store/live/memory-live-store.js";

export type LogLevel = "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";

export interface Config {
  /** TCP port for gRPC, gRPC-Web and Connect (HTTP/2 and HTTP/1.1 on one port). */
  readonly port: number;
  /** Address to bind. */
  readonly host: string;
  /** PEM certificate and key paths; TLS is on when both are set. */
  readonly tls: { readonly certFile: string; readonly keyFile: string } | undefined;
  readonly logLevel: LogLevel;
  readonly server: ServerLimits;
  /**
   * Serve the ingest streams over binary gRPC on the lean path (src/server/lean-grpc-streams.ts)
   * rather than through connect's generic pipeline; off sends every call to connect.
   */
  readonly leanGrpcStreams: boolean;
  /**
   * Origins whose pages may call the service from a browser (CORS), each as scheme://host[:port];
   * ["*"] allows any. Empty: only pages of the service's own origin (its console).
   */
  readonly corsOrigins: readonly string[];
  readonly clickhouse: ClickHouseConfig;
  /** Redis URL; unset means the embedded in-process live store. */
  readonly redisUrl: string | undefined;
  /** How far back the in-process live store looks in history at start for each device's newest reading, in ms. */
  readonly liveRestoreWindowMs: number;
  readonly ingest: IngestConfig;
  readonly fleet: FleetConfig;
  readonly auth: AuthConfig;
  readonly calls: CallLimits;
}

export interface AuthConfig {
  /** Whether callers must authenticate; off only for local development (logged loudly). */
  readonly enabled: boolean;
  /** The credentials file `npm run devices` writes: device tokens and API keys, hashed. */
  readonly credentialsFile: string;
  /** PEM CA bundle; when set (TLS only), clients may authenticate with a certificate it signed. */
  readonly clientCaFile: string | undefined;
}

/** Per-call and per-device limits on ingest calls. */
export interface CallLimits {
  /** Readings per second a device may send, sustained; 0 means unlimited. */
  readonly deviceReadingsPerSecond: number;
  /** Readings a device may send at once above the sustained rate (its bucket's size). */
  readonly deviceBurstReadings: number;
  /** Most ingest calls one authenticated device may have open at once. */
  readonly maxStreamsPerDevice: number;
  /** Most readings in one message (one IngestReadings call, one message of a stream). */
  readonly maxReadingsPerMessage: number;
  /** A stream open longer than this is ended (the device reconnects), in ms. */
  readonly maxStreamDurationMs: number;
  /** A stream with no message for this long, and nothing being stored, is ended, in ms. */
  readonly streamIdleTimeoutMs: number;
}

export interface FleetConfig {
  /** Vehicle performance alerts LOW_EFFICIENCY below this DC/AC ratio (a fraction, 0.85 = 85 %). */
  readonly efficiencyAlertThreshold: number;
  /** A device not seen for longer than this is offline, in ms. */
  readonly offlineAfterMs: number;
  /** ListAlerts alerts BATTERY_FALLING when a unit's score is this many points below its highest in the window. */
  readonly batteryFallAlertPoints: number;
  /** How old the in-process copy of vehicle–meter links may get (links another process wrote), in ms. */
  readonly linkCacheMaxAgeMs: number;
  /**
   * Whether the default window (24 h to the last whole minute) is read for every device once a
   * minute, for GetVehiclePerformance, GetFleetSummary and ListAlerts to answer from (exact only
   * where this process writes all history: see performance-snapshot.ts).
   */
  readonly performanceSnapshot: boolean;
}

export interface ServerLimits {
  /** Largest request message accepted, in bytes. */
  readonly maxMessageBytes: number;
  /** Most concurrent HTTP/2 streams per connection. */
  readonly maxConcurrentStreams: number;
  /** A connection with no traffic for this long is closed, in ms. */
  readonly idleTimeoutMs: number;
  /** Longest deadline a client may ask for, in ms. */
  readonly maxTimeoutMs: number;
  /** On SIGTERM, how long in-flight calls may run before they are cancelled, in ms. */
  readonly shutdownGraceMs: number;
}

export interface ClickHouseConfig {
  /** HTTP(S) URL of a ClickHouse server; unset means the embedded engine. */
  readonly url: string | undefined;
  readonly username: string;
  readonly password: string;
  readonly database: string;
  /** Where the embedded engine keeps its data. */
  readonly dataDir: string;
}

export interface IngestConfig {
  /** Readings observed longer ago than this are rejected, in ms. */
  readonly maxReadingAgeMs: number;
  /** Readings observed further ahead than this (device clock skew) are rejected, in ms. */
  readonly maxClockSkewMs: number;
  /** How long an event_id is remembered for dedupe once stored, in ms. */
  readonly dedupeWindowMs: number;
  /** How long a claim on an event_id lives while its batch is in flight, in ms. */
  readonly claimLeaseMs: number;
  /**
   * Without Redis: the most event ids the in-process ledger holds. Beyond it the oldest stored
   * ids are forgotten and their resends are looked up in history instead.
   */
  readonly memoryLedgerMaxEvents: number;
  /** Most readings per batch handed to a worker; larger messages are split. */
  readonly maxBatchReadings: number;
  /** Batches of one stream being stored at once; beyond it the stream is not read. */
  readonly maxBatchesInFlightPerStream: number;
  /** Readings admitted and not yet answered, across all calls; beyond it new calls get UNAVAILABLE. */
  readonly maxRowsInFlight: number;
  readonly workers: WorkerConfig;
  readonly inserts: InsertConfig;
}

export interface WorkerConfig {
  readonly minThreads: number;
  readonly maxThreads: number;
  /** Batches waiting for a worker beyond this are refused retryably. */
  readonly maxQueue: number;
  readonly idleTimeoutMs: number;
}

export interface InsertConfig {
  /** Most rows one history insert carries. */
  readonly maxRowsPerInsert: number;
  /** Under load, an insert waits for this many rows or for `lingerMs` after the previous one. */
  readonly minRowsPerInsert: number;
  readonly lingerMs: number;
  /** How long one insert attempt may take, in ms. */
  readonly timeoutMs: number;
  /** Attempts per block (same dedupe token) before its calls fail retryably. */
  readonly maxAttempts: number;
  /** Embedded engine: longest a stored block waits for its rollups while nobody reads them; 0 writes them with each insert. */
  readonly rollupIntervalMs: number;
}

/** A configuration problem, naming the variable at fault. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

/**
 * What a setting names cannot be used at start: a file that cannot be read, a store that cannot
 * be reached. The message starts with the variable, so the operator knows what to fix.
 */
export class StartupError extends Error {
  override readonly name = "StartupError";
  constructor(variable: string, problem: string, options?: ErrorOptions) {
    super(`${variable}: ${problem}`, options);
  }
}

type Env = Readonly<Record<string, string | undefined>>;

/** The longest delay a Node timer honours; longer ones fire at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Horizons that are compared against timestamps, never waited on. */
const MAX_HORIZON_MS = 3650 * 86_400_000;

/** Reads and validates the configuration; throws ConfigError naming every bad variable. */
export function loadConfig(env: Env = process.env): Config {
  const problems: string[] = [];
  const read = new EnvReader(env, problems);

  const tlsCert = read.string("TLS_CERT");
  const tlsKey = read.string("TLS_KEY");
  if ((tlsCert === undefined) !== (tlsKey === undefined)) {
    problems.push("TLS_CERT and TLS_KEY must be set together (PEM file paths)");
  }

  const clickhouseUrl = read.url("CLICKHOUSE_URL", ["http:", "https:"]);
  const dataDir = path.resolve(read.string("DATA_DIR") ?? "./data");
  const clientCaFile = read.string("TLS_CLIENT_CA");
  if (clientCaFile !== undefined && tlsCert === undefined) problems.push("TLS_CLIENT_CA needs TLS (TLS_CERT and TLS_KEY)");

  const config: Config = {
    port: read.integer("PORT", 8080, 0, 65535),
    host: read.string("HOST") ?? "0.0.0.0",
    tls: tlsCert !== undefined && tlsKey !== undefined ? { certFile: tlsCert, keyFile: tlsKey } : undefined,
    logLevel: read.oneOf("LOG_LEVEL", ["fatal", "error", "warn", "info", "debug", "trace", "silent"], "info"),
    server: {
      maxMessageBytes: read.integer("MAX_MESSAGE_BYTES", 4 * 1024 * 1024, 1024, 256 * 1024 * 1024),
      maxConcurrentStreams: read.integer("MAX_CONCURRENT_STREAMS", 1000, 1, 2 ** 31 - 1),
      idleTimeoutMs: read.duration("IDLE_TIMEOUT", "5m"),
      maxTimeoutMs: read.duration("MAX_CALL_TIMEOUT", "1h"),
      shutdownGraceMs: read.duration("SHUTDOWN_GRACE", "10s"),
    },
    leanGrpcStreams: read.oneOf("LEAN_GRPC_STREAMS", ["on", "off"], "on") === "on",
    corsOrigins: read.origins("CORS_ORIGINS"),
    clickhouse: {
      url: clickhouseUrl,
      username: read.string("CLICKHOUSE_USER") ?? "default",
      password: read.string("CLICKHOUSE_PASSWORD") ?? "",
      database: read.identifier("CLICKHOUSE_DATABASE", "wattstream"),
      dataDir,
    },
    redisUrl: read.url("REDIS_URL", ["redis:", "rediss:"]),
    liveRestoreWindowMs: read.duration("LIVE_RESTORE_WINDOW", "7d", MAX_HORIZON_MS),
    ingest: {
      maxReadingAgeMs: read.duration("MAX_READING_AGE", "30d", MAX_HORIZON_MS),
      maxClockSkewMs: read.duration("MAX_CLOCK_SKEW", "5m"),
      dedupeWindowMs: read.duration("DEDUPE_WINDOW", "7d", MAX_HORIZON_MS),
      claimLeaseMs: read.duration("CLAIM_LEASE", "60s"),
      // ~95 B of heap per id: 4M is ~0.4 GB, 3.3 h of a 20,000-device fleet reading once a minute.
      memoryLedgerMaxEvents: read.integer("LEDGER_MAX_EVENTS", 4_000_000, 1_000, MAX_LEDGER_EVENTS),
      maxBatchReadings: read.integer("MAX_BATCH_READINGS", 5_000, 1, 1_000_000),
      maxBatchesInFlightPerStream: read.integer("MAX_BATCHES_IN_FLIGHT_PER_STREAM", 4, 1, 1024),
      maxRowsInFlight: read.integer("MAX_ROWS_IN_FLIGHT", 200_000, 1, 100_000_000),
      workers: {
        minThreads: read.integer("WORKER_MIN_THREADS", 1, 1, 256),
        maxThreads: read.integer("WORKER_THREADS", Math.max(1, os.availableParallelism()), 1, 256),
        maxQueue: read.integer("WORKER_MAX_QUEUE", 10_000, 1, 1_000_000),
        idleTimeoutMs: read.duration("WORKER_IDLE_TIMEOUT", "60s"),
      },
      inserts: {
        maxRowsPerInsert: read.integer("MAX_ROWS_PER_INSERT", 100_000, 1, 10_000_000),
        minRowsPerInsert: read.integer("MIN_ROWS_PER_INSERT", 10_000, 1, 10_000_000),
        lingerMs: read.duration("INSERT_LINGER", "50ms"),
        timeoutMs: read.duration("INSERT_TIMEOUT", "10s"),
        maxAttempts: read.integer("INSERT_ATTEMPTS", 3, 1, 100),
        rollupIntervalMs: read.duration("ROLLUP_INTERVAL", "1s"),
      },
    },
    fleet: {
      efficiencyAlertThreshold: read.decimal("EFFICIENCY_ALERT_THRESHOLD", 0.85, 0, 1),
      offlineAfterMs: read.duration("OFFLINE_AFTER", "15m", MAX_HORIZON_MS),
      batteryFallAlertPoints: read.integer("BATTERY_FALL_ALERT_POINTS", 20, 1, 100),
      linkCacheMaxAgeMs: read.duration("LINK_CACHE_MAX_AGE", "5s"),
      // On by default only with the embedded engine, whose data directory this process alone
      // writes; a ClickHouse server may take rows from other processes the snapshot never hears of.
      performanceSnapshot: read.oneOf("PERFORMANCE_SNAPSHOT", ["on", "off"], clickhouseUrl === undefined ? "on" : "off") === "on",
    },
    auth: {
      // Off by default only in the embedded quick start (no CLICKHOUSE_URL): a deployment with a
      // ClickHouse server authenticates unless told otherwise.
      enabled: read.oneOf("AUTH", ["on", "off"], clickhouseUrl === undefined ? "off" : "on") === "on",
      credentialsFile: path.resolve(read.string("CREDENTIALS_FILE") ?? path.join(dataDir, "credentials.json")),
      clientCaFile,
    },
    calls: {
      deviceReadingsPerSecond: read.integer("DEVICE_RATE_LIMIT", 200, 0, 100_000_000),
      deviceBurstReadings: read.integer("DEVICE_RATE_BURST", 50_000, 1, 100_000_000),
      maxStreamsPerDevice: read.integer("MAX_STREAMS_PER_DEVICE", 4, 1, 100_000),
      maxReadingsPerMessage: read.integer("MAX_READINGS_PER_MESSAGE", 50_000, 1, 10_000_000),
      maxStreamDurationMs: read.duration("MAX_STREAM_DURATION", "1h"),
      streamIdleTimeoutMs: read.duration("STREAM_IDLE_TIMEOUT", "5m"),
    },
  };
  const { ingest } = config;
  if (ingest.workers.minThreads > ingest.workers.maxThreads) {
    problems.push("WORKER_MIN_THREADS must not exceed WORKER_THREADS");
  }
  // A live process keeps its claims for as long as it works on a batch; the lease is what is left
  // when it dies. It must outlive every attempt the dead process may have left running (against a
  // ClickHouse server, which goes on without it), or a resend could be stored twice.
  const worstStoreMs = ingest.inserts.timeoutMs * ingest.inserts.maxAttempts + 5_000;
  if (ingest.claimLeaseMs < worstStoreMs) {
    problems.push(
      `CLAIM_LEASE (${ingest.claimLeaseMs} ms) must be at least INSERT_TIMEOUT × INSERT_ATTEMPTS + 5 s (${worstStoreMs} ms)`,
    );
  }

  if (config.redisUrl === undefined && ingest.memoryLedgerMaxEvents + ingest.maxRowsInFlight > MAX_LEDGER_ENTRIES) {
    // Claims in flight come on top of the ids held, in JavaScript Maps of bounded size.
    problems.push(`LEDGER_MAX_EVENTS + MAX_ROWS_IN_FLIGHT must not exceed ${MAX_LEDGER_ENTRIES} without Redis`);
  }

  if (problems.length > 0) {
    throw new ConfigError(`invalid configuration:\n  ${problems.join("\n  ")}`);
  }
  return deepFreeze(config);
}

/** Typed readers over the environment: blank means unset, a bad value is recorded with its name. */
class EnvReader {
  constructor(
    private readonly env: Env,
    private readonly problems: string[],
  ) {}

  string(name: string): string | undefined {
    const value = this.env[name]?.trim();
    return value === undefined || value === "" ? undefined : value;
  }

  integer(name: string, fallback: number, min: number, max: number): number {
    const raw = this.string(name);
    if (raw === undefined) return fallback;
    const value = Number(raw);
    if (!/^-?\d+$/.test(raw) || value < min || value > max) {
      this.problems.push(`${name}=${JSON.stringify(raw)} must be an integer from ${min} to ${max}`);
      return fallback;
    }
    return value;
  }

  decimal(name: string, fallback: number, min: number, max: number): number {
    const raw = this.string(name);
    if (raw === undefined) return fallback;
    const value = Number(raw);
    if (!/^\d+(\.\d+)?$/.test(raw) || value < min || value > max) {
      this.problems.push(`${name}=${JSON.stringify(raw)} must be a number from ${min} to ${max}`);
      return fallback;
    }
    return value;
  }

  /**
   * A duration such as "250ms", "30s", "5m", "7d"; a bare number means milliseconds. Rounded to
   * whole milliseconds and capped at maxMs (by default what a Node timer can wait, ~24.8 days).
   */
  duration(name: string, fallback: string, maxMs: number = MAX_TIMER_MS): number {
    const raw = this.string(name) ?? fallback;
    const parsed = /^\d+$/.test(raw) ? Number(raw) : ms(raw as ms.StringValue);
    const value = typeof parsed === "number" ? Math.round(parsed) : NaN;
    if (!Number.isFinite(value) || value < 0 || value > maxMs) {
      this.problems.push(
        `${name}=${JSON.stringify(raw)} must be a duration from 0 to ${ms(maxMs, { long: true })}, such as 500ms, 30s, 5m or 7d`,
      );
      return ms(fallback as ms.StringValue);
    }
    return value;
  }

  oneOf<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
    const raw = this.string(name)?.toLowerCase();
    if (raw === undefined) return fallback;
    if (!(allowed as readonly string[]).includes(raw)) {
      this.problems.push(`${name}=${JSON.stringify(raw)} must be one of ${allowed.join(", ")}`);
      return fallback;
    }
    return raw as T;
  }

  url(name: string, protocols: readonly string[]): string | undefined {
    const raw = this.string(name);
    if (raw === undefined) return undefined;
    let parsed: URL;
    try {
      parsed = new URL(raw);
    } catch {
      this.problems.push(`${name} is not a URL`);
      return undefined;
    }
    if (!protocols.includes(parsed.protocol)) {
      this.problems.push(`${name} must start with ${protocols.map((p) => `${p}//`).join(" or ")}`);
      return undefined;
    }
    return raw;
  }

  /**
   * A comma-separated list of web origins (scheme://host[:port], as a browser sends them in Origin:
   * no path, no trailing slash), or "*" alone for any.
   */
  origins(name: string): readonly string[] {
    const raw = this.string(name);
    if (raw === undefined) return [];
    if (raw === "*") return ["*"];
    const origins = raw.split(",").map((origin) => origin.trim()).filter((origin) => origin !== "");
    for (const origin of origins) {
      let parsed: URL | undefined;
      try {
        parsed = new URL(origin);
      } catch {
        parsed = undefined;
      }
      if (parsed === undefined || parsed.origin !== origin || !["http:", "https:"].includes(parsed.protocol)) {
        this.problems.push(`${name}: ${JSON.stringify(origin)} is not an origin such as https://console.example.com or http://localhost:5173 (or "*" alone for any)`);
        return [];
      }
    }
    return origins;
  }

  /** A ClickHouse database name; it appears in DDL, so only plain identifiers are allowed. */
  identifier(name: string, fallback: string): string {
    const raw = this.string(name);
    if (raw === undefined) return fallback;
    if (!/^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(raw)) {
      this.problems.push(`${name}=${JSON.stringify(raw)} must be a plain identifier (letters, digits, _)`);
      return fallback;
    }
    return raw;
  }
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object") {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
