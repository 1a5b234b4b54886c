// SyncReadings as long-lived firmware uses it: one bidi stream stays open, readings go out as they
// come, cumulative acknowledgements flow back while the stream is open, and the device drops from
// its outbox exactly what was acknowledged. A connect-node gRPC client against the real service
// (embedded ClickHouse) — and, for a storage fault, the same service with a history sink that fails
// on demand.
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  IngestService,
  RejectReason,
  type RejectedReading,
  type SyncReadingsResponse,
} from "../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import type { Reading } from "../gen/wattstream/telemetry/v1/reading_pb.js";
import type { HistorySink } from "../src/store/history/history-sink.js";
import { meterReading, vehicleReading } from "./support/readings.js";
import { RequestQueue } from "./support/request-queue.js";
import { HistoryProbe, startTestService, testEnv, type TestService } from "./support/test-service.js";

type IngestClient = Client<typeof IngestService>;

/** One reading waiting in a device's outbox (an entry per send, so a resent reading is its own). */
interface OutboxEntry {
  readonly reading: Reading;
}

/** The device side: readings it produced that the service has not acknowledged yet. */
class Device {
  readonly outbox = new Set<OutboxEntry>();

  /** Puts newly produced readings into the outbox. */
  produce(readings: readonly Reading[]): OutboxEntry[] {
    const entries = readings.map((reading) => ({ reading }));
    for (const entry of entries) this.outbox.add(entry);
    return entries;
  }

  eventIdsInOutbox(): string[] {
    return [...this.outbox].map((e) => e.reading.eventId);
  }
}

/**
 * One SyncReadings stream of a device. Readings are numbered across the stream in the order sent;
 * each response settles the range up to `acknowledged`: entries in it leave the outbox, except
 * rejections marked retryable, which stay and are queued for resending.
 */
class SyncSession {
  readonly responses: SyncReadingsResponse[] = [];
  /** Rejections of every response, as received. */
  readonly rejected: RejectedReading[] = [];
  /** What happened when, in order: "sent <n>", "ack <n>", "end", "error <code>". */
  readonly events: string[] = [];
  /** Entries acknowledged as retryable (in flight elsewhere), still in the outbox, to send again. */
  readonly toResend: OutboxEntry[] = [];
  /** Set if `acknowledged` ever went backwards or beyond what was sent. */
  ackViolation: string | undefined;
  acknowledged = 0;
  /** Resolves when the response stream ends: undefined when it ended OK, else the error. */
  readonly ended: Promise<ConnectError | undefined>;

  private readonly sent: OutboxEntry[] = [];
  private readonly requests = new RequestQueue<{ readings: Reading[] }>();
  private changed: (() => void) | undefined;
  private finished = false;

  constructor(
    client: IngestClient,
    private readonly device: Device,
    signal: AbortSignal,
  ) {
    const responses = client.syncReadings(this.requests, { signal });
    this.ended = (async () => {
      try {
        for await (const response of responses) this.onResponse(response);
        this.events.push("end");
        return undefined;
      } catch (error) {
        const connectError = ConnectError.from(error);
        this.events.push(`error ${Code[connectError.code]}`);
        return connectError;
      } finally {
        this.finished = true;
        this.requests.close();
        this.notify();
      }
    })();
  }

  get sentCount(): number {
    return this.sent.length;
  }

  get isFinished(): boolean {
    return this.finished;
  }

  send(entries: readonly OutboxEntry[]): void {
    this.sent.push(...entries);
    this.requests.push({ readings: entries.map((e) => e.reading) });
    this.events.push(`sent ${this.sent.length}`);
  }

  /** Half-closes the request side; the service answers what is left and ends the stream. */
  close(): void {
    this.requests.close();
  }

  /** Waits until the condition holds or the stream ends; false if neither happened in time. */
  async waitUntil(condition: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!condition()) {
      if (this.finished) return condition();
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await Promise.race([new Promise<void>((resolve) => (this.changed = resolve)), sleep(Math.min(left, 100))]);
    }
    return true;
  }

  private onResponse(response: SyncReadingsResponse): void {
    this.responses.push(response);
    const acknowledged = Number(response.acknowledged);
    if (acknowledged < this.acknowledged || acknowledged > this.sent.length) {
      this.ackViolation ??= `acknowledged went from ${this.acknowledged} to ${acknowledged} with ${this.sent.length} sent`;
    }
    this.rejected.push(...response.rejected);
    const retryable = new Set(response.rejected.filter((r) => r.retryable).map((r) => r.index));
    for (let index = this.acknowledged; index < acknowledged; index++) {
      const entry = this.sent[index]!;
      if (retryable.has(index)) this.toResend.push(entry);
      else this.device.outbox.delete(entry);
    }
    this.acknowledged = Math.max(this.acknowledged, acknowledged);
    this.events.push(`ack ${acknowledged}`);
    this.notify();
  }

  private notify(): void {
    const changed = this.changed;
    this.changed = undefined;
    changed?.();
  }
}

