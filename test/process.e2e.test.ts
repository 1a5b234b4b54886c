// The service as an operator runs it: `node --import tsx src/main.ts` in its own process, with
// configuration from the environment and graceful shutdown on SIGTERM.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, describe, expect, it } from "vitest";
import { loadConfig } from "../src/config.js";
import { GrpcIngestClient } from "./support/grpc-ingest-client.js";
import { meterReading } from "./support/readings.js";
import { startServiceProcess, type ServiceProcess } from "./support/service-process.js";
import { HistoryProbe, testEnv } from "./support/test-service.js";

const running: ServiceProcess[] = [];
afterEach(() => {
  for (const service of running.splice(0)) service.kill();
});

describe("the service process", () => {
  it("finishes an in-flight stream on SIGTERM, then exits 0 with the rows stored", async () => {
    const env = testEnv({ LOG_LEVEL: "info" });
    const service = await startServiceProcess(env);
    running.push(service);
    const { child, port, logs } = service;
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
    expect(await service.exited).toBe(0);
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
    let stderr = "";
    child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const [code] = (await once(child, "exit")) as [number];
    expect(code).toBe(2);
    expect(stderr).toContain("PORT");
    expect(stderr).toContain("REDIS_URL");
  });
});
