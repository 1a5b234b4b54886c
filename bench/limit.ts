// The limit a benchmark run is compared with, measured on the same machine and the same kind of
// rows: how fast the embedded engine takes them when they are already built (one INSERT per
// table of pre-encoded RowBinary, into the same tables and views the service writes: the kind's
// ingest table, whose views write history and every rollup in one statement — the service writes
// the same, the rollups a batch later (migration 0007)), and how
// fast protobuf-es decodes them. The service cannot beat either; the ratio says how close it gets.
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { IngestReadingsRequestSchema } from "../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { ReadingSchema, type Reading } from "../gen/wattstream/telemetry/v1/reading_pb.js";
import { packBatteryTrends } from "../src/process/battery-trends.js";
import { processBatch } from "../src/process/process-batch.js";
import { scanReadings, toProcessInput } from "../src/pipeline/received-reading.js";
import { TABLE_COLUMNS, INSERT_FORMAT } from "../src/process/insert-encoding.js";
import type { DeviceKind } from "../src/process/history-rows.js";
import { openHistoryClient } from "../src/store/history/clickhouse-client.js";
import { INGEST_TABLES } from "../src/store/history/history-sink.js";
import { applyMigrations, loadMigrations } from "../src/store/history/migrations.js";

export interface Limit {
  readonly rows: number;
  /** The median of the rounds: one short insert varies by ±25 % on this machine. */
  readonly insert_rows_per_second: number;
  readonly insert_seconds: number;
  /** Each round's rate: the same rows into a fresh database. */
  readonly insert_rounds_rows_per_second: readonly number[];
  /** The median of the timed passes, after an untimed one (the first pass is ~15 % slower, cold). */
  readonly decode_readings_per_second: number;
}

/** How many times the insert and the decode are timed; the median is the limit. */
const ROUNDS = 3;

/** The middle value (the upper of the two middle ones for an even count); 0 for none. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

/** The same mix the load generator sends: a third each meters, vehicles and battery units. */
export function benchReading(n: number, devices: number, nowMs: number, prefix = "l"): Reading {
  return deviceReading(n % devices, `${prefix}-${n}`, nowMs - (n % 1000), n);
}

const DEVICE_PREFIXES = ["meter", "ev", "bbu"] as const;

/**
 * Readings `first` to `first + count - 1` of benchReading as one StreamReadingsRequest (or
 * IngestReadingsRequest: both carry `repeated Reading readings = 1`), written field by field with
 * protobuf-es's BinaryWriter. Byte for byte what encoding benchReading's messages gives
 * (test/bench/bench-frame.test.ts holds it to that), for about half the CPU: building and encoding messages
 * was ~2.5 µs of the load generator's ~5 µs per reading, on the two cores it shares with the
 * service it measures.
 */
export function benchFrame(first: number, count: number, devices: number, nowMs: number, prefix = "l"): Uint8Array {
  const writer = new BinaryWriter();
  for (let n = first; n < first + count; n++) {
    const device = n % devices;
    const kind = device % 3;
    const observedAtMs = nowMs - (n % 1000);
    const nanos = (observedAtMs % 1000) * 1_000_000;
    writer.tag(1, WireType.LengthDelimited).fork(); // Reading
    writer.tag(1, WireType.LengthDelimited).string(`${prefix}-${n}`);
    writer.tag(2, WireType.LengthDelimited).string(`${DEVICE_PREFIXES[kind]}-${device}`);
    const seconds = Math.floor(observedAtMs / 1000);
    // proto3 leaves out a field at its default (zero nanos, a zero state of charge).
    writer.tag(3, WireType.LengthDelimited).fork();
    if (seconds !== 0) writer.tag(1, WireType.Varint).int64(seconds);
    if (nanos !== 0) writer.tag(2, WireType.Varint).int32(nanos);
    writer.join();
    if (kind === 0) {
      writer.tag(10, WireType.LengthDelimited).fork();
      writer.tag(1, WireType.Bit64).double(0.1 + (n % 10) / 100).tag(2, WireType.Bit64).double(229 + (n % 5));
    } else if (kind === 1) {
      writer.tag(11, WireType.LengthDelimited).fork();
      if (n % 100 !== 0) writer.tag(1, WireType.Bit64).double(n % 100);
      writer.tag(2, WireType.Bit64).double(0.09).tag(3, WireType.Bit64).double(25 + (n % 10));
    } else {
      writer.tag(12, WireType.LengthDelimited).fork();
      writer.tag(1, WireType.Bit64).double(48 + (n % 3) / 10).tag(2, WireType.Bit64).double(30);
    }
    writer.join().join();
  }
  return writer.finish();
}

