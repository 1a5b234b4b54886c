// The worker decodes each reading in full and holds it to what the main thread read of it: a
// reading the two read apart is refused, never stored as something the main thread did not see.
import { create, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { StreamReadingsRequestSchema } from "../../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { ReadingSchema } from "../../gen/wattstream/telemetry/v1/reading_pb.js";
import { overrunningReading } from "../../test/support/readings.js";
import { scanReadings, toProcessInput } from "../pipeline/received-reading.js";
import { packBatteryTrends } from "./battery-trends.js";
import { processBatch } from "./process-batch.js";

const NOW = Date.UTC(2026, 10, 26, 12, 0, 0);
const WINDOW = { nowMs: NOW, maxReadingAgeMs: 30 * 86_400_000, maxClockSkewMs: 300_000 };

describe("processBatch", () => {
  it("refuses a reading whose full decode disagrees with the scan, and processes the others", () => {
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
    expect(batch.undecodable).toEqual([{ offset: 0, message: expect.stringContaining("malformed") }]);
    expect(batch.rejected).toEqual([]);
    expect([...batch.tables.meter!.offsets]).toEqual([1]);
    expect(batch.live.deviceIds).toEqual(["meter-good"]);
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
});
