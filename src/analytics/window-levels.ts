// How a window [fromMs, toMs) splits across the rollup levels, so that a sum over the levels equals
// a sum over the raw rows in the window: whole hours from the hourly rollups, the whole minutes
// outside them from the minute rollups, and the partial minutes at the edges from raw rows.
// Each level is one range and the levels nest (hours ⊆ minutes ⊆ window), so every query reads a
// level as `in its range AND NOT in the next coarser level's range`.

const MINUTE_MS = 60_000;
const HOUR_MS = 3_600_000;

export interface WindowLevels {
  readonly fromMs: number;
  readonly toMs: number;
  /** Whole minutes [fullFromMs, fullToMs); empty (both equal) when the window holds none. */
  readonly fullFromMs: number;
  readonly fullToMs: number;
  /** Whole hours [hourFromMs, hourToMs) inside the whole minutes; empty (both equal) when none. */
  readonly hourFromMs: number;
  readonly hourToMs: number;
}

/**
 * The whole minutes inside [fromMs, toMs): [fullFromMs, fullToMs). Empty (fullFromMs = fullToMs)
 * when the interval holds no whole minute; then everything is read from raw rows.
 */
export function wholeMinutes(fromMs: number, toMs: number): { fullFromMs: number; fullToMs: number } {
  const [fullFromMs, fullToMs] = whole(fromMs, toMs, MINUTE_MS);
  return { fullFromMs, fullToMs };
}

export function windowLevels(fromMs: number, toMs: number): WindowLevels {
  const { fullFromMs, fullToMs } = wholeMinutes(fromMs, toMs);
  const [hourFromMs, hourToMs] = whole(fullFromMs, fullToMs, HOUR_MS);
  return { fromMs, toMs, fullFromMs, fullToMs, hourFromMs, hourToMs };
}

/** The whole units inside [fromMs, toMs), or the empty range [fromMs, fromMs). */
function whole(fromMs: number, toMs: number, unitMs: number): [number, number] {
  const first = Math.ceil(fromMs / unitMs) * unitMs;
  const last = Math.floor(toMs / unitMs) * unitMs;
  return first < last ? [first, last] : [fromMs, fromMs];
}
