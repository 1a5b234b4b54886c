// Who may call: device tokens and API keys, kept in one JSON file that `npm run devices` edits and
// every service process reads (and re-reads when it changes). Secrets are stored only as SHA-256
// hashes: a token is 256 random bits, so a fast hash is as safe as a slow one (nothing to guess)
// and costs a microsecond per call instead of milliseconds.
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import lockfile from "proper-lockfile";

/** What an API key may do: partners read the status of devices in scope; operators run the fleet. */
export type ApiKeyRole = "partner" | "operator";

export interface TokenRecord {
  /** The first 8 hex digits of the hash: names a token in listings without revealing it. */
  readonly id: string;
  readonly sha256: string;
  readonly createdAt: string;
}

export interface DeviceRecord {
  /** The fleet the device belongs to, if any: partner keys can be scoped to fleets. */
  readonly fleet: string | undefined;
  readonly createdAt: string;
  /** Set once the device is revoked: its tokens are gone and a certificate naming it is refused. */
  readonly revokedAt: string | undefined;
  readonly tokens: readonly TokenRecord[];
}

export interface ApiKeyRecord {
  readonly role: ApiKeyRole;
  /** Devices a partner key may read; operators see every device. */
  readonly devices: readonly string[];
  /** Fleets a partner key may read (every device registered in them). */
  readonly fleets: readonly string[];
  readonly createdAt: string;
  readonly revokedAt: string | undefined;
  /** Absent once revoked. */
  readonly token: TokenRecord | undefined;
}

export interface Credentials {
  readonly devices: Readonly<Record<string, DeviceRecord>>;
  readonly apiKeys: Readonly<Record<string, ApiKeyRecord>>;
}

const FILE_VERSION = 1;
export const DEVICE_TOKEN_PREFIX = "wsd_";
export const API_KEY_PREFIX = "wsk_";

/**
 * The device registered under this id. Own entries only: the file parses to a plain object, where
 * ids such as "constructor" or "__proto__" would otherwise find Object.prototype's members.
 */
export function deviceRecord(credentials: Credentials, deviceId: string): DeviceRecord | undefined {
  return Object.hasOwn(credentials.devices, deviceId) ? credentials.devices[deviceId] : undefined;
}

/** The API key of this name, own entries only (see deviceRecord). */
export function apiKeyRecord(credentials: Credentials, name: string): ApiKeyRecord | undefined {
  return Object.hasOwn(credentials.apiKeys, name) ? credentials.apiKeys[name] : undefined;
}

export function emptyCredentials(): Credentials {
  return { devices: {}, apiKeys: {} };
}

export function hashSecret(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}

/** A new secret and the record that stores it. */
function issueSecret(prefix: string, now: Date): { secret: string; record: TokenRecord } {
  const secret = prefix + randomBytes(32).toString("base64url");
  const sha256 = hashSecret(secret);
  return { secret, record: { id: sha256.slice(0, 8), sha256, createdAt: now.toISOString() } };
}

/** A credentials file that cannot be used, with what is wrong. */
export class CredentialsFileError extends Error {
  override readonly name = "CredentialsFileError";
}

/** Reads the file; a file that does not exist yet holds no credentials. */
export function readCredentials(file: string): Credentials {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return emptyCredentials();
    throw new CredentialsFileError(`cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, { cause: error });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new CredentialsFileError(`${file} is not JSON: ${(error as Error).message}`);
  }
  const body = parsed as { version?: unknown; devices?: unknown; apiKeys?: unknown };
  if (body.version !== FILE_VERSION || typeof body.devices !== "object" || typeof body.apiKeys !== "object") {
    throw new CredentialsFileError(`${file} is not a version ${FILE_VERSION} wattstream credentials file`);
  }
  return { devices: body.devices as Credentials["devices"], apiKeys: body.apiKeys as Credentials["apiKeys"] };
}

/**
 * Replaces the file atomically (write, then rename), readable by its owner only, so a service
 * re-reading it never sees half a file.
 */
export function writeCredentials(file: string, credentials: Credentials): void {
  try {
    mkdirSync(path.dirname(file), { recursive: true });
    const temporary = `${file}.${process.pid}.tmp`;
    writeFileSync(temporary, JSON.stringify({ version: FILE_VERSION, ...credentials }, null, 2) + "\n", { mode: 0o600 });
    renameSync(temporary, file);
  } catch (error) {
    throw new CredentialsFileError(`cannot write ${file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, { cause: error });
  }
}

/**
 * Reads the file, applies `change` and writes the result, holding a lock (`FILE.lock`, a
 * directory) meanwhile: two runs at once would otherwise each write what they read, and the
 * later would drop the other's device — whose token it had already printed. A lock left by a
 * run that died is taken over after 10 s. Answers what `change` answered (addDevice's token, say).
 */
