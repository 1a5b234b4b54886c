import path from "node:path";
import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "./config.js";

const MINUTE = 60_000;
const DAY = 24 * 60 * MINUTE;

/** Runs loadConfig expecting a ConfigError; answers it. */
function configError(env: Record<string, string | undefined>): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error(`loadConfig(${JSON.stringify(env)}) did not throw`);
}

describe("loadConfig defaults", () => {
  it("gives the documented defaults for an empty environment", () => {
    const config = loadConfig({});
    expect(config.port).toBe(8080);
    expect(config.host).toBe("0.0.0.0");
    expect(config.tls).toBeUndefined();
    expect(config.logLevel).toBe("info");
    expect(config.clickhouse.url).toBeUndefined(); // embedded engine
    expect(config.clickhouse.username).toBe("default");
    expect(config.clickhouse.password).toBe("");
    expect(config.clickhouse.database).toBe("wattstream");
    expect(config.redisUrl).toBeUndefined();
    expect(config.ingest.maxReadingAgeMs).toBe(30 * DAY);
    expect(config.ingest.maxClockSkewMs).toBe(5 * MINUTE);
    expect(config.ingest.dedupeWindowMs).toBe(7 * DAY);
    expect(config.ingest.claimLeaseMs).toBe(60_000);
    expect(config.ingest.maxBatchReadings).toBe(5_000);
    expect(config.server).toEqual({
      maxMessageBytes: 4 * 1024 * 1024,
      maxConcurrentStreams: 1000,
      idleTimeoutMs: 5 * MINUTE,
      maxTimeoutMs: 60 * MINUTE,
      shutdownGraceMs: 10_000,
    });
  });

  it("resolves the default data dir ./data to an absolute path", () => {
    const { dataDir } = loadConfig({}).clickhouse;
    expect(path.isAbsolute(dataDir)).toBe(true);
    expect(dataDir).toBe(path.resolve(process.cwd(), "data"));
  });

  it("resolves a relative DATA_DIR against the working directory", () => {
    expect(loadConfig({ DATA_DIR: "var/ws" }).clickhouse.dataDir).toBe(path.join(process.cwd(), "var", "ws"));
    expect(loadConfig({ DATA_DIR: "/srv/wattstream" }).clickhouse.dataDir).toBe(path.resolve("/srv/wattstream"));
  });

  it("does not read process.env when given an env", () => {
    const saved = process.env.PORT;
    process.env.PORT = "1234";
    try {
      expect(loadConfig({}).port).toBe(8080);
    } finally {
      if (saved === undefined) delete process.env.PORT;
      else process.env.PORT = saved;
    }
  });

  it("treats blank and whitespace-only values as unset", () => {
    const config = loadConfig({
      PORT: "",
      HOST: "   ",
      LOG_LEVEL: "",
      CLICKHOUSE_URL: "",
      CLICKHOUSE_DATABASE: "  ",
      DATA_DIR: "",
      REDIS_URL: " ",
      MAX_READING_AGE: "",
      MAX_CLOCK_SKEW: "\t",
      DEDUPE_WINDOW: "",
      TLS_CERT: "",
      TLS_KEY: " ",
    });
    expect(config.port).toBe(8080);
    expect(config.host).toBe("0.0.0.0");
    expect(config.logLevel).toBe("info");
    expect(config.clickhouse.url).toBeUndefined();
    expect(config.clickhouse.database).toBe("wattstream");
    expect(config.clickhouse.dataDir).toBe(path.resolve("./data"));
    expect(config.redisUrl).toBeUndefined();
    expect(config.ingest.maxReadingAgeMs).toBe(30 * DAY);
    expect(config.ingest.maxClockSkewMs).toBe(5 * MINUTE);
    expect(config.ingest.dedupeWindowMs).toBe(7 * DAY);
    expect(config.tls).toBeUndefined();
  });

  it("treats undefined values as unset", () => {
    expect(loadConfig({ PORT: undefined, REDIS_URL: undefined }).port).toBe(8080);
  });
});

