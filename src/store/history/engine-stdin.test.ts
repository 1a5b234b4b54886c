// The embedded engine and this process's standard input. vitest runs each test file in a process
// whose fd 0 is a socket that stays open and silent — the case where an insert can block reading it.
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { openEmbeddedConnection } from "./clickhouse-client.js";

const O_NONBLOCK = 0o4000;

/** fd 0's open flags, as the kernel reports them. */
function standardInputFlags(): number {
  const line = readFileSync("/proc/self/fdinfo/0", "utf8").split("\n").find((l) => l.startsWith("flags:"));
  return Number.parseInt(line!.split(/\s+/)[1]!, 8);
}

describe("opening the embedded engine with a silent socket for standard input", () => {
  it("makes fd 0 non-blocking first, so inserts on several connections at once all return", async () => {
    // As vitest started this process: a blocking socket. (Nothing here has opened process.stdin.)
    expect(standardInputFlags() & O_NONBLOCK).toBe(0);

    const dataDir = mkdtempSync(path.join(tmpdir(), "wattstream-stdin-"));
    const connections = await Promise.all([1, 2, 3].map(() => openEmbeddedConnection(dataDir)));
    expect(standardInputFlags() & O_NONBLOCK).toBe(O_NONBLOCK);

    const [first] = connections;
    await first!.command({ query: "CREATE TABLE rows_in (x UInt32) ENGINE = MergeTree ORDER BY x" });
    const file = path.join(dataDir, "rows.bin");
    writeFileSync(file, Buffer.from([1, 0, 0, 0, 2, 0, 0, 0]));
    // The engine checks standard input on each of these; from three connections at once.
    const inserts = connections.flatMap((connection) =>
      Array.from({ length: 20 }, () => connection.command({ query: `INSERT INTO rows_in FROM INFILE '${file}' FORMAT RowBinary` })),
    );
    await Promise.all(inserts);
    const result = await first!.query({ query: "SELECT count() AS n FROM rows_in", format: "JSONEachRow" });
    const [row] = await result.json<{ n: string | number }>();
    expect(Number(row?.n)).toBe(120);
    expect(standardInputFlags() & O_NONBLOCK).toBe(O_NONBLOCK);
    await Promise.all(connections.map((c) => c.close()));
  });
});
