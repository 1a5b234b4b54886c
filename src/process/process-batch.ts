// The CPU work of one batch, done in a worker thread: decode the readings, validate them, score
// them, and encode the accepted ones as insert payloads — one per history table, with the byte
// ends and batch offsets of its rows so the caller can drop rows (duplicates) without re-encoding.
// Pure and synchronous: no I/O, no shared state.
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Reading } from "../../gen/wattstream/telemetry/v1/reading_pb.js";
import { unpackBatteryTrends, type PackedBatteryTrends } from "./battery-trends.js";
import { decodeReadingEntry } from "./decode-reading.js";
import { KIND_CODES, type DeviceKind, type HistoryRow } from "./history-rows.js";
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
      const { device_id, observed_at } = scored.row;
      live.set(device_id, {
        offset,
        deviceId: device_id,
        kind: value.kind,
        observedAtMs: observed_at,
        values: scored.values,
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
 * and claimed the reading by those fields, so a reading whose full decode says otherwise is refused
 * rather than stored as something else. (The decoder refuses the one such message known, a sample
 * overrunning its length; the check stays, as the two are separate code.)
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
      reading = decodeReadingEntry(encoded.subarray(start, end));
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

/**
 * Adds the derived columns (a battery's health score, a vehicle's temperature risk), and answers
 * beside the row the values live state keeps of it: every column but device_id and observed_at.
 * Literals of fixed shapes rather than spreads and a rest pattern: this runs once per reading, and
 * the copies by spread cost ~7 % of processBatch (measured against the literals in one process).
 */
function score(value: HistoryRow, trends: Map<string, BatteryTrend>): Scored {
  switch (value.kind) {
    case "battery": {
      const { device_id, event_id, observed_at, voltage, temperature, error_codes } = value.row;
      const result = scoreBattery({ voltage, temperature, errorCodes: error_codes, observedAtMs: observed_at }, trends.get(device_id));
      trends.set(device_id, result.trend);
      const { score: health_score, level: health_level, recommendation, version: score_version } = result;
      return {
        row: { device_id, event_id, observed_at, voltage, temperature, error_codes, health_score, health_level, recommendation, score_version },
        values: { event_id, voltage, temperature, error_codes, health_score, health_level, recommendation, score_version },
      };
    }
    case "vehicle": {
      const { device_id, event_id, observed_at, soc, kwh_delivered_dc, battery_temp, register_kwh_dc } = value.row;
      const temp_risk = vehicleTemperatureRisk(battery_temp);
      const score_version = VEHICLE_SCORE_VERSION;
      return {
        row: { device_id, event_id, observed_at, soc, kwh_delivered_dc, battery_temp, register_kwh_dc, temp_risk, score_version },
        values: { event_id, soc, kwh_delivered_dc, battery_temp, register_kwh_dc, temp_risk, score_version },
      };
    }
    case "meter": {
      const { device_id, event_id, observed_at, kwh_consumed_ac, voltage, register_kwh_ac } = value.row;
      return {
        row: { device_id, event_id, observed_at, kwh_consumed_ac, voltage, register_kwh_ac },
        values: { event_id, kwh_consumed_ac, voltage, register_kwh_ac },
      };
    }
  }
}

interface Scored {
  readonly row: Record<string, unknown> & { readonly device_id: string; readonly observed_at: number };
  readonly values: Record<string, unknown>;
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
