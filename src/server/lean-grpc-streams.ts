// A lean path for the long-lived device streams over gRPC. Firmware holds one stream open for
// hours, tens of thousands at once, so what a waiting stream costs is what limits a host. connect-es
// serves each stream through a chain of about ten async generators, which its published build
// compiles to helper-driven state machines (a generator, closures and promises per stage); measured,
// that was ~47 kB of live objects per waiting stream. This route serves the same methods, with the
// same implementation and request gate, for the one shape devices use — HTTP/2, `application/grpc`
// (binary protobuf), requests without message compression — reading envelopes off the HTTP/2
// stream and writing them onto it directly (answers compressed as connect would, for clients that
// accept it). It takes the stream before Node's compatibility layer wraps it in a request and a
// response, which a waiting stream would otherwise keep (~2.7 kB) and every message pass through.
// Every other request (Connect, gRPC-Web, JSON, compressed messages, HTTP/1.1, other methods,
// browsers' calls, which carry an Origin for CORS) goes to connect unchanged. The protocol's own
// details — content types, timeouts, status trailers — come from connect's protocol modules, not
// from here. Unary methods asked back to back (the fleet's questions) are served here too, for
// the garbage connect's unary path leaves (see unaryMethod).
import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type DescMethodBiDiStreaming,
  type DescMethodClientStreaming,
  type DescMethodUnary,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  type ContextValues,
  type HandlerContext,
} from "@connectrpc/connect";
import { compressionNegotiate, type Compression } from "@connectrpc/connect/protocol";
import { parseContentType, parseTimeout, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import type http2 from "node:http2";

/** A client-streaming method's implementation: every request in, one response out. */
type ClientStreamingImpl<R, O extends DescMessage> = (requests: AsyncIterable<R>, context: HandlerContext) => Promise<MessageShape<O>>;

/** A bidirectional method's implementation: responses while requests still arrive. */
type BidiStreamingImpl<R, O extends DescMessage> = (requests: AsyncIterable<R>, context: HandlerContext) => AsyncIterable<MessageShape<O>>;

/**
 * Responses that can be pushed to the writer as they come rather than pulled with `for await`. A
 * device's SyncReadings stream waits for its next acknowledgement for most of its life, and each
 * pull kept a promise and its reactions from one acknowledgement to the next: seconds, so they
 * were promoted, and a full collection found them dead (docs/benchmarks.md). Connect's own path
 * still pulls.
 */
export interface PushedResponses<M> {
  /** Writes each response with `write`, in order, one at a time; settles once every one is written, or with the first failure. */
  writeEach(write: (message: M) => Promise<void>): Promise<void>;
}

function pushesResponses<M>(responses: AsyncIterable<M>): responses is AsyncIterable<M> & PushedResponses<M> {
  return typeof (responses as Partial<PushedResponses<M>>).writeEach === "function";
}

/** A unary method's implementation: one request in, one response out. */
type UnaryImpl<R, O extends DescMessage> = (request: R, context: HandlerContext) => Promise<MessageInitShape<O>> | MessageInitShape<O>;

/** Turns a request message's bytes into what the implementation takes; throws if they are not one. */
type RequestDecoder<R> = (bytes: Uint8Array) => R;

export type LeanStreamMethod =
  | {
      readonly kind: "client";
      readonly method: DescMethodClientStreaming;
      readonly impl: ClientStreamingImpl<unknown, DescMessage>;
      readonly decode: RequestDecoder<unknown>;
    }
  | {
      readonly kind: "bidi";
      readonly method: DescMethodBiDiStreaming;
      readonly impl: BidiStreamingImpl<unknown, DescMessage>;
      readonly decode: RequestDecoder<unknown>;
    }
  | {
      readonly kind: "unary";
      readonly method: DescMethodUnary;
      readonly impl: UnaryImpl<unknown, DescMessage>;
      readonly decode: RequestDecoder<unknown>;
    };

/**
 * A client-streaming method. Requests are decoded as the method's input message, or by `decode`
 * when the implementation takes them in another form (the ingest methods take readings scanned for
 * the few fields the main thread needs, and leave the full decode to the worker).
 */
export function clientStreamingMethod<I extends DescMessage, O extends DescMessage, R = MessageShape<I>>(
  method: DescMethodClientStreaming<I, O>,
  impl: ClientStreamingImpl<R, O>,
  decode: RequestDecoder<R> = (bytes) => fromBinary(method.input, bytes) as R,
): LeanStreamMethod {
  return { kind: "client", method, impl, decode } as unknown as LeanStreamMethod;
}

/** A bidirectional method; requests decoded as for clientStreamingMethod. */
export function bidiStreamingMethod<I extends DescMessage, O extends DescMessage, R = MessageShape<I>>(
  method: DescMethodBiDiStreaming<I, O>,
  impl: BidiStreamingImpl<R, O>,
  decode: RequestDecoder<R> = (bytes) => fromBinary(method.input, bytes) as R,
): LeanStreamMethod {
  return { kind: "bidi", method, impl, decode } as unknown as LeanStreamMethod;
}

/**
 * A unary method. Served here as well because connect's unary path keeps ~30 kB of each call alive
 * through a young-generation collection (freed only by the next full one): under a steady stream of
 * calls the service then pauses ~20 ms every second or so, which is the tail of every fast call
 * (docs/benchmarks.md). This path keeps a tenth of that. The request is decoded as for
 * clientStreamingMethod.
 */
export function unaryMethod<I extends DescMessage, O extends DescMessage, R = MessageShape<I>>(
  method: DescMethodUnary<I, O>,
  impl: UnaryImpl<R, O>,
  decode: RequestDecoder<R> = (bytes) => fromBinary(method.input, bytes) as R,
): LeanStreamMethod {
  return { kind: "unary", method, impl, decode } as unknown as LeanStreamMethod;
}

export interface LeanGrpcStreamsOptions {
  readonly methods: readonly LeanStreamMethod[];
  /** The check connect runs before a body is read (the same function is given to connect). */
  readonly requestGate: (context: HandlerContext) => void | Promise<void>;
  readonly readMaxBytes: number;
  /** Largest response message, as connect's writeMaxBytes (checked before compression). */
  readonly writeMaxBytes: number;
  readonly maxTimeoutMs: number;
  /** Response compressions offered to clients that accept them; connect-node's default (gzip, brotli) when unset. */
  readonly acceptCompression?: readonly Compression[];
  /** Response messages this large or larger are compressed (connect's default 1,024 bytes when unset). */
  readonly compressMinBytes?: number;
  readonly contextValues?: ((stream: http2.ServerHttp2Stream) => ContextValues) | undefined;
}

/** Answers whether it took the HTTP/2 stream; a stream it does not take is for connect. */
export type LeanRoute = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => boolean;

const FLAG_COMPRESSED = 0b0000_0001;
/** connect's defaults, so both paths answer alike. */
const DEFAULT_ACCEPT_COMPRESSION: readonly Compression[] = [compressionGzip, compressionBrotli];
const DEFAULT_COMPRESS_MIN_BYTES = 1024;
const ENVELOPE_HEADER_BYTES = 5;
/** Decoded requests held before the stream is paused (HTTP/2 flow control then holds the client). */
const MAX_QUEUED_REQUESTS = 16;

export function createLeanGrpcStreams(options: LeanGrpcStreamsOptions): LeanRoute {
  const byPath = new Map(options.methods.map((m) => [`/${m.method.parent.typeName}/${m.method.name}`, m]));
  const settings: ServeSettings = {
    ...options,
    acceptCompression: [...(options.acceptCompression ?? DEFAULT_ACCEPT_COMPRESSION)],
    compressMinBytes: options.compressMinBytes ?? DEFAULT_COMPRESS_MIN_BYTES,
  };
  return (stream, headers) => {
    if (headers[":method"] !== "POST" || headers.origin !== undefined) return false;
    const route = byPath.get(headers[":path"] ?? "");
    if (route === undefined) return false;
    if (parseContentType(headers["content-type"] ?? null)?.binary !== true) return false;
    const encoding = headers["grpc-encoding"];
    if (encoding !== undefined && encoding !== "identity") return false;
    // Without the compatibility layer nothing else listens for the stream's errors (a client's
    // reset arrives as one), and an error nobody listens for ends the process.
    stream.on("error", ignoreStreamError);
    void serve(route, stream, headers, settings);
    return true;
  };
}

/** A stream's error ends its call through the stream's "close" (and the reader's own listener). */
function ignoreStreamError(): void {}

/** The options with connect's defaults filled in, once for every call. */
type ServeSettings = LeanGrpcStreamsOptions & { readonly acceptCompression: Compression[]; readonly compressMinBytes: number };

async function serve(route: LeanStreamMethod, stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, options: ServeSettings) {
  const requestHeader = new Headers();
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith(":") || value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) requestHeader.append(name, v);
    else requestHeader.set(name, value);
  }
  const timeout = parseTimeout(requestHeader.get("grpc-timeout"), options.maxTimeoutMs);
  const context = new CallContext({
    service: route.method.parent,
    method: route.method,
    url: `${isEncrypted(stream) ? "https" : "http"}://${headers[":authority"] ?? headers.host}${headers[":path"]}`,
    timeoutMs: timeout.timeoutMs,
    requestHeader,
    values: options.contextValues?.(stream) ?? createContextValues(),
  });
  const onClose = () => context.cancel(new ConnectError("the client cancelled the call or went away", Code.Canceled));
  stream.once("close", onClose);
  // Requests that name a grpc-encoding go to connect, so only the response's is negotiated here.
  const compression = compressionNegotiate(options.acceptCompression, null, requestHeader.get("grpc-accept-encoding"), "Grpc-Accept-Encoding").response;
  if (compression !== null) context.responseHeader.set("grpc-encoding", compression.name);
  const response = new ResponseWriter(stream, context, { compression, compressMinBytes: options.compressMinBytes, writeMaxBytes: options.writeMaxBytes });
  try {
    // As connect: the request gate first, so a refused call is refused whatever else is wrong with it.
    await options.requestGate(context);
    if (timeout.error !== undefined) throw timeout.error;
    const requests = new RequestReader(stream, route.decode, options.readMaxBytes, context.signal);
    if (route.kind === "bidi") {
      const responses = route.impl(requests, context);
      const output = route.method.output;
      if (pushesResponses(responses)) await responses.writeEach(async (message) => response.message(toBinary(output, message)));
      else for await (const message of responses) await response.message(toBinary(output, message));
    } else if (route.kind === "unary") {
      const message = await route.impl(await onlyRequest(requests), context);
      // Implementations may answer a message's init shape, as connect lets them.
      await response.message(toBinary(route.method.output, create(route.method.output, message)));
    } else {
      const message = await route.impl(requests, context);
      await response.message(toBinary(route.method.output, message));
    }
    response.finish(undefined);
  } catch (error) {
    response.finish(error instanceof ConnectError ? error : new ConnectError("internal error", Code.Internal, undefined, undefined, error));
  } finally {
    stream.off("close", onClose);
    context.finish();
  }
}

