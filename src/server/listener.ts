// One port for every client: HTTP/2 with prior knowledge (gRPC from grpc-js, buf curl, grpcurl,
// connect-node) and HTTP/1.1 (browsers, curl, Connect JSON) side by side. Over TLS, ALPN picks the
// protocol; in cleartext, the first bytes do: an HTTP/2 connection opens with a fixed preface.
import { once } from "node:events";
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type tls from "node:tls";
import type { Duplex } from "node:stream";
import type { connectNodeAdapter } from "@connectrpc/connect-node";
import type { ServerLimits } from "../config.js";
import type { TlsMaterial } from "./tls-material.js";

/** A request handler both HTTP servers accept (connect-node's adapter is one). */
export type RequestHandler = ReturnType<typeof connectNodeAdapter>;

/** Takes an HTTP/2 stream itself (answering true) or leaves it to the request handler. */
export type StreamRoute = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => boolean;

export interface ListenerOptions {
  readonly limits: ServerLimits;
  /** With a client CA, clients are asked for a certificate, which the request gate checks. */
  readonly tls?: TlsMaterial | undefined;
  /** Offered every HTTP/2 stream before the handler gets it as a request (the lean gRPC path). */
  readonly streamRoute?: StreamRoute | undefined;
}

/** How often (10 ms apart) a finished response is checked for its trailers being out. */
const RESET_CHECKS = 500;

/**
 * Resets a stream whose response is complete but whose client has not finished sending. The
 * body's end comes before the trailers (which carry the gRPC status), so wait until the stream is
 * closed locally; a client not reading (trailers held by flow control) is left alone.
 */
function resetOnceAnswered(stream: http2.ServerHttp2Stream, checksLeft: number): void {
  if (stream.closed || stream.destroyed || stream.state.remoteClose !== 0) return;
  if (stream.state.localClose !== 0) {
    stream.close(http2.constants.NGHTTP2_NO_ERROR);
    return;
  }
  if (checksLeft > 0) setTimeout(() => resetOnceAnswered(stream, checksLeft - 1), 10).unref();
}

/**
 * Puts `route` in front of Node's HTTP/2 compatibility layer: the server's one "stream" listener,
 * added with the request handler, makes a request and a response for each stream and emits
 * "request"; it now runs only for the streams `route` declines.
 */
function offerStreamsFirst(server: http2.Http2Server | http2.Http2SecureServer, route: StreamRoute): void {
  const listeners = server.listeners("stream");
  if (listeners.length !== 1) throw new Error(`expected the HTTP/2 server's compatibility layer as its one stream listener, found ${listeners.length}`);
  const toRequest = listeners[0] as (...args: unknown[]) => void;
  server.removeListener("stream", toRequest);
  server.on("stream", function (this: unknown, stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) {
    if (!route(stream, headers)) toRequest.call(this, stream, headers, ...rest);
  });
}

/** The start of every HTTP/2 connection (RFC 9113 §3.4); no HTTP/1 request starts with "PRI". */
const HTTP2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

export class Listener {
  private readonly h2: http2.Http2Server | http2.Http2SecureServer;
  private readonly h1: http.Server | undefined;
  private readonly front: net.Server;
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private readonly sockets = new Set<Duplex>();

