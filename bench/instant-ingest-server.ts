// A gRPC server that answers every IngestReadings call at once, storing nothing: the `fleet`
// scenario runs its load against it for a few seconds before the service starts, so the figures say
// how much of the acknowledgement latency is the load generator's own (its client, its event loop,
// the machine) and not the service's. Prints its port, then serves until it is killed.
//   node --import tsx bench/instant-ingest-server.ts
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { IngestReadingsResponseSchema } from "../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { scanReadings } from "../src/pipeline/received-reading.js";

const ENVELOPE_HEADER_BYTES = 5;

function envelope(message: Uint8Array): Buffer {
  const framed = Buffer.alloc(ENVELOPE_HEADER_BYTES + message.byteLength);
  framed.writeUInt32BE(message.byteLength, 1);
  framed.set(message, ENVELOPE_HEADER_BYTES);
  return framed;
}

const server = http2.createServer();
server.on("connection", (socket: import("node:net").Socket) => socket.setNoDelay(true));
server.on("stream", (stream) => {
  const chunks: Buffer[] = [];
  stream.on("data", (chunk: Buffer) => chunks.push(chunk));
  stream.on("end", () => {
    // Every reading accepted, as the service would answer a batch of new ones.
    const body = Buffer.concat(chunks).subarray(ENVELOPE_HEADER_BYTES);
    const accepted = BigInt(scanReadings(body).readings.length);
    stream.respond({ ":status": 200, "content-type": "application/grpc+proto" }, { waitForTrailers: true });
    stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.end(envelope(toBinary(IngestReadingsResponseSchema, create(IngestReadingsResponseSchema, { accepted }))));
  });
  stream.on("error", () => {});
});
server.listen(0, "127.0.0.1", () => console.log(JSON.stringify({ port: (server.address() as AddressInfo).port })));
