// Live state through FleetService with real connect-node clients, while devices send readings
// through IngestService: once on the embedded live store, once on a real redis-server (the watch
// then hears changes over Redis pub/sub on its own subscriber connection).
import { randomUUID } from "node:crypto";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  DeviceKind,
  FleetService,
  HealthLevel,
  Recommendation,
  type DeviceLiveState,
  type WatchLiveStateResponse,
} from "../gen/wattstream/fleet/v1/fleet_service_pb.js";
import type { Reading } from "../gen/wattstream/telemetry/v1/reading_pb.js";
import { GrpcIngestClient } from "./support/grpc-ingest-client.js";
import { batteryReading, meterReading, vehicleReading } from "./support/readings.js";
import { redisServerAvailable, startRedisServer, type RedisServer } from "./support/redis-server.js";
import { startTestService, testEnv, type TestService } from "./support/test-service.js";

const MINUTE = 60_000;

/** Reads the next message of a watch, failing after timeoutMs. */
function nextOf(stream: AsyncIterator<WatchLiveStateResponse>, timeoutMs = 10_000): Promise<DeviceLiveState> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    stream.next().then((r) => {
      if (r.done) throw new Error("the watch ended");
      return r.value.device!;
    }),
    new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error("no watch message in time")), timeoutMs))),
  ]).finally(() => clearTimeout(timer));
}

/** A device going silent while watched, with OFFLINE_AFTER short enough to wait for. */
function silenceSuite(env: () => Record<string, string>) {
  describe("a watched device going silent", () => silence(env));
}

function silence(env: () => Record<string, string>) {
  // Long enough that the device is still online when the watch's first message comes: from the
  // reading's arrival to that message (its insert, the acknowledgement, a new connection, the
  // watch's first answer) once took over 1.5 s, the previous value, on two busy cores — most of it
  // the first batch waiting for a worker to load, which the service now does before it listens.
  const OFFLINE_AFTER_MS = 4_000;
  let app: TestService;
  beforeAll(async () => {
    // Connections idle for longer than IDLE_TIMEOUT are closed; a watch waiting quietly for a
    // device to go silent is not idle, over HTTP/2 or (as browsers watch) HTTP/1.1.
    app = await startTestService({ ...env(), OFFLINE_AFTER: `${OFFLINE_AFTER_MS}ms`, IDLE_TIMEOUT: "500ms" });
  });
  afterAll(() => app?.service.stop());

  it.each([
    ["gRPC", () => createGrpcTransport({ baseUrl: app.baseUrl })],
    ["Connect over HTTP/1.1", () => createConnectTransport({ baseUrl: app.baseUrl, httpVersion: "1.1" })],
  ])("sends a watched device again (%s), offline, once it has been silent for OFFLINE_AFTER; online again when it reports", async (_, transport) => {
    const fleet = createClient(FleetService, transport());
    const devices = new GrpcIngestClient(app.target);
    const abort = new AbortController();
    try {
      const id = `silent-${randomUUID()}`;
      expect((await devices.ingestReadings([meterReading(id, "s-1", Date.now() - 1_000, 0.5, 230)])).accepted).toBe(1n);
      const stream = fleet.watchLiveState({ deviceIds: [id] }, { signal: abort.signal })[Symbol.asyncIterator]();
      const first = await nextOf(stream);
      expect(first).toMatchObject({ deviceId: id, eventId: "s-1", online: true });

      const silent = await nextOf(stream, OFFLINE_AFTER_MS + 10_000);
      const lastSeenMs = Number(timestampMs(first.lastSeen!));
      expect(silent).toMatchObject({ deviceId: id, eventId: "s-1", online: false });
      expect(Number(timestampMs(silent.lastSeen!))).toBe(lastSeenMs);
      expect(Date.now() - lastSeenMs).toBeGreaterThan(OFFLINE_AFTER_MS);

      expect((await devices.ingestReadings([meterReading(id, "s-2", Date.now(), 0.5, 231)])).accepted).toBe(1n);
      expect(await nextOf(stream)).toMatchObject({ deviceId: id, eventId: "s-2", online: true });
    } finally {
      abort.abort();
      devices.close();
    }
  }, 30_000);
}