function isEncrypted(stream: http2.ServerHttp2Stream): boolean {
  const socket = stream.session?.socket;
  return socket !== undefined && "encrypted" in socket && socket.encrypted === true;
}

/** What a call's signal says once its answer is written. One error for every call: ending a call must not cost an error and its stack trace each time. */
const CALL_FINISHED = new ConnectError("the call has finished", Code.Canceled);

/**
 * A call's HandlerContext, as connect's createHandlerContext makes it but with one AbortController
 * and no Error made when the call ends: at thousands of unary calls a second, connect's three linked
 * controllers, its deadline controller and the AbortError and ConnectError made as each call ended
 * were a tenth of the main thread's work (docs/benchmarks.md). Its signal is aborted when the
 * deadline passes (DEADLINE_EXCEEDED, as connect), when the client goes away (cancel), and once
 * the answer is written (finish).
 */
class CallContext implements HandlerContext {
  readonly protocolName = "grpc";
  readonly requestMethod = "POST";
  readonly service: HandlerContext["service"];
  readonly method: HandlerContext["method"];
  readonly url: string;
  readonly requestHeader: Headers;
  readonly responseHeader = new Headers({ "content-type": "application/grpc+proto" });
  // Made when first asked for, at the latest as the call ends: a device's stream is open for
  // hours without one, and a Headers is ~0.5 kB of heap per open stream.
  private trailer: Headers | undefined;
  get responseTrailer(): Headers {
    return (this.trailer ??= new Headers());
  }
  readonly values: ContextValues;
  readonly signal: AbortSignal;
  private readonly controller = new AbortController();
  private readonly deadlineAtMs: number | undefined;
  private readonly deadline: NodeJS.Timeout | undefined;

