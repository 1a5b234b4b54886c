// How a history row is encoded for insert: one JSONEachRow line, whose column names are the
// table's. DateTime64(3) columns take epoch milliseconds as integers. Kept in one module so the
// format (and its measured cost) can change in one place.
import type { DeviceKind } from "./history-rows.js";

export const INSERT_FORMAT = "JSONEachRow";

export function encodeRow(_kind: DeviceKind, row: Readonly<Record<string, unknown>>, receivedAtMs: number): string {
  return `${JSON.stringify({ ...row, received_at: receivedAtMs })}\n`;
}
