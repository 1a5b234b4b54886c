// Limits under abuse, end to end: a flooding device is slowed with RESOURCE_EXHAUSTED and a retry
// delay while others go on; too many streams per device, too many readings per message, streams
// that trickle, go silent or live too long are each ended with their own code — and nothing the
// service acknowledged is lost on the way.
import { mkdtempSync } from "node:fs";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { IngestReadingsRequestSchema, IngestService, RejectReason, type SyncReadingsResponse } from "../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import type { Reading } from "../gen/wattstream/telemetry/v1/reading_pb.js";
import { addDevice, emptyCredentials, writeCredentials, type Credentials } from "../src/auth/credentials.js";
import { startFaultyService, stopFaultyService, type FaultySink } from "./support/faulty-sink.js";
import { GrpcIngestClient } from "./support/grpc-ingest-client.js";
import { meterReading } from "./support/readings.js";
import { RequestQueue } from "./support/request-queue.js";
import { HistoryProbe, testEnv, type TestService } from "./support/test-service.js";

const RATE = 20;
const BURST = 50;
const MAX_PER_MESSAGE = 40;
// Long enough that a stream the test holds open while it makes other calls is not ended for being
// idle (at 1 s, one was, on two busy cores), and that it ends for being idle before its lifetime.
const IDLE_MS = 2_500;
const LIFETIME_MS = 5_000;
const DEVICES = ["unlucky", "flood", "calm", "multi", "other", "big", "quiet", "sync-quiet", "trickle", "long", "bystander", "forger"];

let app: TestService;
let probe: HistoryProbe;
let sink: FaultySink;
const tokens: Record<string, string> = {};

beforeAll(async () => {
  let credentials: Credentials = emptyCredentials();
  for (const device of DEVICES) {
    const added = addDevice(credentials, device);
    credentials = added.credentials;
    tokens[device] = added.token;
  }
  const file = path.join(mkdtempSync(path.join(tmpdir(), "wattstream-limits-")), "credentials.json");
  writeCredentials(file, credentials);
  ({ app, sink, probe } = await startFaultyService(
    testEnv({
      AUTH: "on",
      CREDENTIALS_FILE: file,
      DEVICE_RATE_LIMIT: String(RATE),
      DEVICE_RATE_BURST: String(BURST),
      MAX_STREAMS_PER_DEVICE: "2",
      MAX_READINGS_PER_MESSAGE: String(MAX_PER_MESSAGE),
      STREAM_IDLE_TIMEOUT: `${IDLE_MS}ms`,
      MAX_STREAM_DURATION: `${LIFETIME_MS}ms`,
      INSERT_ATTEMPTS: "1",
    }),
  ));
});

afterAll(() => stopFaultyService({ app, sink, probe }));

const now = Date.now();
let sequence = 0;
const readings = (device: string, count: number) => Array.from({ length: count }, () => meterReading(device, `e-${sequence++}`, now, 1));
const client = (device: string) => new GrpcIngestClient(app.target, { headers: { authorization: `Bearer ${tokens[device]}` } });

async function stored(device: string): Promise<number> {
  const [row] = await probe.rows<{ n: string; unique: string }>(
    `SELECT count() AS n, uniqExact(event_id) AS unique FROM {db}.meter_readings WHERE device_id = '${device}'`,
  );
  expect(row!.n).toBe(row!.unique); // never stored twice
  return Number(row!.n);
}

function failure(call: Promise<unknown>): Promise<grpc.ServiceError> {
  return call.then(
    () => {
      throw new Error("the call succeeded");
    },
    (error: grpc.ServiceError) => error,
  );
}

