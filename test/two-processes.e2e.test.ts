// Two service processes behind a load balancer, sharing one Redis: a device that sends the same
// readings to both (a retry that landed on the other instance) gets each stored exactly once —
// the shared ledger makes the second a duplicate, or "in flight" while the first is storing it.
// Each process runs its own embedded ClickHouse in its own DATA_DIR, so after both have exited
// the test reads both histories and checks that together they hold every reading once.
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { Reading } from "../gen/wattstream/telemetry/v1/reading_pb.js";
import { loadConfig } from "../src/config.js";
import { GrpcIngestClient } from "./support/grpc-ingest-client.js";
import { meterReading, vehicleReading } from "./support/readings.js";
import { redisServerAvailable, startRedisServer, type RedisServer } from "./support/redis-server.js";
import { startServiceProcess, type ServiceProcess } from "./support/service-process.js";
import { HistoryProbe, testEnv } from "./support/test-service.js";

const READINGS = 1_000;
const PER_MESSAGE = 100;
const DEVICES = 10;

interface Tally {
  /** Readings sent in calls that answered. */
  sent: number;
  accepted: number;
  duplicates: number;
  /** Readings answered retryable (in flight on the other process) and sent again. */
  retried: number;
  calls: number;
}

function newTally(): Tally {
  return { sent: 0, accepted: 0, duplicates: 0, retried: 0, calls: 0 };
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * Streams the readings to one process in messages of PER_MESSAGE, and resends those answered
 * retryable after a short pause until every reading is settled (stored or duplicate). Any other
 * rejection fails the test. Bounded by timeoutMs.
 */
async function sendUntilSettled(
  client: GrpcIngestClient,
  readings: readonly Reading[],
  tally: Tally,
  order: "forward" | "backward" = "forward",
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let pending = [...readings];
  while (pending.length > 0) {
    if (Date.now() > deadline) throw new Error(`${pending.length} readings still unsettled after ${timeoutMs} ms`);
    const messages = chunks(pending, PER_MESSAGE);
    if (order === "backward") {
      messages.reverse();
      pending = messages.flat();
    }
    const response = await client.streamReadings(messages);
    tally.calls++;
    tally.sent += pending.length;
    tally.accepted += Number(response.accepted);
    tally.duplicates += Number(response.duplicates);
    const final = response.rejected.filter((r) => !r.retryable);
    expect(final, "only in-flight rejections are expected").toEqual([]);
    pending = response.rejected.map((r) => pending[r.index]!);
    tally.retried += pending.length;
    if (pending.length > 0) await sleep(100);
  }
}

function fleetReadings(): Reading[] {
  const now = Date.now();
  return Array.from({ length: READINGS }, (_, i) => {
    const device = i % DEVICES;
    const observedAt = now - (READINGS - i) * 100;
    return device < DEVICES / 2
      ? meterReading(`meter-${device}`, `evt-${String(i).padStart(4, "0")}`, observedAt, 0.1 + (i % 7) / 10)
      : vehicleReading(`ev-${device}`, `evt-${String(i).padStart(4, "0")}`, observedAt, 0.2 + (i % 5) / 10, 20 + (i % 70));
  });
}

const haveRedis = redisServerAvailable();

describe.skipIf(!haveRedis)("two service processes sharing one Redis", () => {
  let redis: RedisServer | undefined;
  const processes: ServiceProcess[] = [];
  const clients: GrpcIngestClient[] = [];

  beforeAll(async () => {
    redis = await startRedisServer();
  });

  afterEach(() => {
    for (const client of clients.splice(0)) client.close();
    for (const service of processes.splice(0)) service.kill();
  });

  afterAll(async () => {
    await redis?.stop();
  });

  it("stores each of 1,000 readings sent to both processes exactly once", { timeout: 180_000 }, async () => {
    const envs = [0, 1].map(() => testEnv({ REDIS_URL: redis!.url, LOG_LEVEL: "info" }));
    expect(envs[0]!.DATA_DIR).not.toBe(envs[1]!.DATA_DIR);
    const started = await Promise.allSettled(envs.map((env) => startServiceProcess(env)));
    for (const s of started) if (s.status === "fulfilled") processes.push(s.value);
    for (const s of started) if (s.status === "rejected") throw s.reason;
    const [a, b] = processes as [ServiceProcess, ServiceProcess];
    const [clientA, clientB] = [new GrpcIngestClient(a.target), new GrpcIngestClient(b.target)];
    clients.push(clientA, clientB);

    const readings = fleetReadings();
    const ids = readings.map((r) => r.eventId);
    expect(new Set(ids).size).toBe(READINGS);

    // Warm both up (worker threads, connections) with a reading that is rejected, so nothing is
    // stored, and the real round overlaps.
    for (const client of [clientA, clientB]) {
      const warmUp = await client.ingestReadings([meterReading("", "warm-up", Date.now(), 0)]);
      expect(warmUp.rejected).toHaveLength(1);
    }

    // Round 1: the same readings to both at once, one from the front and one from the back, so
    // they contend for ids through Redis (each id is stored by one, a duplicate or in flight at
    // the other).
    const [tallyA, tallyB] = [newTally(), newTally()];
    await Promise.all([sendUntilSettled(clientA, readings, tallyA, "forward"), sendUntilSettled(clientB, readings, tallyB, "backward")]);
    const sent = tallyA.sent + tallyB.sent;
    const retried = tallyA.retried + tallyB.retried;
    expect(tallyA.accepted + tallyB.accepted).toBe(READINGS);
    expect(tallyA.accepted + tallyA.duplicates + tallyB.accepted + tallyB.duplicates).toBe(2 * READINGS);
    expect(sent).toBe(2 * READINGS + retried);
    expect(tallyA.accepted + tallyB.accepted + tallyA.duplicates + tallyB.duplicates).toBe(sent - retried);

    // Round 2: everything again to both; each process answers from the shared ledger.
    const [againA, againB] = [newTally(), newTally()];
    await Promise.all([sendUntilSettled(clientA, readings, againA), sendUntilSettled(clientB, readings, againB)]);
    expect([againA.accepted, againB.accepted]).toEqual([0, 0]);
    expect([againA.duplicates, againB.duplicates]).toEqual([READINGS, READINGS]);
    expect(againA.retried + againB.retried).toBe(0);

    clientA.close();
    clientB.close();
    const codes = await Promise.all([a.stop(20_000), b.stop(20_000)]);
    expect(codes).toEqual([0, 0]);
    for (const service of [a, b]) expect(service.logs.map((l) => l.msg)).toContain("stopped");

    // Each history, one after the other: the test process opens one data dir at a time.
    const stored: { event_id: string; device_id: string; n: number }[][] = [];
    for (const env of envs) {
      const probe = new HistoryProbe(loadConfig(env));
      try {
        stored.push(
          await probe.rows<{ event_id: string; device_id: string; n: number }>(
            `SELECT event_id, device_id, toUInt32(count()) AS n FROM (
               SELECT event_id, device_id FROM {db}.meter_readings
               UNION ALL SELECT event_id, device_id FROM {db}.vehicle_readings
             ) GROUP BY event_id, device_id ORDER BY event_id`,
          ),
        );
      } finally {
        await probe.close();
      }
    }
    const [inA, inB] = stored as [(typeof stored)[0], (typeof stored)[0]];
    // Each process's rows match what it said it accepted.
    expect(inA.reduce((sum, r) => sum + Number(r.n), 0)).toBe(tallyA.accepted);
    expect(inB.reduce((sum, r) => sum + Number(r.n), 0)).toBe(tallyB.accepted);
    // No id twice in one history, none in both, and together every id.
    expect([...inA, ...inB].filter((r) => Number(r.n) !== 1)).toEqual([]);
    const idsA = new Set(inA.map((r) => r.event_id));
    expect(inB.filter((r) => idsA.has(r.event_id))).toEqual([]);
    expect([...inA, ...inB].map((r) => r.event_id).sort()).toEqual([...ids].sort());
    const byId = new Map(readings.map((r) => [r.eventId, r.deviceId]));
    expect([...inA, ...inB].filter((r) => byId.get(r.event_id) !== r.device_id)).toEqual([]);
  });
});
