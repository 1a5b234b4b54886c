// Plain HTTP probes for load balancers and orchestrators, beside the RPC routes:
// GET /healthz — the process is alive; GET /readyz — storage answers, so calls can succeed.
import type { RequestHandler } from "./listener.js";

export type ReadinessCheck = () => Promise<void>;

export function probeHandler(isReady: ReadinessCheck): RequestHandler {
  return (req, res) => {
    const path = (req.url ?? "").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") return reply(res, 404, { error: "not found" });
    if (path === "/healthz") return reply(res, 200, { status: "ok" });
    if (path === "/readyz") {
      isReady().then(
        () => reply(res, 200, { status: "ready" }),
        (error: unknown) => reply(res, 503, { status: "not ready", reason: error instanceof Error ? error.message : String(error) }),
      );
      return;
    }
    reply(res, 404, { error: "not found" });
  };
}

function reply(res: Parameters<RequestHandler>[1], status: number, body: object): void {
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store" });
  res.end(JSON.stringify(body));
}