describe("loadConfig values", () => {
  it("reads the port, trimming surrounding whitespace, with 0 and 65535 inclusive", () => {
    expect(loadConfig({ PORT: "9090" }).port).toBe(9090);
    expect(loadConfig({ PORT: " 9091 " }).port).toBe(9091);
    expect(loadConfig({ PORT: "0" }).port).toBe(0);
    expect(loadConfig({ PORT: "65535" }).port).toBe(65535);
  });

  it.each([
    ["250ms", 250],
    ["30s", 30_000],
    ["5m", 5 * MINUTE],
    ["2h", 2 * 60 * MINUTE],
    ["7d", 7 * DAY],
    ["1500", 1500],
    ["0", 0],
  ])("reads the duration %j as %d ms", (raw, expected) => {
    expect(loadConfig({ MAX_CLOCK_SKEW: raw }).ingest.maxClockSkewMs).toBe(expected);
    expect(loadConfig({ DEDUPE_WINDOW: raw }).ingest.dedupeWindowMs).toBe(expected);
    expect(loadConfig({ SHUTDOWN_GRACE: raw }).server.shutdownGraceMs).toBe(expected);
  });

  it("reads LOG_LEVEL case-insensitively", () => {
    expect(loadConfig({ LOG_LEVEL: "debug" }).logLevel).toBe("debug");
    expect(loadConfig({ LOG_LEVEL: "WARN" }).logLevel).toBe("warn");
    expect(loadConfig({ LOG_LEVEL: "silent" }).logLevel).toBe("silent");
  });

  it("reads ClickHouse and Redis URLs with the allowed schemes", () => {
    const config = loadConfig({
      CLICKHOUSE_URL: "https://ch.example.com:8443",
      CLICKHOUSE_USER: "ingest",
      CLICKHOUSE_PASSWORD: "pw",
      CLICKHOUSE_DATABASE: "ws_prod_2",
      REDIS_URL: "rediss://cache.example.com:6380/0",
    });
    expect(config.clickhouse).toMatchObject({
      url: "https://ch.example.com:8443",
      username: "ingest",
      password: "pw",
      database: "ws_prod_2",
    });
    expect(config.redisUrl).toBe("rediss://cache.example.com:6380/0");
    expect(loadConfig({ CLICKHOUSE_URL: "http://localhost:8123" }).clickhouse.url).toBe("http://localhost:8123");
    expect(loadConfig({ REDIS_URL: "redis://localhost:6379" }).redisUrl).toBe("redis://localhost:6379");
  });

  it("turns TLS on when both TLS_CERT and TLS_KEY are set", () => {
    expect(loadConfig({ TLS_CERT: "/etc/ws/cert.pem", TLS_KEY: "/etc/ws/key.pem" }).tls).toEqual({
      certFile: "/etc/ws/cert.pem",
      keyFile: "/etc/ws/key.pem",
    });
  });
});

describe("EFFICIENCY_ALERT_THRESHOLD", () => {
  it("defaults to 0.85 and takes a fraction from 0 to 1", () => {
    expect(loadConfig({}).fleet.efficiencyAlertThreshold).toBe(0.85);
    expect(loadConfig({ EFFICIENCY_ALERT_THRESHOLD: "0.9" }).fleet.efficiencyAlertThreshold).toBe(0.9);
    expect(loadConfig({ EFFICIENCY_ALERT_THRESHOLD: " " }).fleet.efficiencyAlertThreshold).toBe(0.85);
  });

  it("refuses a value outside 0 to 1 or not a number, naming the variable", () => {
    expect(configError({ EFFICIENCY_ALERT_THRESHOLD: "85" }).message).toContain("EFFICIENCY_ALERT_THRESHOLD");
    expect(configError({ EFFICIENCY_ALERT_THRESHOLD: "abc" }).message).toContain("EFFICIENCY_ALERT_THRESHOLD");
  });
});

describe("BATTERY_FALL_ALERT_POINTS", () => {
  it("defaults to 20 points and takes a whole number from 1 to 100", () => {
    expect(loadConfig({}).fleet.batteryFallAlertPoints).toBe(20);
    expect(loadConfig({ BATTERY_FALL_ALERT_POINTS: "35" }).fleet.batteryFallAlertPoints).toBe(35);
    for (const bad of ["0", "101", "12.5", "many"]) {
      expect(configError({ BATTERY_FALL_ALERT_POINTS: bad }).message).toContain("BATTERY_FALL_ALERT_POINTS");
    }
  });
});

