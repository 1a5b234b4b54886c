// How a device talks to the service: the reference retry behaviour for firmware.
//
// Each device keeps an outbox of readings not yet acknowledged, oldest first, and uploads them over
// StreamReadings calls (one call at a time per device, readings batched in frames). A reading
// leaves the outbox only when an answer the device actually received settles it: counted accepted
// or duplicate, or rejected as not retryable (dropped and counted). Everything else stays and is
// resent with the same event_id, so the service's dedupe turns resends into duplicates.
//
//   call fails with UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, ABORTED or CANCELLED
//     → wait max(exponential backoff with jitter, the server's grpc-retry-pushback-ms), resend
//   answer lists readings as rejected with retryable: true (another call is storing them)
//     → the others are settled; those are resent after the backoff
//   call fails with any other code → the readings are kept; retry at the longest backoff
//   link lost (device offline) → the readings are kept; resend on reconnect
//
// Many devices share one transport (one HTTP/2 connection), as a gateway or a simulator would.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import {
  IngestService,
  RejectReason,
  StreamReadingsRequestSchema,
  StreamReadingsResponseSchema,
  SyncReadingsRequestSchema,
  type StreamReadingsRequest,
  type StreamReadingsResponse,
  type SyncReadingsResponse,
} from "../../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { ReadingSchema, type Reading } from "../../gen/wattstream/telemetry/v1/reading_pb.js";
import type { SimReading } from "./fleet-model.js";

// ---------------------------------------------------------------------------------------------
// Transports

/** Canonical status codes (the same numbers in gRPC and Connect), by number. */
const CODE_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
] as const;

/**
 * Call failures worth resending after a delay. CANCELLED included: the device did not cancel (a
 * lost link is handled apart), so it is a call the other side cut — some client stacks report a
 * service killed mid-call that way.
 */
