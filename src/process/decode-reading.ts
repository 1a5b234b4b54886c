// Decodes one Reading in the worker: protobuf-es's wire reader, with reading.proto's field numbers
// written out, in place of protobuf-es's generic fromBinary, which walks the schema's descriptors
// for every field and was a third of processBatch's time per reading. It answers the same message
// as fromBinary for any well-formed Reading (decode-reading.test.ts holds the two equal on
// generated messages, merges and unknown fields included) and is stricter on malformed ones:
// - a nested message (observed_at, a sample) must end where its length says: fromBinary reads
//   past it, so a sample overrunning its length could hide a second device_id;
// - a known field sent in another wire type is skipped as unknown, as protobuf's C++ and Java
//   parsers do, where fromBinary would read its bytes as the declared type. The identity fields
//   are the exception: the main thread's scan (src/pipeline/received-reading.ts) refuses those,
//   and so does this.
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import type { BatterySample, MeterSample, Reading, VehicleSample } from "../../gen/wattstream/telemetry/v1/reading_pb.js";

/**
 * Decodes one `readings` entry of a request (field 1: tag, length, Reading), as the main thread
 * passes each reading to the worker (src/pipeline/received-reading.ts). Throws on one that is not
 * well formed.
 */
export function decodeReadingEntry(entry: Uint8Array): Reading {
  const reader = new BinaryReader(entry);
  const [field, wireType] = reader.tag();
  if (field !== 1 || wireType !== WireType.LengthDelimited) throw new Error("the entry is not a length-delimited readings field");
  if (reader.uint32() !== reader.len - reader.pos) throw new RangeError("the entry's length is not the reading's");
  return readReading(reader);
}

function readReading(reader: BinaryReader): Reading {
  const reading: Reading = { $typeName: "wattstream.telemetry.v1.Reading", eventId: "", deviceId: "", sample: { case: undefined } };
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field <= 3 && wireType !== WireType.LengthDelimited) throw new Error(`Reading field ${field} must be length-delimited`);
    const { sample } = reading;
    switch (field) {
      case 1:
        reading.eventId = reader.string(true);
        break;
      case 2:
        reading.deviceId = reader.string(true);
        break;
      case 3:
        // Occurrences of a message field merge: a later one sets only the fields it carries.
        reading.observedAt = nested(reader, "observed_at", reading.observedAt ?? newTimestamp(), readTimestampField);
        break;
      case 10:
        if (wireType !== WireType.LengthDelimited) reader.skip(wireType, field);
        else reading.sample = { case: "meter", value: nested(reader, "meter", sample.case === "meter" ? sample.value : newMeter(), readMeterField) };
        break;
      case 11:
        if (wireType !== WireType.LengthDelimited) reader.skip(wireType, field);
        else reading.sample = { case: "vehicle", value: nested(reader, "vehicle", sample.case === "vehicle" ? sample.value : newVehicle(), readVehicleField) };
        break;
      case 12:
        if (wireType !== WireType.LengthDelimited) reader.skip(wireType, field);
        else reading.sample = { case: "battery", value: nested(reader, "battery", sample.case === "battery" ? sample.value : newBattery(), readBatteryField) };
        break;
      default:
        reader.skip(wireType, field);
    }
  }
  return reading;
}

type FieldReader<T> = (reader: BinaryReader, message: T, field: number, wireType: WireType) => void;

/**
 * Reads a length-delimited message into `message`, with the reader's bounds narrowed to its
 * length (a plain field, declared readonly), so a string or skip running past its end fails as it
 * would on a reader of its own, without making one. A double is read without a bounds check, so
 * where the message ended is checked as well.
 */
function nested<T>(reader: BinaryReader, name: string, message: T, readField: FieldReader<T>): T {
  const bounds = reader as { len: number };
  const outerLength = bounds.len;
  const end = reader.uint32() + reader.pos;
  if (end > outerLength) throw new RangeError(`${name} overruns the reading`);
  bounds.len = end;
  try {
    while (reader.pos < end) {
      const [field, wireType] = reader.tag();
      readField(reader, message, field, wireType);
    }
    if (reader.pos !== end) throw new RangeError("its last field overruns its length");
  } catch (error) {
    throw new RangeError(`${name} is malformed: ${error instanceof Error ? error.message : String(error)}`);
  } finally {
    bounds.len = outerLength;
  }
  return message;
}

const readTimestampField: FieldReader<Timestamp> = (reader, timestamp, field, wireType) => {
  if (field === 1 && wireType === WireType.Varint) timestamp.seconds = BigInt(reader.int64());
  else if (field === 2 && wireType === WireType.Varint) timestamp.nanos = reader.int32();
  else reader.skip(wireType, field);
};

const readMeterField: FieldReader<MeterSample> = (reader, meter, field, wireType) => {
  if (wireType !== WireType.Bit64) reader.skip(wireType, field);
  else if (field === 1) meter.kwhConsumedAc = reader.double();
  else if (field === 2) meter.voltage = reader.double();
  else if (field === 3) meter.registerKwhAc = reader.double();
  else reader.skip(wireType, field);
};

const readVehicleField: FieldReader<VehicleSample> = (reader, vehicle, field, wireType) => {
  if (wireType !== WireType.Bit64) reader.skip(wireType, field);
  else if (field === 1) vehicle.soc = reader.double();
  else if (field === 2) vehicle.kwhDeliveredDc = reader.double();
  else if (field === 3) vehicle.batteryTemp = reader.double();
  else if (field === 4) vehicle.registerKwhDc = reader.double();
  else reader.skip(wireType, field);
};

const readBatteryField: FieldReader<BatterySample> = (reader, battery, field, wireType) => {
  if (field === 1 && wireType === WireType.Bit64) battery.voltage = reader.double();
  else if (field === 2 && wireType === WireType.Bit64) battery.temperature = reader.double();
  else if (field === 3 && wireType === WireType.LengthDelimited) battery.errorCodes.push(reader.string(true));
  else reader.skip(wireType, field);
};

const newTimestamp = (): Timestamp => ({ $typeName: "google.protobuf.Timestamp", seconds: 0n, nanos: 0 });
const newMeter = (): MeterSample => ({ $typeName: "wattstream.telemetry.v1.MeterSample", kwhConsumedAc: 0, voltage: 0 });
const newVehicle = (): VehicleSample => ({ $typeName: "wattstream.telemetry.v1.VehicleSample", soc: 0, kwhDeliveredDc: 0, batteryTemp: 0 });
const newBattery = (): BatterySample => ({ $typeName: "wattstream.telemetry.v1.BatterySample", voltage: 0, temperature: 0, errorCodes: [] });
