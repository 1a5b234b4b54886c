// The CPU work of one batch, done in a worker thread: decode the readings, validate them, score
// them, and encode the accepted ones as insert payloads — one per history table, with the byte
// ends and batch offsets of its rows so the caller can drop rows (duplicates) without re-encoding.
// Pure and synchronous: no I/O, no shared state.
import { fromBinary } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { IngestReadingsRequestSchema } from "../../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import type { Reading } from "../../gen/wattstream/telemetry/v1/reading_pb.js";
import { unpackBatteryTrends, type PackedBatteryTrends } from "./battery-trends.js";
import type { DeviceKind, HistoryRow } from "./history-rows.js";
import { encodeRow, RowBinaryWriter } from "./insert-encoding.js";
import { packLiveUpdates, type LiveUpdate, type PackedLiveUpdates } from "./live-updates.js";
import { scoreBattery, type BatteryTrend } from "./scoring/battery-health.js";
import { VEHICLE_SCORE_VERSION, vehicleTemperatureRisk } from "./scoring/vehicle-temperature.js";
import { validateReading, type TimeWindow } from "./validate-reading.js";

export interface ProcessTask {
  /** The batch as an encoded IngestReadingsRequest, its readings' entries joined (moved, not copied, to the worker). */
  readonly encoded: Uint8Array;
  /** entryEnds[i] is where reading i's entry ends in `encoded` (it starts where i − 1 ends, or at 0). */
  readonly entryEnds: Uint32Array;
  /** What the main thread read of each reading, and decided on; the full decode must agree. */
  readonly scanned: ScannedFields;
  readonly window: TimeWindow;
  /** When the batch was received, epoch ms; stored as received_at. */
  readonly receivedAtMs: number;
  /** Each battery unit's trend so far (units in this batch only, and only those with one). */
  readonly batteryTrends: PackedBatteryTrends;
}

export interface ScannedFields {
  readonly deviceIds: readonly string[];
  readonly eventIds: readonly string[];
  /** NaN where observed_at is unset. */
  readonly observedAtMs: Float64Array;
  /** KIND_CODES, 0 where the reading has no sample. */
  readonly kinds: Uint8Array;
}

/** A sample's kind as a byte, for ScannedFields. */
export const KIND_CODES: Readonly<Record<DeviceKind, number>> = { meter: 1, vehicle: 2, battery: 3 };

/** A reading that cannot be decoded, or that decodes differently from what the main thread read. */
export interface Undecodable {
  readonly offset: number;
  readonly message: string;
}

export interface TablePayload {
  /** Encoded rows, back to back. */
  readonly payload: Uint8Array;
  /** rowEnds[i] is the byte offset where row i ends (row i starts at rowEnds[i - 1], or 0). */
  readonly rowEnds: Uint32Array;
  /** offsets[i] is row i's position in the batch. */
  readonly offsets: Uint32Array;
}

export interface ProcessedRejection {
  readonly offset: number;
  readonly reason: number;
  readonly message: string;
}

export interface ProcessedBatch {
  readonly count: number;
  /** Readings not processed at all: the calls that sent them are refused as malformed. */
  readonly undecodable: Undecodable[];
  readonly rejected: ProcessedRejection[];
  readonly tables: Partial<Record<DeviceKind, TablePayload>>;
  /** The newest valid reading per device (ties: the later in the batch), packed for the crossing. */
  readonly live: PackedLiveUpdates;
}

export function processBatch(task: ProcessTask): ProcessedBatch {
  const { readings, undecodable } = decodeEntries(task);
  const rejected: ProcessedRejection[] = [];
  const builders = new Map<DeviceKind, TableBuilder>();
  const live = new Map<string, LiveUpdate>();
  const trends = unpackBatteryTrends(task.batteryTrends);

  // Battery trends move forward in observed order, so each unit's readings are scored oldest
  // first; other kinds need no order (live state keeps the newest by observed_at either way), and
  // sorting every reading of a batch cost the worker more than scoring the batteries.
  const valid: { offset: number; value: HistoryRow }[] = [];
  const batteries: { offset: number; value: HistoryRow }[] = [];
  readings.forEach((reading, offset) => {
    if (reading === undefined) return;
    const result = validateReading(reading, task.window);
    if (!result.ok) rejected.push({ offset, reason: result.rejection.reason, message: result.rejection.message });
    else (result.value.kind === "battery" ? batteries : valid).push({ offset, value: result.value });
  });
  batteries.sort((a, b) => a.value.row.observed_at - b.value.row.observed_at || a.offset - b.offset);

  for (const { offset, value } of valid.concat(batteries)) {
    const scored = score(value, trends);
    let builder = builders.get(value.kind);
    if (builder === undefined) builders.set(value.kind, (builder = new TableBuilder()));
    builder.add(offset, (out) => encodeRow(value.kind, scored.row, task.receivedAtMs, out));

    const current = live.get(value.row.device_id);
    if (current === undefined || value.row.observed_at >= current.observedAtMs) {
      const { device_id, observed_at, ...values } = scored.row;
      live.set(device_id, {
        deviceId: device_id,
        kind: value.kind,
        observedAtMs: observed_at,
        values,
        ...(value.kind === "battery" ? { trend: trends.get(device_id) } : {}),
      });
    } else if (value.kind === "battery") {
      // An older reading of the same unit still moved nothing; keep the newest's values.
      live.set(current.deviceId, { ...current, trend: trends.get(current.deviceId) });
    }
  }

  const tables: Partial<Record<DeviceKind, TablePayload>> = {};
  for (const [kind, builder] of builders) tables[kind] = builder.finish();
  return { count: readings.length, undecodable, rejected, tables, live: packLiveUpdates([...live.values()]) };
}

