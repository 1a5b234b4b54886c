// Runs the service in its own process with its configuration in the environment — its TypeScript
// through tsx (tests), or compiled as `npm start` runs it (benchmarks: builtService()) — and gives
// the caller its port, its JSON log lines and a bounded stop.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

/**
 * The service as `npm start` runs it: compiles it to dist/ (scripts/build.mjs) and answers the
 * command line that runs the result, for startServiceProcess.
 */
export function builtService(): { readonly command: string; readonly args: readonly string[] } {
  execFileSync(process.execPath, ["scripts/build.mjs"], { cwd: repoRoot, stdio: "inherit" });
  return { command: process.execPath, args: ["--enable-source-maps", "dist/src/main.js"] };
}

export interface ServiceProcess {
  readonly child: ChildProcess;
  readonly port: number;
  /** host:port, as grpc-js wants it. */
  readonly target: string;
  /** Every JSON log line so far. */
  readonly logs: Record<string, unknown>[];
  /** Everything written to stderr so far. */
  stderr(): string;
  /** Resolves with the exit code (null if killed by a signal) once the process has exited. */
  readonly exited: Promise<number | null>;
  /** SIGTERM, then waits for the exit (SIGKILL after timeoutMs); resolves the exit code (null if killed). */
  stop(timeoutMs?: number): Promise<number | null>;
  /** SIGKILL if still running. */
  kill(): void;
}

/**
 * Starts the service and resolves once it logs the port it serves on; fails after timeoutMs.
 * `entry` is the script to run, relative to the repository root: src/main.ts, or a test-only entry
 * that wires the same service with a fault switch (test/support/faulty-service-main.ts); or a
 * command line to run instead, such as `npm start`.
 */
export async function startServiceProcess(
  env: Record<string, string>,
  timeoutMs = 60_000,
  entry: string | { readonly command: string; readonly args: readonly string[] } = "src/main.ts",
): Promise<ServiceProcess> {
  const [command, args] = typeof entry === "string" ? [process.execPath, ["--import", "tsx", entry]] : [entry.command, [...entry.args]];
  const child = spawn(command, args, {
    cwd: repoRoot,
    // As `npm start` runs it: the embedded engine's statements each hold a libuv thread.
    env: { UV_THREADPOOL_SIZE: "16", ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: Record<string, unknown>[] = [];
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  };

  let timer: NodeJS.Timeout | undefined;
  try {
    const port = await new Promise<number>((resolve, reject) => {
      createInterface({ input: child.stdout! }).on("line", (line) => {
        let entry: Record<string, unknown>;
        try {
          entry = JSON.parse(line) as Record<string, unknown>;
        } catch {
          return;
        }
        logs.push(entry);
        if (typeof entry.port === "number" && entry.msg === "serving gRPC, gRPC-Web and Connect") resolve(entry.port);
      });
      void exited.then((code) => reject(new Error(`service exited with ${code} before serving: ${stderr}`)));
      child.once("error", reject);
      timer = setTimeout(() => reject(new Error(`service did not serve within ${timeoutMs} ms: ${stderr}`)), timeoutMs);
    });
    return {
      child,
      exited,
      port,
      target: `127.0.0.1:${port}`,
      logs,
      stderr: () => stderr,
      kill,
      async stop(stopTimeoutMs = 20_000) {
        if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
        child.kill("SIGTERM");
        let killTimer: NodeJS.Timeout | undefined;
        const killed = new Promise<void>((resolve) => {
          killTimer = setTimeout(() => {
            kill();
            resolve();
          }, stopTimeoutMs);
        });
        await Promise.race([exited, killed]);
        clearTimeout(killTimer);
        return exited;
      },
    };
  } catch (error) {
    kill();
    throw error;
  } finally {
    clearTimeout(timer);
  }
}