/** The retry delay a failed call asks for (gRPC pushback trailer), bounded for the test. */
function pushbackMs(error: ConnectError): number {
  const raw = error.metadata.get("grpc-retry-pushback-ms");
  const value = raw === null ? NaN : Number(raw);
  return Number.isFinite(value) && value >= 0 ? Math.min(value, 2_000) : 500;
}

/** Live counters of a resend loop, readable while it runs. */
interface SyncStats {
  sessions: number;
  /** Readings that came back retryable (in flight elsewhere) and were sent again. */
  retryableRejections: number;
  /** Streams that ended UNAVAILABLE. */
  unavailable: number;
}

/** How long the firmware waits for an acknowledgement before it gives up on a stream. */
const ACK_WATCHDOG_MS = 3_000;

/**
 * Waits for the service to end the stream; if it has not within the ack watchdog, the firmware
 * half-closes its side (as its watchdog does) and waits, bounded, for the end. Resolves with the
 * outcome and whether the service ended the stream on its own, while the device still held it open.
 */
async function awaitEnd(session: SyncSession, timeoutMs = 10_000): Promise<{ error: ConnectError | undefined; whileOpen: boolean }> {
  const early = await Promise.race([session.ended, sleep(ACK_WATCHDOG_MS, "open" as const)]);
  if (early !== "open") return { error: early, whileOpen: true };
  session.close();
  const late = await Promise.race([session.ended, sleep(timeoutMs, "open" as const)]);
  if (late === "open") throw new Error(`the sync stream did not end within ${timeoutMs} ms of closing it`);
  return { error: late, whileOpen: false };
}

/**
 * The reference firmware's resend loop: open a stream, send the whole outbox, resend what comes
 * back retryable after a short delay on the same stream, and once everything sent is acknowledged
 * close it. Without progress for the ack watchdog it closes the stream too. A stream that fails
 * (UNAVAILABLE) is reopened after its pushback delay with whatever is still in the outbox.
 * Bounded by the deadline.
 */
async function syncOutbox(client: IngestClient, device: Device, timeoutMs: number, stats: SyncStats = newStats()): Promise<SyncStats> {
  const deadline = Date.now() + timeoutMs;
  while (device.outbox.size > 0) {
    if (Date.now() > deadline) throw new Error(`outbox not drained in ${timeoutMs} ms: ${device.outbox.size} left`);
    const abort = new AbortController();
    const session = new SyncSession(client, device, abort.signal);
    stats.sessions++;
    try {
      session.send([...device.outbox]);
      for (;;) {
        const waitMs = Math.min(ACK_WATCHDOG_MS, deadline - Date.now());
        const allAcknowledged = await session.waitUntil(() => session.acknowledged === session.sentCount, waitMs);
        if (!allAcknowledged || session.toResend.length === 0) break;
        // Held in flight by another call: keep them, and resend after a short pause.
        const again = session.toResend.splice(0).filter((entry) => device.outbox.has(entry));
        stats.retryableRejections += again.length;
        await sleep(200);
        if (session.isFinished) break;
        session.send(again);
      }
      session.close();
      const error = await Promise.race([session.ended, sleep(10_000, "timeout" as const)]);
      if (error === "timeout") throw new Error("the sync stream did not end within 10 s of closing it");
      if (error !== undefined) {
        if (error.code !== Code.Unavailable) throw error;
        stats.unavailable++;
        await sleep(pushbackMs(error));
      }
    } finally {
      abort.abort();
    }
  }
  return stats;
}

function newStats(): SyncStats {
  return { sessions: 0, retryableRejections: 0, unavailable: 0 };
}

function meterBatch(deviceId: string, prefix: string, count: number, from = 0): Reading[] {
  const now = Date.now();
  return Array.from({ length: count }, (_, i) => meterReading(deviceId, `${prefix}-${from + i}`, now - (count - i) * 1_000, 0.1 + i / 1000));
}