  constructor(init: Pick<HandlerContext, "service" | "method" | "url" | "requestHeader" | "values"> & { readonly timeoutMs: number | undefined }) {
    this.service = init.service;
    this.method = init.method;
    this.url = init.url;
    this.requestHeader = init.requestHeader;
    this.values = init.values;
    this.signal = this.controller.signal;
    if (init.timeoutMs !== undefined) {
      this.deadlineAtMs = Date.now() + init.timeoutMs;
      const expire = () => this.cancel(new ConnectError("the operation timed out", Code.DeadlineExceeded));
      if (init.timeoutMs <= 0) expire();
      else this.deadline = setTimeout(expire, init.timeoutMs);
    }
  }

  readonly timeoutMs = (): number | undefined => (this.deadlineAtMs === undefined ? undefined : this.deadlineAtMs - Date.now());

  cancel(reason: ConnectError): void {
    clearTimeout(this.deadline);
    this.controller.abort(reason);
  }

  finish(): void {
    this.cancel(CALL_FINISHED);
  }
}

/** A unary call's one request; as connect, a call with none or more is a protocol error. */
async function onlyRequest<R>(requests: AsyncIterable<R>): Promise<R> {
  const iterator = requests[Symbol.asyncIterator]();
  const first = await iterator.next();
  if (first.done === true) throw new ConnectError("protocol error: missing input message for unary method", Code.Unimplemented);
  const second = await iterator.next();
  if (second.done !== true) throw new ConnectError("protocol error: received extra input message for unary method", Code.Unimplemented);
  return first.value;
}

