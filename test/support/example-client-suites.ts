// The checks every example client in another language passes (examples/python, examples/go): its
// demo run against the real service with authentication on over h2c, its retries against a service
// whose inserts fail on purpose, and the demo over TLS. What the client sees is checked against
// the stored rows and against the same calls made by connect-node. Each language's test file finds
// its toolchain, builds or generates its stubs with buf, and says how to run its programs.
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FleetService } from "../../gen/wattstream/fleet/v1/fleet_service_pb.js";
import { devicesCli } from "./devices-cli.js";
import { startFaultyService, stopFaultyService, type FaultyService } from "./faulty-sink.js";
import { selfSignedCertificate } from "./self-signed.js";
import { HistoryProbe, startTestService, testEnv, type TestService } from "./test-service.js";

/** What an example's demo prints with --json (protobuf's JSON mapping: lowerCamelCase, enums by name, 64-bit integers as strings). */
export interface DemoReport {
  meter_id: string;
  vehicle_id: string;
  battery_id: string;
  meter_send: { accepted: number; duplicates: number; rejected: { index?: number; eventId: string; reason: string; message: string; retryable?: boolean }[] };
  meter_resend: { accepted: number; duplicates: number; rejected: number };
  vehicle_sync: { acknowledged: number; accepted: number; duplicates: number }[];
  battery_send: { accepted: number };
  watch: {
    first: { deviceId: string; eventId: string; vehicle: { soc: number } };
    changed: { deviceId: string; eventId: string; online: boolean; vehicle: { soc: number } };
    latest_event_id: string;
  };
  performance: {
    totalKwhConsumedAc: number;
    totalKwhDeliveredDc: number;
    efficiencyRatio: number;
    avgBatteryTemp: number;
    vehicleReadingCount: string;
    meterReadingCount: string;
    windowStart: string;
    windowEnd: string;
    alert: { kind?: string; message?: string };
  };
  health: { deviceId: string; latest: { healthScore?: number; healthLevel: string; scoreVersion: number } };
  live_state: { deviceId: string; kind: string }[];
  without_credentials: string;
}

/** What became of a meter's last 20 minutes (20 readings, 5 to a message) sent with the example's retries. */
export interface RetriedSend {
  accepted: number;
  duplicates: number;
  rejected: number;
  calls: number;
  seconds: number;
}

export interface ExampleClient {
  /** The prefix of the demo's device ids: PREFIX-meter-RUN, PREFIX-ev-RUN, PREFIX-bbu-RUN. */
  readonly idPrefix: string;
  /** Runs the demo with --json against target; env holds the credentials. */
  runDemo(target: string, runId: string, env: Record<string, string>, extraArgs?: string[]): Promise<DemoReport>;
  /** Sends the meter's last 20 minutes as a device does, retrying until each reading is settled. */
  sendWithRetries(target: string, meterId: string): Promise<RetriedSend>;
}

