// Who may call, end to end: credentials issued and revoked with the real `npm run devices` tool,
// checked by a running service on every protocol. A device without credentials, with a revoked
// token, or writing as another device is refused; a partner key sees only its devices; operators
// run the fleet; health checks stay open.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { FleetService } from "../gen/wattstream/fleet/v1/fleet_service_pb.js";
import { DeviceStatus, HealthLevel, PartnerService } from "../gen/wattstream/partner/v1/partner_service_pb.js";
import { IngestService, RejectReason, type SyncReadingsResponse } from "../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import type { Reading } from "../gen/wattstream/telemetry/v1/reading_pb.js";
import { devicesCli } from "./support/devices-cli.js";
import { GrpcIngestClient } from "./support/grpc-ingest-client.js";
import { batteryReading, meterReading, vehicleReading } from "./support/readings.js";
import { RequestQueue } from "./support/request-queue.js";
import { HistoryProbe, startTestService, testEnv, type TestService } from "./support/test-service.js";

let app: TestService;
let probe: HistoryProbe;
let file: string;
const tokens: Record<string, string> = {};
const keys: Record<string, string> = {};

beforeAll(async () => {
  file = path.join(mkdtempSync(path.join(tmpdir(), "wattstream-auth-")), "credentials.json");
  tokens["ev-1"] = await devicesCli(file, "add", "ev-1", "--fleet", "acme");
  tokens["ev-2"] = await devicesCli(file, "add", "ev-2", "--fleet", "acme");
  tokens["bbu-9"] = await devicesCli(file, "add", "bbu-9");
  tokens["meter-1"] = await devicesCli(file, "add", "meter-1");
  keys.acme = await devicesCli(file, "key", "add", "acme", "--fleet", "acme");
  keys.one = await devicesCli(file, "key", "add", "one", "--device", "bbu-9");
  keys.ops = await devicesCli(file, "key", "add", "ops", "--role", "operator");
  app = await startTestService(testEnv({ AUTH: "on", CREDENTIALS_FILE: file }));
  probe = new HistoryProbe(app.config, app.service);
}, 60_000);

afterAll(async () => {
  await probe?.close();
  await app?.service.stop();
});

const now = Date.now();
const bearer = (device: string) => ({ authorization: `Bearer ${tokens[device]}` });

function grpcDevice(device: string | undefined): GrpcIngestClient {
  return new GrpcIngestClient(app.target, device === undefined ? {} : { headers: bearer(device) });
}

async function storedEventIds(deviceId: string): Promise<string[]> {
  const rows = await probe.rows<{ event_id: string }>(
    `SELECT event_id FROM (SELECT device_id, event_id FROM {db}.meter_readings UNION ALL SELECT device_id, event_id FROM {db}.vehicle_readings UNION ALL SELECT device_id, event_id FROM {db}.battery_readings) WHERE device_id = '${deviceId}' ORDER BY event_id`,
  );
  return rows.map((r) => r.event_id);
}

async function codeOf(call: Promise<unknown>): Promise<Code | undefined> {
  try {
    await call;
    return undefined;
  } catch (error) {
    return ConnectError.from(error).code;
  }
}

async function grpcCodeOf(call: Promise<unknown>): Promise<number | undefined> {
  try {
    await call;
    return undefined;
  } catch (error) {
    return (error as grpc.ServiceError).code;
  }
}

