// The answers' promise under storage faults: a GetVehiclePerformance or GetFleetSummary call holds
// every reading acknowledged before it began, and nothing that was not sent — while writers keep
// sending late, current and edge-of-window readings, and inserts time out, fail, or land after
// their attempt timed out (injected into the history sink: a real engine cannot be made to do
// that on demand). Those are the cases the snapshot of every device's default window
// (src/analytics/performance-snapshot.ts) must not miss; the statement path answers the rest, and
// both are checked. ANSWER_FAULTS_SECONDS runs it longer (default 15).
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import { FleetService } from "../gen/wattstream/fleet/v1/fleet_service_pb.js";
import type { HistorySink } from "../src/store/history/history-sink.js";
import { GrpcIngestClient } from "./support/grpc-ingest-client.js";
import { performanceAnswers } from "./support/performance-answers.js";
import { meterReading, vehicleReading } from "./support/readings.js";
import { startTestService, testEnv } from "./support/test-service.js";
import { sleep } from "./support/wait-for.js";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const RUN_MS = Number(process.env.ANSWER_FAULTS_SECONDS ?? 15) * 1000;
const PAIRS = 40;

interface Sent {
  readonly kind: "meter" | "vehicle";
  readonly deviceId: string;
  readonly eventId: string;
  readonly at: number;
  readonly kwh: number;
  /** When the service acknowledged it (accepted or duplicate). */
  ackedAt?: number;
}

