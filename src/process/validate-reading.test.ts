import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { TimestampSchema, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { RejectReason } from "../../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { ReadingSchema, type Reading } from "../../gen/wattstream/telemetry/v1/reading_pb.js";
import { validateReading, type Rejection, type TimeWindow } from "./validate-reading.js";

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const DAY = 24 * 60 * MINUTE;

/** 2025-03-10T12:00:00.000Z */
const NOW = Date.UTC(2025, 2, 10, 12, 0, 0);
const WINDOW: TimeWindow = { nowMs: NOW, maxReadingAgeMs: 30 * DAY, maxClockSkewMs: 5 * MINUTE };
/** A moment inside the window, with a millisecond part: 2025-03-10T11:59:00.123Z. */
const OBSERVED = NOW - MINUTE + 123;

type Sample = MessageInitShape<typeof ReadingSchema>["sample"];

const meter = (value: { kwhConsumedAc?: number; voltage?: number; registerKwhAc?: number }): Sample => ({
  case: "meter",
  value: { kwhConsumedAc: 1.25, voltage: 230, ...value },
});
const vehicle = (value: { soc?: number; kwhDeliveredDc?: number; batteryTemp?: number; registerKwhDc?: number }): Sample => ({
  case: "vehicle",
  value: { soc: 55, kwhDeliveredDc: 7.5, batteryTemp: 24, ...value },
});
const battery = (value: { voltage?: number; temperature?: number; errorCodes?: string[] }): Sample => ({
  case: "battery",
  value: { voltage: 400, temperature: 30, errorCodes: [], ...value },
});

function reading(
  opts: { eventId?: string; deviceId?: string; observedAtMs?: number | null; sample?: Sample } = {},
): Reading {
  const observedAtMs = opts.observedAtMs === undefined ? OBSERVED : opts.observedAtMs;
  return create(ReadingSchema, {
    eventId: opts.eventId ?? "evt-1",
    deviceId: opts.deviceId ?? "dev-1",
    observedAt: observedAtMs === null ? undefined : timestampFromMs(observedAtMs),
    sample: opts.sample ?? meter({}),
  });
}

function rejection(r: Reading, window: TimeWindow = WINDOW): Rejection {
  const result = validateReading(r, window);
  if (result.ok) throw new Error(`expected a rejection, got ${JSON.stringify(result.value)}`);
  return result.rejection;
}

function accepted(r: Reading, window: TimeWindow = WINDOW) {
  const result = validateReading(r, window);
  if (!result.ok) throw new Error(`expected acceptance, got ${RejectReason[result.rejection.reason]}: ${result.rejection.message}`);
  return result.value;
}

describe("validateReading: valid readings", () => {
  it("turns a meter reading into a meter row, observed_at in epoch ms", () => {
    expect(accepted(reading({ eventId: "e-m", deviceId: "meter-7", sample: meter({ kwhConsumedAc: 0.42, voltage: 231.5 }) }))).toEqual({
      kind: "meter",
      row: {
        device_id: "meter-7",
        event_id: "e-m",
        observed_at: Date.UTC(2025, 2, 10, 11, 59, 0, 123),
        kwh_consumed_ac: 0.42,
        voltage: 231.5,
        register_kwh_ac: null,
      },
    });
  });

  it("keeps a meter's register when present, including 0", () => {
    const row = accepted(reading({ sample: meter({ registerKwhAc: 123456.789 }) }));
    expect(row).toMatchObject({ kind: "meter", row: { register_kwh_ac: 123456.789 } });
    expect(accepted(reading({ sample: meter({ registerKwhAc: 0 }) }))).toMatchObject({ row: { register_kwh_ac: 0 } });
  });

  it("turns a vehicle reading into a vehicle row", () => {
    expect(
      accepted(
        reading({
          eventId: "e-v",
          deviceId: "ev-3",
          sample: vehicle({ soc: 80.5, kwhDeliveredDc: 11, batteryTemp: -5 }),
        }),
      ),
    ).toEqual({
      kind: "vehicle",
      row: {
        device_id: "ev-3",
        event_id: "e-v",
        observed_at: OBSERVED,
        soc: 80.5,
        kwh_delivered_dc: 11,
        battery_temp: -5,
        register_kwh_dc: null,
      },
    });
    expect(accepted(reading({ sample: vehicle({ registerKwhDc: 9876.5 }) }))).toMatchObject({
      kind: "vehicle",
      row: { register_kwh_dc: 9876.5 },
    });
  });

  it("turns a battery reading into a battery row, with its error codes", () => {
    expect(
      accepted(
        reading({
          eventId: "e-b",
          deviceId: "bbu-1",
          sample: battery({ voltage: 52.1, temperature: 41, errorCodes: ["E101", "W7"] }),
        }),
      ),
    ).toEqual({
      kind: "battery",
      row: {
        device_id: "bbu-1",
        event_id: "e-b",
        observed_at: OBSERVED,
        voltage: 52.1,
        temperature: 41,
        error_codes: ["E101", "W7"],
      },
    });
    expect(accepted(reading({ sample: battery({ errorCodes: [] }) }))).toMatchObject({ row: { error_codes: [] } });
  });

  it("accepts a sample whose fields are all proto3 defaults (zero)", () => {
    const r = create(ReadingSchema, {
      eventId: "e",
      deviceId: "d",
      observedAt: timestampFromMs(OBSERVED),
      sample: { case: "meter", value: {} },
    });
    expect(accepted(r)).toMatchObject({ kind: "meter", row: { kwh_consumed_ac: 0, voltage: 0, register_kwh_ac: null } });
  });
});

describe("validateReading: ids", () => {
  it("rejects an empty event_id", () => {
    expect(rejection(reading({ eventId: "" }))).toEqual({ reason: RejectReason.MISSING_EVENT_ID, message: "event_id is empty" });
  });

  it("accepts a 64-byte event_id and rejects a 65-byte one", () => {
    expect(accepted(reading({ eventId: "a".repeat(64) })).row.event_id).toBe("a".repeat(64));
    expect(rejection(reading({ eventId: "a".repeat(65) }))).toEqual({
      reason: RejectReason.EVENT_ID_TOO_LONG,
      message: "event_id is 65 bytes; at most 64 are allowed",
    });
  });

  it("counts event_id length in UTF-8 bytes, not characters", () => {
    // "€" is 3 bytes in UTF-8: 22 of them are 66 bytes (22 characters), 21 are 63 bytes.
    const r = rejection(reading({ eventId: "€".repeat(22) }));
    expect(r.reason).toBe(RejectReason.EVENT_ID_TOO_LONG);
    expect(r.message).toContain("event_id is 66 bytes");
    expect(accepted(reading({ eventId: "€".repeat(21) })).row.event_id).toBe("€".repeat(21));
    // 16 four-byte emoji = 64 bytes (32 UTF-16 units): accepted; one more ASCII byte is too many.
    expect(accepted(reading({ eventId: "🔋".repeat(16) })).row.event_id).toBe("🔋".repeat(16));
    expect(rejection(reading({ eventId: `${"🔋".repeat(16)}x` })).reason).toBe(RejectReason.EVENT_ID_TOO_LONG);
  });

  it("rejects an empty device_id", () => {
    expect(rejection(reading({ deviceId: "" }))).toEqual({ reason: RejectReason.MISSING_DEVICE_ID, message: "device_id is empty" });
  });

  it("accepts a 128-byte device_id and rejects a 129-byte one", () => {
    expect(accepted(reading({ deviceId: "d".repeat(128) })).row.device_id).toBe("d".repeat(128));
    expect(rejection(reading({ deviceId: "d".repeat(129) }))).toEqual({
      reason: RejectReason.DEVICE_ID_TOO_LONG,
      message: "device_id is 129 bytes; at most 128 are allowed",
    });
    // 43 × "€" = 129 bytes.
    expect(rejection(reading({ deviceId: "€".repeat(43) })).message).toContain("device_id is 129 bytes");
  });

  it("checks the event_id before the device_id", () => {
    expect(rejection(reading({ eventId: "", deviceId: "" })).reason).toBe(RejectReason.MISSING_EVENT_ID);
  });
});

describe("validateReading: observed_at", () => {
  it("rejects a reading without observed_at", () => {
    expect(rejection(reading({ observedAtMs: null }))).toEqual({
      reason: RejectReason.MISSING_OBSERVED_AT,
      message: "observed_at is not set",
    });
  });

  it("accepts observed_at exactly at the age horizon and rejects 1 ms past it", () => {
    const horizon = NOW - 30 * DAY; // 2025-02-08T12:00:00.000Z
    expect(accepted(reading({ observedAtMs: horizon })).row.observed_at).toBe(horizon);
    const r = rejection(reading({ observedAtMs: horizon - 1 }));
    expect(r.reason).toBe(RejectReason.OBSERVED_AT_TOO_OLD);
    expect(r.message).toBe("observed_at 2025-02-08T11:59:59.999Z is older than the accepted 30 days");
  });

  it("states a non-whole-day age limit in seconds", () => {
    const window = { ...WINDOW, maxReadingAgeMs: 90 * MINUTE };
    expect(rejection(reading({ observedAtMs: NOW - 2 * 60 * MINUTE }), window).message).toContain("older than the accepted 5400 s");
  });

  it("accepts observed_at exactly at the clock-skew limit and rejects 1 ms beyond it", () => {
    const limit = NOW + 5 * MINUTE; // 2025-03-10T12:05:00.000Z
    expect(accepted(reading({ observedAtMs: limit })).row.observed_at).toBe(limit);
    const r = rejection(reading({ observedAtMs: limit + 1 }));
    expect(r.reason).toBe(RejectReason.OBSERVED_AT_IN_FUTURE);
    expect(r.message).toBe("observed_at 2025-03-10T12:05:00.001Z is more than 300 s ahead of the service clock");
  });

  it("accepts observed_at equal to now", () => {
    expect(accepted(reading({ observedAtMs: NOW })).row.observed_at).toBe(NOW);
  });

  it("rejects a timestamp whose nanos are out of range", () => {
    const seconds = BigInt(Math.floor(OBSERVED / 1000));
    for (const nanos of [-1, 1_000_000_000]) {
      const r = reading();
      r.observedAt = create(TimestampSchema, { seconds, nanos });
      expect(rejection(r)).toEqual({ reason: RejectReason.OUT_OF_RANGE, message: "observed_at is not a valid timestamp" });
    }
  });

  it("checks the ids before observed_at", () => {
    expect(rejection(reading({ eventId: "", observedAtMs: null })).reason).toBe(RejectReason.MISSING_EVENT_ID);
  });
});

describe("validateReading: sample", () => {
  it("rejects a reading with no sample", () => {
    const r = create(ReadingSchema, { eventId: "e", deviceId: "d", observedAt: timestampFromMs(OBSERVED) });
    expect(rejection(r)).toEqual({
      reason: RejectReason.MISSING_SAMPLE,
      message: "the reading has no sample: set one of meter, vehicle or battery",
    });
  });

  it("checks observed_at before the sample", () => {
    const r = create(ReadingSchema, { eventId: "e", deviceId: "d" });
    expect(rejection(r).reason).toBe(RejectReason.MISSING_OBSERVED_AT);
  });

  it.each([
    ["meter.kwh_consumed_ac", meter({ kwhConsumedAc: Number.NaN }), "NaN"],
    ["meter.voltage", meter({ voltage: Number.POSITIVE_INFINITY }), "Infinity"],
    ["meter.register_kwh_ac", meter({ registerKwhAc: Number.NEGATIVE_INFINITY }), "-Infinity"],
    ["vehicle.soc", vehicle({ soc: Number.NaN }), "NaN"],
    ["vehicle.kwh_delivered_dc", vehicle({ kwhDeliveredDc: Number.POSITIVE_INFINITY }), "Infinity"],
    ["vehicle.battery_temp", vehicle({ batteryTemp: Number.NEGATIVE_INFINITY }), "-Infinity"],
    ["vehicle.register_kwh_dc", vehicle({ registerKwhDc: Number.NaN }), "NaN"],
    ["battery.voltage", battery({ voltage: Number.POSITIVE_INFINITY }), "Infinity"],
    ["battery.temperature", battery({ temperature: Number.NaN }), "NaN"],
  ])("rejects a non-finite %s (%s)", (field, sample, shown) => {
    expect(rejection(reading({ sample }))).toEqual({
      reason: RejectReason.NOT_FINITE,
      message: `${field} is ${shown}; it must be a finite number`,
    });
  });

  it.each([
    [vehicle({ soc: 140 }), "vehicle.soc is 140 %; it must be from 0 to 100 %"],
    [vehicle({ soc: -0.1 }), "vehicle.soc is -0.1 %; it must be from 0 to 100 %"],
    [vehicle({ kwhDeliveredDc: 500.5 }), "vehicle.kwh_delivered_dc is 500.5 kWh; it must be from 0 to 500 kWh"],
    [vehicle({ batteryTemp: 100.01 }), "vehicle.battery_temp is 100.01 °C; it must be from -50 to 100 °C"],
    [vehicle({ registerKwhDc: -1 }), "vehicle.register_kwh_dc is -1 kWh; it must be from 0 to 1000000000000 kWh"],
    [meter({ voltage: 1000.1 }), "meter.voltage is 1000.1 V; it must be from 0 to 1000 V"],
    [meter({ kwhConsumedAc: -0.5 }), "meter.kwh_consumed_ac is -0.5 kWh; it must be from 0 to 1000 kWh"],
    [meter({ registerKwhAc: 2e12 }), "meter.register_kwh_ac is 2000000000000 kWh; it must be from 0 to 1000000000000 kWh"],
    [battery({ voltage: 1500.5 }), "battery.voltage is 1500.5 V; it must be from 0 to 1500 V"],
    [battery({ temperature: -51 }), "battery.temperature is -51 °C; it must be from -50 to 150 °C"],
  ])("rejects an out-of-range value: %#", (sample, message) => {
    expect(rejection(reading({ sample }))).toEqual({ reason: RejectReason.OUT_OF_RANGE, message });
  });

  it("includes both range ends (soc 0 and 100, and every other limit)", () => {
    expect(accepted(reading({ sample: vehicle({ soc: 0 }) })).row).toMatchObject({ soc: 0 });
    expect(accepted(reading({ sample: vehicle({ soc: 100 }) })).row).toMatchObject({ soc: 100 });
    expect(accepted(reading({ sample: vehicle({ kwhDeliveredDc: 500, batteryTemp: -50 }) })).kind).toBe("vehicle");
    expect(accepted(reading({ sample: vehicle({ batteryTemp: 100, registerKwhDc: 1e12 }) })).kind).toBe("vehicle");
    expect(accepted(reading({ sample: meter({ kwhConsumedAc: 1000, voltage: 1000, registerKwhAc: 1e12 }) })).kind).toBe("meter");
    expect(accepted(reading({ sample: meter({ kwhConsumedAc: 0, voltage: 0 }) })).kind).toBe("meter");
    expect(accepted(reading({ sample: battery({ voltage: 1500, temperature: 150 }) })).kind).toBe("battery");
    expect(accepted(reading({ sample: battery({ voltage: 0, temperature: -50 }) })).kind).toBe("battery");
  });

  it("reports the first bad field, in field order", () => {
    const r = rejection(reading({ sample: vehicle({ soc: 140, batteryTemp: Number.NaN }) }));
    expect(r.reason).toBe(RejectReason.OUT_OF_RANGE);
    expect(r.message).toContain("vehicle.soc is 140 %");
  });
});

describe("validateReading: battery error codes", () => {
  const codes = (n: number) => Array.from({ length: n }, (_, i) => `E${i}`);

  it("accepts 32 codes and rejects 33", () => {
    expect(accepted(reading({ sample: battery({ errorCodes: codes(32) }) })).row).toMatchObject({ error_codes: codes(32) });
    expect(rejection(reading({ sample: battery({ errorCodes: codes(33) }) }))).toEqual({
      reason: RejectReason.INVALID_ERROR_CODES,
      message: "battery.error_codes has 33 entries; at most 32 are allowed",
    });
  });

  it("rejects an empty code, naming its index", () => {
    expect(rejection(reading({ sample: battery({ errorCodes: ["E1", ""] }) }))).toEqual({
      reason: RejectReason.INVALID_ERROR_CODES,
      message: "battery.error_codes[1] is 0 bytes; each must be 1 to 64",
    });
  });

  it("accepts a 64-byte code and rejects a 65-byte one", () => {
    expect(accepted(reading({ sample: battery({ errorCodes: ["x".repeat(64)] }) })).kind).toBe("battery");
    expect(rejection(reading({ sample: battery({ errorCodes: ["ok", "x".repeat(65)] }) }))).toEqual({
      reason: RejectReason.INVALID_ERROR_CODES,
      message: "battery.error_codes[1] is 65 bytes; each must be 1 to 64",
    });
  });

  it("counts code length in UTF-8 bytes", () => {
    // "é" is 2 bytes: 33 of them are 66 bytes in 33 characters.
    expect(rejection(reading({ sample: battery({ errorCodes: ["é".repeat(33)] }) })).message).toBe(
      "battery.error_codes[0] is 66 bytes; each must be 1 to 64",
    );
    expect(accepted(reading({ sample: battery({ errorCodes: ["é".repeat(32)] }) })).kind).toBe("battery");
  });

  it("checks voltage and temperature before the codes", () => {
    expect(rejection(reading({ sample: battery({ temperature: -51, errorCodes: [""] }) })).reason).toBe(RejectReason.OUT_OF_RANGE);
  });
});
