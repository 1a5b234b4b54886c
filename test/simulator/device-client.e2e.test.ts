// The simulator's device client — the reference retry behaviour for firmware — against a real
// service whose storage fails or stalls on purpose: every reading ends up stored exactly once,
// retries back off with growing delays, and the server's pushback is waited for.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HistoryProbe, testEnv, type TestService } from "../support/test-service.js";
import {
  ClientStats,
  createTransport,
  DeviceClient,
  limitConcurrentCalls,
  toWireReading,
  type ClientEvent,
  type IngestTransport,
  type TransportKind,
} from "../../bench/simulator/device-client.js";
import { createRandom, FleetModel } from "../../bench/simulator/fleet-model.js";
import { startFaultyService, stopFaultyService, type FaultySink } from "../support/faulty-sink.js";


const MINUTE = 60_000;
const TABLES = { meter: "meter_readings", vehicle: "vehicle_readings", battery: "battery_readings" } as const;

/** Readings of a small fleet over the last `hours`, ending a minute ago (inside the service's horizon). */
function recentFleet(seed: number, counts: { meters: number; vehicles: number; batteries: number }, hours: number, prefix: string) {
  const endMs = Date.now() - MINUTE;
  const model = new FleetModel({ seed, ...counts, intervalMs: MINUTE, startMs: endMs - hours * 60 * MINUTE, endMs, prefix, offlineShare: 0 });
  return { model, readings: model.advanceTo(endMs) };
}

async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

