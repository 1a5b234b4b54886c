// A fake the tests allow (faults only): a wrapper around the real history sink that fails or stalls
// inserts on demand — faults a real ClickHouse cannot produce when a test needs them.
import type { HistorySink } from "../../src/store/history/history-sink.js";
import { HistoryProbe, startTestService, type TestService } from "./test-service.js";

export class FaultySink implements HistorySink {
  /** While true, every insert fails. */
  failing = false;
  /** Inserts attempted, failed or not. */
  attempts = 0;
  /** Inserts failed on purpose. */
  failed = 0;
  private failuresLeft = 0;
  private stalled: { release: () => void; promise: Promise<void> } | undefined;

  constructor(private readonly real: HistorySink) {}

  /** Fails the next `inserts` inserts, then lets them through. */
  failNext(inserts: number): void {
    this.failuresLeft = inserts;
  }

  /** Holds every insert until unstall(). */
  stall(): void {
    let release!: () => void;
    const promise = new Promise<void>((resolve) => (release = resolve));
    this.stalled = { release, promise };
  }

  unstall(): void {
    this.stalled?.release();
    this.stalled = undefined;
  }

  async insert(...args: Parameters<HistorySink["insert"]>): Promise<void> {
    this.attempts++;
    if (this.stalled) await this.stalled.promise;
    if (this.failing || this.failuresLeft > 0) {
      if (this.failuresLeft > 0) this.failuresLeft--;
      this.failed++;
      throw new Error("injected: ClickHouse refused the insert");
    }
    return this.real.insert(...args);
  }
}

/** The whole service with its inserts going through a FaultySink, and a probe of what it stored. */
export interface FaultyService {
  readonly app: TestService;
  readonly sink: FaultySink;
  readonly probe: HistoryProbe;
}

export async function startFaultyService(env: Record<string, string>): Promise<FaultyService> {
  let sink!: FaultySink;
  const app = await startTestService(env, { wrapHistorySink: (real) => (sink = new FaultySink(real)) });
  return { app, sink, probe: new HistoryProbe(app.config, app.service) };
}

/** Lets stalled inserts go, then stops the service and closes the probe: whichever were started. */
export async function stopFaultyService({ app, sink, probe }: Partial<FaultyService>): Promise<void> {
  sink?.unstall();
  await app?.service.stop();
  await probe?.close();
}
