// `npm run simulate` as an operator runs it: a child process streaming a compressed day to a real
// service, exiting 0 with a summary whose counts add up and match what the service stored.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FleetService } from "../../gen/wattstream/fleet/v1/fleet_service_pb.js";
import type { SimulationSummary } from "../../bench/simulator/progress.js";
import { restartablePort } from "../support/restartable-port.js";
import { HistoryProbe, startTestService, testEnv, type TestService } from "../support/test-service.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

function runSimulator(args: string[], timeoutMs = 20_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", "bench/simulator/main.ts", ...args], {
      cwd: repoRoot,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the simulator did not exit within ${timeoutMs} ms:\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.once("error", reject);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe("npm run simulate", () => {
  let app: TestService;
  let probe: HistoryProbe;
  const dir = mkdtempSync(path.join(tmpdir(), "wattstream-simulate-"));
  beforeAll(async () => {
    app = await startTestService();
    probe = new HistoryProbe(app.config, app.service);
  });
  afterAll(async () => {
    await app?.service.stop();
    await probe?.close();
  });

  async function storedFor(prefix: string): Promise<number> {
    let total = 0;
    for (const table of ["meter_readings", "vehicle_readings", "battery_readings"]) {
      const [row] = await probe.rows<{ n: number; ids: number }>(
        `SELECT count() AS n, uniqExact(device_id, event_id) AS ids FROM {db}.${table} WHERE startsWith(device_id, '${prefix}-')`,
      );
      expect(Number(row!.n), table).toBe(Number(row!.ids));
      total += Number(row!.n);
    }
    return total;
  }

  it("streams a compressed day and exits 0 with a summary that adds up", async () => {
    const out = path.join(dir, "out.json");
    const { code, stdout, stderr } = await runSimulator([
      ...["--target", app.target, "--meters", "3", "--vehicles", "3", "--batteries", "2"],
      ...["--compress", "1440", "--duration", "3", "--json", out, "--prefix", "cli"],
    ]);
    expect(code, `${stdout}\n${stderr}`).toBe(0);
    expect(stdout).toMatch(/every reading settled/);
    // Not a terminal: plain progress lines, no carriage returns.
    expect(stdout).not.toContain("\r");
    const summary = JSON.parse(readFileSync(out, "utf8")) as SimulationSummary;
    const r = summary.readings;

    expect(summary.ok).toBe(true);
    // 8 devices, one reading a simulated minute, 3 s × 1440 = 72 simulated minutes.
    expect(r.generated).toBe(8 * 72);
    expect(r.acknowledged).toBe(r.accepted + r.duplicates);
    expect(r.acknowledged + r.rejected + r.pending).toBe(r.generated);
    expect(r.rejected).toBe(0);
    expect(r.malformed).toBe(0);
    expect(r.pending).toBe(0);
    expect(r.sent).toBe(r.generated + r.resent);
    expect(summary.calls.inconsistentAnswers).toBe(0);
    expect(summary.fleet.links.map((l) => [l.vehicle, l.meter])).toEqual([
      ["cli-ev-0000", "cli-meter-0000"],
      ["cli-ev-0001", "cli-meter-0001"],
      ["cli-ev-0002", "cli-meter-0002"],
    ]);
    expect(summary.fleet.linksRegistered).toEqual({ wanted: 3, registered: 3 });
    // The simulated clock ended at about now: nothing in the future, nothing refused as too old.
    expect(Date.parse(summary.simulated.end)).toBeLessThanOrEqual(Date.now());
    expect(Date.parse(summary.simulated.end)).toBeGreaterThan(Date.now() - 60_000);
    expect(await storedFor("cli")).toBe(r.generated);
  });

  it("sends malformed readings when asked; the service rejects exactly those and stores the rest once", async () => {
    const out = path.join(dir, "malformed.json");
    const { code, stdout, stderr } = await runSimulator([
      ...["--target", app.target, "--transport", "connect", "--meters", "2", "--vehicles", "2", "--batteries", "2"],
      ...["--compress", "1440", "--duration", "3", "--malformed-share", "0.1", "--json", out, "--prefix", "bad", "--seed", "5"],
    ]);
    expect(code, `${stdout}\n${stderr}`).toBe(0);
    const summary = JSON.parse(readFileSync(out, "utf8")) as SimulationSummary;
    const r = summary.readings;
    expect(r.malformed).toBeGreaterThan(0);
    expect(r.rejected).toBe(r.malformed);
    expect(Object.values(r.rejectedByReason).reduce((a, b) => a + b, 0)).toBe(r.rejected);
    for (const reason of Object.keys(r.rejectedByReason)) {
      expect(["OUT_OF_RANGE", "NOT_FINITE", "INVALID_ERROR_CODES", "OBSERVED_AT_IN_FUTURE", "MISSING_OBSERVED_AT"]).toContain(reason);
    }
    expect(r.acknowledged).toBe(r.accepted + r.duplicates);
    expect(r.acknowledged + r.rejected).toBe(r.generated);
    expect(await storedFor("bad")).toBe(r.generated - r.malformed);
  });

  it("registers its devices and an operator key with --credentials when the service authenticates", async () => {
    const file = path.join(dir, "credentials.json");
    // The embedded engine holds one data directory per process: share the first service's.
    const secured = await startTestService(testEnv({ AUTH: "on", CREDENTIALS_FILE: file, DATA_DIR: app.config.clickhouse.dataDir }));
    const securedProbe = new HistoryProbe(secured.config, secured.service);
    try {
      const refused = await runSimulator([
        ...["--target", secured.target, "--meters", "1", "--vehicles", "0", "--batteries", "0", "--no-link"],
        ...["--compress", "1440", "--duration", "1", "--drain-timeout", "1", "--prefix", "anon", "--quiet"],
      ]);
      expect(refused.code).toBe(1); // nothing acknowledged without credentials

      const out = path.join(dir, "secured.json");
      const { code, stdout, stderr } = await runSimulator([
        ...["--target", secured.target, "--credentials", file, "--meters", "2", "--vehicles", "2", "--batteries", "1"],
        ...["--compress", "1440", "--duration", "2", "--json", out, "--prefix", "auth"],
      ]);
      expect(code, `${stdout}\n${stderr}`).toBe(0);
      const summary = JSON.parse(readFileSync(out, "utf8")) as SimulationSummary;
      expect(summary.readings.pending).toBe(0);
      expect(summary.readings.rejected).toBe(0);
      const credentials = JSON.parse(readFileSync(file, "utf8")) as { devices: Record<string, unknown>; apiKeys: Record<string, { role: string }> };
      expect(Object.keys(credentials.devices).sort()).toEqual(["auth-bbu-0000", "auth-ev-0000", "auth-ev-0001", "auth-meter-0000", "auth-meter-0001"]);
      expect(credentials.apiKeys["simulator-auth"]!.role).toBe("operator");
      const [row] = await securedProbe.rows<{ n: string }>(
        `SELECT count() AS n FROM (SELECT device_id FROM {db}.meter_readings UNION ALL SELECT device_id FROM {db}.vehicle_readings UNION ALL SELECT device_id FROM {db}.battery_readings) WHERE startsWith(device_id, 'auth-')`,
      );
      expect(Number(row!.n)).toBe(summary.readings.generated);
      const [anon] = await securedProbe.rows<{ n: string }>(`SELECT count() AS n FROM {db}.meter_readings WHERE startsWith(device_id, 'anon-')`);
      expect(Number(anon!.n)).toBe(0);
    } finally {
      await securedProbe.close();
      await secured.service.stop();
    }
  }, 60_000);

  it("waits for a service that is not up yet, its links included, and then uploads everything", async () => {
    // Free now, and outside the ephemeral range, so nothing else takes it before the service does.
    const port = await restartablePort();
    const out = path.join(dir, "late.json");
    const run = runSimulator([
      ...["--target", `127.0.0.1:${port}`, "--meters", "2", "--vehicles", "2", "--batteries", "1"],
      ...["--compress", "1440", "--duration", "3", "--json", out, "--prefix", "late", "--quiet"],
    ]);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    // The embedded engine holds one data directory per process: share the first service's.
    const late = await startTestService(testEnv({ PORT: String(port), DATA_DIR: app.config.clickhouse.dataDir }));
    const lateProbe = new HistoryProbe(late.config, late.service);
    try {
      const { code, stdout, stderr } = await run;
      expect(code, `${stdout}\n${stderr}`).toBe(0);
      const summary = JSON.parse(readFileSync(out, "utf8")) as SimulationSummary;
      expect(summary.fleet.linksRegistered).toEqual({ wanted: 2, registered: 2 });
      expect(summary.readings.pending).toBe(0);
      const fleet = createClient(FleetService, createGrpcTransport({ baseUrl: late.baseUrl }));
      expect((await fleet.listVehicleLinks({ vehicleId: "late-ev-0001" })).links.map((l) => l.meterId)).toEqual(["late-meter-0001"]);
      const [row] = await lateProbe.rows<{ n: string }>(
        `SELECT count() AS n FROM (SELECT device_id FROM {db}.meter_readings UNION ALL SELECT device_id FROM {db}.vehicle_readings UNION ALL SELECT device_id FROM {db}.battery_readings) WHERE startsWith(device_id, 'late-')`,
      );
      expect(Number(row!.n)).toBe(summary.readings.generated);
    } finally {
      await lateProbe.close();
      await late.service.stop();
    }
  }, 60_000);

  it("refuses a bad option with exit status 2 and says which", async () => {
    const { code, stderr } = await runSimulator(["--faulty-share", "1.5"]);
    expect(code).toBe(2);
    expect(stderr).toMatch(/--faulty-share is "1.5"; it must be a number from 0 to 1/);
    const tooOften = await runSimulator(["--interval", "1e-9"]);
    expect(tooOften.code).toBe(2);
    expect(tooOften.stderr).toMatch(/--interval is "1e-9"; it must be a number ≥ 0.001/);
    const tooMany = await runSimulator(["--meters", "20000", "--interval", "0.001", "--compress", "1000", "--duration", "3600"]);
    expect(tooMany.code).toBe(2);
    expect(tooMany.stderr).toMatch(/the run would generate 7\.2e\+13 readings/);
  });
});
