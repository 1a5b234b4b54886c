// What the embedded history sink leaves for the next process when it is killed mid-insert, and
// what that process does with it: the spool file of every unfinished insert is inserted again,
// with its token, when the engine is opened — so the rollups catch up with the history table,
// and nothing is stored twice.
import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { BatteryRow } from "../../process/history-rows.js";
import { encodeRow, RowBinaryWriter } from "../../process/insert-encoding.js";
import { openHistoryClient, type HistoryClient } from "./clickhouse-client.js";
import { createHistorySink } from "./history-sink.js";
import { applyMigrations, loadMigrations } from "./migrations.js";

const SPOOL_BASE = existsSync("/dev/shm") ? "/dev/shm" : os.tmpdir();

let open: HistoryClient | undefined;
afterEach(async () => {
  await open?.client.close();
  open = undefined;
});

async function openHistory(dataDir: string, database: string): Promise<HistoryClient> {
  open = await openHistoryClient({ url: undefined, username: "default", password: "", database, dataDir });
  await applyMigrations(open.client, await loadMigrations());
  return open;
}

async function count(history: HistoryClient, sql: string): Promise<number> {
  const [row] = await (await history.client.query({ query: sql, format: "JSONEachRow" })).json<{ n: number | string }>();
  return Number(row?.n ?? 0);
}

/** A block of battery rows as the sink gets it: RowBinary, the sink's column order. */
function batteryBlock(rows: number): Buffer {
  const writer = new RowBinaryWriter();
  const now = Date.now();
  for (let i = 0; i < rows; i++) {
    const row: BatteryRow & Record<string, unknown> = {
      device_id: `bbu-${i % 3}`,
      event_id: `e-${i}`,
      observed_at: now - 60_000 + i,
      voltage: 51.2,
      temperature: 25,
      error_codes: [],
      health_score: 80,
      health_level: "OK",
      recommendation: "NONE",
      score_version: 1,
    };
    encodeRow("battery", row, now, writer);
  }
  return Buffer.from(writer.finish());
}

/** A pid no process has any more: a child that has already exited. */
function deadPid(): number {
  return spawnSync(process.execPath, ["-e", ""]).pid!;
}

/**
 * The spool directory the sink of a process that died would have left for this data directory:
 * found by letting a sink create its own (the name carries the directory's key), then renamed to
 * a dead pid's.
 */
async function leaveDeadSpool(history: HistoryClient, blocks: { token: string; payload: Buffer }[]): Promise<string> {
  const before = new Set(readdirSync(SPOOL_BASE));
  const sink = await createHistorySink(history);
  const mine = readdirSync(SPOOL_BASE).find((e) => !before.has(e) && e.includes(`-${process.pid}-`))!;
  await sink.close();
  const [key] = mine.slice("wattstream-spool-".length).split("-");
  const dir = path.join(SPOOL_BASE, `wattstream-spool-${key}-${deadPid()}-${randomUUID().slice(0, 8)}`);
  mkdirSync(dir);
  for (const { token, payload } of blocks) writeFileSync(path.join(dir, `battery.${token}.${randomUUID().slice(0, 8)}.bin`), payload);
  return dir;
}

describe("the embedded sink's spool after a kill", () => {
  it("completes an insert the history table took and the rollup missed, storing nothing twice", async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "wattstream-spool-test-"));
    const database = `spool_${randomUUID().replaceAll("-", "")}`;
    let history = await openHistory(dataDir, database);
    const payload = batteryBlock(30);
    const token = randomUUID();
    // What a kill between the two commits leaves: the block in the history table (its token
    // recorded), nothing in the rollup. The view is detached while the block goes in.
    await history.client.command({ query: `DETACH TABLE ${database}.battery_health_hours_mv` });
    const sink = await createHistorySink(history);
    await sink.insert("battery", payload, token);
    await sink.close();
    await history.client.command({ query: `ATTACH TABLE ${database}.battery_health_hours_mv` });
    expect(await count(history, `SELECT count() AS n FROM ${database}.battery_readings`)).toBe(30);
    expect(await count(history, `SELECT sum(readings) AS n FROM ${database}.battery_health_hours`)).toBe(0);
    const spool = await leaveDeadSpool(history, [{ token, payload }]);
    await history.client.close();
    open = undefined;

    history = await openHistory(dataDir, database);
    expect(history.recoveredInserts).toBe(1);
    expect(existsSync(spool), "the dead process's spool is gone once replayed").toBe(false);
    expect(await count(history, `SELECT count() AS n FROM ${database}.battery_readings`)).toBe(30);
    expect(await count(history, `SELECT sum(readings) AS n FROM ${database}.battery_health_hours`)).toBe(30);
    expect(await count(history, `SELECT sum(score_sum) AS n FROM ${database}.battery_health_hours`)).toBe(30 * 80);
  });

  it("stores a block whose insert never happened, and a block that landed whole only once", async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "wattstream-spool-test-"));
    const database = `spool_${randomUUID().replaceAll("-", "")}`;
    let history = await openHistory(dataDir, database);
    const landed = { token: randomUUID(), payload: batteryBlock(10) };
    const sink = await createHistorySink(history);
    await sink.insert("battery", landed.payload, landed.token);
    await sink.close();
    // Rows e-10… of a second block: never inserted.
    const lost = { token: randomUUID(), payload: batteryBlock(25).subarray(landed.payload.length) };
    await leaveDeadSpool(history, [landed, lost]);
    await history.client.close();
    open = undefined;

    history = await openHistory(dataDir, database);
    expect(history.recoveredInserts).toBe(2);
    const [raw] = await (
      await history.client.query({
        query: `SELECT toUInt32(count()) AS n, toUInt32(uniqExact(device_id, event_id)) AS ids FROM ${database}.battery_readings`,
        format: "JSONEachRow",
      })
    ).json<{ n: number; ids: number }>();
    expect(raw).toEqual({ n: 25, ids: 25 });
    expect(await count(history, `SELECT sum(readings) AS n FROM ${database}.battery_health_hours`)).toBe(25);
  });

  it("leaves the spool of another data directory alone", async () => {
    const [dirA, dirB] = [0, 1].map(() => mkdtempSync(path.join(os.tmpdir(), "wattstream-spool-test-")));
    const database = `spool_${randomUUID().replaceAll("-", "")}`;
    let history = await openHistory(dirA!, database);
    const spool = await leaveDeadSpool(history, [{ token: randomUUID(), payload: batteryBlock(5) }]);
    await history.client.close();
    open = undefined;

    history = await openHistory(dirB!, database);
    expect(history.recoveredInserts).toBe(0);
    expect(existsSync(spool)).toBe(true);
    expect(await count(history, `SELECT count() AS n FROM ${database}.battery_readings`)).toBe(0);
    await history.client.close();
    open = undefined;

    history = await openHistory(dirA!, database);
    expect(history.recoveredInserts).toBe(1);
    expect(existsSync(spool)).toBe(false);
  });
});
