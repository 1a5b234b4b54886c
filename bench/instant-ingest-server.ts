// A gRPC server that answers every IngestReadings call at once, storing nothing: after the `fleet`
// scenario's service has stopped, its load runs against this for a few seconds, so the figures say
// how much of the acknowledgement latency is the load generator's own (its client, its event loop,
// the machine) and not the service's. Runs in the bench's own process, which is idle meanwhile.
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { IngestReadingsResponseSchema } from "../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { scanReadings } from "../src/pipeline/received-reading.js";

/** A gRPC message's prefix: a flags byte (0: not compressed) and its length. */
export const ENVELOPE_HEADER_BYTES = 5;

/** One uncompressed gRPC message, as it goes on the wire. */
export function grpcEnvelope(message: Uint8Array): Buffer {
  const framed = Buffer.alloc(ENVELOPE_HEADER_BYTES + message.byteLength);
  framed.writeUInt32BE(message.byteLength, 1);
  framed.set(message, ENVELOPE_HEADER_BYTES);
  return framed;
}

export interface InstantIngestServer {
  /** host:port to give the load generator. */
  readonly target: string;
  close(): Promise<void>;
}

export async function startInstantIngestServer(): Promise<InstantIngestServer> {
  const server = http2.createServer();
  server.on("connection", (socket: import("node:net").Socket) => socket.setNoDelay(true));
  server.on("stream", (stream) => {
    const chunks: Buffer[] = [];
    stream.on("data", (chunk: Buffer) => chunks.push(chunk));
    stream.on("end", () => {
      // Every reading accepted, as the service would answer a batch of new ones.
      const accepted = BigInt(scanReadings(Buffer.concat(chunks).subarray(ENVELOPE_HEADER_BYTES)).readings.length);
      stream.respond({ ":status": 200, "content-type": "application/grpc+proto" }, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(grpcEnvelope(toBinary(IngestReadingsResponseSchema, create(IngestReadingsResponseSchema, { accepted }))));
    });
    stream.on("error", () => {});
  });
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    target: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise((resolve) => {
        for (const session of sessions) session.destroy();
        server.close(() => resolve());
      }),
  };
}
