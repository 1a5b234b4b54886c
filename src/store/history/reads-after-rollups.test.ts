// The answers' history client: a query of a rollup waits for the rollups to take every stored
// block, and fails rather than answer without them; other queries and statements that write do not
// wait. On the real engine, with the rollups' progress held by the test.
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ClickHouseClient } from "@clickhouse/client";
import { openEmbeddedConnection } from "./clickhouse-client.js";
import { readsAfterRollups, RollupsBehindError } from "./reads-after-rollups.js";

let engine: ClickHouseClient;
beforeAll(async () => {
  engine = await openEmbeddedConnection(mkdtempSync(path.join(os.tmpdir(), "wattstream-reads-test-")));
  // A table by a rollup's name: the client tells rollup reads by the tables they name.
  await engine.command({ query: "CREATE TABLE meter_minutes (x UInt8) ENGINE = Memory" });
  await engine.command({ query: "INSERT INTO meter_minutes VALUES (1)" });
});
afterAll(async () => {
  await engine.close();
});

/** Rollups that catch up when the test says so. */
function heldRollups() {
  let release!: () => void;
  const caughtUp = new Promise<void>((resolve) => (release = resolve));
  let asked = 0;
  return {
    rollupsCaughtUp: () => {
      asked++;
      return caughtUp;
    },
    release: () => release(),
    asked: () => asked,
  };
}

describe("reads after the rollups", () => {
  it("runs a query of a rollup only once the rollups have caught up", async () => {
    const rollups = heldRollups();
    const client = readsAfterRollups(engine, rollups);
    let answered = false;
    const answer = client.query({ query: "SELECT toUInt8(count()) AS one FROM meter_minutes", format: "JSONEachRow" }).then(async (result) => {
      answered = true;
      return result.json<{ one: number }>();
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(rollups.asked()).toBe(1);
    expect(answered).toBe(false);
    rollups.release();
    expect(await answer).toEqual([{ one: 1 }]);
  });

  it("fails the query, without running it, when the rollups do not catch up in time", async () => {
    const rollups = heldRollups();
    const client = readsAfterRollups(engine, rollups, 30);
    await expect(client.query({ query: "SELECT sum(x) FROM meter_minutes", format: "JSONEachRow" })).rejects.toBeInstanceOf(RollupsBehindError);
  });

  it("lets queries that name no rollup, statements that write, and everything else through at once", async () => {
    const rollups = heldRollups();
    const client = readsAfterRollups(engine, rollups, 10_000);
    // meter_minutes_x is not meter_minutes: the name is matched as a whole word.
    expect(await (await client.query({ query: "SELECT 1 AS meter_minutes_x", format: "JSONEachRow" })).json()).toEqual([{ meter_minutes_x: 1 }]);
    await client.command({ query: "CREATE TABLE IF NOT EXISTS reads_test (x UInt8) ENGINE = Memory" });
    await client.insert({ table: "reads_test", values: [{ x: 7 }], format: "JSONEachRow" });
    expect((await client.ping()).success).toBe(true);
    expect(rollups.asked()).toBe(0);
  });
});
