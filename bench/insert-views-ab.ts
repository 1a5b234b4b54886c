// What the fleet-wide rollups (migrations 0005 hourly, 0006 minutes by time) cost each small
// insert: two databases on one embedded engine, one with every view and one without those four,
// fleet-sized blocks (37 rows) inserted into each in turn — interleaved, so the machine's drift
// hits both alike. Each block is timed with its rollups (the sink's feed, right after its insert). Run: node --import tsx bench/insert-views-ab.ts [rows per block, default 37]
// [blocks, default 300].
import { randomUUID } from "node:crypto";
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { openHistoryClient } from "../src/store/history/clickhouse-client.js";
import { applyMigrations, loadMigrations } from "../src/store/history/migrations.js";
import { createHistorySink } from "../src/store/history/history-sink.js";
import { historyBlock } from "./history-blocks.js";

const dataDir = mkdtempSync(path.join(os.tmpdir(), "ins-ab-"));
const a = await openHistoryClient({ url: undefined, username: "default", password: "", database: "a", dataDir });
await applyMigrations(a.client, await loadMigrations());
const b = await openHistoryClient({ url: undefined, username: "default", password: "", database: "b", dataDir });
await b.client.command({ query: "USE b" });
await applyMigrations(b.client, await loadMigrations());
for (const v of ["meter_hours_mv", "vehicle_hours_mv", "meter_minutes_by_time_mv", "vehicle_minutes_by_time_mv"]) await b.client.command({ query: `DROP VIEW b.${v}` });
const rowsPerBlock = Number(process.argv[2] ?? 37);
const blocks = Number(process.argv[3] ?? 300);
const sinks = { a: await createHistorySink(a), b: await createHistorySink(b) };
const times: Record<string, number[]> = { a: [], b: [] };
for (let i = 0; i < blocks; i++) {
  const kind = i % 2 === 0 ? "meter" : "vehicle";
  for (const which of i % 4 < 2 ? (["a", "b"] as const) : (["b", "a"] as const)) {
    // The sink names tables unqualified and both clients share the engine's one session.
    await (which === "a" ? a : b).client.command({ query: `USE ${which}` });
    const t = performance.now();
    await sinks[which].insert(kind, historyBlock(kind, rowsPerBlock), randomUUID());
    // The block's rollups too, as when the insert wrote them itself (before migration 0007).
    await sinks[which].rollupsCaughtUp();
    times[which]!.push(performance.now() - t);
  }
}
for (const k of ["a", "b"]) {
  const t = times[k]!.sort((x, y) => x - y);
  const at = (q: number) => t[Math.floor(q * (t.length - 1))]!.toFixed(1);
  const mean = t.reduce((sum, x) => sum + x, 0) / t.length;
  const label = k === "a" ? "all views (0003–0006)" : "without 0005/0006 views";
  console.log(`${label}: ${rowsPerBlock}-row blocks, ms p50 ${at(0.5)} p90 ${at(0.9)} mean ${mean.toFixed(1)}; ${Math.round((rowsPerBlock * 1000) / mean)} rows/s`);
}
