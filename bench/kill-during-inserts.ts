// Kills a process in the middle of embedded inserts, again and again, and checks after each restart
// (which inserts the dead process's spool again) that every meter block in the history table is in
// every rollup. Found on 2026-11-26: with several inserts of one table in flight at once, a kill
// can leave a rollup without a block for good — the engine had written the block's entry in that
// table's deduplication log but not yet committed its part, so the spool's replay of the block
// (same token) is dropped there as already held. Stops at the first such block and keeps a copy of
// the data directory as the kill left it, before the replay.
//   node --import tsx bench/kill-during-inserts.ts [--kills 80] [--concurrent 8]
// (The child mode is this script run by itself: `child DIR DATABASE CONCURRENT`.)
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { IngestReadingsRequestSchema } from "../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { ReadingSchema } from "../gen/wattstream/telemetry/v1/reading_pb.js";
import { scanReadings, toProcessInput } from "../src/pipeline/received-reading.js";
import { packBatteryTrends } from "../src/process/battery-trends.js";
import { processBatch } from "../src/process/process-batch.js";
import { openHistoryClient } from "../src/store/history/clickhouse-client.js";
import { createHistorySink } from "../src/store/history/history-sink.js";
import { applyMigrations, loadMigrations } from "../src/store/history/migrations.js";

const DATABASE = "kill_during_inserts";
const open = (dataDir: string) => openHistoryClient({ url: undefined, username: "default", password: "", database: DATABASE, dataDir });

/** Four readings of one meter an hour ago, encoded as the service's worker encodes a block. */
function meterBlock(deviceId: string, nowMs: number): Buffer {
  const readings = Array.from({ length: 4 }, (_, i) =>
    create(ReadingSchema, {
      eventId: `e-${i}`,
      deviceId,
      observedAt: timestampFromMs(nowMs - 3_600_000 + i * 60_000),
      sample: { case: "meter", value: { kwhConsumedAc: 1, voltage: 230 } },
    }),
  );
  const frame = toBinary(IngestReadingsRequestSchema, create(IngestReadingsRequestSchema, { readings }));
  const processed = processBatch({
    ...toProcessInput(scanReadings(frame).readings),
    window: { nowMs, maxReadingAgeMs: 30 * 86_400_000, maxClockSkewMs: 300_000 },
    receivedAtMs: nowMs,
    batteryTrends: packBatteryTrends([], []),
  });
  return Buffer.from(processed.tables.meter!.payload);
}

/** Inserts blocks of fresh meters, `concurrent` at a time (each on a connection of its own, as after a storage stall), until killed. */
async function child(dataDir: string, concurrent: number): Promise<never> {
  const history = await open(dataDir);
  await applyMigrations(history.client, await loadMigrations());
  const sink = await createHistorySink(history);
  console.log("ready");
  for (let round = 0; ; round++) {
    const now = Date.now();
    await Promise.all(
      Array.from({ length: concurrent }, (_, i) => sink.insert("meter", meterBlock(`meter-${process.pid}-${round}-${i}`, now), randomUUID())),
    );
  }
}

/** Meters whose readings in the history table and in a rollup differ. */
async function rollupMismatches(dataDir: string): Promise<{ recovered: number; rows: number; mismatches: Record<string, unknown>[] }> {
  const history = await open(dataDir);
  try {
    const query = async <T>(sql: string) => (await history.client.query({ query: sql, format: "JSONEachRow" })).json<T>();
    const mismatches = await query<Record<string, unknown>>(
      `SELECT r.device_id AS device_id, r.n AS raw, m.n AS minutes, h.n AS hours, t.n AS minutes_by_time
       FROM (SELECT device_id, count() AS n FROM meter_readings FINAL GROUP BY device_id) AS r
       LEFT JOIN (SELECT device_id, sum(readings) AS n FROM meter_minutes GROUP BY device_id) AS m USING device_id
       LEFT JOIN (SELECT device_id, sum(readings) AS n FROM meter_hours GROUP BY device_id) AS h USING device_id
       LEFT JOIN (SELECT device_id, sum(readings) AS n FROM meter_minutes_by_time GROUP BY device_id) AS t USING device_id
       WHERE NOT (r.n = m.n AND r.n = h.n AND r.n = t.n)`,
    );
    const [{ n }] = await query<{ n: number | string }>("SELECT count() AS n FROM meter_readings");
    return { recovered: history.recoveredInserts, rows: Number(n), mismatches };
  } finally {
    await history.client.close();
  }
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === "child") await child(rest[0]!, Number(rest[2]));

const { values } = parseArgs({ options: { kills: { type: "string", default: "80" }, concurrent: { type: "string", default: "8" } } });
const dataDir = mkdtempSync(path.join(tmpdir(), "wattstream-kill-during-inserts-"));
const beforeReplay = `${dataDir}-as-killed`;
let found = false;
for (let kill = 1; kill <= Number(values.kills) && !found; kill++) {
  const proc = spawn(process.execPath, ["--import", "tsx", fileURLToPath(import.meta.url), "child", dataDir, DATABASE, values.concurrent!], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise<void>((resolve) => proc.stdout!.on("data", (chunk: Buffer) => chunk.toString().includes("ready") && resolve()));
  await new Promise((resolve) => setTimeout(resolve, 300 + Math.random() * 1200));
  const exited = new Promise((resolve) => proc.once("exit", resolve));
  proc.kill("SIGKILL");
  await exited;
  rmSync(beforeReplay, { recursive: true, force: true });
  cpSync(dataDir, beforeReplay, { recursive: true });
  const { recovered, rows, mismatches } = await rollupMismatches(dataDir);
  console.log(`kill ${kill}: ${recovered} spooled inserts replayed, ${rows} history rows, ${mismatches.length} meters differing: ${JSON.stringify(mismatches)}`);
  found = mismatches.length > 0;
}
console.log(found ? `a rollup lost a block; the data directory as the kill left it: ${beforeReplay}` : `every rollup whole after ${values.kills} kills`);