/** The response side: headers with the first message (or at the end), then messages, then the status. */
class ResponseWriter {
  constructor(
    private readonly stream: http2.ServerHttp2Stream,
    private readonly context: HandlerContext,
    private readonly limits: { readonly compression: Compression | null; readonly compressMinBytes: number; readonly writeMaxBytes: number },
  ) {}

  async message(message: Uint8Array): Promise<void> {
    if (message.byteLength > this.limits.writeMaxBytes) {
      throw new ConnectError(`message size ${message.byteLength} is larger than configured writeMaxBytes ${this.limits.writeMaxBytes}`, Code.ResourceExhausted);
    }
    const { compression, compressMinBytes } = this.limits;
    const compressed = compression !== null && message.byteLength >= compressMinBytes;
    const bytes = compressed ? await compression.compress(message) : message;
    if (this.stream.closed || this.stream.destroyed) throw this.context.signal.reason ?? new ConnectError("the stream is closed", Code.Canceled);
    this.writeHead();
    const envelope = Buffer.allocUnsafe(ENVELOPE_HEADER_BYTES + bytes.byteLength);
    envelope[0] = compressed ? FLAG_COMPRESSED : 0;
    envelope.writeUInt32BE(bytes.byteLength, 1);
    envelope.set(bytes, ENVELOPE_HEADER_BYTES);
    if (!this.stream.write(envelope)) await drained(this.stream);
  }

  finish(error: ConnectError | undefined): void {
    const stream = this.stream;
    if (stream.closed || stream.destroyed || stream.writableEnded) return;
    this.writeHead();
    setTrailerStatus(this.context.responseTrailer, error);
    const trailers = plain(this.context.responseTrailer);
    // The status goes in trailers once the body is out (asked for with waitForTrailers).
    stream.once("wantTrailers", () => stream.sendTrailers(trailers));
    stream.end();
  }

  private writeHead(): void {
    if (!this.stream.headersSent) this.stream.respond(plain(this.context.responseHeader, { ":status": 200 }), { waitForTrailers: true });
  }
}

function plain(headers: Headers, fields: Record<string, string | number> = {}): Record<string, string | number> {
  headers.forEach((value, name) => (fields[name] = value));
  return fields;
}

function drained(stream: http2.ServerHttp2Stream): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.once("drain", done);
    stream.once("close", done);
  });
}

/**
 * The request side: gRPC envelopes (a flags byte, a 4-byte length, the message) split out of the
 * body's chunks and decoded as the handler asks for them; the body is paused while more than a few
 * decoded messages wait, so a client faster than storage is held back by HTTP/2 flow control.
 */
class RequestReader<R> implements AsyncIterable<R>, AsyncIterator<R> {
  private readonly queue: R[] = [];
  private chunks: Buffer[] = [];
  private buffered = 0;
  private ended = false;
  private failure: ConnectError | undefined;
  // A read waiting for the next message: two fields rather than an object per wait, which would
  // live until that message (see readNextInto).
  private waitingArrived: ((result: IteratorResult<R>) => void) | undefined;
  private waitingFailed: ((error: unknown) => void) | undefined;

  constructor(
    private readonly body: http2.ServerHttp2Stream,
    private readonly decode: RequestDecoder<R>,
    private readonly readMaxBytes: number,
    signal: AbortSignal,
  ) {
    body.on("data", (chunk: Buffer) => this.received(chunk));
    body.once("end", () => {
      if (this.buffered > 0) this.fail(new ConnectError(`the body ended inside a message (${this.buffered} bytes left over)`, Code.InvalidArgument));
      this.ended = true;
      this.settle();
    });
    body.once("error", (error: Error) => this.fail(new ConnectError(`reading the request failed: ${error.message}`, Code.Canceled)));
    // A call cancelled by the client (RST_STREAM, connection lost) or past its deadline ends the
    // body without an "end": a handler waiting for the next message must hear of it.
    const onAbort = () => this.fail(ConnectError.from(signal.reason, Code.Canceled));
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  }

