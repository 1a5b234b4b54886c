import { createFileRegistry, fromBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import { createClient, type Client } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import { execFile } from "node:child_process";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import {
  ServerReflection,
  type ServerReflectionRequestSchema,
  type ServerReflectionResponse,
} from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { IngestService } from "../../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { HealthChecker, registerHealth } from "./health-service.js";
import { registerReflection } from "./reflection-service.js";

const run = promisify(execFile);
const bufCli = fileURLToPath(new URL("../../node_modules/.bin/buf", import.meta.url));

const server = http2.createServer(
  connectNodeAdapter({
    routes: (router) => {
      // Reflection needs only the descriptors; the ingest methods may stay unimplemented.
      router.service(IngestService, {});
      const services = [IngestService, Health];
      registerHealth(router, new HealthChecker({ services: services.map((s) => s.typeName), isReady: async () => true }));
      registerReflection(router, { services });
    },
  }),
);
const sessions = new Set<http2.ServerHttp2Session>();
server.on("session", (session) => sessions.add(session));
let baseUrl: string;
let client: Client<typeof ServerReflection>;

beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  baseUrl = `http://127.0.0.1:${port}`;
  client = createClient(ServerReflection, createGrpcTransport({ baseUrl }));
});

afterAll(async () => {
  // Clients keep their HTTP/2 connections open; close them from this side so close() can finish.
  for (const session of sessions) session.close();
  await new Promise<void>((resolve, reject) => server.close((error) => (error ? reject(error) : resolve())));
});

/** Runs `buf curl` over gRPC with HTTP/2 prior knowledge; resolves its exit code and output. */
async function bufCurl(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [bufCli, "curl", "--protocol", "grpc", "--http2-prior-knowledge", ...args]);
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    if (typeof failed.code !== "number") throw error;
    return { code: failed.code, stdout: failed.stdout ?? "", stderr: failed.stderr ?? "" };
  }
}

type Question = MessageInitShape<typeof ServerReflectionRequestSchema>;

/** Asks every question on one stream, in order, and collects the answers. */
async function ask(...questions: Question[]): Promise<ServerReflectionResponse[]> {
  async function* requests() {
    yield* questions;
  }
  const answers: ServerReflectionResponse[] = [];
  for await (const answer of client.serverReflectionInfo(requests())) answers.push(answer);
  return answers;
}

function decodedFiles(answer: ServerReflectionResponse): FileDescriptorProto[] {
  if (answer.messageResponse.case !== "fileDescriptorResponse") {
    throw new Error(`expected files, got ${answer.messageResponse.case}`);
  }
  return answer.messageResponse.value.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes));
}

describe("buf curl", () => {
  it("lists every served method, including health and reflection", async () => {
    const { code, stdout, stderr } = await bufCurl("--list-methods", baseUrl);
    expect(stderr).toBe("");
    expect(code).toBe(0);
    expect(stdout.trim().split("\n").sort()).toEqual(
      [
        "grpc.health.v1.Health/Check",
        "grpc.health.v1.Health/List",
        "grpc.health.v1.Health/Watch",
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "wattstream.telemetry.v1.IngestService/IngestReadings",
        "wattstream.telemetry.v1.IngestService/StreamReadings",
        "wattstream.telemetry.v1.IngestService/SyncReadings",
      ].sort(),
    );
  });

  it("lists every served service", async () => {
    // With reflection, buf curl lists from the base URL only; it cannot scope to one service.
    const { code, stdout } = await bufCurl("--list-services", baseUrl);
    expect(code).toBe(0);
    expect(stdout.trim().split("\n").sort()).toEqual(
      ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "wattstream.telemetry.v1.IngestService"].sort(),
    );
  });

  it("calls Health/Check from the reflected schema", async () => {
    const { code, stdout } = await bufCurl("--reflect", `${baseUrl}/grpc.health.v1.Health/Check`, "-d", "{}");
    expect(code).toBe(0);
    expect(JSON.parse(stdout)).toEqual({ status: "SERVING" });
  });

  it("encodes a request whose types come from imported files", async () => {
    // Reading.observed_at is a google.protobuf.Timestamp: encoding it proves the imports arrived.
    const body = JSON.stringify({ readings: [{ eventId: "e1", deviceId: "d1", observedAt: "2024-05-01T12:00:00Z", meter: { voltage: 230 } }] });
    const { code, stderr } = await bufCurl("--reflect", `${baseUrl}/wattstream.telemetry.v1.IngestService/IngestReadings`, "-d", body);
    // The server got a well-formed call; only the (deliberately missing) implementation failed.
    expect(code).not.toBe(0);
    expect(JSON.parse(stderr)).toMatchObject({ code: "unimplemented", message: expect.stringContaining("IngestReadings") });
  });
});

