// The worker's decoder must read every well-formed Reading as protobuf-es's fromBinary does —
// repeated fields merged and unknown fields skipped as protobuf says — and refuse what fromBinary
// refuses; where the two differ, on malformed messages, it is the stricter.
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { ReadingSchema, type Reading } from "../../gen/wattstream/telemetry/v1/reading_pb.js";
import { overrunningReading } from "../../test/support/readings.js";
import { decodeReadingEntry } from "./decode-reading.js";

/** Decodes an encoded Reading as the worker does, as a request's `readings` entry. */
const decodeReading = (reading: Uint8Array) => decodeReadingEntry(new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(reading).finish());

const double = fc.oneof(fc.double(), fc.constantFrom(0, -0, NaN, Infinity, -Infinity, 1e-310));

const readingArbitrary = fc.record(
  {
    deviceId: fc.string({ maxLength: 40, unit: "grapheme" }),
    eventId: fc.string({ maxLength: 60, unit: "binary" }),
    observedAt: fc.record({ seconds: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), nanos: fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }) }),
    sample: fc.oneof(
      fc.constant({ case: undefined }),
      fc.record({
        case: fc.constant("meter" as const),
        value: fc.record({ kwhConsumedAc: double, voltage: double, registerKwhAc: double }, { requiredKeys: ["kwhConsumedAc", "voltage"] }),
      }),
      fc.record({
        case: fc.constant("vehicle" as const),
        value: fc.record({ soc: double, kwhDeliveredDc: double, batteryTemp: double, registerKwhDc: double }, { requiredKeys: ["soc"] }),
      }),
      fc.record({
        case: fc.constant("battery" as const),
        value: fc.record({ voltage: double, temperature: double, errorCodes: fc.array(fc.string({ maxLength: 8, unit: "binary" }), { maxLength: 4 }) }),
      }),
    ),
  },
  { requiredKeys: ["sample"] },
);

/** Fields no Reading has, in every wire type, to be skipped. */
const unknownFieldArbitrary = fc.record({
  field: fc.oneof(fc.integer({ min: 4, max: 9 }), fc.integer({ min: 13, max: 2 ** 29 - 1 })),
  value: fc.oneof(
    fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map((v) => (w: BinaryWriter, f: number) => w.tag(f, WireType.Varint).uint64(v)),
    fc.double().map((v) => (w: BinaryWriter, f: number) => w.tag(f, WireType.Bit64).double(v)),
    fc.integer().map((v) => (w: BinaryWriter, f: number) => w.tag(f, WireType.Bit32).sfixed32(v)),
    fc.uint8Array({ maxLength: 20 }).map((v) => (w: BinaryWriter, f: number) => w.tag(f, WireType.LengthDelimited).bytes(v)),
  ),
});

/** The message as bytes, unknown fields left out: equal bytes, equal messages, NaN and -0 included. */
const canonical = (reading: Reading) => Buffer.from(toBinary(ReadingSchema, reading, { writeUnknownFields: false }));

function decodesAsProtobufEs(bytes: Uint8Array): void {
  const theirs = fromBinary(ReadingSchema, bytes);
  const mine = decodeReading(bytes);
  expect(canonical(mine).equals(canonical(theirs))).toBe(true);
  expect(mine.sample.case).toBe(theirs.sample.case);
  expect(mine.observedAt === undefined).toBe(theirs.observedAt === undefined);
}

