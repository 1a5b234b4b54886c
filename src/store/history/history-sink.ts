// Puts one encoded block of rows into one history table: the engine's raw insert when embedded
// (the buffer never becomes a JS string), an HTTP INSERT … FORMAT against a server. Every block
// carries an insert_deduplication_token, so retrying it never writes it twice.
import { Readable } from "node:stream";
import type { DeviceKind } from "../../process/history-rows.js";
import { INSERT_FORMAT } from "../../process/insert-encoding.js";
import type { HistoryClient } from "./clickhouse-client.js";

export const HISTORY_TABLES: Readonly<Record<DeviceKind, string>> = {
  meter: "meter_readings",
  vehicle: "vehicle_readings",
  battery: "battery_readings",
};

export interface HistorySink {
  /** Resolves once ClickHouse acknowledged the block. Same token again writes nothing new. */
  insert(kind: DeviceKind, payload: Buffer, token: string): Promise<void>;
}

export function createHistorySink(history: HistoryClient): HistorySink {
  const { rawInsert, client, database } = history;
  if (rawInsert !== undefined) {
    return {
      async insert(kind, payload, token) {
        await rawInsert({
          table: `${database}.${HISTORY_TABLES[kind]}`,
          values: payload,
          format: INSERT_FORMAT,
          settings: { insert_deduplication_token: token },
        });
      },
    };
  }
  return {
    async insert(kind, payload, token) {
      const result = await client.exec({
        query: `INSERT INTO ${HISTORY_TABLES[kind]} FORMAT ${INSERT_FORMAT}`,
        values: Readable.from([payload]),
        clickhouse_settings: { insert_deduplication_token: token },
      });
      // The response body is empty for an INSERT; drain it so the socket returns to the pool.
      result.stream.resume();
    },
  };
}