function liveStateSuite(env: () => Record<string, string>) {
  let app: TestService;
  let fleet: Client<typeof FleetService>;
  let ingestClient: GrpcIngestClient;

  beforeAll(async () => {
    app = await startTestService(env());
    fleet = createClient(FleetService, createGrpcTransport({ baseUrl: app.baseUrl }));
    ingestClient = new GrpcIngestClient(app.target);
  });
  afterAll(async () => {
    ingestClient?.close();
    await app?.service.stop();
  });

  async function ingest(readings: readonly Reading[]): Promise<void> {
    const response = await ingestClient.ingestReadings(readings);
    expect(response.rejected).toEqual([]);
  }

  async function watchers(): Promise<number> {
    const text = await (await fetch(`${app.baseUrl}/metrics`)).text();
    return Number(/^wattstream_live_watchers (\d+)$/m.exec(text)?.[1]);
  }



  it("answers each kind's newest reading, its score and whether the device is online", async () => {
    const tag = randomUUID();
    const [meter, ev, unit] = [`meter-${tag}`, `ev-${tag}`, `battery-${tag}`];
    const now = Date.now();
    await ingest([
      meterReading(meter, "m-2", now - MINUTE, 0.4, 231),
      vehicleReading(ev, "v-1", now - 2 * MINUTE, 0.3, 64, 52),
      // A worn, hot unit with codes: sustained heat needs three readings in a row.
      batteryReading(unit, "b-1", now - 3 * MINUTE, 48, 60, ["E1"]),
      batteryReading(unit, "b-2", now - 2 * MINUTE, 48, 62, ["E1", "E2"]),
      batteryReading(unit, "b-3", now - MINUTE, 40, 65, ["E1", "E2"]),
    ]);
    // A backlog reading arrives later and must not replace the meter's newest state.
    await ingest([meterReading(meter, "m-1", now - 5 * MINUTE, 9, 200)]);

    const answer = await fleet.getLiveState({ deviceIds: [unit, `never-${tag}`, meter, ev] });
    expect(answer.nextPageToken).toBe("");
    expect(answer.devices.map((d) => d.deviceId)).toEqual([unit, meter, ev]);
    const [b, m, v] = answer.devices as [DeviceLiveState, DeviceLiveState, DeviceLiveState];

    expect(m).toMatchObject({ kind: DeviceKind.METER, eventId: "m-2", online: true, score: { case: undefined } });
    expect(m.sample).toMatchObject({ case: "meter", value: { kwhConsumedAc: 0.4, voltage: 231 } });
    expect(m.sample.case === "meter" ? m.sample.value.registerKwhAc : "not a meter").toBeUndefined();
    expect(timestampMs(m.observedAt!)).toBe(now - MINUTE);
    // last_seen follows arrival, the backlog included: it is no older than the backlog's arrival.
    expect(timestampMs(m.lastSeen!)).toBeGreaterThanOrEqual(now);

    expect(v).toMatchObject({ kind: DeviceKind.VEHICLE, eventId: "v-1", online: true });
    expect(v.sample).toMatchObject({ case: "vehicle", value: { soc: 64, kwhDeliveredDc: 0.3, batteryTemp: 52 } });
    expect(v.score).toEqual({ case: "vehicleScore", value: expect.objectContaining({ tempRisk: HealthLevel.CRITICAL, scoreVersion: 1 }) });

    expect(b).toMatchObject({ kind: DeviceKind.BATTERY, eventId: "b-3", online: true });
    expect(b.sample).toMatchObject({ case: "battery", value: { voltage: 40, temperature: 65, errorCodes: ["E1", "E2"] } });
    expect(b.score.case).toBe("batteryScore");
    expect(b.score.value).toMatchObject({ healthLevel: HealthLevel.CRITICAL, recommendation: Recommendation.REPLACE, scoreVersion: 1 });
    expect((b.score.value as { healthScore: number }).healthScore).toBeLessThan(40);
  });

  it("pages through the whole fleet by device_id, each device once", async () => {
    const tag = randomUUID();
    const ids = Array.from({ length: 7 }, (_, i) => `page-${tag}-${i}`);
    await ingest(ids.map((id, i) => meterReading(id, "e", Date.now() - i, 0.1)));

    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await fleet.getLiveState({ pageSize: 3, pageToken });
      expect(page.devices.length).toBeLessThanOrEqual(3);
      seen.push(...page.devices.map((d) => d.deviceId));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken !== "" && pages < 1_000);
    expect(seen.filter((id) => id.startsWith(`page-${tag}`))).toEqual(ids);
    expect(new Set(seen).size).toBe(seen.length);
    expect([...seen].sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))).toEqual(seen);
  });

  it("refuses a forged page token, too many ids and an oversized page with INVALID_ARGUMENT", async () => {
    for (const request of [
      { pageToken: "not-a-token" },
      { pageSize: 1_001 },
      { deviceIds: Array.from({ length: 1_001 }, (_, i) => `d-${i}`) },
      { deviceIds: [""] },
    ]) {
      const error = await fleet.getLiveState(request).catch((e: unknown) => ConnectError.from(e));
      expect(error).toBeInstanceOf(ConnectError);
      expect((error as ConnectError).code).toBe(Code.InvalidArgument);
    }
  });

  it("watches named devices: current state first, then each change as readings are stored; cancel ends it", async () => {
    const tag = randomUUID();
    const [a, b] = [`watch-a-${tag}`, `watch-b-${tag}`];
    const now = Date.now();
    await ingest([meterReading(a, "a-1", now - 10_000, 0.1, 230)]);
    const before = await watchers();

    const abort = new AbortController();
    const stream = fleet.watchLiveState({ deviceIds: [a, b] }, { signal: abort.signal })[Symbol.asyncIterator]();
    const first = await nextOf(stream);
    expect(first).toMatchObject({ deviceId: a, eventId: "a-1", kind: DeviceKind.METER });
    expect(await watchers()).toBe(before + 1);

    await ingest([batteryReading(b, "b-1", now - 5_000, 48, 25)]);
    const second = await nextOf(stream);
    expect(second).toMatchObject({ deviceId: b, eventId: "b-1", kind: DeviceKind.BATTERY, online: true });
    expect(second.score).toMatchObject({ case: "batteryScore", value: { healthScore: 100, healthLevel: HealthLevel.OK } });

    // A device not watched is not sent; a newer reading of a watched one is.
    await ingest([meterReading(`other-${tag}`, "o-1", now, 1)]);
    await ingest([meterReading(a, "a-2", now - 1_000, 0.2, 232)]);
    const third = await nextOf(stream);
    expect(third).toMatchObject({ deviceId: a, eventId: "a-2" });
    expect(third.sample.value).toMatchObject({ voltage: 232 });

    // Several readings stored while the client is not reading all arrive, in order, newest last.
    await ingest([meterReading(a, "a-3", now - 900, 0.3, 233)]);
    await ingest([meterReading(a, "a-4", now - 800, 0.4, 234)]);
    const later = [await nextOf(stream)];
    while (later.at(-1)!.eventId !== "a-4") later.push(await nextOf(stream));
    expect(later.map((d) => d.eventId)).toEqual(expect.arrayContaining(["a-4"]));

    abort.abort();
    await expect(stream.next()).rejects.toThrow();
    await expect.poll(watchers, { timeout: 5_000 }).toBe(before);
  });

  it("watches the whole fleet, devices first seen during the watch included", async () => {
    const tag = randomUUID();
    const fresh = `fresh-${tag}`;
    const before = await watchers();
    const abort = new AbortController();
    const stream = fleet.watchLiveState({}, { signal: abort.signal })[Symbol.asyncIterator]();
    // Current states of the devices other tests stored come first; wait until the watch is live.
    await expect.poll(watchers, { timeout: 5_000 }).toBe(before + 1);
    await ingest([vehicleReading(fresh, "f-1", Date.now(), 0.5, 70, 20)]);
    let found: DeviceLiveState | undefined;
    while (found === undefined) {
      const state = await nextOf(stream);
      if (state.deviceId === fresh) found = state;
    }
    expect(found).toMatchObject({ kind: DeviceKind.VEHICLE, eventId: "f-1", score: { case: "vehicleScore" } });
    abort.abort();
    await expect.poll(watchers, { timeout: 5_000 }).toBe(before);
  });
}

