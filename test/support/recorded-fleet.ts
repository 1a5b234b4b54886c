// A simulated fleet (bench/simulator's FleetModel and reference DeviceClient) streaming to a
// service, with a record of what the service told the devices about every single reading: the
// ground truth the fault suite checks the history against.
//
// The DeviceClient counts answers per call; a test needs to know *which* readings were
// acknowledged. So every device transport is wrapped: each answer that reaches the client is
// applied to a per-reading ledger before the device sees it (readings not listed as rejected are
// acknowledged — accepted or duplicate — exactly as the device's own outbox settles them).
import type { Reading } from "../../gen/wattstream/telemetry/v1/reading_pb.js";
import {
  ClientStats,
  createTransport,
  DeviceClient,
  toWireReading,
  type IngestTransport,
  type RetryPolicy,
  type StreamAnswer,
  type TransportKind,
} from "../../bench/simulator/device-client.js";
import { createRandom, deriveSeed, FleetModel, type SimReading } from "../../bench/simulator/fleet-model.js";

/** One key per reading, the same for a device's resends. */
export function readingKey(deviceId: string, eventId: string): string {
  return `${deviceId}\t${eventId}`;
}

export interface ReadingRecord {
  readonly reading: SimReading;
  /** Times it was written to a call (resends included). */
  sends: number;
  /** Answers that acknowledged it (accepted or duplicate). */
  acks: number;
  /** Answers that rejected it as retryable (in flight elsewhere). */
  retryableRejections: number;
  /** The reason it was rejected as final, if it was. */
  rejectedAs: string | undefined;
}

export interface FleetSize {
  readonly meters: number;
  readonly vehicles: number;
  readonly batteries: number;
}

export interface RecordedFleetOptions extends FleetSize {
  readonly seed: number;
  /** Service address, host:port; the same across restarts. */
  readonly target: string;
  /** Readings each device produces per wall second. */
  readonly readingsPerSecond: number;
  /** Share of readings corrupted on purpose (the service must reject them, and store none). */
  readonly malformedShare: number;
  /** Longest the run may generate readings, wall ms (fixes the simulated clock's span). */
  readonly maxRunMs: number;
  readonly retryPolicy: RetryPolicy;
  readonly callTimeoutMs: number;
}

/** Simulated time between two readings of one device. */
const INTERVAL_MS = 60_000;
const TICK_MS = 100;
/**
 * The client stacks in turn: StreamReadings over grpc-js, Connect and connect-node's gRPC, the
 * bidirectional SyncReadings, and the unary IngestReadings.
 */
const TRANSPORT_KINDS: readonly TransportKind[] = ["grpc", "connect", "connect-grpc", "sync", "unary"];

export class RecordedFleet {
  readonly stats = new ClientStats();
  readonly records = new Map<string, ReadingRecord>();
  /** Calls the service answered with per-reading counts that do not add up (should stay 0). */
  inconsistentAnswers = 0;
  /** Distinct readings acknowledged at least once, so far. */
  acknowledged = 0;
  private readonly model: FleetModel;
  private readonly clients: DeviceClient[];
  private readonly transports = new Map<TransportKind, { inner: IngestTransport; open: number }>();
  private readonly startedAt = performance.now();
  private readonly compress: number;
  private readonly simStartMs: number;
  private ticker: NodeJS.Timeout | undefined;

  constructor(o: RecordedFleetOptions) {
    this.compress = o.readingsPerSecond * INTERVAL_MS / 1000;
    // The simulated clock reaches now only after maxRunMs: every reading is observed in the past,
    // within the service's 30-day horizon and (for a run of minutes) its 7-day dedupe window.
    const span = o.maxRunMs * this.compress;
    this.simStartMs = Date.now() - span;
    this.model = new FleetModel({
      seed: o.seed,
      meters: o.meters,
      vehicles: o.vehicles,
      batteries: o.batteries,
      intervalMs: INTERVAL_MS,
      startMs: this.simStartMs,
      endMs: this.simStartMs + span,
      malformedShare: o.malformedShare,
      prefix: `f${o.seed}`,
    });
    for (const kind of TRANSPORT_KINDS) this.transports.set(kind, { inner: createTransport(kind, o.target), open: 0 });
    this.clients = this.model.devices.map(
      (d) =>
        new DeviceClient({
          deviceId: d.id,
          transport: this.recording(TRANSPORT_KINDS[d.index % TRANSPORT_KINDS.length]!),
          stats: this.stats,
          minCallGapMs: 500,
          callTimeoutMs: o.callTimeoutMs,
          retryPolicy: o.retryPolicy,
          random: createRandom(deriveSeed(o.seed, "client", d.index)),
        }),
    );
  }

