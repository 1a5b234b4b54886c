// The lean gRPC stream path must answer exactly as connect does. Each case runs the same method
// implementation and request gate behind both — the lean route, and connect-node's adapter alone
// — over a real HTTP/2 server, called by a stock grpc-js client, and compares what the client sees.
import { once } from "node:events";
import http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter, createConnectTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  IngestReadingsRequestSchema,
  IngestReadingsResponseSchema,
  IngestService,
  StreamReadingsRequestSchema,
  StreamReadingsResponseSchema,
  SyncReadingsRequestSchema,
  SyncReadingsResponseSchema,
  type IngestReadingsRequest,
  type StreamReadingsRequest,
  type SyncReadingsRequest,
} from "../../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { bidiStreamingMethod, clientStreamingMethod, createLeanGrpcStreams, unaryMethod, type PushedResponses } from "./lean-grpc-streams.js";
import { Listener } from "./listener.js";

const READ_MAX_BYTES = 256 * 1024;
const LIMITS = { maxMessageBytes: READ_MAX_BYTES, maxConcurrentStreams: 1_000, idleTimeoutMs: 60_000, maxTimeoutMs: 60_000, shutdownGraceMs: 0 };
const WRITE_MAX_BYTES = 64 * 1024;
const SYNC = "/wattstream.telemetry.v1.IngestService/SyncReadings";
const STREAM = "/wattstream.telemetry.v1.IngestService/StreamReadings";
const INGEST = "/wattstream.telemetry.v1.IngestService/IngestReadings";

/** How each call ended on the server: whether its signal was aborted when the handler finished. */
const serverEnds: string[] = [];
/** The URL each call's handler context gave, by the call's x-call header. */
const contextUrls = new Map<string, string>();

async function* syncReadings(requests: AsyncIterable<SyncReadingsRequest>, ctx: HandlerContext) {
  let count = 0;
  contextUrls.set(ctx.requestHeader.get("x-call") ?? "", ctx.url);
  try {
    for await (const request of requests) {
      for (const reading of request.readings) {
        if (reading.deviceId === "exhausted") {
          throw new ConnectError("slow down", Code.ResourceExhausted, { "grpc-retry-pushback-ms": "1500" });
        }
        if (reading.deviceId === "crash") throw new Error("a bug");
      }
      count += request.readings.length;
      yield create(SyncReadingsResponseSchema, { acknowledged: BigInt(count) });
    }
  } finally {
    serverEnds.push(`${ctx.requestHeader.get("x-call")}:${ctx.signal.aborted ? "aborted" : "completed"}`);
  }
}

/** Calls whose responses the lean path took pushed (writeEach) rather than pulling them. */
let pushedCalls = 0;

/** `responses`, offered to be pushed as well, as the ingest handler offers its acknowledgements. */
function offeredPushed<M>(responses: AsyncIterable<M>): AsyncIterable<M> & PushedResponses<M> {
  return {
    [Symbol.asyncIterator]: () => responses[Symbol.asyncIterator](),
    async writeEach(write) {
      pushedCalls++;
      for await (const message of responses) await write(message);
    },
  };
}

/** syncReadings; its responses offered pushed when the call's x-call starts with "pushed". */
function syncReadingsMaybePushed(requests: AsyncIterable<SyncReadingsRequest>, ctx: HandlerContext) {
  const responses = syncReadings(requests, ctx);
  return ctx.requestHeader.get("x-call")?.startsWith("pushed") ? offeredPushed(responses) : responses;
}

async function streamReadings(requests: AsyncIterable<StreamReadingsRequest>) {
  let count = 0;
  for await (const request of requests) count += request.readings.length;
  return create(StreamReadingsResponseSchema, { accepted: BigInt(count) });
}

/** What a unary handler's context showed, by the call's x-call header: while it ran, and once the call ended. */
const unaryContexts = new Map<string, { during: Record<string, unknown>; endedAfterAnswer?: boolean }>();