describe("the simulator's device client against a service that fails on purpose", () => {
  let app: TestService;
  let sink: FaultySink;
  let probe: HistoryProbe;
  beforeAll(async () => {
    ({ app, sink, probe } = await startFaultyService(testEnv({ INSERT_ATTEMPTS: "1", INSERT_TIMEOUT: "2s", CLAIM_LEASE: "10s" })));
  });
  afterAll(() => stopFaultyService({ app, sink, probe }));

  async function stored(prefix: string, kind: keyof typeof TABLES) {
    const [row] = await probe.rows<{ n: number; ids: number }>(
      `SELECT count() AS n, uniqExact(device_id, event_id) AS ids FROM {db}.${TABLES[kind]} WHERE startsWith(device_id, '${prefix}-')`,
    );
    return { n: Number(row?.n ?? 0), ids: Number(row?.ids ?? 0) };
  }

  it("backs off with growing delays, waits at least the server's pushback, and stores every reading once", async () => {
    const { readings } = recentFleet(1, { meters: 1, vehicles: 0, batteries: 0 }, 1, "backoff");
    const stats = new ClientStats();
    const events: ClientEvent[] = [];
    const transport = createTransport("grpc", app.target);
    const device = new DeviceClient({
      deviceId: readings[0]!.deviceId,
      transport,
      stats,
      minCallGapMs: 0,
      // Smaller than the service's 1 s pushback at first, larger after a few failures.
      retryPolicy: { initialBackoffMs: 400, maxBackoffMs: 5_000, multiplier: 2 },
      random: createRandom(7),
      onEvent: (e) => events.push(e),
    });
    try {
      sink.failNext(4);
      device.enqueue(readings.map(toWireReading));
      await within(device.whenIdle(), 15_000, "the upload");
    } finally {
      device.stop();
      transport.close();
    }

    expect(sink.failed).toBe(4);
    expect(stats.failedCalls).toEqual({ UNAVAILABLE: 4 });
    const retries = events.filter((e): e is Extract<ClientEvent, { type: "retry" }> => e.type === "retry");
    const calls = events.filter((e) => e.type === "call");
    expect(retries).toHaveLength(4);
    expect(calls).toHaveLength(5);
    // The backoff grows with each consecutive failure …
    for (let i = 1; i < retries.length; i++) expect(retries[i]!.backoffMs).toBeGreaterThanOrEqual(retries[i - 1]!.backoffMs);
    expect(retries.at(-1)!.backoffMs).toBeGreaterThan(2 * retries[0]!.backoffMs);
    expect(retries[0]!.backoffMs).toBeLessThan(1000);
    // … the service's grpc-retry-pushback-ms (1 s) is a floor under it …
    for (const retry of retries) {
      expect(retry.pushbackMs).toBe(1000);
      expect(retry.delayMs).toBe(Math.max(retry.backoffMs, 1000));
    }
    expect(stats.pushbacks).toBe(4);
    // … and the device really waited that long before its next call.
    const waits = retries.map((retry, i) => calls[i + 1]!.atMs - retry.atMs);
    retries.forEach((retry, i) => expect(waits[i]).toBeGreaterThanOrEqual(retry.delayMs));
    expect(waits.at(-1)!).toBeGreaterThan(waits[0]!);

    expect(await stored("backoff", "meter")).toEqual({ n: readings.length, ids: readings.length });
    expect(stats.acknowledged).toBe(readings.length);
    expect(stats.accepted).toBe(readings.length);
    expect(stats.sent).toBe(5 * readings.length);
  });

  it("keeps the server's pushback across a reconnect, which starts only the backoff over", async () => {
    const { readings } = recentFleet(3, { meters: 1, vehicles: 0, batteries: 0 }, 1, "pushback-reconnect");
    const events: ClientEvent[] = [];
    const transport = createTransport("grpc", app.target);
    const device: DeviceClient = new DeviceClient({
      deviceId: readings[0]!.deviceId,
      transport,
      stats: new ClientStats(),
      minCallGapMs: 0,
      random: createRandom(1),
      onEvent: (e) => {
        events.push(e);
        // The link drops and comes back 50 ms into the service's 1 s pushback.
        if (e.type === "retry") setTimeout(() => (device.setOnline(false), device.setOnline(true)), 50);
      },
    });
    try {
      sink.failNext(1);
      device.enqueue(readings.map(toWireReading));
      await within(device.whenIdle(), 15_000, "the upload");
    } finally {
      device.stop();
      transport.close();
    }
    const retry = events.find((e): e is Extract<ClientEvent, { type: "retry" }> => e.type === "retry")!;
    const calls = events.filter((e) => e.type === "call");
    expect(retry.pushbackMs).toBe(1000);
    expect(calls[1]!.atMs - retry.atMs).toBeGreaterThanOrEqual(1000);
    expect(await stored("pushback-reconnect", "meter")).toEqual({ n: readings.length, ids: readings.length });
  });

  it.each<TransportKind>(["grpc", "connect", "sync", "unary"])(
    "keeps every unacknowledged reading of a fleet on one shared %s connection through failures, lost answers and outages",
    async (kind) => {
      const prefix = `fleet-${kind}`;
      const { model, readings } = recentFleet(2, { meters: 3, vehicles: 3, batteries: 3 }, 2, prefix);
      const stats = new ClientStats();
      const transport: IngestTransport = limitConcurrentCalls(createTransport(kind, app.target), 4);
      const devices = model.devices.map(
        (d) =>
          new DeviceClient({
            deviceId: d.id,
            transport,
            stats,
            frameReadings: 10,
            maxCallReadings: 40,
            minCallGapMs: 50,
            retryPolicy: { initialBackoffMs: 100, maxBackoffMs: 1_000, multiplier: 2 },
            lostAnswerShare: 0.2,
            random: createRandom(d.index + 1),
          }),
      );
      try {
        sink.failNext(3);
        // Readings arrive over time; two devices drop off the network for a while in the middle.
        const byStep = Math.ceil(readings.length / 6);
        for (let i = 0; i < readings.length; i += byStep) {
          if (i === 2 * byStep) [0, 4].forEach((d) => devices[d]!.setOnline(false));
          if (i === 4 * byStep) [0, 4].forEach((d) => devices[d]!.setOnline(true));
          for (const r of readings.slice(i, i + byStep)) devices[r.deviceIndex]!.enqueue([toWireReading(r)]);
          await new Promise((resolve) => setTimeout(resolve, 150));
        }
        await within(Promise.all(devices.map((d) => d.whenIdle())), 15_000, "the fleet's upload");
      } finally {
        devices.forEach((d) => d.stop());
        transport.close();
      }

      for (const kindOfDevice of ["meter", "vehicle", "battery"] as const) {
        const expected = readings.filter((r) => r.sample.kind === kindOfDevice).length;
        expect(await stored(prefix, kindOfDevice), kindOfDevice).toEqual({ n: expected, ids: expected });
      }
      expect(devices.map((d) => d.pending)).toEqual(devices.map(() => 0));
      expect(stats.acknowledged).toBe(readings.length);
      expect(stats.accepted + stats.duplicates).toBe(stats.acknowledged);
      expect(stats.rejected).toBe(0);
      expect(stats.inconsistentAnswers).toBe(0);
      // What failed was resent, and the service counted the resends of stored readings as duplicates.
      expect(stats.failedCalls.UNAVAILABLE ?? 0).toBeGreaterThanOrEqual(1);
      expect(stats.lostAnswers).toBeGreaterThan(0);
      expect(stats.duplicates).toBeGreaterThan(0);
      expect(stats.resent).toBeGreaterThan(0);
      // The devices that were offline held two chunks' readings (a third of theirs) and uploaded them.
      for (const d of [0, 4]) expect(devices[d]!.maxBacklog).toBeGreaterThanOrEqual(readings.length / 9 / 3);
    },
  );

  it("resends after a deadline, and resends readings answered retryable while another call stores them", async () => {
    const { readings } = recentFleet(3, { meters: 0, vehicles: 1, batteries: 0 }, 0.5, "deadline");
    const stats = new ClientStats();
    const events: ClientEvent[] = [];
    const transport = createTransport("grpc", app.target);
    const device = new DeviceClient({
      deviceId: readings[0]!.deviceId,
      transport,
      stats,
      minCallGapMs: 0,
      callTimeoutMs: 300,
      retryPolicy: { initialBackoffMs: 100, maxBackoffMs: 400, multiplier: 2 },
      random: createRandom(11),
      onEvent: (e) => events.push(e),
    });
    try {
      sink.stall();
      device.enqueue(readings.map(toWireReading));
      // The first call's insert hangs: its deadline passes, and resends find its claims in flight.
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      sink.unstall();
      await within(device.whenIdle(), 10_000, "the upload");
    } finally {
      sink.unstall();
      device.stop();
      transport.close();
    }

    expect(stats.failedCalls.DEADLINE_EXCEEDED).toBeGreaterThanOrEqual(1);
    expect(stats.retryableRejected).toBeGreaterThan(0);
    expect(events.some((e) => e.type === "retry" && e.cause === "RETRYABLE_REJECTION")).toBe(true);
    expect(await stored("deadline", "vehicle")).toEqual({ n: readings.length, ids: readings.length });
    expect(stats.acknowledged).toBe(readings.length);
    // The first call stored them while the device had given up on it: the resend heard "duplicate".
    expect(stats.duplicates).toBe(readings.length);
    expect(stats.accepted).toBe(0);
  });
});

