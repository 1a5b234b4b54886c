// FleetService's fleet-wide answers — battery health trends, alerts and the fleet summary —
// through a real connect-node client against the whole service on the embedded engine, with
// readings sent through IngestService. Expected figures are computed by brute force over the raw
// history rows (read back with FINAL), so they check the rollups against a plain computation.
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AlertKind, FleetService, HealthLevel, Recommendation, type Alert } from "../gen/wattstream/fleet/v1/fleet_service_pb.js";
import type { Reading } from "../gen/wattstream/telemetry/v1/reading_pb.js";
import { GrpcIngestClient } from "./support/grpc-ingest-client.js";
import { batteryReading, meterReading, vehicleReading } from "./support/readings.js";
import { redisServerAvailable, startRedisServer, type RedisServer } from "./support/redis-server.js";
import { HistoryProbe, startTestService, testEnv, type TestService } from "./support/test-service.js";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

let app: TestService;
let probe: HistoryProbe;
let fleet: Client<typeof FleetService>;
let ingestClient: GrpcIngestClient;

beforeAll(async () => {
  app = await startTestService(testEnv({ OFFLINE_AFTER: "1h" }));
  probe = new HistoryProbe(app.config, app.service);
  fleet = createClient(FleetService, createGrpcTransport({ baseUrl: app.baseUrl }));
  ingestClient = new GrpcIngestClient(app.target);
});
afterAll(async () => {
  ingestClient?.close();
  await app?.service.stop();
  await probe?.close();
});

async function ingest(readings: readonly Reading[]): Promise<void> {
  const response = await ingestClient.ingestReadings(readings);
  expect(response.rejected).toEqual([]);
}

function rejection(promise: Promise<unknown>): Promise<ConnectError> {
  return promise.then(
    () => {
      throw new Error("expected the call to fail");
    },
    (e: unknown) => ConnectError.from(e),
  );
}

interface ScoredRow {
  readonly at: number;
  readonly score: number;
  readonly version: number;
  readonly level: string;
  readonly recommendation: string;
}

async function storedScores(deviceId: string): Promise<ScoredRow[]> {
  const rows = await probe.rows<{ at: string; score: number; version: number; level: string; recommendation: string }>(
    `SELECT toUnixTimestamp64Milli(observed_at) AS at, health_score AS score, score_version AS version, health_level AS level,
            recommendation
     FROM {db}.battery_readings FINAL WHERE device_id = '${deviceId}' ORDER BY observed_at`,
  );
  return rows.map((r) => ({ ...r, at: Number(r.at), score: Number(r.score), version: Number(r.version) }));
}

/** Brute force: per hour, min/avg/max/count of the stored scores observed in [from, to). */
function hourly(rows: readonly ScoredRow[], from: number, to: number) {
  const hours = new Map<number, number[]>();
  for (const row of rows) {
    if (row.at < from || row.at >= to) continue;
    const hour = Math.floor(row.at / HOUR) * HOUR;
    hours.set(hour, [...(hours.get(hour) ?? []), row.score]);
  }
  return [...hours.entries()]
    .sort(([a], [b]) => a - b)
    .map(([hour, scores]) => ({
      hour,
      min: Math.min(...scores),
      avg: scores.reduce((s, x) => s + x, 0) / scores.length,
      max: Math.max(...scores),
      count: scores.length,
    }));
}

