import { describe, expect, it } from "vitest";
import { packBatteryTrends, unpackBatteryTrends } from "./battery-trends.js";
import { scoreBattery } from "./scoring/battery-health.js";

const trend = { baselineVoltage: 48.2, tempEwma: 31.5, errorStreak: 2, samples: 17, lastObservedAtMs: 1_700_000_000_123.5 };

/** What the worker receives: the fields' buffer moved, as the pool moves it. */
function crossed(packed: ReturnType<typeof packBatteryTrends>) {
  return structuredClone(packed, { transfer: [packed.fields.buffer as ArrayBuffer] });
}

describe("battery trends packed for the crossing to the worker", () => {
  it("arrive as they were read, by device id; units without a trend are left out", () => {
    const other = { baselineVoltage: 51, tempEwma: -4.25, errorStreak: 0, samples: 1, lastObservedAtMs: 5 };
    const packed = packBatteryTrends(["bbu-1", "bbu-new", "bbu-é"], [trend, undefined, other]);
    expect(packed.deviceIds).toEqual(["bbu-1", "bbu-é"]);
    expect(unpackBatteryTrends(crossed(packed))).toEqual(
      new Map([
        ["bbu-1", trend],
        ["bbu-é", other],
      ]),
    );
    expect(unpackBatteryTrends(crossed(packBatteryTrends([], [])))).toEqual(new Map());
  });

  it("turn a stored trend's missing or non-number field into NaN, which the scorer treats as no trend", () => {
    const broken = { ...trend, samples: "17" as unknown as number, errorStreak: undefined as unknown as number };
    const unpacked = unpackBatteryTrends(crossed(packBatteryTrends(["bbu-1"], [broken]))).get("bbu-1")!;
    expect(unpacked.samples).toBeNaN();
    expect(unpacked.errorStreak).toBeNaN();
    const input = { voltage: 44, temperature: 50, errorCodes: ["E1"], observedAtMs: trend.lastObservedAtMs + 60_000 };
    expect(scoreBattery(input, unpacked)).toEqual(scoreBattery(input, undefined));
    // A sound trend does change the score (the sag against its baseline), so the line above can fail.
    expect(scoreBattery(input, trend)).not.toEqual(scoreBattery(input, undefined));
  });
});