  constructor(handler: RequestHandler, options: ListenerOptions) {
    const { limits } = options;
    const settings: http2.Settings = { maxConcurrentStreams: limits.maxConcurrentStreams };
    if (options.tls) {
      this.h2 = http2.createSecureServer(
        {
          cert: options.tls.cert,
          key: options.tls.key,
          // Asked for, not required: a device may still present a token instead, so the TLS
          // handshake accepts any certificate and the request gate decides.
          ...(options.tls.clientCa !== undefined && {
            ca: options.tls.clientCa,
            requestCert: true,
            rejectUnauthorized: false,
          }),
          allowHTTP1: true,
          settings,
        },
        (req: http2.Http2ServerRequest | http.IncomingMessage, res: http2.Http2ServerResponse | http.ServerResponse) => {
          // HTTP/1.1 over TLS: a call is not cut by the connection's idle timeout (see below).
          if (req.httpVersionMajor === 1) req.socket.setTimeout(0);
          (handler as (req: unknown, res: unknown) => void)(req, res);
        },
      );
      // HTTP/1.1 over TLS is served by Node's HTTP/1 code on this server, which reads the HTTP/1
      // server's timeouts from it: idle after a response for keepAliveTimeout; idle before its
      // first request (or sending none at all) for the idle timeout. HTTP/2 sessions have their own.
      Object.assign(this.h2, { keepAliveTimeout: Math.min(limits.idleTimeoutMs, 65_000) });
      this.h2.on("secureConnection", (socket: tls.TLSSocket) => {
        if (socket.alpnProtocol !== "h2") socket.setTimeout(limits.idleTimeoutMs, () => socket.destroy());
      });
      this.front = this.h2;
      this.h1 = undefined;
    } else {
      // The handler accepts both servers' request and response types; each server's signature
      // names only its own.
      this.h2 = http2.createServer({ settings }, handler as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void);
      this.h1 = http.createServer((req, res) => {
        // The idle timeout is for connections, not calls: Node counts a socket's inactivity
        // while a response is still being made, so a watch with nothing to send yet, or a call
        // waiting for storage, would be cut after IDLE_TIMEOUT — on the connection's first
        // request only, as Node clears it for later ones. A call is bounded by its own limits
        // (deadline, stream timeouts); once answered, keepAliveTimeout closes the idle connection.
        req.socket.setTimeout(0);
        (handler as http.RequestListener)(req, res);
      });
      this.h1.keepAliveTimeout = Math.min(limits.idleTimeoutMs, 65_000);
      this.h1.timeout = limits.idleTimeoutMs;
      this.front = net.createServer((socket) => this.route(socket, limits.idleTimeoutMs));
    }
    if (options.streamRoute !== undefined) offerStreamsFirst(this.h2, options.streamRoute);
    this.h2.on("session", (session: http2.ServerHttp2Session) => {
      this.sessions.add(session);
      session.once("close", () => this.sessions.delete(session));
      // An idle connection (no frames either way) is closed gracefully.
      session.setTimeout(limits.idleTimeoutMs, () => session.close());
    });
    // A call that ended (its response complete) while the client is still sending — a stream
    // ended for idling or trickling, a refused flood — is reset with NO_ERROR (RFC 9113 §8.1), so
    // the client stops sending and the stream's resources go now, not when the client gives up.
    this.h2.on("stream", (stream: http2.ServerHttp2Stream) => {
      stream.once("finish", () => resetOnceAnswered(stream, RESET_CHECKS));
    });
    this.front.on("connection", (socket: net.Socket) => {
      this.sockets.add(socket);
      socket.once("close", () => this.sockets.delete(socket));
    });
  }

  async listen(port: number, host: string): Promise<number> {
    this.front.listen(port, host);
    await once(this.front, "listening");
    return (this.front.address() as net.AddressInfo).port;
  }

  /**
   * Stops accepting connections and asks open ones to finish: HTTP/2 sessions get GOAWAY (their
   * in-flight streams run to completion), idle HTTP/1 connections close. Resolves when all are
   * gone or graceMs has passed; then the rest are destroyed.
   */
  async close(graceMs: number): Promise<void> {
    const closed = new Promise<void>((resolve) => this.front.close(() => resolve()));
    for (const session of this.sessions) session.close();
    this.h1?.closeIdleConnections();
    const deadline = setTimeout(() => {
      for (const session of this.sessions) session.destroy();
      for (const socket of this.sockets) socket.destroy();
    }, graceMs);
    deadline.unref();
    // HTTP/1 keep-alive connections that become idle later are closed as they go idle.
    const idleSweep = setInterval(() => this.h1?.closeIdleConnections(), 100);
    idleSweep.unref();
    try {
      await closed;
    } finally {
      clearTimeout(deadline);
      clearInterval(idleSweep);
    }
  }

  /**
   * Hands a cleartext connection to the HTTP/2 or HTTP/1 server by its first bytes. One that
   * sends none (or a part of the HTTP/2 preface) within the idle timeout is closed: neither
   * server, whose idle timers would, has it yet.
   */
  private route(socket: net.Socket, idleTimeoutMs: number): void {
    socket.setTimeout(idleTimeoutMs, () => socket.destroy());
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const compared = Math.min(head.length, HTTP2_PREFACE.length);
      const isHttp2 = head.subarray(0, compared).equals(HTTP2_PREFACE.subarray(0, compared));
      if (isHttp2 && head.length < HTTP2_PREFACE.length) return; // wait for the whole preface
      socket.off("data", onData);
      socket.setTimeout(0);
      socket.pause();
      socket.unshift(head);
      if (isHttp2) {
        // The HTTP/2 session reads what is buffered on the socket itself (on the next tick);
        // resuming here would let those bytes flow past it.
        this.h2.emit("connection", socket);
      } else {
        this.h1!.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("data", onData);
    socket.on("error", () => socket.destroy());
  }
}
