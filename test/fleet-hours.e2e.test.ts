// The fleet-wide totals (GetFleetSummary, ListAlerts) read whole hours from the hourly rollups,
// the whole minutes outside them from the minute rollups and the partial minutes from raw rows.
// These tests send hours of readings through IngestService — late, out of order, resent — with
// links that change inside an hour, and compare the totals for windows whose edges fall inside an
// hour and inside a minute with a brute force over the raw rows read back with FINAL, which
// applies the link rules itself (a reading counts for the vehicle linked to its meter at its time).
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { ClickHouseClient } from "@clickhouse/client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FleetService } from "../gen/wattstream/fleet/v1/fleet_service_pb.js";
import type { Reading } from "../gen/wattstream/telemetry/v1/reading_pb.js";
import { queryFleetWindow } from "../src/analytics/fleet-efficiency.js";
import { GrpcIngestClient } from "./support/grpc-ingest-client.js";
import { meterReading, vehicleReading } from "./support/readings.js";
import { HistoryProbe, startTestService, type TestService } from "./support/test-service.js";

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;

let app: TestService;
let probe: HistoryProbe;
let fleet: Client<typeof FleetService>;
let devices: GrpcIngestClient;
let analytics: ClickHouseClient;
/** Start of the hour 7 hours before the hour the tests run in. */
let base: number;

beforeAll(async () => {
  app = await startTestService();
  probe = new HistoryProbe(app.config, app.service);
  fleet = createClient(FleetService, createGrpcTransport({ baseUrl: app.baseUrl }));
  devices = new GrpcIngestClient(app.target);
  analytics = await probe.clientOnServiceDatabase();

  base = Math.floor(Date.now() / HOUR) * HOUR - 7 * HOUR;
  const readings: Reading[] = [];
  // From an hour before base to the present, each device every 50 s at its own offset (so
  // readings fall at every second of the minute over time), energy varying with the index.
  const meters = ["meter-a", "meter-b", "meter-c"];
  const vehicles = ["ev-move", "ev-gap", "ev-steady", "ev-unlinked"];
  const last = Date.now() - 5 * SECOND;
  for (let at = base - HOUR, i = 0; at < last; at += 50 * SECOND, i++) {
    meters.forEach((meter, m) => {
      const t = at + m * 7_131;
      if (t < last) readings.push(meterReading(meter, `${meter}-${i}`, t, 0.2 + ((i + m) % 9) * 0.031));
    });
    vehicles.forEach((vehicle, v) => {
      const t = at + 2_017 + v * 5_003;
      if (t < last) readings.push(vehicleReading(vehicle, `${vehicle}-${i}`, t, 0.15 + ((i + 2 * v) % 7) * 0.027, 50, 20 + (i % 13)));
    });
  }
  // Links that change inside an hour, at times inside a minute: ev-move charges from meter-a,
  // then from meter-b; ev-gap from meter-a until an explicit end, then from nothing, then from
  // meter-c; ev-steady from meter-c throughout; ev-unlinked from nothing.
  const link = (vehicleId: string, meterId: string, from: number, until?: number) =>
    fleet.linkVehicleToMeter({ vehicleId, meterId, validFrom: timestampFromMs(from), validUntil: until === undefined ? undefined : timestampFromMs(until) });
  await link("ev-move", "meter-a", base - 2 * HOUR);
  await link("ev-move", "meter-b", base + 2 * HOUR + 23 * MINUTE + 17_250);
  await link("ev-gap", "meter-a", base - 2 * HOUR, base + HOUR + 41 * MINUTE + 3_500);
  await link("ev-gap", "meter-c", base + 4 * HOUR + 5 * MINUTE + 59_999);
  await link("ev-steady", "meter-c", base - 2 * HOUR);

  // The newest half first, then the older half as an offline backlog, newest first; then all
  // again, as devices resend what they are unsure of.
  const half = Math.floor(readings.length / 2);
  for (const batch of chunks([...readings.slice(half), ...readings.slice(0, half).reverse()], 500)) {
    expect((await devices.ingestReadings(batch)).rejected).toEqual([]);
  }
  let duplicates = 0n;
  for (const batch of chunks(readings, 500)) duplicates += (await devices.ingestReadings(batch)).duplicates;
  expect(duplicates).toBe(BigInt(readings.length));
}, 120_000);

