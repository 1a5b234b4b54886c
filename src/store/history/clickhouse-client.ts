// Opens the one long-lived ClickHouse client: a server over HTTP when CLICKHOUSE_URL is set,
// otherwise the embedded engine (chdb) in DATA_DIR. Either way the rest of the code talks to
// @clickhouse/client and reads the same tables.
import { mkdirSync } from "node:fs";
import { ClickHouseLogLevel, createClient, type ClickHouseClient } from "@clickhouse/client";
import type { ClickHouseConfig } from "../../config.js";
import { keepEngineOffBlockingStandardInput } from "./engine-stdin.js";
import { recoverSpool } from "./history-sink.js";
import { MovingConnection, type EngineConnection, type MovingConnectionOptions } from "./moving-connection.js";

/**
 * How long a statement on the embedded engine's main connection may run before later statements
 * move to a new connection. Far above any statement the service sends (fleet calls take tens of
 * ms; a restore slice or a month's answer seconds at most), so only a statement that is not coming
 * back moves them.
 */
export const STUCK_STATEMENT_MS = 60_000;

export interface HistoryClientOptions {
  /** Overrides STUCK_STATEMENT_MS (tests). */
  readonly stuckAfterMs?: number;
  /** Called when the main connection's statements move to a new connection. */
  readonly onStatementStuck?: (runningMs: number) => void;
}

export interface HistoryClient {
  readonly client: ClickHouseClient;
  /**
   * True for the in-process engine. Its connection turns the client's clickhouse_settings into
   * session-wide SETs, so per-query settings belong in the statement's own SETTINGS clause.
   */
  readonly embedded: boolean;
  readonly database: string;
  /** The embedded engine's data directory; undefined for a server. */
  readonly dataDir?: string;
  /** Inserts a killed process had left unfinished, sent again on opening (embedded only). */
  readonly recoveredInserts: number;
  /**
   * How long the oldest unfinished statement binding parameters has been waiting, in ms; always 0
   * for a server. The embedded engine runs such statements one at a time process-wide, so one
   * that never returns holds every later one, on every connection (see MovingConnection).
   */
  heldBoundStatementMs(): number;
}

export async function openHistoryClient(config: ClickHouseConfig, options: HistoryClientOptions = {}): Promise<HistoryClient> {
  if (config.url !== undefined) {
    // Its own log off: a server that cannot be reached is reported once, by the caller, with the
    // setting that names it (the client would print a multi-line dump of the request first).
    const bootstrap = createClient({ url: config.url, username: config.username, password: config.password, log: { level: ClickHouseLogLevel.OFF } });
    try {
      await bootstrap.command({ query: `CREATE DATABASE IF NOT EXISTS ${config.database}` });
    } finally {
      await bootstrap.close();
    }
    const client = createClient({
      url: config.url,
      username: config.username,
      password: config.password,
      database: config.database,
    });
    return { client, embedded: false, database: config.database, recoveredInserts: 0, heldBoundStatementMs: () => 0 };
  }

  mkdirSync(config.dataDir, { recursive: true });
  const connection = new MovingConnection(await embeddedConnections(config.dataDir), {
    stuckAfterMs: options.stuckAfterMs ?? STUCK_STATEMENT_MS,
    onMoved: options.onStatementStuck,
  });
  const client = createClient({ connection });
  // The embedded connection ignores the client's `database` option; its session keeps USE.
  await client.command({ query: `CREATE DATABASE IF NOT EXISTS ${config.database}` });
  await client.command({ query: `USE ${config.database}` });
  // Before anything else reads or writes: the rollups must be whole before readings are checked
  // against history or stored (see recoverSpool).
  const recoveredInserts = await recoverSpool(client, config.database, config.dataDir);
  return {
    client,
    embedded: true,
    database: config.database,
    dataDir: config.dataDir,
    recoveredInserts,
    heldBoundStatementMs: () => connection.heldBoundMs(),
  };
}

/**
 * A connection of its own to the embedded engine in dataDir. Connections to one data directory
 * share the engine; each runs one statement at a time, and statements of different connections
 * run in parallel (unless they bind parameters, which chdb runs one at a time process-wide). With
 * `moving`, a statement stuck past its limit sends later ones to a new connection (MovingConnection).
 */
export async function openEmbeddedConnection(dataDir: string, moving?: MovingConnectionOptions): Promise<ClickHouseClient> {
  const open = await embeddedConnections(dataDir);
  return createClient({ connection: moving === undefined ? open() : new MovingConnection(open, moving) });
}

/** Opens connections to the embedded engine in dataDir. */
async function embeddedConnections(dataDir: string): Promise<() => EngineConnection> {
  keepEngineOffBlockingStandardInput();
  // Loaded only here: the engine's native library is large, and a server deployment never needs it.
  const { createChdbConnection } = await import("chdb/connection");
  // chdb declares the Connection type from @clickhouse/client-common, which the client re-declares
  // identically in a newer patch release; the shapes match, only the nominal imports differ.
  return () => createChdbConnection({ path: dataDir }) as unknown as EngineConnection;
}
