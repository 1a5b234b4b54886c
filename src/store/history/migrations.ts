// Applies clickhouse/NNNN_name.sql in order, once each, recording them in schema_migrations.
// The files are plain SQL a person can read and run by hand; every statement is idempotent, so
// a crash between a statement and its record is repaired by running again.
import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { ClickHouseClient } from "@clickhouse/client";

export const MIGRATIONS_DIR = fileURLToPath(new URL("../../../clickhouse/", import.meta.url));

export interface Migration {
  readonly file: string;
  readonly version: number;
  readonly name: string;
  readonly checksum: string;
  readonly statements: readonly string[];
}

export async function loadMigrations(dir: string = MIGRATIONS_DIR): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith(".sql")).sort();
  const migrations: Migration[] = [];
  for (const file of files) {
    const match = /^(\d+)_([\w-]+)\.sql$/.exec(file);
    if (!match) throw new Error(`migration file ${file} must be named NNNN_name.sql`);
    const sql = await readFile(path.join(dir, file), "utf8");
    migrations.push({
      file,
      version: Number(match[1]),
      name: match[2]!,
      checksum: createHash("sha256").update(sql).digest("hex"),
      statements: splitStatements(sql),
    });
  }
  const versions = migrations.map((m) => m.version);
  if (new Set(versions).size !== versions.length) throw new Error(`duplicate migration versions in ${dir}`);
  return migrations;
}

/** Applies pending migrations; answers the versions it applied. */
export async function applyMigrations(client: ClickHouseClient, migrations: readonly Migration[]): Promise<number[]> {
  await client.command({
    query: `CREATE TABLE IF NOT EXISTS schema_migrations
      (version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC'))
      ENGINE = ReplacingMergeTree ORDER BY version`,
  });
  const result = await client.query({
    query: "SELECT version, checksum FROM schema_migrations FINAL",
    format: "JSONEachRow",
  });
  const applied = new Map((await result.json<{ version: number; checksum: string }>()).map((r) => [r.version, r.checksum]));

  const done: number[] = [];
  for (const migration of migrations) {
    const checksum = applied.get(migration.version);
    if (checksum !== undefined) {
      if (checksum !== migration.checksum) {
        throw new Error(
          `migration ${migration.file} was changed after it was applied; add a new migration instead`,
        );
      }
      continue;
    }
    for (const statement of migration.statements) await client.command({ query: statement });
    // No clickhouse_settings here: on the embedded engine they become session-wide SETs, and a
    // dedupe token left set would silently drop every later insert that carries none.
    await client.insert({
      table: "schema_migrations",
      values: [{ version: migration.version, name: migration.name, checksum: migration.checksum, applied_at: Date.now() }],
      format: "JSONEachRow",
    });
    done.push(migration.version);
  }
  return done;
}

/**
 * Splits a file into statements at semicolons that end a line, dropping comment lines. Migrations
 * are written to that rule: one statement per `;` at a line's end, no `;` + newline in a string.
 */
export function splitStatements(sql: string): string[] {
  return sql
    .split(/;\s*(?:\n|$)/)
    .map((piece) =>
      piece
        .split("\n")
        .filter((line) => !line.trim().startsWith("--"))
        .join("\n")
        .trim(),
    )
    .filter((piece) => piece.length > 0);
}