describe("ServerReflectionInfo", () => {
  it("answers file_containing_symbol with the file first, then its imports", async () => {
    const [answer] = await ask({ host: "example", messageRequest: { case: "fileContainingSymbol", value: "wattstream.telemetry.v1.Reading" } });
    expect(answer?.validHost).toBe("example");
    expect(answer?.originalRequest?.messageRequest).toEqual({ case: "fileContainingSymbol", value: "wattstream.telemetry.v1.Reading" });
    const names = decodedFiles(answer!).map((file) => file.name);
    expect(names[0]).toBe("wattstream/telemetry/v1/reading.proto");
    expect(names).toContain("google/protobuf/timestamp.proto");
  });

  it("finds services, methods, enums and nested enums, each file with every import once", async () => {
    const answers = await ask(
      { messageRequest: { case: "fileContainingSymbol", value: "wattstream.telemetry.v1.IngestService" } },
      { messageRequest: { case: "fileContainingSymbol", value: "wattstream.telemetry.v1.IngestService.IngestReadings" } },
      { messageRequest: { case: "fileContainingSymbol", value: "wattstream.telemetry.v1.RejectReason" } },
      { messageRequest: { case: "fileContainingSymbol", value: "grpc.health.v1.HealthCheckResponse.ServingStatus" } },
      { messageRequest: { case: "fileByFilename", value: "wattstream/telemetry/v1/ingest_service.proto" } },
    );
    expect(answers).toHaveLength(5);
    const [service, method, enumType, nestedEnum, byName] = answers.map((answer) => decodedFiles(answer).map((file) => file.name));
    const ingestFiles = ["wattstream/telemetry/v1/ingest_service.proto", "wattstream/telemetry/v1/reading.proto", "google/protobuf/timestamp.proto"];
    for (const names of [service, method, enumType, byName]) expect(names).toEqual(ingestFiles);
    expect(nestedEnum).toEqual(["grpc/health/v1/health.proto"]);
  });

  it("answers with descriptors a client can build a registry from", async () => {
    const [answer] = await ask({ messageRequest: { case: "fileByFilename", value: "wattstream/telemetry/v1/ingest_service.proto" } });
    const files = new Map(decodedFiles(answer!).map((file) => [file.name, file]));
    const registry = createFileRegistry(files.get("wattstream/telemetry/v1/ingest_service.proto")!, (name) => files.get(name));
    expect(registry.getMessage("wattstream.telemetry.v1.Reading")?.field.observedAt.message?.typeName).toBe("google.protobuf.Timestamp");
  });

  it("lists services", async () => {
    const [answer] = await ask({ messageRequest: { case: "listServices", value: "" } });
    expect(answer?.messageResponse.case).toBe("listServicesResponse");
    const names = answer?.messageResponse.case === "listServicesResponse" ? answer.messageResponse.value.service.map((s) => s.name) : [];
    expect(names.sort()).toEqual(["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "wattstream.telemetry.v1.IngestService"]);
  });

  it("answers unknown names with NOT_FOUND and keeps the stream going", async () => {
    const answers = await ask(
      { messageRequest: { case: "fileContainingSymbol", value: "wattstream.telemetry.v1.NoSuchThing" } },
      { messageRequest: { case: "fileByFilename", value: "no/such/file.proto" } },
      { messageRequest: { case: "fileContainingExtension", value: { containingType: "wattstream.telemetry.v1.Reading", extensionNumber: 100 } } },
      { messageRequest: { case: "allExtensionNumbersOfType", value: "wattstream.telemetry.v1.Reading" } },
      { messageRequest: { case: "fileContainingSymbol", value: "wattstream.telemetry.v1.Reading" } },
    );
    expect(answers.map((answer) => answer.messageResponse.case)).toEqual([
      "errorResponse",
      "errorResponse",
      "errorResponse",
      "allExtensionNumbersResponse",
      "fileDescriptorResponse",
    ]);
    for (const answer of answers.slice(0, 3)) {
      expect(answer.messageResponse.value).toMatchObject({ errorCode: 5, errorMessage: expect.stringContaining("not found") });
    }
    expect(answers[3]?.messageResponse.value).toMatchObject({ baseTypeName: "wattstream.telemetry.v1.Reading", extensionNumber: [] });
  });
});
