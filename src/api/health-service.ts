// Answers the standard gRPC health protocol (grpc.health.v1.Health), so load balancers and
// orchestrators can tell whether this instance should get traffic. Every service shares one status:
// without reachable storage no reading can be made durable, so none of them can do useful work.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { setTimeout as sleep } from "node:timers/promises";
import {
  Health,
  HealthCheckResponse_ServingStatus as ServingStatus,
  type HealthCheckRequest,
  type HealthCheckResponseSchema,
  type HealthListResponseSchema,
} from "../../gen/grpc/health/v1/health_pb.js";

export interface HealthCheckerOptions {
  /** Fully qualified names of the services this server routes, e.g. "wattstream.telemetry.v1.IngestService". */
  readonly services: readonly string[];
  /** Resolves true while storage is reachable; a rejection counts as not reachable. */
  readonly isReady: () => Promise<boolean>;
  /** How often Watch re-checks readiness, in ms. Default 1000. */
  readonly watchIntervalMs?: number;
}

type StatusReply = MessageInitShape<typeof HealthCheckResponseSchema>;
type ListReply = MessageInitShape<typeof HealthListResponseSchema>;

/** The server-wide status: the protocol names it with the empty service name. */
const SERVER = "";

export class HealthChecker implements ServiceImpl<typeof Health> {
  private readonly services: ReadonlySet<string>;
  private readonly isReady: () => Promise<boolean>;
  private readonly watchIntervalMs: number;

  constructor(options: HealthCheckerOptions) {
    this.services = new Set(options.services);
    this.isReady = options.isReady;
    this.watchIntervalMs = options.watchIntervalMs ?? 1000;
  }

  async check(request: HealthCheckRequest): Promise<StatusReply> {
    if (!this.knows(request.service)) {
      throw new ConnectError(`unknown service ${JSON.stringify(request.service)}`, Code.NotFound);
    }
    return { status: await this.currentStatus() };
  }

  async list(): Promise<ListReply> {
    const status = await this.currentStatus();
    const statuses: Record<string, StatusReply> = { [SERVER]: { status } };
    for (const service of this.services) statuses[service] = { status };
    return { statuses };
  }

  async *watch(request: HealthCheckRequest, context: HandlerContext): AsyncGenerator<StatusReply> {
    const { signal } = context;
    if (!this.knows(request.service)) {
      // The protocol keeps the call open: the service might appear later. Ours are fixed at
      // start-up, so it never will, but clients still expect the stream to stay up.
      yield { status: ServingStatus.SERVICE_UNKNOWN };
      await untilAborted(signal);
      return;
    }
    let last = await this.currentStatus();
    yield { status: last };
    while (await pause(this.watchIntervalMs, signal)) {
      const status = await this.currentStatus();
      if (status !== last) {
        last = status;
        yield { status };
      }
    }
  }

  private knows(service: string): boolean {
    return service === SERVER || this.services.has(service);
  }

  private async currentStatus(): Promise<ServingStatus> {
    try {
      return (await this.isReady()) ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
    } catch {
      // A probe that fails is an unreachable store, not a broken health endpoint.
      return ServingStatus.NOT_SERVING;
    }
  }
}

export function registerHealth(router: ConnectRouter, checker: HealthChecker): void {
  router.service(Health, checker);
}

/** Resolves true after ms, or false as soon as the signal aborts. */
async function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return false;
  try {
    await sleep(ms, undefined, { signal });
    return true;
  } catch (error) {
    if (signal.aborted) return false;
    throw error;
  }
}

function untilAborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
}
