// A reading as the engine holds it between the wire and the worker: the few fields the main thread
// decides on (whose it is, which event, when, what kind), and its bytes for the worker, which
// decodes the rest. Decoding every field on the main thread and encoding the batch again for the
// worker cost ~2–3 µs per reading there; scanning a message for these fields costs ~0.3 µs
// (bench/main-thread-costs.ts). The worker decodes each reading again in full (decode-reading.ts)
// and refuses one whose fields it reads differently (see process-batch.ts), so a malformed message
// cannot be authorised as one device and stored as another.
import { toBinary } from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { ReadingSchema, type Reading } from "../../gen/wattstream/telemetry/v1/reading_pb.js";
import type { DeviceKind } from "../process/history-rows.js";
import { KIND_CODES, type ProcessTask } from "../process/process-batch.js";

export interface ReceivedReading {
  readonly deviceId: string;
  readonly eventId: string;
  /** observed_at as the validator converts it (epoch ms, nanoseconds rounded); undefined if unset. */
  readonly observedAtMs: number | undefined;
  /** The sample's kind; undefined if the reading carries none. */
  readonly kind: DeviceKind | undefined;
  /** The reading as one `readings` entry (field 1: tag, length, Reading): entries joined are a request. */
  readonly entry: Uint8Array;
}

/** The field every ingest request carries its readings in (`repeated Reading readings = 1`). */
const READINGS_FIELD = 1;
const SAMPLE_KINDS: Readonly<Record<number, DeviceKind>> = { 10: "meter", 11: "vehicle", 12: "battery" };

/**
 * The readings of an encoded StreamReadings, SyncReadings or IngestReadings request. Throws on a
 * message that is not well formed where it is read (framing, the identity fields' wire types,
 * invalid UTF-8), as decoding would; unknown fields are skipped.
 */
export function scanReadings(bytes: Uint8Array): { readings: ReceivedReading[] } {
  const reader = new BinaryReader(bytes);
  const readings: ReceivedReading[] = [];
  while (reader.pos < reader.len) {
    const entryStart = reader.pos;
    const [field, wireType] = reader.tag();
    if (field !== READINGS_FIELD) {
      reader.skip(wireType, field);
      continue;
    }
    if (wireType !== WireType.LengthDelimited) throw new Error(`readings (field 1) must be length-delimited, not wire type ${wireType}`);
    const end = reader.uint32() + reader.pos;
    if (end > reader.len) throw new RangeError("premature EOF");
    readings.push(scanReading(reader, end, bytes.subarray(entryStart, end)));
  }
  return { readings };
}

/** Reads one Reading's fields up to `end`; last occurrence wins, as in protobuf. */
function scanReading(reader: BinaryReader, end: number, entry: Uint8Array): ReceivedReading {
  // The reader's bounds narrowed to the reading (declared readonly, a plain field): skips and
  // strings past its end then fail as they would on a reader of its own, without making one.
  const bounds = reader as { len: number };
  const outerLength = bounds.len;
  bounds.len = end;
  let deviceId = "";
  let eventId = "";
  let kind: DeviceKind | undefined;
  let seconds: bigint | undefined;
  let nanos = 0;
  let hasObservedAt = false;
  while (reader.pos < end) {
    const [field, wireType] = reader.tag();
    const delimited = wireType === WireType.LengthDelimited;
    if ((field === 1 || field === 2 || field === 3) && !delimited) throw new Error(`Reading field ${field} must be length-delimited`);
    if (field === 1) eventId = reader.string(true);
    else if (field === 2) deviceId = reader.string(true);
    else if (field === 3) {
      // Occurrences of a message field merge: a later one sets only the fields it carries.
      hasObservedAt = true;
      const timestampEnd = reader.uint32() + reader.pos;
      if (timestampEnd > end) throw new RangeError("premature EOF");
      while (reader.pos < timestampEnd) {
        const [tsField, tsWireType] = reader.tag();
        if (tsField === 1 && tsWireType === WireType.Varint) seconds = BigInt(reader.int64());
        else if (tsField === 2 && tsWireType === WireType.Varint) nanos = reader.int32();
        else reader.skip(tsWireType, tsField);
      }
      if (reader.pos !== timestampEnd) throw new RangeError("observed_at overruns its length");
    } else {
      if (SAMPLE_KINDS[field] !== undefined && delimited) kind = SAMPLE_KINDS[field];
      reader.skip(wireType, field);
    }
  }
  bounds.len = outerLength;
  const observedAtMs = hasObservedAt ? timestampMs({ seconds: seconds ?? 0n, nanos } as Parameters<typeof timestampMs>[0]) : undefined;
  return { deviceId, eventId, observedAtMs, kind, entry };
}

/** A reading decoded elsewhere (by connect, for the other protocols), as the engine holds it. */
export function receivedFrom(reading: Reading): ReceivedReading {
  const body = toBinary(ReadingSchema, reading);
  const entry = new BinaryWriter().tag(READINGS_FIELD, WireType.LengthDelimited).bytes(body).finish();
  const sample = reading.sample.case;
  return {
    deviceId: reading.deviceId,
    eventId: reading.eventId,
    observedAtMs: reading.observedAt === undefined ? undefined : timestampMs(reading.observedAt),
    kind: sample,
    entry,
  };
}

/** The readings as the worker takes them: their entries joined, and what was read of each. */
export function toProcessInput(readings: readonly ReceivedReading[]): Pick<ProcessTask, "encoded" | "entryEnds" | "scanned"> {
  let length = 0;
  for (const r of readings) length += r.entry.byteLength;
  const encoded = new Uint8Array(length);
  const entryEnds = new Uint32Array(readings.length);
  const deviceIds: string[] = [];
  const eventIds: string[] = [];
  const observedAtMs = new Float64Array(readings.length);
  const kinds = new Uint8Array(readings.length);
  let at = 0;
  readings.forEach((r, i) => {
    encoded.set(r.entry, at);
    at += r.entry.byteLength;
    entryEnds[i] = at;
    deviceIds.push(r.deviceId);
    eventIds.push(r.eventId);
    observedAtMs[i] = r.observedAtMs ?? NaN;
    kinds[i] = r.kind === undefined ? 0 : KIND_CODES[r.kind];
  });
  return { encoded, entryEnds, scanned: { deviceIds, eventIds, observedAtMs, kinds } };
}
