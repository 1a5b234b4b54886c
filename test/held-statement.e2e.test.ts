// When the embedded engine holds a statement that binds parameters: chdb runs those one at a time
// in the whole process, so every fleet call waits behind it, whichever connection it takes. A real
// statement of the service's own client, held by a FIFO (its INFILE blocks until something writes
// to the pipe), stands in for one the engine never answers. The service then reports itself not
// ready — on /readyz and through gRPC health, with a gauge on /metrics — so that a balancer stops
// sending it traffic and an orchestrator can restart it; ingest of new readings carries on; once
// the statement returns, everything answers again.
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { FleetService } from "../gen/wattstream/fleet/v1/fleet_service_pb.js";
import type { HistoryClient } from "../src/store/history/clickhouse-client.js";
import { GrpcIngestClient } from "./support/grpc-ingest-client.js";
import { heldPipe } from "./support/held-pipe.js";
import { meterReading, vehicleReading } from "./support/readings.js";
import { settledWithin } from "./support/settled-within.js";
import { startTestService, type TestService } from "./support/test-service.js";

// Well above how long the service's own bound statements wait for each other on two busy cores:
// at 500 ms the service once reported itself not serving before the test held anything.
const STUCK_MS = 2_000;
const MINUTE = 60_000;

let app: TestService;
let history: HistoryClient;
let fleet: Client<typeof FleetService>;
let health: Client<typeof Health>;
let ingestClient: GrpcIngestClient;

beforeAll(async () => {
  app = await startTestService(undefined, { onHistoryClient: (client) => (history = client), stuckStatementMs: STUCK_MS });
  const transport = createGrpcTransport({ baseUrl: app.baseUrl });
  fleet = createClient(FleetService, transport);
  health = createClient(Health, transport);
  ingestClient = new GrpcIngestClient(app.target);
});
afterAll(async () => {
  ingestClient?.close();
  await app?.service.stop();
});

async function readiness(): Promise<{ status: number; reason?: string }> {
  const response = await fetch(`${app.baseUrl}/readyz`);
  const body = (await response.json()) as { reason?: string };
  return { status: response.status, reason: body.reason };
}

/** The gauge an operator can alert on, as /metrics shows it. */
async function boundStatementWaitSeconds(): Promise<number> {
  const text = await (await fetch(`${app.baseUrl}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("wattstream_engine_bound_statement_wait_seconds "));
  return Number(line?.split(" ")[1]);
}

describe("a statement binding parameters that the engine does not answer", () => {
  it("makes the service not ready while fleet calls wait, keeps ingest going, and recovers when it returns", async () => {
    const startMs = Math.floor(Date.now() / MINUTE) * MINUTE - 30 * MINUTE;
    await fleet.linkVehicleToMeter({ vehicleId: "ev-held", meterId: "meter-held", validFrom: timestampFromMs(startMs - MINUTE) });
    // The first batch also looks up the ledger's horizon in history (a bound statement of its own).
    const first = await ingestClient.ingestReadings([
      meterReading("meter-held", "m-1", startMs, 10),
      vehicleReading("ev-held", "v-1", startMs + 1_000, 9),
    ]);
    expect(first.accepted).toBe(2n);
    const window = { vehicleId: "ev-held", windowHours: 1 };
    expect((await fleet.getVehiclePerformance(window)).efficiencyRatio).toBeCloseTo(0.9, 9);
    expect((await health.check({})).status).toBe(ServingStatus.SERVING);
    expect((await readiness()).status).toBe(200);

    await history.client.command({ query: "CREATE TABLE held_probe (x UInt32) ENGINE = MergeTree ORDER BY x" });
    const pipe = heldPipe(app.config.clickhouse.dataDir, "held");
    const held = history.client
      .command({ query: `INSERT INTO held_probe FROM INFILE '${pipe.path}' FORMAT RowBinary`, query_params: { held: 1 } })
      .then(() => "returned");
    await pipe.running();

    // A fleet call binds its values too: it waits, though the main connection moves on past the
    // held statement once it has run STUCK_MS.
    const waiting = fleet.getVehiclePerformance(window);
    expect(await settledWithin(waiting, 2 * STUCK_MS)).toBe("pending");
    expect((await health.check({})).status).toBe(ServingStatus.NOT_SERVING);
    const notReady = await readiness();
    expect(notReady.status).toBe(503);
    expect(notReady.reason).toMatch(/statement on the history store has not returned/);
    expect(await boundStatementWaitSeconds()).toBeGreaterThanOrEqual(STUCK_MS / 1000);

    // New readings need no bound statement: they are stored and acknowledged meanwhile.
    const during = await ingestClient.ingestReadings([
      meterReading("meter-held", "m-2", startMs + MINUTE, 20),
      vehicleReading("ev-held", "v-2", startMs + MINUTE + 1_000, 16),
    ]);
    expect(during.accepted).toBe(2n);
    expect(await settledWithin(waiting, 0)).toBe("pending");

    await pipe.release(Buffer.from([1, 0, 0, 0]));
    expect(await held).toBe("returned");
    // The waiting call answers with every reading acknowledged before it was made; those stored
    // while it waited may be in it too or not (their rollups follow within ROLLUP_INTERVAL)...
    const answer = await settledWithin(waiting, 10_000);
    expect(answer).not.toBe("pending");
    expect([10, 30]).toContain(typeof answer === "object" && answer.totalKwhConsumedAc);
    // ...and a call made after they were acknowledged has them.
    expect((await fleet.getVehiclePerformance(window)).totalKwhConsumedAc).toBeCloseTo(30, 9);
    expect((await health.check({})).status).toBe(ServingStatus.SERVING);
    expect((await readiness()).status).toBe(200);
    // Nothing is held; a bound statement of the service's own (a background refresh) may be
    // running at this moment, for milliseconds.
    expect(await boundStatementWaitSeconds()).toBeLessThan(STUCK_MS / 1000);
  });
});
