// Puts one encoded block of rows into one history table. Against a server: an HTTP
// INSERT … FORMAT RowBinary. Embedded: the block is spooled to a file (in /dev/shm when there is
// one) and read by INSERT … FROM INFILE, because the engine's in-process insert paths take text
// formats only, which cost it about three times as much per row. Every block carries an
// insert_deduplication_token in the INSERT's own SETTINGS, so retrying it never writes it twice
// (and, unlike the client's clickhouse_settings on the embedded engine, it does not linger as a
// session setting).
import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, rmSync } from "node:fs";
import { rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import type { DeviceKind } from "../../process/history-rows.js";
import { INSERT_FORMAT, TABLE_COLUMNS } from "../../process/insert-encoding.js";
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

export interface OpenHistorySink extends HistorySink {
  /** Releases what the sink holds (its spool directory). */
  close(): Promise<void>;
}

const SPOOL_PREFIX = "wattstream-spool-";

export function createHistorySink(history: HistoryClient): OpenHistorySink {
  const { client, database } = history;
  const columns = (kind: DeviceKind) => `(${TABLE_COLUMNS[kind].join(", ")})`;
  if (!history.embedded) {
    return {
      async insert(kind, payload, token) {
        const result = await client.exec({
          query: `INSERT INTO ${HISTORY_TABLES[kind]} ${columns(kind)} FORMAT ${INSERT_FORMAT}`,
          values: Readable.from([payload]),
          clickhouse_settings: { insert_deduplication_token: token },
        });
        // The response body is empty for an INSERT; drain it so the socket returns to the pool.
        result.stream.resume();
      },
      async close() {},
    };
  }

  const spool = openSpool();
  return {
    async insert(kind, payload, token) {
      const file = path.join(spool, `${randomUUID()}.bin`);
      await writeFile(file, payload);
      try {
        // The token is a UUID-derived string and the path is ours: nothing here comes from a client.
        await client.command({
          query: `INSERT INTO ${database}.${HISTORY_TABLES[kind]} ${columns(kind)} FROM INFILE '${file}'
                  SETTINGS insert_deduplication_token = '${token}' FORMAT ${INSERT_FORMAT}`,
        });
      } finally {
        await rm(file, { force: true });
      }
    },
    async close() {
      rmSync(spool, { recursive: true, force: true });
    },
  };
}

/**
 * A spool directory of this process's own, in memory-backed /dev/shm when the machine has it.
 * Directories left by processes that died are removed.
 */
function openSpool(): string {
  const base = existsSync("/dev/shm") ? "/dev/shm" : os.tmpdir();
  for (const entry of safeReaddir(base)) {
    const pid = Number(entry.slice(SPOOL_PREFIX.length).split("-")[0]);
    if (entry.startsWith(SPOOL_PREFIX) && Number.isInteger(pid) && !isAlive(pid)) {
      rmSync(path.join(base, entry), { recursive: true, force: true });
    }
  }
  const dir = path.join(base, `${SPOOL_PREFIX}${process.pid}-${randomUUID().slice(0, 8)}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
