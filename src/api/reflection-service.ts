// Answers the standard gRPC server reflection protocol (grpc.reflection.v1), so buf curl, grpcurl
// and similar tools can list and call our services without a copy of the proto files.
import {
  create,
  createFileRegistry,
  toBinary,
  type DescFile,
  type DescService,
  type FileRegistry,
  type MessageInitShape,
} from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectRouter, type ServiceImpl } from "@connectrpc/connect";
import {
  ServerReflection,
  type ServerReflectionRequest,
  type ServerReflectionResponseSchema,
} from "../../gen/grpc/reflection/v1/reflection_pb.js";

export interface ReflectionOptions {
  /** Every service the router serves. ServerReflection itself is always added. */
  readonly services: readonly DescService[];
  /** Files to describe beyond the services' own files and their imports. */
  readonly files?: readonly DescFile[];
}

type Reply = MessageInitShape<typeof ServerReflectionResponseSchema>;
type Answer = Reply["messageResponse"];

export function createReflectionService(options: ReflectionOptions): ServiceImpl<typeof ServerReflection> {
  const schema = new Schema(options);
  return {
    // One answer per question, in order; a question we cannot answer gets an error_response so
    // the client can keep using the stream.
    async *serverReflectionInfo(requests: AsyncIterable<ServerReflectionRequest>): AsyncGenerator<Reply> {
      for await (const request of requests) {
        yield { validHost: request.host, originalRequest: request, messageResponse: schema.answer(request) };
      }
    },
  };
}

export function registerReflection(router: ConnectRouter, options: ReflectionOptions): void {
  router.service(ServerReflection, createReflectionService(options));
}

class Schema {
  private readonly services: readonly string[];
  private readonly registry: FileRegistry;
  private readonly encoded = new Map<string, Uint8Array>();

  constructor(options: ReflectionOptions) {
    const services = [...options.services, ServerReflection];
    this.services = [...new Set(services.map((service) => service.typeName))];
    const roots = [...services.map((service) => service.file), ...(options.files ?? [])];
    this.registry = createFileRegistry(create(FileDescriptorSetSchema, { file: importsFirst(roots).map((file) => file.proto) }));
  }

  answer(request: ServerReflectionRequest): Answer {
    const question = request.messageRequest;
    switch (question.case) {
      case "listServices":
        return { case: "listServicesResponse", value: { service: this.services.map((name) => ({ name })) } };
      case "fileByFilename":
        return this.fileAnswer(this.registry.getFile(question.value), `file ${JSON.stringify(question.value)}`);
      case "fileContainingSymbol":
        return this.fileAnswer(this.fileOfSymbol(question.value), `symbol ${JSON.stringify(question.value)}`);
      case "fileContainingExtension": {
        const { containingType, extensionNumber } = question.value;
        const extendee = this.registry.getMessage(containingType);
        const extension = extendee && this.registry.getExtensionFor(extendee, extensionNumber);
        return this.fileAnswer(extension?.file, `extension ${extensionNumber} of ${JSON.stringify(containingType)}`);
      }
      case "allExtensionNumbersOfType": {
        const typeName = question.value;
        if (!this.registry.getMessage(typeName)) return notFound(`message type ${JSON.stringify(typeName)}`);
        const numbers: number[] = [];
        for (const desc of this.registry) {
          if (desc.kind === "extension" && desc.extendee.typeName === typeName) numbers.push(desc.number);
        }
        return { case: "allExtensionNumbersResponse", value: { baseTypeName: typeName, extensionNumber: numbers } };
      }
      case undefined:
        return error(Code.InvalidArgument, "the request asks nothing: message_request is not set");
    }
  }

  private fileOfSymbol(name: string): DescFile | undefined {
    const type = this.registry.get(name);
    if (type) return type.file;
    // Methods and fields are not registry types: look them up on their parent.
    const dot = name.lastIndexOf(".");
    const parent = this.registry.get(name.slice(0, dot));
    const member = name.slice(dot + 1);
    if (parent?.kind === "service" && parent.methods.some((method) => method.name === member)) return parent.file;
    if (parent?.kind === "message" && parent.fields.some((field) => field.name === member)) return parent.file;
    return undefined;
  }

  /** The file first, then every file it imports, directly or not, each once. */
  private fileAnswer(file: DescFile | undefined, what: string): Answer {
    if (!file) return notFound(what);
    const files: DescFile[] = [];
    const seen = new Set<string>();
    const visit = (f: DescFile): void => {
      if (seen.has(f.proto.name)) return;
      seen.add(f.proto.name);
      files.push(f);
      f.dependencies.forEach(visit);
    };
    visit(file);
    return { case: "fileDescriptorResponse", value: { fileDescriptorProto: files.map((f) => this.encode(f)) } };
  }

  private encode(file: DescFile): Uint8Array {
    let bytes = this.encoded.get(file.proto.name);
    if (!bytes) {
      bytes = toBinary(FileDescriptorProtoSchema, file.proto);
      this.encoded.set(file.proto.name, bytes);
    }
    return bytes;
  }
}

/** The files and all their imports, each once, every file after the files it imports. */
function importsFirst(roots: readonly DescFile[]): DescFile[] {
  const ordered: DescFile[] = [];
  const seen = new Set<string>();
  const visit = (file: DescFile): void => {
    if (seen.has(file.proto.name)) return;
    seen.add(file.proto.name);
    file.dependencies.forEach(visit);
    ordered.push(file);
  };
  roots.forEach(visit);
  return ordered;
}

function notFound(what: string): Answer {
  return error(Code.NotFound, `${what} not found`);
}

function error(code: Code, message: string): Answer {
  // Connect's codes are the canonical gRPC status codes, which is what error_code carries.
  return { case: "errorResponse", value: { errorCode: code, errorMessage: message } };
}