afterAll(async () => {
  devices?.close();
  await app?.service.stop();
  await probe?.close();
});

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

interface Raw {
  readonly device: string;
  readonly at: number;
  readonly kwh: number;
}

async function rawRows(table: string, kwh: string): Promise<Raw[]> {
  const rows = await probe.rows<{ device: string; at: string; kwh: number }>(
    `SELECT device_id AS device, toUnixTimestamp64Milli(observed_at) AS at, ${kwh} AS kwh FROM {db}.${table} FINAL`,
  );
  return rows.map((r) => ({ device: r.device, at: Number(r.at), kwh: Number(r.kwh) }));
}

/** Brute force over raw rows for [from, to), with the link rules applied reading by reading. */
async function bruteForce(from: number, to: number) {
  const [meters, vehicles] = await Promise.all([rawRows("meter_readings", "kwh_consumed_ac"), rawRows("vehicle_readings", "kwh_delivered_dc")]);
  const links = (
    await probe.rows<{ vehicle: string; meter: string; from: string; until: string | null }>(
      `SELECT vehicle_id AS vehicle, meter_id AS meter, toUnixTimestamp64Milli(valid_from) AS from, toUnixTimestamp64Milli(valid_until) AS until
       FROM {db}.vehicle_meter_links FINAL`,
    )
  ).map((l) => ({ vehicle: l.vehicle, meter: l.meter, from: Number(l.from), until: l.until === null ? undefined : Number(l.until) }));
  const inWindow = (r: Raw) => r.at >= from && r.at < to;
  /** Does meter's reading at `at` count for the vehicle: is a link of the vehicle to it valid then? */
  const counts = (vehicle: string, meter: string, at: number) => {
    const own = links.filter((l) => l.vehicle === vehicle);
    return own.some((l) => {
      if (l.meter !== meter || at < l.from) return false;
      const next = own.filter((o) => o.from > l.from).reduce((min, o) => Math.min(min, o.from), Infinity);
      return at < (l.until ?? next);
    });
  };
  const perVehicle = new Map<string, { dc: number; n: number; ac: number; linked: boolean }>();
  for (const r of vehicles.filter(inWindow)) {
    const v = perVehicle.get(r.device) ?? { dc: 0, n: 0, ac: 0, linked: false };
    perVehicle.set(r.device, { ...v, dc: v.dc + r.kwh, n: v.n + 1 });
  }
  for (const [vehicle, v] of perVehicle) {
    const own = meters.filter((r) => inWindow(r) && counts(vehicle, r.device, r.at));
    const linked = links.some((l) => l.vehicle === vehicle && l.from < to);
    perVehicle.set(vehicle, { ...v, ac: own.reduce((s, r) => s + r.kwh, 0), linked });
  }
  return {
    ac: meters.filter(inWindow).reduce((s, r) => s + r.kwh, 0),
    dc: vehicles.filter(inWindow).reduce((s, r) => s + r.kwh, 0),
    perVehicle,
  };
}

async function expectEqualsBruteForce(from: number, to: number) {
  const answer = await queryFleetWindow(analytics, from, to);
  const expected = await bruteForce(from, to);
  expect(answer.energy.kwhConsumedAc).toBeCloseTo(expected.ac, 9);
  expect(answer.energy.kwhDeliveredDc).toBeCloseTo(expected.dc, 9);
  expect(answer.efficiency.map((v) => v.vehicleId).sort()).toEqual([...expected.perVehicle.keys()].sort());
  for (const v of answer.efficiency) {
    const want = expected.perVehicle.get(v.vehicleId)!;
    expect(v.kwhDeliveredDc, v.vehicleId).toBeCloseTo(want.dc, 9);
    expect(v.readings, v.vehicleId).toBe(want.n);
    expect(v.kwhConsumedAc, v.vehicleId).toBeCloseTo(want.ac, 9);
    expect(v.ratio, v.vehicleId).toBe(want.ac > 0 ? v.kwhDeliveredDc / v.kwhConsumedAc : undefined);
  }
  return { answer, expected };
}

