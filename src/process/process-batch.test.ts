// The worker decodes each reading in full and holds it to what the main thread read of it: a
// reading that is malformed, or that the two read apart, is refused, never stored as something the
// main thread did not see.
import { create, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { StreamReadingsRequestSchema } from "../../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { ReadingSchema } from "../../gen/wattstream/telemetry/v1/reading_pb.js";
import { batteryReading, meterReading, overrunningReading } from "../../test/support/readings.js";
import { scanReadings, toProcessInput } from "../pipeline/received-reading.js";
import { packBatteryTrends } from "./battery-trends.js";
import { unpackLiveUpdates } from "./live-updates.js";
import { processBatch } from "./process-batch.js";
import { scoreBattery } from "./scoring/battery-health.js";

const NOW = Date.UTC(2026, 10, 26, 12, 0, 0);
const WINDOW = { nowMs: NOW, maxReadingAgeMs: 30 * 86_400_000, maxClockSkewMs: 300_000 };

describe("processBatch", () => {
  it("refuses a reading whose sample overruns its length (protobuf-es reads on into a second device_id), and processes the others", () => {
    const good = toBinary(
      StreamReadingsRequestSchema,
      create(StreamReadingsRequestSchema, {
        readings: [
          create(ReadingSchema, {
            deviceId: "meter-good",
            eventId: "g-1",
            observedAt: timestampFromMs(NOW - 1_000),
            sample: { case: "meter", value: { kwhConsumedAc: 0.4, voltage: 230 } },
          }),
        ],
      }),
    );
    const bad = new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(overrunningReading("x-1", NOW - 60_000)).finish();
    const readings = [...scanReadings(bad).readings, ...scanReadings(good).readings];
    expect(readings.map((r) => r.deviceId)).toEqual(["meterB", "meter-good"]);

    const batch = processBatch({ ...toProcessInput(readings), window: WINDOW, receivedAtMs: NOW, batteryTrends: packBatteryTrends([], []) });
    expect(batch.undecodable).toEqual([{ offset: 0, message: "it is not a valid Reading: meter is malformed: its last field overruns its length" }]);
    expect(batch.rejected).toEqual([]);
    expect([...batch.tables.meter!.offsets]).toEqual([1]);
    expect(unpackLiveUpdates(batch.live, NOW, readings).map((u) => u.deviceId)).toEqual(["meter-good"]);
  });

  it("refuses a reading it decodes otherwise than the main thread read it, which authorised it by those fields", () => {
    const frame = toBinary(StreamReadingsRequestSchema, create(StreamReadingsRequestSchema, { readings: [meterReading("meter-1", "m-1", NOW - 1_000, 0.4)] }));
    const input = toProcessInput(scanReadings(frame).readings);
    const batch = processBatch({
      ...input,
      scanned: { ...input.scanned, deviceIds: ["meter-2"] },
      window: WINDOW,
      receivedAtMs: NOW,
      batteryTrends: packBatteryTrends([], []),
    });
    expect(batch.undecodable).toEqual([{ offset: 0, message: expect.stringContaining("its fields read differently in full") }]);
    expect(batch.tables).toEqual({});
  });

  it("refuses a reading that does not decode at all", () => {
    // A Reading entry whose event_id declares 5 bytes of which 2 follow: the scan cannot see it
    // (its framing is the main thread's), only the worker's decode of the entry.
    const entry = new Uint8Array([0x0a, 0x04, 0x0a, 0x05, 0x61, 0x62]);
    const batch = processBatch({
      encoded: entry,
      entryEnds: Uint32Array.of(entry.length),
      scanned: { deviceIds: [""], eventIds: [""], observedAtMs: Float64Array.of(NaN), kinds: Uint8Array.of(0) },
      window: WINDOW,
      receivedAtMs: NOW,
      batteryTrends: packBatteryTrends([], []),
    });
    expect(batch.undecodable).toEqual([{ offset: 0, message: expect.stringContaining("not a valid Reading") }]);
    expect(batch.tables).toEqual({});
  });

  it("scores a unit's readings in observed order whatever order they came in, and keeps each device's newest", () => {
    const at = (minutes: number) => NOW - 60 * 60_000 + minutes * 60_000;
    // [minute, voltage, temperature, codes]: a unit's readings out of order, meters between them.
    const unit: [number, number, number, string[]][] = [
      [30, 46.1, 52, ["E7"]],
      [10, 48.4, 30, []],
      [40, 45.0, 58, ["E7", "E9"]],
      [20, 47.2, 47, ["E7"]],
    ];
    const sent = [
      meterReading("meter-1", "m-2", at(25), 0.5),
      ...unit.map(([minute, voltage, temperature, codes], i) => batteryReading("bbu-1", `b-${i}`, at(minute), voltage, temperature, codes)),
      meterReading("meter-1", "m-1", at(5), 0.4),
    ];
    const frame = toBinary(StreamReadingsRequestSchema, create(StreamReadingsRequestSchema, { readings: sent }));
    const scanned = scanReadings(frame).readings;
    const batch = processBatch({ ...toProcessInput(scanned), window: WINDOW, receivedAtMs: NOW, batteryTrends: packBatteryTrends([], []) });
    expect(batch.rejected).toEqual([]);

    // The scorer fed the unit's readings oldest first, by hand.
    let expected;
    for (const [minute, voltage, temperature, errorCodes] of [...unit].sort((a, b) => a[0] - b[0])) {
      expected = scoreBattery({ voltage, temperature, errorCodes, observedAtMs: at(minute) }, expected?.trend);
    }
    const live = new Map(unpackLiveUpdates(batch.live, NOW, scanned).map((u) => [u.deviceId, u]));
    expect(live.get("bbu-1")).toMatchObject({ observedAtMs: at(40), values: { health_score: expected!.score }, trend: expected!.trend });
    expect(live.get("meter-1")).toMatchObject({ observedAtMs: at(25), values: { event_id: "m-2" } });
    expect([...batch.tables.battery!.offsets].sort()).toEqual([1, 2, 3, 4]);
    expect([...batch.tables.meter!.offsets].sort()).toEqual([0, 5]);
  });
});
