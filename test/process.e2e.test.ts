// The service as an operator runs it: `node --import tsx src/main.ts` in its own process, with
// configuration from the environment and graceful shutdown on SIGTERM.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { loadConfig } from "../src/config.js";
import { GrpcIngestClient } from "./support/grpc-ingest-client.js";
import { meterReading } from "./support/readings.js";
import { HistoryProbe, testEnv } from "./support/test-service.js";

const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0)) if (child.exitCode === null) child.kill("SIGKILL");
});

interface Started {
  readonly child: ChildProcess;
  readonly port: number;
  readonly logs: Record<string, unknown>[];
}

/** Starts the service and resolves once it logs the port it serves on. */
async function startProcess(env: Record<string, string>): Promise<Started> {
  const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
    env: { ...process.env, ...env, LOG_LEVEL: "info" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  const logs: Record<string, unknown>[] = [];
  const lines = createInterface({ input: child.stdout! });
  const port = await new Promise<number>((resolve, reject) => {
    lines.on("line", (line) => {
      const entry = JSON.parse(line) as Record<string, unknown>;
      logs.push(entry);
      if (typeof entry.port === "number" && entry.msg === "serving gRPC, gRPC-Web and Connect") resolve(entry.port);
    });
    child.once("exit", (code) => reject(new Error(`service exited with ${code} before serving`)));
  });
  return { child, port, logs };
}

describe("the service process", () => {
  it("finishes an in-flight stream on SIGTERM, then exits 0 with the rows stored", async () => {
    const env = testEnv();
    const { child, port, logs } = await startProcess(env);
    const now = Date.now();

    const client = new GrpcIngestClient(`127.0.0.1:${port}`);
    const stream = client.openStream();
    stream.write([meterReading("meter-p", "p-1", now, 1)]);
    await sleep(200);
    // The stream is open and has sent a message; now the operator stops the service.
    child.kill("SIGTERM");
    await sleep(200);
    stream.write([meterReading("meter-p", "p-2", now + 1, 1)]);
    const response = stream.end();

    expect((await response).accepted).toBe(2n);
    client.close();
    const [code] = (await once(child, "exit")) as [number];
    expect(code).toBe(0);
    expect(logs.map((l) => l.msg)).toContain("stopped");

    const probe = new HistoryProbe(loadConfig(env));
    try {
      expect(await probe.rows("SELECT event_id FROM {db}.meter_readings ORDER BY event_id")).toEqual([
        { event_id: "p-1" },
        { event_id: "p-2" },
      ]);
    } finally {
      await probe.close();
    }
  });

  it("refuses to start on a bad setting, naming it", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
      env: { ...process.env, ...testEnv({ PORT: "80a", REDIS_URL: "http://nope" }) },
      stdio: ["ignore", "pipe", "pipe"],
    });
    children.push(child);
    let stderr = "";
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const [code] = (await once(child, "exit")) as [number];
    expect(code).toBe(2);
    expect(stderr).toContain("PORT");
    expect(stderr).toContain("REDIS_URL");
  });
});
