// Blocks of history rows as the service's worker encodes them (RowBinary, src/process/
// insert-encoding.ts), for benchmarks that insert straight into the engine: fresh event ids, the
// devices of a 20,000-device fleet, observed just before now.
import type { DeviceKind } from "../src/process/history-rows.js";
import { encodeRow, RowBinaryWriter } from "../src/process/insert-encoding.js";

let sequence = 0;

export function historyBlock(kind: DeviceKind, rows: number): Buffer {
  const out = new RowBinaryWriter();
  const now = Date.now();
  for (let i = 0; i < rows; i++) {
    const base = { device_id: `${kind}-${sequence % 20_000}`, event_id: `e-${sequence++}`, observed_at: now - i };
    const row =
      kind === "meter"
        ? { ...base, kwh_consumed_ac: 1, voltage: 230, register_kwh_ac: null }
        : kind === "vehicle"
          ? { ...base, soc: 50, kwh_delivered_dc: 1, battery_temp: 25, register_kwh_dc: null, temp_risk: "OK", score_version: 1 }
          : { ...base, voltage: 48, temperature: 30, error_codes: [], health_score: 90, health_level: "OK", recommendation: "none", score_version: 1 };
    encodeRow(kind, row as never, now, out);
  }
  return Buffer.from(out.finish());
}
