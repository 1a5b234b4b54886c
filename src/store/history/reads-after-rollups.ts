// The history client the answers read through. On the embedded engine a block's rollups are written
// up to a second after the block was stored and acknowledged (rollup-feed.ts); every statement
// read through this client first waits for the rollups to hold everything stored before it, so
// an answer never misses a reading its caller was told is stored, and the performance snapshot's
// rule — a write settled before a statement began is in what the statement reads — still holds.
// One place for it rather than a wait before each statement that reads a rollup: a reader added
// later cannot forget it. Only a query naming a rollup table waits; one that reads history alone
// (stored before its acknowledgement) or the links, and statements that write, pass straight through.
import type { ClickHouseClient } from "@clickhouse/client";
import { KIND_ROLLUPS } from "./rollup-repair.js";
import { withTimeout } from "./with-timeout.js";

export interface RollupProgress {
  rollupsCaughtUp(): Promise<void>;
}

/** The rollups could not be brought up to date in time; the statement was not run. */
export class RollupsBehindError extends Error {
  override readonly name = "RollupsBehindError";
}

/** Every rollup table the migrations define, as a word in a statement's text. */
const NAMES_A_ROLLUP = new RegExp(
  `\\b(${Object.values(KIND_ROLLUPS)
    .flatMap((kind) => kind.tables.map((table) => table.name))
    .join("|")})\\b`,
);

/** Wraps `client` so that each query of a rollup runs once the rollups hold every stored block, or fails after maxWaitMs. */
export function readsAfterRollups(client: ClickHouseClient, rollups: RollupProgress, maxWaitMs = 10_000): ClickHouseClient {
  const query: ClickHouseClient["query"] = async (params) => {
    if (NAMES_A_ROLLUP.test(params.query)) {
      await withTimeout(rollups.rollupsCaughtUp(), maxWaitMs, () => new RollupsBehindError(`the rollups did not take the stored readings within ${maxWaitMs} ms`));
    }
    return client.query(params);
  };
  return new Proxy(client, {
    get(target, property) {
      if (property === "query") return query;
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}
