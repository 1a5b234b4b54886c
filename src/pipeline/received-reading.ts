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
import { KIND_CODES, type DeviceKind } from "../process/history-rows.js";
import type { ProcessTask } from "../process/process-batch.js";

export interface ReceivedReading {
  readonly deviceId: string;
  readonly eventId: string;
  /** observed_at as the validator converts it (epoch ms, nanoseconds rounded); undefined if unset. */
  readonly observedAtMs: number | undefined;
  /** The sample's kind; undefined if the reading carries none. */
  readonly kind: DeviceKind | undefined;
  /**
   * The message the reading came in, and where in it the reading's `readings` entry lies (field 1:
   * tag, length, Reading): entries joined are a request. Positions, not a view of its own: a view
   * per reading was ~85 bytes the collector copied while the reading was in flight.
   */
  readonly message: Uint8Array;
  readonly entryStart: number;
  readonly entryEnd: number;
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
  return scan(bytes, true);
}

/**
 * scanReadings without its plain path: every reading read with protobuf-es's reader. What
 * scanReadings must answer on any bytes, as its tests check.
 */
export function scanReadingsInFull(bytes: Uint8Array): { readings: ReceivedReading[] } {
  return scan(bytes, false);
}

function scan(bytes: Uint8Array, plain: boolean): { readings: ReceivedReading[] } {
  const readings: ReceivedReading[] = [];
  // protobuf-es's reader for anything the plain scan does not take (made at most once a message).
  let reader: BinaryReader | undefined;
  let text: Buffer | undefined;
  let pos = 0;
  while (pos < bytes.length) {
    if (plain && bytes[pos] === READINGS_TAG) {
      const length = varintAt(bytes, pos + 1, bytes.length);
      const start = varintEnd;
      if (start >= 0 && length <= bytes.length - start) {
        text ??= Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        const reading = scanPlainReading(bytes, text, pos, start, start + length);
        if (reading !== undefined) {
          readings.push(reading);
          pos = start + length;
          continue;
        }
      }
    }
    reader ??= new BinaryReader(bytes);
    reader.pos = pos;
    const [field, wireType] = reader.tag();
    if (field !== READINGS_FIELD) {
      reader.skip(wireType, field);
      pos = reader.pos;
      continue;
    }
    if (wireType !== WireType.LengthDelimited) throw new Error(`readings (field 1) must be length-delimited, not wire type ${wireType}`);
    const end = reader.uint32() + reader.pos;
    if (end > reader.len) throw new RangeError("premature EOF");
    readings.push(scanReading(reader, end, bytes, pos));
    pos = end;
  }
  return { readings };
}

/** A `readings` entry's tag: field 1, length-delimited. */
const READINGS_TAG = (READINGS_FIELD << 3) | WireType.LengthDelimited;
/** One-byte tags of the Reading fields the plain scan reads. */
const EVENT_ID_TAG = (1 << 3) | WireType.LengthDelimited;
const DEVICE_ID_TAG = (2 << 3) | WireType.LengthDelimited;
const OBSERVED_AT_TAG = (3 << 3) | WireType.LengthDelimited;
const SECONDS_TAG = (1 << 3) | WireType.Varint;
const NANOS_TAG = (2 << 3) | WireType.Varint;
const SAMPLE_TAGS: Readonly<Record<number, DeviceKind>> = {
  [(10 << 3) | WireType.LengthDelimited]: "meter",
  [(11 << 3) | WireType.LengthDelimited]: "vehicle",
  [(12 << 3) | WireType.LengthDelimited]: "battery",
};

/**
 * The reading in [start, end) of bytes as firmware nearly always writes it — one-byte tags of the
 * fields the scan reads, ASCII ids, an observed_at of non-negative varints — read without
 * allocating more than its strings; undefined for anything else (unknown fields, non-ASCII ids,
 * malformed bytes), which scanReading then reads or refuses as protobuf-es does. The tests hold the
 * two equal on any request.
 */
function scanPlainReading(bytes: Uint8Array, text: Buffer, entryStart: number, start: number, end: number): ReceivedReading | undefined {
  let deviceId = "";
  let eventId = "";
  let kind: DeviceKind | undefined;
  let seconds = 0;
  let nanos = 0;
  let hasObservedAt = false;
  let pos = start;
  while (pos < end) {
    const tag = bytes[pos]!;
    const length = varintAt(bytes, pos + 1, end);
    const from = varintEnd;
    if (from < 0 || length > end - from) return undefined;
    pos = from + length;
    if (tag === EVENT_ID_TAG) {
      if (!isAscii(bytes, from, pos)) return undefined;
      eventId = text.toString("latin1", from, pos);
    } else if (tag === DEVICE_ID_TAG) {
      const id = deviceIdAt(bytes, text, from, pos);
      if (id === undefined) return undefined;
      deviceId = id;
    } else if (tag === OBSERVED_AT_TAG) {
      hasObservedAt = true;
      for (let at = from; at < pos; ) {
        const field = bytes[at]!;
        const value = varintAt(bytes, at + 1, pos);
        if (varintEnd < 0) return undefined;
        at = varintEnd;
        if (field === SECONDS_TAG) seconds = value;
        // int32 nanos above 2^31 - 1 read negative in protobuf: left to it.
        else if (field === NANOS_TAG && value <= 0x7fffffff) nanos = value;
        else return undefined;
      }
    } else if (SAMPLE_TAGS[tag] !== undefined) {
      kind = SAMPLE_TAGS[tag];
    } else {
      return undefined;
    }
  }
  const observedAtMs = hasObservedAt ? seconds * 1000 + Math.round(nanos / 1_000_000) : undefined;
  return { deviceId, eventId, observedAtMs, kind, message: bytes, entryStart, entryEnd: end };
}

