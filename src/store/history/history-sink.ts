// Puts one encoded block of rows into one history table, and sees that its rollups follow.
// Against a server: an HTTP INSERT … FORMAT RowBinary into the kind's ingest table, whose views
// write history and the rollups in one statement. Embedded: the block is spooled to a file (in
// /dev/shm when there is one) and read by INSERT … FROM INFILE into the history table alone,
// because the engine's in-process insert paths take text formats only, which cost it about three
// times as much per row; once stored, the block waits in the spool for the rollup feed
// (rollup-feed.ts), which writes the rollups of a second's blocks in one insert (migration 0007
// says why). Every block carries an insert_deduplication_token in the INSERT's own SETTINGS, so
// retrying it never writes it twice (and, unlike the client's clickhouse_settings on the embedded
// engine, it does not linger as a session setting). A spool file left by a process that died
// before its block was stored and fed is inserted again when the engine is next opened
// (recoverSpool), and the rollups of its rows rebuilt from history.
import { createHash, randomUUID } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, rmSync, statSync } from "node:fs";
import { rename, rm, writeFile } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import type { DeviceKind } from "../../process/history-rows.js";
import { INSERT_FORMAT, TABLE_COLUMNS } from "../../process/insert-encoding.js";
import type { ClickHouseClient } from "@clickhouse/client";
import { openEmbeddedConnection, type HistoryClient } from "./clickhouse-client.js";
import { KIND_ROLLUPS, rebuildRollupGroups } from "./rollup-repair.js";
import { RollupFeed, type StoredBlock } from "./rollup-feed.js";
import { withTimeout } from "./with-timeout.js";

export const HISTORY_TABLES: Readonly<Record<DeviceKind, string>> = {
  meter: "meter_readings",
  vehicle: "vehicle_readings",
  battery: "battery_readings",
};

/** Null tables whose views write history and the rollups in one statement (migration 0007): the server path's inserts. */
export const INGEST_TABLES: Readonly<Record<DeviceKind, string>> = {
  meter: "meter_ingest",
  vehicle: "vehicle_ingest",
  battery: "battery_ingest",
};

export interface HistorySink {
  /** Resolves once ClickHouse acknowledged the block into history. Same token again writes nothing new. */
  insert(kind: DeviceKind, payload: Buffer, token: string): Promise<void>;
}

export interface OpenHistorySink extends HistorySink {
  /** Resolves once every block stored before the call is in the rollups too; read the rollups after it. */
  rollupsCaughtUp(): Promise<void>;
  /** Blocks stored in history and not yet in the rollups. */
  readonly pendingRollupBlocks: number;
  /** Releases what the sink holds (its spool directory). */
  close(): Promise<void>;
}

const SPOOL_PREFIX = "wattstream-spool-";
/** insert_deduplication_token values this sink writes (UUIDs); a spool file's name carries one. */
const TOKEN_PATTERN = /^[0-9a-f-]{36}$/;

export interface HistorySinkOptions {
  /**
   * Called when an embedded insert finds the table's previous insert still running (it outlived
   * its timeout) and is sent on a new connection instead.
   */
  readonly onLaneReplaced?: (kind: DeviceKind) => void;
  /**
   * Embedded: longest a stored block waits for its rollups while nobody reads them, in ms (default
   * 1 s). 0: each insert writes its rollups in its own statement, through the ingest table, as
   * against a server — no wait before a read, a longer one for the acknowledgement.
   */
  readonly rollupIntervalMs?: number;
  /** Embedded: told of each failed attempt to feed the rollups (it is tried again). */
  readonly onRollupFeedError?: (kind: DeviceKind, error: unknown, blocks: number) => void;
}

/** A stored block in the embedded sink's spool, waiting for its rollups. */
interface SpooledBlock extends StoredBlock {
  readonly file: string;
}

