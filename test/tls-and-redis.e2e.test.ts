// The service with its production parts: TLS on the one port (HTTP/2 by ALPN for gRPC, HTTP/1.1
// for plain HTTPS clients), and Redis as the live store shared by two service instances.
import { mkdtempSync } from "node:fs";
import https from "node:https";
import { tmpdir } from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IngestService } from "../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { GrpcIngestClient } from "./support/grpc-ingest-client.js";
import { meterReading } from "./support/readings.js";
import { redisServerAvailable, startRedisServer, type RedisServer } from "./support/redis-server.js";
import { selfSignedCertificate } from "./support/self-signed.js";
import { HistoryProbe, startTestService, testEnv, type TestService } from "./support/test-service.js";

describe("TLS", () => {
  let app: TestService;
  let ca: Buffer;
  beforeAll(async () => {
    const certificate = selfSignedCertificate();
    ca = certificate.ca;
    app = await startTestService(testEnv({ TLS_CERT: certificate.certFile, TLS_KEY: certificate.keyFile }));
  });
  afterAll(async () => {
    await app?.service.stop();
  });

  it("serves gRPC over HTTP/2 negotiated by ALPN", async () => {
    const client = createClient(
      IngestService,
      createGrpcTransport({ baseUrl: `https://127.0.0.1:${app.service.port}`, nodeOptions: { ca } }),
    );
    const response = await client.ingestReadings({ readings: [meterReading("meter-tls", "t-1", Date.now(), 1)] });
    expect(response.accepted).toBe(1n);
  });

  it("serves HTTP/1.1 clients on the same port", async () => {
    const body = await new Promise<string>((resolve, reject) => {
      https
        .get(`https://127.0.0.1:${app.service.port}/healthz`, { ca }, (res) => {
          let text = "";
          res.on("data", (chunk: Buffer) => (text += chunk.toString()));
          res.on("end", () => resolve(`${res.httpVersion} ${text}`));
        })
        .on("error", reject);
    });
    expect(body).toBe('1.1 {"status":"ok"}');
  });
});

const haveRedis = redisServerAvailable();
describe.skipIf(!haveRedis)("two service instances sharing one Redis", () => {
  let redis: RedisServer;
  let a: TestService;
  let b: TestService;
  beforeAll(async () => {
    redis = await startRedisServer();
    // Both instances share the embedded history (one engine per process) and one Redis, as two
    // processes behind a load balancer share a ClickHouse server and a Redis.
    const env = testEnv({ REDIS_URL: redis.url });
    a = await startTestService(env);
    b = await startTestService(env);
  });
  afterAll(async () => {
    await a?.service.stop();
    await b?.service.stop();
    await redis?.stop();
  });

  it("stores a reading sent to both once, counting the other as duplicate or in flight", async () => {
    const now = Date.now();
    const readings = Array.from({ length: 200 }, (_, i) => meterReading(`meter-${i % 10}`, `shared-${i}`, now - i, 0.1));
    const [ca, cb] = [new GrpcIngestClient(a.target), new GrpcIngestClient(b.target)];
    const [ra, rb] = await Promise.all([ca.streamReadings([readings]), cb.streamReadings([readings])]);
    ca.close();
    cb.close();

    const inFlight = [...ra.rejected, ...rb.rejected].filter((r) => r.retryable).length;
    expect(ra.accepted + rb.accepted).toBe(200n);
    expect(ra.accepted + rb.accepted + ra.duplicates + rb.duplicates + BigInt(inFlight)).toBe(400n);

    const probe = new HistoryProbe(a.config, a.service);
    try {
      const [row] = await probe.rows<{ n: number; distinct: number }>(
        "SELECT count() AS n, uniqExact(event_id) AS distinct FROM {db}.meter_readings WHERE event_id LIKE 'shared-%'",
      );
      expect(row).toEqual({ n: 200, distinct: 200 });
    } finally {
      await probe.close();
    }
  });

  it("still counts a resend as a duplicate after Redis lost its data", async () => {
    const client = new GrpcIngestClient(a.target);
    const now = Date.now();
    const readings = Array.from({ length: 20 }, (_, i) => meterReading("meter-lost", `lost-${i}`, now - 1000 + i, 0.3));
    try {
      expect((await client.streamReadings([readings])).accepted).toBe(20n);
      const admin = new Redis(redis.url);
      await admin.flushall();
      admin.disconnect();
      // The ledger is empty now; the history answers for it.
      const resent = await client.streamReadings([readings]);
      expect(resent.duplicates).toBe(20n);
      expect(resent.accepted).toBe(0n);
      // A reading newer than anything stored before the loss is stored without a lookup.
      expect((await client.streamReadings([[meterReading("meter-lost", "lost-new", Date.now() + 10, 0.3)]])).accepted).toBe(1n);
    } finally {
      client.close();
    }
    const probe = new HistoryProbe(a.config, a.service);
    try {
      expect(await probe.rows("SELECT count() AS n FROM {db}.meter_readings WHERE device_id = 'meter-lost'")).toEqual([{ n: 21 }]);
    } finally {
      await probe.close();
    }
  });

  it("stores readings whose ids hold the keys' separators, each once, and carries on", async () => {
    const client = new GrpcIngestClient(a.target);
    const now = Date.now();
    try {
      // Written into Redis keys as they are, the second would be a duplicate of the first, and the
      // third's ledger key the live-state hash of the second's device.
      const readings = [meterReading("m-sep", "b}:e:c", now, 0.1), meterReading("m-sep}:e:b", "c", now, 0.2), meterReading("m-sep", "b}:live", now, 0.3)];
      for (const reading of readings) expect((await client.ingestReadings([reading])).accepted).toBe(1n);
      // Resent, each is a duplicate of itself alone.
      const again = await client.ingestReadings(readings);
      expect({ accepted: again.accepted, duplicates: again.duplicates, rejected: again.rejected }).toEqual({ accepted: 0n, duplicates: 3n, rejected: [] });
    } finally {
      client.close();
    }
    const probe = new HistoryProbe(a.config, a.service);
    try {
      expect(await probe.rows("SELECT count() AS n FROM {db}.meter_readings WHERE device_id LIKE 'm-sep%'")).toEqual([{ n: 3 }]);
    } finally {
      await probe.close();
    }
  });

  it("keeps each device's live state in Redis, newest reading first", async () => {
    const client = new GrpcIngestClient(a.target);
    const now = Date.now();
    await client.streamReadings([[meterReading("meter-live", "l-2", now, 0.2, 231)]]);
    // A backlog reading observed earlier arrives later and must not replace the state.
    await client.streamReadings([[meterReading("meter-live", "l-1", now - 60_000, 0.1, 229)]]);
    client.close();

    const inspect = new Redis(redis.url);
    try {
      const state = await inspect.hgetall("ws:{meter-live}:live");
      expect(state.kind).toBe("meter");
      expect(Number(state.observed_at)).toBe(now);
      expect(JSON.parse(state.values!)).toMatchObject({ event_id: "l-2", voltage: 231 });
    } finally {
      inspect.disconnect();
    }
  });
});