describe("GetDeviceHealth", () => {
  it("answers the latest score and an hourly trend equal to a brute-force computation over raw rows", async () => {
    const now = Date.now();
    const readings: Reading[] = [];
    // Every 7 minutes for 6 hours, the last one now — so the hour in progress has a reading
    // however soon after the hour the test runs: heat waves and error codes make the score move.
    const first = now - Math.floor((6 * HOUR) / (7 * MINUTE)) * 7 * MINUTE;
    for (let i = 0, at = first; at <= now; i++, at += 7 * MINUTE) {
      const temperature = 25 + ((i * 13) % 40);
      const codes = i % 5 === 0 ? ["E7"] : [];
      readings.push(batteryReading("unit-trend", `t-${i}`, at, 48 - (i % 4) * 0.9, temperature, codes));
    }
    // Newest half first, then the backlog, then everything again (duplicates must count once).
    const half = Math.floor(readings.length / 2);
    await ingest(readings.slice(half));
    await ingest(readings.slice(0, half));
    const resend = await ingestClient.ingestReadings(readings);
    expect(resend.duplicates).toBe(BigInt(readings.length));

    const answer = await fleet.getDeviceHealth({ deviceId: "unit-trend", windowHours: 4 });
    const rows = await storedScores("unit-trend");
    expect(rows).toHaveLength(readings.length);
    const newest = rows.at(-1)!;
    expect(answer.latest).toMatchObject({ healthScore: newest.score, scoreVersion: 1 });
    expect(HealthLevel[answer.latest!.healthLevel]).toBe(newest.level);
    expect(Recommendation[answer.latest!.recommendation]).toBe(newest.recommendation);
    expect(timestampMs(answer.observedAt!)).toBe(newest.at);

    const start = timestampMs(answer.windowStart!);
    const end = timestampMs(answer.windowEnd!);
    expect(end - start).toBe(4 * HOUR);
    expect(end % HOUR).toBe(0);
    expect(end).toBeGreaterThan(now);
    const expected = hourly(rows, start, end);
    expect(expected.length).toBeGreaterThanOrEqual(4);
    expect(new Set(expected.map((p) => p.min)).size + new Set(expected.map((p) => p.max)).size).toBeGreaterThan(2);
    expect(
      answer.trend.map((p) => ({
        hour: timestampMs(p.hourStart!),
        min: p.minHealthScore,
        avg: p.avgHealthScore,
        max: p.maxHealthScore,
        count: Number(p.readingCount),
      })),
    ).toEqual(expected.map((p) => ({ ...p, avg: expect.closeTo(p.avg, 9) })));

    // The default window is 24 hours: every reading of the last 6 hours is in it.
    const day = await fleet.getDeviceHealth({ deviceId: "unit-trend" });
    expect(day.trend.reduce((n, p) => n + Number(p.readingCount), 0)).toBe(readings.length);
  });

  it("counts a retried insert block once in the rollup (deduplication window)", async () => {
    const at = Date.now() - 2 * HOUR;
    // Into the ingest table, as the service's inserts into a ClickHouse server go: history and the
    // rollup in one statement (the embedded feed's retries are in history-sink.test.ts).
    const insert = `INSERT INTO {db}.battery_ingest
        (device_id, event_id, observed_at, received_at, voltage, temperature, error_codes, health_score, health_level, recommendation, score_version)
      SETTINGS insert_deduplication_token = 'retry-block-1'
      VALUES ('unit-retry', 'r-1', fromUnixTimestamp64Milli(${at}, 'UTC'), now64(3, 'UTC'), 48, 25, [], 77, 'OK', 'NONE', 1)`;
    await probe.command(insert);
    await probe.command(insert);
    const [row] = await probe.rows<{ n: string }>("SELECT sum(readings) AS n FROM {db}.battery_health_hours WHERE device_id = 'unit-retry'");
    expect(Number(row!.n)).toBe(1);
    const answer = await fleet.getDeviceHealth({ deviceId: "unit-retry", windowHours: 3 });
    expect(answer.trend.map((p) => [p.minHealthScore, p.avgHealthScore, p.maxHealthScore, p.readingCount])).toEqual([[77, 77, 77, 1n]]);
  });

  it("answers NOT_FOUND for a unit without readings and INVALID_ARGUMENT for a bad request", async () => {
    expect((await rejection(fleet.getDeviceHealth({ deviceId: "unit-never" }))).code).toBe(Code.NotFound);
    expect((await rejection(fleet.getDeviceHealth({ deviceId: "unit-trend", windowHours: 721 }))).code).toBe(Code.InvalidArgument);
    expect((await rejection(fleet.getDeviceHealth({ deviceId: "" }))).code).toBe(Code.InvalidArgument);
  });
});

// Alerts and the summary judge the whole fleet, so they get a service of their own on a fresh
// database (same engine data path: one per process), whose every row the brute force can read;
// once with each live store, as each surveys the fleet its own way.
fleetWideAnswers("in-process live state", () => ({}));
describe.skipIf(!redisServerAvailable())("with live state in Redis", () => {
  let redis: RedisServer | undefined;
  beforeAll(async () => {
    redis = await startRedisServer();
  });
  afterAll(async () => {
    await redis?.stop();
  });
  fleetWideAnswers("Redis live state", () => ({ REDIS_URL: redis!.url }));
});

