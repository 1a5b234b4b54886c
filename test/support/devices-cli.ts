// Runs `npm run devices` as an operator does (the real command-line tool, in its own process)
// against a given credentials file.
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const run = promisify(execFile);

/** Runs the tool and resolves its stdout (a printed secret, trimmed), or rejects with its stderr. */
export async function devicesCli(file: string, ...args: string[]): Promise<string> {
  const { stdout } = await run(process.execPath, ["--import", "tsx", "src/cli/devices.ts", "--file", file, ...args], { cwd: repoRoot });
  return stdout.trim();
}
