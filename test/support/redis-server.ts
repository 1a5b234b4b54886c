// Starts a private redis-server on a free port for one test file, so tests are isolated from any
// Redis already running and work on a fresh machine. REQUIRE_REDIS=1 turns a missing binary into
// a failure instead of a skip (CI sets it).
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { restartablePort } from "./restartable-port.js";
import { Redis } from "ioredis";

export interface RedisServer {
  readonly url: string;
  readonly port: number;
  /** The running server's process id (it changes with a restart). */
  readonly pid: number | undefined;
  /**
   * Kills the server (SIGKILL: nothing is saved) and starts a new one on the same port: clients
   * reconnect to the same URL and find an empty Redis, or with snapshotDir the last snapshot taken.
   */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** True when redis-server can be run here; throws under REQUIRE_REDIS=1 when it cannot. */
export function redisServerAvailable(): boolean {
  const found = spawnSync("redis-server", ["--version"], { stdio: "ignore" }).status === 0;
  if (!found && process.env.REQUIRE_REDIS === "1") {
    throw new Error("REQUIRE_REDIS=1 but redis-server is not installed (apt-get install -y redis-server)");
  }
  return found;
}

export interface RedisServerOptions {
  readonly port?: number;
  /**
   * A directory for RDB snapshots: the server then loads the last one when it starts, as a Redis
   * with its default persistence does after a crash. Snapshots are taken only when asked (SAVE).
   */
  readonly snapshotDir?: string;
  /**
   * A directory for an append-only file written as the compose file's Redis writes it
   * (`appendonly yes`, fsync every second, rewritten as it grows); instead of snapshots.
   */
  readonly appendOnlyDir?: string;
}

export async function startRedisServer(options: RedisServerOptions = {}): Promise<RedisServer> {
  const chosenPort = options.port ?? (await restartablePort());
  const url = `redis://127.0.0.1:${chosenPort}`;
  const snapshots = options.snapshotDir === undefined ? [] : ["--dir", options.snapshotDir, "--dbfilename", "dump.rdb"];
  const persistence =
    options.appendOnlyDir === undefined ? ["--appendonly", "no", ...snapshots] : ["--dir", options.appendOnlyDir, "--appendonly", "yes"];
  const spawnServer = async () => {
    const server = spawn(
      "redis-server",
      ["--port", String(chosenPort), "--bind", "127.0.0.1", "--save", "", ...persistence],
      { stdio: "ignore" },
    );
    await waitUntilAnswering(url, server);
    return server;
  };
  const kill = async (server: ChildProcess) => {
    if (server.exitCode !== null || server.signalCode !== null) return;
    const exited = once(server, "exit");
    server.kill("SIGKILL");
    await exited;
  };
  let child = await spawnServer();
  return {
    url,
    port: chosenPort,
    get pid() {
      return child.pid;
    },
    async restart() {
      await kill(child);
      child = await spawnServer();
    },
    stop: () => kill(child),
  };
}

async function waitUntilAnswering(url: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`redis-server exited with code ${child.exitCode}`);
    const probe = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false });
    probe.on("error", () => {});
    try {
      await probe.connect();
      await probe.ping();
      return;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`redis-server at ${url} did not answer: ${String(error)}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    } finally {
      probe.disconnect();
    }
  }
}
