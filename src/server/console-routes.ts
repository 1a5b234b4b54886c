// The operator console (web/): GET /console/ is its page and /console/console.js its script,
// bundled from web/console.ts with esbuild when first asked for and kept in memory (nothing
// generated in the repository; esbuild is the service's own build tool, scripts/build.mjs). The page holds no data: every answer it shows comes from FleetService
// calls, which need an operator key when authentication is on.
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import type { RequestHandler } from "./listener.js";

const WEB_DIR = fileURLToPath(new URL("../../web/", import.meta.url));

const HEADERS = {
  "cache-control": "no-cache",
  "x-content-type-options": "nosniff",
  // Scripts and calls only from this origin; the page's one style block is inline.
  "content-security-policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
};

/** Serves the console; answers false for any other path, which the caller then serves. */
export function consoleHandler(log: Logger): (...args: Parameters<RequestHandler>) => boolean {
  let script: Promise<Uint8Array> | undefined;
  const bundle = () => {
    script ??= bundleConsole().catch((error: unknown) => {
      script = undefined;
      throw error;
    });
    return script;
  };
  return (req, res) => {
    const path = (req.url ?? "").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    if (path === "/" || path === "/console") {
      res.writeHead(302, { location: "/console/" });
      res.end();
      return true;
    }
    // Browsers ask for an icon on their own: none, rather than a 404 logged on every load.
    if (path === "/favicon.ico") {
      res.writeHead(204, { "cache-control": "max-age=86400" });
      res.end();
      return true;
    }
    const answer = (contentType: string, body: Promise<Uint8Array | string>) =>
      body.then(
        (content) => {
          res.writeHead(200, { ...HEADERS, "content-type": contentType });
          if (req.method === "HEAD") res.end();
          else res.end(content);
        },
        (error: unknown) => {
          log.error({ err: error, path }, "the console could not be served");
          res.writeHead(500, { "content-type": "text/plain; charset=utf-8" });
          res.end("the console could not be built; see the service's log");
        },
      );
    if (path === "/console/") {
      void answer("text/html; charset=utf-8", readFile(`${WEB_DIR}index.html`));
      return true;
    }
    if (path === "/console/console.js") {
      void answer("text/javascript; charset=utf-8", bundle());
      return true;
    }
    return false;
  };
}

async function bundleConsole(): Promise<Uint8Array> {
  // Loaded only here: a service whose console nobody opens never loads the bundler.
  const { build } = await import("esbuild");
  const result = await build({
    entryPoints: [`${WEB_DIR}console.ts`],
    bundle: true,
    write: false,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    legalComments: "none",
    logLevel: "silent",
  });
  return result.outputFiles[0]!.contents;
}
