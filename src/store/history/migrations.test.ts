// Runs the migrations against the real embedded ClickHouse engine (chdb). The engine binds one
// data dir per process, so every test here shares one dir and gets its own fresh database.
import { createHash, randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openHistoryClient, type HistoryClient } from "./clickhouse-client.js";
import { applyMigrations, loadMigrations, MIGRATIONS_DIR, splitStatements } from "./migrations.js";

const HISTORY_TABLES = ["battery_readings", "meter_readings", "vehicle_readings"];
// Every table the shipped migrations create (views included: system.tables lists them).
const SHIPPED_TABLES = [
  ...HISTORY_TABLES,
  "battery_health_hours",
  "battery_health_hours_mv",
  "battery_ingest",
  "battery_ingest_history_mv",
  "battery_ingest_rollups_mv",
  "battery_rollup_feed",
  "meter_hours",
  "meter_hours_mv",
  "meter_minutes",
  "meter_minutes_by_time",
  "meter_minutes_by_time_mv",
  "meter_minutes_mv",
  "meter_ingest",
  "meter_ingest_history_mv",
  "meter_ingest_rollups_mv",
  "meter_rollup_feed",
  "vehicle_hours",
  "vehicle_hours_mv",
  "vehicle_meter_links",
  "vehicle_minutes",
  "vehicle_minutes_by_time",
  "vehicle_minutes_by_time_mv",
  "vehicle_minutes_mv",
  "vehicle_ingest",
  "vehicle_ingest_history_mv",
  "vehicle_ingest_rollups_mv",
  "vehicle_rollup_feed",
];

let dataDir: string;
const opened: HistoryClient[] = [];
const tempDirs: string[] = [];

beforeAll(() => {
  dataDir = mkdtempSync(path.join(tmpdir(), "wattstream-migrations-test-"));
});