export function onPath(command: string): boolean {
  try {
    execFileSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

/** The suites, for a client made ready (stubs generated, programs built) in the caller's beforeAll. */
export function exampleClientSuites(client: ExampleClient): void {
  describe("with authentication on, over h2c", () => {
    const runId = "auth";
    const ids = { meter: `${client.idPrefix}-meter-${runId}`, vehicle: `${client.idPrefix}-ev-${runId}`, battery: `${client.idPrefix}-bbu-${runId}` };
    let app: TestService;
    let probe: HistoryProbe;
    let fleet: Client<typeof FleetService>;
    let operatorKey: string;
    let report: DemoReport;
    let startedMs: number;

    beforeAll(async () => {
      const file = path.join(mkdtempSync(path.join(tmpdir(), "wattstream-example-auth-")), "credentials.json");
      const tokens = {
        WATTSTREAM_METER_TOKEN: await devicesCli(file, "add", ids.meter),
        WATTSTREAM_VEHICLE_TOKEN: await devicesCli(file, "add", ids.vehicle),
        WATTSTREAM_BATTERY_TOKEN: await devicesCli(file, "add", ids.battery),
      };
      operatorKey = await devicesCli(file, "key", "add", "example-ops", "--role", "operator");
      app = await startTestService(testEnv({ AUTH: "on", CREDENTIALS_FILE: file }));
      probe = new HistoryProbe(app.config, app.service);
      fleet = createClient(FleetService, createGrpcTransport({ baseUrl: app.baseUrl }));
      startedMs = Date.now();
      report = await client.runDemo(app.target, runId, { ...tokens, WATTSTREAM_OPERATOR_KEY: operatorKey });
    }, 120_000);

    afterAll(async () => {
      await probe?.close();
      await app?.service.stop();
    });

    const asOperator = () => ({ headers: { "x-api-key": operatorKey } });

    it("streams readings, rejects the NaN one with its reason and index, and counts a resend as duplicates", async () => {
      expect(report.meter_send.accepted).toBe(10);
      expect(report.meter_send.duplicates).toBe(0);
      expect(report.meter_send.rejected).toHaveLength(1);
      expect(report.meter_send.rejected[0]).toMatchObject({ index: 5, reason: "REJECT_REASON_NOT_FINITE" });
      expect(report.meter_send.rejected[0]!.message).toMatch(/voltage is NaN/);
      expect(report.meter_resend).toEqual({ accepted: 0, duplicates: 10, rejected: 1 });
      // Stored once each, whatever was sent twice.
      const rows = await probe.rows<{ n: number; events: number; kwh: number }>(
        `SELECT count() AS n, uniqExact(event_id) AS events, sum(kwh_consumed_ac) AS kwh FROM {db}.meter_readings WHERE device_id = '${ids.meter}'`,
      );
      expect(rows[0]).toEqual({ n: 10, events: 10, kwh: 150 });
    });

    it("gets each SyncReadings batch acknowledged while the stream stays open", () => {
      expect(report.vehicle_sync.map((r) => r.acknowledged)).toEqual([4, 8, 10]);
      // accepted counts the stream's stored readings so far.
      expect(report.vehicle_sync.map((r) => r.accepted)).toEqual([4, 8, 10]);
    });

    it("watches the vehicle: its state first, then the reading that arrived", () => {
      expect(report.watch.first).toMatchObject({ deviceId: ids.vehicle, vehicle: { soc: 76 } });
      expect(report.watch.changed).toMatchObject({ deviceId: ids.vehicle, eventId: report.watch.latest_event_id, online: true, vehicle: { soc: 85 } });
    });

    it("gets the vehicle's efficiency with its alert, the same answer connect-node gets", async () => {
      expect(report.performance).toMatchObject({
        totalKwhConsumedAc: 150,
        totalKwhDeliveredDc: 120,
        vehicleReadingCount: "11",
        meterReadingCount: "10",
        alert: { kind: "ALERT_KIND_LOW_EFFICIENCY" },
      });
      expect(report.performance.efficiencyRatio).toBeCloseTo(0.8, 12);
      const windowEndMs = Date.parse(report.performance.windowEnd);
      expect(windowEndMs).toBeGreaterThanOrEqual(startedMs - 1000);
      const fromNode = await fleet.getVehiclePerformance(
        { vehicleId: ids.vehicle, windowHours: 1, windowEnd: timestampFromMs(windowEndMs) },
        asOperator(),
      );
      expect(fromNode.totalKwhConsumedAc).toBe(report.performance.totalKwhConsumedAc);
      expect(fromNode.totalKwhDeliveredDc).toBe(report.performance.totalKwhDeliveredDc);
      expect(fromNode.efficiencyRatio).toBe(report.performance.efficiencyRatio);
      expect(fromNode.avgBatteryTemp).toBe(report.performance.avgBatteryTemp);
      expect(fromNode.alert?.message).toBe(report.performance.alert.message);
    });

    it("gets the battery unit's health and the devices' live state, as connect-node does", async () => {
      const fromNode = await fleet.getDeviceHealth({ deviceId: ids.battery, windowHours: 1 }, asOperator());
      expect(report.health.deviceId).toBe(ids.battery);
      expect(report.health.latest.healthScore ?? 0).toBe(fromNode.latest?.healthScore);
      expect(report.health.latest.healthLevel).toBe("HEALTH_LEVEL_OK");
      expect(report.live_state.map((s) => [s.deviceId, s.kind])).toEqual([
        [ids.meter, "DEVICE_KIND_METER"],
        [ids.vehicle, "DEVICE_KIND_VEHICLE"],
        [ids.battery, "DEVICE_KIND_BATTERY"],
      ]);
    });

    it("is refused without credentials", () => {
      expect(report.without_credentials).toBe("UNAUTHENTICATED");
    });
  });

  describe("against a service whose inserts fail on purpose", () => {
    let faulty: FaultyService;

    beforeAll(async () => {
      faulty = await startFaultyService(testEnv({ INSERT_ATTEMPTS: "1" }));
    });

    afterAll(() => stopFaultyService(faulty ?? {}));

    it("keeps the readings, waits the service's pushback, resends them and gets each stored once", async () => {
      // 20 readings in messages of 5; the first two inserts fail, so the first call (at least)
      // ends UNAVAILABLE with grpc-retry-pushback-ms.
      const meterId = `${client.idPrefix}-meter-retry`;
      faulty.sink.failNext(2);
      const result = await client.sendWithRetries(faulty.app.target, meterId);
      expect(faulty.sink.failed).toBe(2);
      expect(result.calls).toBeGreaterThanOrEqual(2);
      // Whatever a failed call stored is a duplicate on the resend: every reading settled once.
      expect(result.accepted + result.duplicates).toBe(20);
      expect(result.rejected).toBe(0);
      // The service asked for a second's pause (grpc-retry-pushback-ms: 1000) before each resend.
      expect(result.seconds).toBeGreaterThanOrEqual(result.calls - 1);
      const rows = await faulty.probe.rows<{ n: number; events: number }>(
        `SELECT count() AS n, uniqExact(event_id) AS events FROM {db}.meter_readings WHERE device_id = '${meterId}'`,
      );
      expect(rows[0]).toEqual({ n: 20, events: 20 });
    }, 60_000);
  });

  describe("over TLS, authentication off", () => {
    let app: TestService;
    let certificateFile: string;

    beforeAll(async () => {
      const certificate = selfSignedCertificate();
      certificateFile = certificate.certFile;
      app = await startTestService(testEnv({ AUTH: "off", TLS_CERT: certificate.certFile, TLS_KEY: certificate.keyFile }));
    });

    afterAll(async () => {
      await app?.service.stop();
    });

    it("runs the same hour, trusting the service's certificate", async () => {
      const report = await client.runDemo(`localhost:${app.service.port}`, "tls", {}, ["--ca", certificateFile]);
      expect(report.meter_send.accepted).toBe(10);
      expect(report.vehicle_sync.at(-1)?.acknowledged).toBe(10);
      expect(report.performance.efficiencyRatio).toBeCloseTo(0.8, 12);
      expect(report.performance.alert.kind).toBe("ALERT_KIND_LOW_EFFICIENCY");
      expect(report.without_credentials).toBe("OK");
    }, 60_000);
  });
}
