// Builders for wire readings in tests.
import { create } from "@bufbuild/protobuf";
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ReadingSchema, type Reading } from "../../gen/wattstream/telemetry/v1/reading_pb.js";

export function meterReading(deviceId: string, eventId: string, observedAtMs: number, kwhConsumedAc: number, voltage = 230): Reading {
  return create(ReadingSchema, {
    deviceId,
    eventId,
    observedAt: timestampFromMs(observedAtMs),
    sample: { case: "meter", value: { kwhConsumedAc, voltage } },
  });
}

export function vehicleReading(
  deviceId: string,
  eventId: string,
  observedAtMs: number,
  kwhDeliveredDc: number,
  soc = 50,
  batteryTemp = 25,
): Reading {
  return create(ReadingSchema, {
    deviceId,
    eventId,
    observedAt: timestampFromMs(observedAtMs),
    sample: { case: "vehicle", value: { soc, kwhDeliveredDc, batteryTemp } },
  });
}

export function batteryReading(
  deviceId: string,
  eventId: string,
  observedAtMs: number,
  voltage: number,
  temperature = 25,
  errorCodes: string[] = [],
): Reading {
  return create(ReadingSchema, {
    deviceId,
    eventId,
    observedAt: timestampFromMs(observedAtMs),
    sample: { case: "battery", value: { voltage, temperature, errorCodes } },
  });
}

/**
 * An encoded Reading that reads two ways: its meter sample declares 1 byte but holds the tag of a
 * double, so protobuf-es reads the double's 8 bytes past the sample, over the second device_id
 * ("meterB", 6 characters, 8 bytes with its tag and length), and decodes device "meter-oa"; a reader
 * that keeps to the declared lengths sees "meterB" last.
 */
export function overrunningReading(eventId: string, observedAtMs: number): Uint8Array {
  return new BinaryWriter()
    .tag(1, WireType.LengthDelimited).string(eventId)
    .tag(2, WireType.LengthDelimited).string("meter-oa")
    .tag(3, WireType.LengthDelimited).bytes(new BinaryWriter().tag(1, WireType.Varint).int64(BigInt(Math.floor(observedAtMs / 1000))).finish())
    .tag(10, WireType.LengthDelimited).bytes(new Uint8Array([0x09]))
    .tag(2, WireType.LengthDelimited).string("meterB")
    .finish();
}
