// How history rows are encoded for insert: RowBinary, with an explicit column list so the bytes
// never depend on the table's column order. Binary, because text formats cost the engine about
// three times as much per row (docs/engine.md); row by row, so a batch's payload can drop a
// duplicate row by cutting out its byte range. DateTime64(3) columns are Int64 epoch milliseconds;
// LowCardinality(String) columns take plain strings.
import type { DeviceKind } from "./history-rows.js";

export const INSERT_FORMAT = "RowBinary";

/** Each table's columns, in the order the encoder writes them. */
export const TABLE_COLUMNS: Readonly<Record<DeviceKind, readonly string[]>> = {
  meter: ["device_id", "event_id", "observed_at", "received_at", "kwh_consumed_ac", "voltage", "register_kwh_ac"],
  vehicle: [
    "device_id",
    "event_id",
    "observed_at",
    "received_at",
    "soc",
    "kwh_delivered_dc",
    "battery_temp",
    "register_kwh_dc",
    "temp_risk",
    "score_version",
  ],
  battery: [
    "device_id",
    "event_id",
    "observed_at",
    "received_at",
    "voltage",
    "temperature",
    "error_codes",
    "health_score",
    "health_level",
    "recommendation",
    "score_version",
  ],
};

type Row = Readonly<Record<string, unknown>>;

export function encodeRow(kind: DeviceKind, row: Row, receivedAtMs: number, out: RowBinaryWriter): void {
  out.string(row.device_id as string);
  out.string(row.event_id as string);
  out.int64(row.observed_at as number);
  out.int64(receivedAtMs);
  switch (kind) {
    case "meter":
      out.float64(row.kwh_consumed_ac as number);
      out.float64(row.voltage as number);
      out.nullableFloat64(row.register_kwh_ac as number | null);
      return;
    case "vehicle":
      out.float64(row.soc as number);
      out.float64(row.kwh_delivered_dc as number);
      out.float64(row.battery_temp as number);
      out.nullableFloat64(row.register_kwh_dc as number | null);
      out.string(row.temp_risk as string);
      out.uint16(row.score_version as number);
      return;
    case "battery":
      out.float64(row.voltage as number);
      out.float64(row.temperature as number);
      out.strings(row.error_codes as readonly string[]);
      out.uint8(row.health_score as number);
      out.string(row.health_level as string);
      out.string(row.recommendation as string);
      out.uint16(row.score_version as number);
      return;
  }
}

/** A growable buffer of RowBinary values. */
export class RowBinaryWriter {
  private bytes = new Uint8Array(64 * 1024);
  private view = new DataView(this.bytes.buffer);
  private static readonly utf8 = new TextEncoder();
  length = 0;

  string(value: string): void {
    // At most 3 bytes per UTF-16 unit, plus the length prefix.
    this.reserve(value.length * 3 + 5);
    const lengthAt = this.length;
    // Short ASCII text (ids, levels, codes: nearly every string of a row) is copied unit by unit,
    // its length one byte: a view and a call into the encoder per string cost more than the loop.
    if (value.length < 0x80) {
      const { bytes } = this;
      let i = 0;
      for (let c; i < value.length && (c = value.charCodeAt(i)) < 0x80; i++) bytes[lengthAt + 1 + i] = c;
      if (i === value.length) {
        bytes[lengthAt] = i;
        this.length = lengthAt + 1 + i;
        return;
      }
    }
    // Reserve one byte for the length; move the text if the length needs more.
    const written = RowBinaryWriter.utf8.encodeInto(value, this.bytes.subarray(lengthAt + 1)).written;
    const prefix = varUIntSize(written);
    if (prefix > 1) this.bytes.copyWithin(lengthAt + prefix, lengthAt + 1, lengthAt + 1 + written);
    this.length = lengthAt;
    this.varUInt(written);
    this.length += written;
  }

  strings(values: readonly string[]): void {
    this.reserve(10);
    this.varUInt(values.length);
    for (const value of values) this.string(value);
  }

  float64(value: number): void {
    this.reserve(8);
    this.view.setFloat64(this.length, value, true);
    this.length += 8;
  }

  nullableFloat64(value: number | null): void {
    this.reserve(9);
    if (value === null) {
      this.bytes[this.length++] = 1;
      return;
    }
    this.bytes[this.length++] = 0;
    this.float64(value);
  }

  /** A safe integer as Int64, little-endian. */
  int64(value: number): void {
    this.reserve(8);
    this.view.setBigInt64(this.length, BigInt(value), true);
    this.length += 8;
  }

  uint8(value: number): void {
    this.reserve(1);
    this.bytes[this.length++] = value;
  }

  uint16(value: number): void {
    this.reserve(2);
    this.view.setUint16(this.length, value, true);
    this.length += 2;
  }

  /** The bytes written, in a buffer of their own (so it can be moved between threads). */
  finish(): Uint8Array {
    return this.bytes.slice(0, this.length);
  }

  private varUInt(value: number): void {
    let rest = value;
    while (rest >= 0x80) {
      this.bytes[this.length++] = (rest & 0x7f) | 0x80;
      rest >>>= 7;
    }
    this.bytes[this.length++] = rest;
  }

  private reserve(extra: number): void {
    if (this.length + extra <= this.bytes.length) return;
    let size = this.bytes.length * 2;
    while (size < this.length + extra) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.bytes.subarray(0, this.length));
    this.bytes = grown;
    this.view = new DataView(grown.buffer);
  }
}

function varUIntSize(value: number): number {
  let size = 1;
  for (let rest = value; rest >= 0x80; rest >>>= 7) size++;
  return size;
}
