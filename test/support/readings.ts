// Builders for wire readings in tests.
import { create } from "@bufbuild/protobuf";
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