/**
 * Decodes each reading from its own entry, so a malformed one cannot shift where the next is read,
 * and checks it against what the main thread read of it: the main thread authorised, rate-limited
 * and claimed the reading by those fields, so a reading whose full decode says otherwise (a sample
 * overrunning its length, which protobuf-es reads past) is refused rather than stored as something
 * else.
 */
function decodeEntries(task: ProcessTask): { readings: (Reading | undefined)[]; undecodable: Undecodable[] } {
  const { encoded, entryEnds, scanned } = task;
  const readings: (Reading | undefined)[] = [];
  const undecodable: Undecodable[] = [];
  let start = 0;
  for (let offset = 0; offset < entryEnds.length; offset++) {
    const end = entryEnds[offset]!;
    let reading: Reading | undefined;
    try {
      const decoded = fromBinary(IngestReadingsRequestSchema, encoded.subarray(start, end)).readings;
      if (decoded.length !== 1) throw new Error(`an entry held ${decoded.length} readings`);
      reading = decoded[0]!;
    } catch (error) {
      undecodable.push({ offset, message: `it is not a valid Reading: ${error instanceof Error ? error.message : String(error)}` });
    }
    start = end;
    if (reading === undefined) {
      readings.push(undefined);
      continue;
    }
    const observedAtMs = reading.observedAt === undefined ? NaN : timestampMs(reading.observedAt);
    const agrees =
      reading.deviceId === scanned.deviceIds[offset] &&
      reading.eventId === scanned.eventIds[offset] &&
      sameTime(observedAtMs, scanned.observedAtMs[offset]!) &&
      (reading.sample.case === undefined ? 0 : KIND_CODES[reading.sample.case]) === scanned.kinds[offset];
    if (!agrees) {
      undecodable.push({ offset, message: "it is malformed: its fields read differently in full (a sample overruns its length?)" });
      readings.push(undefined);
      continue;
    }
    readings.push(reading);
  }
  return { readings, undecodable };
}

function sameTime(a: number, b: number): boolean {
  return a === b || (Number.isNaN(a) && Number.isNaN(b));
}

/** Adds the derived columns: a battery's health score, a vehicle's temperature risk. */
function score(value: HistoryRow, trends: Map<string, BatteryTrend>): { row: Record<string, unknown> & { device_id: string; observed_at: number } } {
  switch (value.kind) {
    case "battery": {
      const { row } = value;
      const result = scoreBattery(
        { voltage: row.voltage, temperature: row.temperature, errorCodes: row.error_codes, observedAtMs: row.observed_at },
        trends.get(row.device_id),
      );
      trends.set(row.device_id, result.trend);
      return {
        row: {
          ...row,
          health_score: result.score,
          health_level: result.level,
          recommendation: result.recommendation,
          score_version: result.version,
        },
      };
    }
    case "vehicle":
      return {
        row: { ...value.row, temp_risk: vehicleTemperatureRisk(value.row.battery_temp), score_version: VEHICLE_SCORE_VERSION },
      };
    case "meter":
      return { row: { ...value.row } };
  }
}

class TableBuilder {
  private readonly out = new RowBinaryWriter();
  private readonly ends: number[] = [];
  private readonly offsets: number[] = [];

  add(offset: number, write: (out: RowBinaryWriter) => void): void {
    write(this.out);
    this.ends.push(this.out.length);
    this.offsets.push(offset);
  }

  finish(): TablePayload {
    return { payload: this.out.finish(), rowEnds: Uint32Array.from(this.ends), offsets: Uint32Array.from(this.offsets) };
  }
}
