// An insert lane when the engine does not answer: a statement held by a real FIFO (its INFILE
// blocks until something writes to the pipe) stands in for an insert the engine never returns.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createClient, type ClickHouseClient } from "@clickhouse/client";
import { createChdbConnection } from "chdb/connection";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openEmbeddedConnection } from "./clickhouse-client.js";
import { BlockAttempts } from "./history-sink.js";
import { MovingConnection, type EngineConnection } from "./moving-connection.js";
import { heldPipe } from "../../../test/support/held-pipe.js";
import { settledWithin } from "../../../test/support/settled-within.js";

const dataDir = mkdtempSync(path.join(tmpdir(), "wattstream-lane-"));
let reader: ClickHouseClient;

beforeAll(async () => {
  reader = await openEmbeddedConnection(dataDir);
  await reader.command({ query: "CREATE TABLE t (x UInt32) ENGINE = MergeTree ORDER BY x" });
});
afterAll(async () => {
  await reader.close();
});

/** An INSERT … FROM INFILE held on a pipe, and the row that releases it. */
function heldInsert(name: string, row: number): { query: string; running: () => Promise<void>; release: () => Promise<void> } {
  const pipe = heldPipe(dataDir, name);
  const bytes = Buffer.alloc(4);
  bytes.writeUInt32LE(row);
  return { query: `INSERT INTO t FROM INFILE '${pipe.path}' FORMAT RowBinary`, running: () => pipe.running(), release: () => pipe.release(bytes) };
}

async function rows(): Promise<number[]> {
  const result = await reader.query({ query: "SELECT x FROM t ORDER BY x", format: "JSONEachRow" });
  return (await result.json<{ x: number }>()).map((r) => r.x);
}

describe("an insert lane", () => {
  it("on one connection, a statement waits behind one that does not return (why the lane moves on)", async () => {
    const connection = await openEmbeddedConnection(dataDir);
    const held = heldInsert("control", 1);
    const first = connection.command({ query: held.query });
    await held.running();
    const second = connection.command({ query: "INSERT INTO t VALUES (2)" }).then(() => "done");
    expect(await settledWithin(second, 1_000)).toBe("pending");
    await held.release();
    await first;
    expect(await second).toBe("done");
    await connection.close();
    expect(await rows()).toEqual([1, 2]);
    await reader.command({ query: "TRUNCATE TABLE t" });
  });

  it("sends the next block, when the previous insert is still running, on a new connection, and closes the old one when it returns", async () => {
    const closed: string[] = [];
    let opened = 0;
    const connect = () => {
      const connection = createChdbConnection({ path: dataDir }) as unknown as EngineConnection;
      const name = `connection ${++opened}`;
      const close = connection.close.bind(connection);
      connection.close = async () => {
        closed.push(name);
        await close();
      };
      return connection;
    };
    let replaced = 0;
    // A table's lane, as the history sink opens it: it moves on whenever an insert is running.
    const lane = createClient({ connection: new MovingConnection(connect, { stuckAfterMs: 0, onMoved: () => replaced++ }) });
    const insert = (query: string) => lane.command({ query });

    const held = heldInsert("lane", 10);
    const stuck = insert(held.query).then(() => "returned");
    await held.running();
    // The batcher's next block after the insert above timed out and its block failed.
    expect(await settledWithin(insert("INSERT INTO t VALUES (20)").then(() => "stored"), 10_000)).toBe("stored");
    expect({ opened, replaced, closed }).toEqual({ opened: 2, replaced: 1, closed: [] });
    expect(await settledWithin(stuck, 100)).toBe("pending");
    // Later inserts stay on the new connection while it is free.
    await insert("INSERT INTO t VALUES (30)");
    expect(opened).toBe(2);

    await held.release();
    expect(await stuck).toBe("returned");
    expect(closed).toEqual(["connection 1"]);
    await lane.close();
    expect(closed).toEqual(["connection 1", "connection 2"]);
    expect(await rows()).toEqual([10, 20, 30]);
    await reader.command({ query: "TRUNCATE TABLE t" });
  });

  it("runs a retry of the same block only after the attempt before it has returned", async () => {
    const lane = await openEmbeddedConnection(dataDir, { stuckAfterMs: 0 });
    const blocks = new BlockAttempts();
    const insert = (token: string, query: string) => blocks.run(token, () => lane.command({ query }));
    const held = heldInsert("retry", 40);
    const first = insert("block-4", held.query).then(() => "returned");
    await held.running();
    // Beside it, the retry could land too: with its views' copies it would count the block twice.
    const retry = insert("block-4", "INSERT INTO t VALUES (41)").then(() => "stored");
    expect(await settledWithin(retry, 1_000)).toBe("pending");
    // Another block does not wait.
    expect(await settledWithin(insert("block-5", "INSERT INTO t VALUES (50)").then(() => "stored"), 10_000)).toBe("stored");
    await held.release();
    expect([await first, await retry]).toEqual(["returned", "stored"]);
    expect(await rows()).toEqual([40, 41, 50]);
    await lane.close();
  });
});