describe.skipIf(!haveRedis)("a Redis that comes back from an older snapshot", () => {
  // Redis's default persistence is a snapshot now and then: after a crash it starts from the last
  // one, which holds the ledger's start but not the ids claimed and committed since. Nothing
  // there says data was lost, so only the restart itself can tell the service.
  let redis: RedisServer;
  let app: TestService;
  beforeAll(async () => {
    redis = await startRedisServer({ snapshotDir: mkdtempSync(path.join(tmpdir(), "wattstream-rdb-")) });
    app = await startTestService(testEnv({ REDIS_URL: redis.url }));
  });
  afterAll(async () => {
    await app?.service.stop();
    await redis?.stop();
  });

  /** Sends until the service answers (it refuses calls retryably until it has reconnected to Redis). */
  async function sendUntilAnswered(client: GrpcIngestClient, readings: Parameters<GrpcIngestClient["streamReadings"]>[0][number]) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await client.streamReadings([readings]);
      } catch (error) {
        if (attempt > 100) throw error;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }

  it("still counts a resend of a reading stored after the snapshot as a duplicate", async () => {
    const client = new GrpcIngestClient(app.target);
    const now = Date.now();
    const before = Array.from({ length: 20 }, (_, i) => meterReading("meter-snap", `before-${i}`, now - 60_000 + i, 0.1));
    const after = Array.from({ length: 20 }, (_, i) => meterReading("meter-snap", `after-${i}`, now - 1_000 + i, 0.2));
    try {
      expect((await client.streamReadings([before])).accepted).toBe(20n);
      const admin = new Redis(redis.url);
      await admin.save();
      admin.disconnect();
      expect((await client.streamReadings([after])).accepted).toBe(20n);

      await redis.restart();
      const resent = await sendUntilAnswered(client, after);
      expect({ accepted: resent.accepted, duplicates: resent.duplicates }).toEqual({ accepted: 0n, duplicates: 20n });
      expect((await client.streamReadings([before])).duplicates).toBe(20n);
      // A reading newer than anything stored before the restart is stored as usual.
      expect((await client.streamReadings([[meterReading("meter-snap", "newer", Date.now() + 10, 0.3)]])).accepted).toBe(1n);
    } finally {
      client.close();
    }
    const probe = new HistoryProbe(app.config, app.service);
    try {
      expect(await probe.rows("SELECT count() AS n, uniqExact(event_id) AS distinct FROM {db}.meter_readings WHERE device_id = 'meter-snap'")).toEqual([
        { n: 41, distinct: 41 },
      ]);
    } finally {
      await probe.close();
    }
  });
});
