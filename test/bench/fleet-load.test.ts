// The fleet's load generators must count what the server acknowledged, and only that:
// `bench/run.ts` reports their figures, and their floor against the instant server, as measured.
// The unary load (bench/fleet-load.ts) with either client; the streams load
// (bench/connections-load.ts, also the connections scenario's) over its hold.
import { execFile } from "node:child_process";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { HoldFigures } from "../../bench/connections-load.js";
import { startGrpcServer, startInstantIngestServer, type InstantIngestServer } from "../../bench/instant-ingest-server.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const execFileAsync = promisify(execFile);
let instant: InstantIngestServer;

beforeAll(async () => {
  instant = await startInstantIngestServer();
});

afterAll(() => instant?.close());

interface FleetLoadResult {
  sent: number;
  accepted: number;
  errors: number;
  cpu_seconds: number;
}

/** Runs the load as its own process; not spawnSync: the instant server answers from this one. */
async function fleetLoad(target: string, client: string): Promise<FleetLoadResult> {
  // 100 devices, a reading each every 0.5 s, for 2 s: ~400 calls.
  const { stdout } = await execFileAsync(
    process.execPath,
    ["--import", "tsx", "bench/fleet-load.ts", "--target", target, "--client", client, "--devices", "100", "--interval", "0.5", "--compress", "1", "--seconds", "2", "--channels", "2"],
    { cwd: repoRoot, timeout: 30_000 },
  );
  return JSON.parse(stdout.trim().split("\n").at(-1)!) as FleetLoadResult;
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer().listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe.each(["grpc-js", "http2"])("bench/fleet-load.ts --client %s", (client) => {
  it("counts every call the server acknowledged", async () => {
    const result = await fleetLoad(instant.target, client);
    expect(result.sent).toBeGreaterThan(300);
    expect(result).toMatchObject({ accepted: result.sent, errors: 0 });
    expect(result.cpu_seconds).toBeGreaterThan(0);
  });

  it("counts calls that got no answer as errors, not acknowledgements", async () => {
    const result = await fleetLoad(`127.0.0.1:${await closedPort()}`, client);
    expect(result.sent).toBeGreaterThan(300);
    expect(result).toMatchObject({ accepted: 0, errors: result.sent });
  });
});

/** Runs the streams load as its own process. */
async function streamsLoad(target: string): Promise<{ hold: HoldFigures; failures: Record<string, number>; ramp_stopped_early: string | null }> {
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

describe("bench/connections-load.ts over its hold", () => {
  it("counts every reading the server acknowledged, with its latency", async () => {
    const { hold, failures } = await streamsLoad(instant.target);
    expect(failures).toEqual({});
    expect(hold.seconds).toBeGreaterThan(1.9); // a 2 s timer, read on another clock
    expect(hold.sent).toBeGreaterThan(600);
    expect(hold).toMatchObject({ acknowledged: hold.sent, unacknowledged: 0 });
    expect(hold.ack_latency_ms.max).toBeGreaterThan(0);
    expect(hold.cpu_seconds).toBeGreaterThan(0);
  });

  it("counts readings written in the hold and never acknowledged as unacknowledged", async () => {
    // Opens every stream and acknowledges nothing, ending a stream when its client does.
    const silent = await startGrpcServer((stream) => {
      stream.respond({ ":status": 200, "content-type": "application/grpc+proto" }, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.on("data", () => {});
      stream.on("end", () => stream.end());
      stream.on("error", () => {});
    });
    try {
      const { hold, ramp_stopped_early } = await streamsLoad(silent.target);
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
