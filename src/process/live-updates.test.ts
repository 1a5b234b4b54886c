import { describe, expect, it } from "vitest";
import { packLiveUpdates, unpackLiveUpdates, type BatchIds, type LiveUpdate } from "./live-updates.js";

const trend = { baselineVoltage: 48.2, tempEwma: 31.5, errorStreak: 0, samples: 4, lastObservedAtMs: 1_700_000_000_123 };
const updates: LiveUpdate[] = [
  { offset: 4, deviceId: "meter-1", kind: "meter", observedAtMs: 1_700_000_000_001, values: { event_id: "e1", kwh_consumed_ac: 0.25, voltage: 231, register_kwh_ac: null } },
  {
    offset: 0,
    deviceId: "ev-1",
    kind: "vehicle",
    observedAtMs: 1_700_000_000_002.5,
    values: { event_id: "e2", soc: 55, kwh_delivered_dc: 0.2, battery_temp: 30, register_kwh_dc: 1234.5, temp_risk: "OK", score_version: "vehicle-temp/1" },
  },
  {
    offset: 2,
    deviceId: "bbu-é",
    kind: "battery",
    observedAtMs: 1_700_000_000_003,
    values: { event_id: "e3", voltage: 47.9, temperature: 35, error_codes: ["E12", "E7"], health_score: 61.5, health_level: "WARN", recommendation: "service" },
    trend,
  },
  // A second meter whose values lack a key: its own shape, not the first meter's.
  { offset: 5, deviceId: "meter-2", kind: "meter", observedAtMs: 1_700_000_000_004, values: { event_id: "e4", voltage: 229 } },
  { offset: 6, deviceId: "meter-3", kind: "meter", observedAtMs: 1_700_000_000_005, values: { event_id: "e5", kwh_consumed_ac: 0, voltage: 0, register_kwh_ac: 7 } },
];

/** The batch as the main thread holds it: each update's reading at its offset, among readings with none. */
const batch: BatchIds = Array.from({ length: 7 }, (_, i) => {
  const update = updates.find((u) => u.offset === i);
  return update === undefined ? { deviceId: `other-${i}`, eventId: `x${i}` } : { deviceId: update.deviceId, eventId: update.values.event_id as string };
});

describe("live updates packed for the crossing to the main thread", () => {
  it("arrive as they were sent, through a structured clone, each with the batch's receive time", () => {
    const packed = structuredClone(packLiveUpdates(updates));
    const unpacked = unpackLiveUpdates(packed, 42, batch);
    expect(unpacked).toEqual(updates.map(({ offset: _, ...u }) => ({ ...u, receivedAtMs: 42, trend: u.trend })));
    // Keys keep their order, so the stored state reads as the row did.
    expect(unpacked.map((u) => Object.keys(u.values))).toEqual(updates.map((u) => Object.keys(u.values)));
    expect(unpacked[2]!.trend).toEqual(trend);
    expect(unpacked[0]!.trend).toBeUndefined();
  });

  it("send each key list once, not once per update", () => {
    const many = Array.from({ length: 1_000 }, (_, i) => ({ ...updates[i % 3]!, deviceId: `d-${i}` }));
    const packed = packLiveUpdates(many.map((u, i) => ({ ...u, offset: i })));
    // meter, vehicle and battery values, and the battery trend.
    expect(packed.shapes).toHaveLength(4);
    const manyIds = many.map((u) => ({ deviceId: u.deviceId, eventId: u.values.event_id as string }));
    expect(unpackLiveUpdates(packed, 1, manyIds).map((u) => u.deviceId)).toEqual(many.map((u) => u.deviceId));
  });

  it("take each reading's ids from the batch the main thread holds: none cross", () => {
    const packed = packLiveUpdates(updates);
    // No string of an id among what is sent (the values' other strings are).
    const sent = JSON.stringify([...packed.cells, ...packed.shapes]);
    for (const u of updates) expect(sent).not.toContain(`"${u.deviceId}"`);
    for (const u of updates) expect(sent).not.toContain(`"${u.values.event_id as string}"`);
    const unpacked = unpackLiveUpdates(structuredClone(packed), 1, batch);
    unpacked.forEach((u, i) => {
      expect(u.deviceId).toBe(batch[updates[i]!.offset]!.deviceId);
      expect(u.values.event_id).toBe(batch[updates[i]!.offset]!.eventId);
    });
  });

  it("pack nothing to nothing", () => {
    expect(unpackLiveUpdates(packLiveUpdates([]), 1, [])).toEqual([]);
  });
});
