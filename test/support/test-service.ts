// Starts the whole service in this process on port 0, with embedded ClickHouse in a fresh
// directory and a fresh database, and gives tests a second ClickHouse session to check rows.
import { randomUUID } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createClient, type ClickHouseClient, type ClickHouseClientConfigOptions } from "@clickhouse/client";
import { createChdbConnection } from "chdb/connection";
import { loadConfig, type Config } from "../../src/config.js";
import { startService, type RunningService, type ServiceFaults } from "../../src/service.js";
import { readsAfterRollups, type RollupProgress } from "../../src/store/history/reads-after-rollups.js";
import { createTestLogger } from "./service-log.js";

export interface TestService {
  readonly config: Config;
  readonly service: RunningService;
  readonly baseUrl: string;
  /** host:port, as grpc-js wants it. */
  readonly target: string;
}

export function testEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    PORT: "0",
    HOST: "127.0.0.1",
    DATA_DIR: mkdtempSync(path.join(tmpdir(), "wattstream-test-")),
    CLICKHOUSE_DATABASE: `test_${randomUUID().replaceAll("-", "")}`,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "silent",
    SHUTDOWN_GRACE: "2s",
    ...extra,
  };
}

export async function startTestService(env: Record<string, string> = testEnv(), faults: ServiceFaults = {}): Promise<TestService> {
  const config = loadConfig(env);
  const service = await startService(config, createTestLogger(config.logLevel), faults);
  return { config, service, baseUrl: `http://127.0.0.1:${service.port}`, target: `127.0.0.1:${service.port}` };
}

/** A separate session on the service's embedded engine, for checking what was stored. */
export class HistoryProbe {
  private readonly client: ClickHouseClient;

  /**
   * With `service` (one running in this process), each read first waits, as the service's answers
   * do, for the rollups to hold every reading acknowledged so far.
   */
  constructor(
    private readonly config: Config,
    private readonly service?: RollupProgress,
  ) {
    const connection = createChdbConnection({ path: config.clickhouse.dataDir }) as unknown as ClickHouseClientConfigOptions["connection"];
    this.client = createClient({ connection });
  }

  async rows<T>(sql: string): Promise<T[]> {
    await this.service?.rollupsCaughtUp();
    const query = sql.replaceAll("{db}", this.config.clickhouse.database);
    const result = await this.client.query({ query, format: "JSONEachRow" });
    return result.json<T>();
  }

  /** Runs a statement that returns no rows (an INSERT, say) on the service's database. */
  async command(sql: string): Promise<void> {
    await this.client.command({ query: sql.replaceAll("{db}", this.config.clickhouse.database) });
  }

  /** The probe's client, its session switched to the service's database (for analytics queries). */
  async clientOnServiceDatabase(): Promise<ClickHouseClient> {
    await this.client.command({ query: `USE ${this.config.clickhouse.database}` });
    return this.service === undefined ? this.client : readsAfterRollups(this.client, this.service);
  }

  async count(table: string): Promise<number> {
    const [row] = await this.rows<{ n: number }>(`SELECT count() AS n FROM {db}.${table}`);
    return Number(row?.n ?? 0);
  }

  close(): Promise<void> {
    return this.client.close();
  }
}