export async function createHistorySink(history: HistoryClient, options: HistorySinkOptions = {}): Promise<OpenHistorySink> {
  const { client, database } = history;
  // A retry may start while an attempt the batcher gave up on still runs, on a server as in the
  // embedded engine: one attempt per block at a time, or both pass the views' deduplication.
  const blocks = new BlockAttempts();
  if (!history.embedded) {
    return {
      insert: (kind, payload, token) => blocks.run(token, () => insertOverHttp(kind, payload, token)),
      // The ingest tables' views write the rollups in the insert's own statement.
      rollupsCaughtUp: async () => {},
      pendingRollupBlocks: 0,
      async close() {},
    };
  }

  const { dataDir } = history;
  if (dataDir === undefined) throw new Error("the embedded history sink needs the data directory");
  const spool = openSpool(dataDir, database);
  // One connection per table: a connection runs one statement at a time, so on a shared one an
  // acknowledgement waited for the other tables' inserts (and their views) as well as its own.
  // Measured with the fleet load: the third table's insert took ~3× its own time.
  // An insert that finds its table's previous one still running comes after a timeout (the
  // batcher sends one at a time): it goes to a new connection rather than queue behind it, as the
  // engine has been seen (rarely, under load: a one-row insert in CI, another in a local loop) to
  // leave an insert that never returns, which held every later insert of its table with it.
  const lane = (kind: DeviceKind) => openEmbeddedConnection(dataDir, { stuckAfterMs: 0, onMoved: () => options.onLaneReplaced?.(kind) });
  const lanes: Record<DeviceKind, ClickHouseClient> = { meter: await lane("meter"), vehicle: await lane("vehicle"), battery: await lane("battery") };
  const rollupsInInsert = options.rollupIntervalMs === 0;
  // The rollup feed's own connection per table, so that its inserts never hold a history insert
  // back. It sends one batch of a table at a time, like the batcher: a statement that finds the
  // previous one still running follows a timeout and goes to a new connection. None with
  // ROLLUP_INTERVAL=0, which never feeds (an engine connection costs tens of ms to open).
  const feedLane = () => openEmbeddedConnection(dataDir, { stuckAfterMs: 0 });
  const feedLanes: Partial<Record<DeviceKind, ClickHouseClient>> = rollupsInInsert
    ? {}
    : { meter: await feedLane(), vehicle: await feedLane(), battery: await feedLane() };
  const feed = new RollupFeed<SpooledBlock>((kind, stored) => feedRollups(kind, stored), {
    intervalMs: options.rollupIntervalMs,
    onError: options.onRollupFeedError,
  });
  // Inserts not yet returned — including attempts the batcher gave up on after their timeout.
  const unfinished = new Set<Promise<void>>();
  return {
    rollupsCaughtUp: () => feed.caughtUp(),
    get pendingRollupBlocks() {
      return feed.pendingBlocks;
    },
    insert(kind, payload, token) {
      const work = insertSpooled(kind, payload, token);
      unfinished.add(work);
      void work.then(
        () => unfinished.delete(work),
        () => unfinished.delete(work),
      );
      return work;
    },
    async close() {
      // An insert still running may have written its block to the history table and not yet to
      // every rollup: the process must not end under it with its spool file gone, or the rollups
      // stay short for good (likely what one fault-suite run ending in a graceful stop showed: a
      // rollup four readings short of its raw rows). So wait for such inserts a while; one still
      // running after that keeps its file, which the next start inserts again (recoverSpool).
      await Promise.race([Promise.allSettled([...unfinished]), sleep(CLOSE_WAIT_MS, undefined, { ref: false })]);
      // Blocks stored and not yet fed keep their files too, if the feed cannot finish them now.
      const fedAll = await feed.close(CLOSE_WAIT_MS);
      await Promise.all([...Object.values(lanes), ...Object.values(feedLanes)].map((lane) => lane.close()));
      if (unfinished.size === 0 && fedAll) rmSync(spool, { recursive: true, force: true });
    },
  };

  async function insertOverHttp(kind: DeviceKind, payload: Buffer, token: string): Promise<void> {
    const result = await client.exec({
      query: `INSERT INTO ${INGEST_TABLES[kind]} ${columnList(kind)} FORMAT ${INSERT_FORMAT}`,
      values: Readable.from([payload]),
      // A retried block the table already holds is dropped there, and each view checks its
      // own copy (a view's part may be missing if the server failed between the two); older
      // servers default the latter to off.
      clickhouse_settings: { insert_deduplication_token: token, deduplicate_blocks_in_dependent_materialized_views: 1 },
    });
    // The response body is empty for an INSERT; drain it so the socket returns to the pool.
    result.stream.resume();
  }

  async function insertSpooled(kind: DeviceKind, payload: Buffer, token: string): Promise<void> {
    // Named for the table and the token, so that a process started after this one dies can
    // finish the insert (recoverSpool); unique, because a retry of a timed-out attempt may run
    // while the attempt still reads its own file. Written under a temporary name first: a
    // file that holds a whole block is all the recovery ever sees.
    const name = `${kind}.${token}.${randomUUID().slice(0, 8)}`;
    const file = path.join(spool, `${name}.bin`);
    await writeFile(path.join(spool, `${name}.part`), payload);
    await rename(path.join(spool, `${name}.part`), file);
    try {
      const table = rollupsInInsert ? INGEST_TABLES[kind] : HISTORY_TABLES[kind];
      await blocks.run(token, () => lanes[kind].command({ query: insertFromFile(database, table, kind, file, token) }));
    } catch (error) {
      await rm(file, { force: true });
      throw error;
    }
    // Stored: the file stays until the block's rollups are written. A second attempt that also
    // reports success (the first outlived its timeout and landed) brings nothing new to feed.
    if (rollupsInInsert || !feed.add(kind, { payload, token, file })) await rm(file, { force: true });
  }

  /**
   * The rollups of stored blocks, in one insert into the kind's feed table. Its dedupe token is made
   * of the blocks' own, so a retry of the same batch after an attempt that landed writes nothing.
   */
  async function feedRollups(kind: DeviceKind, stored: readonly SpooledBlock[]): Promise<void> {
    const token = createHash("sha256")
      .update(stored.map((block) => block.token).join(","))
      .digest("hex");
    // Not named kind.token: recovery replays the blocks' own files, never this one.
    const file = path.join(spool, `rollups-${kind}.${randomUUID()}.bin`);
    await writeFile(file, Buffer.concat(stored.map((block) => block.payload)));
    try {
      await withTimeout(feedLanes[kind]!.command({ query: insertFromFile(database, KIND_ROLLUPS[kind].feed, kind, file, token) }), FEED_TIMEOUT_MS, () => new Error(`no answer within ${FEED_TIMEOUT_MS} ms`));
    } finally {
      await rm(file, { force: true });
    }
    await Promise.all(stored.map((block) => rm(block.file, { force: true })));
  }
}

