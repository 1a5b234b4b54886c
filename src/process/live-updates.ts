// The worker's live-state updates on their way to the main thread: one per device per batch, so
// about one per reading. As objects, the structured clone writes and reads every property name of
// every update and of its values and trend: 1.0–1.3 µs per update to receive on the main thread,
// where the service is shortest of time. Packed as columns (kinds, times, every value in one flat
// list, and each distinct key list once) receiving and unpacking costs 0.5–0.7 µs there, and
// packing in the worker about what posting objects did (bench/main-thread-costs.ts). The reading's
// own ids do not cross at all: the main thread holds them already (and its device ids from the
// scan's cache), so each update names its reading by position in the batch, and the clone makes
// no new string per update for the device id, the event id or the kind.
import { KIND_CODES, KINDS_BY_CODE, type DeviceKind } from "./history-rows.js";
import type { BatteryTrend } from "./scoring/battery-health.js";

export interface LiveUpdate {
  /** The position in the batch of the reading the update is of. */
  readonly offset: number;
  readonly deviceId: string;
  readonly kind: DeviceKind;
  readonly observedAtMs: number;
  readonly values: Record<string, unknown>;
  /** A battery unit's trend after this batch. */
  readonly trend?: BatteryTrend | undefined;
}

/** What the main thread holds of each reading of the batch: its ids, by position. */
export type BatchIds = readonly { readonly deviceId: string; readonly eventId: string }[];

export interface PackedLiveUpdates {
  /** Per update, the position of its reading in the batch. */
  readonly offsets: Uint32Array;
  /** Per update, its kind's KIND_CODES. */
  readonly kinds: Uint8Array;
  readonly observedAtMs: Float64Array;
  /** The distinct key lists of the updates' values and trends, each once. */
  readonly shapes: string[][];
  /** Per update, the index in `shapes` of its values' keys. */
  readonly valueShapes: Uint16Array;
  /** Per update, the index in `shapes` of its trend's keys, or NO_TREND. */
  readonly trendShapes: Uint16Array;
  /** Each update's values but event_id (the reading's own), then its trend's, in the order of their shapes' keys. */
  readonly cells: unknown[];
}

const NO_TREND = 0xffff;
/** The values' key that holds the reading's event id, which the main thread has. */
const EVENT_ID = "event_id";

export function packLiveUpdates(updates: readonly LiveUpdate[]): PackedLiveUpdates {
  const shapes: string[][] = [];
  const shapeIndex = new Map<string, number>();
  // The values of one kind, and trends, nearly always share a shape: checking the last one seen
  // for the same slot costs no allocation, where listing and joining the keys of every update cost
  // about as much as the clone saved.
  const lastShapes = new Map<string, number>();
  const shapeOf = (object: object, slot: string): number => {
    const last = lastShapes.get(slot);
    if (last !== undefined && hasKeys(object, shapes[last]!)) return last;
    const keys = Object.keys(object);
    const id = keys.join("\0");
    let index = shapeIndex.get(id);
    if (index === undefined) {
      index = shapes.push(keys) - 1;
      if (index >= NO_TREND) throw new RangeError("too many distinct live-state shapes in one batch");
      shapeIndex.set(id, index);
    }
    lastShapes.set(slot, index);
    return index;
  };
  const count = updates.length;
  const packed: PackedLiveUpdates = {
    offsets: new Uint32Array(count),
    kinds: new Uint8Array(count),
    observedAtMs: new Float64Array(count),
    shapes,
    valueShapes: new Uint16Array(count),
    trendShapes: new Uint16Array(count),
    cells: [],
  };
  updates.forEach((update, i) => {
    packed.offsets[i] = update.offset;
    packed.kinds[i] = KIND_CODES[update.kind];
    packed.observedAtMs[i] = update.observedAtMs;
    const valueShape = shapeOf(update.values, update.kind);
    packed.valueShapes[i] = valueShape;
    for (const key of shapes[valueShape]!) if (key !== EVENT_ID) packed.cells.push(update.values[key]);
    if (update.trend === undefined) {
      packed.trendShapes[i] = NO_TREND;
    } else {
      const trendShape = shapeOf(update.trend, "trend");
      packed.trendShapes[i] = trendShape;
      const trend = update.trend as unknown as Record<string, unknown>;
      for (const key of shapes[trendShape]!) packed.cells.push(trend[key]);
    }
  });
  return packed;
}

/** Whether the object's own enumerable keys are `keys`, in that order. */
function hasKeys(object: object, keys: readonly string[]): boolean {
  let i = 0;
  for (const key in object) {
    if (!Object.hasOwn(object, key) || key !== keys[i++]) return false;
  }
  return i === keys.length;
}

/**
 * The updates as the live store takes them, each stamped with when its batch was received; `batch`
 * is what the main thread holds of the batch's readings (the worker's were the same: it checks
 * each reading's ids against the main thread's scan).
 */
export function unpackLiveUpdates(
  packed: PackedLiveUpdates,
  receivedAtMs: number,
  batch: BatchIds,
): { deviceId: string; kind: DeviceKind; observedAtMs: number; receivedAtMs: number; values: Record<string, unknown>; trend: Record<string, number> | undefined }[] {
  const { offsets, kinds, observedAtMs, shapes, valueShapes, trendShapes, cells } = packed;
  let cell = 0;
  const take = (shape: readonly string[], eventId: string | undefined): Record<string, unknown> => {
    const object: Record<string, unknown> = {};
    for (let k = 0; k < shape.length; k++) {
      const key = shape[k]!;
      object[key] = key === EVENT_ID && eventId !== undefined ? eventId : cells[cell++];
    }
    return object;
  };
  const updates = new Array<ReturnType<typeof unpackLiveUpdates>[number]>(offsets.length);
  for (let i = 0; i < offsets.length; i++) {
    const reading = batch[offsets[i]!]!;
    const values = take(shapes[valueShapes[i]!]!, reading.eventId);
    const trendShape = trendShapes[i]!;
    const trend = trendShape === NO_TREND ? undefined : (take(shapes[trendShape]!, undefined) as Record<string, number>);
    updates[i] = { deviceId: reading.deviceId, kind: KINDS_BY_CODE[kinds[i]!]!, observedAtMs: observedAtMs[i]!, receivedAtMs, values, trend };
  }
  return updates;
}