describe("fleet-wide totals over the hourly rollups", () => {
  it("equal a brute force over raw rows when both window edges fall inside an hour and inside a minute", async () => {
    const from = base + 37 * MINUTE + 12_345;
    const to = base + 6 * HOUR + 8 * MINUTE + 45_678;
    const { answer } = await expectEqualsBruteForce(from, to);
    // The links changed inside the window: ev-move and ev-gap have more than one interval.
    const move = answer.efficiency.find((v) => v.vehicleId === "ev-move")!;
    const gap = answer.efficiency.find((v) => v.vehicleId === "ev-gap")!;
    expect([move.linkIntervals, gap.linkIntervals]).toEqual([2, 2]);
    expect(answer.efficiency.find((v) => v.vehicleId === "ev-unlinked")?.ratio).toBeUndefined();
    // Whole hours were there to be read from the hourly rollup.
    const [hours] = await probe.rows<{ n: string }>(
      `SELECT count() AS n FROM (SELECT hour FROM {db}.meter_hours WHERE hour >= fromUnixTimestamp64Milli(${from}, 'UTC') GROUP BY hour)`,
    );
    expect(Number(hours!.n)).toBeGreaterThanOrEqual(5);
  });

  it("equal a brute force for windows without a whole hour, without a whole minute, on exact hours and on whole minutes", async () => {
    await expectEqualsBruteForce(base + 2 * HOUR + 3 * MINUTE + 1, base + 2 * HOUR + 57 * MINUTE + 59_999);
    await expectEqualsBruteForce(base + 3 * HOUR + 10 * MINUTE + 5_000, base + 3 * HOUR + 10 * MINUTE + 55_000);
    await expectEqualsBruteForce(base + HOUR, base + 5 * HOUR);
    // Whole minutes, partial hours: no raw rows are read (GetFleetSummary's and ListAlerts' windows).
    await expectEqualsBruteForce(base + 2 * HOUR + 3 * MINUTE, base + 6 * HOUR + 7 * MINUTE);
    await expectEqualsBruteForce(base - HOUR, base + 8 * HOUR);
  });

  it("answer GetFleetSummary's totals as the brute force does for its window", async () => {
    const summary = await fleet.getFleetSummary({ windowHours: 24 });
    const end = timestampMs(summary.windowEnd!);
    const expected = await bruteForce(end - 24 * HOUR, end);
    expect(summary.totalKwhConsumedAc).toBeCloseTo(expected.ac, 9);
    expect(summary.totalKwhDeliveredDc).toBeCloseTo(expected.dc, 9);
    const withRatio = [...expected.perVehicle.values()].filter((v) => v.ac > 0).length;
    expect(summary.efficiencyBuckets.reduce((n, b) => n + Number(b.vehicles), 0)).toBe(withRatio);
    expect(Number(summary.vehiclesWithoutEfficiency)).toBe(expected.perVehicle.size - withRatio);
  });

  it("counts a retried insert block once in the hourly and by-time rollups, as in the history table", async () => {
    const at = base + 3 * HOUR + 30 * MINUTE + 30_500;
    // Into the ingest table, as the service's inserts into a ClickHouse server go: history and
    // every rollup in one statement (the embedded feed's retries are in history-sink.test.ts).
    const insert = `INSERT INTO {db}.meter_ingest (device_id, event_id, observed_at, received_at, kwh_consumed_ac, voltage)
      SETTINGS insert_deduplication_token = 'hours-retry-1'
      VALUES ('meter-retry', 'r-1', fromUnixTimestamp64Milli(${at}, 'UTC'), now64(3, 'UTC'), 4.25, 230),
             ('meter-retry', 'r-2', fromUnixTimestamp64Milli(${at + 2 * HOUR}, 'UTC'), now64(3, 'UTC'), 1.5, 230)`;
    await probe.command(insert);
    await probe.command(insert);
    const [row] = await probe.rows<{ n: string; kwh: number }>(
      "SELECT sum(readings) AS n, sum(kwh_consumed_ac) AS kwh FROM {db}.meter_hours WHERE device_id = 'meter-retry'",
    );
    expect([Number(row!.n), Number(row!.kwh)]).toEqual([2, 5.75]);
    const [byTime] = await probe.rows<{ n: string }>("SELECT sum(readings) AS n FROM {db}.meter_minutes_by_time WHERE device_id = 'meter-retry'");
    expect(Number(byTime!.n)).toBe(2);
    await expectEqualsBruteForce(base, base + 7 * HOUR);
  });
});
