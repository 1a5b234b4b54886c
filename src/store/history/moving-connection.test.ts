// The main connection when a statement does not come back: a real INSERT … FROM INFILE held by a
// FIFO stands in for it (it runs until something writes to the pipe).
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createClient } from "@clickhouse/client";
import { createChdbConnection } from "chdb/connection";
import { describe, expect, it } from "vitest";
import { MovingConnection, type EngineConnection } from "./moving-connection.js";
import { heldPipe } from "../../../test/support/held-pipe.js";
import { settledWithin } from "../../../test/support/settled-within.js";

async function counted(result: { json<T>(): Promise<T[]> }): Promise<number> {
  const [row] = await result.json<{ n: string | number }>();
  return Number(row?.n);
}

describe("the engine's main connection", () => {
  it("moves later statements to a new connection, on the session's database, past a statement that does not return", async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), "wattstream-moving-"));
    const closed: number[] = [];
    let opened = 0;
    const openConnection = () => {
      const connection = createChdbConnection({ path: dataDir }) as unknown as EngineConnection;
      const number = ++opened;
      const close = connection.close.bind(connection);
      connection.close = async () => {
        closed.push(number);
        await close();
      };
      return connection;
    };
    const moves: number[] = [];
    const client = createClient({ connection: new MovingConnection(openConnection, { stuckAfterMs: 300, onMoved: (ms) => moves.push(ms) }) });
    await client.command({ query: "CREATE DATABASE moving_db" });
    await client.command({ query: "USE moving_db" });
    // Unqualified from here on: only the session's USE says which database.
    await client.command({ query: "CREATE TABLE t (x UInt32) ENGINE = MergeTree ORDER BY x" });
    await client.command({ query: "INSERT INTO t VALUES (1)" });

    const pipe = heldPipe(dataDir, "held");
    const held = client.command({ query: `INSERT INTO t FROM INFILE '${pipe.path}' FORMAT RowBinary` }).then(() => "returned");
    await pipe.running();
    // Within the limit a statement waits its turn on the same connection.
    const queued = client.query({ query: "SELECT count() AS n FROM t", format: "JSONEachRow" }).then(counted);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(await settledWithin(queued, 0)).toBe("pending");

    // Past it, the next one moves on, and finds the table through the session's database.
    const moved = client.query({ query: "SELECT count() AS n FROM t", format: "JSONEachRow" }).then(counted);
    expect(await settledWithin(moved, 10_000)).toBe(1);
    expect(opened).toBe(2);
    expect(moves).toHaveLength(1);
    expect(moves[0]).toBeGreaterThan(300);
    expect(closed).toEqual([]);

    await pipe.release(Buffer.from([2, 0, 0, 0]));
    expect(await held).toBe("returned");
    expect(await queued).toBe(2);
    // The connection left behind closes once its statements have returned; the current one stays.
    expect(closed).toEqual([1]);
    expect(await client.query({ query: "SELECT count() AS n FROM t", format: "JSONEachRow" }).then(counted)).toBe(2);
    expect(opened).toBe(2);
    await client.close();
    expect(closed).toEqual([1, 2]);
  });

  it("says how long a statement binding parameters has waited, and counts no other", async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), "wattstream-bound-"));
    const connection = new MovingConnection(() => createChdbConnection({ path: dataDir }) as unknown as EngineConnection, { stuckAfterMs: 60_000 });
    const client = createClient({ connection });
    await client.command({ query: "CREATE TABLE default.t (x UInt32) ENGINE = MergeTree ORDER BY x" });
    const hold = async (name: string, bound: boolean) => {
      const pipe = heldPipe(dataDir, name);
      const query = `INSERT INTO default.t FROM INFILE '${pipe.path}' FORMAT RowBinary`;
      const returned = client.command(bound ? { query, query_params: { held: 1 } } : { query });
      await pipe.running();
      await new Promise((resolve) => setTimeout(resolve, 200));
      return async () => {
        await pipe.release(Buffer.from([1, 0, 0, 0]));
        await returned;
      };
    };
    const releaseLiteral = await hold("literal", false);
    expect(connection.heldBoundMs()).toBe(0);
    await releaseLiteral();

    const releaseBound = await hold("bound", true);
    expect(connection.heldBoundMs()).toBeGreaterThanOrEqual(200);
    await releaseBound();
    expect(connection.heldBoundMs()).toBe(0);
    await client.close();
  });
});
