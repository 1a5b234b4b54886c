// The embedded history sink: a block is acknowledged once in its history table, and its rollups
// follow from the rollup feed — at once for anyone who reads them, at the latest at close. And
// what the sink leaves for the next process when it is killed before a block's rollups are
// written, and what that process does with it: the spool file of every block not yet fed is
// inserted again, with its token, when the engine is opened, and the block's rollup groups are
// rebuilt from history — so the rollups catch up with the history table, and nothing is stored
// twice.
import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { BatteryRow, DeviceKind, MeterRow } from "../../process/history-rows.js";
import { encodeRow, RowBinaryWriter } from "../../process/insert-encoding.js";
import { openHistoryClient, type HistoryClient } from "./clickhouse-client.js";
import { createHistorySink, HISTORY_TABLES } from "./history-sink.js";
import { applyMigrations, loadMigrations } from "./migrations.js";
import { KIND_ROLLUPS } from "./rollup-repair.js";

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

/** Readings `from`… of one meter, a minute apart within one hour, as the sink gets them. */
function meterBlock(deviceId: string, hourMs: number, from: number, rows: number): Buffer {
  const writer = new RowBinaryWriter();
  for (let i = from; i < from + rows; i++) {
    const row: MeterRow & Record<string, unknown> = {
      device_id: deviceId,
      event_id: `e-${i}`,
      observed_at: hourMs + i * 60_000,
      kwh_consumed_ac: 0.5,
      voltage: 230,
      register_kwh_ac: null,
    };
    encodeRow("meter", row, hourMs + 3_600_000, writer);
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
async function leaveDeadSpool(history: HistoryClient, blocks: { token: string; payload: Buffer; kind?: DeviceKind }[]): Promise<string> {
  const before = new Set(readdirSync(SPOOL_BASE));
  const sink = await createHistorySink(history);
  const mine = readdirSync(SPOOL_BASE).find((e) => !before.has(e) && e.includes(`-${process.pid}-`))!;
  await sink.close();
  const [key] = mine.slice("wattstream-spool-".length).split("-");
  const dir = path.join(SPOOL_BASE, `wattstream-spool-${key}-${deadPid()}-${randomUUID().slice(0, 8)}`);
  mkdirSync(dir);
  for (const { token, payload, kind = "battery" } of blocks) writeFileSync(path.join(dir, `${kind}.${token}.${randomUUID().slice(0, 8)}.bin`), payload);
  return dir;
}

describe("the embedded sink's rollups", () => {
  it("acknowledges a block once in history, and has its rollups written before anyone reads them", async () => {
    const history = await openHistory(mkdtempSync(path.join(os.tmpdir(), "wattstream-sink-test-")), `sink_${randomUUID().replaceAll("-", "")}`);
    const sink = await createHistorySink(history, { rollupIntervalMs: 600_000 });
    await sink.insert("battery", batteryBlock(30), randomUUID());
    expect(await count(history, "SELECT count() AS n FROM battery_readings")).toBe(30);
    expect(await count(history, "SELECT sum(readings) AS n FROM battery_health_hours")).toBe(0);
    expect(sink.pendingRollupBlocks).toBe(1);
    await sink.rollupsCaughtUp();
    expect(sink.pendingRollupBlocks).toBe(0);
    expect(await count(history, "SELECT sum(readings) AS n FROM battery_health_hours")).toBe(30);
    expect(await count(history, "SELECT sum(score_sum) AS n FROM battery_health_hours")).toBe(30 * 80);
    await sink.close();
  });

  it("feeds a block once however many attempts stored it, and every level of the rollups", async () => {
    const history = await openHistory(mkdtempSync(path.join(os.tmpdir(), "wattstream-sink-test-")), `sink_${randomUUID().replaceAll("-", "")}`);
    const sink = await createHistorySink(history, { rollupIntervalMs: 600_000 });
    const hourMs = Math.floor(Date.now() / 3_600_000) * 3_600_000 - 3_600_000;
    const retried = { payload: meterBlock("meter-a", hourMs, 0, 4), token: randomUUID() };
    await sink.insert("meter", retried.payload, retried.token);
    // A second attempt at the block (the first outlived its timeout and landed after all).
    await sink.insert("meter", retried.payload, retried.token);
    await sink.insert("meter", meterBlock("meter-a", hourMs, 4, 3), randomUUID());
    await sink.insert("meter", meterBlock("meter-b", hourMs, 0, 5), randomUUID());
    await sink.rollupsCaughtUp();
    for (const table of ["meter_minutes", "meter_hours", "meter_minutes_by_time"]) {
      expect(await count(history, `SELECT sum(readings) AS n FROM ${table} WHERE device_id = 'meter-a'`), table).toBe(7);
      expect(await count(history, `SELECT sum(readings) AS n FROM ${table} WHERE device_id = 'meter-b'`), table).toBe(5);
    }
    await sink.close();
  });

  it("writes the rollups in the insert's own statement with a rollup interval of 0", async () => {
    const history = await openHistory(mkdtempSync(path.join(os.tmpdir(), "wattstream-sink-test-")), `sink_${randomUUID().replaceAll("-", "")}`);
    const sink = await createHistorySink(history, { rollupIntervalMs: 0 });
    const block = { payload: batteryBlock(9), token: randomUUID() };
    await sink.insert("battery", block.payload, block.token);
    await sink.insert("battery", block.payload, block.token);
    expect(sink.pendingRollupBlocks).toBe(0);
    expect(await count(history, "SELECT count() AS n FROM battery_readings")).toBe(9);
    expect(await count(history, "SELECT sum(readings) AS n FROM battery_health_hours")).toBe(9);
    await sink.close();
  });

  it("writes every stored block's rollups when it closes, and leaves no spool behind", async () => {
    const history = await openHistory(mkdtempSync(path.join(os.tmpdir(), "wattstream-sink-test-")), `sink_${randomUUID().replaceAll("-", "")}`);
    const before = new Set(readdirSync(SPOOL_BASE));
    const sink = await createHistorySink(history, { rollupIntervalMs: 600_000 });
    const spool = readdirSync(SPOOL_BASE).find((e) => !before.has(e) && e.includes(`-${process.pid}-`))!;
    await sink.insert("battery", batteryBlock(12), randomUUID());
    expect(readdirSync(path.join(SPOOL_BASE, spool)), "a stored block waits in the spool for its rollups").toHaveLength(1);
    await sink.close();
    expect(await count(history, "SELECT sum(readings) AS n FROM battery_health_hours")).toBe(12);
    expect(existsSync(path.join(SPOOL_BASE, spool))).toBe(false);
  });
});

describe("the embedded sink's spool after a kill", () => {
  it("completes the rollups of a block the history table took and the rollups missed, storing nothing twice", async () => {
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "wattstream-spool-test-"));
    const database = `spool_${randomUUID().replaceAll("-", "")}`;
    let history = await openHistory(dataDir, database);
    const payload = batteryBlock(30);
    const token = randomUUID();
    // What a kill between the history insert and the rollup feed leaves: the block in the history
    // table (its token recorded), nothing in the rollup. The view is detached while the sink runs.
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

  it("rebuilds a rollup whose deduplication log held a replayed block without its data", async () => {
    // What a kill between a rollup recording a block in its deduplication log and committing the
    // block's part leaves (bench/kill-during-inserts.ts): the block in the history table and in the
    // rollups fed from that one, missing from that rollup, and the replay dropped there as held.
    const dataDir = mkdtempSync(path.join(os.tmpdir(), "wattstream-spool-test-"));
    const database = `spool_${randomUUID().replaceAll("-", "")}`;
    let history = await openHistory(dataDir, database);
    const hourMs = Math.floor(Date.now() / 3_600_000) * 3_600_000 - 3_600_000;
    const earlier = meterBlock("meter-a", hourMs, 0, 4);
    const cut = { kind: "meter" as const, token: randomUUID(), payload: meterBlock("meter-a", hourMs, 4, 4) };
    const other = meterBlock("meter-b", hourMs, 0, 4);
    const sink = await createHistorySink(history);
    await sink.insert("meter", earlier, randomUUID());
    await sink.insert("meter", cut.payload, cut.token);
    await sink.insert("meter", other, randomUUID());
    await sink.close();
    // A mutation removes the block's rows from meter_minutes and leaves its deduplication log alone.
    await history.client.command({
      query: `ALTER TABLE ${database}.meter_minutes DELETE WHERE device_id = 'meter-a' AND minute >= toDateTime(${(hourMs + 4 * 60_000) / 1000}, 'UTC') SETTINGS mutations_sync = 2`,
    });
    expect(await count(history, `SELECT sum(readings) AS n FROM ${database}.meter_minutes WHERE device_id = 'meter-a'`)).toBe(4);
    await leaveDeadSpool(history, [cut]);
    await history.client.close();
    open = undefined;

    history = await openHistory(dataDir, database);
    expect(history.recoveredInserts).toBe(1);
    for (const [table, device, readings] of [
      ["meter_readings", "meter-a", "count()"],
      ["meter_minutes", "meter-a", "sum(readings)"],
      ["meter_hours", "meter-a", "sum(readings)"],
      ["meter_minutes_by_time", "meter-a", "sum(readings)"],
      ["meter_minutes", "meter-b", "sum(readings)"],
      ["meter_hours", "meter-b", "sum(readings)"],
    ] as const) {
      const expected = device === "meter-a" ? 8 : 4;
      expect(await count(history, `SELECT ${readings} AS n FROM ${database}.${table} WHERE device_id = '${device}'`), `${table} ${device}`).toBe(expected);
    }
    expect(await count(history, `SELECT sum(kwh_consumed_ac) * 10 AS n FROM ${database}.meter_hours WHERE device_id = 'meter-a'`)).toBe(40);
    // Each minute once.
    expect(await count(history, `SELECT max(n) AS n FROM (SELECT minute, sum(readings) AS n FROM ${database}.meter_minutes GROUP BY device_id, minute)`)).toBe(1);
  });

  it("knows every rollup the migrations create, so that a rebuild deletes what it inserts again", async () => {
    const history = await openHistory(mkdtempSync(path.join(os.tmpdir(), "wattstream-spool-test-")), `spool_${randomUUID().replaceAll("-", "")}`);
    const views = await (
      await history.client.query({
        query: "SELECT name, create_table_query FROM system.tables WHERE database = currentDatabase() AND engine = 'MaterializedView'",
        format: "JSONEachRow",
      })
    ).json<{ name: string; create_table_query: string }>();
    const targets = views.map((v) => /\bTO\s+\S+?\.(\w+)/.exec(v.create_table_query)?.[1]).sort();
    // Besides the rollups, views write only history and the feed tables (the server path's ingest tables' views).
    const rollups = Object.values(KIND_ROLLUPS);
    const rollupTables = rollups.flatMap((k) => k.tables.map((t) => t.name));
    expect(targets.filter((t) => !Object.values(HISTORY_TABLES).includes(t!) && !rollups.some((k) => k.feed === t))).toEqual(rollupTables.sort());
    expect(views.map((v) => v.name)).toEqual(expect.arrayContaining(rollups.map((k) => k.view)));
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