describe("answers while inserts time out, fail and land late", () => {
  it("hold every reading acknowledged before the call, and none that was not sent", { timeout: RUN_MS + 120_000 }, async () => {
    const faults = { delayed: 0, failed: 0 };
    const faulty = (real: HistorySink): HistorySink => ({
      async insert(kind, payload, token) {
        const roll = Math.random();
        if (roll < 0.15) {
          faults.delayed++;
          // Past INSERT_TIMEOUT: the attempt is given up on, then lands.
          await sleep(300 + Math.random() * 500);
        } else if (roll < 0.2) {
          faults.failed++;
          throw new Error("injected insert failure");
        }
        return real.insert(kind, payload, token);
      },
    });
    const app = await startTestService(testEnv({ INSERT_TIMEOUT: "250ms", INSERT_ATTEMPTS: "2", CLAIM_LEASE: "30s", INSERT_LINGER: "5ms" }), {
      wrapHistorySink: faulty,
    });
    const fleet = createClient(FleetService, createGrpcTransport({ baseUrl: app.baseUrl }));
    const ingest = new GrpcIngestClient(app.target);
    const sent: Sent[] = [];
    const problems: string[] = [];
    const calls = { performance: 0, summary: 0 };
    let sequence = 0;
    let stop = false;
    try {
      const linkedFrom = Date.now() - 48 * HOUR;
      for (let i = 0; i < PAIRS; i++) {
        await fleet.linkVehicleToMeter({ vehicleId: `ev-${i}`, meterId: `meter-${i}`, validFrom: timestampFromMs(linkedFrom) });
      }

      /** Sends 1–3 readings and resends those not acknowledged, as firmware does. */
      const writer = async () => {
        while (!stop) {
          const batch: Sent[] = [];
          for (let j = 1 + Math.floor(Math.random() * 3); j > 0; j--) {
            const kind = Math.random() < 0.5 ? "meter" : "vehicle";
            const pair = Math.floor(Math.random() * PAIRS);
            const now = Date.now();
            const roll = Math.random();
            // A tenth at the window's start, a tenth in the last two minutes, the rest within 20 h.
            const at =
              roll < 0.1 ? now - 24 * HOUR + Math.floor(Math.random() * 3 * MINUTE) : roll < 0.2 ? now - Math.floor(Math.random() * 2 * MINUTE) : now - Math.floor(Math.random() * 20 * HOUR);
            batch.push({ kind, deviceId: `${kind === "meter" ? "meter" : "ev"}-${pair}`, eventId: `e-${sequence++}`, at, kwh: 1 + Math.floor(Math.random() * 5) });
          }
          sent.push(...batch);
          let pending = batch;
          while (pending.length > 0 && !stop) {
            try {
              const response = await ingest.ingestReadings(
                pending.map((s) => (s.kind === "meter" ? meterReading(s.deviceId, s.eventId, s.at, s.kwh) : vehicleReading(s.deviceId, s.eventId, s.at, s.kwh, 50, 20))),
              );
              const answeredAt = Date.now();
              const notYet = new Set(response.rejected.map((r) => r.eventId));
              for (const s of pending) if (!notYet.has(s.eventId)) s.ackedAt = answeredAt;
              pending = pending.filter((s) => notYet.has(s.eventId));
            } catch {
              // UNAVAILABLE: resend after a pause.
            }
            if (pending.length > 0) await sleep(200);
          }
          await sleep(50);
        }
      };

      const within = (list: readonly Sent[], from: number, to: number, keep: (s: Sent) => boolean) => list.filter((s) => keep(s) && s.at >= from && s.at < to);
      const total = (list: readonly Sent[]) => list.reduce((sum, s) => sum + s.kwh, 0);
      /** The answer lies between what was acknowledged before the call and everything sent by its end. */
      const check = (what: string, kwh: number, count: number | undefined, must: readonly Sent[], may: readonly Sent[]) => {
        const low = total(must) - 1e-9;
        const high = total(may) + 1e-9;
        const countOk = count === undefined || (count >= must.length && count <= may.length);
        if (kwh < low || kwh > high || !countOk) {
          problems.push(`${what}: ${kwh} kWh in ${count ?? "?"} readings; acknowledged before ${total(must)} in ${must.length}, sent ${total(may)} in ${may.length}`);
        }
      };

      const performanceReader = async () => {
        while (!stop) {
          const pair = Math.floor(Math.random() * PAIRS);
          const started = Date.now();
          const acknowledged = sent.filter((s) => s.ackedAt !== undefined && s.ackedAt < started);
          const answer = await fleet.getVehiclePerformance({ vehicleId: `ev-${pair}` });
          calls.performance++;
          const [from, to] = [timestampMs(answer.windowStart!), timestampMs(answer.windowEnd!)];
          for (const [deviceId, kwh, count] of [
            [`ev-${pair}`, answer.totalKwhDeliveredDc, Number(answer.vehicleReadingCount)],
            [`meter-${pair}`, answer.totalKwhConsumedAc, Number(answer.meterReadingCount)],
          ] as const) {
            const mine = (s: Sent) => s.deviceId === deviceId;
            check(deviceId, kwh, count, within(acknowledged, from, to, mine), within(sent, from, to, mine));
          }
          await sleep(Math.random() * 20);
        }
      };

      const summaryReader = async () => {
        while (!stop) {
          const started = Date.now();
          const acknowledged = sent.filter((s) => s.ackedAt !== undefined && s.ackedAt < started);
          const summary = await fleet.getFleetSummary({});
          calls.summary++;
          const [from, to] = [timestampMs(summary.windowStart!), timestampMs(summary.windowEnd!)];
          for (const [kind, kwh] of [
            ["meter", summary.totalKwhConsumedAc],
            ["vehicle", summary.totalKwhDeliveredDc],
          ] as const) {
            const ofKind = (s: Sent) => s.kind === kind;
            check(`fleet ${kind}s`, kwh, undefined, within(acknowledged, from, to, ofKind), within(sent, from, to, ofKind));
          }
          await sleep(Math.random() * 50);
        }
      };

      const tasks = [writer(), writer(), writer(), performanceReader(), performanceReader(), summaryReader()];
      await sleep(RUN_MS);
      stop = true;
      await Promise.all(tasks);

      const answers = await performanceAnswers(app.baseUrl);
      console.log(
        `answers under faults: ${calls.performance} GetVehiclePerformance (${answers.snapshot} from the snapshot, ${answers.statement} by a statement), ` +
          `${calls.summary} GetFleetSummary; ${sent.length} readings sent, ${sent.filter((s) => s.ackedAt !== undefined).length} acknowledged; ` +
          `${faults.delayed} insert attempts landed late, ${faults.failed} failed`,
      );
      expect(problems.slice(0, 10)).toEqual([]);
      // The faults happened, and both paths were taken.
      expect(faults.delayed).toBeGreaterThan(0);
      expect(faults.failed).toBeGreaterThan(0);
      expect(answers.snapshot).toBeGreaterThan(0);
      expect(answers.statement).toBeGreaterThan(0);
    } finally {
      stop = true;
      ingest.close();
      await app.service.stop();
    }
  });
});
