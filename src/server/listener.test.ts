// The one-port listener: HTTP/2 prior knowledge and HTTP/1.1 on the same port, with real clients.
import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { selfSignedCertificate } from "../../test/support/self-signed.js";
import { Listener } from "./listener.js";

const limits = {
  maxMessageBytes: 1024 * 1024,
  maxConcurrentStreams: 100,
  idleTimeoutMs: 60_000,
  maxTimeoutMs: 60_000,
  shutdownGraceMs: 1_000,
};

describe("Listener", () => {
  let listener: Listener;
  let port: number;
  beforeAll(async () => {
    listener = new Listener((req, res) => {
      res.end(`HTTP/${req.httpVersion} ${req.method} ${req.url}`);
    }, { limits });
    port = await listener.listen(0, "127.0.0.1");
  });
  afterAll(async () => {
    await listener.close(1_000);
  });

  it("serves HTTP/1.1 on the port", async () => {
    const response = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(await response.text()).toBe("HTTP/1.1 GET /healthz");
  });

  it("serves HTTP/2 with prior knowledge on the same port", async () => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    try {
      const body = await new Promise<string>((resolve, reject) => {
        const stream = session.request({ ":path": "/x", ":method": "POST" });
        let text = "";
        stream.setEncoding("utf8");
        stream.on("data", (chunk: string) => (text += chunk));
        stream.on("end", () => resolve(text));
        stream.on("error", reject);
        stream.end("payload");
      });
      expect(body).toBe("HTTP/2.0 POST /x");
    } finally {
      session.close();
    }
  });
});

/** The idle timeout of the suites below: a response quiet for a second outlasts it. */
const SHORT_IDLE_MS = 300;

/** Answers /slow with a response quiet for longer than SHORT_IDLE_MS, as a quiet watch is; the rest at once. */
const slowHandler: ConstructorParameters<typeof Listener>[0] = (req, res) => {
  if (req.url !== "/slow") {
    res.end("ok");
    return;
  }
  res.write("first;");
  setTimeout(() => res.end("last"), 1_000);
};

/** "closed" once the socket closes within ms, else "still open". */
const closedWithin = (socket: net.Socket, ms: number) =>
  Promise.race([
    new Promise((resolve) => (socket.destroyed ? resolve("closed") : socket.once("close", () => resolve("closed")))),
    new Promise((resolve) => setTimeout(resolve, ms, "still open")),
  ]);

/**
 * GETs /slow over HTTP/1.1 on a keep-alive connection (http or https), then checks that the
 * listener closes the connection once it is idle: the response must not be cut, the connection
 * not kept for ever.
 */
async function quietResponseThenIdle(get: typeof http.get, options: http.RequestOptions): Promise<void> {
  const { body, socket } = await new Promise<{ body: string; socket: net.Socket }>((resolve, reject) => {
    const request = get({ ...options, path: "/slow" }, (response) => {
      let text = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => (text += chunk));
      response.on("end", () => resolve({ body: text, socket: request.socket! }));
      response.on("error", reject);
    });
    request.on("error", reject);
  });
  expect(body).toBe("first;last");
  expect(await closedWithin(socket, 3_000)).toBe("closed");
}

describe("Listener with a short idle timeout", () => {
  let listener: Listener;
  let port: number;
  beforeAll(async () => {
    listener = new Listener(slowHandler, { limits: { ...limits, idleTimeoutMs: SHORT_IDLE_MS } });
    port = await listener.listen(0, "127.0.0.1");
  });
  afterAll(async () => {
    await listener.close(1_000);
  });

  /** How long the listener keeps a raw connection that sends `first` (if anything) and then nothing. */
  async function heldFor(first?: string): Promise<number> {
    const socket = net.connect(port, "127.0.0.1");
    await new Promise((resolve) => socket.once("connect", resolve));
    const opened = Date.now();
    if (first !== undefined) socket.write(first);
    socket.resume();
    const closed = new Promise<number>((resolve) => socket.once("close", () => resolve(Date.now() - opened)));
    const abandoned = new Promise<number>((resolve) => setTimeout(resolve, 3_000, Infinity));
    const held = await Promise.race([closed, abandoned]);
    socket.destroy();
    return held;
  }

  it("closes a connection that never sends a request, or only part of the HTTP/2 preface", async () => {
    expect(await heldFor()).toBeLessThan(2_000);
    expect(await heldFor("PRI * HTTP/2.0\r\n")).toBeLessThan(2_000);
  });

  it("keeps an HTTP/1.1 response that is quiet for longer than the idle timeout, then closes the idle connection", async () => {
    const agent = new http.Agent({ keepAlive: true });
    try {
      await quietResponseThenIdle(http.get, { host: "127.0.0.1", port, agent });
    } finally {
      agent.destroy();
    }
  });
});

describe("Listener over TLS with a short idle timeout", () => {
  let listener: Listener;
  let port: number;
  beforeAll(async () => {
    const certificate = selfSignedCertificate();
    const tlsMaterial = { cert: readFileSync(certificate.certFile), key: readFileSync(certificate.keyFile) };
    listener = new Listener(slowHandler, { limits: { ...limits, idleTimeoutMs: SHORT_IDLE_MS }, tls: tlsMaterial });
    port = await listener.listen(0, "127.0.0.1");
  });
  afterAll(async () => {
    await listener.close(1_000);
  });

  it("closes an HTTP/1.1 connection that sends no request", async () => {
    const socket = tls.connect({ port, host: "127.0.0.1", rejectUnauthorized: false, ALPNProtocols: ["http/1.1"] });
    await new Promise((resolve) => socket.once("secureConnect", resolve));
    socket.resume();
    expect(await closedWithin(socket, 2_000)).toBe("closed");
    socket.destroy();
  });

  it("keeps an HTTP/1.1 response that is quiet for longer than the idle timeout, then closes the idle connection", async () => {
    const agent = new https.Agent({ keepAlive: true, rejectUnauthorized: false });
    try {
      await quietResponseThenIdle(https.get as typeof http.get, { host: "127.0.0.1", port, agent });
    } finally {
      agent.destroy();
    }
  });
});