async function storedIds(probe: HistoryProbe, deviceId: string): Promise<{ n: number; distinct: number; ids: string[] }> {
  const [row] = await probe.rows<{ n: number; distinct: number; ids: string[] }>(
    `SELECT count() AS n, uniqExact(event_id) AS distinct, arraySort(groupArray(event_id)) AS ids FROM {db}.meter_readings WHERE device_id = '${deviceId}'`,
  );
  return { n: Number(row?.n ?? 0), distinct: Number(row?.distinct ?? 0), ids: row?.ids ?? [] };
}

describe("SyncReadings over a connect-node gRPC client", () => {
  let app: TestService;
  let probe: HistoryProbe;
  let client: IngestClient;
  const aborts: AbortController[] = [];

  beforeAll(async () => {
    app = await startTestService(testEnv());
    probe = new HistoryProbe(app.config, app.service);
    client = createClient(IngestService, createGrpcTransport({ baseUrl: app.baseUrl }));
  });

  afterAll(async () => {
    for (const abort of aborts) abort.abort();
    await app?.service.stop();
    await probe?.close();
  });

  function open(device: Device): SyncSession {
    const abort = new AbortController();
    aborts.push(abort);
    return new SyncSession(client, device, abort.signal);
  }

  it("acknowledges while the stream stays open, and the device's outbox drains", async () => {
    const device = new Device();
    const session = open(device);
    const messages = [0, 1, 2].map((m) => device.produce(meterBatch("meter-sync", `s${m}`, 50)));

    session.send(messages[0]!);
    // The first message is acknowledged while the stream is open and nothing more was sent.
    expect(await session.waitUntil(() => session.acknowledged >= 50, 10_000)).toBe(true);
    expect(device.outbox.size).toBe(100);
    await sleep(50);
    session.send(messages[1]!);
    await sleep(50);
    session.send(messages[2]!);
    expect(await session.waitUntil(() => session.acknowledged === 150, 10_000)).toBe(true);
    // Everything is acknowledged before the device closes its side.
    expect(session.isFinished).toBe(false);
    expect(device.outbox.size).toBe(0);
    session.close();
    expect(await session.ended).toBeUndefined();

    const firstAck = session.events.findIndex((e) => e.startsWith("ack"));
    expect(firstAck).toBeGreaterThan(-1);
    expect(firstAck).toBeLessThan(session.events.indexOf("sent 150"));
    expect(session.ackViolation).toBeUndefined();
    const acks = session.responses.map((r) => Number(r.acknowledged));
    expect(acks).toEqual([...acks].sort((a, b) => a - b));
    expect(acks.at(-1)).toBe(150);
    const last = session.responses.at(-1)!;
    expect([last.accepted, last.duplicates]).toEqual([150n, 0n]);
    expect(session.rejected).toEqual([]);

    const stored = await storedIds(probe, "meter-sync");
    expect([stored.n, stored.distinct]).toEqual([150, 150]);
  });

  it("reports invalid readings in the response that acknowledges them, with their stream-wide index", async () => {
    const device = new Device();
    const session = open(device);
    const now = Date.now();
    const first = device.produce(meterBatch("meter-rej", "ok", 10));
    const second = device.produce([
      meterReading("meter-rej", "r-0", now - 900, 0.1),
      meterReading("meter-rej", "r-1", now - 800, 0.1),
      meterReading("meter-rej", "r-2", now - 700, 0.1),
      meterReading("meter-rej", "nan-voltage", now - 600, 0.1, Number.NaN),
      meterReading("meter-rej", "r-4", now - 500, 0.1),
      vehicleReading("ev-rej", "soc-140", now - 400, 0.3, 140),
      meterReading("meter-rej", "r-6", now - 300, 0.1),
    ]);

    session.send(first);
    expect(await session.waitUntil(() => session.acknowledged >= 10, 10_000)).toBe(true);
    session.send(second);
    expect(await session.waitUntil(() => session.acknowledged === 17, 10_000)).toBe(true);
    expect(device.outbox.size).toBe(0);
    session.close();
    expect(await session.ended).toBeUndefined();

    // The response whose acknowledged range covers indexes 13 and 15 carries their rejections.
    const covering = session.responses.filter((r) => r.rejected.length > 0);
    expect(covering).toHaveLength(1);
    const [response] = covering;
    expect(Number(response!.acknowledged)).toBeGreaterThanOrEqual(16);
    expect(response!.rejected.map((r) => [r.index, r.eventId, RejectReason[r.reason], r.retryable])).toEqual([
      [13, "nan-voltage", "NOT_FINITE", false],
      [15, "soc-140", "OUT_OF_RANGE", false],
    ]);
    expect(response!.rejected[1]!.message).toContain("vehicle.soc is 140 %");
    const previous = session.responses[session.responses.indexOf(response!) - 1];
    expect(Number(previous?.acknowledged ?? 0)).toBeLessThanOrEqual(13);
    const last = session.responses.at(-1)!;
    expect([last.acknowledged, last.accepted, last.duplicates]).toEqual([17n, 15n, 0n]);
    expect(session.ackViolation).toBeUndefined();

    const stored = await storedIds(probe, "meter-rej");
    expect(stored.ids).toEqual([...first.map((e) => e.reading.eventId), "r-0", "r-1", "r-2", "r-4", "r-6"].sort());
    expect(await probe.rows("SELECT event_id FROM {db}.vehicle_readings WHERE device_id = 'ev-rej'")).toEqual([]);
  });

  it("counts readings resent later in the same stream as duplicates, cumulatively", async () => {
    const device = new Device();
    const session = open(device);
    const originals = meterBatch("meter-dup", "d", 20);

    session.send(device.produce(originals));
    expect(await session.waitUntil(() => session.acknowledged === 20, 10_000)).toBe(true);
    expect(session.responses.at(-1)!.duplicates).toBe(0n);
    // The device lost track and sends the same 20 again, with 5 new ones.
    session.send(device.produce([...originals, ...meterBatch("meter-dup", "d", 5, 20)]));
    expect(await session.waitUntil(() => session.acknowledged === 45, 10_000)).toBe(true);
    expect([session.responses.at(-1)!.accepted, session.responses.at(-1)!.duplicates]).toEqual([25n, 20n]);
    // And ten of the originals once more.
    session.send(device.produce(originals.slice(0, 10)));
    expect(await session.waitUntil(() => session.acknowledged === 55, 10_000)).toBe(true);
    expect(device.outbox.size).toBe(0);
    session.close();
    expect(await session.ended).toBeUndefined();

    const last = session.responses.at(-1)!;
    expect([last.acknowledged, last.accepted, last.duplicates]).toEqual([55n, 25n, 30n]);
    const duplicates = session.responses.map((r) => Number(r.duplicates));
    expect(duplicates).toEqual([...duplicates].sort((a, b) => a - b));
    expect(session.rejected).toEqual([]);
    expect(session.ackViolation).toBeUndefined();

    const stored = await storedIds(probe, "meter-dup");
    expect([stored.n, stored.distinct]).toEqual([25, 25]);
  });
});

