import { mkdtempSync, readFileSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { addApiKey, addDevice, emptyCredentials, hashSecret, readCredentials, revokeApiKey, revokeDevice, writeCredentials } from "./credentials.js";

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
});