export async function updateCredentials<T extends { readonly credentials: Credentials }>(file: string, change: (credentials: Credentials) => T): Promise<T> {
  try {
    mkdirSync(path.dirname(file), { recursive: true });
  } catch (error) {
    throw new CredentialsFileError(`cannot create the folder of ${file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, { cause: error });
  }
  let release: () => Promise<void>;
  try {
    release = await lockfile.lock(file, { realpath: false, stale: 10_000, retries: { retries: 50, minTimeout: 20, maxTimeout: 200 } });
  } catch (error) {
    throw new CredentialsFileError(`cannot lock ${file} for a change (${(error as NodeJS.ErrnoException).code ?? (error as Error).message}): is another run still changing it?`, { cause: error });
  }
  try {
    const changed = change(readCredentials(file));
    writeCredentials(file, changed.credentials);
    return changed;
  } finally {
    await release();
  }
}

export const MAX_NAME_BYTES = 128;

/** Device ids, fleet names and key names: 1 to 128 bytes, printable, no spaces. */
export function checkName(what: string, name: string): void {
  if (name.length === 0 || Buffer.byteLength(name) > MAX_NAME_BYTES || !/^[\x21-\x7e]+$/.test(name)) {
    throw new CredentialsFileError(`${what} ${JSON.stringify(name)} must be 1 to ${MAX_NAME_BYTES} printable characters without spaces`);
  }
}

/**
 * Registers a device (or re-admits a revoked one) and issues it a token. A device already holding
 * tokens gets one more, so tokens can be rotated: issue, deploy, then revoke the old one by id.
 */
export function addDevice(
  credentials: Credentials,
  deviceId: string,
  options: { fleet?: string | undefined; now?: Date } = {},
): { credentials: Credentials; token: string; tokenId: string } {
  checkName("device id", deviceId);
  if (options.fleet !== undefined) checkName("fleet", options.fleet);
  const now = options.now ?? new Date();
  const existing = deviceRecord(credentials, deviceId);
  const { secret, record } = issueSecret(DEVICE_TOKEN_PREFIX, now);
  const device: DeviceRecord = {
    fleet: options.fleet ?? existing?.fleet,
    createdAt: existing?.createdAt ?? now.toISOString(),
    revokedAt: undefined,
    tokens: existing?.revokedAt === undefined ? [...(existing?.tokens ?? []), record] : [record],
  };
  return { credentials: { ...credentials, devices: { ...credentials.devices, [deviceId]: device } }, token: secret, tokenId: record.id };
}

/** Revokes one token of a device, or (no tokenId) the device itself: all its tokens and its certificate. */
export function revokeDevice(credentials: Credentials, deviceId: string, options: { tokenId?: string; now?: Date } = {}): Credentials {
  const device = deviceRecord(credentials, deviceId);
  if (device === undefined) throw new CredentialsFileError(`no device ${JSON.stringify(deviceId)} is registered`);
  let revoked: DeviceRecord;
  if (options.tokenId !== undefined) {
    if (!device.tokens.some((t) => t.id === options.tokenId)) {
      throw new CredentialsFileError(`device ${JSON.stringify(deviceId)} has no token ${JSON.stringify(options.tokenId)}`);
    }
    revoked = { ...device, tokens: device.tokens.filter((t) => t.id !== options.tokenId) };
  } else {
    revoked = { ...device, tokens: [], revokedAt: (options.now ?? new Date()).toISOString() };
  }
  return { ...credentials, devices: { ...credentials.devices, [deviceId]: revoked } };
}

/** Issues an API key; a name already in use is refused (revoke it first to replace it). */
export function addApiKey(
  credentials: Credentials,
  name: string,
  options: { role: ApiKeyRole; devices?: readonly string[]; fleets?: readonly string[]; now?: Date },
): { credentials: Credentials; key: string; keyId: string } {
  checkName("key name", name);
  const devices = options.devices ?? [];
  const fleets = options.fleets ?? [];
  devices.forEach((d) => checkName("device id", d));
  fleets.forEach((f) => checkName("fleet", f));
  if (options.role === "partner" && devices.length === 0 && fleets.length === 0) {
    throw new CredentialsFileError("a partner key needs a scope: at least one --device or --fleet");
  }
  if (options.role === "operator" && (devices.length > 0 || fleets.length > 0)) {
    throw new CredentialsFileError("an operator key sees the whole fleet; --device and --fleet are for partner keys");
  }
  const existing = apiKeyRecord(credentials, name);
  if (existing !== undefined && existing.revokedAt === undefined) {
    throw new CredentialsFileError(`a key named ${JSON.stringify(name)} exists; revoke it first to replace it`);
  }
  const now = options.now ?? new Date();
  const { secret, record } = issueSecret(API_KEY_PREFIX, now);
  const key: ApiKeyRecord = { role: options.role, devices, fleets, createdAt: now.toISOString(), revokedAt: undefined, token: record };
  return { credentials: { ...credentials, apiKeys: { ...credentials.apiKeys, [name]: key } }, key: secret, keyId: record.id };
}

export function revokeApiKey(credentials: Credentials, name: string, now: Date = new Date()): Credentials {
  const key = apiKeyRecord(credentials, name);
  if (key === undefined) throw new CredentialsFileError(`no key named ${JSON.stringify(name)}`);
  return { ...credentials, apiKeys: { ...credentials.apiKeys, [name]: { ...key, token: undefined, revokedAt: now.toISOString() } } };
}
