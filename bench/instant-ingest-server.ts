// A gRPC server that answers every IngestReadings call, and acknowledges every SyncReadings
// message, at once, storing nothing: after the `fleet` scenario's service has stopped, its load
// runs against this for a few seconds, so the figures say how much of the acknowledgement latency
// is the load generator's own (its client, its event loop, the machine) and not the service's.
// Runs in the bench's own process, which is idle meanwhile.
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { IngestReadingsResponseSchema, SyncReadingsResponseSchema } from "../gen/wattstream/telemetry/v1/ingest_service_pb.js";
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

const SYNC_PATH = "/wattstream.telemetry.v1.IngestService/SyncReadings";

/** A SyncReadings stream: each message acknowledged at once, its readings all accepted. */
function answerSync(stream: http2.ServerHttp2Stream): void {
  stream.respond({ ":status": 200, "content-type": "application/grpc+proto" }, { waitForTrailers: true });
  stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
  let pending: Buffer = Buffer.alloc(0);
  let acknowledged = 0n;
  stream.on("data", (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    // Every whole message received so far; a message split across chunks waits for its rest.
    while (pending.length >= ENVELOPE_HEADER_BYTES && pending.length >= ENVELOPE_HEADER_BYTES + pending.readUInt32BE(1)) {
      const end = ENVELOPE_HEADER_BYTES + pending.readUInt32BE(1);
      acknowledged += BigInt(scanReadings(pending.subarray(ENVELOPE_HEADER_BYTES, end)).readings.length);
      pending = pending.subarray(end);
      stream.write(grpcEnvelope(toBinary(SyncReadingsResponseSchema, create(SyncReadingsResponseSchema, { acknowledged, accepted: acknowledged }))));
    }
  });
  stream.on("end", () => stream.end());
  stream.on("error", () => {});
}

export interface InstantIngestServer {
  /** host:port to give the load generator. */
  readonly target: string;
  close(): Promise<void>;
}

export function startInstantIngestServer(): Promise<InstantIngestServer> {
  return startGrpcServer((stream, headers) => {
    if (headers[":path"] === SYNC_PATH) return answerSync(stream);
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
}

/**
 * A plain HTTP/2 server on a free local port that hands every stream to `onStream`, and whose
 * close ends every connection: what the instant server, and tests' servers that misbehave on
 * purpose, are built on.
 */
export async function startGrpcServer(
  onStream: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void,
): Promise<InstantIngestServer> {
  const server = http2.createServer();
  server.on("connection", (socket: import("node:net").Socket) => socket.setNoDelay(true));
  server.on("stream", onStream);
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
