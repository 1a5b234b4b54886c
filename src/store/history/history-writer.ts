// Writes accepted rows to the history tables. A batch is written with one insert per table, each
// carrying an insert_deduplication_token derived from the batch, so retrying a failed or
// unanswered flush never writes the rows twice.
import type { ClickHouseClient } from "@clickhouse/client";
import type { DeviceKind, RowsByKind } from "../../process/history-rows.js";

export const HISTORY_TABLES: Readonly<Record<DeviceKind, string>> = {
  meter: "meter_readings",
  vehicle: "vehicle_readings",
  battery: "battery_readings",
};

export interface HistoryWriter {
  /**
   * Inserts the rows; resolves once ClickHouse has acknowledged every table's insert. Calling it
   * again with the same batchId and rows writes nothing new.
   */
  write(batchId: string, rows: RowsByKind, receivedAtMs: number): Promise<void>;
}

export class ClickHouseHistoryWriter implements HistoryWriter {
  // The embedded engine applies clickhouse_settings as session-wide SETs, so two concurrent
  // inserts could swap dedupe tokens (and one be dropped as the other's duplicate). Inserts are
  // therefore serialised on it; a server scopes settings to each request and needs no queue.
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly client: ClickHouseClient,
    private readonly serialize: boolean,
  ) {}

  async write(batchId: string, rows: RowsByKind, receivedAtMs: number): Promise<void> {
    const inserts = (Object.keys(HISTORY_TABLES) as DeviceKind[])
      .filter((kind) => rows[kind].length > 0)
      .map((kind) => () => this.insert(kind, rows[kind], `${batchId}:${kind}`, receivedAtMs));
    if (this.serialize) {
      for (const insert of inserts) await this.enqueue(insert);
    } else {
      await Promise.all(inserts.map((insert) => insert()));
    }
  }

  private async insert(kind: DeviceKind, rows: readonly object[], token: string, receivedAtMs: number): Promise<void> {
    await this.client.insert({
      table: HISTORY_TABLES[kind],
      values: rows.map((row) => ({ ...row, received_at: receivedAtMs })),
      format: "JSONEachRow",
      clickhouse_settings: { insert_deduplication_token: token },
    });
  }

  private enqueue<T>(task: () => Promise<T>): Promise<T> {
    const run = this.queue.then(task);
    this.queue = run.catch(() => undefined);
    return run;
  }
}
