// The first end-to-end path, as users reach it: a real server on port 0 with embedded ClickHouse,
// called by a stock grpc-js client, a connect-node gRPC client, Connect JSON over HTTP/1.1 and
// buf curl with server reflection.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { toJson } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IngestService, RejectReason } from "../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { ReadingSchema } from "../gen/wattstream/telemetry/v1/reading_pb.js";
import { GrpcIngestClient } from "./support/grpc-ingest-client.js";
import { batteryReading, meterReading, vehicleReading } from "./support/readings.js";
import { HistoryProbe, startTestService, testEnv, type TestService } from "./support/test-service.js";

const run = promisify(execFile);
const bufCli = fileURLToPath(new URL("../node_modules/.bin/buf", import.meta.url));

let env: Record<string, string>;
let app: TestService;
let probe: HistoryProbe;
const now = Date.now();

beforeAll(async () => {
  env = testEnv();
  app = await startTestService(env);
  probe = new HistoryProbe(app.config, app.service);
});

afterAll(async () => {
  await app?.service.stop();
  await probe?.close();
});

describe("StreamReadings over a stock grpc-js client", () => {
  it("accepts six readings, then counts the same six again as duplicates, storing them once", async () => {
    const client = new GrpcIngestClient(app.target);
    try {
      const meters = [0, 1, 2].map((i) => meterReading("meter-1", `m-${i}`, now - 60_000 * (3 - i), 1.5 + i, 230 + i));
      const vehicles = [0, 1, 2].map((i) => vehicleReading("ev-1", `v-${i}`, now - 60_000 * (3 - i), 1.2 + i, 40 + i));
      const first = await client.streamReadings([meters, vehicles]);
      expect(first.accepted).toBe(6n);
      expect(first.duplicates).toBe(0n);
      expect(first.rejected).toEqual([]);

      const again = await client.streamReadings([[...meters, ...vehicles]]);
      expect(again.accepted).toBe(0n);
      expect(again.duplicates).toBe(6n);

      const stored = await probe.rows<{ device_id: string; event_id: string; kwh_consumed_ac: number; voltage: number }>(
        "SELECT device_id, event_id, kwh_consumed_ac, voltage FROM {db}.meter_readings WHERE device_id = 'meter-1' ORDER BY event_id",
      );
      expect(stored).toEqual([
        { device_id: "meter-1", event_id: "m-0", kwh_consumed_ac: 1.5, voltage: 230 },
        { device_id: "meter-1", event_id: "m-1", kwh_consumed_ac: 2.5, voltage: 231 },
        { device_id: "meter-1", event_id: "m-2", kwh_consumed_ac: 3.5, voltage: 232 },
      ]);
      const evRows = await probe.rows<{ n: number }>("SELECT count() AS n FROM {db}.vehicle_readings WHERE device_id = 'ev-1'");
      expect(Number(evRows[0]?.n)).toBe(3);
    } finally {
      client.close();
    }
  });

  it("rejects bad readings with their index and reason while storing the valid ones of the same call", async () => {
    const client = new GrpcIngestClient(app.target);
    try {
      const yearAgo = now - 365 * 86_400_000;
      const response = await client.streamReadings([
        [meterReading("meter-bad", "ok-0", now - 1_000, 1)],
        [
          meterReading("meter-bad", "nan-voltage", now, 1, Number.NaN),
          vehicleReading("ev-bad", "soc-140", now, 1, 140),
          meterReading("", "no-device", now, 1),
        ],
        [meterReading("meter-bad", "year-old", yearAgo, 1), meterReading("meter-bad", "ok-5", now - 500, 2)],
      ]);
      expect(response.accepted).toBe(2n);
      expect(response.rejected.map((r) => [r.index, r.eventId, RejectReason[r.reason], r.retryable])).toEqual([
        [1, "nan-voltage", "NOT_FINITE", false],
        [2, "soc-140", "OUT_OF_RANGE", false],
        [3, "no-device", "MISSING_DEVICE_ID", false],
        [4, "year-old", "OBSERVED_AT_TOO_OLD", false],
      ]);
      expect(response.rejected[1]?.message).toContain("vehicle.soc is 140 %");
      const stored = await probe.rows<{ event_id: string }>(
        "SELECT event_id FROM {db}.meter_readings WHERE device_id = 'meter-bad' ORDER BY event_id",
      );
      expect(stored.map((r) => r.event_id)).toEqual(["ok-0", "ok-5"]);
    } finally {
      client.close();
    }
  });
});

