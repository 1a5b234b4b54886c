// Rebuilds, from the history tables, the rollup groups that blocks replayed from a dead process's
// spool touch. A block in the spool was stored in history, or was about to be, and its rollups
// may or may not have been fed (rollup-feed.ts feeds them a batch at a time after the history
// insert); a kill during a feed can even leave a rollup's deduplication log holding a batch whose
// part it never committed (bench/kill-during-inserts.ts shows that for the inserts that wrote the
// rollups themselves; docs/reliability.md). So every rollup group of those blocks — the device's
// whole hour, in every rollup of the kind — is deleted and inserted again from the history table's
// rows through the kind's first view, whose own views then rebuild theirs. Runs before the service
// takes readings, so nothing else writes meanwhile.
import type { ClickHouseClient } from "@clickhouse/client";
import type { DeviceKind } from "../../process/history-rows.js";
import { INSERT_FORMAT, TABLE_COLUMNS } from "../../process/insert-encoding.js";

interface KindRollups {
  /** The Null table whose inserts feed the rollups (migration 0007). */
  readonly feed: string;
  /** The materialized view that reads the feed table; its target is `tables[0]`. */
  readonly view: string;
  /** Every rollup of the kind (the view's target first, then the tables fed from it), with the column holding its time. */
  readonly tables: readonly { readonly name: string; readonly time: string }[];
}

/** A kind's minute rollup, and the hourly and by-time rollups fed from it (migrations 0003, 0005, 0006). */
const minuteRollups = (kind: "meter" | "vehicle"): KindRollups => ({
  feed: `${kind}_rollup_feed`,
  view: `${kind}_minutes_mv`,
  tables: [
    { name: `${kind}_minutes`, time: "minute" },
    { name: `${kind}_hours`, time: "hour" },
    { name: `${kind}_minutes_by_time`, time: "minute" },
  ],
});

/**
 * The rollups the migrations define for each history table (history-sink.test.ts holds this to
 * the views the migrations create: a rollup missing here would be counted twice by a rebuild).
 */
export const KIND_ROLLUPS: Readonly<Record<DeviceKind, KindRollups>> = {
  meter: minuteRollups("meter"),
  vehicle: minuteRollups("vehicle"),
  battery: { feed: "battery_rollup_feed", view: "battery_health_hours_mv", tables: [{ name: "battery_health_hours", time: "hour" }] },
};

/** The (device, hour) groups as the statements bind them: parallel lists, hours in epoch seconds. */
interface Groups {
  readonly devices: string[];
  readonly hours: number[];
  /** The first group's hour and the end of the last one's, for the primary key. */
  readonly from: number;
  readonly to: number;
}

/**
 * Rows of the groups, in a table ordered by device and time: the device and time conditions let
 * the primary key narrow the read; the pairs then pick the groups exactly.
 */
const inGroups = (time: string) =>
  `device_id IN (SELECT arrayJoin({devices:Array(String)}))
   AND ${time} >= toDateTime({from:UInt32}, 'UTC') AND ${time} < toDateTime({to:UInt32}, 'UTC')
   AND has(arrayZip({devices:Array(String)}, {hours:Array(UInt32)}), (device_id, toUInt32(toUnixTimestamp(toStartOfHour(${time})))))`;

/**
 * Rebuilds every rollup group of kind's `historyTable` that the spooled blocks in `files` touch
 * (they must be in the history table already). Answers how many (device, hour) groups it rebuilt.
 */
export async function rebuildRollupGroups(
  client: ClickHouseClient,
  database: string,
  kind: DeviceKind,
  historyTable: string,
  files: readonly string[],
): Promise<number> {
  const groups = await groupsOf(client, database, historyTable, kind, files);
  if (groups.devices.length === 0) return 0;
  const { feed, view, tables } = KIND_ROLLUPS[kind];
  for (const { name, time } of tables) {
    await client.command({
      query: `ALTER TABLE ${database}.${name} DELETE WHERE ${inGroups(time)} SETTINGS mutations_sync = 2`,
      query_params: { ...groups },
    });
  }
  await client.command({
    query: `INSERT INTO ${database}.${tables[0]!.name} ${await viewSelectOver(client, database, view, feed, historyTable)}
            SETTINGS insert_deduplicate = 0, deduplicate_blocks_in_dependent_materialized_views = 0`,
    query_params: { ...groups },
  });
  return groups.devices.length;
}

/** The distinct (device, hour) groups of the rows in the spooled files, read by the engine itself. */
async function groupsOf(client: ClickHouseClient, database: string, historyTable: string, kind: DeviceKind, files: readonly string[]): Promise<Groups> {
  const types = await (
    await client.query({
      query: "SELECT name, type FROM system.columns WHERE database = {database:String} AND table = {table:String}",
      query_params: { database, table: historyTable },
      format: "JSONEachRow",
    })
  ).json<{ name: string; type: string }>();
  const typeOf = new Map(types.map((c) => [c.name, c.type]));
  const structure = TABLE_COLUMNS[kind].map((column) => `${column} ${typeOf.get(column)}`).join(", ");
  const seen = new Map<string, [string, number]>();
  for (const file of files) {
    const rows = await (
      await client.query({
        query: `SELECT DISTINCT device_id, toUInt32(toUnixTimestamp(toStartOfHour(observed_at))) AS hour
                FROM file({file:String}, '${INSERT_FORMAT}', {structure:String})`,
        query_params: { file, structure },
        format: "JSONCompactEachRow",
      })
    ).json<[string, number]>();
    for (const [deviceId, hour] of rows) seen.set(`${hour}\u0000${deviceId}`, [deviceId, Number(hour)]);
  }
  const pairs = [...seen.values()];
  const hours = pairs.map(([, hour]) => hour);
  return {
    devices: pairs.map(([deviceId]) => deviceId),
    hours,
    from: hours.reduce((a, b) => Math.min(a, b), Infinity),
    to: hours.reduce((a, b) => Math.max(a, b), -Infinity) + 3_600,
  };
}

/**
 * The view's own SELECT, reading the history table's rows of the groups (FINAL: each reading once)
 * instead of a block inserted into its feed table — one definition of each rollup, the migrations'.
 */
async function viewSelectOver(client: ClickHouseClient, database: string, view: string, feed: string, historyTable: string): Promise<string> {
  const [row] = await (
    await client.query({
      query: "SELECT as_select FROM system.tables WHERE database = {database:String} AND name = {view:String}",
      query_params: { database, view },
      format: "JSONEachRow",
    })
  ).json<{ as_select: string }>();
  const source = `FROM ${database}.${feed} `;
  if (row === undefined || !row.as_select.includes(source)) {
    throw new Error(`cannot rebuild ${view}: its SELECT does not read ${database}.${feed} as expected: ${row?.as_select}`);
  }
  return row.as_select.replace(source, `FROM (SELECT * FROM ${database}.${historyTable} FINAL WHERE ${inGroups("observed_at")}) AS history `);
}