describe("the simulator's device client given an answer that names a reading it did not send there", () => {
  it("keeps every reading and tries again, rather than settling the rest", async () => {
    let calls = 0;
    // A stand-in for a faulty service (no real one answers so): the first answer's rejection
    // points at an index the call does not have; the second answer is right.
    const transport: IngestTransport = {
      async streamReadings(frames) {
        const all = frames.flat();
        calls++;
        if (calls === 1) {
          return { accepted: all.length - 1, duplicates: 0, rejected: [{ index: 5, eventId: all[0]!.eventId, reason: "OUT_OF_RANGE", retryable: true, message: "x" }] };
        }
        return { accepted: all.length, duplicates: 0, rejected: [] };
      },
      close() {},
    } as IngestTransport;
    const { readings } = recentFleet(5, { meters: 1, vehicles: 0, batteries: 0 }, 0.05, "inconsistent");
    const stats = new ClientStats();
    const device = new DeviceClient({ deviceId: readings[0]!.deviceId, transport, stats, minCallGapMs: 0, random: createRandom(2), retryPolicy: { initialBackoffMs: 10, maxBackoffMs: 20, multiplier: 2 } });
    device.enqueue(readings.map(toWireReading));
    await within(device.whenIdle(), 5_000, "the upload");
    device.stop();
    expect(calls).toBe(2);
    expect(stats.inconsistentAnswers).toBe(1);
    expect(stats.acknowledged).toBe(readings.length);
    expect(stats.sent).toBe(2 * readings.length);
  });
});
