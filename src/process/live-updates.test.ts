import { describe, expect, it } from "vitest";
import { packLiveUpdates, unpackLiveUpdates, type LiveUpdate } from "./live-updates.js";

const trend = { baselineVoltage: 48.2, tempEwma: 31.5, errorStreak: 0, samples: 4, lastObservedAtMs: 1_700_000_000_123 };
const updates: LiveUpdate[] = [
  { deviceId: "meter-1", kind: "meter", observedAtMs: 1_700_000_000_001, values: { event_id: "e1", kwh_consumed_ac: 0.25, voltage: 231, register_kwh_ac: null } },
  {
    deviceId: "ev-1",
    kind: "vehicle",
    observedAtMs: 1_700_000_000_002.5,
    values: { event_id: "e2", soc: 55, kwh_delivered_dc: 0.2, battery_temp: 30, register_kwh_dc: 1234.5, temp_risk: "OK", score_version: "vehicle-temp/1" },
  },
  {
    deviceId: "bbu-é",
    kind: "battery",
    observedAtMs: 1_700_000_000_003,
    values: { event_id: "e3", voltage: 47.9, temperature: 35, error_codes: ["E12", "E7"], health_score: 61.5, health_level: "WARN", recommendation: "service" },
    trend,
  },
  // A second meter whose values lack a key: its own shape, not the first meter's.
  { deviceId: "meter-2", kind: "meter", observedAtMs: 1_700_000_000_004, values: { event_id: "e4", voltage: 229 } },
  { deviceId: "meter-3", kind: "meter", observedAtMs: 1_700_000_000_005, values: { event_id: "e5", kwh_consumed_ac: 0, voltage: 0, register_kwh_ac: 7 } },
];

describe("live updates packed for the crossing to the main thread", () => {
  it("arrive as they were sent, through a structured clone, each with the batch's receive time", () => {
    const packed = structuredClone(packLiveUpdates(updates));
    const unpacked = unpackLiveUpdates(packed, 42);
    expect(unpacked).toEqual(updates.map((u) => ({ ...u, receivedAtMs: 42, trend: u.trend })));
    // Keys keep their order, so the stored state reads as the row did.
    expect(unpacked.map((u) => Object.keys(u.values))).toEqual(updates.map((u) => Object.keys(u.values)));
    expect(unpacked[2]!.trend).toEqual(trend);
    expect(unpacked[0]!.trend).toBeUndefined();
  });

  it("send each key list once, not once per update", () => {
    const many = Array.from({ length: 1_000 }, (_, i) => ({ ...updates[i % 3]!, deviceId: `d-${i}` }));
    const packed = packLiveUpdates(many);
    // meter, vehicle and battery values, and the battery trend.
    expect(packed.shapes).toHaveLength(4);
    expect(unpackLiveUpdates(packed, 1).map((u) => u.deviceId)).toEqual(many.map((u) => u.deviceId));
  });

  it("pack nothing to nothing", () => {
    expect(unpackLiveUpdates(packLiveUpdates([]), 1)).toEqual([]);
  });
});
