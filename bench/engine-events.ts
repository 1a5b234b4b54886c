// Where the embedded engine's time goes in one statement, from its own counters: the difference in
// system.events (the engine's cumulative ProfileEvents) across many statements of one kind, per
// statement. chdb keeps no query_log, so this is the way to see parsing, analysis, planning,
// pipeline building and merges apart.
//   node --import tsx bench/engine-events.ts insert [--rows 3] [--blocks 200] [--settings "compile_expressions = 0"]
//     small inserts like the embedded service's (RowBinary FROM INFILE, with a dedupe token, into the
//     history table alone: since migration 0007 its rollups are fed apart), into a fresh data
//     directory, a third each per history table; --with-rollups sends them to the kind's ingest table
//     instead, whose views write history and every rollup in one statement, as each insert did before
//     0007 (and as the service's inserts into a ClickHouse server do);
//   node --import tsx bench/engine-events.ts capacity [--rows 200] [--seconds 10] [--with-rollups]
//     how many such inserts the engine takes a second with this machine to itself, and its CPU
//     (this process's, merges included) per insert: one connection inserting one block after
//     another, then one connection per history table inserting at once, as the service does
//     (--with-rollups, as above: what writing the rollups at insert time costs);
//   node --import tsx bench/engine-events.ts paced [--rate 12] [--rows 90] [--seconds 30] [--with-rollups]
//     inserts at a fixed rate, as a fleet's readings arrive (--rate inserts a second into each history
//     table, on one connection per table): their latency and the CPU per insert, merges included,
//     and what the engine merged per insert (its MergedRows) and the active parts left;
//   any of insert, capacity and paced take --table-settings "name = value, …", set on every
//     MergeTree table of the fresh database first (to try merge or part settings);
//   node --import tsx bench/engine-events.ts performance --data-dir DIR [--calls 300] [--settings …]
//     GetVehiclePerformance's totals statement for linked vehicles, on a directory seeded by
//     `npm run bench:query -- --rows N --data-dir DIR`, over the 24 h before it was seeded.
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import type { ClickHouseClient } from "@clickhouse/client";
import { queryPerformanceTotals } from "../src/analytics/vehicle-performance.js";
import { INSERT_FORMAT, TABLE_COLUMNS } from "../src/process/insert-encoding.js";
import type { DeviceKind } from "../src/process/history-rows.js";
import { openEmbeddedConnection, openHistoryClient } from "../src/store/history/clickhouse-client.js";
import { HISTORY_TABLES, INGEST_TABLES } from "../src/store/history/history-sink.js";
import { applyMigrations, loadMigrations } from "../src/store/history/migrations.js";
import { historyBlock } from "./history-blocks.js";
import { latencySummary } from "./latency.js";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    rows: { type: "string", default: "3" },
    blocks: { type: "string", default: "200" },
    calls: { type: "string", default: "300" },
    "data-dir": { type: "string" },
    seconds: { type: "string", default: "10" },
    "with-rollups": { type: "boolean", default: false },
    settings: { type: "string", default: "" },
    "table-settings": { type: "string", default: "" },
    rate: { type: "string", default: "12" },
  },
});
const mode = positionals[0];
if (mode !== "insert" && mode !== "capacity" && mode !== "paced" && mode !== "performance") {
  console.error("usage: engine-events.ts insert|capacity|paced|performance [options] (see the header of bench/engine-events.ts)");
  process.exit(2);
}
const settings = values.settings.trim();

async function engineEvents(client: ClickHouseClient): Promise<Map<string, number>> {
  const result = await client.query({ query: "SELECT event, value FROM system.events", format: "JSONCompactEachRow" });
  return new Map((await result.json<[string, string]>()).map(([event, value]) => [event, Number(value)]));
}

