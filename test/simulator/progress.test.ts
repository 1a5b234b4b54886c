// The simulator's progress line: rewritten in place on a terminal, plain periodic lines otherwise.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ProgressReporter, RateMeter, type ProgressSnapshot } from "../../bench/simulator/progress.js";

function snapshotAt(acknowledged: number): ProgressSnapshot {
  return {
    elapsedS: acknowledged / 100,
    simulatedAtMs: Date.UTC(2026, 10, 25, 14, 3),
    phase: "running",
    sent: acknowledged + 10,
    acknowledged,
    duplicates: 3,
    rejected: 1,
    pending: 10,
    retries: 2,
    failedCalls: 1,
    offline: 1,
    devices: 8,
  };
}

describe("the progress line", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("rewrites one line in place on a terminal, cut to its width, and ends it on stop", () => {
    const writes: string[] = [];
    let acknowledged = 0;
    const out = { write: (s: string) => writes.push(s), isTTY: true, columns: 60 };
    const progress = new ProgressReporter(out, () => snapshotAt(acknowledged));
    progress.start();
    for (let i = 0; i < 8; i++) {
      acknowledged += 250;
      vi.advanceTimersByTime(250);
    }
    progress.stop();
    const lines = writes.slice(0, -1);
    expect(lines.length).toBeGreaterThanOrEqual(8);
    for (const line of lines) {
      expect(line.startsWith("\r")).toBe(true);
      expect(line.endsWith("\x1b[K")).toBe(true);
      expect(line.length - "\r\x1b[K".length).toBeLessThanOrEqual(59);
    }
    expect(writes.at(-1)).toBe("\n");
  });

  it("prints whole lines every few seconds when not a terminal, with the acknowledged rate", () => {
    const writes: string[] = [];
    let acknowledged = 0;
    const progress = new ProgressReporter({ write: (s: string) => writes.push(s), isTTY: false }, () => snapshotAt(acknowledged), { plainIntervalMs: 5000 });
    progress.start();
    acknowledged = 5000;
    vi.advanceTimersByTime(5000);
    progress.stop();
    expect(writes).toHaveLength(2);
    for (const line of writes) {
      expect(line.endsWith("\n")).toBe(true);
      expect(line).not.toContain("\r");
    }
    expect(writes[0]).toMatch(/sim 2026-11-25 14:03 {2}sent 5,010 {2}ack 5,000 \(dup 3\) {2}rejected 1 {2}pending 10 {2}retries 2 {2}offline 1\/8 {2}1,000 ack\/s/);
  });
});

describe("the rate meter", () => {
  it("measures over a sliding window", () => {
    const meter = new RateMeter(3000);
    expect(meter.update(0, 0)).toBe(0);
    expect(meter.update(1000, 100)).toBe(100);
    expect(meter.update(2000, 200)).toBe(100);
    // Slower now: the window forgets the old pace.
    meter.update(4000, 220);
    meter.update(6000, 240);
    expect(meter.update(8000, 260)).toBeCloseTo(10, 0);
  });
});