describe("SyncReadings when storage fails mid-stream", () => {
  let app: TestService;
  let probe: HistoryProbe;
  let client: IngestClient;
  /** "fail": inserts are refused at once; "hang": they wait for the gate, then land. */
  let mode: "ok" | "fail" | "hang" = "ok";
  let failedInserts = 0;
  let hungInserts = 0;
  let openGate: () => void = () => {};
  let gate = Promise.resolve();
  const aborts: AbortController[] = [];

  beforeAll(async () => {
    const faultySink = (real: HistorySink): HistorySink => ({
      async insert(kind, payload, token) {
        if (mode === "fail") {
          failedInserts++;
          throw new Error("injected: the history store refuses the insert");
        }
        if (mode === "hang") {
          hungInserts++;
          await gate;
        }
        await real.insert(kind, payload, token);
      },
    });
    app = await startTestService(testEnv({ INSERT_ATTEMPTS: "1", INSERT_TIMEOUT: "2s", CLAIM_LEASE: "10s" }), {
      wrapHistorySink: faultySink,
    });
    probe = new HistoryProbe(app.config, app.service);
    client = createClient(IngestService, createGrpcTransport({ baseUrl: app.baseUrl }));
  });

  afterAll(async () => {
    mode = "ok";
    openGate();
    for (const abort of aborts) abort.abort();
    await app?.service.stop();
    await probe?.close();
  });

  function open(device: Device): SyncSession {
    const abort = new AbortController();
    aborts.push(abort);
    return new SyncSession(client, device, abort.signal);
  }

  it("fails the stream UNAVAILABLE, keeps the unacknowledged readings, and a resend stores each once", { timeout: 60_000 }, async () => {
    const device = new Device();
    const session = open(device);

    const a = device.produce(meterBatch("meter-fault", "a", 50));
    session.send(a);
    expect(await session.waitUntil(() => session.acknowledged === 50, 10_000)).toBe(true);
    expect(device.outbox.size).toBe(0);

    mode = "fail";
    const b = device.produce(meterBatch("meter-fault", "b", 50));
    session.send(b);
    const { error } = await awaitEnd(session);
    expect(error).toBeInstanceOf(ConnectError);
    expect(error!.code).toBe(Code.Unavailable);
    expect(error!.metadata.get("grpc-retry-pushback-ms")).toBe("1000");
    expect(failedInserts).toBeGreaterThan(0);
    expect(session.acknowledged).toBe(50);
    expect(device.eventIdsInOutbox()).toEqual(b.map((e) => e.reading.eventId));

    mode = "ok";
    const stats = await syncOutbox(client, device, 30_000);
    expect(device.outbox.size).toBe(0);
    expect(stats.unavailable).toBe(0);

    const stored = await storedIds(probe, "meter-fault");
    expect([stored.n, stored.distinct]).toEqual([100, 100]);
    expect(stored.ids).toEqual([...a, ...b].map((e) => e.reading.eventId).sort());
  });

  it("answers a resend in flight while a timed-out insert may still land, then counts it duplicate once it did", { timeout: 60_000 }, async () => {
    const device = new Device();
    const session = open(device);
    const a = device.produce(meterBatch("meter-hang", "a", 30));
    session.send(a);
    expect(await session.waitUntil(() => session.acknowledged === 30, 10_000)).toBe(true);

    gate = new Promise<void>((resolve) => (openGate = resolve));
    mode = "hang";
    const b = device.produce(meterBatch("meter-hang", "b", 30));
    session.send(b);
    const { error } = await awaitEnd(session);
    expect(error?.code).toBe(Code.Unavailable);
    expect(hungInserts).toBeGreaterThan(0);
    expect(device.eventIdsInOutbox()).toEqual(b.map((e) => e.reading.eventId));

    // The timed-out insert has not settled: the resend is answered in flight, and kept.
    mode = "ok";
    const stats = newStats();
    const syncing = syncOutbox(client, device, 30_000, stats);
    const deadline = Date.now() + 10_000;
    while (stats.retryableRejections === 0 && Date.now() < deadline) await sleep(20);
    expect(stats.retryableRejections).toBeGreaterThan(0);
    expect(device.outbox.size).toBe(30);
    // Now the abandoned insert lands; its claims are committed and the resend settles as duplicates.
    openGate();
    await syncing;
    expect(device.outbox.size).toBe(0);

    const stored = await storedIds(probe, "meter-hang");
    expect([stored.n, stored.distinct]).toEqual([60, 60]);
    expect(stored.ids).toEqual([...a, ...b].map((e) => e.reading.eventId).sort());
  });

  // Firmware holding the stream open (waiting for acknowledgements, sending nothing) must learn of
  // a failure at once, not with its next message.
  it("ends the stream UNAVAILABLE while the device still holds it open", { timeout: 30_000 }, async () => {
    const device = new Device();
    const session = open(device);
    mode = "fail";
    try {
      session.send(device.produce(meterBatch("meter-open", "x", 5)));
      const outcome = await Promise.race([session.ended, sleep(5_000, "still open" as const)]);
      expect(outcome).toBeInstanceOf(ConnectError);
      expect((outcome as ConnectError).code).toBe(Code.Unavailable);
    } finally {
      mode = "ok";
      session.close();
      await Promise.race([session.ended, sleep(5_000)]);
    }
  });

  // A device may go away while its readings are being stored: their acknowledgement then has no
  // stream to go to. What was stored stays stored, once, and the service carries on.
  it("stores what a device sent before it went away mid-insert, once, and takes its resend on a new stream", { timeout: 30_000 }, async () => {
    const device = new Device();
    const abort = new AbortController();
    aborts.push(abort);
    const session = new SyncSession(client, device, abort.signal);
    const sent = device.produce(meterBatch("meter-gone", "g", 40));
    gate = new Promise<void>((resolve) => (openGate = resolve));
    mode = "hang";
    const hungBefore = hungInserts;
    try {
      session.send(sent);
      const deadline = Date.now() + 5_000;
      while (hungInserts === hungBefore && Date.now() < deadline) await sleep(10);
      expect(hungInserts).toBeGreaterThan(hungBefore);
      abort.abort();
      expect((await session.ended)?.code).toBe(Code.Canceled);
    } finally {
      mode = "ok";
      openGate();
    }
    expect(session.acknowledged).toBe(0);
    expect(device.outbox.size).toBe(40);

    const stats = await syncOutbox(client, device, 20_000);
    expect(device.outbox.size).toBe(0);
    expect(stats.unavailable).toBe(0);
    const stored = await storedIds(probe, "meter-gone");
    expect([stored.n, stored.distinct]).toEqual([40, 40]);
    expect(stored.ids).toEqual(sent.map((e) => e.reading.eventId).sort());
  });
});
