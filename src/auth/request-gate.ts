// The check every call passes before its body is read: who is calling (UNAUTHENTICATED if no one
// valid) and whether the method's scope is theirs (PERMISSION_DENIED if not). A refused call costs
// no decoding, so a caller without credentials cannot make the service parse a large body.
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import type { Authenticator } from "./authenticator.js";
import { ANONYMOUS, peerCertificateKey, principalKey, type Scope } from "./principal.js";

/** A method's required scope, or "public" (health checks, reflection: load balancers and tools). */
type Requirement = Scope | "public";

/** Requirements by service, then by method; "*" covers a service's other methods. */
export type AccessPolicy = Readonly<Record<string, Readonly<Record<string, Requirement>>>>;

/** Told of every call the gate refuses, with its code ("unauthenticated", "permission_denied"). */
export type DenialObserver = (code: string, service: string) => void;

export function createRequestGate(policy: AccessPolicy, authenticator: Authenticator | undefined, onDenied: DenialObserver = () => {}) {
  return (context: HandlerContext): void => {
    if (authenticator === undefined) {
      context.values.set(principalKey, ANONYMOUS);
      return;
    }
    try {
      admit(context, policy, authenticator);
    } catch (error) {
      if (error instanceof ConnectError) onDenied(error.code === Code.Unauthenticated ? "unauthenticated" : "permission_denied", context.service.typeName);
      throw error;
    }
  };
}

function admit(context: HandlerContext, policy: AccessPolicy, authenticator: Authenticator): void {
  const methods = policy[context.service.typeName];
  // A method the policy does not name is refused: new methods must be given a scope deliberately.
  const required = methods?.[context.method.name] ?? methods?.["*"];
  if (required === "public") return;
  const principal = authenticator.authenticate({
    authorization: context.requestHeader.get("authorization"),
    apiKey: context.requestHeader.get("x-api-key"),
    peerCertificate: context.values.get(peerCertificateKey),
  });
  if (required === undefined || !principal.scopes.has(required)) {
    const who = principal.kind === "device" ? `device ${principal.deviceId}` : principal.kind === "api-key" ? `key ${principal.name} (${principal.role})` : "caller";
    throw new ConnectError(
      `${who} may not call ${context.service.typeName}.${context.method.name}${required === undefined ? "" : ` (needs scope ${required})`}`,
      Code.PermissionDenied,
    );
  }
  context.values.set(principalKey, principal);
}