function fleetWideAnswers(store: string, liveEnv: () => Record<string, string>) {
  describe(`fleet-wide answers, ${store}`, () => {
    const OFFLINE_AFTER_MS = 6_000;
    let fleetApp: TestService;
    let fleetProbe: HistoryProbe;
    let client: Client<typeof FleetService>;
    let devices: GrpcIngestClient;

    beforeAll(async () => {
      fleetApp = await startTestService({
        ...testEnv(),
        ...liveEnv(),
        DATA_DIR: app.config.clickhouse.dataDir,
        OFFLINE_AFTER: `${OFFLINE_AFTER_MS}ms`,
      });
      fleetProbe = new HistoryProbe(fleetApp.config, fleetApp.service);
      client = createClient(FleetService, createGrpcTransport({ baseUrl: fleetApp.baseUrl }));
      devices = new GrpcIngestClient(fleetApp.target);

      const now = Date.now();
      const at = (i: number) => now - 50 * MINUTE + i * 4 * MINUTE + 17_321;
      const send = async (readings: Reading[]) => expect((await devices.ingestReadings(readings)).rejected).toEqual([]);
      const hot = (id: string, base: number) =>
        [0, 1, 2].map((i) => batteryReading(id, `${id}-${i}`, base + i * MINUTE, 48, 70, ["E1", "E2"]));

      // These go silent: sent first, then nothing for longer than OFFLINE_AFTER.
      await send([meterReading("meter-old", "o-1", now - 20 * MINUTE, 0.2), ...hot("unit-old-crit", now - 30 * MINUTE)]);
      await new Promise((resolve) => setTimeout(resolve, OFFLINE_AFTER_MS + 500));

      // Vehicles with their meters: DC / AC of 0.7, 0.845 (just below 0.85), 0.92, one without a
      // link and one whose meter reports nothing. A reading before the window does not count.
      const pairs: [string, string | undefined, number][] = [
        ["ev-low", "meter-low", 0.7],
        ["ev-edge", "meter-edge", 0.845],
        ["ev-ok", "meter-ok", 0.92],
        ["ev-unlinked", undefined, 0.5],
        ["ev-noac", "meter-silent", 0.5],
      ];
      const readings: Reading[] = [];
      for (const [vehicle, meter, ratio] of pairs) {
        for (let i = 0; i < 10; i++) {
          readings.push(vehicleReading(vehicle, `${vehicle}-${i}`, at(i) + 3_000, ratio * 1.5, 60, 20 + i));
          if (meter !== undefined && meter !== "meter-silent") readings.push(meterReading(meter, `${meter}-${i}`, at(i), 1.5));
        }
        if (meter !== undefined) {
          await client.linkVehicleToMeter({ vehicleId: vehicle, meterId: meter, validFrom: timestampFromMs(now - 48 * HOUR) });
        }
      }
      readings.push(meterReading("meter-low", "before-window", now - 30 * HOUR, 100));
      readings.push(...hot("unit-crit", now - 10 * MINUTE), batteryReading("unit-ok", "ok-1", now - MINUTE, 48, 25));
      // Three healthy readings, then one hot, sagging and with an error code: unit-fall drops from
      // 100 to 50 (WARN), unit-dip only to 85 — under the 20 points that make a fall.
      const healthy = (id: string) => [0, 1, 2].map((i) => batteryReading(id, `${id}-${i}`, now - (40 - 4 * i) * MINUTE, 48, 25));
      readings.push(...healthy("unit-fall"), batteryReading("unit-fall", "unit-fall-3", now - 28 * MINUTE, 46.5, 55, ["E3"]));
      readings.push(...healthy("unit-dip"), batteryReading("unit-dip", "unit-dip-3", now - 28 * MINUTE, 48, 45));
      await send(readings);
    });
    afterAll(async () => {
      devices?.close();
      await fleetApp?.service.stop();
      await fleetProbe?.close();
    });

    interface Raw {
      readonly device: string;
      readonly at: number;
      readonly received: number;
      readonly value: number;
      readonly level: string;
    }

    async function raw(table: string, value: string, level = "''"): Promise<Raw[]> {
      const rows = await fleetProbe.rows<{ device: string; at: string; received: string; value: number; level: string }>(
        `SELECT device_id AS device, toUnixTimestamp64Milli(observed_at) AS at, toUnixTimestamp64Milli(received_at) AS received,
                ${value} AS value, ${level} AS level
         FROM {db}.${table} FINAL`,
      );
      return rows.map((r) => ({ ...r, at: Number(r.at), received: Number(r.received), value: Number(r.value) }));
    }

    /** Brute force over raw rows, as of asOf, for a window of `hours` ending there. */
    async function bruteForce(asOf: number, hours: number) {
      const [meters, vehicles, batteries] = await Promise.all([
        raw("meter_readings", "kwh_consumed_ac"),
        raw("vehicle_readings", "kwh_delivered_dc"),
        raw("battery_readings", "health_score", "health_level"),
      ]);
      const links = await fleetProbe.rows<{ vehicle_id: string; meter_id: string }>("SELECT vehicle_id, meter_id FROM {db}.vehicle_meter_links FINAL");
      const start = asOf - hours * HOUR;
      const inWindow = (r: Raw) => r.at >= start && r.at < asOf;
      const sum = (rows: Raw[]) => rows.reduce((s, r) => s + r.value, 0);

      const ratios = new Map<string, number | undefined>();
      for (const vehicle of new Set(vehicles.filter(inWindow).map((r) => r.device))) {
        const dc = sum(vehicles.filter((r) => r.device === vehicle && inWindow(r)));
        // Every link in these tests is open and starts before the window: one meter per vehicle.
        const meter = links.find((l) => l.vehicle_id === vehicle)?.meter_id;
        const ac = meter === undefined ? 0 : sum(meters.filter((r) => r.device === meter && inWindow(r)));
        ratios.set(vehicle, ac > 0 ? dc / ac : undefined);
      }
      const latest = new Map<string, Raw>();
      for (const r of batteries) if ((latest.get(r.device)?.at ?? -Infinity) < r.at) latest.set(r.device, r);
      // Falling: not CRITICAL, and 20 points or more below the highest score since the window's first hour began.
      const fromHour = Math.floor(start / HOUR) * HOUR;
      const falling = new Map<string, { peak: number; latest: Raw }>();
      for (const [device, newest] of latest) {
        const peak = Math.max(...batteries.filter((r) => r.device === device && r.at >= fromHour).map((r) => r.value));
        if (newest.level !== "CRITICAL" && peak - newest.value >= 20) falling.set(device, { peak, latest: newest });
      }
      const lastSeen = new Map<string, number>();
      for (const r of [...meters, ...vehicles, ...batteries]) lastSeen.set(r.device, Math.max(lastSeen.get(r.device) ?? 0, r.received));
      return {
        ac: sum(meters.filter(inWindow)),
        dc: sum(vehicles.filter(inWindow)),
        ratios,
        latest,
        falling,
        lastSeen,
        offline: [...lastSeen].filter(([, seen]) => asOf - seen > OFFLINE_AFTER_MS).map(([device, seen]) => ({ device, seen })),
      };
    }

    it("lists alerts newest first, page by page, equal to a brute-force judgement of the raw rows", async () => {
      const alerts: Alert[] = [];
      let pageToken = "";
      const before = Date.now();
      let after: number | undefined;
      do {
        const page = await client.listAlerts({ pageSize: 2, pageToken });
        after ??= Date.now();
        expect(page.alerts.length).toBeLessThanOrEqual(2);
        alerts.push(...page.alerts);
        pageToken = page.nextPageToken;
      } while (pageToken !== "");

      const lowEfficiency = alerts.filter((a) => a.kind === AlertKind.LOW_EFFICIENCY);
      expect(lowEfficiency.length).toBeGreaterThan(0);
      // Efficiency is judged over the 24 h ending at the last whole minute, when it is detected.
      const windowEnd = timestampMs(lowEfficiency[0]!.detectedAt!);
      expect(windowEnd % MINUTE).toBe(0);
      expect(windowEnd).toBeGreaterThan(before - MINUTE);
      const expected = await bruteForce(windowEnd, 24);
      // Silence is judged at the service's clock when the first page was answered.
      const offlineAt = async (asOf: number) => (await bruteForce(asOf, 24)).offline.map((o) => o.device).sort();
      const [early, late] = [await offlineAt(before), await offlineAt(after!)];
      const offline = alerts.filter((a) => a.kind === AlertKind.DEVICE_OFFLINE).map((a) => a.deviceId).sort();
      expect(offline).toEqual(expect.arrayContaining(early));
      expect(late).toEqual(expect.arrayContaining(offline));

      const key = (a: Alert) => `${AlertKind[a.kind]} ${a.deviceId}`;
      const want = [
        ...[...expected.ratios].filter(([, r]) => r !== undefined && r < 0.85).map(([d]) => `LOW_EFFICIENCY ${d}`),
        ...[...expected.latest.values()].filter((r) => r.level === "CRITICAL").map((r) => `BATTERY_CRITICAL ${r.device}`),
        ...[...expected.falling.keys()].map((device) => `BATTERY_FALLING ${device}`),
        ...offline.map((device) => `DEVICE_OFFLINE ${device}`),
      ];
      expect(alerts.map(key).sort()).toEqual(want.sort());
      expect(want.sort()).toEqual(
        [
          "LOW_EFFICIENCY ev-low",
          "LOW_EFFICIENCY ev-edge",
          "BATTERY_CRITICAL unit-crit",
          "BATTERY_CRITICAL unit-old-crit",
          "BATTERY_FALLING unit-fall",
          "DEVICE_OFFLINE meter-old",
          "DEVICE_OFFLINE unit-old-crit",
        ].sort(),
      );

      // Newest detected first; each alert's times are what the brute force says.
      const detected = alerts.map((a) => timestampMs(a.detectedAt!));
      expect(detected).toEqual([...detected].sort((a, b) => b - a));
      for (const a of alerts) {
        if (a.kind === AlertKind.DEVICE_OFFLINE) {
          expect(timestampMs(a.detectedAt!)).toBe(expected.lastSeen.get(a.deviceId)! + OFFLINE_AFTER_MS);
        }
        if (a.kind === AlertKind.BATTERY_CRITICAL) {
          expect(timestampMs(a.detectedAt!)).toBe(expected.latest.get(a.deviceId)!.at);
          expect(a.message).toContain("CRITICAL");
        }
        if (a.kind === AlertKind.BATTERY_FALLING) {
          const { peak, latest } = expected.falling.get(a.deviceId)!;
          expect(timestampMs(a.detectedAt!)).toBe(latest.at);
          expect(a.message).toContain(`down ${peak - latest.value} points from ${peak}`);
        }
        expect(a.observedAt).toBeDefined();
      }
      expect(lowEfficiency.find((a) => a.deviceId === "ev-low")?.message).toContain("70.0 %");
    });

    it("judges efficiency over window_hours, and refuses a changed window or a forged token while paging", async () => {
      // The reading 30 h ago counts only in a 48 h window: ev-low's meter then has far more AC.
      const wide = await client.listAlerts({ windowHours: 48, pageSize: 1_000 });
      expect(wide.alerts.some((a) => a.kind === AlertKind.LOW_EFFICIENCY && a.deviceId === "ev-low")).toBe(true);
      expect(wide.alerts.find((a) => a.deviceId === "ev-low")?.message).toContain("48 h");

      const first = await client.listAlerts({ pageSize: 1, windowHours: 24 });
      expect(first.nextPageToken).not.toBe("");
      const changed = await rejection(client.listAlerts({ pageToken: first.nextPageToken, windowHours: 48 }));
      expect(changed.code).toBe(Code.InvalidArgument);
      expect((await rejection(client.listAlerts({ pageToken: "eyJ4IjoxfQ" }))).code).toBe(Code.InvalidArgument);
      expect((await rejection(client.listAlerts({ pageSize: 1_001 }))).code).toBe(Code.InvalidArgument);
    });

    it("sums the fleet's energy, efficiency, levels and online devices as a brute force over raw rows does", async () => {
      const before = Date.now();
      const summary = await client.getFleetSummary({ windowHours: 24 });
      const after = Date.now();
      const start = timestampMs(summary.windowStart!);
      const end = timestampMs(summary.windowEnd!);
      expect(end - start).toBe(24 * HOUR);
      // The window ends at the last whole minute before the call was answered.
      expect(end % MINUTE).toBe(0);
      expect(end).toBeGreaterThan(before - MINUTE);
      expect(end).toBeLessThanOrEqual(after);
      const expected = await bruteForce(end, 24);

      expect(summary.totalKwhConsumedAc).toBeCloseTo(expected.ac, 9);
      expect(summary.totalKwhDeliveredDc).toBeCloseTo(expected.dc, 9);
      expect(expected.ac).toBeGreaterThan(0);

      const bounds = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1];
      const counts = bounds.map(() => 0);
      let without = 0;
      for (const ratio of expected.ratios.values()) {
        if (ratio === undefined) without++;
        // ev-low is at exactly 0.7, a bound: the service's sums and these agree only to rounding.
        else counts[bounds.findLastIndex((b) => ratio >= b - 1e-9)]!++;
      }
      expect(summary.efficiencyBuckets.map((b) => [b.lowerBound, b.upperBound, Number(b.vehicles)])).toEqual(
        bounds.map((b, i) => [b, bounds[i + 1], counts[i]]),
      );
      expect(Number(summary.vehiclesWithoutEfficiency)).toBe(without);
      expect(without).toBe(2);

      const levels = new Map<string, number>([["OK", 0], ["WARN", 0], ["CRITICAL", 0]]);
      for (const r of expected.latest.values()) levels.set(r.level, (levels.get(r.level) ?? 0) + 1);
      expect(summary.batteryLevels.map((l) => [HealthLevel[l.level], Number(l.devices)])).toEqual([...levels]);
      expect(levels.get("CRITICAL")).toBe(2);

      // Online and offline are judged at the service's clock when it answered: between before and after.
      const [early, late] = [(await bruteForce(before, 24)).offline.length, (await bruteForce(after, 24)).offline.length];
      expect(Number(summary.offlineDevices)).toBeGreaterThanOrEqual(early);
      expect(Number(summary.offlineDevices)).toBeLessThanOrEqual(late);
      expect(Number(summary.onlineDevices)).toBe(expected.lastSeen.size - Number(summary.offlineDevices));
      expect(Number(summary.offlineDevices)).toBeGreaterThanOrEqual(2);
    });
  });
}