export const RETRYABLE_CODES: ReadonlySet<string> = new Set(["UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "ABORTED", "CANCELLED"]);

/** A StreamReadings call that did not produce an answer. */
export class CallFailed extends Error {
  constructor(
    /** Canonical code name (UNAVAILABLE …), or LOST_ANSWER for an answer the simulator threw away. */
    readonly code: string,
    message: string,
    /** The delay the server asked for before a retry, ms (grpc-retry-pushback-ms or retry-after). */
    readonly pushbackMs?: number,
  ) {
    super(`${code}: ${message}`);
    this.name = "CallFailed";
  }
}

export interface RejectedEntry {
  /** Position in the call, counting across frames. */
  readonly index: number;
  readonly eventId: string;
  /** RejectReason name without its prefix, e.g. OUT_OF_RANGE. */
  readonly reason: string;
  readonly retryable: boolean;
  readonly message: string;
}

export interface StreamAnswer {
  readonly accepted: number;
  readonly duplicates: number;
  readonly rejected: readonly RejectedEntry[];
}

export interface CallOptions {
  /** Aborting it cancels the call (the device lost its link). */
  readonly signal: AbortSignal;
  /** The call's deadline, from when it starts. */
  readonly timeoutMs: number;
  /** Headers of the call: the device's `authorization` when the service authenticates. */
  readonly headers?: Readonly<Record<string, string>>;
}

/** One StreamReadings call per invocation; implementations share one connection across calls. */
export interface IngestTransport {
  /** Sends the frames as the messages of one StreamReadings call; rejects with CallFailed. */
  streamReadings(frames: readonly (readonly Reading[])[], options: CallOptions): Promise<StreamAnswer>;
  close(): void;
}

export type TransportKind = "grpc" | "connect" | "connect-grpc" | "sync" | "unary";

const STREAM_READINGS_PATH = "/wattstream.telemetry.v1.IngestService/StreamReadings";

/** The delay a failed call's trailers ask for, ms: grpc-retry-pushback-ms, else Retry-After (s). */
export function pushbackFrom(get: (key: string) => string | undefined): number | undefined {
  const pushback = get("grpc-retry-pushback-ms")?.trim();
  // gRPC A6: a malformed or negative pushback means "do not retry"; firmware falls back to backoff.
  if (pushback !== undefined && /^\d+$/.test(pushback)) return Number(pushback);
  const retryAfter = get("retry-after")?.trim();
  if (retryAfter !== undefined && /^\d+$/.test(retryAfter)) return Number(retryAfter) * 1000;
  return undefined;
}

function toAnswer(response: StreamReadingsResponse): StreamAnswer {
  return {
    accepted: Number(response.accepted),
    duplicates: Number(response.duplicates),
    rejected: response.rejected.map((r) => ({
      index: r.index,
      eventId: r.eventId,
      reason: RejectReason[r.reason] ?? String(r.reason),
      retryable: r.retryable,
      message: r.message,
    })),
  };
}

/** A stock @grpc/grpc-js client; protobuf-es does the (de)serialisation, as in firmware. */
export function grpcJsTransport(target: string): IngestTransport {
  const client = new grpc.Client(target, grpc.credentials.createInsecure(), {
    // A device's backlog call is at most a few hundred kB; the default limits are fine, but say so.
    "grpc.max_send_message_length": 16 * 1024 * 1024,
    "grpc.keepalive_time_ms": 60_000,
  });
  const serialize = (message: StreamReadingsRequest) => Buffer.from(toBinary(StreamReadingsRequestSchema, message));
  const deserialize = (bytes: Buffer) => fromBinary(StreamReadingsResponseSchema, bytes);
  return {
    streamReadings(frames, { signal, timeoutMs, headers }) {
      return new Promise((resolve, reject) => {
        if (signal.aborted) return reject(new CallFailed("CANCELLED", "the link was lost before the call started"));
        const metadata = new grpc.Metadata();
        for (const [key, value] of Object.entries(headers ?? {})) metadata.set(key, value);
        const call = client.makeClientStreamRequest<StreamReadingsRequest, StreamReadingsResponse>(
          STREAM_READINGS_PATH,
          serialize,
          deserialize,
          metadata,
          { deadline: Date.now() + timeoutMs },
          (error, response) => {
            signal.removeEventListener("abort", cancel);
            if (error) {
              const pushbackMs = pushbackFrom((key) => {
                const value = error.metadata?.get(key)[0];
                return value === undefined ? undefined : String(value);
              });
              reject(new CallFailed(CODE_NAMES[error.code] ?? `CODE_${error.code}`, error.details || error.message, pushbackMs));
            } else {
              resolve(toAnswer(response!));
            }
          },
        );
        const cancel = () => call.cancel();
        signal.addEventListener("abort", cancel, { once: true });
        for (const readings of frames) call.write(create(StreamReadingsRequestSchema, { readings: [...readings] }));
        call.end();
      });
    },
    close: () => client.close(),
  };
}

/** One HTTP/2 connection for connect-node clients, speaking the Connect protocol or gRPC. */
function connectNodeClient(target: string, protocol: "connect" | "grpc") {
  const baseUrl = /^https?:\/\//.test(target) ? target : `http://${target}`;
  const sessionManager = new Http2SessionManager(baseUrl, { pingIntervalMs: 60_000 });
  const transport =
    protocol === "connect"
      ? createConnectTransport({ baseUrl, httpVersion: "2", useBinaryFormat: true, sessionManager })
      : createGrpcTransport({ baseUrl, sessionManager });
  return { client: createClient(IngestService, transport), close: () => sessionManager.abort() };
}

/** A call's options as connect-node takes them. */
function connectCallOptions({ signal, timeoutMs, headers }: CallOptions) {
  return { signal, timeoutMs, ...(headers !== undefined && { headers: { ...headers } }) };
}

/** A connect-node call's failure as the device sees it: code, message, the server's pushback. */
function callFailedFrom(error: unknown): CallFailed {
  const e = ConnectError.from(error);
  return new CallFailed(CODE_NAMES[e.code] ?? `CODE_${e.code}`, e.rawMessage, pushbackFrom((key) => e.metadata.get(key) ?? undefined));
}

/** connect-node over HTTP/2: the Connect protocol ("connect") or gRPC ("connect-grpc"). */
export function connectNodeTransport(target: string, protocol: "connect" | "grpc"): IngestTransport {
  const { client, close } = connectNodeClient(target, protocol);
  return {
    async streamReadings(frames, options) {
      async function* messages() {
        for (const readings of frames) yield create(StreamReadingsRequestSchema, { readings: [...readings] });
      }
      try {
        return toAnswer(await client.streamReadings(messages(), connectCallOptions(options)));
      } catch (error) {
        throw callFailedFrom(error);
      }
    },
    close,
  };
}

/**
 * The long-lived firmware path, SyncReadings (bidirectional, connect-node over gRPC), one stream
 * per upload: the frames are sent, the request side closed, and the stream's cumulative
 * acknowledgements gathered into one answer. A stream that fails acknowledges nothing here, even
 * what earlier acknowledgements covered: the device resends it all and gets duplicates — the
 * conservative reading of a partial answer.
 */
export function syncReadingsTransport(target: string): IngestTransport {
  const { client, close } = connectNodeClient(target, "grpc");
  return {
    async streamReadings(frames, options) {
      async function* messages() {
        for (const readings of frames) yield create(SyncReadingsRequestSchema, { readings: [...readings] });
      }
      let last: SyncReadingsResponse | undefined;
      const rejected: SyncReadingsResponse["rejected"] = [];
      try {
        for await (const response of client.syncReadings(messages(), connectCallOptions(options))) {
          last = response;
          rejected.push(...response.rejected);
        }
      } catch (error) {
        throw callFailedFrom(error);
      }
      const sent = frames.reduce((n, f) => n + f.length, 0);
      if (Number(last?.acknowledged ?? 0) !== sent) {
        throw new CallFailed("UNKNOWN", `the stream ended with ${last?.acknowledged ?? 0} of ${sent} readings acknowledged`);
      }
      return toAnswer(create(StreamReadingsResponseSchema, { accepted: last!.accepted, duplicates: last!.duplicates, rejected }));
    },
    close,
  };
}

/**
 * The unary IngestReadings (connect-node over gRPC): every frame of an upload in one request, as
 * a device that batches and posts would. Its answer is the same counts a StreamReadings call gives.
 */
export function ingestReadingsTransport(target: string): IngestTransport {
  const { client, close } = connectNodeClient(target, "grpc");
  return {
    async streamReadings(frames, options) {
      try {
        const response = await client.ingestReadings({ readings: frames.flat() }, connectCallOptions(options));
        return toAnswer(create(StreamReadingsResponseSchema, { accepted: response.accepted, duplicates: response.duplicates, rejected: response.rejected }));
      } catch (error) {
        throw callFailedFrom(error);
      }
    },
    close,
  };
}

export function createTransport(kind: TransportKind, target: string): IngestTransport {
  switch (kind) {
    case "grpc":
      return grpcJsTransport(target);
    case "sync":
      return syncReadingsTransport(target);
    case "unary":
      return ingestReadingsTransport(target);
    default:
      return connectNodeTransport(target, kind === "connect" ? "connect" : "grpc");
  }
}

/**
 * At most `max` calls open at once across all devices sharing the transport; the rest wait their
 * turn (a gateway's connection pool). A call's deadline starts when it gets its turn.
 */
export function limitConcurrentCalls(inner: IngestTransport, max: number): IngestTransport {
  let active = 0;
  const waiting: (() => void)[] = [];
  return {
    async streamReadings(frames, options) {
      if (active < max) active++;
      else await new Promise<void>((resolve) => waiting.push(resolve)); // the slot is handed over
      try {
        if (options.signal.aborted) throw new CallFailed("CANCELLED", "the link was lost before the call started");
        return await inner.streamReadings(frames, options);
      } finally {
        const next = waiting.shift();
        if (next) next();
        else active--;
      }
    },
    close: () => inner.close(),
  };
}

/** The wire form of a simulated reading. */
export function toWireReading(r: SimReading): Reading {
  const s = r.sample;
  return create(ReadingSchema, {
    eventId: r.eventId,
    deviceId: r.deviceId,
    observedAt: r.observedAtMs === undefined ? undefined : timestampFromMs(r.observedAtMs),
    sample:
      s.kind === "meter"
        ? { case: "meter", value: { kwhConsumedAc: s.kwhConsumedAc, voltage: s.voltage, registerKwhAc: s.registerKwhAc } }
        : s.kind === "vehicle"
          ? { case: "vehicle", value: { soc: s.soc, kwhDeliveredDc: s.kwhDeliveredDc, batteryTemp: s.batteryTemp, registerKwhDc: s.registerKwhDc } }
          : { case: "battery", value: { voltage: s.voltage, temperature: s.temperature, errorCodes: [...s.errorCodes] } },
  });
}

// ---------------------------------------------------------------------------------------------
// Retry policy

export interface RetryPolicy {
  /** Ceiling of the first retry's delay, ms. */
  readonly initialBackoffMs: number;
  /** Ceiling of any retry's delay, ms. */
  readonly maxBackoffMs: number;
  /** Growth of the ceiling per consecutive failure. */
  readonly multiplier: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { initialBackoffMs: 500, maxBackoffMs: 30_000, multiplier: 2 };

/**
 * The backoff before retry number `attempt` (0 for the first): the ceiling grows exponentially up
 * to maxBackoffMs, and the delay is drawn from its upper half ("equal jitter"). Devices that failed
 * together spread out, and with a multiplier ≥ 2 each delay is at least the previous ceiling, so a
 * device that keeps failing never retries sooner than it did the time before.
 */
export function backoffDelay(policy: RetryPolicy, attempt: number, random: () => number): number {
  const ceiling = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * policy.multiplier ** attempt);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

// ---------------------------------------------------------------------------------------------
// Counters shared by the devices of a run

export class ClientStats {
  /** Readings written to calls, resends included. */
  sent = 0;
  /** Of those, readings sent again (after a failure, a retryable rejection or a lost answer). */
  resent = 0;
  /** Readings settled by an answer a device received: accepted + duplicates. */
  acknowledged = 0;
  accepted = 0;
  duplicates = 0;
  /** Readings rejected as not retryable: dropped by the device. */
  rejected = 0;
  readonly rejectedByReason: Record<string, number> = {};
  /** Retryable rejections (the reading stays in the outbox and is resent). */
  retryableRejected = 0;
  calls = 0;
  /** Calls that got an answer (a lost answer counts here and in lostAnswers). */
  answeredCalls = 0;
  /** Calls that failed, by code. */
  readonly failedCalls: Record<string, number> = {};
  /** Delays scheduled before a resend (after a failure or a retryable rejection). */
  retries = 0;
  /** Failures that carried a server pushback, which the device waited for. */
  pushbacks = 0;
  /** Answers thrown away on purpose to simulate a lost response. */
  lostAnswers = 0;
  /** Calls cut because the device went offline. */
  linkDrops = 0;
  /** Answers whose accepted + duplicates did not match the readings they settled (should stay 0). */
  inconsistentAnswers = 0;
  /** Longest delay scheduled before a resend, ms. */
  maxRetryDelayMs = 0;
}

// ---------------------------------------------------------------------------------------------
// One device

export type ClientEvent =
  | { readonly type: "call"; readonly atMs: number; readonly readings: number; readonly resends: number }
  | { readonly type: "answer"; readonly atMs: number; readonly answer: StreamAnswer; readonly lost: boolean }
  | {
      readonly type: "retry";
      readonly atMs: number;
      /** Code of the failed call, or RETRYABLE_REJECTION when the answer listed retryable rejections. */
      readonly cause: string;
      readonly attempt: number;
      readonly backoffMs: number;
      readonly pushbackMs: number | undefined;
      /** What the device waits: max(backoff, pushback) for retryable failures. */
      readonly delayMs: number;
    }
  | { readonly type: "link-lost"; readonly atMs: number };

export interface DeviceClientOptions {
  readonly deviceId: string;
  readonly transport: IngestTransport;
  readonly stats: ClientStats;
  /** Readings per StreamReadings message. */
  readonly frameReadings?: number;
  /** Most readings per call; a larger backlog goes in several calls, back to back. */
  readonly maxCallReadings?: number;
  /** Fewest ms between the starts of two calls while the outbox holds less than a full call. */
  readonly minCallGapMs?: number;
  /** Deadline of one call, ms. */
  readonly callTimeoutMs?: number;
  readonly retryPolicy?: RetryPolicy;
  /** Share of answers thrown away as if lost on the way back (the device then resends). */
  readonly lostAnswerShare?: number;
  /** Random numbers for jitter and lost answers. */
  readonly random?: () => number;
  /** Sees every call, answer and retry; for tests and tracing. */
  readonly onEvent?: (event: ClientEvent) => void;
  /** The device's token, sent as `authorization: Bearer` when the service authenticates. */
  readonly token?: string;
}

interface Pending {
  readonly reading: Reading;
  sends: number;
}

export class DeviceClient {
  readonly deviceId: string;
  private readonly o: Required<Omit<DeviceClientOptions, "onEvent" | "token">> & Pick<DeviceClientOptions, "onEvent">;
  private readonly headers: Readonly<Record<string, string>> | undefined;
  private outbox: Pending[] = [];
  private online = true;
  private calling = false;
  private stopped = false;
  /** Consecutive failed attempts; sets the backoff. */
  private failures = 0;
  private notBeforeMs = 0;
  /** The service's pushback: kept across a reconnect, which starts only the backoff over. */
  private pushbackUntilMs = 0;
  private lastCallMs = Number.NEGATIVE_INFINITY;
  private timer: NodeJS.Timeout | undefined;
  private link: AbortController | undefined;
  private idleWaiters: (() => void)[] = [];
  private largestOutbox = 0;

  constructor(options: DeviceClientOptions) {
    this.deviceId = options.deviceId;
    this.headers = options.token === undefined ? undefined : { authorization: `Bearer ${options.token}` };
    this.o = {
      frameReadings: 100,
      maxCallReadings: 1000,
      minCallGapMs: 1000,
      callTimeoutMs: 30_000,
      retryPolicy: DEFAULT_RETRY_POLICY,
      lostAnswerShare: 0,
      random: Math.random,
      ...options,
    };
  }

  /** Readings waiting for an acknowledgement (including those in a call right now). */
  get pending(): number {
    return this.outbox.length;
  }

  /** The most readings this device has held at once. */
  get maxBacklog(): number {
    return this.largestOutbox;
  }

  get isOnline(): boolean {
    return this.online;
  }

  /** Adds readings to the outbox, oldest first, and uploads when the device may. */
  enqueue(readings: readonly Reading[]): void {
    if (this.stopped) throw new Error(`device ${this.deviceId} is stopped`);
    for (const reading of readings) this.outbox.push({ reading, sends: 0 });
    this.largestOutbox = Math.max(this.largestOutbox, this.outbox.length);
    this.kick();
  }

  /** Going offline cuts the call in flight (its readings stay); coming back uploads the backlog. */
  setOnline(online: boolean): void {
    if (online === this.online) return;
    this.online = online;
    if (!online) {
      this.link?.abort();
      clearTimeout(this.timer);
      this.timer = undefined;
    } else {
      // A new connection: the old failure streak says nothing about it.
      this.failures = 0;
      this.notBeforeMs = 0;
      this.kick();
    }
  }

  /** Resolves once the outbox is empty and no call is running (or the client is stopped). */
  whenIdle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops uploading: cancels a call in flight; the outbox keeps what was not acknowledged. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.link?.abort();
    this.notifyIdle(true);
  }

  private isIdle(): boolean {
    return this.stopped || (this.outbox.length === 0 && !this.calling);
  }

  private notifyIdle(force = false): void {
    if (!force && !this.isIdle()) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  }

  private kick(): void {
    if (this.stopped || this.calling || !this.online || this.outbox.length === 0) return;
    const now = Date.now();
    // A full call goes at once (a backlog drains back to back); a few new readings wait for the gap.
    const gapOver = this.outbox.length >= this.o.maxCallReadings ? 0 : this.lastCallMs + this.o.minCallGapMs;
    const at = Math.max(this.notBeforeMs, this.pushbackUntilMs, gapOver);
    clearTimeout(this.timer);
    this.timer = undefined;
    if (at > now) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.kick();
      }, at - now);
      return;
    }
    void this.call();
  }

  private async call(): Promise<void> {
    const { stats, transport, frameReadings, maxCallReadings, callTimeoutMs } = this.o;
    this.calling = true;
    this.lastCallMs = Date.now();
    const batch = this.outbox.slice(0, maxCallReadings);
    let resends = 0;
    for (const entry of batch) {
      if (entry.sends++ > 0) resends++;
    }
    stats.calls++;
    stats.sent += batch.length;
    stats.resent += resends;
    this.emit({ type: "call", atMs: this.lastCallMs, readings: batch.length, resends });

    const frames: Reading[][] = [];
    for (let i = 0; i < batch.length; i += frameReadings) frames.push(batch.slice(i, i + frameReadings).map((e) => e.reading));
    const link = new AbortController();
    this.link = link;
    try {
      const answer = await transport.streamReadings(frames, {
        signal: link.signal,
        timeoutMs: callTimeoutMs,
        ...(this.headers !== undefined && { headers: this.headers }),
      });
      stats.answeredCalls++;
      const lost = this.o.lostAnswerShare > 0 && this.o.random() < this.o.lostAnswerShare;
      this.emit({ type: "answer", atMs: Date.now(), answer, lost });
      if (lost) {
        stats.lostAnswers++;
        throw new CallFailed("LOST_ANSWER", "the answer was lost on the way back (simulated)");
      }
      this.settle(batch, answer);
    } catch (error) {
      if (link.signal.aborted) {
        // Cut by going offline or by stop(): nothing was acknowledged, everything stays.
        if (!this.stopped) {
          stats.linkDrops++;
          this.emit({ type: "link-lost", atMs: Date.now() });
        }
      } else {
        this.failed(error instanceof CallFailed ? error : new CallFailed("UNKNOWN", String(error)));
      }
    } finally {
      this.link = undefined;
      this.calling = false;
      this.kick();
      this.notifyIdle();
    }
  }

  /** Applies a received answer: settles what it settles, keeps the retryable rejections. */
  private settle(batch: readonly Pending[], answer: StreamAnswer): void {
    const { stats } = this.o;
    // The service named a reading we did not send there: keep everything, say so, and try again
    // (settling the rest would drop a reading it may have refused).
    if (answer.rejected.some((r) => batch[r.index]?.reading.eventId !== r.eventId)) {
      stats.inconsistentAnswers++;
      this.scheduleRetry("INCONSISTENT_ANSWER", undefined, true);
      return;
    }
    const keep = new Set<Pending>();
    const dropped = new Set<Pending>();
    for (const r of answer.rejected) {
      const entry = batch[r.index]!;
      if (r.retryable) {
        keep.add(entry);
        stats.retryableRejected++;
      } else if (!dropped.has(entry)) {
        dropped.add(entry);
        stats.rejected++;
        stats.rejectedByReason[r.reason] = (stats.rejectedByReason[r.reason] ?? 0) + 1;
      }
    }
    const acknowledged = batch.length - keep.size - dropped.size;
    stats.acknowledged += acknowledged;
    stats.accepted += answer.accepted;
    stats.duplicates += answer.duplicates;
    if (answer.accepted + answer.duplicates !== acknowledged) stats.inconsistentAnswers++;

    const settled = new Set(batch.filter((e) => !keep.has(e)));
    this.outbox = this.outbox.filter((e) => !settled.has(e));

    if (keep.size > 0) {
      this.scheduleRetry("RETRYABLE_REJECTION", undefined, true);
    } else {
      this.failures = 0;
      this.notBeforeMs = 0;
    }
  }

  private failed(failure: CallFailed): void {
    const { stats } = this.o;
    stats.failedCalls[failure.code] = (stats.failedCalls[failure.code] ?? 0) + 1;
    const retryable = RETRYABLE_CODES.has(failure.code) || failure.code === "LOST_ANSWER";
    this.scheduleRetry(failure.code, failure.pushbackMs, retryable);
  }

  private scheduleRetry(cause: string, pushbackMs: number | undefined, retryable: boolean): void {
    const { stats, retryPolicy, random } = this.o;
    const attempt = this.failures++;
    const backoffMs = backoffDelay(retryPolicy, attempt, random);
    // A failure that is not retryable still keeps its readings (never drop the unacknowledged):
    // retry at the slowest pace, so a misconfigured device does not hammer the service.
    const delayMs = retryable ? Math.max(backoffMs, pushbackMs ?? 0) : Math.max(retryPolicy.maxBackoffMs, pushbackMs ?? 0);
    if (pushbackMs !== undefined) stats.pushbacks++;
    stats.retries++;
    stats.maxRetryDelayMs = Math.max(stats.maxRetryDelayMs, delayMs);
    const now = Date.now();
    this.notBeforeMs = now + delayMs;
    if (pushbackMs !== undefined) this.pushbackUntilMs = now + pushbackMs;
    this.emit({ type: "retry", atMs: now, cause, attempt, backoffMs, pushbackMs, delayMs });
  }

  private emit(event: ClientEvent): void {
    this.o.onEvent?.(event);
  }
}