/** Where the last varintAt ended, or -1 when it found no varint it reads. */
let varintEnd = 0;

/**
 * The varint at pos, if it ends before `end` within 7 bytes (below 2^49: any length, a tag, and
 * seconds since 1970 for millions of years); else 0, with varintEnd -1.
 */
function varintAt(bytes: Uint8Array, pos: number, end: number): number {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 7 && pos < end; i++) {
    const byte = bytes[pos++]!;
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) {
      varintEnd = pos;
      return value;
    }
    scale *= 128;
  }
  varintEnd = -1;
  return 0;
}

function isAscii(bytes: Uint8Array, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (bytes[i]! > 0x7f) return false;
  return true;
}

/**
 * Device ids seen lately, by a hash of their bytes: a device sends many readings, and taking its id
 * from here spares a new string per reading (one the collector copies while the reading is in
 * flight) and the hashing of it again in each Map it is looked up in. One slot per hash, replaced
 * on a collision: a cache, bounded, not a table of every device.
 */
const deviceIds = new Array<string | undefined>(1 << 16).fill(undefined);

/** The ASCII device id in [start, end) of bytes, or undefined if it is not ASCII. */
function deviceIdAt(bytes: Uint8Array, text: Buffer, start: number, end: number): string | undefined {
  let hash = 0x811c9dc5;
  let bits = 0;
  for (let i = start; i < end; i++) {
    const byte = bytes[i]!;
    bits |= byte;
    hash = Math.imul(hash ^ byte, 0x01000193);
  }
  if (bits > 0x7f) return undefined;
  const slot = (hash ^ (hash >>> 16)) & (deviceIds.length - 1);
  const held = deviceIds[slot];
  if (held !== undefined && held.length === end - start && sameAscii(held, bytes, start)) return held;
  const id = text.toString("latin1", start, end);
  deviceIds[slot] = id;
  return id;
}

function sameAscii(id: string, bytes: Uint8Array, start: number): boolean {
  for (let i = 0; i < id.length; i++) if (id.charCodeAt(i) !== bytes[start + i]) return false;
  return true;
}

/** Reads one Reading's fields up to `end`; last occurrence wins, as in protobuf. */
function scanReading(reader: BinaryReader, end: number, message: Uint8Array, entryStart: number): ReceivedReading {
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
  return { deviceId, eventId, observedAtMs, kind, message, entryStart, entryEnd: end };
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
    message: entry,
    entryStart: 0,
    entryEnd: entry.length,
  };
}

/** The readings as the worker takes them: their entries joined, and what was read of each. */
export function toProcessInput(readings: readonly ReceivedReading[]): Pick<ProcessTask, "encoded" | "entryEnds" | "scanned"> {
  let length = 0;
  for (const r of readings) length += r.entryEnd - r.entryStart;
  const encoded = new Uint8Array(length);
  const entryEnds = new Uint32Array(readings.length);
  const deviceIds = new Array<string>(readings.length);
  const eventIds = new Array<string>(readings.length);
  const observedAtMs = new Float64Array(readings.length);
  const kinds = new Uint8Array(readings.length);
  let at = 0;
  // Entries that lie back to back in one message (a frame's readings, nearly always) are copied at once.
  let runMessage: Uint8Array | undefined;
  let runStart = 0;
  let runEnd = 0;
  for (let i = 0; i < readings.length; i++) {
    const r = readings[i]!;
    if (r.message !== runMessage || r.entryStart !== runEnd) {
      if (runMessage !== undefined) encoded.set(runMessage.subarray(runStart, runEnd), at - (runEnd - runStart));
      runMessage = r.message;
      runStart = r.entryStart;
    }
    runEnd = r.entryEnd;
    at += r.entryEnd - r.entryStart;
    entryEnds[i] = at;
    deviceIds[i] = r.deviceId;
    eventIds[i] = r.eventId;
    observedAtMs[i] = r.observedAtMs ?? NaN;
    kinds[i] = r.kind === undefined ? 0 : KIND_CODES[r.kind];
  }
  if (runMessage !== undefined) encoded.set(runMessage.subarray(runStart, runEnd), at - (runEnd - runStart));
  return { encoded, entryEnds, scanned: { deviceIds, eventIds, observedAtMs, kinds } };
}
