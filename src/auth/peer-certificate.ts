// The client certificate of a call over TLS, when the listener asked for one (TLS_CLIENT_CA).
import { TLSSocket } from "node:tls";
import type { PeerCertificate } from "./principal.js";

/** `socket` is the connection's own socket (over HTTP/2 the session's, not a request's proxy of it). */
export function peerCertificateOf(socket: unknown): PeerCertificate | undefined {
  if (!(socket instanceof TLSSocket)) return undefined;
  const certificate = socket.getPeerCertificate();
  if (certificate === null || certificate === undefined || Object.keys(certificate).length === 0) return undefined;
  const cn = certificate.subject?.CN as string | string[] | undefined;
  return {
    verified: socket.authorized,
    commonName: Array.isArray(cn) ? cn[0] : cn,
    error: socket.authorizationError === null ? undefined : String(socket.authorizationError),
  };
}