describe("OFFLINE_AFTER", () => {
  it("defaults to 15 minutes and takes a duration", () => {
    expect(loadConfig({}).fleet.offlineAfterMs).toBe(15 * 60_000);
    expect(loadConfig({ OFFLINE_AFTER: "2h" }).fleet.offlineAfterMs).toBe(2 * 3_600_000);
    expect(loadConfig({ OFFLINE_AFTER: "90s" }).fleet.offlineAfterMs).toBe(90_000);
  });
});

describe("LIVE_RESTORE_WINDOW", () => {
  it("defaults to 7 days and takes a duration", () => {
    expect(loadConfig({}).liveRestoreWindowMs).toBe(7 * DAY);
    expect(loadConfig({ LIVE_RESTORE_WINDOW: "1h" }).liveRestoreWindowMs).toBe(3_600_000);
  });
});

describe("LEAN_GRPC_STREAMS", () => {
  it("defaults to on; off sends the ingest streams through connect", () => {
    expect(loadConfig({}).leanGrpcStreams).toBe(true);
    expect(loadConfig({ LEAN_GRPC_STREAMS: "off" }).leanGrpcStreams).toBe(false);
    expect(configError({ LEAN_GRPC_STREAMS: "fast" }).message).toContain("LEAN_GRPC_STREAMS");
  });
});

describe("CORS_ORIGINS", () => {
  it("allows no other origin by default, a list of origins, or any with *", () => {
    expect(loadConfig({}).corsOrigins).toEqual([]);
    expect(loadConfig({ CORS_ORIGINS: "https://console.example.com, http://localhost:5173" }).corsOrigins).toEqual([
      "https://console.example.com",
      "http://localhost:5173",
    ]);
    expect(loadConfig({ CORS_ORIGINS: "*" }).corsOrigins).toEqual(["*"]);
  });

  it("refuses what a browser never sends as an origin, naming it", () => {
    for (const bad of ["https://console.example.com/", "https://console.example.com/app", "console.example.com", "ftp://example.com", "https://a.example.com,*"]) {
      expect(configError({ CORS_ORIGINS: bad }).message).toContain("CORS_ORIGINS");
    }
    expect(configError({ CORS_ORIGINS: "https://ok.example.com,https://bad.example.com/x" }).message).toContain('"https://bad.example.com/x"');
  });
});

describe("LEDGER_MAX_EVENTS", () => {
  it("defaults to 4 million ids and takes up to 8 million", () => {
    expect(loadConfig({}).ingest.memoryLedgerMaxEvents).toBe(4_000_000);
    expect(loadConfig({ LEDGER_MAX_EVENTS: "8000000" }).ingest.memoryLedgerMaxEvents).toBe(8_000_000);
    expect(configError({ LEDGER_MAX_EVENTS: "9000000" }).message).toContain("LEDGER_MAX_EVENTS");
  });

  it("leaves room in the in-process ledger for the claims in flight, unless Redis holds the ledger", () => {
    const tooMany = { LEDGER_MAX_EVENTS: "8000000", MAX_ROWS_IN_FLIGHT: "1000000" };
    expect(configError(tooMany).message).toContain("LEDGER_MAX_EVENTS + MAX_ROWS_IN_FLIGHT must not exceed 8388608");
    expect(loadConfig({ ...tooMany, REDIS_URL: "redis://127.0.0.1:6379" }).ingest.maxRowsInFlight).toBe(1_000_000);
  });
});

describe("LINK_CACHE_MAX_AGE", () => {
  it("defaults to 5 seconds; 0 reads the links on every answer", () => {
    expect(loadConfig({}).fleet.linkCacheMaxAgeMs).toBe(5_000);
    expect(loadConfig({ LINK_CACHE_MAX_AGE: "0" }).fleet.linkCacheMaxAgeMs).toBe(0);
  });

  it("refuses what is not a duration, naming the variable", () => {
    expect(configError({ OFFLINE_AFTER: "later" }).message).toContain("OFFLINE_AFTER");
  });
});