describe("decodeReading", () => {
  it("reads any well-formed Reading as fromBinary does, with unknown fields among its fields", () => {
    fc.assert(
      fc.property(readingArbitrary, fc.array(unknownFieldArbitrary, { maxLength: 3 }), (fields, unknowns) => {
        const writer = new BinaryWriter();
        for (const { field, value } of unknowns) value(writer, field);
        const known = toBinary(ReadingSchema, create(ReadingSchema, fields as Parameters<typeof create<typeof ReadingSchema>>[1]));
        decodesAsProtobufEs(Buffer.concat([writer.finish(), known]));
      }),
      { numRuns: 500, seed: 20261127 },
    );
  });

  it("merges a Reading sent in parts as protobuf says: the last scalar wins, messages merge, a oneof takes its last case", () => {
    fc.assert(
      fc.property(fc.array(readingArbitrary, { minLength: 2, maxLength: 4 }), (parts) => {
        const bytes = Buffer.concat(parts.map((p) => toBinary(ReadingSchema, create(ReadingSchema, p as Parameters<typeof create<typeof ReadingSchema>>[1]))));
        decodesAsProtobufEs(bytes);
      }),
      { numRuns: 300, seed: 20261128 },
    );
  });

  it("refuses what fromBinary refuses: any cut of a reading it cannot read, and ids or error codes that are not UTF-8", () => {
    fc.assert(
      fc.property(readingArbitrary, fc.nat(), (fields, at) => {
        const bytes = toBinary(ReadingSchema, create(ReadingSchema, fields as Parameters<typeof create<typeof ReadingSchema>>[1]));
        const cut = bytes.subarray(0, at % (bytes.length + 1));
        let refused = false;
        try {
          fromBinary(ReadingSchema, cut);
        } catch {
          refused = true;
        }
        if (refused) expect(() => decodeReading(cut)).toThrow();
        else decodesAsProtobufEs(cut);
      }),
      { numRuns: 500, seed: 20261129 },
    );
    const notUtf8 = new Uint8Array([0xc3, 0x28]);
    for (const field of [1, 2]) {
      const bytes = new BinaryWriter().tag(field, WireType.LengthDelimited).bytes(notUtf8).finish();
      expect(() => fromBinary(ReadingSchema, bytes)).toThrow();
      expect(() => decodeReading(bytes)).toThrow();
    }
    const battery = new BinaryWriter().tag(12, WireType.LengthDelimited).bytes(new BinaryWriter().tag(3, WireType.LengthDelimited).bytes(notUtf8).finish()).finish();
    expect(() => fromBinary(ReadingSchema, battery)).toThrow();
    expect(() => decodeReading(battery)).toThrow();
  });

  it("refuses a sample that overruns its length, which fromBinary reads past into the reading's own fields", () => {
    const bytes = overrunningReading("e-1", Date.UTC(2026, 10, 27));
    expect(fromBinary(ReadingSchema, bytes).deviceId).toBe("meter-oa");
    expect(() => decodeReading(bytes)).toThrow("meter is malformed: its last field overruns its length");
  });

  it("refuses an identity field in another wire type, as the main thread's scan does", () => {
    for (const field of [1, 2, 3]) {
      const bytes = new BinaryWriter().tag(field, WireType.Varint).uint32(7).finish();
      expect(() => decodeReading(bytes)).toThrow(`Reading field ${field} must be length-delimited`);
    }
  });

  it("skips a sample's field sent in another wire type, as protobuf's C++ and Java parsers do", () => {
    const meter = new BinaryWriter()
      .tag(1, WireType.Varint).uint32(5) // kwh_consumed_ac, not a double
      .tag(2, WireType.Bit64).double(231.5)
      .finish();
    const bytes = new BinaryWriter().tag(2, WireType.LengthDelimited).string("meter-1").tag(10, WireType.LengthDelimited).bytes(meter).finish();
    const reading = decodeReading(bytes);
    expect(reading.sample).toEqual({ case: "meter", value: expect.objectContaining({ kwhConsumedAc: 0, voltage: 231.5 }) });
    // A sample field itself sent as a number is no sample, as the scan reads it.
    expect(decodeReading(new BinaryWriter().tag(11, WireType.Varint).uint32(1).finish()).sample.case).toBeUndefined();
  });

  it("takes a request's readings entry, and refuses one whose length is not its reading's", () => {
    const body = toBinary(ReadingSchema, create(ReadingSchema, { deviceId: "battery-1", eventId: "e-2", sample: { case: "battery", value: { voltage: 50.1 } } }));
    const entry = new BinaryWriter().tag(1, WireType.LengthDelimited).bytes(body).finish();
    expect(canonical(decodeReadingEntry(entry)).equals(Buffer.from(body))).toBe(true);
    expect(() => decodeReadingEntry(Buffer.concat([entry, new Uint8Array([0x10, 0x01])]))).toThrow("the entry's length is not the reading's");
    expect(() => decodeReadingEntry(new BinaryWriter().tag(2, WireType.LengthDelimited).bytes(body).finish())).toThrow("not a length-delimited readings field");
  });
});
