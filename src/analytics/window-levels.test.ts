import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { windowLevels } from "./window-levels.js";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

/** Which level a reading at `at` is read from, by the rules the queries use. */
function levelOf(at: number, w: ReturnType<typeof windowLevels>): "hour" | "minute" | "raw" | "outside" {
  if (at < w.fromMs || at >= w.toMs) return "outside";
  if (at >= w.hourFromMs && at < w.hourToMs) return "hour";
  if (at >= w.fullFromMs && at < w.fullToMs) return "minute";
  return "raw";
}

describe("windowLevels", () => {
  it("splits a day ending mid-minute into whole hours, whole minutes and raw edges", () => {
    const end = Date.parse("2026-11-25T16:57:30.500Z");
    const w = windowLevels(end - 24 * HOUR, end);
    expect(new Date(w.fullFromMs).toISOString()).toBe("2026-11-24T16:58:00.000Z");
    expect(new Date(w.fullToMs).toISOString()).toBe("2026-11-25T16:57:00.000Z");
    expect(new Date(w.hourFromMs).toISOString()).toBe("2026-11-24T17:00:00.000Z");
    expect(new Date(w.hourToMs).toISOString()).toBe("2026-11-25T16:00:00.000Z");
  });

  it("has empty coarser levels when the window holds no whole hour or minute", () => {
    const w = windowLevels(HOUR + 10, HOUR + 50_000);
    expect(w.fullToMs).toBe(w.fullFromMs);
    expect(w.hourToMs).toBe(w.hourFromMs);
    const m = windowLevels(HOUR - 90_000, HOUR + 90_000);
    expect([m.fullFromMs, m.fullToMs]).toEqual([HOUR - MINUTE, HOUR + MINUTE]);
    expect(m.hourToMs).toBe(m.hourFromMs);
  });

  it("reads every millisecond of the window from exactly one level, each whole unit from its rollup", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10 * 24 * HOUR }), fc.integer({ min: 1, max: 3 * 24 * HOUR }), fc.array(fc.integer({ min: -HOUR, max: 4 * 24 * HOUR })), (from, length, offsets) => {
        const w = windowLevels(from, from + length);
        expect(w.fullFromMs <= w.fullToMs && w.hourFromMs <= w.hourToMs).toBe(true);
        for (const offset of offsets) {
          const at = from + offset;
          const level = levelOf(at, w);
          expect(level === "outside").toBe(at < from || at >= from + length);
          // A minute (hour) read from a rollup lies wholly inside the window: the rollup row
          // holds only readings of the window.
          if (level === "minute") {
            const start = Math.floor(at / MINUTE) * MINUTE;
            expect(start >= from && start + MINUTE <= from + length).toBe(true);
            expect(levelOf(start, w)).toBe("minute");
            expect(levelOf(start + MINUTE - 1, w)).toBe("minute");
          }
          if (level === "hour") {
            const start = Math.floor(at / HOUR) * HOUR;
            expect(levelOf(start, w)).toBe("hour");
            expect(levelOf(start + HOUR - 1, w)).toBe("hour");
          }
        }
      }),
    );
  });
});