/**
 * How long one insert into the rollups may take before it is tried again, in ms; the attempt
 * still running keeps its connection, and the retry goes to a new one.
 */
const FEED_TIMEOUT_MS = 60_000;

/** How long closing the embedded sink waits for inserts still running, in ms. */
const CLOSE_WAIT_MS = 10_000;

/**
 * Attempts at blocks, one at a time per block: a retry (same dedupe token) waits for the attempt
 * before it to end, however long that takes, while other blocks go ahead. Two inserts of one token
 * running at once, on two connections, both find the token new in the views' deduplication and
 * the rollups count the block twice (the fault suite caught exactly that); one after the other,
 * the later one is dropped if the earlier landed.
 */
export class BlockAttempts {
  /** The latest attempt at each block still running, by its dedupe token. */
  private readonly latest = new Map<string, Promise<unknown>>();

  async run<T>(token: string, attempt: () => Promise<T>): Promise<T> {
    const earlier = this.latest.get(token);
    const current = (async () => {
      if (earlier !== undefined) await earlier.catch(() => undefined);
      return attempt();
    })();
    this.latest.set(token, current);
    try {
      return await current;
    } finally {
      if (this.latest.get(token) === current) this.latest.delete(token);
    }
  }
}

/**
 * Finishes the embedded inserts a process of this data directory and database left unfinished
 * when it died, and returns how many blocks it sent again.
 *
 * Each block's spool file outlives an insert that never returned and, once stored, stays until the
 * rollup feed has written the block's rollups. So a process killed between the two leaves a block
 * in history and missing from the rollups, or partly in them (measured, when the inserts wrote the
 * rollups themselves: 25 kills during inserts lost rows from every rollup). Each file is inserted
 * again with its own insert_deduplication_token — the history table drops a block it already holds;
 * a block that never landed is stored now (its readings were never acknowledged, and their resends
 * are then found in history) — and the rollup groups of its rows are rebuilt from history. Must run
 * before the service takes readings.
 */