describe("IngestReadings", () => {
  it("works through a connect-node gRPC client", async () => {
    const client = createClient(IngestService, createGrpcTransport({ baseUrl: app.baseUrl }));
    const readings = [meterReading("meter-connect", "c-1", now, 0.5), meterReading("meter-connect", "c-1", now, 0.5)];
    const response = await client.ingestReadings({ readings });
    expect(response.accepted).toBe(1n);
    expect(response.duplicates).toBe(1n);
    expect(await probe.rows("SELECT event_id FROM {db}.meter_readings WHERE device_id = 'meter-connect'")).toEqual([{ event_id: "c-1" }]);
  });

  it("stores the first of two copies of a reading in one call, whichever was observed first", async () => {
    const client = createClient(IngestService, createGrpcTransport({ baseUrl: app.baseUrl }));
    // Two battery readings under one event id (a device bug): the later in the call is older, and
    // battery rows are ordered by time on their way to the table; the first in the call is stored.
    const readings = [batteryReading("bbu-twice", "same", now - 1_000, 52), batteryReading("bbu-twice", "same", now - 5_000, 48)];
    const response = await client.ingestReadings({ readings });
    expect({ accepted: response.accepted, duplicates: response.duplicates }).toEqual({ accepted: 1n, duplicates: 1n });
    expect(await probe.rows("SELECT voltage FROM {db}.battery_readings WHERE device_id = 'bbu-twice'")).toEqual([{ voltage: 52 }]);
  });

  it("takes Connect JSON over a plain HTTP/1.1 POST, as curl sends it", async () => {
    const body = {
      readings: [
        { eventId: "j-1", deviceId: "meter-json", observedAt: new Date(now).toISOString(), meter: { kwhConsumedAc: 0.75, voltage: 229.5 } },
        { eventId: "j-2", deviceId: "meter-json", observedAt: new Date(now).toISOString(), meter: { kwhConsumedAc: -1, voltage: 229.5 } },
      ],
    };
    const post = () =>
      fetch(`${app.baseUrl}/wattstream.telemetry.v1.IngestService/IngestReadings`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const first = await post();
    expect(first.status).toBe(200);
    const json = (await first.json()) as { accepted?: string; rejected?: { index?: number; reason: string; message: string }[] };
    expect(json.accepted).toBe("1");
    expect(json.rejected).toEqual([
      { eventId: "j-2", reason: "REJECT_REASON_OUT_OF_RANGE", message: expect.stringContaining("meter.kwh_consumed_ac is -1 kWh") },
    ].map((r) => ({ index: 1, ...r })));
    const second = (await (await post()).json()) as { duplicates?: string };
    expect(second.duplicates).toBe("1");
  });

  it("answers a malformed JSON body with invalid_argument, and the server carries on", async () => {
    const response = await fetch(`${app.baseUrl}/wattstream.telemetry.v1.IngestService/IngestReadings`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"readings": [{"eventId": 5',
    });
    expect(response.status).toBe(400);
    expect(((await response.json()) as { code: string }).code).toBe("invalid_argument");
    const ok = await fetch(`${app.baseUrl}/readyz`);
    expect(ok.status).toBe(200);
  });
});

describe("buf curl with server reflection, no proto files", () => {
  it("streams readings to StreamReadings", async () => {
    const reading = (eventId: string) =>
      toJson(ReadingSchema, meterReading("meter-buf", eventId, now, 0.25));
    // Two stream messages, as buf curl reads them: consecutive JSON objects.
    const request = JSON.stringify({ readings: [reading("b-1")] }) + JSON.stringify({ readings: [reading("b-2")] });
    const { stdout } = await run(process.execPath, [
      bufCli,
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "-d",
      request,
      `${app.baseUrl}/wattstream.telemetry.v1.IngestService/StreamReadings`,
    ]);
    expect(JSON.parse(stdout)).toEqual({ accepted: "2" });
    expect(await probe.rows("SELECT event_id FROM {db}.meter_readings WHERE device_id = 'meter-buf' ORDER BY event_id")).toEqual([
      { event_id: "b-1" },
      { event_id: "b-2" },
    ]);
  });
});

describe("probes", () => {
  it("answers /healthz and /readyz", async () => {
    expect((await fetch(`${app.baseUrl}/healthz`)).status).toBe(200);
    const ready = await fetch(`${app.baseUrl}/readyz`);
    expect(await ready.json()).toEqual({ status: "ready" });
  });
});
