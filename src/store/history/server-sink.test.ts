// The history sink against a ClickHouse server, through the real @clickhouse/client over HTTP. No
// server runs here (Debian's is from 2018), so a minimal HTTP endpoint stands in for one: it only
// records each INSERT's dedupe token and holds the first attempt of a block, the fault a real
// server cannot be made to produce on demand (an attempt still running after the batcher gave up).
import http from "node:http";
import type { AddressInfo } from "node:net";
import { createClient } from "@clickhouse/client";
import { afterEach, describe, expect, it } from "vitest";
import { createHistorySink } from "./history-sink.js";

interface Endpoint {
  readonly url: string;
  /** Most INSERTs of one token running at once, by token. */
  readonly mostAtOnce: Map<string, number>;
  /** Holds the next INSERT of this token until released. */
  hold(token: string): () => void;
  close(): Promise<void>;
}

async function startEndpoint(): Promise<Endpoint> {
  const running = new Map<string, number>();
  const mostAtOnce = new Map<string, number>();
  const holds = new Map<string, Promise<void>>();
  const server = http.createServer((request, response) => {
    const token = new URL(request.url ?? "/", "http://x").searchParams.get("insert_deduplication_token") ?? "";
    request.resume();
    request.on("end", async () => {
      const now = (running.get(token) ?? 0) + 1;
      running.set(token, now);
      mostAtOnce.set(token, Math.max(mostAtOnce.get(token) ?? 0, now));
      const held = holds.get(token);
      holds.delete(token);
      await held;
      running.set(token, running.get(token)! - 1);
      response.writeHead(200, { "content-type": "text/plain" }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    mostAtOnce,
    hold(token) {
      let release!: () => void;
      holds.set(token, new Promise<void>((resolve) => (release = resolve)));
      return release;
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

let endpoint: Endpoint | undefined;
afterEach(async () => {
  await endpoint?.close();
});

describe("the history sink against a server", () => {
  it("sends a retry of a block only after the attempt before it has ended, and other blocks meanwhile", async () => {
    endpoint = await startEndpoint();
    const client = createClient({ url: endpoint.url });
    const sink = await createHistorySink({ client, embedded: false, database: "default", recoveredInserts: 0, heldBoundStatementMs: () => 0 });
    const payload = Buffer.from([1, 2, 3]);

    const release = endpoint.hold("block-a");
    const first = sink.insert("meter", payload, "block-a");
    await new Promise((resolve) => setTimeout(resolve, 100));
    // The batcher's retry after giving up on the first attempt, and another block meanwhile.
    const retry = sink.insert("meter", payload, "block-a");
    await sink.insert("meter", payload, "block-b");
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(endpoint.mostAtOnce.get("block-a")).toBe(1);

    release();
    await Promise.all([first, retry]);
    expect(endpoint.mostAtOnce.get("block-a")).toBe(1);
    expect(endpoint.mostAtOnce.get("block-b")).toBe(1);
    await client.close();
  });
});