describe("PERFORMANCE_SNAPSHOT", () => {
  it("is on with the embedded engine, off with a ClickHouse server other processes may write to, and either when asked", () => {
    const server = { CLICKHOUSE_URL: "http://clickhouse:8123", AUTH: "off" };
    expect(loadConfig({}).fleet.performanceSnapshot).toBe(true);
    expect(loadConfig(server).fleet.performanceSnapshot).toBe(false);
    expect(loadConfig({ ...server, PERFORMANCE_SNAPSHOT: "on" }).fleet.performanceSnapshot).toBe(true);
    expect(loadConfig({ PERFORMANCE_SNAPSHOT: "off" }).fleet.performanceSnapshot).toBe(false);
    expect(configError({ PERFORMANCE_SNAPSHOT: "yes" }).message).toContain("PERFORMANCE_SNAPSHOT");
  });
});

describe("loadConfig errors", () => {
  it.each([
    ["PORT", "80a"],
    ["PORT", "70000"],
    ["PORT", "-1"],
    ["PORT", "80.5"],
    ["MAX_BATCH_READINGS", "0"],
    ["MAX_READING_AGE", "soon"],
    ["MAX_CLOCK_SKEW", "-5s"],
    ["DEDUPE_WINDOW", "7 fortnights"],
    ["LOG_LEVEL", "verbose"],
    ["CLICKHOUSE_URL", "ftp://ch.example.com"],
    ["CLICKHOUSE_URL", "not a url"],
    ["REDIS_URL", "http://cache.example.com:6379"],
    ["CLICKHOUSE_DATABASE", "drop;table"],
    ["CLICKHOUSE_DATABASE", "1abc"],
  ])("rejects %s=%j with a ConfigError naming the variable", (name, value) => {
    const err = configError({ [name]: value });
    expect(err.name).toBe("ConfigError");
    expect(err.message).toContain(name);
  });

  it("quotes the bad value for a bad PORT and gives the allowed range", () => {
    expect(configError({ PORT: "70000" }).message).toContain('PORT="70000" must be an integer from 0 to 65535');
  });

  it("names the allowed schemes for a URL with the wrong one", () => {
    expect(configError({ CLICKHOUSE_URL: "ftp://ch.example.com" }).message).toContain(
      "CLICKHOUSE_URL must start with http:// or https://",
    );
    expect(configError({ REDIS_URL: "http://cache:6379" }).message).toContain("REDIS_URL must start with redis:// or rediss://");
    expect(configError({ CLICKHOUSE_URL: "not a url" }).message).toContain("CLICKHOUSE_URL is not a URL");
  });

  it("rejects TLS_CERT without TLS_KEY, and TLS_KEY without TLS_CERT", () => {
    expect(configError({ TLS_CERT: "/etc/ws/cert.pem" }).message).toMatch(/TLS_CERT.*TLS_KEY/);
    expect(configError({ TLS_KEY: "/etc/ws/key.pem" }).message).toMatch(/TLS_CERT.*TLS_KEY/);
  });

  it("names every bad variable in one error", () => {
    const err = configError({
      PORT: "80a",
      LOG_LEVEL: "loud",
      MAX_READING_AGE: "forever",
      CLICKHOUSE_URL: "ftp://ch.example.com",
      REDIS_URL: "http://cache:6379",
      CLICKHOUSE_DATABASE: "drop;table",
      TLS_CERT: "/etc/ws/cert.pem",
    });
    for (const name of [
      "PORT",
      "LOG_LEVEL",
      "MAX_READING_AGE",
      "CLICKHOUSE_URL",
      "REDIS_URL",
      "CLICKHOUSE_DATABASE",
      "TLS_KEY",
    ]) {
      expect(err.message).toContain(name);
    }
    // One line per problem after the heading.
    expect(err.message.split("\n")).toHaveLength(1 + 7);
  });

  it("never puts a URL's password in the error message", () => {
    const secret = "s3cr3t-Pa55";
    const cases = [
      { CLICKHOUSE_URL: `ftp://ingest:${secret}@ch.example.com/` },
      { CLICKHOUSE_URL: `http://ingest:${secret}@` }, // not a URL: no host
      { REDIS_URL: `http://:${secret}@cache.example.com:6379` },
      { REDIS_URL: `redis//:${secret}@cache.example.com` },
    ];
    for (const env of cases) {
      const err = configError(env);
      expect(err.message).toContain(Object.keys(env)[0]!);
      expect(err.message).not.toContain(secret);
      expect(String(err.stack)).not.toContain(secret);
    }
  });
});

