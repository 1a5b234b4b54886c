// The client certificate of a call over TLS, when the listener asked for one (TLS_CLIENT_CA).
import type http from "node:http";
import type http2 from "node:http2";
import { TLSSocket } from "node:tls";
import type { PeerCertificate } from "./principal.js";

export function peerCertificateOf(req: http.IncomingMessage | http2.Http2ServerRequest): PeerCertificate | undefined {
  // Over HTTP/2 the request's socket is a proxy; the session's socket is the TLS socket itself.
  const socket = ("stream" in req ? req.stream.session?.socket : undefined) ?? req.socket;
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