/** Answers an init shape, not a message, as handlers may. */
function ingestReadings(request: IngestReadingsRequest, ctx: HandlerContext) {
  if (request.readings[0]?.deviceId === "context") {
    const seen: { during: Record<string, unknown>; endedAfterAnswer?: boolean } = {
      during: {
        method: `${ctx.service.typeName}/${ctx.method.name}`,
        protocolName: ctx.protocolName,
        requestMethod: ctx.requestMethod,
        url: ctx.url.replace(/:\d+\//, ":PORT/"),
        // Whole seconds: the two servers read it at slightly different moments.
        timeoutSeconds: Math.ceil((ctx.timeoutMs() ?? Number.NaN) / 1000),
        custom: ctx.requestHeader.get("x-custom"),
        aborted: ctx.signal.aborted,
      },
    };
    let answered = false;
    ctx.signal.addEventListener("abort", () => (seen.endedAfterAnswer = answered));
    unaryContexts.set(ctx.requestHeader.get("x-call") ?? "", seen);
    void Promise.resolve().then(() => (answered = true));
    return { accepted: 1n };
  }
  // An answer of ~13 kB ("big"), or one over WRITE_MAX_BYTES ("huge"): rejections with long messages.
  const rejections = { big: 300, huge: 3_000 }[request.readings[0]?.deviceId ?? ""];
  if (rejections !== undefined) {
    return { rejected: Array.from({ length: rejections }, (_, index) => ({ index, eventId: `e-${index}`, message: "observed_at is in the future" })) };
  }
  for (const reading of request.readings) {
    if (reading.deviceId === "exhausted") throw new ConnectError("slow down", Code.ResourceExhausted, { "grpc-retry-pushback-ms": "1500" });
    if (reading.deviceId === "crash") throw new Error("a bug");
  }
  return { accepted: BigInt(request.readings.length) };
}

/** How long the request gate takes to decide for a call that asks it to be slow (x-slow-gate). */
const SLOW_GATE_MS = 50;

async function requestGate(ctx: HandlerContext): Promise<void> {
  if (ctx.requestHeader.has("x-slow-gate")) await new Promise((resolve) => setTimeout(resolve, SLOW_GATE_MS));
  if (ctx.requestHeader.get("authorization") !== "Bearer good") {
    throw new ConnectError("no valid credential", Code.Unauthenticated);
  }
}

interface TestServer {
  port: number;
  /** Calls connect served (in "lean" mode: the calls the lean route declined). */
  connectCalls: number;
  close(): Promise<void>;
}

async function startServer(mode: "lean" | "connect"): Promise<TestServer> {
  const routes = (router: ConnectRouter) => router.service(IngestService, { syncReadings: syncReadingsMaybePushed, streamReadings, ingestReadings });
  const connect = connectNodeAdapter({ routes, readMaxBytes: READ_MAX_BYTES, writeMaxBytes: WRITE_MAX_BYTES, requestGate });
  const lean = createLeanGrpcStreams({
    methods: [
      bidiStreamingMethod(IngestService.method.syncReadings, syncReadingsMaybePushed),
      clientStreamingMethod(IngestService.method.streamReadings, streamReadings),
      unaryMethod(IngestService.method.ingestReadings, ingestReadings),
    ],
    requestGate,
    readMaxBytes: READ_MAX_BYTES,
    writeMaxBytes: WRITE_MAX_BYTES,
    maxTimeoutMs: 60_000,
  });
  const server: TestServer = { port: 0, connectCalls: 0, close: async () => {} };
  // The service's listener, which offers each HTTP/2 stream to the lean route before connect.
  const listener = new Listener(
    (req, res) => {
      server.connectCalls++;
      connect(req, res);
    },
    { limits: LIMITS, streamRoute: mode === "lean" ? lean : undefined },
  );
  server.port = await listener.listen(0, "127.0.0.1");
  server.close = () => listener.close(0);
  return server;
}

const identity = (b: Buffer) => b;
const syncMessage = (...devices: string[]) =>
  Buffer.from(toBinary(SyncReadingsRequestSchema, create(SyncReadingsRequestSchema, { readings: devices.map((deviceId) => ({ deviceId })) })));

interface Seen {
  code: grpc.status;
  details: string;
  trailers: Record<string, unknown>;
  responses: bigint[];
}

/** One bidi call with raw request bytes: writes them, ends (unless told not to), and reports what the client saw. */
function callSync(
  port: number,
  messages: Buffer[],
  options: { token?: string; call?: string; end?: boolean; deadlineMs?: number; channel?: grpc.ChannelOptions; onResponse?: (call: grpc.ClientDuplexStream<Buffer, Buffer>) => void } = {},
): Promise<Seen> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), options.channel);
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${options.token ?? "good"}`);
  metadata.set("x-call", options.call ?? "call");
  const call = client.makeBidiStreamRequest(SYNC, identity, identity, metadata, {
    ...(options.deadlineMs !== undefined && { deadline: Date.now() + options.deadlineMs }),
  });
  const responses: bigint[] = [];
  return new Promise((resolve) => {
    call.on("data", (bytes: Buffer) => {
      responses.push(fromBinary(SyncReadingsResponseSchema, bytes).acknowledged);
      options.onResponse?.(call);
    });
    call.on("error", () => {});
    call.on("status", (status: grpc.StatusObject) => {
      client.close();
      resolve({ code: status.code, details: status.details, trailers: status.metadata.getMap(), responses });
    });
    for (const m of messages) call.write(m);
    if (options.end !== false) call.end();
  });
}

/** A unary call sent as a stream of raw messages (so a test can send none, or two), and what the client saw. */
function callUnary(port: number, messages: Buffer[], token = "good"): Promise<Seen> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  const responses: bigint[] = [];
  return new Promise((resolve) => {
    const call = client.makeClientStreamRequest(INGEST, identity, identity, metadata, (_error, bytes) => {
      if (bytes) responses.push(fromBinary(IngestReadingsResponseSchema, bytes).accepted);
    });
    call.on("status", (status: grpc.StatusObject) => {
      client.close();
      resolve({ code: status.code, details: status.details, trailers: status.metadata.getMap(), responses });
    });
    for (const m of messages) call.write(m);
    call.end();
  });
}

interface RawSeen {
  readonly status: string | undefined;
  readonly message: string | undefined;
  readonly encoding: string | undefined;
  /** Each response message's compressed flag. */
  readonly flags: number[];
}

/** A binary gRPC call on a plain HTTP/2 session, with a good credential unless `headers` say otherwise. */
function rawGrpcRequest(session: http2.ClientHttp2Session, path: string, headers: Record<string, string>): http2.ClientHttp2Stream {
  return session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", authorization: "Bearer good", ...headers });
}

/** A unary call over plain HTTP/2, to see what grpc-js hides: response headers and envelope flags. */
async function rawUnary(port: number, body: Buffer, headers: Record<string, string> = {}): Promise<RawSeen> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  try {
    const stream = rawGrpcRequest(session, INGEST, { "grpc-accept-encoding": "identity,deflate,gzip", ...headers });
    stream.end(body);
    const [response] = (await once(stream, "response")) as [http2.IncomingHttpHeaders];
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    const [trailers] = (await Promise.race([once(stream, "trailers"), once(stream, "end").then(() => [response])])) as [http2.IncomingHttpHeaders];
    const data = Buffer.concat(chunks);
    const flags: number[] = [];
    for (let at = 0; at + 5 <= data.length; at += 5 + data.readUInt32BE(at + 1)) flags.push(data[at]!);
    return { status: trailers["grpc-status"] as string | undefined, message: trailers["grpc-message"] as string | undefined, encoding: response["grpc-encoding"] as string | undefined, flags };
  } finally {
    session.close();
  }
}

/** A gRPC length-prefixed message. */
function envelope(message: Buffer, flags = 0): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

const ingestMessage = (...devices: string[]) =>
  Buffer.from(toBinary(IngestReadingsRequestSchema, create(IngestReadingsRequestSchema, { readings: devices.map((deviceId) => ({ deviceId })) })));

let lean: TestServer;
let plain: TestServer;
beforeAll(async () => {
  [lean, plain] = await Promise.all([startServer("lean"), startServer("connect")]);
});
afterAll(async () => {
  await Promise.all([lean?.close(), plain?.close()]);
});

/** Runs the same call against both servers; answers what each client saw, the lean one first. */
async function both<T>(run: (port: number) => Promise<T>): Promise<[T, T]> {
  const before = lean.connectCalls;
  const seen = await Promise.all([run(lean.port), run(plain.port)]);
  expect(lean.connectCalls, "the lean route served the call").toBe(before);
  return seen;
}

/** How the server-side handler of a call ended ("aborted" or "completed"), waiting up to 2 s for it. */
async function serverEnd(call: string): Promise<string[]> {
  const ends = () => serverEnds.filter((e) => e.startsWith(`${call}:`)).map((e) => e.slice(call.length + 1));
  for (let i = 0; i < 200 && ends().length === 0; i++) await new Promise((r) => setTimeout(r, 10));
  return ends();
}

describe("the lean path answers unary calls as connect does", () => {
  it("answers one request with one response (an init shape made a message)", async () => {
    const [a, b] = await both((port) => callUnary(port, [ingestMessage("d-1", "d-2")]));
    expect(a).toEqual(b);
    expect(a).toMatchObject({ code: grpc.status.OK, responses: [2n] });
  });

  it.each([
    ["the request gate's refusal", [ingestMessage("d-1")], "bad", grpc.status.UNAUTHENTICATED],
    ["a handler's error, with its metadata", [ingestMessage("exhausted")], "good", grpc.status.RESOURCE_EXHAUSTED],
    ["a handler's unexpected error, without its message", [ingestMessage("crash")], "good", grpc.status.INTERNAL],
    ["a message that is not a valid request", [Buffer.from([0x0a, 0xff, 0xff])], "good", grpc.status.INTERNAL],
    ["a call with no request", [], "good", grpc.status.UNIMPLEMENTED],
    ["a call with two requests", [ingestMessage("d-1"), ingestMessage("d-2")], "good", grpc.status.UNIMPLEMENTED],
  ])("answers %s as connect does", async (_what, messages, token, code) => {
    const [a, b] = await both((port) => callUnary(port, messages, token));
    expect(a).toEqual(b);
    expect(a.code).toBe(code);
    expect(a.responses).toEqual([]);
  });

  it("compresses an answer of 1 kB or more for a client that accepts gzip, and names the encoding even for a small one", async () => {
    const big = await both((port) => rawUnary(port, envelope(ingestMessage("big"))));
    expect(big[0]).toEqual(big[1]);
    expect(big[0]).toEqual({ status: "0", message: undefined, encoding: "gzip", flags: [1] });
    const small = await both((port) => rawUnary(port, envelope(ingestMessage("d-1"))));
    expect(small[0]).toEqual(small[1]);
    expect(small[0]).toMatchObject({ status: "0", encoding: "gzip", flags: [0] });
    const identityOnly = await both((port) => rawUnary(port, envelope(ingestMessage("big")), { "grpc-accept-encoding": "identity" }));
    expect(identityOnly[0]).toEqual(identityOnly[1]);
    expect(identityOnly[0]).toMatchObject({ status: "0", encoding: undefined, flags: [0] });
  });

  it("refuses an answer over writeMaxBytes with RESOURCE_EXHAUSTED", async () => {
    const [a, b] = await both((port) => callUnary(port, [ingestMessage("huge")]));
    expect(a).toEqual(b);
    expect(a.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(a.details).toMatch(new RegExp(`larger than configured writeMaxBytes ${WRITE_MAX_BYTES}`));
  });

  it("gives the handler the context connect gives it, with the deadline, ended once the call is answered", async () => {
    const seen = await both(async (port) => {
      const call = `context-${port}`;
      const answer = await rawUnary(port, envelope(ingestMessage("context")), { "grpc-timeout": "5S", "x-call": call, "x-custom": "yes" });
      return { answer, ...unaryContexts.get(call) };
    });
    expect(seen[0]).toEqual(seen[1]);
    expect(seen[0]).toEqual({
      answer: expect.objectContaining({ status: "0" }),
      during: {
        method: "wattstream.telemetry.v1.IngestService/IngestReadings",
        protocolName: "grpc",
        requestMethod: "POST",
        url: "http://127.0.0.1:PORT/wattstream.telemetry.v1.IngestService/IngestReadings",
        timeoutSeconds: 5,
        custom: "yes",
        aborted: false,
      },
      endedAfterAnswer: true,
    });
  });

  it("runs the request gate before judging a malformed grpc-timeout", async () => {
    const seen = await both((port) => rawUnary(port, envelope(ingestMessage("d-1")), { authorization: "Bearer bad", "grpc-timeout": "abc" }));
    expect(seen[0]).toEqual(seen[1]);
    expect(seen[0]?.status).toBe(String(grpc.status.UNAUTHENTICATED));
    const allowed = await both((port) => rawUnary(port, envelope(ingestMessage("d-1")), { "grpc-timeout": "abc" }));
    expect(allowed[0]).toEqual(allowed[1]);
    expect(allowed[0]?.status).toBe(String(grpc.status.INVALID_ARGUMENT));
  });

  it("reports a compressed message without grpc-encoding as connect does", async () => {
    const seen = await both((port) => rawUnary(port, envelope(ingestMessage("d-1"), 1)));
    expect(seen[0]).toEqual(seen[1]);
    expect(seen[0]?.status).toBe(String(grpc.status.INTERNAL));
  });
});

describe("the lean gRPC stream path answers as connect does", () => {
  it("acknowledges each message of a bidi stream and ends OK", async () => {
    const [a, b] = await both((port) => callSync(port, [syncMessage("m-1"), syncMessage("m-2", "m-3")], { call: `ok-${port}` }));
    expect(a).toEqual(b);
    expect(a.code).toBe(grpc.status.OK);
    expect(a.responses).toEqual([1n, 3n]);
    for (const port of [lean.port, plain.port]) expect(contextUrls.get(`ok-${port}`)).toBe(`http://127.0.0.1:${port}${SYNC}`);
  });

  it("writes the responses an implementation pushes, in order, and its failure after them, as connect answers them pulled", async () => {
    const before = pushedCalls;
    const [a, b] = await both((port) => callSync(port, [syncMessage("m-1"), syncMessage("m-2", "m-3")], { call: `pushed-ok-${port}` }));
    expect(a).toEqual(b);
    expect(a).toMatchObject({ code: grpc.status.OK, responses: [1n, 3n] });
    const [c, d] = await both((port) => callSync(port, [syncMessage("m-1"), syncMessage("exhausted")], { call: `pushed-failed-${port}` }));
    expect(c).toEqual(d);
    expect(c).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, details: "slow down", responses: [1n] });
    expect(c.trailers["grpc-retry-pushback-ms"]).toBe("1500");
    // The lean path pushed both calls' responses; connect pulled its own.
    expect(pushedCalls - before).toBe(2);
  });

  it("answers a client-streaming call with one response", async () => {
    const run = (port: number) =>
      new Promise<{ code: grpc.status; accepted?: bigint }>((resolve) => {
        const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
        const metadata = new grpc.Metadata();
        metadata.set("authorization", "Bearer good");
        const call = client.makeClientStreamRequest(STREAM, identity, identity, metadata, (error, bytes) => {
          client.close();
          resolve(error ? { code: error.code } : { code: grpc.status.OK, accepted: fromBinary(StreamReadingsResponseSchema, bytes!).accepted });
        });
        for (const n of [2, 3]) {
          call.write(Buffer.from(toBinary(StreamReadingsRequestSchema, create(StreamReadingsRequestSchema, { readings: Array.from({ length: n }, () => ({ deviceId: "d" })) }))));
        }
        call.end();
      });
    const before = lean.connectCalls;
    const [a, b] = await Promise.all([run(lean.port), run(plain.port)]);
    expect(lean.connectCalls).toBe(before);
    expect(a).toEqual(b);
    expect(a).toEqual({ code: grpc.status.OK, accepted: 5n });
  });

  it("refuses a call the request gate refuses, before reading it", async () => {
    const [a, b] = await both((port) => callSync(port, [syncMessage("m-1")], { token: "bad" }));
    expect(a).toEqual(b);
    expect(a).toMatchObject({ code: grpc.status.UNAUTHENTICATED, details: "no valid credential", responses: [] });
  });

  it("carries a handler's error code, message and metadata in the trailers, after the acknowledgements before it", async () => {
    const [a, b] = await both((port) => callSync(port, [syncMessage("m-1"), syncMessage("exhausted")]));
    expect(a).toEqual(b);
    expect(a).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, details: "slow down", responses: [1n] });
    expect(a.trailers["grpc-retry-pushback-ms"]).toBe("1500");
  });

  it("answers INTERNAL for a handler's unexpected error, without its message", async () => {
    const [a, b] = await both((port) => callSync(port, [syncMessage("crash")]));
    expect(a).toEqual(b);
    expect(a).toMatchObject({ code: grpc.status.INTERNAL, details: "internal error" });
  });

  it("reports a message that is not a valid request as connect does", async () => {
    const [a, b] = await both((port) => callSync(port, [syncMessage("m-1"), Buffer.from([0x0a, 0xff, 0xff])]));
    expect(a).toEqual(b);
    expect(a.code).toBe(grpc.status.INTERNAL);
    expect(a.details).toMatch(/^parse binary/);
    expect(a.responses).toEqual([1n]);
  });

  it("refuses a message over the size limit with RESOURCE_EXHAUSTED", async () => {
    const big = Buffer.from(toBinary(SyncReadingsRequestSchema, create(SyncReadingsRequestSchema, { readings: [{ deviceId: "x".repeat(READ_MAX_BYTES) }] })));
    const [a, b] = await both((port) => callSync(port, [big]));
    expect(a.code).toBe(b.code);
    expect(a.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(a.details).toMatch(new RegExp(`larger than configured readMaxBytes ${READ_MAX_BYTES}`));
  });

  it("reads a message spanning many HTTP/2 frames, and many messages in one frame, in order", async () => {
    // ~200 kB: a dozen or more DATA frames of 16 kB; then 300 messages of a few bytes each.
    const large = syncMessage(...Array.from({ length: 4_000 }, (_, i) => `meter-${String(i).padStart(40, "0")}`));
    expect(large.byteLength).toBeGreaterThan(150_000);
    const small = Array.from({ length: 300 }, (_, i) => syncMessage(`m-${i}`));
    const [a, b] = await both((port) => callSync(port, [large, ...small, large]));
    expect(a).toEqual(b);
    expect(a.code).toBe(grpc.status.OK);
    expect(a.responses.at(-1)).toBe(8_300n);
    expect(a.responses).toHaveLength(302);
  });

  it("ends the handler when the client cancels a stream that waits for its next message", async () => {
    await both((port) =>
      callSync(port, [syncMessage("m-1")], { call: `cancel-${port}`, end: false, onResponse: (call) => call.cancel() }),
    );
    // The requests end, or fail with the cancellation, depending on which the server hears first;
    // either way the handler ends, once, and frees what it holds.
    expect(await serverEnd(`cancel-${lean.port}`)).toHaveLength(1);
    expect(await serverEnd(`cancel-${plain.port}`)).toHaveLength(1);
  });

  it("ends the handler when the client resets a stream with an error code, and serves the next call", async () => {
    // A reset other than CANCEL reaches the server's stream as an error event.
    const run = async (port: number) => {
      const session = http2.connect(`http://127.0.0.1:${port}`);
      try {
        const stream = rawGrpcRequest(session, SYNC, { "x-call": `reset-${port}` });
        stream.on("error", () => {});
        stream.write(envelope(syncMessage("m-1")));
        await once(stream, "data");
        stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
        return await serverEnd(`reset-${port}`);
      } finally {
        session.destroy();
      }
    };
    const [a, b] = await both(run);
    expect(a).toHaveLength(1);
    expect(b).toHaveLength(1);
    expect(await callSync(lean.port, [syncMessage("m-2")])).toMatchObject({ code: grpc.status.OK, responses: [1n] });
  });

  it("carries on when the client resets a stream while the request gate still decides", async () => {
    // Before the body is read nothing of the call listens to the stream: its error must not go unheard.
    const session = http2.connect(`http://127.0.0.1:${lean.port}`);
    try {
      const stream = rawGrpcRequest(session, SYNC, { "x-slow-gate": "1" });
      stream.on("error", () => {});
      await new Promise((resolve) => setTimeout(resolve, 10));
      stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      await new Promise((resolve) => stream.once("close", resolve));
      await new Promise((resolve) => setTimeout(resolve, SLOW_GATE_MS));
    } finally {
      session.destroy();
    }
    expect(await callSync(lean.port, [syncMessage("m-2")])).toMatchObject({ code: grpc.status.OK, responses: [1n] });
  });

  it("ends the handler at the call's deadline while it waits for a message", async () => {
    const [a, b] = await both((port) => callSync(port, [], { call: `deadline-${port}`, end: false, deadlineMs: 300 }));
    expect(a.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(b.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(await serverEnd(`deadline-${lean.port}`)).toHaveLength(1);
    expect(await serverEnd(`deadline-${plain.port}`)).toHaveLength(1);
  });

  it("ends the call at its deadline when the client does not cancel it (connect does not: its handler waits for the body)", async () => {
    // A raw HTTP/2 client: it sends grpc-timeout, then neither writes, ends nor cancels.
    const run = async (port: number) => {
      const session = http2.connect(`http://127.0.0.1:${port}`);
      try {
        const stream = rawGrpcRequest(session, SYNC, { "grpc-timeout": "300m", "x-call": `raw-deadline-${port}` });
        stream.resume();
        const [trailers] = (await once(stream, "trailers")) as [http2.IncomingHttpHeaders];
        return { status: trailers["grpc-status"], ends: await serverEnd(`raw-deadline-${port}`) };
      } finally {
        session.destroy();
      }
    };
    const a = await run(lean.port);
    expect(a).toEqual({ status: String(grpc.status.DEADLINE_EXCEEDED), ends: ["aborted"] });
  });
});

describe("what the lean path leaves to connect", () => {
  it("a gRPC call with compressed messages", async () => {
    const before = lean.connectCalls;
    // grpc-js: 2 is gzip.
    const seen = await callSync(lean.port, [syncMessage("m-1")], { channel: { "grpc.default_compression_algorithm": 2 } });
    expect(seen).toMatchObject({ code: grpc.status.OK, responses: [1n] });
    expect(lean.connectCalls).toBe(before + 1);
  });

  it("a call from a browser's page (with an Origin), which CORS answers", async () => {
    const before = lean.connectCalls;
    const seen = await rawUnary(lean.port, envelope(ingestMessage("d-1")), { origin: "https://dash.example.com" });
    expect(seen.status).toBe(String(grpc.status.OK));
    expect(lean.connectCalls).toBe(before + 1);
  });

  it("the Connect protocol", async () => {
    const before = lean.connectCalls;
    const client = createClient(IngestService, createConnectTransport({ baseUrl: `http://127.0.0.1:${lean.port}`, httpVersion: "2" }));
    const response = await client.streamReadings(
      (async function* () {
        yield { readings: [{ deviceId: "d" }] };
      })(),
      { headers: { authorization: "Bearer good" } },
    );
    expect(response.accepted).toBe(1n);
    expect(lean.connectCalls).toBe(before + 1);
  });
});
