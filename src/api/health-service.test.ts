import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../../gen/grpc/health/v1/health_pb.js";
import { HealthChecker, registerHealth } from "./health-service.js";

const INGEST = "wattstream.telemetry.v1.IngestService";
const HEALTH = "grpc.health.v1.Health";

// The fake store: tests flip `ready` (or make the probe throw) and count how often it is asked.
let ready = true;
let probeFails = false;
let probes = 0;

const checker = new HealthChecker({
  services: [INGEST, HEALTH],
  isReady: async () => {
    probes++;
    if (probeFails) throw new Error("connection refused");
    return ready;
  },
  watchIntervalMs: 10,
});

const server = http2.createServer(connectNodeAdapter({ routes: (router) => registerHealth(router, checker) }));
const sessions = new Set<http2.ServerHttp2Session>();
server.on("session", (session) => sessions.add(session));
let client: Client<typeof Health>;

beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  client = createClient(Health, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
});

afterAll(async () => {
  // The client keeps its HTTP/2 connection open; close it from this side so close() can finish.
  for (const session of sessions) session.close();
  await new Promise<void>((resolve, reject) => server.close((error) => (error ? reject(error) : resolve())));
});

beforeEach(() => {
  ready = true;
  probeFails = false;
});

describe("Check", () => {
  it("answers SERVING for the server and for known services while storage is reachable", async () => {
    expect((await client.check({ service: "" })).status).toBe(ServingStatus.SERVING);
    expect((await client.check({ service: INGEST })).status).toBe(ServingStatus.SERVING);
  });

  it("answers NOT_SERVING while storage is unreachable or the probe fails", async () => {
    ready = false;
    expect((await client.check({ service: INGEST })).status).toBe(ServingStatus.NOT_SERVING);
    ready = true;
    probeFails = true;
    expect((await client.check({ service: "" })).status).toBe(ServingStatus.NOT_SERVING);
  });

  it("fails with NOT_FOUND for an unknown service", async () => {
    const error = await client.check({ service: "no.such.Service" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConnectError);
    expect((error as ConnectError).code).toBe(Code.NotFound);
  });
});

describe("List", () => {
  it("answers the server and every service", async () => {
    ready = false;
    const { statuses } = await client.list({});
    expect(Object.keys(statuses).sort()).toEqual(["", HEALTH, INGEST].sort());
    for (const reply of Object.values(statuses)) expect(reply.status).toBe(ServingStatus.NOT_SERVING);
  });
});

describe("Watch", () => {
  it("sends the current status, then only changes", async () => {
    const abort = new AbortController();
    const updates = client.watch({ service: INGEST }, { signal: abort.signal })[Symbol.asyncIterator]();
    try {
      expect((await updates.next()).value?.status).toBe(ServingStatus.SERVING);

      // Several polls with no change must send nothing, so the next message is the change itself.
      const seen = probes;
      while (probes < seen + 5) await sleep(5);
      ready = false;
      expect((await updates.next()).value?.status).toBe(ServingStatus.NOT_SERVING);
      ready = true;
      expect((await updates.next()).value?.status).toBe(ServingStatus.SERVING);
    } finally {
      abort.abort();
    }

    // Cancelling the call stops the server's polling.
    await sleep(30);
    const afterCancel = probes;
    await sleep(50);
    expect(probes).toBe(afterCancel);
  });

  it("sends SERVICE_UNKNOWN for an unknown service and keeps the call open", async () => {
    const abort = new AbortController();
    const updates = client.watch({ service: "no.such.Service" }, { signal: abort.signal })[Symbol.asyncIterator]();
    expect((await updates.next()).value?.status).toBe(ServingStatus.SERVICE_UNKNOWN);

    const next = updates.next();
    next.catch(() => {}); // settled below, after the abort
    const outcome = await Promise.race([next.then(() => "message or end"), sleep(100).then(() => "still open")]);
    expect(outcome).toBe("still open");

    abort.abort();
    await expect(next).rejects.toMatchObject({ code: Code.Canceled });
  });
});
