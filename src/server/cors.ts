// Lets pages of other origins call the service from a browser (CORS_ORIGINS): a team's own
// dashboard on https://dash.example.com using Connect-Web, say. Preflights are answered here; the
// headers allowed and exposed are the ones connect's protocols use (connect's `cors` constants),
// plus the service's own: its credentials in, its retry hints out. Operators' keys travel in a
// header, never in cookies, so no credentials mode is allowed.
import { cors as connectCors } from "@connectrpc/connect";
import corsMiddleware from "cors";
import type { RequestHandler } from "./listener.js";

/** How long a browser may keep a preflight's answer, in seconds. */
const PREFLIGHT_MAX_AGE_S = 7_200;

/** `handler` with CORS for `origins` (["*"] for any); `handler` itself when there are none. */
export function withCors(origins: readonly string[], handler: RequestHandler): RequestHandler {
  if (origins.length === 0) return handler;
  const cors = corsMiddleware({
    origin: origins[0] === "*" ? "*" : [...origins],
    methods: [...connectCors.allowedMethods],
    allowedHeaders: [...connectCors.allowedHeaders, "Authorization", "X-Api-Key"],
    exposedHeaders: [...connectCors.exposedHeaders, "Retry-After", "Grpc-Retry-Pushback-Ms"],
    maxAge: PREFLIGHT_MAX_AGE_S,
  });
  return (req, res) => {
    // Browsers send Origin with every cross-origin call; devices and backends do not, and their
    // calls (the lean gRPC streams among them) pass untouched.
    if (req.headers.origin === undefined) return handler(req, res);
    cors(req as Parameters<typeof cors>[0], res as unknown as Parameters<typeof cors>[1], () => handler(req, res));
  };
}