describe("ListAlerts paged while devices report", () => {
  it("lists every alert of the first page's time exactly once, though a listed unit reports between pages", async () => {
    const now = Date.now();
    const critical = (device: string, eventId: string, at: number) => batteryReading(device, eventId, at, 48, 70, ["E1", "E2"]);
    const units = ["page-c1", "page-c2", "page-c3", "page-c4"];
    await ingest(units.map((unit, i) => critical(unit, `${unit}-0`, now - (40 - 10 * i) * MINUTE)));

    const first = await fleet.listAlerts({ pageSize: 1 });
    const seen = [...first.alerts];
    // A unit not yet paged through reports again: judged anew it would be the newest alert, ahead
    // of the cursor, and never listed.
    await ingest([critical("page-c2", "page-c2-1", Date.now())]);
    for (let pageToken = first.nextPageToken; pageToken !== ""; ) {
      const page = await fleet.listAlerts({ pageSize: 1, pageToken });
      seen.push(...page.alerts);
      pageToken = page.nextPageToken;
    }
    const keys = seen.map((a) => `${a.kind} ${a.deviceId}`);
    expect(new Set(keys).size).toBe(keys.length);
    const listedUnits = seen.filter((a) => a.kind === AlertKind.BATTERY_CRITICAL && units.includes(a.deviceId));
    expect(listedUnits.map((a) => a.deviceId).sort()).toEqual(units);
    // As of the first page: page-c2's alert is the reading it had then.
    const c2 = listedUnits.find((a) => a.deviceId === "page-c2")!;
    expect(timestampMs(c2.observedAt!)).toBe(now - 30 * MINUTE);
  });
});
