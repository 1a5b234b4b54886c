// A throwaway server certificate for localhost and 127.0.0.1, made with openssl, for tests that
// serve TLS.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

export interface SelfSigned {
  /** PEM file paths, for TLS_CERT and TLS_KEY. */
  readonly certFile: string;
  readonly keyFile: string;
  /** The certificate itself, for a client to trust. */
  readonly ca: Buffer;
}

export function selfSignedCertificate(): SelfSigned {
  const dir = mkdtempSync(path.join(tmpdir(), "wattstream-tls-"));
  const [certFile, keyFile] = [path.join(dir, "cert.pem"), path.join(dir, "key.pem")];
  execFileSync("openssl", [
    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", keyFile, "-out", certFile,
  ], { stdio: "ignore" });
  return { certFile, keyFile, ca: readFileSync(certFile) };
}
