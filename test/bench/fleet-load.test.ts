// The fleet load generator with either client must count what the server acknowledged, and only
// that: `bench/run.ts` reports its figures, and its floor against the instant server, as measured.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createServer } from "node:net";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
let instant: ChildProcess;
let instantTarget: string;

beforeAll(async () => {
  instant = spawn(process.execPath, ["--import", "tsx", "bench/instant-ingest-server.ts"], { cwd: repoRoot, stdio: ["ignore", "pipe", "inherit"] });
  const line = await new Promise<string>((resolve) => createInterface({ input: instant.stdout! }).once("line", resolve));
  instantTarget = `127.0.0.1:${(JSON.parse(line) as { port: number }).port}`;
});

afterAll(() => {
  instant?.kill();
});

interface FleetLoadResult {
  sent: number;
  accepted: number;
  errors: number;
  cpu_seconds: number;
}

function fleetLoad(target: string, client: string): FleetLoadResult {
  // 100 devices, a reading each every 0.5 s, for 2 s: ~400 calls.
  const run = spawnSync(
    process.execPath,
    ["--import", "tsx", "bench/fleet-load.ts", "--target", target, "--client", client, "--devices", "100", "--interval", "0.5", "--compress", "1", "--seconds", "2", "--channels", "2"],
    { cwd: repoRoot, encoding: "utf8", timeout: 30_000 },
  );
  expect(run.status, run.stderr).toBe(0);
  return JSON.parse(run.stdout.trim().split("\n").at(-1)!) as FleetLoadResult;
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
  it("counts every call the server acknowledged", () => {
    const result = fleetLoad(instantTarget, client);
    expect(result.sent).toBeGreaterThan(300);
    expect(result).toMatchObject({ accepted: result.sent, errors: 0 });
    expect(result.cpu_seconds).toBeGreaterThan(0);
  });

  it("counts calls that got no answer as errors, not acknowledgements", async () => {
    const result = fleetLoad(`127.0.0.1:${await closedPort()}`, client);
    expect(result.sent).toBeGreaterThan(300);
    expect(result).toMatchObject({ accepted: 0, errors: result.sent });
  });
});
