// What an operator sees when a setting names something the service cannot use — a file it
// cannot read, a store it cannot reach: `npm start`'s process stops with status 1 and one plain
// line naming the variable to fix (the README: "a bad value stops the service with a message
// naming the variable"), not a stack trace or a client library's dump.
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { redisServerAvailable, startRedisServer, type RedisServer } from "./support/redis-server.js";
import { restartablePort } from "./support/restartable-port.js";
import { selfSignedCertificate } from "./support/self-signed.js";
import { startTestService, testEnv } from "./support/test-service.js";
import type { HistoryClient } from "../src/store/history/clickhouse-client.js";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const scratch = mkdtempSync(path.join(tmpdir(), "wattstream-startup-"));

/** Runs the service with env until it exits (it must, within the timeout); its status and stderr. */
function start(env: Record<string, string>): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
      cwd: repoRoot,
      env: { ...process.env, PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "silent", DATA_DIR: mkdtempSync(path.join(scratch, "data-")), ...env },
      stdio: ["ignore", "ignore", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the service did not stop within 30 s: ${stderr}`));
    }, 30_000);
    child.once("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stderr });
    });
  });
}

function expectStopped(result: { code: number | null; stderr: string }, line: RegExp): void {
  expect(result.code, result.stderr).toBe(1);
  expect(result.stderr.trim(), result.stderr).toMatch(line);
  expect(result.stderr).not.toMatch(/^\s+at /m);
}

describe("a setting naming something the service cannot use", () => {
  it("TLS_CERT naming no file", async () => {
    expectStopped(await start({ TLS_CERT: "/nonexistent/cert.pem", TLS_KEY: "/nonexistent/key.pem" }), /^wattstream: could not start: TLS_CERT: cannot read \/nonexistent\/cert\.pem \(ENOENT\)$/);
  });

  it("TLS_KEY naming a file that holds no key, and a key that is not the certificate's", async () => {
    const certificate = selfSignedCertificate();
    const other = selfSignedCertificate();
    const notPem = path.join(scratch, "not.pem");
    writeFileSync(notPem, "not a key\n");
    expectStopped(await start({ TLS_CERT: certificate.certFile, TLS_KEY: notPem }), /^wattstream: could not start: TLS_KEY: .*not\.pem holds no usable PEM private key/);
    expectStopped(await start({ TLS_CERT: certificate.certFile, TLS_KEY: other.keyFile }), /^wattstream: could not start: TLS_CERT and TLS_KEY: the key in .* does not go with the certificate/);
  });

  it("CLICKHOUSE_URL naming a server that is not there", async () => {
    const port = await restartablePort();
    expectStopped(await start({ CLICKHOUSE_URL: `http://127.0.0.1:${port}` }), new RegExp(`^wattstream: could not start: CLICKHOUSE_URL: cannot reach ClickHouse at http://127\\.0\\.0\\.1:${port}/ \\(.*ECONNREFUSED`));
  });

  it("DATA_DIR naming a file", async () => {
    const file = path.join(scratch, "a-file");
    writeFileSync(file, "");
    expectStopped(await start({ DATA_DIR: file }), /^wattstream: could not start: DATA_DIR: cannot open the embedded ClickHouse in .*a-file/);
  });

  it("HOST that is no address, closing the engine it had opened before it exits", async () => {
    // Four at once: exiting with the engine's threads still at work crashed one exit in four.
    const results = await Promise.all(Array.from({ length: 4 }, () => start({ HOST: "999.1.1.1" })));
    for (const result of results) expectStopped(result, /^wattstream: could not start: HOST and PORT: cannot listen on 999\.1\.1\.1/);
  });
});

describe("a start that fails after the engine opened, in this process", () => {
  it("closes the engine again before the error reaches the caller", async () => {
    // An embedding that carries on after a failed start must not be left holding the engine, and
    // a process exiting with the engine's threads at work can crash (the HOST case above).
    const port = await restartablePort();
    let history: HistoryClient | undefined;
    const start = startTestService(testEnv({ REDIS_URL: `redis://127.0.0.1:${port}` }), { onHistoryClient: (opened) => (history = opened) });
    await expect(start).rejects.toThrow(/^REDIS_URL: cannot use Redis at .*ECONNREFUSED/);
    await expect(history!.client.query({ query: "SELECT 1" })).rejects.toThrow(/closed/);
  });
});

describe.skipIf(!redisServerAvailable())("REDIS_URL naming a Redis the service cannot use", () => {
  let redis: RedisServer;
  beforeAll(async () => {
    redis = await startRedisServer();
    const admin = new Redis(redis.url);
    await admin.config("SET", "requirepass", "right-password");
    admin.disconnect();
  });
  afterAll(() => redis?.stop());

  it("says why: nothing listening, no password, or the wrong one (never printing it)", async () => {
    const port = await restartablePort();
    expectStopped(await start({ REDIS_URL: `redis://127.0.0.1:${port}` }), /^wattstream: could not start: REDIS_URL: cannot use Redis at .* \(connect ECONNREFUSED/);
    expectStopped(await start({ REDIS_URL: redis.url }), /^wattstream: could not start: REDIS_URL: cannot use Redis at .* \(NOAUTH/);
    const wrong = await start({ REDIS_URL: `redis://:wrong-password@127.0.0.1:${redis.port}` });
    expectStopped(wrong, /^wattstream: could not start: REDIS_URL: cannot use Redis at redis:\/\/:\*\*\*@127\.0\.0\.1:\d+ \(WRONGPASS/);
    expect(wrong.stderr).not.toContain("wrong-password");
  });
});