describe("loadConfig result", () => {
  it("is deeply frozen", () => {
    const config = loadConfig({ TLS_CERT: "/c.pem", TLS_KEY: "/k.pem" });
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.server)).toBe(true);
    expect(Object.isFrozen(config.clickhouse)).toBe(true);
    expect(Object.isFrozen(config.ingest)).toBe(true);
    expect(Object.isFrozen(config.tls)).toBe(true);
    expect(() => {
      (config as { port: number }).port = 1;
    }).toThrow(TypeError);
    expect(() => {
      (config.ingest as { maxReadingAgeMs: number }).maxReadingAgeMs = 1;
    }).toThrow(TypeError);
  });
});

describe("duration bounds", () => {
  it("refuses a timer longer than Node can wait, naming the variable", () => {
    expect(() => loadConfig({ SHUTDOWN_GRACE: "30d" })).toThrow(/SHUTDOWN_GRACE/);
  });

  it("allows horizons longer than a timer, since they are only compared", () => {
    expect(loadConfig({ MAX_READING_AGE: "90d" }).ingest.maxReadingAgeMs).toBe(90 * 86_400_000);
  });

  it("rounds to whole milliseconds", () => {
    expect(loadConfig({ SHUTDOWN_GRACE: "1.5" }).server.shutdownGraceMs).toBe(2);
  });
});

describe("authentication and call limits", () => {
  it("turns authentication off by default only for the embedded quick start", () => {
    expect(loadConfig({}).auth.enabled).toBe(false);
    expect(loadConfig({ CLICKHOUSE_URL: "http://ch:8123" }).auth.enabled).toBe(true);
    expect(loadConfig({ AUTH: "on" }).auth.enabled).toBe(true);
    expect(loadConfig({ CLICKHOUSE_URL: "http://ch:8123", AUTH: "off" }).auth.enabled).toBe(false);
    expect(configError({ AUTH: "maybe" }).message).toMatch(/AUTH="maybe" must be one of on, off/);
  });

  it("keeps credentials in DATA_DIR unless CREDENTIALS_FILE says otherwise", () => {
    expect(loadConfig({ DATA_DIR: "/srv/ws" }).auth.credentialsFile).toBe("/srv/ws/credentials.json");
    expect(loadConfig({ CREDENTIALS_FILE: "/etc/ws/creds.json" }).auth.credentialsFile).toBe("/etc/ws/creds.json");
  });

  it("asks for client certificates only over TLS", () => {
    expect(configError({ TLS_CLIENT_CA: "/ca.pem" }).message).toMatch(/TLS_CLIENT_CA needs TLS/);
    expect(loadConfig({ TLS_CERT: "/c.pem", TLS_KEY: "/k.pem", TLS_CLIENT_CA: "/ca.pem" }).auth.clientCaFile).toBe("/ca.pem");
  });

  it("gives the documented call limits", () => {
    expect(loadConfig({}).calls).toEqual({
      deviceReadingsPerSecond: 200,
      deviceBurstReadings: 50_000,
      maxStreamsPerDevice: 4,
      maxReadingsPerMessage: 50_000,
      maxStreamDurationMs: 60 * MINUTE,
      streamIdleTimeoutMs: 5 * MINUTE,
    });
    expect(loadConfig({ DEVICE_RATE_LIMIT: "0", STREAM_IDLE_TIMEOUT: "0" }).calls).toMatchObject({ deviceReadingsPerSecond: 0, streamIdleTimeoutMs: 0 });
  });
});