afterAll(async () => {
  for (const history of opened) await history.client.close();
  // The engine's data dir stays bound to this process until it exits; remove only the SQL files.
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

/** A client on a fresh, empty database in this file's one data dir. */
async function freshDatabase(): Promise<HistoryClient> {
  const history = await openHistoryClient({
    url: undefined,
    username: "default",
    password: "",
    database: `migrations_test_${randomUUID().replaceAll("-", "")}`,
    dataDir,
  });
  opened.push(history);
  return history;
}

async function rows<T>(history: HistoryClient, query: string): Promise<T[]> {
  const result = await history.client.query({ query, format: "JSONEachRow" });
  return result.json<T>();
}

async function tableNames(history: HistoryClient): Promise<string[]> {
  const found = await rows<{ name: string }>(history, "SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name");
  return found.map((t) => t.name);
}

/** A temp dir holding the given migration files. */
function migrationsDir(files: Record<string, string>): string {
  const dir = mkdtempSync(path.join(tmpdir(), "wattstream-migration-files-"));
  tempDirs.push(dir);
  for (const [name, sql] of Object.entries(files)) writeFileSync(path.join(dir, name), sql);
  return dir;
}

describe("splitStatements", () => {
  it("splits at semicolons that end a line", () => {
    expect(splitStatements("CREATE TABLE a (x UInt8) ENGINE = Memory;\nCREATE TABLE b\n(\n    y UInt8\n)\nENGINE = Memory;\n")).toEqual([
      "CREATE TABLE a (x UInt8) ENGINE = Memory",
      "CREATE TABLE b\n(\n    y UInt8\n)\nENGINE = Memory",
    ]);
  });

  it("splits at a semicolon followed by trailing blanks or CRLF, and keeps a last statement without one", () => {
    expect(splitStatements("SELECT 1;   \r\nSELECT 2;\t\nSELECT 3")).toEqual(["SELECT 1", "SELECT 2", "SELECT 3"]);
  });

  it("drops comment-only pieces and comment lines", () => {
    const sql = [
      "-- A header comment",
      "-- over two lines.",
      "",
      "CREATE TABLE a (x UInt8) ENGINE = Memory;",
      "",
      "  -- an indented comment before the next statement",
      "SELECT 1;",
      "-- a trailing comment that ends with a semicolon;",
      "-- and a last comment",
      "",
    ].join("\n");
    expect(splitStatements(sql)).toEqual(["CREATE TABLE a (x UInt8) ENGINE = Memory", "SELECT 1"]);
  });

  it("answers nothing for a file of comments and blank lines", () => {
    expect(splitStatements("-- nothing here;\n\n-- still nothing\n")).toEqual([]);
    expect(splitStatements("")).toEqual([]);
    expect(splitStatements(";\n;\n")).toEqual([]);
  });

  it("keeps a semicolon inside a line", () => {
    expect(splitStatements("SELECT 'a;b' AS s, 1;\nSELECT ';' AS t;\n")).toEqual(["SELECT 'a;b' AS s, 1", "SELECT ';' AS t"]);
  });

  it("keeps a comment that follows code on the same line", () => {
    expect(splitStatements("SELECT 1 -- one\n    + 1;\n")).toEqual(["SELECT 1 -- one\n    + 1"]);
  });
});

describe("loadMigrations", () => {
  it("loads the repository's clickhouse/ folder, sorted, with sha256 checksums", async () => {
    const migrations = await loadMigrations();
    expect(migrations.length).toBeGreaterThanOrEqual(1);

    const versions = migrations.map((m) => m.version);
    expect(versions).toEqual([...versions].sort((a, b) => a - b));
    expect(new Set(versions).size).toBe(versions.length);

    for (const m of migrations) expect(m.checksum).toMatch(/^[0-9a-f]{64}$/);

    const first = migrations[0]!;
    expect(first.version).toBe(1);
    expect(first.name).toBe("history_tables");
    const file = readFileSync(path.join(MIGRATIONS_DIR, "0001_history_tables.sql"));
    expect(first.checksum).toBe(createHash("sha256").update(file).digest("hex"));
    expect(first.statements).toHaveLength(3);
    for (const [i, table] of ["meter_readings", "vehicle_readings", "battery_readings"].entries()) {
      expect(first.statements[i]).toMatch(new RegExp(`^CREATE TABLE IF NOT EXISTS ${table}\\b`));
    }
  });

  it("reads NNNN_name.sql files from a given dir in version order, ignoring other files", async () => {
    const dir = migrationsDir({
      "0010_later.sql": "SELECT 10;\n",
      "0002_second-step.sql": "SELECT 2;\n",
      "0001_first.sql": "-- first\nSELECT 1;\nSELECT 11;\n",
      "README.md": "not a migration",
    });
    const migrations = await loadMigrations(dir);
    expect(migrations.map((m) => [m.version, m.name])).toEqual([
      [1, "first"],
      [2, "second-step"],
      [10, "later"],
    ]);
    expect(migrations[0]!.statements).toEqual(["SELECT 1", "SELECT 11"]);
    expect(migrations[0]!.checksum).toBe(createHash("sha256").update("-- first\nSELECT 1;\nSELECT 11;\n").digest("hex"));
  });

  it.each(["create_tables.sql", "0001-first.sql", "0001_.sql", "0001_with space.sql", "v1_first.sql"])(
    "rejects the badly named file %j",
    async (name) => {
      const dir = migrationsDir({ "0000_ok.sql": "SELECT 1;\n", [name]: "SELECT 2;\n" });
      await expect(loadMigrations(dir)).rejects.toThrow(`migration file ${name} must be named NNNN_name.sql`);
    },
  );

  it("rejects two files with the same version", async () => {
    const dir = migrationsDir({ "0001_a.sql": "SELECT 1;\n", "001_b.sql": "SELECT 2;\n" });
    await expect(loadMigrations(dir)).rejects.toThrow(/duplicate migration versions/);
  });
});

describe("applyMigrations on the embedded engine", () => {
  it("leaves no dedupe token set on the session: later inserts without one all land", async () => {
    const history = await freshDatabase();
    await applyMigrations(history.client, await loadMigrations());
    const row = (eventId: string) => ({
      device_id: "meter-1",
      event_id: eventId,
      observed_at: Date.now(),
      received_at: Date.now(),
      kwh_consumed_ac: 1,
      voltage: 230,
      register_kwh_ac: null,
    });
    // Two different blocks: with a token left over from the migrations' own bookkeeping, the
    // second would be dropped as a duplicate of the first (the table keeps a dedupe window).
    await history.client.insert({ table: "meter_readings", values: [row("a")], format: "JSONEachRow" });
    await history.client.insert({ table: "meter_readings", values: [row("b")], format: "JSONEachRow" });
    expect(await rows(history, "SELECT event_id FROM meter_readings ORDER BY event_id")).toEqual([{ event_id: "a" }, { event_id: "b" }]);
  });

  it("creates the history tables in a fresh database and records version 1", async () => {
    const history = await freshDatabase();
    expect(await tableNames(history)).toEqual([]);

    const migrations = await loadMigrations();
    const before = Date.now();
    const applied = await applyMigrations(history.client, migrations);
    expect(applied).toEqual(migrations.map((m) => m.version));
    expect(applied).toContain(1);

    const tables = await rows<{ name: string; engine: string; sorting_key: string; partition_key: string }>(
      history,
      `SELECT name, engine, sorting_key, partition_key FROM system.tables
       WHERE database = currentDatabase() AND name IN (${HISTORY_TABLES.map((t) => `'${t}'`).join(", ")})
       ORDER BY name`,
    );
    expect(tables).toEqual(
      HISTORY_TABLES.map((name) => ({
        name,
        engine: "ReplacingMergeTree",
        sorting_key: "device_id, observed_at, event_id",
        partition_key: "toYYYYMM(observed_at)",
      })),
    );
    expect(await tableNames(history)).toContain("schema_migrations");

    const observedAt = await rows<{ table: string; type: string }>(
      history,
      `SELECT table, type FROM system.columns
       WHERE database = currentDatabase() AND name = 'observed_at' AND table IN (${HISTORY_TABLES.map((t) => `'${t}'`).join(", ")})
       ORDER BY table`,
    );
    expect(observedAt).toEqual(HISTORY_TABLES.map((table) => ({ table, type: "DateTime64(3, 'UTC')" })));

    const recorded = await rows<{ version: number; name: string; checksum: string; applied_ms: number | string }>(
      history,
      "SELECT version, name, checksum, toUnixTimestamp64Milli(applied_at) AS applied_ms FROM schema_migrations FINAL ORDER BY version",
    );
    expect(recorded.map(({ version, name, checksum }) => ({ version, name, checksum }))).toEqual(
      migrations.map(({ version, name, checksum }) => ({ version, name, checksum })),
    );
    // applied_at is stored as the wall-clock time of the insert, in ms.
    const appliedMs = Number(recorded[0]!.applied_ms);
    expect(appliedMs).toBeGreaterThanOrEqual(before);
    expect(appliedMs).toBeLessThanOrEqual(Date.now());
  });

  it("applies nothing the second time and keeps one row per version", async () => {
    const history = await freshDatabase();
    const migrations = await loadMigrations();
    expect(await applyMigrations(history.client, migrations)).toEqual(migrations.map((m) => m.version));
    expect(await applyMigrations(history.client, migrations)).toEqual([]);
    expect(await applyMigrations(history.client, await loadMigrations())).toEqual([]);

    // Without FINAL: rows as stored, not merged away.
    const perVersion = await rows<{ version: number; n: number | string }>(
      history,
      "SELECT version, count() AS n FROM schema_migrations GROUP BY version ORDER BY version",
    );
    // count() is a UInt64, which JSON output may quote.
    expect(perVersion.map(({ version, n }) => ({ version, n: Number(n) }))).toEqual(
      migrations.map((m) => ({ version: m.version, n: 1 })),
    );
    expect(await tableNames(history)).toEqual([...SHIPPED_TABLES, "schema_migrations"].sort());
  });

  it("applies only the migrations added since the last run, in order", async () => {
    const history = await freshDatabase();
    const files: Record<string, string> = {
      "0001_first.sql": "CREATE TABLE IF NOT EXISTS t1 (x UInt8) ENGINE = MergeTree ORDER BY x;\n",
      "0002_second.sql": "CREATE TABLE IF NOT EXISTS t2 (x UInt8) ENGINE = MergeTree ORDER BY x;\n",
    };
    const dir = migrationsDir(files);
    expect(await applyMigrations(history.client, await loadMigrations(dir))).toEqual([1, 2]);

    writeFileSync(
      path.join(dir, "0003_third.sql"),
      "-- two statements, the second depending on the first\nCREATE TABLE IF NOT EXISTS t3 (x UInt8) ENGINE = MergeTree ORDER BY x;\nINSERT INTO t3 VALUES (7);\n",
    );
    expect(await applyMigrations(history.client, await loadMigrations(dir))).toEqual([3]);
    expect(await tableNames(history)).toEqual(["schema_migrations", "t1", "t2", "t3"]);
    expect(await rows(history, "SELECT x FROM t3")).toEqual([{ x: 7 }]);
  });

  it("backfills the minute rollups from history stored before 0003, counting duplicates once", async () => {
    const history = await freshDatabase();
    const migrations = await loadMigrations();
    await applyMigrations(history.client, migrations.filter((m) => m.version < 3));
    // The same event twice (a leftover duplicate) and one more in the same minute.
    await history.client.command({
      query: `INSERT INTO meter_readings (device_id, event_id, observed_at, received_at, kwh_consumed_ac, voltage)
              VALUES ('m', 'e1', '2026-01-01 00:00:10', now64(3), 1.5, 230), ('m', 'e1', '2026-01-01 00:00:10', now64(3), 1.5, 230),
                     ('m', 'e2', '2026-01-01 00:00:50', now64(3), 2, 230)`,
    });
    expect(await applyMigrations(history.client, migrations.filter((m) => m.version <= 3))).toEqual([3]);
    expect(await rows(history, "SELECT device_id, toString(minute) AS minute, sum(kwh_consumed_ac) AS kwh, toUInt32(sum(readings)) AS n FROM meter_minutes GROUP BY device_id, minute")).toEqual([
      { device_id: "m", minute: "2026-01-01 00:00:00", kwh: 3.5, n: 2 },
    ]);
  });

  it("backfills the hourly battery health rollup from history stored before 0004, counting duplicates once", async () => {
    const history = await freshDatabase();
    const migrations = await loadMigrations();
    await applyMigrations(history.client, migrations.filter((m) => m.version < 4));
    // A leftover duplicate of e1, another reading in the same hour, one in the next hour.
    await history.client.command({
      query: `INSERT INTO battery_readings (device_id, event_id, observed_at, received_at, voltage, temperature, error_codes, health_score, health_level, recommendation, score_version)
              VALUES ('b', 'e1', '2026-01-01 00:10:00', now64(3), 48, 25, [], 90, 'OK', 'NONE', 1),
                     ('b', 'e1', '2026-01-01 00:10:00', now64(3), 48, 25, [], 90, 'OK', 'NONE', 1),
                     ('b', 'e2', '2026-01-01 00:50:00', now64(3), 48, 50, [], 60, 'WARN', 'INSPECT', 1),
                     ('b', 'e3', '2026-01-01 01:05:00', now64(3), 48, 25, [], 100, 'OK', 'NONE', 1)`,
    });
    expect(await applyMigrations(history.client, migrations.filter((m) => m.version <= 4))).toEqual([4]);
    const hourly = `SELECT toString(hour) AS hour, toUInt32(sum(score_sum)) AS total, min(score_min) AS lo, max(score_max) AS hi,
                           toUInt32(sum(readings)) AS n
                    FROM battery_health_hours WHERE device_id = 'b' GROUP BY hour ORDER BY hour`;
    const expected = [
      { hour: "2026-01-01 00:00:00", total: 150, lo: 60, hi: 90, n: 2 },
      { hour: "2026-01-01 01:00:00", total: 100, lo: 100, hi: 100, n: 1 },
    ];
    expect(await rows(history, hourly)).toEqual(expected);
    // Running the file's statements again (a crash before its record) backfills nothing more.
    for (const statement of migrations.find((m) => m.version === 4)!.statements) await history.client.command({ query: statement });
    expect(await rows(history, hourly)).toEqual(expected);
  });

  it("backfills the hourly energy rollups from the minute rollups before 0005, then keeps them from new readings", async () => {
    const history = await freshDatabase();
    const migrations = await loadMigrations();
    await applyMigrations(history.client, migrations.filter((m) => m.version < 5));
    const through5 = migrations.filter((m) => m.version <= 5);
    // Two minutes of one hour and one of the next, through the minute views of 0003.
    await history.client.command({
      query: `INSERT INTO vehicle_readings (device_id, event_id, observed_at, received_at, soc, kwh_delivered_dc, battery_temp)
              VALUES ('v', 'e1', '2026-01-01 00:10:10', now64(3), 50, 1.5, 20), ('v', 'e2', '2026-01-01 00:59:59.999', now64(3), 50, 2, 30),
                     ('v', 'e3', '2026-01-01 01:00:00', now64(3), 50, 4, 40)`,
    });
    expect(await applyMigrations(history.client, through5)).toEqual([5]);
    const hourly = `SELECT toString(hour) AS hour, sum(kwh_delivered_dc) AS kwh, sum(battery_temp_sum) AS temp, toUInt32(sum(readings)) AS n
                    FROM vehicle_hours WHERE device_id = 'v' GROUP BY hour ORDER BY hour`;
    const backfilled = [
      { hour: "2026-01-01 00:00:00", kwh: 3.5, temp: 50, n: 2 },
      { hour: "2026-01-01 01:00:00", kwh: 4, temp: 40, n: 1 },
    ];
    expect(await rows(history, hourly)).toEqual(backfilled);
    // Running the file's statements again (a crash before its record) backfills nothing more.
    for (const statement of migrations.find((m) => m.version === 5)!.statements) await history.client.command({ query: statement });
    expect(await rows(history, hourly)).toEqual(backfilled);
    // Readings stored after 0005 reach the hours through the minute view and the hourly view.
    await history.client.command({
      query: `INSERT INTO vehicle_readings (device_id, event_id, observed_at, received_at, soc, kwh_delivered_dc, battery_temp)
              VALUES ('v', 'e4', '2026-01-01 01:30:00', now64(3), 50, 0.5, 10)`,
    });
    expect(await rows(history, hourly)).toEqual([backfilled[0], { hour: "2026-01-01 01:00:00", kwh: 4.5, temp: 50, n: 2 }]);
  });

  it("backfills the minute rollups ordered by time from those of 0003 before 0006, then keeps them from new readings", async () => {
    const history = await freshDatabase();
    const migrations = await loadMigrations();
    await applyMigrations(history.client, migrations.filter((m) => m.version < 6));
    await history.client.command({
      query: `INSERT INTO meter_readings (device_id, event_id, observed_at, received_at, kwh_consumed_ac, voltage)
              VALUES ('m', 'e1', '2026-01-01 00:10:10', now64(3), 1.5, 230), ('m', 'e2', '2026-01-01 00:10:59.999', now64(3), 2, 230)`,
    });
    expect(await applyMigrations(history.client, migrations.filter((m) => m.version <= 6))).toEqual([6]);
    const byTime = `SELECT toString(minute) AS minute, sum(kwh_consumed_ac) AS kwh, toUInt32(sum(readings)) AS n
                    FROM meter_minutes_by_time WHERE device_id = 'm' GROUP BY minute ORDER BY minute`;
    expect(await rows(history, byTime)).toEqual([{ minute: "2026-01-01 00:10:00", kwh: 3.5, n: 2 }]);
    for (const statement of migrations.find((m) => m.version === 6)!.statements) await history.client.command({ query: statement });
    await history.client.command({
      query: `INSERT INTO meter_readings (device_id, event_id, observed_at, received_at, kwh_consumed_ac, voltage)
              VALUES ('m', 'e3', '2026-01-01 00:11:00', now64(3), 0.5, 230)`,
    });
    expect(await rows(history, byTime)).toEqual([
      { minute: "2026-01-01 00:10:00", kwh: 3.5, n: 2 },
      { minute: "2026-01-01 00:11:00", kwh: 0.5, n: 1 },
    ]);
  });

  it("feeds the rollups from their feed tables after 0007, and writes history and rollups once from an ingest table", async () => {
    const history = await freshDatabase();
    const migrations = await loadMigrations();
    await applyMigrations(history.client, migrations.filter((m) => m.version < 7));
    // Stored before 0007: its rollups were written by the insert, as they were then.
    const meter = (rows: string, table = "meter_readings", settings = "") =>
      history.client.command({
        query: `INSERT INTO ${table} (device_id, event_id, observed_at, received_at, kwh_consumed_ac, voltage) ${settings} VALUES ${rows}`,
      });
    await meter("('m', 'e1', '2026-01-01 00:10:10', now64(3), 1.5, 230)");
    expect(await applyMigrations(history.client, migrations.filter((m) => m.version <= 7))).toEqual([7]);
    const rollups = `SELECT
        (SELECT sum(kwh_consumed_ac) FROM meter_minutes WHERE device_id = 'm') AS minutes,
        (SELECT sum(kwh_consumed_ac) FROM meter_hours WHERE device_id = 'm') AS hours,
        (SELECT sum(kwh_consumed_ac) FROM meter_minutes_by_time WHERE device_id = 'm') AS by_time,
        (SELECT count() FROM meter_readings FINAL WHERE device_id = 'm') AS stored`;
    const expectRollups = async (kwh: number, stored: number) =>
      expect(await rows(history, rollups)).toEqual([{ minutes: kwh, hours: kwh, by_time: kwh, stored }]);
    await expectRollups(1.5, 1);

    // History alone no longer writes the rollups; its feed table writes every level of them.
    await meter("('m', 'e2', '2026-01-01 00:20:00', now64(3), 2, 230)");
    await expectRollups(1.5, 2);
    const feedToken = "SETTINGS insert_deduplication_token = 'feed-1', deduplicate_blocks_in_dependent_materialized_views = 1";
    await meter("('m', 'e2', '2026-01-01 00:20:00', now64(3), 2, 230)", "meter_rollup_feed", feedToken);
    await expectRollups(3.5, 2);
    // The same batch fed again under its token (a retry after an attempt that landed) adds nothing.
    await meter("('m', 'e2', '2026-01-01 00:20:00', now64(3), 2, 230)", "meter_rollup_feed", feedToken);
    await expectRollups(3.5, 2);

    // The server path's one statement writes the block to history and the rollups, each once however often it is sent.
    const ingestToken = "SETTINGS insert_deduplication_token = 'ingest-1', deduplicate_blocks_in_dependent_materialized_views = 1";
    await meter("('m', 'e3', '2026-01-01 01:00:00', now64(3), 4, 230)", "meter_ingest", ingestToken);
    await meter("('m', 'e3', '2026-01-01 01:00:00', now64(3), 4, 230)", "meter_ingest", ingestToken);
    await expectRollups(7.5, 3);
    expect(await rows(history, "SELECT count() AS n FROM meter_readings WHERE event_id = 'e3'")).toEqual([{ n: 1 }]);
  });

  it("merges the history tables' parts in larger steps after 0008, and leaves the rollups' merges as they were", async () => {
    const history = await freshDatabase();
    const migrations = await loadMigrations();
    await applyMigrations(history.client, migrations.filter((m) => m.version < 8));
    const mergeBases = async () =>
      rows<{ name: string; base: string }>(
        history,
        `SELECT name, extract(engine_full, 'merge_selector_base = (\\d+)') AS base FROM system.tables
         WHERE database = currentDatabase() AND engine LIKE '%MergeTree' AND name != 'schema_migrations' ORDER BY name`,
      );
    const before = await mergeBases();
    expect(before.every((t) => t.base === "")).toBe(true);
    expect(await applyMigrations(history.client, migrations)).toEqual([8]);
    const after = await mergeBases();
    expect(after.map((t) => t.name)).toEqual(before.map((t) => t.name));
    for (const { name, base } of after) expect({ name, base }).toEqual({ name, base: HISTORY_TABLES.includes(name) ? "10" : "" });
    // The tables still take and answer rows.
    await history.client.command({
      query: "INSERT INTO meter_readings (device_id, event_id, observed_at, received_at, kwh_consumed_ac, voltage) VALUES ('m', 'e1', now64(3), now64(3), 1, 230)",
    });
    expect(await rows(history, "SELECT count() AS n FROM meter_readings FINAL")).toEqual([{ n: 1 }]);
  });

  it("repairs a run that created the tables but did not record the migration", async () => {
    const history = await freshDatabase();
    const migrations = await loadMigrations();
    // As if the process died after the statements and before the schema_migrations insert.
    for (const statement of migrations[0]!.statements) await history.client.command({ query: statement });
    expect(await applyMigrations(history.client, migrations)).toEqual(migrations.map((m) => m.version));
    expect(await tableNames(history)).toEqual([...SHIPPED_TABLES, "schema_migrations"].sort());
  });

  it("throws, naming the migration, when an applied migration's file has changed", async () => {
    const history = await freshDatabase();
    const dir = migrationsDir({
      "0001_first.sql": "CREATE TABLE IF NOT EXISTS t1 (x UInt8) ENGINE = MergeTree ORDER BY x;\n",
      "0002_second.sql": "CREATE TABLE IF NOT EXISTS t2 (x UInt8) ENGINE = MergeTree ORDER BY x;\n",
    });
    expect(await applyMigrations(history.client, await loadMigrations(dir))).toEqual([1, 2]);

    writeFileSync(path.join(dir, "0002_second.sql"), "CREATE TABLE IF NOT EXISTS t2 (x UInt16) ENGINE = MergeTree ORDER BY x;\n");
    writeFileSync(path.join(dir, "0003_third.sql"), "CREATE TABLE IF NOT EXISTS t3 (x UInt8) ENGINE = MergeTree ORDER BY x;\n");
    await expect(applyMigrations(history.client, await loadMigrations(dir))).rejects.toThrow(
      "migration 0002_second.sql was changed after it was applied",
    );
    // It stops before applying anything later.
    expect(await tableNames(history)).not.toContain("t3");

    // Even a whitespace-only change counts: the checksum covers the file's bytes.
    const dir2 = migrationsDir({ "0001_first.sql": "CREATE TABLE IF NOT EXISTS t1 (x UInt8) ENGINE = MergeTree ORDER BY x;\n\n" });
    await expect(applyMigrations(history.client, await loadMigrations(dir2))).rejects.toThrow(/migration 0001_first.sql was changed/);
  });

  it("fails on a migration with a bad statement and records nothing for it", async () => {
    const history = await freshDatabase();
    const dir = migrationsDir({ "0001_broken.sql": "CREATE TABLE IF NOT EXISTS t1 (x NoSuchType) ENGINE = MergeTree ORDER BY x;\n" });
    await expect(applyMigrations(history.client, await loadMigrations(dir))).rejects.toThrow();
    expect(await rows(history, "SELECT version FROM schema_migrations")).toEqual([]);
  });
});
