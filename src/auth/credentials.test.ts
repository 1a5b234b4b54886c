import { mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import {
  addApiKey,
  addDevice,
  CredentialsFileError,
  emptyCredentials,
  hashSecret,
  readCredentials,
  revokeApiKey,
  revokeDevice,
  writeCredentials,
} from "./credentials.js";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const run = promisify(execFile);

describe("credentials", () => {
  it("keeps only hashes of secrets, in a file readable by its owner only", () => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), "ws-cred-")), "credentials.json");
    const { credentials, token } = addDevice(emptyCredentials(), "ev-1");
    const { credentials: withKey, key } = addApiKey(credentials, "acme", { role: "partner", devices: ["ev-1"] });
    writeCredentials(file, withKey);
    const text = readFileSync(file, "utf8");
    expect(text).not.toContain(token);
    expect(text).not.toContain(key);
    expect(text).toContain(hashSecret(token));
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(readCredentials(file)).toEqual(JSON.parse(JSON.stringify(withKey)));
  });

  it("rotates a device's token: a second token, then the first revoked alone", () => {
    const first = addDevice(emptyCredentials(), "ev-1", { fleet: "acme" });
    const second = addDevice(first.credentials, "ev-1");
    expect(second.credentials.devices["ev-1"]!.tokens.map((t) => t.id)).toEqual([first.tokenId, second.tokenId]);
    expect(second.credentials.devices["ev-1"]!.fleet).toBe("acme");
    const rotated = revokeDevice(second.credentials, "ev-1", { tokenId: first.tokenId });
    expect(rotated.devices["ev-1"]!.tokens.map((t) => t.id)).toEqual([second.tokenId]);
    expect(rotated.devices["ev-1"]!.revokedAt).toBeUndefined();
  });

  it("revokes a device wholly, and re-admits it only with a fresh token", () => {
    const added = addDevice(emptyCredentials(), "ev-1");
    const revoked = revokeDevice(added.credentials, "ev-1");
    expect(revoked.devices["ev-1"]!.tokens).toEqual([]);
    expect(revoked.devices["ev-1"]!.revokedAt).toBeDefined();
    const readmitted = addDevice(revoked, "ev-1");
    expect(readmitted.credentials.devices["ev-1"]!.tokens.map((t) => t.id)).toEqual([readmitted.tokenId]);
  });

  it("refuses unscoped partner keys, scoped operator keys, duplicate names and bad ids", () => {
    expect(() => addApiKey(emptyCredentials(), "p", { role: "partner" })).toThrow(/needs a scope/);
    expect(() => addApiKey(emptyCredentials(), "o", { role: "operator", fleets: ["x"] })).toThrow(/whole fleet/);
    const { credentials } = addApiKey(emptyCredentials(), "o", { role: "operator" });
    expect(() => addApiKey(credentials, "o", { role: "operator" })).toThrow(/revoke it first/);
    expect(addApiKey(revokeApiKey(credentials, "o"), "o", { role: "operator" }).key).toMatch(/^wsk_/);
    expect(() => addDevice(emptyCredentials(), "has space")).toThrow(/printable/);
    expect(() => addDevice(emptyCredentials(), "")).toThrow(/printable/);
    expect(() => revokeDevice(emptyCredentials(), "ghost")).toThrow(/no device/);
  });

  it("keeps every device that `npm run devices` processes add at once, and says why it cannot read a file", async () => {
    const dir = mkdtempSync(path.join(tmpdir(), "ws-cred-"));
    const file = path.join(dir, "credentials.json");
    const cli = (...args: string[]) => run(process.execPath, ["--import", "tsx", "src/cli/devices.ts", "--file", file, ...args], { cwd: repoRoot });
    const ids = Array.from({ length: 8 }, (_, i) => `meter-${i}`);
    const printed = await Promise.all(ids.map((id) => cli("add", id)));
    const stored = readCredentials(file);
    expect(Object.keys(stored.devices).sort()).toEqual([...ids].sort());
    // Each token printed is one the file keeps.
    ids.forEach((id, i) => expect(stored.devices[id]!.tokens[0]!.sha256).toBe(hashSecret(printed[i]!.stdout.trim())));

    const folder = path.join(dir, "a-folder");
    mkdirSync(folder);
    const failed = await run(process.execPath, ["--import", "tsx", "src/cli/devices.ts", "--file", folder, "list"], { cwd: repoRoot }).catch((error: { code: number; stderr: string }) => error);
    expect(failed).toMatchObject({ code: 2 });
    expect((failed as { stderr: string }).stderr.trim()).toBe(`devices: cannot read ${folder} (EISDIR)`);
    expect(() => readCredentials(folder)).toThrow(CredentialsFileError);
  }, 60_000);
});
