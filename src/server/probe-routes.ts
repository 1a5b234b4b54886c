// Plain HTTP routes beside the RPC routes, for load balancers, orchestrators and Prometheus:
// GET /healthz — the process is alive; GET /readyz — storage answers, so calls can succeed;
// GET /metrics — Prometheus text.
import type { Registry } from "prom-client";
import type { RequestHandler } from "./listener.js";

export type ReadinessCheck = () => Promise<void>;

export function probeHandler(isReady: ReadinessCheck, metrics: Registry): RequestHandler {
  return (req, res) => {
    const path = (req.url ?? "").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") return reply(res, 404, { error: "not found" });
    if (path === "/healthz") return reply(res, 200, { status: "ok" });
    if (path === "/metrics") {
      metrics.metrics().then(
        (text) => {
          res.writeHead(200, { "content-type": metrics.contentType });
          res.end(text);
        },
        () => reply(res, 500, { error: "metrics unavailable" }),
      );
      return;
    }
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
