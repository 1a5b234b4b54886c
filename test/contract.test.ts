// The contract check that `npm run lint:proto` runs: `buf breaking` against the published contract
// (proto/published.binpb). Clients generated from an earlier proto/ must keep working, so a change
// that would break them fails the check, and an addition passes it. Each case edits a copy of
// proto/ and runs the real buf against the real baseline.
import { execFile } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const buf = path.join(repoRoot, "node_modules/.bin/buf");
const run = promisify(execFile);
const FLEET_PROTO = "proto/wattstream/fleet/v1/fleet_service.proto";

/** A copy of the module with one file edited, checked as `lint:proto` checks the real one. */
async function breakingAfter(file: string, edit: (text: string) => string): Promise<{ ok: boolean; output: string }> {
  const copy = mkdtempSync(path.join(tmpdir(), "wattstream-contract-"));
  cpSync(path.join(repoRoot, "proto"), path.join(copy, "proto"), { recursive: true });
  cpSync(path.join(repoRoot, "buf.yaml"), path.join(copy, "buf.yaml"));
  const target = path.join(copy, file);
  const before = readFileSync(target, "utf8");
  const after = edit(before);
  expect(after).not.toBe(before);
  writeFileSync(target, after);
  try {
    const { stdout, stderr } = await run(buf, ["breaking", copy, "--against", path.join(repoRoot, "proto/published.binpb")]);
    return { ok: true, output: stdout + stderr };
  } catch (error) {
    const { stdout = "", stderr = "" } = error as { stdout?: string; stderr?: string };
    return { ok: false, output: stdout + stderr };
  }
}

describe("the published contract", () => {
  it("holds for proto/ as it is", async () => {
    const result = await breakingAfter(FLEET_PROTO, (text) => `${text}\n`);
    expect(result).toEqual({ ok: true, output: "" });
  });

  it("refuses a response field removed", async () => {
    const result = await breakingAfter(FLEET_PROTO, (text) => text.replace(/^\s*double efficiency_ratio = 3;$/m, "  reserved 3;"));
    expect(result.ok).toBe(false);
    expect(result.output).toMatch(/efficiency_ratio/);
  });

  it("refuses a field renumbered or an enum value renamed", async () => {
    const renumbered = await breakingAfter("proto/wattstream/telemetry/v1/reading.proto", (text) =>
      text.replace("string device_id = 2;", "string device_id = 20;"),
    );
    expect(renumbered.ok).toBe(false);
    expect(renumbered.output).toMatch(/device_id/);
    const renamed = await breakingAfter(FLEET_PROTO, (text) => text.replace("ALERT_KIND_LOW_EFFICIENCY = 1;", "ALERT_KIND_INEFFICIENT = 1;"));
    expect(renamed.ok).toBe(false);
    expect(renamed.output).toMatch(/ALERT_KIND_LOW_EFFICIENCY/);
  });

  it("lets a new field through", async () => {
    const result = await breakingAfter(FLEET_PROTO, (text) =>
      text.replace("  PerformanceAlert alert = 9;\n}", "  PerformanceAlert alert = 9;\n  // note is new.\n  string note = 10;\n}"),
    );
    expect(result).toEqual({ ok: true, output: "" });
  });
});