describe("a flooding device", () => {
  it("is answered RESOURCE_EXHAUSTED with a retry delay while another device's calls go through", async () => {
    const flood = client("flood");
    const calm = client("calm");
    let acknowledged = 0;
    let refused: grpc.ServiceError | undefined;
    // The flood: as fast as answers come, until refused.
    while (refused === undefined) {
      const batch = readings("flood", MAX_PER_MESSAGE);
      const [floodResult, calmResult] = await Promise.allSettled([flood.ingestReadings(batch), calm.ingestReadings(readings("calm", 1))]);
      expect(calmResult.status).toBe("fulfilled");
      if (floodResult.status === "fulfilled") acknowledged += Number(floodResult.value.accepted);
      else refused = floodResult.reason as grpc.ServiceError;
    }
    expect(refused.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(refused.details).toMatch(/readings per second/);
    const pushbackMs = Number(refused.metadata.get("grpc-retry-pushback-ms")[0]);
    expect(pushbackMs).toBeGreaterThan(0);
    expect(pushbackMs).toBeLessThanOrEqual((MAX_PER_MESSAGE / RATE) * 1000);
    expect(acknowledged).toBe(MAX_PER_MESSAGE); // the burst (50) holds one message of 40, not two
    const metrics = await (await fetch(`${app.baseUrl}/metrics`)).text();
    expect(metrics).toMatch(/^wattstream_calls_refused_total\{reason="device_rate"\} [1-9]\d*$/m);

    // After the delay the device's resend goes through.
    await sleep(pushbackMs);
    acknowledged += Number((await flood.ingestReadings(readings("flood", MAX_PER_MESSAGE))).accepted);
    expect(await stored("flood")).toBe(acknowledged);
    expect(await stored("calm")).toBeGreaterThanOrEqual(1);
    flood.close();
    calm.close();
  });
});

describe("a device sending another device's readings", () => {
  it("is charged for them: refused one by one, they still count against its own rate", async () => {
    const forger = client("forger");
    // 40 of the burst's 50, every one refused as another device's.
    const forged = await forger.ingestReadings(readings("victim", MAX_PER_MESSAGE));
    expect(forged.rejected.map((r) => r.reason)).toEqual(Array(MAX_PER_MESSAGE).fill(RejectReason.PERMISSION_DENIED));
    // Were they free, the bucket would still hold 50: it holds ~10, so 40 of its own are refused.
    const refused = await failure(forger.ingestReadings(readings("forger", MAX_PER_MESSAGE)));
    expect(refused.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    forger.close();
    expect(await stored("victim")).toBe(0);
  });
});

describe("a device the service failed", () => {
  it("is not charged for resends the service itself made necessary", async () => {
    const unlucky = client("unlucky");
    const batch = readings("unlucky", MAX_PER_MESSAGE);
    sink.failing = true;
    try {
      // Each attempt would drain the bucket (40 of 50) if the failed batches were charged.
      for (let attempt = 0; attempt < 3; attempt++) {
        expect((await failure(unlucky.ingestReadings(batch))).code).toBe(grpc.status.UNAVAILABLE);
      }
    } finally {
      sink.failing = false;
    }
    expect(Number((await unlucky.ingestReadings(batch)).accepted)).toBe(MAX_PER_MESSAGE);
    unlucky.close();
    expect(await stored("unlucky")).toBe(MAX_PER_MESSAGE);
  });
});

describe("per call and per device", () => {
  it("refuses a message with more readings than MAX_READINGS_PER_MESSAGE, on unary and stream calls", async () => {
    const big = client("big");
    const unary = await failure(big.ingestReadings(readings("big", MAX_PER_MESSAGE + 1)));
    expect(unary.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(unary.details).toContain(`at most ${MAX_PER_MESSAGE}`);
    const stream = await failure(big.streamReadings([readings("big", MAX_PER_MESSAGE + 1)]));
    expect(stream.code).toBe(grpc.status.INVALID_ARGUMENT);
    big.close();
    expect(await stored("big")).toBe(0);
  });

  it("refuses a device a third concurrent stream, leaves other devices alone, and frees the slot when one ends", async () => {
    const multi = client("multi");
    const open = [multi.openStream(), multi.openStream()];
    for (const stream of open) stream.write(readings("multi", 1));
    await sleep(200); // both calls have started
    const third = await failure(multi.streamReadings([readings("multi", 1)]));
    expect(third.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(third.details).toMatch(/already has 2 ingest calls open/);

    const other = client("other");
    expect(Number((await other.streamReadings([readings("other", 1)])).accepted)).toBe(1);
    other.close();

    const metrics = await (await fetch(`${app.baseUrl}/metrics`)).text();
    expect(metrics).toMatch(/^wattstream_calls_refused_total\{reason="device_streams"\} [1-9]\d*$/m);

    expect(Number((await open[0]!.end()).accepted)).toBe(1);
    expect(Number((await multi.streamReadings([readings("multi", 1)])).accepted)).toBe(1);
    expect(Number((await open[1]!.end()).accepted)).toBe(1);
    multi.close();
    expect(await stored("multi")).toBe(3);
  });
});

describe("streams that hold a slot without using it", () => {
  it("ends an abandoned stream after STREAM_IDLE_TIMEOUT with DEADLINE_EXCEEDED; what it sent is stored", async () => {
    const quiet = client("quiet");
    const stream = quiet.openStream();
    stream.write(readings("quiet", 3));
    const started = Date.now();
    // The device never ends the stream; the service does.
    const error = await failure(stream.response);
    expect(error.code).toBe(grpc.status.DEADLINE_EXCEEDED);
    expect(error.details).toMatch(/STREAM_IDLE_TIMEOUT/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(IDLE_MS - 50);
    quiet.close();
    expect(await stored("quiet")).toBe(3);
  });

  it("acknowledges a sync stream's readings, then ends it when it falls silent", async () => {
    const ingest = createClient(IngestService, createGrpcTransport({ baseUrl: app.baseUrl }));
    const requests = new RequestQueue<{ readings: Reading[] }>();
    const responses: SyncReadingsResponse[] = [];
    const ended = (async () => {
      for await (const response of ingest.syncReadings(requests, { headers: { authorization: `Bearer ${tokens["sync-quiet"]}` } })) {
        responses.push(response);
      }
    })().then(
      () => undefined,
      (error: unknown) => ConnectError.from(error),
    );
    requests.push({ readings: readings("sync-quiet", 2) });
    const error = await ended;
    expect(error?.code).toBe(Code.DeadlineExceeded);
    expect(responses.map((r) => Number(r.acknowledged))).toEqual([2]);
    expect(await stored("sync-quiet")).toBe(2);
  });

  it("ends a stream trickling a message byte by byte, while a device in parallel is served", async () => {
    const session = http2.connect(app.baseUrl);
    const call = session.request({
      ":method": "POST",
      ":path": "/wattstream.telemetry.v1.IngestService/StreamReadings",
      "content-type": "application/grpc+proto",
      te: "trailers",
      authorization: `Bearer ${tokens.trickle}`,
    });
    const status = new Promise<number>((resolve, reject) => {
      const take = (headers: http2.IncomingHttpHeaders) => {
        if (headers["grpc-status"] !== undefined) resolve(Number(headers["grpc-status"]));
      };
      call.on("response", take);
      call.on("trailers", take);
      call.on("data", () => {});
      call.on("error", reject);
      call.on("close", () => reject(new Error("closed without grpc-status")));
    });
    // The service also resets the stream, so a client still sending stops and the slot is freed.
    const closed = new Promise<number>((resolve) => call.on("close", () => resolve(call.rstCode ?? -1)));
    const payload = toBinary(IngestReadingsRequestSchema, create(IngestReadingsRequestSchema, { readings: readings("trickle", 1) }));
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, payload.length]), payload]);
    let offset = 0;
    const trickle = setInterval(() => {
      if (offset < frame.length - 1 && !call.closed) call.write(frame.subarray(offset, ++offset)); // never the last byte
    }, 100);
    try {
      const bystander = client("bystander");
      expect(Number((await bystander.ingestReadings(readings("bystander", 1))).accepted)).toBe(1);
      bystander.close();
      expect(await status).toBe(grpc.status.DEADLINE_EXCEEDED);
      expect(await closed).toBe(http2.constants.NGHTTP2_NO_ERROR);
    } finally {
      clearInterval(trickle);
      session.close();
    }
    expect(await stored("trickle")).toBe(0);
  });

  it("ends a stream that outlives MAX_STREAM_DURATION with UNAVAILABLE, after acknowledging what it stored", async () => {
    const ingest = createClient(IngestService, createGrpcTransport({ baseUrl: app.baseUrl }));
    const requests = new RequestQueue<{ readings: Reading[] }>();
    const responses: SyncReadingsResponse[] = [];
    const ended = (async () => {
      for await (const response of ingest.syncReadings(requests, { headers: { authorization: `Bearer ${tokens.long}` } })) responses.push(response);
    })().then(
      () => undefined,
      (error: unknown) => ConnectError.from(error),
    );
    const started = Date.now();
    let sent = 0;
    let error: ConnectError | undefined;
    const done = ended.then((e) => (error = e));
    while (error === undefined && Date.now() - started < LIFETIME_MS * 3) {
      requests.push({ readings: readings("long", 1) });
      sent++;
      await Promise.race([sleep(250), done]);
    }
    expect(error?.code).toBe(Code.Unavailable);
    expect(error?.rawMessage).toMatch(/MAX_STREAM_DURATION/);
    expect(Date.now() - started).toBeGreaterThanOrEqual(LIFETIME_MS - 50);
    const acknowledged = Number(responses.at(-1)?.acknowledged ?? 0);
    expect(acknowledged).toBeGreaterThan(5);
    expect(acknowledged).toBeLessThanOrEqual(sent);
    // Everything acknowledged is stored; what was sent but not acknowledged may be too (the
    // device resends it and gets duplicates).
    const rows = await stored("long");
    expect(rows).toBeGreaterThanOrEqual(acknowledged);
    expect(rows).toBeLessThanOrEqual(sent);
  });
});