/** One reading of device number `device` (its kind follows from the number); `n` varies the values. */
export function deviceReading(device: number, eventId: string, observedAtMs: number, n: number): Reading {
  const kind = device % 3;
  return create(ReadingSchema, {
    eventId,
    deviceId: `${DEVICE_PREFIXES[kind]}-${device}`,
    observedAt: timestampFromMs(observedAtMs),
    sample:
      kind === 0
        ? { case: "meter", value: { kwhConsumedAc: 0.1 + (n % 10) / 100, voltage: 229 + (n % 5) } }
        : kind === 1
          ? { case: "vehicle", value: { soc: n % 100, kwhDeliveredDc: 0.09, batteryTemp: 25 + (n % 10) } }
          : { case: "battery", value: { voltage: 48 + (n % 3) / 10, temperature: 30, errorCodes: [] } },
  });
}

export async function measureLimit(dataDir: string, rows: number): Promise<Limit> {
  const now = Date.now();
  const frames: Uint8Array[] = [];
  for (let start = 0; start < rows; start += 100) {
    const readings = Array.from({ length: Math.min(100, rows - start) }, (_, i) => benchReading(start + i, 20_000, now));
    frames.push(toBinary(IngestReadingsRequestSchema, create(IngestReadingsRequestSchema, { readings })));
  }

  const decodePass = () => {
    const started = performance.now();
    let decoded = 0;
    for (const frame of frames) decoded += fromBinary(IngestReadingsRequestSchema, frame).readings.length;
    return decoded / ((performance.now() - started) / 1000);
  };
  decodePass();
  const decodeRates = Array.from({ length: ROUNDS }, decodePass);

  // Build the insert payloads exactly as the service's workers do, untimed.
  const window = { nowMs: now, maxReadingAgeMs: 30 * 86_400_000, maxClockSkewMs: 300_000 };
  const payloads: Record<DeviceKind, Uint8Array[]> = { meter: [], vehicle: [], battery: [] };
  for (let start = 0; start < frames.length; start += 50) {
    const batch = frames.slice(start, start + 50).flatMap((f) => scanReadings(f).readings);
    const processed = processBatch({ ...toProcessInput(batch), window, receivedAtMs: now, batteryTrends: packBatteryTrends([], []) });
    for (const [kind, table] of Object.entries(processed.tables)) payloads[kind as DeviceKind].push(table.payload);
  }

  mkdirSync(dataDir, { recursive: true });
  const files = (Object.keys(payloads) as DeviceKind[]).map((kind) => {
    const file = path.join(dataDir, `${kind}.bin`);
    writeFileSync(file, Buffer.concat(payloads[kind]));
    return { kind, file };
  });
  const history = await openHistoryClient({ url: undefined, username: "default", password: "", database: "bench_limit", dataDir });
  try {
    const insertSeconds: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      // A database of its own per round: the same rows into empty tables and views each time.
      const database = `bench_limit_${round}`;
      await history.client.command({ query: `CREATE DATABASE IF NOT EXISTS ${database}` });
      await history.client.command({ query: `USE ${database}` });
      await applyMigrations(history.client, await loadMigrations());
      const started = performance.now();
      for (const { kind, file } of files) {
        await history.client.command({
          query: `INSERT INTO ${INGEST_TABLES[kind]} (${TABLE_COLUMNS[kind].join(", ")}) FROM INFILE '${file}' FORMAT ${INSERT_FORMAT}`,
        });
      }
      insertSeconds.push((performance.now() - started) / 1000);
    }
    const rates = insertSeconds.map((seconds) => rows / seconds);
    return {
      rows,
      insert_rows_per_second: median(rates),
      insert_seconds: median(insertSeconds),
      insert_rounds_rows_per_second: rates.map((rate) => Math.round(rate)),
      decode_readings_per_second: median(decodeRates),
    };
  } finally {
    await history.client.close();
  }
}
