// The main thread's scan of a request must read every well-formed message as protobuf-es does, for
// the fields it decides on; what it cannot read it refuses as decoding would.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { IngestReadingsRequestSchema, StreamReadingsRequestSchema } from "../../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { ReadingSchema, type Reading } from "../../gen/wattstream/telemetry/v1/reading_pb.js";
import { receivedFrom, scanReadings, toProcessInput, type ReceivedReading } from "./received-reading.js";

/** What protobuf-es makes of each reading, in the scan's terms. */
function decodedFields(bytes: Uint8Array) {
  return fromBinary(StreamReadingsRequestSchema, bytes).readings.map(fieldsOf);
}

function fieldsOf(reading: Reading) {
  return {
    deviceId: reading.deviceId,
    eventId: reading.eventId,
    observedAtMs: reading.observedAt === undefined ? undefined : timestampMs(reading.observedAt),
    kind: reading.sample.case,
  };
}

function scannedFields(readings: readonly ReceivedReading[]) {
  return readings.map(({ deviceId, eventId, observedAtMs, kind }) => ({ deviceId, eventId, observedAtMs, kind }));
}

const readingArbitrary = fc.record({
  deviceId: fc.string({ maxLength: 40, unit: "grapheme" }),
  eventId: fc.string({ maxLength: 60, unit: "binary" }),
  observedAt: fc.option(fc.record({ seconds: fc.bigInt({ min: -62135596800n, max: 253402300799n }), nanos: fc.integer({ min: 0, max: 999_999_999 }) }), {
    nil: undefined,
  }),
  sample: fc.oneof(
    fc.constant({ case: undefined }),
    fc.record({ case: fc.constant("meter" as const), value: fc.record({ kwhConsumedAc: fc.double(), voltage: fc.double() }) }),
    fc.record({ case: fc.constant("vehicle" as const), value: fc.record({ soc: fc.double(), kwhDeliveredDc: fc.double(), batteryTemp: fc.double() }) }),
    fc.record({
      case: fc.constant("battery" as const),
      value: fc.record({ voltage: fc.double(), temperature: fc.double(), errorCodes: fc.array(fc.string({ maxLength: 8 }), { maxLength: 4 }) }),
    }),
  ),
});

describe("scanReadings", () => {
  it("reads what protobuf-es reads from any well-formed request, and its entries joined are the request", () => {
    fc.assert(
      fc.property(fc.array(readingArbitrary, { maxLength: 20 }), (fields) => {
        const readings = fields.map((f) => create(ReadingSchema, f as Parameters<typeof create<typeof ReadingSchema>>[1]));
        const bytes = toBinary(StreamReadingsRequestSchema, create(StreamReadingsRequestSchema, { readings }));
        const scanned = scanReadings(bytes).readings;
        expect(scannedFields(scanned)).toEqual(decodedFields(bytes));
        expect(Buffer.from(toProcessInput(scanned).encoded).equals(Buffer.from(bytes))).toBe(true);
        // Connect's decoded readings, taken the other way, read the same.
        expect(scannedFields(readings.map(receivedFrom))).toEqual(scannedFields(scanned));
      }),
      { numRuns: 300, seed: 20261126 },
    );
  });

  it("takes the last of a repeated field, merges observed_at, and skips unknown fields, as protobuf-es does", () => {
    const timestamp = (write: (w: BinaryWriter) => void) => {
      const w = new BinaryWriter();
      write(w);
      return w.finish();
    };
    const reading = new BinaryWriter()
      .tag(2, WireType.LengthDelimited).string("meter-first")
      .tag(1, WireType.LengthDelimited).string("e-1")
      .tag(3, WireType.LengthDelimited).bytes(timestamp((w) => w.tag(1, WireType.Varint).int64(1_764_000_000n)))
      .tag(99, WireType.Varint).uint32(7)
      .tag(10, WireType.LengthDelimited).bytes(new BinaryWriter().tag(1, WireType.Bit64).double(0.5).finish())
      // A second observed_at with only nanos: merged, so seconds stay.
      .tag(3, WireType.LengthDelimited).bytes(timestamp((w) => w.tag(2, WireType.Varint).int32(999_600_000)))
      .tag(2, WireType.LengthDelimited).string("meter-last")
      // The oneof's last member wins.
      .tag(12, WireType.LengthDelimited).bytes(new BinaryWriter().tag(1, WireType.Bit64).double(48).finish())
      .finish();
    const request = new BinaryWriter()
      .tag(5, WireType.LengthDelimited).string("a field of a newer firmware")
      .tag(1, WireType.LengthDelimited).bytes(reading)
      .finish();
    const scanned = scannedFields(scanReadings(request).readings);
    expect(scanned).toEqual(decodedFields(request));
    expect(scanned).toEqual([{ deviceId: "meter-last", eventId: "e-1", observedAtMs: 1_764_000_001_000, kind: "battery" }]);
  });

  it("refuses what decoding refuses: a cut message, invalid UTF-8, readings not length-delimited", () => {
    const good = toBinary(
      IngestReadingsRequestSchema,
      create(IngestReadingsRequestSchema, { readings: [create(ReadingSchema, { deviceId: "meter-1", eventId: "e-1" })] }),
    );
    const cut = good.subarray(0, good.length - 2);
    const badUtf8 = new Uint8Array([0x0a, 0x03, 0x12, 0x01, 0xff]);
    const varintReadings = new Uint8Array([0x08, 0x01]);
    for (const bytes of [cut, badUtf8]) {
      expect(() => fromBinary(IngestReadingsRequestSchema, bytes)).toThrow();
      expect(() => scanReadings(bytes)).toThrow();
    }
    expect(() => scanReadings(varintReadings)).toThrow(/length-delimited/);
  });
});