export async function recoverSpool(client: ClickHouseClient, database: string, dataDir: string): Promise<number> {
  const base = spoolBase();
  const prefix = `${SPOOL_PREFIX}${spoolKey(dataDir, database)}-`;
  let replayed = 0;
  for (const entry of safeReaddir(base)) {
    if (!entry.startsWith(prefix) || isAlive(Number(entry.slice(prefix.length).split("-")[0]))) continue;
    const dir = path.join(base, entry);
    const blocks = safeReaddir(dir)
      .filter((name) => name.endsWith(".bin"))
      .map((name) => ({ name, writtenMs: statSync(path.join(dir, name)).mtimeMs }))
      .sort((a, b) => a.writtenMs - b.writtenMs);
    const replayedFiles = new Map<DeviceKind, string[]>();
    for (const { name } of blocks) {
      const [kind, token] = name.split(".") as [DeviceKind, string];
      if (!Object.hasOwn(HISTORY_TABLES, kind) || !TOKEN_PATTERN.test(token)) continue;
      // A database recreated since (its tables not there yet) has nothing to repair.
      const [exists] = await (
        await client.query({ query: `EXISTS TABLE ${database}.${HISTORY_TABLES[kind]}`, format: "JSONEachRow" })
      ).json<{ result: number | string }>();
      if (Number(exists?.result) !== 1) continue;
      const file = path.join(dir, name);
      await client.command({ query: insertFromFile(database, HISTORY_TABLES[kind], kind, file, token) });
      const files = replayedFiles.get(kind) ?? [];
      files.push(file);
      replayedFiles.set(kind, files);
      replayed++;
    }
    // The history insert writes no rollups, and whether the feed wrote these blocks' is unknown:
    // rebuild the groups the blocks touch from history.
    for (const [kind, files] of replayedFiles) await rebuildRollupGroups(client, database, kind, HISTORY_TABLES[kind], files);
    rmSync(dir, { recursive: true, force: true });
  }
  return replayed;
}

function columnList(kind: DeviceKind): string {
  return `(${TABLE_COLUMNS[kind].join(", ")})`;
}

/**
 * The embedded insert of one spooled block into `table` (the kind's history or its rollup feed).
 * The token is a UUID or a hash of UUIDs and the path is ours: nothing here comes from a client.
 * deduplicate_blocks_in_dependent_materialized_views is this engine's default; it is stated
 * because the feed depends on it: the feed table stores nothing, so only each view's target can
 * recognise a batch sent again, and drops it only if it holds it.
 */
function insertFromFile(database: string, table: string, kind: DeviceKind, file: string, token: string): string {
  return `INSERT INTO ${database}.${table} ${columnList(kind)} FROM INFILE '${file}'
          SETTINGS insert_deduplication_token = '${token}', deduplicate_blocks_in_dependent_materialized_views = 1
          FORMAT ${INSERT_FORMAT}`;
}

function spoolBase(): string {
  return existsSync("/dev/shm") ? "/dev/shm" : os.tmpdir();
}

/** Spools are kept per data directory and database: recovery must replay into the right one. */
function spoolKey(dataDir: string, database: string): string {
  return createHash("sha256").update(`${path.resolve(dataDir)}\0${database}`).digest("hex").slice(0, 16);
}

/**
 * A spool directory of this process's own, in memory-backed /dev/shm when the machine has it.
 * Empty directories left by processes that died are removed, as are those of the older layout
 * (no data directory key); ones still holding blocks wait for their data directory's recovery.
 */
function openSpool(dataDir: string, database: string): string {
  const base = spoolBase();
  for (const entry of safeReaddir(base)) {
    if (!entry.startsWith(SPOOL_PREFIX)) continue;
    const parts = entry.slice(SPOOL_PREFIX.length).split("-");
    const legacy = parts.length === 2;
    const pid = Number(legacy ? parts[0] : parts[1]);
    if (!Number.isInteger(pid) || isAlive(pid)) continue;
    const dir = path.join(base, entry);
    if (legacy || safeReaddir(dir).length === 0) rmSync(dir, { recursive: true, force: true });
  }
  const dir = path.join(base, `${SPOOL_PREFIX}${spoolKey(dataDir, database)}-${process.pid}-${randomUUID().slice(0, 8)}`);
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
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