describe("devices", () => {
  it("refuses a device without credentials on gRPC and Connect JSON, and stores nothing", async () => {
    const client = grpcDevice(undefined);
    expect(await grpcCodeOf(client.ingestReadings([meterReading("meter-1", "anon-1", now, 1)]))).toBe(grpc.status.UNAUTHENTICATED);
    expect(await grpcCodeOf(client.streamReadings([[meterReading("meter-1", "anon-2", now, 1)]]))).toBe(grpc.status.UNAUTHENTICATED);
    client.close();

    const response = await fetch(`${app.baseUrl}/wattstream.telemetry.v1.IngestService/IngestReadings`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ readings: [{ deviceId: "meter-1", eventId: "anon-3", observedAt: new Date(now).toISOString(), meter: { kwhConsumedAc: 1, voltage: 230 } }] }),
    });
    expect(response.status).toBe(401);
    expect(((await response.json()) as { code: string; message: string }).code).toBe("unauthenticated");

    const forged = new GrpcIngestClient(app.target, { headers: { authorization: "Bearer wsd_not-a-real-token" } });
    expect(await grpcCodeOf(forged.ingestReadings([meterReading("meter-1", "anon-4", now, 1)]))).toBe(grpc.status.UNAUTHENTICATED);
    forged.close();

    expect(await storedEventIds("meter-1")).not.toEqual(expect.arrayContaining(["anon-1"]));
    expect((await storedEventIds("meter-1")).filter((id) => id.startsWith("anon-"))).toEqual([]);
  });

  it("stores a device's own readings and rejects, per reading, those it writes as another device", async () => {
    const client = grpcDevice("meter-1");
    const response = await client.ingestReadings([
      meterReading("meter-1", "own-1", now, 1),
      meterReading("meter-2", "forged-1", now, 1),
      meterReading("meter-1", "own-2", now + 1, 2),
      batteryReading("bbu-9", "forged-2", now, 50),
    ]);
    client.close();
    expect(Number(response.accepted)).toBe(2);
    expect(response.rejected.map((r) => [r.index, r.eventId, r.reason, r.retryable])).toEqual([
      [1, "forged-1", RejectReason.PERMISSION_DENIED, false],
      [3, "forged-2", RejectReason.PERMISSION_DENIED, false],
    ]);
    expect(response.rejected[0]!.message).toContain("meter-2");
    expect(await storedEventIds("meter-1")).toEqual(expect.arrayContaining(["own-1", "own-2"]));
    expect(await storedEventIds("meter-2")).toEqual([]);
    expect(await storedEventIds("bbu-9")).not.toContain("forged-2");
  });

  it("accepts a token over Connect JSON too (curl's way)", async () => {
    const response = await fetch(`${app.baseUrl}/wattstream.telemetry.v1.IngestService/IngestReadings`, {
      method: "POST",
      headers: { "content-type": "application/json", ...bearer("ev-1") },
      body: JSON.stringify({
        readings: [{ deviceId: "ev-1", eventId: "json-1", observedAt: new Date(now).toISOString(), vehicle: { soc: 40, kwhDeliveredDc: 2, batteryTemp: 30 } }],
      }),
    });
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ accepted: "1" });
  });

  it("refuses a revoked token at the next call, and ends an open stream at its next batch", async () => {
    const device = "ev-2";
    const client = createClient(IngestService, createGrpcTransport({ baseUrl: app.baseUrl }));
    const requests = new RequestQueue<{ readings: Reading[] }>();
    const responses = client.syncReadings(requests, { headers: bearer(device) })[Symbol.asyncIterator]();
    requests.push({ readings: [vehicleReading(device, "before-revoke", now, 1)] });
    const first = (await responses.next()) as IteratorResult<SyncReadingsResponse>;
    expect(Number(first.value!.accepted)).toBe(1);

    await devicesCli(file, "revoke", device);
    // The service re-reads the credentials file within about a second of the change.
    const grpcClient = grpcDevice(device);
    let code: number | undefined;
    for (let i = 0; i < 50 && code === undefined; i++) {
      code = await grpcCodeOf(grpcClient.ingestReadings([vehicleReading(device, `probe-${i}`, now, 1)]));
      if (code === undefined) await sleep(100);
    }
    grpcClient.close();
    expect(code).toBe(grpc.status.UNAUTHENTICATED);

    requests.push({ readings: [vehicleReading(device, "after-revoke", now + 1, 2)] });
    expect(await codeOf(responses.next())).toBe(Code.Unauthenticated);
    requests.close();
    const stored = await storedEventIds(device);
    expect(stored).toContain("before-revoke");
    expect(stored).not.toContain("after-revoke");

    // Re-admitting the device issues a new token; the old one stays dead.
    const fresh = await devicesCli(file, "add", device);
    const old = grpcDevice(device);
    const renewed = new GrpcIngestClient(app.target, { headers: { authorization: `Bearer ${fresh}` } });
    let accepted = 0;
    for (let i = 0; i < 50 && accepted === 0; i++) {
      accepted = await renewed.ingestReadings([vehicleReading(device, `renewed-${i}`, now + 2, 3)]).then((r) => Number(r.accepted), () => 0);
      if (accepted === 0) await sleep(100);
    }
    expect(accepted).toBe(1);
    expect(await grpcCodeOf(old.ingestReadings([vehicleReading(device, "old-token", now + 3, 3)]))).toBe(grpc.status.UNAUTHENTICATED);
    old.close();
    renewed.close();
  });

  it("counts refused calls and readings in /metrics, so an operator sees who knocks", async () => {
    const metrics = await (await fetch(`${app.baseUrl}/metrics`)).text();
    const value = (pattern: RegExp) => Number(pattern.exec(metrics)?.[1] ?? 0);
    expect(value(/^wattstream_calls_denied_total\{code="unauthenticated",service="wattstream\.telemetry\.v1\.IngestService"\} (\d+)$/m)).toBeGreaterThanOrEqual(4);
    expect(value(/^wattstream_readings_total\{outcome="rejected",reason="PERMISSION_DENIED"\} (\d+)$/m)).toBeGreaterThanOrEqual(2);
  });

  it("does not let a device token read the fleet or partner data", async () => {
    const headers = bearer("ev-1");
    const fleet = createClient(FleetService, createGrpcTransport({ baseUrl: app.baseUrl }));
    expect(await codeOf(fleet.getFleetSummary({}, { headers }))).toBe(Code.PermissionDenied);
    const partner = createClient(PartnerService, createGrpcTransport({ baseUrl: app.baseUrl }));
    expect(await codeOf(partner.getDeviceStatus({ serial: "ev-1" }, { headers }))).toBe(Code.PermissionDenied);
  });
});

