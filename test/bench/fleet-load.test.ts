// The fleet load generator with either client must count what the server acknowledged, and only
// that: `bench/run.ts` reports its figures, and its floor against the instant server, as measured.
import { execFile } from "node:child_process";
import { createServer } from "node:net";
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
