// Who a call comes from and what it may do. Permissions are scopes, as OAuth2 names them, so a
// later bearer-token issuer (OAuth2 client credentials, JWT) maps its scopes onto the same checks.
import { createContextKey } from "@connectrpc/connect";

export type Scope =
  /** Write readings for the caller's own device. */
  | "readings:write"
  /** Read fleet analytics and live state. */
  | "fleet:read"
  /** Change the fleet's configuration (vehicle–meter links). */
  | "fleet:write"
  /** Read the status of devices in the caller's device scope. */
  | "devices:read";

/** The devices a caller may read: every device, or those listed and those in the listed fleets. */
export interface DeviceScope {
  readonly everyDevice: boolean;
  readonly devices: ReadonlySet<string>;
  readonly fleets: ReadonlySet<string>;
}

export type Principal =
  | {
      readonly kind: "device";
      readonly deviceId: string;
      readonly via: "token" | "certificate";
      /** The token's hash, or "certificate": what must still be valid while a stream runs. */
      readonly credential: string;
      readonly scopes: ReadonlySet<Scope>;
    }
  | {
      readonly kind: "api-key";
      readonly name: string;
      readonly role: "partner" | "operator";
      readonly credential: string;
      readonly scopes: ReadonlySet<Scope>;
      readonly deviceScope: DeviceScope;
    }
  | {
      /** AUTH=off: local development, everything allowed. */
      readonly kind: "anonymous";
      readonly scopes: ReadonlySet<Scope>;
      readonly deviceScope: DeviceScope;
    };

export const ALL_SCOPES: ReadonlySet<Scope> = new Set(["readings:write", "fleet:read", "fleet:write", "devices:read"]);
export const EVERY_DEVICE: DeviceScope = { everyDevice: true, devices: new Set(), fleets: new Set() };

export const ANONYMOUS: Principal = { kind: "anonymous", scopes: ALL_SCOPES, deviceScope: EVERY_DEVICE };

/** The authenticated caller, set by the request gate before a handler runs. */
export const principalKey = createContextKey<Principal>(ANONYMOUS, { description: "authenticated caller" });

/** The client certificate's verified identity, read lazily from the TLS socket (unset without mTLS). */
export const peerCertificateKey = createContextKey<() => PeerCertificate | undefined>(() => undefined, {
  description: "client certificate",
});

export interface PeerCertificate {
  /** Whether the certificate chains to the configured client CA. */
  readonly verified: boolean;
  /** The subject's common name: the device id it names. */
  readonly commonName: string | undefined;
  /** Why verification failed, when it did. */
  readonly error: string | undefined;
}