/** Inserts for --seconds as `run` makes them; prints how many a second, their latency, and the CPU. */
async function capacity(label: string, run: (until: number, times: number[]) => Promise<void>): Promise<void> {
  const seconds = Number(values.seconds);
  const times: number[] = [];
  const cpu = process.cpuUsage();
  await run(performance.now() + seconds * 1000, times);
  const used = process.cpuUsage(cpu);
  const cpuSeconds = (used.user + used.system) / 1e6;
  const { p50, p99 } = latencySummary(times);
  console.log(
    `${label}: ${(times.length / seconds).toFixed(1)} inserts/s of ${values.rows} rows, ms p50 ${p50.toFixed(1)} p99 ${p99.toFixed(1)}; ` +
      `CPU ${(cpuSeconds / seconds).toFixed(2)} cores, ${((cpuSeconds / times.length) * 1000).toFixed(1)} ms per insert`,
  );
}

function report(label: string, times: number[], before: Map<string, number>, after: Map<string, number>): void {
  const sorted = [...times].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.floor(q * (sorted.length - 1))]!.toFixed(2);
  console.log(`${label}${settings ? ` (SETTINGS ${settings})` : ""}: ${times.length} statements, ms p50 ${at(0.5)} p90 ${at(0.9)} p99 ${at(0.99)}`);
  const perStatement = [...after]
    .map(([event, value]) => [event, (value - (before.get(event) ?? 0)) / times.length] as const)
    .filter(([, value]) => value > 0)
    .sort((a, b) => b[1] - a[1]);
  console.log("engine time per statement (µs; the engine's threads overlap, so these do not add up):");
  for (const [event, value] of perStatement.filter(([event]) => event.endsWith("Microseconds")).slice(0, 25)) {
    console.log(`  ${event.padEnd(56)} ${value.toFixed(0)}`);
  }
  console.log("engine counts per statement:");
  for (const [event, value] of perStatement.filter(([event]) => !/(Microseconds|Bytes|Chars)$/.test(event)).slice(0, 25)) {
    console.log(`  ${event.padEnd(56)} ${value.toFixed(1)}`);
  }
}

