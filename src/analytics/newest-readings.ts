// Each device's newest reading as history holds it: what the in-process live store starts from
// after a restart, so live state, partner status and silent-device alerts do not wait for every
// device to report again (a device that went silent before the restart would otherwise vanish).
import type { ClickHouseClient } from "@clickhouse/client";
import type { DeviceKind } from "../process/history-rows.js";
import { TABLE_COLUMNS } from "../process/insert-encoding.js";
import { HISTORY_TABLES } from "../store/history/history-sink.js";
import type { LiveStateUpdate } from "../store/live/live-store.js";

/** Columns every table has that live state keeps apart from a reading's values. */
const IDENTITY_COLUMNS = new Set(["device_id", "observed_at", "received_at"]);

/**
 * Per device: the newest reading observed since sinceMs (ties on observed_at broken by event_id,
 * as every column is taken from the same row), and when the service last received any reading of
 * it. Battery trends are not in history; a unit's scoring baseline starts again from its next
 * reading.
 */
export async function newestReadings(client: ClickHouseClient, sinceMs: number): Promise<LiveStateUpdate[]> {
  const updates: LiveStateUpdate[] = [];
  for (const kind of Object.keys(HISTORY_TABLES) as DeviceKind[]) {
    const columns = TABLE_COLUMNS[kind].filter((c) => !IDENTITY_COLUMNS.has(c));
    const result = await client.query({
      query: `SELECT device_id,
                     toString(toUnixTimestamp64Milli(max(observed_at))) AS observed_at_ms,
                     toString(toUnixTimestamp64Milli(max(received_at))) AS last_seen_ms,
                     ${columns.map((c) => `argMax(${c}, (observed_at, event_id)) AS newest_${c}`).join(",\n                     ")}
              FROM ${HISTORY_TABLES[kind]}
              WHERE observed_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')
              GROUP BY device_id`,
      query_params: { since: Math.floor(sinceMs) },
      format: "JSONEachRow",
    });
    for (const row of await result.json<Record<string, unknown>>()) {
      const values: Record<string, unknown> = {};
      for (const column of columns) values[column] = row[`newest_${column}`];
      updates.push({
        deviceId: String(row.device_id),
        kind,
        observedAtMs: Number(row.observed_at_ms),
        receivedAtMs: Number(row.last_seen_ms),
        values,
      });
    }
  }
  return updates;
}
