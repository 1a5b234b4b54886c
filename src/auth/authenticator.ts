// Turns a call's credentials into a Principal, against the credentials file as it is now: the file
// is re-read whenever it changes, so a device added or revoked with `npm run devices` counts within
// a second or two, in every service process reading the same file, without a restart.
import { unwatchFile, watchFile } from "node:fs";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import {
  API_KEY_PREFIX,
  DEVICE_TOKEN_PREFIX,
  deviceRecord,
  emptyCredentials,
  hashSecret,
  readCredentials,
  type Credentials,
} from "./credentials.js";
import type { PeerCertificate, Principal, Scope } from "./principal.js";

const DEVICE_SCOPES: ReadonlySet<Scope> = new Set(["readings:write"]);
const ROLE_SCOPES: Record<"partner" | "operator", ReadonlySet<Scope>> = {
  partner: new Set(["devices:read"]),
  operator: new Set(["fleet:read", "fleet:write", "devices:read"]),
};

/** How often the file's modification time is checked. */
const RELOAD_POLL_MS = 1_000;

export interface CallCredentials {
  /** The `authorization` header (`Bearer <token>`). */
  readonly authorization: string | null;
  /** The `x-api-key` header. */
  readonly apiKey: string | null;
  readonly peerCertificate: () => PeerCertificate | undefined;
}

export class Authenticator {
  private credentials: Credentials = emptyCredentials();
  private principals = new Map<string, Principal>();

  constructor(
    private readonly file: string,
    private readonly log: Logger,
  ) {}

  /** Reads the file, then follows its changes. Throws when the file exists but cannot be used. */
  start(): void {
    this.load(readCredentials(this.file));
    watchFile(this.file, { interval: RELOAD_POLL_MS, persistent: false }, () => this.reload());
  }

  stop(): void {
    unwatchFile(this.file);
  }

  /** Registered devices and live keys, for the start-up log. */
  get counts(): { devices: number; apiKeys: number } {
    const devices = Object.values(this.credentials.devices).filter((d) => d.revokedAt === undefined).length;
    const apiKeys = Object.values(this.credentials.apiKeys).filter((k) => k.revokedAt === undefined).length;
    return { devices, apiKeys };
  }

  /** The fleet a registered device belongs to. */
  fleetOf(deviceId: string): string | undefined {
    return deviceRecord(this.credentials, deviceId)?.fleet;
  }

  /** Throws UNAUTHENTICATED when the call carries no credential or one that is not (or no longer) valid. */
  authenticate(call: CallCredentials): Principal {
    const secret = bearer(call.authorization) ?? call.apiKey?.trim();
    if (secret !== undefined && secret !== "") {
      if (!secret.startsWith(DEVICE_TOKEN_PREFIX) && !secret.startsWith(API_KEY_PREFIX)) {
        throw unauthenticated("the credential is not a wattstream device token (wsd_…) or API key (wsk_…)");
      }
      const principal = this.principals.get(hashSecret(secret));
      if (principal === undefined) throw unauthenticated("the credential is unknown or revoked");
      return principal;
    }
    const certificate = call.peerCertificate();
    if (certificate !== undefined && certificate.commonName !== undefined) {
      if (!certificate.verified) throw unauthenticated(`the client certificate is not trusted: ${certificate.error ?? "unverified"}`);
      const deviceId = certificate.commonName;
      const device = deviceRecord(this.credentials, deviceId);
      if (device === undefined || device.revokedAt !== undefined) {
        throw unauthenticated(`the client certificate names device ${JSON.stringify(deviceId)}, which is not registered or is revoked`);
      }
      return { kind: "device", deviceId, via: "certificate", credential: "certificate", scopes: DEVICE_SCOPES };
    }
    throw unauthenticated(
      "no credentials: devices send `authorization: Bearer <device token>` (or a client certificate), partners and operators `x-api-key: <key>`",
    );
  }

  /** Whether a principal authenticated earlier is still valid now (checked as long streams go on). */
  isStillValid(principal: Principal): boolean {
    switch (principal.kind) {
      case "anonymous":
        return true;
      case "device":
        if (principal.via === "certificate") {
          const device = deviceRecord(this.credentials, principal.deviceId);
          return device !== undefined && device.revokedAt === undefined;
        }
        return this.principals.has(principal.credential);
      case "api-key":
        return this.principals.has(principal.credential);
    }
  }

  /** Whether the principal may read the device. */
  mayRead(principal: Principal, deviceId: string): boolean {
    if (principal.kind === "device") return false;
    const scope = principal.deviceScope;
    if (scope.everyDevice || scope.devices.has(deviceId)) return true;
    const fleet = this.fleetOf(deviceId);
    return fleet !== undefined && scope.fleets.has(fleet);
  }

  private reload(): void {
    try {
      this.load(readCredentials(this.file));
      this.log.info(this.counts, "credentials reloaded");
    } catch (error) {
      // Keep serving with what was valid before; an operator fixing the file fixes this.
      this.log.error({ err: error, file: this.file }, "credentials file unreadable; keeping the previous credentials");
    }
  }

  private load(credentials: Credentials): void {
    const principals = new Map<string, Principal>();
    for (const [deviceId, device] of Object.entries(credentials.devices)) {
      if (device.revokedAt !== undefined) continue;
      for (const token of device.tokens) {
        principals.set(token.sha256, { kind: "device", deviceId, via: "token", credential: token.sha256, scopes: DEVICE_SCOPES });
      }
    }
    for (const [name, key] of Object.entries(credentials.apiKeys)) {
      if (key.revokedAt !== undefined || key.token === undefined) continue;
      principals.set(key.token.sha256, {
        kind: "api-key",
        name,
        role: key.role,
        credential: key.token.sha256,
        scopes: ROLE_SCOPES[key.role],
        deviceScope: { everyDevice: key.role === "operator", devices: new Set(key.devices), fleets: new Set(key.fleets) },
      });
    }
    this.credentials = credentials;
    this.principals = principals;
  }
}

function bearer(header: string | null): string | undefined {
  if (header === null) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

function unauthenticated(message: string): ConnectError {
  return new ConnectError(message, Code.Unauthenticated);
}
