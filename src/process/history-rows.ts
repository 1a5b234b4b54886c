// The rows that processing produces and storage writes: one shape per device kind, matching the
// history tables' columns. Times are epoch milliseconds (UTC).

export type DeviceKind = "meter" | "vehicle" | "battery";

/** A kind as a byte, where a batch's columns carry it (0: no kind). */
export const KIND_CODES: Readonly<Record<DeviceKind, number>> = { meter: 1, vehicle: 2, battery: 3 };
/** KIND_CODES read back. */
export const KINDS_BY_CODE: readonly (DeviceKind | undefined)[] = [undefined, "meter", "vehicle", "battery"];

export interface RowIdentity {
  readonly device_id: string;
  readonly event_id: string;
  /** When the device observed the reading, epoch ms. */
  readonly observed_at: number;
}

export interface MeterRow extends RowIdentity {
  readonly kwh_consumed_ac: number;
  readonly voltage: number;
  readonly register_kwh_ac: number | null;
}

export interface VehicleRow extends RowIdentity {
  readonly soc: number;
  readonly kwh_delivered_dc: number;
  readonly battery_temp: number;
  readonly register_kwh_dc: number | null;
}

export interface BatteryRow extends RowIdentity {
  readonly voltage: number;
  readonly temperature: number;
  readonly error_codes: readonly string[];
}

export type HistoryRow =
  | { readonly kind: "meter"; readonly row: MeterRow }
  | { readonly kind: "vehicle"; readonly row: VehicleRow }
  | { readonly kind: "battery"; readonly row: BatteryRow };

/**
 * One string per (device_id, event_id), the dedupe identity of a reading. A length prefix keeps
 * ("a:b", "c") and ("a", "b:c") apart.
 */
export function eventIdentity(deviceId: string, eventId: string): string {
  return `${deviceId.length}:${deviceId}:${eventId}`;
}