describe("partners and operators", () => {
  const partner = () => createClient(PartnerService, createConnectTransport({ baseUrl: app.baseUrl, httpVersion: "1.1" }));

  beforeAll(async () => {
    const ev = grpcDevice("ev-1");
    await ev.ingestReadings([vehicleReading("ev-1", "status-1", now + 5000, 5, 60, 30)]);
    ev.close();
    const bbu = grpcDevice("bbu-9");
    await bbu.ingestReadings([batteryReading("bbu-9", "status-1", now + 5000, 50, 25)]);
    bbu.close();
  });

  it("answers a partner the status of devices in its fleet or device scope", async () => {
    const acme = { "x-api-key": keys.acme! };
    const ev = await partner().getDeviceStatus({ serial: "ev-1" }, { headers: acme });
    expect(ev.serial).toBe("ev-1");
    expect(ev.status).toBe(DeviceStatus.ONLINE);
    expect(ev.healthScore).toBeUndefined();
    expect(ev.healthLevel).toBe(HealthLevel.OK);
    expect(Number(ev.lastReadingTime!.seconds) * 1000 + Math.round(ev.lastReadingTime!.nanos / 1e6)).toBe(now + 5000);

    const bbu = await partner().getDeviceStatus({ serial: "bbu-9" }, { headers: { "x-api-key": keys.one! } });
    expect(bbu.healthScore).toBeGreaterThan(0);
    expect(bbu.healthLevel).not.toBe(HealthLevel.UNSPECIFIED);
  });

  it("refuses a partner any device outside its scope, whether or not it exists", async () => {
    const acme = { "x-api-key": keys.acme! };
    expect(await codeOf(partner().getDeviceStatus({ serial: "bbu-9" }, { headers: acme }))).toBe(Code.PermissionDenied);
    expect(await codeOf(partner().getDeviceStatus({ serial: "meter-1" }, { headers: acme }))).toBe(Code.PermissionDenied);
    expect(await codeOf(partner().getDeviceStatus({ serial: "no-such-device" }, { headers: acme }))).toBe(Code.PermissionDenied);
    expect(await codeOf(partner().getDeviceStatus({ serial: "ev-1" }, { headers: { "x-api-key": keys.one! } }))).toBe(Code.PermissionDenied);
    // In scope (fleet acme) but silent: the partner may know it has not reported.
    const silent = await devicesCli(file, "add", "ev-silent", "--fleet", "acme");
    expect(silent).toMatch(/^wsd_/);
    let code: Code | undefined = Code.PermissionDenied;
    for (let i = 0; i < 50 && code === Code.PermissionDenied; i++) {
      code = await codeOf(partner().getDeviceStatus({ serial: "ev-silent" }, { headers: acme }));
      if (code === Code.PermissionDenied) await sleep(100);
    }
    expect(code).toBe(Code.NotFound);
  });

  it("keeps partners read-only and out of the fleet API, and refuses calls without a key", async () => {
    const fleet = createClient(FleetService, createGrpcTransport({ baseUrl: app.baseUrl }));
    const acme = { "x-api-key": keys.acme! };
    expect(await codeOf(fleet.getFleetSummary({}, { headers: acme }))).toBe(Code.PermissionDenied);
    expect(await codeOf(fleet.linkVehicleToMeter({ vehicleId: "ev-1", meterId: "meter-1" }, { headers: acme }))).toBe(Code.PermissionDenied);
    const ingest = createClient(IngestService, createGrpcTransport({ baseUrl: app.baseUrl }));
    expect(await codeOf(ingest.ingestReadings({ readings: [vehicleReading("ev-1", "partner-write", now, 1)] }, { headers: acme }))).toBe(
      Code.PermissionDenied,
    );
    expect(await codeOf(partner().getDeviceStatus({ serial: "ev-1" }))).toBe(Code.Unauthenticated);
    expect(await codeOf(partner().getDeviceStatus({ serial: "ev-1" }, { headers: { "x-api-key": "wsk_wrong" } }))).toBe(Code.Unauthenticated);
  });

  it("lets an operator key use the fleet API and read any device", async () => {
    const ops = { "x-api-key": keys.ops! };
    const fleet = createClient(FleetService, createGrpcTransport({ baseUrl: app.baseUrl }));
    await fleet.linkVehicleToMeter({ vehicleId: "ev-1", meterId: "meter-1", validFrom: timestampFromMs(now - 86_400_000) }, { headers: ops });
    const links = await fleet.listVehicleLinks({ vehicleId: "ev-1" }, { headers: ops });
    expect(links.links.map((l) => l.meterId)).toContain("meter-1");
    expect((await partner().getDeviceStatus({ serial: "bbu-9" }, { headers: ops })).serial).toBe("bbu-9");
  });

  it("stops honouring a partner key once revoked", async () => {
    const key = await devicesCli(file, "key", "add", "short-lived", "--device", "ev-1");
    const headers = { "x-api-key": key };
    let code: Code | undefined = Code.Unauthenticated;
    for (let i = 0; i < 50 && code !== undefined; i++) {
      code = await codeOf(partner().getDeviceStatus({ serial: "ev-1" }, { headers }));
      if (code !== undefined) await sleep(100);
    }
    expect(code).toBeUndefined();
    await devicesCli(file, "key", "revoke", "short-lived");
    for (let i = 0; i < 50 && code === undefined; i++) {
      code = await codeOf(partner().getDeviceStatus({ serial: "ev-1" }, { headers }));
      if (code === undefined) await sleep(100);
    }
    expect(code).toBe(Code.Unauthenticated);
  });

  it("leaves health checks open to load balancers", async () => {
    const health = createClient(Health, createGrpcTransport({ baseUrl: app.baseUrl }));
    expect((await health.check({})).status).toBe(HealthCheckResponse_ServingStatus.SERVING);
  });
});