  [Symbol.asyncIterator](): AsyncIterator<R> {
    return this;
  }

  next(): Promise<IteratorResult<R>> {
    return new Promise((resolve, reject) => this.readNextInto(resolve, reject));
  }

  /**
   * next() without a promise (the read loop's CallbackReads, src/api/read-loop-events.ts): calls
   * one of the two once, at once if a message (the end, a failure) is there. A stream waits for
   * its next message for most of its life, and a promise per wait lived that long.
   */
  readNextInto(arrived: (result: IteratorResult<R>) => void, failed: (error: unknown) => void): void {
    if (this.deliver(arrived, failed)) return;
    this.waitingArrived = arrived;
    this.waitingFailed = failed;
  }

  return(): Promise<IteratorResult<R>> {
    // The handler stopped reading (it failed or finished): drop what is left, stop the body.
    this.ended = true;
    this.queue.length = 0;
    this.body.removeAllListeners("data");
    this.body.resume();
    return Promise.resolve({ done: true, value: undefined });
  }

  private received(chunk: Buffer): void {
    if (this.failure !== undefined || this.ended) return;
    this.chunks.push(chunk);
    this.buffered += chunk.byteLength;
    while (this.buffered >= ENVELOPE_HEADER_BYTES) {
      const head = this.peek(ENVELOPE_HEADER_BYTES);
      const length = head.readUInt32BE(1);
      if (length > this.readMaxBytes) {
        this.fail(new ConnectError(`message size ${length} is larger than configured readMaxBytes ${this.readMaxBytes}`, Code.ResourceExhausted));
        return;
      }
      if (this.buffered < ENVELOPE_HEADER_BYTES + length) break;
      const envelope = this.peek(ENVELOPE_HEADER_BYTES + length);
      this.consume(ENVELOPE_HEADER_BYTES + length);
      if ((envelope[0]! & FLAG_COMPRESSED) !== 0) {
        // Only requests without grpc-encoding come here, so a compressed message cannot be read.
        this.fail(new ConnectError("received compressed envelope, but do not know how to decompress", Code.Internal));
        return;
      }
      try {
        this.queue.push(this.decode(envelope.subarray(ENVELOPE_HEADER_BYTES)));
      } catch (error) {
        // The same error connect gives an undecodable message, so handlers treat both alike.
        this.fail(new ConnectError(`parse binary: ${error instanceof Error ? error.message : String(error)}`, Code.Internal));
        return;
      }
    }
    if (this.queue.length >= MAX_QUEUED_REQUESTS) this.body.pause();
    this.settle();
  }

  /** The first n buffered bytes, as one buffer (joining chunks only when a message spans them). */
  private peek(n: number): Buffer {
    if (this.chunks[0]!.byteLength < n) this.chunks = [Buffer.concat(this.chunks, this.buffered)];
    return this.chunks[0]!.subarray(0, n);
  }

  private consume(n: number): void {
    const first = this.chunks[0]!;
    if (first.byteLength === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
  }

  private fail(error: ConnectError): void {
    this.failure ??= error;
    this.chunks = [];
    this.buffered = 0;
    this.settle();
  }

  /** Gives the next message, the end or the failure to one of the callbacks, if there is one yet; answers whether it did. */
  private deliver(arrived: (result: IteratorResult<R>) => void, failed: (error: unknown) => void): boolean {
    if (this.queue.length > 0) {
      const value = this.queue.shift()!;
      if (this.queue.length < MAX_QUEUED_REQUESTS && this.body.isPaused()) this.body.resume();
      arrived({ done: false, value });
    } else if (this.failure !== undefined) failed(this.failure);
    else if (this.ended) arrived({ done: true, value: undefined });
    else return false;
    return true;
  }

  private settle(): void {
    const arrived = this.waitingArrived;
    const failed = this.waitingFailed;
    if (arrived === undefined || failed === undefined) return;
    // Cleared first: a callback may ask for the next message at once.
    this.waitingArrived = this.waitingFailed = undefined;
    if (!this.deliver(arrived, failed)) {
      this.waitingArrived = arrived;
      this.waitingFailed = failed;
    }
  }
}
