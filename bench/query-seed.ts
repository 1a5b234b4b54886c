// Seeds the embedded engine for the query benchmark: N readings over the last 29 days for a fleet
// of devices (device i is a meter, vehicle or battery unit by i % 3, as in bench/limit.ts), each
// vehicle linked to the meter before it. Rows are encoded straight to RowBinary with the service's
// own encoder (no protobuf, no validation: the values are valid by construction) and inserted one
// block per table with INSERT … FROM INFILE into the kind's ingest table, whose views write
// history and every rollup in one statement (what the service writes, the rollups a batch later).
// The next block is encoded while the engine inserts the current one.
import { mkdirSync, rmSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import type { DeviceKind } from "../src/process/history-rows.js";
import { encodeRow, INSERT_FORMAT, RowBinaryWriter, TABLE_COLUMNS } from "../src/process/insert-encoding.js";
import { VEHICLE_SCORE_VERSION } from "../src/process/scoring/vehicle-temperature.js";
import { openHistoryClient } from "../src/store/history/clickhouse-client.js";
import { INGEST_TABLES } from "../src/store/history/history-sink.js";
import { applyMigrations, loadMigrations } from "../src/store/history/migrations.js";

const DAY_MS = 86_400_000;
const KINDS: readonly DeviceKind[] = ["meter", "vehicle", "battery"];
const PREFIX: Record<DeviceKind, string> = { meter: "meter", vehicle: "ev", battery: "bbu" };

export interface SeedOptions {
  readonly dataDir: string;
  readonly spoolDir: string;
  readonly database: string;
  readonly rows: number;
  readonly devices: number;
  readonly blockRows: number;
  readonly historyDays?: number;
  readonly log: (msg: string) => void;
}

export interface SeedResult {
  readonly rows: number;
  readonly loadSeconds: number;
  readonly encodeSeconds: number;
  readonly insertWaitSeconds: number;
  readonly rowsPerTable: Record<DeviceKind, number>;
  readonly links: number;
  readonly vehicleIds: string[];
  readonly partsAfterLoad: Record<string, number>;
}

export function deviceName(device: number): { id: string; kind: DeviceKind } {
  const kind = KINDS[device % 3]!;
  return { id: `${PREFIX[kind]}-${device}`, kind };
}

export async function seedHistory(options: SeedOptions): Promise<SeedResult> {
  const { rows, devices, blockRows, log } = options;
  const historyMs = (options.historyDays ?? 29) * DAY_MS;
  const nowMs = Date.now();
  const startMs = nowMs - historyMs;
  mkdirSync(options.spoolDir, { recursive: true });

  const ids = Array.from({ length: devices }, (_, d) => deviceName(d));
  const vehicleIds = ids.filter((d) => d.kind === "vehicle").map((d) => d.id);

  const history = await openHistoryClient({ url: undefined, username: "default", password: "", database: options.database, dataDir: options.dataDir });
  const { client } = history;
  try {
    await applyMigrations(client, await loadMigrations());

    // Each vehicle d charges from meter d - 1 from before the history starts, open-ended.
    const links = ids.flatMap((d, i) =>
      d.kind === "vehicle"
        ? [{ vehicle_id: d.id, meter_id: ids[i - 1]!.id, valid_from: startMs - DAY_MS, valid_until: null, linked_at: nowMs }]
        : [],
    );
    await client.insert({
      table: "vehicle_meter_links",
      values: links,
      format: "JSONEachRow",
    });
    log(`linked ${links.length} vehicles to meters`);

    const rowsPerTable: Record<DeviceKind, number> = { meter: 0, vehicle: 0, battery: 0 };
    const loadStarted = performance.now();
    let encodeMs = 0;
    let waitMs = 0;
    let pending: Promise<void> | undefined;
    let block = 0;
    for (let first = 0; first < rows; first += blockRows) {
      const last = Math.min(rows, first + blockRows);
      const t0 = performance.now();
      const writers: Record<DeviceKind, RowBinaryWriter> = { meter: new RowBinaryWriter(), vehicle: new RowBinaryWriter(), battery: new RowBinaryWriter() };
      for (let n = first; n < last; n++) {
        const device = n % devices;
        const { id, kind } = ids[device]!;
        // Time rises with n: every device reads at an even pace across the whole history.
        const observedAt = startMs + Math.floor((n / rows) * historyMs);
        rowsPerTable[kind]++;
        encodeRow(kind, rowOf(kind, n, device, id, observedAt), observedAt + 500, writers[kind]);
      }
      const files = await Promise.all(
        KINDS.map(async (kind) => {
          const file = path.join(options.spoolDir, `${block % 2}-${kind}.bin`);
          await writeFile(file, writers[kind].finish());
          return { kind, file };
        }),
      );
      encodeMs += performance.now() - t0;

      const t1 = performance.now();
      await pending;
      waitMs += performance.now() - t1;
      const blockNo = block;
      pending = (async () => {
        for (const { kind, file } of files) {
          await client.command({
            // A token of its own per block, in the statement's SETTINGS (clickhouse_settings would
            // stay set for the whole embedded session and make later blocks look like duplicates).
            query: `INSERT INTO ${INGEST_TABLES[kind]} (${TABLE_COLUMNS[kind].join(", ")}) FROM INFILE '${file}'
                    SETTINGS insert_deduplication_token = 'seed-${blockNo}-${kind}' FORMAT ${INSERT_FORMAT}`,
          });
        }
      })();
      block++;
      const seconds = (performance.now() - loadStarted) / 1000;
      if (block % 5 === 0 || last === rows) {
        log(`encoded ${(last / 1e6).toFixed(1)}M of ${(rows / 1e6).toFixed(1)}M rows, ${seconds.toFixed(1)} s, ${Math.round(last / seconds).toLocaleString("en")} rows/s`);
      }
    }
    const t1 = performance.now();
    await pending;
    waitMs += performance.now() - t1;
    const loadSeconds = (performance.now() - loadStarted) / 1000;
    log(`loaded ${rows.toLocaleString("en")} rows in ${loadSeconds.toFixed(1)} s: ${Math.round(rows / loadSeconds).toLocaleString("en")} rows/s`);

    const parts = await client.query({
      query: `SELECT table, count() AS parts, sum(rows) AS rows FROM system.parts
              WHERE database = {db:String} AND active GROUP BY table ORDER BY table`,
      query_params: { db: options.database },
      format: "JSONEachRow",
    });
    const partRows = await parts.json<{ table: string; parts: string | number; rows: string | number }>();
    for (const p of partRows) log(`  ${p.table}: ${p.rows} rows in ${p.parts} parts`);
    return {
      rows,
      loadSeconds,
      encodeSeconds: encodeMs / 1000,
      insertWaitSeconds: waitMs / 1000,
      rowsPerTable,
      links: links.length,
      vehicleIds,
      partsAfterLoad: Object.fromEntries(partRows.map((p) => [p.table, Number(p.parts)])),
    };
  } finally {
    await client.close();
    rmSync(options.spoolDir, { recursive: true, force: true });
  }
}

/** One reading's row, with plausible values: efficiency differs by vehicle, around 0.7–1.0. */
function rowOf(kind: DeviceKind, n: number, device: number, id: string, observedAt: number): Record<string, unknown> {
  const base = { device_id: id, event_id: `q-${n}`, observed_at: observedAt };
  switch (kind) {
    case "meter":
      return { ...base, kwh_consumed_ac: 0.1 + (n % 10) / 100, voltage: 229 + (n % 5), register_kwh_ac: null };
    case "vehicle":
      return {
        ...base,
        soc: n % 100,
        kwh_delivered_dc: 0.145 * (0.7 + (device % 31) / 100),
        battery_temp: 25 + (n % 10),
        register_kwh_dc: null,
        temp_risk: "OK",
        score_version: VEHICLE_SCORE_VERSION,
      };
    case "battery": {
      const critical = device % 97 === 2;
      return {
        ...base,
        voltage: 48 + (n % 3) / 10,
        temperature: 30,
        error_codes: critical ? ["E42"] : [],
        health_score: critical ? 20 : 90,
        health_level: critical ? "CRITICAL" : "OK",
        recommendation: critical ? "REPLACE" : "NONE",
        score_version: 1,
      };
    }
  }
}
