// GetVehiclePerformance's default window answered from the snapshot of every device's window
// (src/analytics/performance-snapshot.ts), through a real gRPC client against the whole service on
// the embedded engine: its answers equal a brute force over the readings sent, and a reading
// acknowledged after the snapshot was read is in the very next answer. /metrics says which
// answers came from the snapshot, so the test knows the path it checks was taken.
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { FleetService, type GetVehiclePerformanceRequestSchema, type GetVehiclePerformanceResponse } from "../gen/wattstream/fleet/v1/fleet_service_pb.js";
import type { Reading } from "../gen/wattstream/telemetry/v1/reading_pb.js";
import { GrpcIngestClient } from "./support/grpc-ingest-client.js";
import { performanceAnswers } from "./support/performance-answers.js";
import { meterReading, vehicleReading } from "./support/readings.js";
import { startTestService, testEnv, type TestService } from "./support/test-service.js";
import { sleep } from "./support/wait-for.js";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

interface Sent {
  readonly deviceId: string;
  readonly at: number;
  readonly kwh: number;
  readonly temp: number;
}

describe("GetVehiclePerformance from the snapshot of every device's default window", () => {
  let app: TestService;
  let fleet: Client<typeof FleetService>;
  let ingestClient: GrpcIngestClient;
  const sent: Sent[] = [];
  let sequence = 0;

  beforeAll(async () => {
    app = await startTestService();
    fleet = createClient(FleetService, createGrpcTransport({ baseUrl: app.baseUrl }));
    ingestClient = new GrpcIngestClient(app.target);
  });
  afterAll(async () => {
    ingestClient?.close();
    await app?.service.stop();
  });

  async function send(readings: { deviceId: string; kind: "meter" | "vehicle"; at: number; kwh: number; temp?: number }[]): Promise<void> {
    const messages: Reading[] = readings.map((r) => {
      const eventId = `snap-${sequence++}`;
      return r.kind === "meter" ? meterReading(r.deviceId, eventId, r.at, r.kwh) : vehicleReading(r.deviceId, eventId, r.at, r.kwh, 50, r.temp ?? 25);
    });
    const response = await ingestClient.ingestReadings(messages);
    expect(response.rejected).toEqual([]);
    expect(response.accepted).toBe(BigInt(readings.length));
    for (const r of readings) sent.push({ deviceId: r.deviceId, at: r.at, kwh: r.kwh, temp: r.kind === "vehicle" ? (r.temp ?? 25) : 0 });
  }

  /** An answer, and whether the snapshot gave it. */
  async function ask(request: MessageInitShape<typeof GetVehiclePerformanceRequestSchema>): Promise<{ answer: GetVehiclePerformanceResponse; fromSnapshot: boolean }> {
    const before = await performanceAnswers(app.baseUrl);
    const answer = await fleet.getVehiclePerformance(request);
    return { answer, fromSnapshot: (await performanceAnswers(app.baseUrl)).snapshot > before.snapshot };
  }

  /** The answer a brute force over every reading sent gives for the answer's own window. */
  function expectBruteForce(answer: GetVehiclePerformanceResponse, vehicleId: string, meterId: string): void {
    const from = timestampMs(answer.windowStart!);
    const to = timestampMs(answer.windowEnd!);
    const of = (deviceId: string) => sent.filter((s) => s.deviceId === deviceId && s.at >= from && s.at < to);
    const dc = of(vehicleId);
    const ac = of(meterId);
    const sum = (rows: Sent[], value: (s: Sent) => number) => rows.reduce((total, s) => total + value(s), 0);
    expect(answer.totalKwhDeliveredDc).toBeCloseTo(sum(dc, (s) => s.kwh), 9);
    expect(answer.totalKwhConsumedAc).toBeCloseTo(sum(ac, (s) => s.kwh), 9);
    expect(answer.vehicleReadingCount).toBe(BigInt(dc.length));
    expect(answer.meterReadingCount).toBe(BigInt(ac.length));
    expect(answer.avgBatteryTemp).toBeCloseTo(dc.length === 0 ? 0 : sum(dc, (s) => s.temp) / dc.length, 9);
    expect(answer.efficiencyRatio).toBeCloseTo(sum(ac, (s) => s.kwh) > 0 ? sum(dc, (s) => s.kwh) / sum(ac, (s) => s.kwh) : 0, 12);
  }

  /** Asks until the snapshot answers (the first call of a minute starts its read), checking every answer. */
  async function askUntilSnapshot(vehicleId: string, meterId: string): Promise<GetVehiclePerformanceResponse> {
    for (const deadline = Date.now() + 20_000; ; await sleep(25)) {
      const { answer, fromSnapshot } = await ask({ vehicleId });
      expectBruteForce(answer, vehicleId, meterId);
      if (fromSnapshot) return answer;
      if (Date.now() > deadline) throw new Error(`no answer for ${vehicleId} came from the snapshot within 20 s`);
    }
  }

  it("equals the brute force, and takes a reading acknowledged after the snapshot was read into the next answer", async () => {
    const now = Date.now();
    await fleet.linkVehicleToMeter({ vehicleId: "ev-a", meterId: "meter-a", validFrom: timestampFromMs(now - 48 * HOUR) });
    await fleet.linkVehicleToMeter({ vehicleId: "ev-b", meterId: "meter-b", validFrom: timestampFromMs(now - 48 * HOUR) });
    const early = [];
    for (let i = 0; i < 6; i++) {
      const at = now - 20 * HOUR + i * 37 * MINUTE + 1_234;
      early.push(
        { deviceId: "meter-a", kind: "meter" as const, at, kwh: 10 + i },
        { deviceId: "ev-a", kind: "vehicle" as const, at: at + 5_000, kwh: 9 + i * 0.5, temp: 20 + i },
        { deviceId: "meter-b", kind: "meter" as const, at: at + 9_000, kwh: 5 },
        { deviceId: "ev-b", kind: "vehicle" as const, at: at + 11_000, kwh: 4.25, temp: 31 },
      );
    }
    await send(early);

    const first = await askUntilSnapshot("ev-a", "meter-a");
    expect(first.vehicleReadingCount).toBe(6n);
    const minute = timestampMs(first.windowEnd!);

    // Late readings of ev-a's meter and of ev-a, well inside the window, acknowledged now: the
    // very next answers must hold them, whichever minute it is by then.
    await send([{ deviceId: "meter-a", kind: "meter", at: now - 3 * HOUR, kwh: 7.5 }]);
    const afterMeter = await ask({ vehicleId: "ev-a" });
    expectBruteForce(afterMeter.answer, "ev-a", "meter-a");
    expect(afterMeter.answer.meterReadingCount).toBe(7n);
    await send([{ deviceId: "ev-a", kind: "vehicle", at: now - 2 * HOUR, kwh: 6, temp: 44 }]);
    const afterVehicle = await ask({ vehicleId: "ev-a" });
    expectBruteForce(afterVehicle.answer, "ev-a", "meter-a");
    expect(afterVehicle.answer.vehicleReadingCount).toBe(7n);
    // Within the same minute those come from a statement; the snapshot of the next has them.
    if (timestampMs(afterVehicle.answer.windowEnd!) === minute) expect(afterVehicle.fromSnapshot).toBe(false);

    // GetFleetSummary takes the same snapshot, reading the devices written to since by themselves:
    // its totals hold the late readings too.
    const summary = await fleet.getFleetSummary({});
    const from = timestampMs(summary.windowStart!);
    const to = timestampMs(summary.windowEnd!);
    const inWindow = (prefix: string) => sent.filter((r) => r.deviceId.startsWith(prefix) && r.at >= from && r.at < to);
    expect(summary.totalKwhConsumedAc).toBeCloseTo(inWindow("meter-").reduce((t, r) => t + r.kwh, 0), 9);
    expect(summary.totalKwhDeliveredDc).toBeCloseTo(inWindow("ev-").reduce((t, r) => t + r.kwh, 0), 9);

    // A vehicle nobody wrote to is still answered from it; so is one whose reading of the
    // current minute lies past the window's end.
    await send([{ deviceId: "ev-b", kind: "vehicle", at: Date.now(), kwh: 3, temp: 30 }]);
    const other = await askUntilSnapshot("ev-b", "meter-b");
    expect(other.vehicleReadingCount).toBe(6n + (timestampMs(other.windowEnd!) > sent.at(-1)!.at ? 1n : 0n));
  });

  it("answers a named meter_id over the whole window from it, and other windows from a statement", async () => {
    const vehicleFirst = await askUntilSnapshot("ev-b", "meter-b");
    // meter-a was written to since this minute's snapshot (above), meter-b was not.
    const named = await ask({ vehicleId: "ev-b", meterId: "meter-b" });
    expectBruteForce(named.answer, "ev-b", "meter-b");
    if (timestampMs(named.answer.windowEnd!) === timestampMs(vehicleFirst.windowEnd!)) expect(named.fromSnapshot).toBe(true);
    const changedMeter = await ask({ vehicleId: "ev-b", meterId: "meter-a" });
    expectBruteForce(changedMeter.answer, "ev-b", "meter-a");

    const end = Math.floor(Date.now() / MINUTE) * MINUTE;
    const explicit = await ask({ vehicleId: "ev-b", windowEnd: timestampFromMs(end) });
    expect(explicit.fromSnapshot).toBe(false);
    expectBruteForce(explicit.answer, "ev-b", "meter-b");
    const longer = await ask({ vehicleId: "ev-b", windowHours: 48 });
    expect(longer.fromSnapshot).toBe(false);
    expectBruteForce(longer.answer, "ev-b", "meter-b");
  });

  it("is off with PERFORMANCE_SNAPSHOT=off: every answer is a statement's", async () => {
    // One engine data directory per process: the service above gives its up first.
    await app.service.stop();
    const off = await startTestService(testEnv({ PERFORMANCE_SNAPSHOT: "off" }));
    try {
      const client = createClient(FleetService, createGrpcTransport({ baseUrl: off.baseUrl }));
      for (let i = 0; i < 3; i++) await client.getVehiclePerformance({ vehicleId: "ev-none" });
      expect(await performanceAnswers(off.baseUrl)).toEqual({ snapshot: 0, statement: 3 });
    } finally {
      await off.service.stop();
    }
  });
});