  get devices(): number {
    return this.clients.length;
  }

  /** Calls open right now, across all devices. */
  get openCalls(): number {
    let n = 0;
    for (const t of this.transports.values()) n += t.open;
    return n;
  }

  /** Readings waiting in device outboxes. */
  get pending(): number {
    return this.clients.reduce((n, c) => n + c.pending, 0);
  }

  get failedCalls(): number {
    return Object.values(this.stats.failedCalls).reduce((a, b) => a + b, 0);
  }

  /** Starts producing readings as wall time passes (devices go offline now and then, as modelled). */
  start(): void {
    this.tick();
    this.ticker = setInterval(() => this.tick(), TICK_MS);
  }

  /** Stops producing readings; what was produced stays in the outboxes until acknowledged. */
  stopProducing(): void {
    clearInterval(this.ticker);
    this.ticker = undefined;
    this.tick();
  }

  /** Every device comes online and uploads; resolves true once all outboxes are empty. */
  async drain(timeoutMs: number): Promise<boolean> {
    for (const c of this.clients) c.setOnline(true);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    try {
      return await Promise.race([Promise.all(this.clients.map((c) => c.whenIdle())).then(() => true), timedOut]);
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    clearInterval(this.ticker);
    for (const c of this.clients) c.stop();
    for (const t of this.transports.values()) t.inner.close();
  }

  private tick(): void {
    const simNow = this.simStartMs + (performance.now() - this.startedAt) * this.compress;
    for (const d of this.model.devices) this.clients[d.index]!.setOnline(this.model.isOnline(d.index, simNow));
    const byDevice = new Map<number, Reading[]>();
    for (const r of this.model.advanceTo(simNow)) {
      this.records.set(readingKey(r.deviceId, r.eventId), { reading: r, sends: 0, acks: 0, retryableRejections: 0, rejectedAs: undefined });
      let list = byDevice.get(r.deviceIndex);
      if (list === undefined) byDevice.set(r.deviceIndex, (list = []));
      list.push(toWireReading(r));
    }
    for (const [index, readings] of byDevice) this.clients[index]!.enqueue(readings);
  }

  private recording(kind: TransportKind): IngestTransport {
    const shared = this.transports.get(kind)!;
    return {
      streamReadings: async (frames, options) => {
        const readings = frames.flat();
        for (const r of readings) this.records.get(readingKey(r.deviceId, r.eventId))!.sends++;
        shared.open++;
        try {
          const answer = await shared.inner.streamReadings(frames, options);
          this.apply(readings, answer);
          return answer;
        } finally {
          shared.open--;
        }
      },
      close: () => {},
    };
  }

  private apply(readings: readonly Reading[], answer: StreamAnswer): void {
    const rejected = new Map(answer.rejected.map((r) => [r.index, r]));
    for (const [index, r] of rejected) {
      if (readings[index]?.eventId !== r.eventId) this.inconsistentAnswers++;
    }
    if (answer.accepted + answer.duplicates !== readings.length - rejected.size) this.inconsistentAnswers++;
    readings.forEach((reading, index) => {
      const record = this.records.get(readingKey(reading.deviceId, reading.eventId))!;
      const rejection = rejected.get(index);
      if (rejection === undefined) {
        if (record.acks++ === 0) this.acknowledged++;
      } else if (rejection.retryable) {
        record.retryableRejections++;
      } else {
        record.rejectedAs = rejection.reason;
      }
    });
  }
}
