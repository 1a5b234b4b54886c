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
 * How the service slices history when it restores live state: an hour first, doubling up to a
 * day per statement.
 */
export const RESTORE_SLICES = { sliceMs: 3_600_000, maxSliceMs: 24 * 3_600_000 } as const;

export interface RestoreOptions {
  /** How far back to look, epoch ms: devices silent since before then stay unknown. */
  readonly sinceMs: number;
  /** Length of the first (newest) slice of history read in one statement, ms; each next doubles. */
  readonly sliceMs: number;
  /** The longest slice, ms: bounds how long one statement holds the engine. */
  readonly maxSliceMs: number;
  /** Answers true to stop early (the service is shutting down). */
  readonly stopped?: () => boolean;
}

/**
 * Finds each device's newest reading, reading history in slices of observed time from now
 * backwards, and hands each slice's newly found devices to `apply`. The first slice is short, as
 * most devices reported lately; slices then double, up to maxSliceMs, so the tail costs few
 * statements while none holds the engine long (it runs one statement at a time, and inserts wait
 * behind a long scan).
 * A device's last_seen is the newest received_at of its readings observed since sinceMs: a backlog
 * reading observed in an older slice but received after the newest one moves it on (one received
 * lately but observed before sinceMs is not looked for). Battery trends are not in history; a
 * unit's scoring baseline starts again from its next reading. Answers the number of devices found.
 */
export async function restoreNewestReadings(
  client: ClickHouseClient,
  apply: (updates: LiveStateUpdate[]) => Promise<void>,
  options: RestoreOptions,
): Promise<number> {
  // Each device found, with the last_seen it was given.
  const found = new Map<string, number>();
  const nowMs = Date.now();
  // The first slice reaches a day ahead: readings may be observed a little in the future (clock skew).
  let sliceMs = options.sliceMs;
  for (let toMs = nowMs + 86_400_000, fromMs = nowMs - sliceMs; toMs > options.sinceMs && !options.stopped?.(); toMs = fromMs, fromMs -= sliceMs) {
    fromMs = Math.max(options.sinceMs, fromMs);
    sliceMs = Math.min(options.maxSliceMs, sliceMs * 2);
    // A device found in a newer slice keeps its reading (the store keeps the newest observed) and
    // takes only a later last_seen from this one.
    const updates = (await newestReadingsBetween(client, fromMs, toMs)).filter((u) => u.receivedAtMs > (found.get(u.deviceId) ?? -Infinity));
    for (const update of updates) found.set(update.deviceId, update.receivedAtMs);
    if (updates.length > 0) await apply(updates);
  }
  return found.size;
}

/** Per device, the newest reading observed in [fromMs, toMs) (ties broken by event_id). */
export async function newestReadingsBetween(client: ClickHouseClient, fromMs: number, toMs: number): Promise<LiveStateUpdate[]> {
  const updates: LiveStateUpdate[] = [];
  for (const kind of Object.keys(HISTORY_TABLES) as DeviceKind[]) {
    const columns = TABLE_COLUMNS[kind].filter((c) => !IDENTITY_COLUMNS.has(c));
    // Every column from the same row: the arg is unique per device. Aliases differ from the
    // column names, which the aggregates read.
    const result = await client.query({
      query: `SELECT device_id,
                     toString(toUnixTimestamp64Milli(max(observed_at))) AS observed_at_ms,
                     toString(toUnixTimestamp64Milli(max(received_at))) AS last_seen_ms,
                     ${columns.map((c) => `argMax(${c}, (observed_at, event_id)) AS newest_${c}`).join(",\n                     ")}
              FROM ${HISTORY_TABLES[kind]}
              WHERE observed_at >= fromUnixTimestamp64Milli({from:Int64}, 'UTC')
                AND observed_at < fromUnixTimestamp64Milli({to:Int64}, 'UTC')
              GROUP BY device_id`,
      query_params: { from: Math.floor(fromMs), to: Math.floor(toMs) },
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
