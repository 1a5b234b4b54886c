// The certificate, key and client CA that TLS_CERT, TLS_KEY and TLS_CLIENT_CA name, read and
// checked before the service opens anything else, so a wrong file stops it at once with the
// variable to fix rather than after the stores have opened, with a bare ENOENT or PEM error.
import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { createSecureContext } from "node:tls";
import { StartupError } from "../config.js";

export interface TlsMaterial {
  readonly cert: Buffer;
  readonly key: Buffer;
  /** PEM CA bundle for client certificates, when TLS_CLIENT_CA is set. */
  readonly clientCa?: Buffer | undefined;
}

function readPem(variable: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (error) {
    throw new StartupError(variable, `cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`, { cause: error });
  }
}

function check(variable: string, file: string, parse: () => unknown, what: string): void {
  try {
    parse();
  } catch (error) {
    throw new StartupError(variable, `${file} holds no usable PEM ${what} (${(error as Error).message})`, { cause: error });
  }
}

/** Reads and checks the files; undefined without TLS. Throws StartupError naming the variable. */
export function readTlsMaterial(tls: { readonly certFile: string; readonly keyFile: string } | undefined, clientCaFile: string | undefined): TlsMaterial | undefined {
  if (tls === undefined) return undefined;
  const cert = readPem("TLS_CERT", tls.certFile);
  const key = readPem("TLS_KEY", tls.keyFile);
  check("TLS_CERT", tls.certFile, () => new X509Certificate(cert), "certificate");
  check("TLS_KEY", tls.keyFile, () => createPrivateKey(key), "private key");
  try {
    createSecureContext({ cert, key });
  } catch (error) {
    throw new StartupError("TLS_CERT and TLS_KEY", `the key in ${tls.keyFile} does not go with the certificate in ${tls.certFile} (${(error as Error).message})`, { cause: error });
  }
  if (clientCaFile === undefined) return { cert, key };
  const clientCa = readPem("TLS_CLIENT_CA", clientCaFile);
  check("TLS_CLIENT_CA", clientCaFile, () => new X509Certificate(clientCa), "CA certificate");
  return { cert, key, clientCa };
}
