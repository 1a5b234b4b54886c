// What a valid reading is: limits on ids and times, and the physical range of every measured
// value. One table so the contract's comments, the validator and its tests agree.

/** Longest event_id accepted, in UTF-8 bytes. */
export const MAX_EVENT_ID_BYTES = 64;
/** Longest device_id accepted, in UTF-8 bytes. */
export const MAX_DEVICE_ID_BYTES = 128;
/** Most error codes one battery reading may carry. */
export const MAX_ERROR_CODES = 32;
/** Longest error code accepted, in UTF-8 bytes. */
export const MAX_ERROR_CODE_BYTES = 64;

export interface Range {
  readonly min: number;
  readonly max: number;
  readonly unit: string;
}

/**
 * Physical ranges, chosen wide enough for any real device of the kind and narrow enough to catch
 * unit mix-ups (Wh sent as kWh, mV as V, Kelvin as Celsius).
 */
export const RANGES = {
  meter: {
    kwh_consumed_ac: { min: 0, max: 1000, unit: "kWh" },
    voltage: { min: 0, max: 1000, unit: "V" },
    register_kwh_ac: { min: 0, max: 1e12, unit: "kWh" },
  },
  vehicle: {
    soc: { min: 0, max: 100, unit: "%" },
    kwh_delivered_dc: { min: 0, max: 500, unit: "kWh" },
    battery_temp: { min: -50, max: 100, unit: "°C" },
    register_kwh_dc: { min: 0, max: 1e12, unit: "kWh" },
  },
  battery: {
    voltage: { min: 0, max: 1500, unit: "V" },
    temperature: { min: -50, max: 150, unit: "°C" },
  },
} as const satisfies Record<string, Record<string, Range>>;
