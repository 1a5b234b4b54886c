// The worker's live-state updates on their way to the main thread: one per device per batch, so
// about one per reading. As objects, the structured clone writes and reads every property name of
// every update and of its values and trend: 1.0–1.3 µs per update to receive on the main thread,
// where the service is shortest of time. Packed as columns (ids, kinds, times, every value in one
// flat list, and each distinct key list once) receiving and unpacking costs 0.5–0.7 µs there, and
// packing in the worker about what posting objects did (bench/main-thread-costs.ts).
import type { DeviceKind } from "./history-rows.js";
import type { BatteryTrend } from "./scoring/battery-health.js";

export interface LiveUpdate {
  readonly deviceId: string;
  readonly kind: DeviceKind;
  readonly observedAtMs: number;
  readonly values: Record<string, unknown>;
  /** A battery unit's trend after this batch. */
  readonly trend?: BatteryTrend | undefined;
}

export interface PackedLiveUpdates {
  readonly deviceIds: string[];
  readonly kinds: DeviceKind[];
  readonly observedAtMs: Float64Array;
  /** The distinct key lists of the updates' values and trends, each once. */
  readonly shapes: string[][];
  /** Per update, the index in `shapes` of its values' keys. */
  readonly valueShapes: Uint16Array;
  /** Per update, the index in `shapes` of its trend's keys, or NO_TREND. */
  readonly trendShapes: Uint16Array;
  /** Each update's values, then its trend's, in the order of their shapes' keys. */
  readonly cells: unknown[];
}

const NO_TREND = 0xffff;

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
    deviceIds: new Array<string>(count),
    kinds: new Array<DeviceKind>(count),
    observedAtMs: new Float64Array(count),
    shapes,
    valueShapes: new Uint16Array(count),
    trendShapes: new Uint16Array(count),
    cells: [],
  };
  updates.forEach((update, i) => {
    packed.deviceIds[i] = update.deviceId;
    packed.kinds[i] = update.kind;
    packed.observedAtMs[i] = update.observedAtMs;
    const valueShape = shapeOf(update.values, update.kind);
    packed.valueShapes[i] = valueShape;
    for (const key of shapes[valueShape]!) packed.cells.push(update.values[key]);
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

/** The updates as the live store takes them, each stamped with when its batch was received. */
export function unpackLiveUpdates(
  packed: PackedLiveUpdates,
  receivedAtMs: number,
): { deviceId: string; kind: DeviceKind; observedAtMs: number; receivedAtMs: number; values: Record<string, unknown>; trend: Record<string, number> | undefined }[] {
  const { deviceIds, kinds, observedAtMs, shapes, valueShapes, trendShapes, cells } = packed;
  let cell = 0;
  const take = (shape: readonly string[]): Record<string, unknown> => {
    const object: Record<string, unknown> = {};
    for (const key of shape) object[key] = cells[cell++];
    return object;
  };
  return deviceIds.map((deviceId, i) => {
    const values = take(shapes[valueShapes[i]!]!);
    const trendShape = trendShapes[i]!;
    const trend = trendShape === NO_TREND ? undefined : (take(shapes[trendShape]!) as Record<string, number>);
    return { deviceId, kind: kinds[i]!, observedAtMs: observedAtMs[i]!, receivedAtMs, values, trend };
  });
}
