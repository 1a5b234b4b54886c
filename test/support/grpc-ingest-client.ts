// A stock @grpc/grpc-js client for IngestService, with protobuf-es doing the (de)serialisation —
// the way firmware with any gRPC stack and generated messages talks to the service.
import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  IngestReadingsRequestSchema,
  IngestReadingsResponseSchema,
  StreamReadingsRequestSchema,
  StreamReadingsResponseSchema,
  type IngestReadingsResponse,
  type StreamReadingsRequest,
  type StreamReadingsResponse,
} from "../../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import type { Reading } from "../../gen/wattstream/telemetry/v1/reading_pb.js";

function method<I extends DescMessage, O extends DescMessage>(name: string, input: I, output: O, requestStream: boolean) {
  return {
    path: `/wattstream.telemetry.v1.IngestService/${name}`,
    requestStream,
    responseStream: false,
    requestSerialize: (message: MessageShape<I>) => Buffer.from(toBinary(input, message)),
    requestDeserialize: (bytes: Buffer) => fromBinary(input, bytes),
    responseSerialize: (message: MessageShape<O>) => Buffer.from(toBinary(output, message)),
    responseDeserialize: (bytes: Buffer) => fromBinary(output, bytes),
  };
}

const IngestServiceDefinition = {
  streamReadings: method("StreamReadings", StreamReadingsRequestSchema, StreamReadingsResponseSchema, true),
  ingestReadings: method("IngestReadings", IngestReadingsRequestSchema, IngestReadingsResponseSchema, false),
};

const IngestClientConstructor = grpc.makeGenericClientConstructor(IngestServiceDefinition, "IngestService");

export interface GrpcIngestClientOptions {
  /** Headers sent with every call (e.g. `authorization: Bearer <device token>`). */
  readonly headers?: Record<string, string>;
  /** Channel credentials; cleartext by default. */
  readonly credentials?: grpc.ChannelCredentials;
  /** Channel options (e.g. grpc.ssl_target_name_override). */
  readonly channelOptions?: grpc.ChannelOptions;
}

export class GrpcIngestClient {
  private readonly client: grpc.Client & Record<string, (...args: unknown[]) => unknown>;
  private readonly metadata = new grpc.Metadata();

  constructor(target: string, options: GrpcIngestClientOptions = {}) {
    this.client = new IngestClientConstructor(target, options.credentials ?? grpc.credentials.createInsecure(), options.channelOptions) as never;
    for (const [key, value] of Object.entries(options.headers ?? {})) this.metadata.set(key, value);
  }

  /** Opens a StreamReadings call: write messages as you go, then end() resolves its summary. */
  openStream(): { write(readings: Reading[]): void; end(): Promise<StreamReadingsResponse>; readonly response: Promise<StreamReadingsResponse> } {
    let settle!: { resolve: (r: StreamReadingsResponse) => void; reject: (e: Error) => void };
    const response = new Promise<StreamReadingsResponse>((resolve, reject) => (settle = { resolve, reject }));
    const call = this.client.streamReadings(this.metadata, (error: grpc.ServiceError | null, reply: StreamReadingsResponse) =>
      error ? settle.reject(error) : settle.resolve(reply),
    ) as grpc.ClientWritableStream<StreamReadingsRequest>;
    // Observed, so a test that abandons the stream without awaiting it leaves no unhandled rejection.
    response.catch(() => {});
    return {
      response,
      write: (readings) => call.write(create(StreamReadingsRequestSchema, { readings })),
      end: () => {
        call.end();
        return response;
      },
    };
  }

  /** Streams the messages over one StreamReadings call and resolves its summary. */
  streamReadings(messages: readonly Reading[][]): Promise<StreamReadingsResponse> {
    const stream = this.openStream();
    for (const readings of messages) stream.write(readings);
    return stream.end();
  }

  ingestReadings(readings: readonly Reading[]): Promise<IngestReadingsResponse> {
    return new Promise((resolve, reject) => {
      this.client.ingestReadings(create(IngestReadingsRequestSchema, { readings: [...readings] }), this.metadata, (error: grpc.ServiceError | null, response: IngestReadingsResponse) =>
        error ? reject(error) : resolve(response),
      );
    });
  }

  close(): void {
    this.client.close();
  }
}
