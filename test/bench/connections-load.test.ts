// The SyncReadings load (the `connections` scenario, and `fleet` on streams) must count, over its
// hold, what the server acknowledged and only that: `bench/run.ts` reports the hold's figures as
// the fleet's, and its floor against the instant server.
import { execFile } from "node:child_process";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startInstantIngestServer, type InstantIngestServer } from "../../bench/instant-ingest-server.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const execFileAsync = promisify(execFile);
let instant: InstantIngestServer;

beforeAll(async () => {
  instant = await startInstantIngestServer();
});

afterAll(() => instant?.close());

interface Hold {
  seconds: number;
  sent: number;
  acknowledged: number;
  unacknowledged: number;
  ack_latency_ms: { p50: number; p99: number; max: number };
  cpu_seconds: number;
}

/** Runs the load as its own process; not spawnSync: the servers answer from this one. */
async function syncLoad(target: string): Promise<{ hold: Hold; failures: Record<string, number>; ramp_stopped_early: string | null }> {
  // 200 streams over 2 connections, a reading each every 0.5 s at a random phase, held 2 s: ~800
  // readings in the hold.
  const { stdout } = await execFileAsync(
    process.execPath,
    [
      ...["--import", "tsx", "bench/connections-load.ts", "--target", target, "--streams", "200", "--interval", "0.5"],
      ...["--hold", "2", "--step", "100", "--step-timeout", "1", "--per-connection", "100", "--phase", "random"],
    ],
    { cwd: repoRoot, timeout: 30_000 },
  );
  return JSON.parse(stdout.trim().split("\n").at(-1)!);
}

/** A gRPC server that opens every stream and acknowledges nothing, ending a stream when its client does. */
async function silentServer(): Promise<{ target: string; close(): Promise<void> }> {
  const server = http2.createServer();
  server.on("stream", (stream) => {
    stream.respond({ ":status": 200, "content-type": "application/grpc+proto" }, { waitForTrailers: true });
    stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.on("data", () => {});
    stream.on("end", () => stream.end());
    stream.on("error", () => {});
  });
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    target: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise((resolve) => {
        for (const session of sessions) session.destroy();
        server.close(() => resolve());
      }),
  };
}

describe("bench/connections-load.ts over its hold", () => {
  it("counts every reading the server acknowledged, with its latency", async () => {
    const { hold, failures } = await syncLoad(instant.target);
    expect(failures).toEqual({});
    expect(hold.seconds).toBeGreaterThan(1.9); // a 2 s timer, read on another clock
    expect(hold.sent).toBeGreaterThan(600);
    expect(hold).toMatchObject({ acknowledged: hold.sent, unacknowledged: 0 });
    expect(hold.ack_latency_ms.max).toBeGreaterThan(0);
    expect(hold.cpu_seconds).toBeGreaterThan(0);
  });

  it("counts readings written in the hold and never acknowledged as unacknowledged", async () => {
    const silent = await silentServer();
    try {
      const { hold, ramp_stopped_early } = await syncLoad(silent.target);
      // The first step's streams got no acknowledgement, so the ramp stopped there; they stay open
      // and keep writing through the hold.
      expect(ramp_stopped_early).toMatch(/not acknowledged/);
      expect(hold.sent).toBeGreaterThan(200);
      expect(hold).toMatchObject({ acknowledged: 0, unacknowledged: hold.sent });
    } finally {
      await silent.close();
    }
  });
});
