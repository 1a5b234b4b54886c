import { describe, expect, it } from "vitest";
import { VEHICLE_SCORE_VERSION, vehicleTemperatureRisk } from "./vehicle-temperature.js";

describe("vehicleTemperatureRisk", () => {
  it("is version 1", () => {
    expect(VEHICLE_SCORE_VERSION).toBe(1);
  });

  it.each([
    // Too cold to charge at all: outside even the discharge range.
    [-50, "CRITICAL"],
    [-20.01, "CRITICAL"],
    // Cold: charging below 0 °C plates lithium.
    [-20, "WARN"],
    [-0.01, "WARN"],
    // The comfortable range.
    [0, "OK"],
    [25, "OK"],
    [39.99, "OK"],
    // Warm: ageing speeds up.
    [40, "WARN"],
    [49.99, "WARN"],
    // Hot: past most cells' charging limit.
    [50, "CRITICAL"],
    [100, "CRITICAL"],
  ] as const)("%s °C is %s", (temp, level) => {
    expect(vehicleTemperatureRisk(temp)).toBe(level);
  });

  it("throws a RangeError for a non-finite temperature instead of calling it OK", () => {
    expect(() => vehicleTemperatureRisk(Number.NaN)).toThrow(RangeError);
    expect(() => vehicleTemperatureRisk(Number.NEGATIVE_INFINITY)).toThrow(/batteryTempC/);
  });
});