if (mode === "insert" || mode === "capacity" || mode === "paced") {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "engine-events-"));
  const history = await openHistoryClient({ url: undefined, username: "default", password: "", database: "wattstream", dataDir });
  await applyMigrations(history.client, await loadMigrations());
  if (values["table-settings"].trim()) {
    const tables = await history.client.query({
      query: "SELECT name FROM system.tables WHERE database = 'wattstream' AND engine LIKE '%MergeTree'",
      format: "JSONCompactEachRow",
    });
    for (const [name] of await tables.json<[string]>()) {
      await history.client.command({ query: `ALTER TABLE wattstream.${name} MODIFY SETTING ${values["table-settings"]}` });
    }
  }
  const kinds: DeviceKind[] = ["meter", "vehicle", "battery"];
  const lanes = await Promise.all(kinds.map(() => openEmbeddedConnection(dataDir)));
  const rowsPerBlock = Number(values.rows);
  const insert = async (kind: DeviceKind, lane = lanes[0]!): Promise<number> => {
    const file = path.join(dataDir, `block-${randomUUID()}.bin`);
    writeFileSync(file, historyBlock(kind, rowsPerBlock));
    const started = performance.now();
    await lane.command({
      query: `INSERT INTO wattstream.${(values["with-rollups"] ? INGEST_TABLES : HISTORY_TABLES)[kind]} (${TABLE_COLUMNS[kind].join(", ")}) FROM INFILE '${file}'
              SETTINGS insert_deduplication_token = '${randomUUID()}', deduplicate_blocks_in_dependent_materialized_views = 1${settings ? `, ${settings}` : ""}
              FORMAT ${INSERT_FORMAT}`,
    });
    const ms = performance.now() - started;
    rmSync(file);
    return ms;
  };
  for (let i = 0; i < 15; i++) await insert(kinds[i % 3]!);
  if (mode === "paced") {
    const rate = Number(values.rate);
    const seconds = Number(values.seconds);
    const before = await engineEvents(history.client);
    const times: number[] = [];
    const cpu = process.cpuUsage();
    const until = performance.now() + seconds * 1000;
    await Promise.all(
      kinds.map(async (kind, i) => {
        // On a schedule, not back to back: an insert that runs late does not move the next one.
        for (let due = performance.now(); due < until; due += 1000 / rate) {
          const wait = due - performance.now();
          if (wait > 0) await sleep(wait);
          times.push(await insert(kind, lanes[i]));
        }
      }),
    );
    const used = process.cpuUsage(cpu);
    const after = await engineEvents(history.client);
    const cpuSeconds = (used.user + used.system) / 1e6;
    const { p50, p99, max } = latencySummary(times);
    const perInsert = (event: string) => (((after.get(event) ?? 0) - (before.get(event) ?? 0)) / times.length).toFixed(1);
    const parts = await history.client.query({
      query: "SELECT count() FROM system.parts WHERE active AND database = 'wattstream' AND table != 'schema_migrations'",
      format: "JSONCompactEachRow",
    });
    const [[activeParts]] = await parts.json<[string]>();
    console.log(
      `${rate} inserts/s into each table of ${rowsPerBlock} rows${values["with-rollups"] ? ", with the rollups" : ""}: ${times.length} inserts, ` +
        `ms p50 ${p50.toFixed(1)} p99 ${p99.toFixed(1)} max ${max.toFixed(0)}; CPU ${(cpuSeconds / seconds).toFixed(2)} cores, ` +
        `${((cpuSeconds / times.length) * 1000).toFixed(1)} ms per insert; per insert merged ${perInsert("MergedRows")} rows in ${perInsert("Merge")} merges; ` +
        `${activeParts} active parts`,
    );
  } else if (mode === "insert") {
    const before = await engineEvents(history.client);
    const times: number[] = [];
    for (let i = 0; i < Number(values.blocks); i++) times.push(await insert(kinds[i % 3]!));
    report(`inserts of ${rowsPerBlock} rows`, times, before, await engineEvents(history.client));
  } else {
    // Each way twice, alternated: the engine's merges of one run spill into the next.
    for (let round = 0; round < 2; round++) {
      await capacity("one connection, one insert after another", async (until, times) => {
        for (let i = 0; performance.now() < until; i++) times.push(await insert(kinds[i % 3]!));
      });
      await capacity("one connection per table, inserting at once", async (until, times) => {
        await Promise.all(kinds.map(async (kind, i) => {
          while (performance.now() < until) times.push(await insert(kind, lanes[i]));
        }));
      });
    }
  }
  await Promise.all(lanes.map((lane) => lane.close()));
  await history.client.close();
  rmSync(dataDir, { recursive: true, force: true });
} else {
  const root = values["data-dir"];
  if (root === undefined) throw new Error("performance needs --data-dir, a directory seeded by npm run bench:query");
  const seed = JSON.parse(readFileSync(path.join(root, "seed.json"), "utf8")) as { seededAtMs: number };
  const history = await openHistoryClient({ url: undefined, username: "default", password: "", database: "wattstream", dataDir: path.join(root, "data") });
  const { client } = history;
  if (settings) for (const setting of settings.split(",")) await client.command({ query: `SET ${setting}` });
  const links = await (await client.query({ query: "SELECT vehicle_id, meter_id FROM vehicle_meter_links FINAL", format: "JSONCompactEachRow" })).json<[string, string]>();
  // Window edges inside a minute, so every read of the statement (raw edges and minutes) runs.
  const fromMs = seed.seededAtMs - 86_400_000 + 1_234;
  const toMs = seed.seededAtMs - 567;
  const call = async (i: number): Promise<number> => {
    const [vehicleId, meterId] = links[(i * 7_919) % links.length]!;
    const started = performance.now();
    await queryPerformanceTotals(client, vehicleId, fromMs, toMs, [{ meterId, fromMs, toMs }]);
    return performance.now() - started;
  };
  for (let i = 0; i < 20; i++) await call(i);
  const before = await engineEvents(client);
  const times: number[] = [];
  for (let i = 0; i < Number(values.calls); i++) times.push(await call(i));
  report("GetVehiclePerformance totals", times, before, await engineEvents(client));
  await client.close();
}
