// The main thread's scan of a request must read every well-formed message as protobuf-es does, for
// the fields it decides on; what it cannot read it refuses as decoding would.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { IngestReadingsRequestSchema, StreamReadingsRequestSchema } from "../../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { ReadingSchema, type Reading } from "../../gen/wattstream/telemetry/v1/reading_pb.js";
import { receivedFrom, scanReadings, scanReadingsInFull, toProcessInput, type ReceivedReading } from "./received-reading.js";

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

  it("reads firmware's usual readings (ASCII ids of a few devices, observed_at since 1970) as protobuf-es does", () => {
    // The shape the scan reads without protobuf-es's reader, device ids taken from its cache: the
    // same ids again and again, ids whose cache slots collide, and now and then a field it leaves
    // to the full scan.
    const asciiId = fc.string({ maxLength: 30, unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)) });
    const deviceIds = ["meter-1", "meter-2", "ev-1", "bbu-1", "", "x".repeat(200)];
    const usual = fc.record({
      deviceId: fc.oneof(fc.constantFrom(...deviceIds), asciiId),
      eventId: fc.oneof(asciiId, fc.string({ maxLength: 70 })),
      // Mostly since 1970; before it, seconds are ten-byte varints, which the full scan reads.
      observedAt: fc.option(fc.record({ seconds: fc.bigInt({ min: -(2n ** 40n), max: 2n ** 48n }), nanos: fc.integer({ min: 0, max: 999_999_999 }) }), {
        nil: undefined,
      }),
      sample: readingArbitrary.map((r) => r.sample),
    });
    fc.assert(
      fc.property(fc.array(fc.oneof({ weight: 5, arbitrary: usual }, { weight: 1, arbitrary: readingArbitrary }), { maxLength: 30 }), (fields) => {
        const readings = fields.map((f) => create(ReadingSchema, f as Parameters<typeof create<typeof ReadingSchema>>[1]));
        const bytes = toBinary(StreamReadingsRequestSchema, create(StreamReadingsRequestSchema, { readings }));
        const scanned = scanReadings(bytes).readings;
        expect(scannedFields(scanned)).toEqual(decodedFields(bytes));
        expect(Buffer.from(toProcessInput(scanned).encoded).equals(Buffer.from(bytes))).toBe(true);
      }),
      { numRuns: 500, seed: 20261127 },
    );
  });

  it("reads a damaged request as reading it in full with protobuf-es's reader does, and as protobuf-es decodes it where both read it", () => {
    const frame = (count: number) =>
      toBinary(
        StreamReadingsRequestSchema,
        create(StreamReadingsRequestSchema, {
          readings: Array.from({ length: count }, (_, i) =>
            create(ReadingSchema, {
              deviceId: `meter-${i % 3}`,
              eventId: `e-${i}`,
              observedAt: { seconds: 1_764_000_000n + BigInt(i), nanos: i * 1_000_000 },
              sample: { case: "meter", value: { kwhConsumedAc: 0.5, voltage: 230 } },
            }),
          ),
        }),
      );
    const outcome = (read: () => ReceivedReading[]) => {
      try {
        const readings = read();
        return { fields: scannedFields(readings), encoded: Buffer.from(toProcessInput(readings).encoded).toString("hex") };
      } catch (error) {
        return { refused: String(error) };
      }
    };
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 4 }).chain((count) => {
          const bytes = frame(count);
          return fc.tuple(fc.constant(bytes), fc.array(fc.tuple(fc.nat(bytes.length - 1), fc.nat(255)), { minLength: 1, maxLength: 3 }), fc.nat(bytes.length));
        }),
        ([bytes, changes, keep]) => {
          const damaged = bytes.slice(0, Math.max(keep, 1));
          for (const [at, value] of changes) if (at < damaged.length) damaged[at] = value;
          const scanned = outcome(() => scanReadings(damaged).readings);
          expect(scanned).toEqual(outcome(() => scanReadingsInFull(damaged).readings));
          // Where both read it: the same fields as decoding. (The scan refuses some damage
          // protobuf-es reads as something, as the worker's decoder does; it may also read what
          // decoding refuses, in samples it does not read.)
          let decoded: ReturnType<typeof decodedFields> | undefined;
          try {
            decoded = decodedFields(damaged);
          } catch {
            decoded = undefined;
          }
          if (decoded !== undefined && "fields" in scanned) expect(scanned.fields).toEqual(decoded);
        },
      ),
      { numRuns: 3000, seed: 20261127 },
    );
  });

  it("takes each device's id from a fleet of 300,000 as it was sent", () => {
    // More devices than the scan's cache of ids has slots: ids that share a slot, and ids that
    // begin another id, replace each other there.
    const now = 1_764_000_000_000;
    const ids = Array.from({ length: 300_000 }, (_, i) => `m-${i}`);
    const requests = [0, 1].map((round) =>
      toBinary(
        StreamReadingsRequestSchema,
        create(StreamReadingsRequestSchema, {
          readings: ids.map((deviceId, i) => create(ReadingSchema, { deviceId, eventId: `e-${round}-${i}`, observedAt: timestampFromMs(now) })),
        }),
      ),
    );
    for (const request of requests) expect(scanReadings(request).readings.map((r) => r.deviceId)).toEqual(ids);
  });

  it("reads observed_at varints beyond those of real times as protobuf-es does", () => {
    const varint = (value: bigint) => {
      const bytes: number[] = [];
      for (; value >= 0x80n; value >>= 7n) bytes.push(Number(value & 0x7fn) | 0x80);
      return [...bytes, Number(value)];
    };
    for (const nanos of [2n ** 31n + 5n, 2n ** 32n + 5n, 2n ** 45n]) {
      const timestamp = [0x08, ...varint(1_764_000_000n), 0x10, ...varint(nanos)];
      const reading = [0x0a, 0x01, 0x65, 0x12, 0x01, 0x6d, 0x1a, timestamp.length, ...timestamp];
      const request = new Uint8Array([0x0a, reading.length, ...reading]);
      expect(scannedFields(scanReadings(request).readings)).toEqual(decodedFields(request));
    }
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