describe("client certificates (mTLS)", () => {
  let tlsApp: TestService;
  let dir: string;
  let serverCert: Buffer;

  const openssl = (...args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  /** A key and a certificate for CN=`name`, signed by the test CA (or self-signed when rogue). */
  function clientCertificate(name: string, rogue = false): { key: Buffer; cert: Buffer } {
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", `/CN=${name}`, "-keyout", `${name}.key`, "-out", `${name}.csr`);
    if (rogue) openssl("x509", "-req", "-in", `${name}.csr`, "-key", `${name}.key`, "-days", "1", "-out", `${name}.pem`);
    else openssl("x509", "-req", "-in", `${name}.csr`, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1", "-out", `${name}.pem`);
    return { key: readFileSync(path.join(dir, `${name}.key`)), cert: readFileSync(path.join(dir, `${name}.pem`)) };
  }
  function certClient(identity: { key: Buffer; cert: Buffer } | undefined, headers?: Record<string, string>): GrpcIngestClient {
    return new GrpcIngestClient(`localhost:${tlsApp.service.port}`, {
      credentials: grpc.credentials.createSsl(serverCert, identity?.key ?? null, identity?.cert ?? null),
      ...(headers !== undefined && { headers }),
    });
  }

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "wattstream-mtls-"));
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=wattstream-test-devices-ca", "-keyout", "ca.key", "-out", "ca.pem");
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=localhost",
      "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", "server.key", "-out", "server.pem");
    serverCert = readFileSync(path.join(dir, "server.pem"));
    await devicesCli(file, "add", "ev-cert");
    tlsApp = await startTestService(
      testEnv({
        AUTH: "on",
        CREDENTIALS_FILE: file,
        // The embedded engine holds one data directory per process: share the first service's.
        DATA_DIR: app.config.clickhouse.dataDir,
        TLS_CERT: path.join(dir, "server.pem"),
        TLS_KEY: path.join(dir, "server.key"),
        TLS_CLIENT_CA: path.join(dir, "ca.pem"),
      }),
    );
  }, 60_000);

  afterAll(async () => {
    await tlsApp?.service.stop();
  });

  it("authenticates a device by the certificate that names it, and only for its own readings", async () => {
    const client = certClient(clientCertificate("ev-cert"));
    const response = await client.ingestReadings([vehicleReading("ev-cert", "cert-1", now, 1), vehicleReading("ev-1", "cert-forged", now, 1)]);
    client.close();
    expect(Number(response.accepted)).toBe(1);
    expect(response.rejected.map((r) => [r.eventId, r.reason])).toEqual([["cert-forged", RejectReason.PERMISSION_DENIED]]);
  });

  it("refuses a certificate the CA did not sign, one naming an unregistered device, and no certificate at all", async () => {
    const rogue = certClient(clientCertificate("ev-cert-rogue", true));
    expect(await grpcCodeOf(rogue.ingestReadings([vehicleReading("ev-cert", "rogue-1", now, 1)]))).toBe(grpc.status.UNAUTHENTICATED);
    rogue.close();
    // Names a plain object's lookup would find on Object.prototype are not registered devices either.
    for (const name of ["ev-unregistered", "constructor", "__proto__", "toString"]) {
      const stranger = certClient(clientCertificate(name));
      expect(await grpcCodeOf(stranger.ingestReadings([vehicleReading(name, `stranger-${name}`, now, 1)])), name).toBe(grpc.status.UNAUTHENTICATED);
      stranger.close();
    }
    const bare = certClient(undefined);
    expect(await grpcCodeOf(bare.ingestReadings([vehicleReading("ev-cert", "bare-1", now, 1)]))).toBe(grpc.status.UNAUTHENTICATED);
    bare.close();
    // A token still works over the same TLS listener, with no certificate.
    const withToken = certClient(undefined, bearer("ev-1"));
    expect(Number((await withToken.ingestReadings([vehicleReading("ev-1", "tls-token-1", now, 1)])).accepted)).toBe(1);
    withToken.close();
  });

  it("refuses a certificate of a revoked device", async () => {
    const identity = clientCertificate("ev-cert-revoked");
    await devicesCli(file, "add", "ev-cert-revoked");
    await devicesCli(file, "revoke", "ev-cert-revoked");
    await sleep(1500); // past the service's re-read of the file
    const client = certClient(identity);
    expect(await grpcCodeOf(client.ingestReadings([vehicleReading("ev-cert-revoked", "revoked-1", now, 1)]))).toBe(grpc.status.UNAUTHENTICATED);
    client.close();
  });
});
