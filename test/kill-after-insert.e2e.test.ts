// A service killed right after ClickHouse acknowledged an insert, before the event ids were
// committed to the Redis ledger and before the device heard back: the rows are durable, and the
// dead process's claims stay in Redis until their lease lapses. The device resends. While the
// claims hold it must be told "in flight"; afterwards "duplicate" — never "accepted", which stores
// the readings a second time (and counts them twice in the rollups for good, whatever
// ReplacingMergeTree later collapses in the raw table).
//
// The fault suite (faults.e2e.test.ts) found this with random kills; here the kill is placed
// exactly, by the test-only entry's `crash-after-insert` storage mode.
import { writeFileSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { loadConfig } from "../src/config.js";
import { GrpcIngestClient } from "./support/grpc-ingest-client.js";
import { meterReading } from "./support/readings.js";
import { redisServerAvailable, startRedisServer, type RedisServer } from "./support/redis-server.js";
import { restartablePort } from "./support/restartable-port.js";
import { startServiceProcess, type ServiceProcess } from "./support/service-process.js";
import { HistoryProbe, testEnv } from "./support/test-service.js";
import { sleep, waitFor } from "./support/wait-for.js";

const FAULTY_ENTRY = "test/support/faulty-service-main.ts";
const haveRedis = redisServerAvailable();

describe.skipIf(!haveRedis)("a service killed after its insert landed, before it committed the event ids", () => {
  let redis: RedisServer | undefined;
  let service: ServiceProcess | undefined;
  afterAll(async () => {
    service?.kill();
    await redis?.stop();
  });

  it("answers the resend as duplicates, and stores nothing twice", { timeout: 120_000 }, async () => {
    redis = await startRedisServer();
    const env = testEnv({
      PORT: String(await restartablePort()),
      REDIS_URL: redis.url,
      LOG_LEVEL: "info",
      AUTH: "off",
      INSERT_TIMEOUT: "1s",
      INSERT_ATTEMPTS: "1",
      CLAIM_LEASE: "6s",
    });
    const controlFile = `${env.DATA_DIR!}-storage-fault`;
    env.FAULT_CONTROL_FILE = controlFile;
    writeFileSync(controlFile, "ok");
    service = await startServiceProcess(env, 60_000, FAULTY_ENTRY);

    // A reading stored first starts the Redis ledger, as in any service that has been running:
    // the readings below are then newer than anything stored before the ledger began, so nothing
    // sends them to the history check on account of a young ledger.
    const now = Date.now();
    const first = new GrpcIngestClient(service.target);
    expect((await first.streamReadings([[meterReading("meter-crash-0", "before", now - 120_000, 0.25)]])).accepted).toBe(1n);
    await sleep(50);
    writeFileSync(controlFile, "crash-after-insert");
    const current = service;
    service.child.kill("SIGUSR2");
    await waitFor(() => current.logs.some((l) => l.storageFault === "crash-after-insert"), 10_000, "the crash mode");

    // One table only, so the one insert that kills the process carries every reading.
    const readings = Array.from({ length: 40 }, (_, i) => meterReading(`meter-crash-${i % 4}`, `crash-${i}`, now - 60_000 + i * 100, 0.25));
    await expect(first.streamReadings([readings]), "the process dies under the call").rejects.toThrow();
    first.close();
    expect(await service.exited, "killed by a signal").toBeNull();

    writeFileSync(controlFile, "ok");
    service = await startServiceProcess(env, 60_000, FAULTY_ENTRY);
    const client = new GrpcIngestClient(service.target);
    const answers: { accepted: bigint; duplicates: bigint; retryable: number }[] = [];
    try {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const answer = await client.streamReadings([readings]);
        const retryable = answer.rejected.filter((r) => r.retryable).length;
        answers.push({ accepted: answer.accepted, duplicates: answer.duplicates, retryable });
        expect(answer.rejected.filter((r) => !r.retryable)).toEqual([]);
        if (retryable === 0) break;
        if (Date.now() > deadline) throw new Error(`the dead process's claims never lapsed: ${JSON.stringify(answers.at(-1), (_, v: unknown) => (typeof v === "bigint" ? Number(v) : v))}`);
        await sleep(250);
      }
    } finally {
      client.close();
    }
    const last = answers.at(-1)!;
    expect(answers.map((a) => a.accepted), "no answer stored the readings again").toEqual(answers.map(() => 0n));
    expect(last.duplicates).toBe(BigInt(readings.length));
    expect(await service.stop(30_000)).toBe(0);
    service = undefined;

    const probe = new HistoryProbe(loadConfig(env));
    try {
      const [raw] = await probe.rows<{ n: number; ids: number }>(
        "SELECT toUInt32(count()) AS n, toUInt32(uniqExact(event_id)) AS ids FROM {db}.meter_readings",
      );
      const [view] = await probe.rows<{ n: number }>("SELECT toUInt32(sum(readings)) AS n FROM {db}.meter_minutes");
      // The readings, plus the one stored first.
      expect({ rows: Number(raw!.n), readings: Number(raw!.ids), counted: Number(view!.n) }).toEqual({
        rows: readings.length + 1,
        readings: readings.length + 1,
        counted: readings.length + 1,
      });
    } finally {
      await probe.close();
    }
  });
});
