// Answers which readings are already in history, for the cases the dedupe ledger cannot answer
// (it was lost, or the event is older than its window). Looks rows up by the table's primary key
// — device_id, then observed_at — so the check reads a few granules, never the whole history.
import type { ClickHouseClient } from "@clickhouse/client";
import { eventIdentity, type DeviceKind, type RowIdentity } from "../../process/history-rows.js";
import { HISTORY_TABLES } from "./history-sink.js";

export interface StoredEventFinder {
  /** The identities among `rows` whose event is already stored, as eventIdentity strings. */
  findStored(kind: DeviceKind, rows: readonly RowIdentity[]): Promise<Set<string>>;
  /** The newest observed_at among rows received before the given time, epoch ms (-Infinity: none). */
  newestObservedReceivedBefore(receivedBeforeMs: number): Promise<number>;
}

export class ClickHouseStoredEventFinder implements StoredEventFinder {
  constructor(private readonly client: ClickHouseClient) {}

  async findStored(kind: DeviceKind, rows: readonly RowIdentity[]): Promise<Set<string>> {
    if (rows.length === 0) return new Set();
    let from = Infinity;
    let to = -Infinity;
    for (const row of rows) {
      from = Math.min(from, row.observed_at);
      to = Math.max(to, row.observed_at);
    }
    // A resent reading carries the observed_at it was stored with, so the time range narrows
    // the primary-key scan to the rows that could match.
    const result = await this.client.query({
      query: `SELECT device_id, event_id FROM ${HISTORY_TABLES[kind]}
              WHERE device_id IN {devices:Array(String)}
                AND observed_at BETWEEN fromUnixTimestamp64Milli({from:Int64}, 'UTC') AND fromUnixTimestamp64Milli({to:Int64}, 'UTC')
                AND event_id IN {events:Array(String)}`,
      query_params: {
        devices: [...new Set(rows.map((r) => r.device_id))],
        events: [...new Set(rows.map((r) => r.event_id))],
        from,
        to,
      },
      format: "JSONEachRow",
    });
    const found = await result.json<{ device_id: string; event_id: string }>();
    return new Set(found.map((r) => eventIdentity(r.device_id, r.event_id)));
  }

  async newestObservedReceivedBefore(receivedBeforeMs: number): Promise<number> {
    const before = "fromUnixTimestamp64Milli({before:Int64}, 'UTC')";
    const result = await this.client.query({
      query: `SELECT max(newest) AS newest, sum(n) AS n FROM (${Object.values(HISTORY_TABLES)
        .map((table) => `SELECT toUnixTimestamp64Milli(max(observed_at)) AS newest, count() AS n FROM ${table} WHERE received_at < ${before}`)
        .join(" UNION ALL ")})`,
      query_params: { before: receivedBeforeMs },
      format: "JSONEachRow",
    });
    const [row] = await result.json<{ newest: number | string; n: number | string }>();
    return Number(row?.n ?? 0) === 0 ? -Infinity : Number(row!.newest);
  }
}