// One embedded engine data path per process: both suites share it, each with its own database.
const base = testEnv();
const database = () => ({ ...base, CLICKHOUSE_DATABASE: `test_${randomUUID().replaceAll("-", "")}` });

describe("live state, embedded store", () => {
  liveStateSuite(() => database());
  silenceSuite(() => database());
});

const haveRedis = redisServerAvailable();
describe.skipIf(!haveRedis)("live state, redis store", () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedisServer();
  });
  afterAll(async () => {
    await redis?.stop();
  });
  liveStateSuite(() => ({ ...database(), REDIS_URL: redis.url }));
  silenceSuite(() => ({ ...database(), REDIS_URL: redis.url }));

  it("lets a watch on one service instance see readings stored through another", async () => {
    // Two instances behind a load balancer: one Redis, one history (one engine per process here).
    const env = { ...database(), REDIS_URL: redis.url };
    const [a, b] = [await startTestService(env), await startTestService(env)];
    const devices = new GrpcIngestClient(b.target);
    const abort = new AbortController();
    try {
      const watcher = createClient(FleetService, createGrpcTransport({ baseUrl: a.baseUrl }));
      const id = `across-${randomUUID()}`;
      const stream = watcher.watchLiveState({ deviceIds: [id] }, { signal: abort.signal })[Symbol.asyncIterator]();
      // The watch has nothing to send until the reading arrives; poll until it is subscribed.
      const next = stream.next();
      const watchers = async () => Number(/^wattstream_live_watchers (\d+)$/m.exec(await (await fetch(`${a.baseUrl}/metrics`)).text())?.[1]);
      await expect.poll(watchers, { timeout: 5_000 }).toBe(1);
      expect((await devices.ingestReadings([meterReading(id, "x-1", Date.now(), 0.5, 229)])).accepted).toBe(1n);
      const message = await next;
      expect(message.done).toBe(false);
      expect(message.value?.device).toMatchObject({ deviceId: id, eventId: "x-1", kind: DeviceKind.METER, online: true });
    } finally {
      abort.abort();
      devices.close();
      await a.service.stop();
      await b.service.stop();
    }
  });
});
