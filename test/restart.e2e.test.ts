// What survives a restart of the embedded service: the history in DATA_DIR, and with it the
// dedupe answer — a reading resent after the restart is still a duplicate, not stored twice.
import { afterAll, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { FleetService } from "../gen/wattstream/fleet/v1/fleet_service_pb.js";
import { ReadingSchema } from "../gen/wattstream/telemetry/v1/reading_pb.js";
import { loadConfig, type Config } from "../src/config.js";
import { GrpcIngestClient } from "./support/grpc-ingest-client.js";
import { batteryReading, meterReading, vehicleReading } from "./support/readings.js";
import { HistoryProbe, startTestService, testEnv, type TestService } from "./support/test-service.js";

/**
 * Every service of this file keeps its history in one data directory, each in its own database:
 * the engine binds one directory per process, and a statement it never returns keeps its
 * directory bound after the service stops, so services in directories of their own would fail
 * every test after it instead of only the one that met it.
 */
const DATA_DIR = testEnv().DATA_DIR!;
const fileEnv = (extra: Record<string, string> = {}) => testEnv({ DATA_DIR, ...extra });
const env = fileEnv();
let running: TestService | undefined;

afterAll(async () => {
  await running?.service.stop();
});

async function send(target: string, readings: Parameters<GrpcIngestClient["streamReadings"]>[0]) {
  const client = new GrpcIngestClient(target);
  try {
    return await client.streamReadings(readings);
  } finally {
    client.close();
  }
}

/** Rows of a history table, read through a session of its own on the service's engine. */
async function storedRows(config: Config, table: string): Promise<number> {
  const probe = new HistoryProbe(config);
  try {
    return await probe.count(table);
  } finally {
    await probe.close();
  }
}

describe("restarting the embedded service", () => {
  it("restores each device's newest reading into the in-process live state", async () => {
    const restoreEnv = fileEnv();
    const now = Date.now();
    running = await startTestService(restoreEnv);
    const sent = [
      meterReading("meter-live", "l-1", now - 60_000, 0.5, 229),
      meterReading("meter-live", "l-2", now - 30_000, 0.7, 231.5),
      vehicleReading("ev-live", "l-3", now - 20_000, 1.2, 64, 33),
      batteryReading("bbu-live", "l-4", now - 10_000, 51.6, 28, ["E7"]),
      // Older, sent last: the newest by observed_at must win, as it does live.
      meterReading("meter-live", "l-0", now - 90_000, 0.1, 220),
    ];
    expect((await send(running.target, [sent])).accepted).toBe(5n);
    // A backlog reading observed hours ago (in an older slice of history than the newest), received
    // last: it does not replace the state, but it is the device's last_seen.
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect((await send(running.target, [[vehicleReading("ev-live", "l-backlog", now - 3 * 3_600_000, 0.2, 40, 30)]])).accepted).toBe(1n);
    const fleet = createClient(FleetService, createGrpcTransport({ baseUrl: running.baseUrl }));
    const before = await fleet.getLiveState({ deviceIds: ["meter-live", "ev-live", "bbu-live"] });
    await running.service.stop();

    running = await startTestService(restoreEnv);
    const restoredFleet = createClient(FleetService, createGrpcTransport({ baseUrl: running.baseUrl }));
    // Restored in the background after the port opens, newest history first: the same answer as
    // before the restart once it has read back far enough (values, scores, observed_at, last_seen).
    const restored = async () => (await restoredFleet.getLiveState({ deviceIds: ["meter-live", "ev-live", "bbu-live"] })).devices;
    await expect.poll(restored, { timeout: 10_000, interval: 50 }).toEqual(before.devices);
    expect((await restored())[0]!.eventId).toBe("l-2");
    await running.service.stop();
    running = undefined;
  });

  it("keeps the data, and still counts resent readings as duplicates", async () => {
    const now = Date.now();
    const readings = [
      meterReading("meter-r", "r-1", now - 3_000, 1.1),
      vehicleReading("ev-r", "r-2", now - 2_000, 0.9),
      batteryReading("bbu-r", "r-3", now - 1_000, 51.2, 30, ["E12"]),
    ];

    running = await startTestService(env);
    expect((await send(running.target, [readings])).accepted).toBe(3n);
    await running.service.stop();

    running = await startTestService(env);
    const resent = await send(running.target, [[...readings, meterReading("meter-r", "r-4", Date.now(), 0.4)]]);
    expect(resent.duplicates).toBe(3n);
    expect(resent.accepted).toBe(1n);
    // Once found in history, the ids are back in the ledger: a third send is answered from it.
    expect((await send(running.target, [readings])).duplicates).toBe(3n);
    await running.service.stop();
    running = undefined;

    const probe = new HistoryProbe(loadConfig(env));
    try {
      expect(await probe.count("meter_readings")).toBe(2);
      expect(await probe.count("vehicle_readings")).toBe(1);
      expect(await probe.rows("SELECT device_id, voltage, temperature, error_codes FROM {db}.battery_readings")).toEqual([
        { device_id: "bbu-r", voltage: 51.2, temperature: 30, error_codes: ["E12"] },
      ]);
    } finally {
      await probe.close();
    }
  });
});

describe("a resend after the dedupe window", () => {
  it("is still a duplicate: the ledger forgot it, the history answers", async () => {
    const app = await startTestService(fileEnv({ DEDUPE_WINDOW: "1s", MAX_CLOCK_SKEW: "1s" }));
    try {
      const readings = [meterReading("meter-w", "w-1", Date.now() - 500, 0.7), meterReading("meter-w", "w-2", Date.now() - 400, 0.7)];
      expect((await send(app.target, [readings])).accepted).toBe(2n);
      // Past the window plus the skew the ledger has dropped both ids.
      await new Promise((resolve) => setTimeout(resolve, 2_600));
      const resent = await send(app.target, [readings]);
      expect(resent.duplicates).toBe(2n);
      expect(resent.accepted).toBe(0n);
      expect(await storedRows(app.config, "meter_readings")).toBe(2);
    } finally {
      await app.service.stop();
    }
  });
});

describe("a resend of an id the in-process ledger forgot to stay within LEDGER_MAX_EVENTS", () => {
  it("is still a duplicate, and the ledger keeps taking new ids", async () => {
    const app = await startTestService(fileEnv({ LEDGER_MAX_EVENTS: "1000" }));
    try {
      const start = Date.now() - 60_000;
      // 3,000 readings over 30 meters, in calls of 500: the ledger fills three times over.
      const all = Array.from({ length: 3_000 }, (_, i) => meterReading(`meter-l${i % 30}`, `l-${i}`, start + i, 0.1));
      for (let call = 0; call < 6; call++) {
        const sent = await send(app.target, [all.slice(call * 500, (call + 1) * 500)]);
        expect(sent.accepted).toBe(500n);
      }
      // The first ones were forgotten long ago; the newest are still held.
      const oldest = await send(app.target, [all.slice(0, 500)]);
      expect({ accepted: oldest.accepted, duplicates: oldest.duplicates }).toEqual({ accepted: 0n, duplicates: 500n });
      const newest = await send(app.target, [all.slice(2_600)]);
      expect({ accepted: newest.accepted, duplicates: newest.duplicates }).toEqual({ accepted: 0n, duplicates: 400n });
      const fresh = Array.from({ length: 500 }, (_, i) => meterReading(`meter-l${i % 30}`, `f-${i}`, Date.now() - 1_000 + i, 0.1));
      expect((await send(app.target, [fresh])).accepted).toBe(500n);
      expect(await storedRows(app.config, "meter_readings")).toBe(3_500);
    } finally {
      await app.service.stop();
    }
  });
});

describe("a reading whose observed_at has a sub-millisecond part", () => {
  it("is recognised after a restart, however its nanoseconds round", async () => {
    const env = fileEnv();
    // 0.9996 s past a whole second: stored at the next millisecond, rounded, not truncated.
    const seconds = BigInt(Math.floor(Date.now() / 1000) - 5);
    const reading = create(ReadingSchema, {
      deviceId: "meter-ns",
      eventId: "ns-1",
      observedAt: { seconds, nanos: 999_600_000 },
      sample: { case: "meter", value: { kwhConsumedAc: 0.2, voltage: 230 } },
    });
    let app = await startTestService(env);
    try {
      expect((await send(app.target, [[reading]])).accepted).toBe(1n);
    } finally {
      await app.service.stop();
    }
    app = await startTestService(env);
    try {
      const resent = await send(app.target, [[reading]]);
      expect([resent.accepted, resent.duplicates]).toEqual([0n, 1n]);
    } finally {
      await app.service.stop();
    }
  });
});
