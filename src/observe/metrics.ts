// Prometheus metrics, served as text at GET /metrics: what was accepted, duplicated and rejected
// (by reason), how inserts go, how full the engine is, and how long calls take.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import { RejectReason } from "../../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import type { FlushRecord } from "../store/history/table-batcher.js";

export interface OutcomeCounts {
  readonly accepted: number;
  readonly duplicates: number;
  readonly rejected: readonly { readonly reason: RejectReason }[];
}

export class IngestMetrics {
  readonly registry = new Registry();
  readonly readings = new Counter({
    name: "wattstream_readings_total",
    help: "Readings as answered to callers, by outcome (accepted, duplicate, rejected) and, for rejections, reason; a call that fails answers none (its resend is counted).",
    labelNames: ["outcome", "reason"] as const,
    registers: [this.registry],
  });
  readonly refusedCalls = new Counter({
    name: "wattstream_calls_refused_total",
    help:
      "Ingest calls (or batches of open streams) refused before storing, by reason: capacity (UNAVAILABLE, the engine " +
      "was full), device_rate and device_streams (RESOURCE_EXHAUSTED, a device over its limits).",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly deniedCalls = new Counter({
    name: "wattstream_calls_denied_total",
    help: "Calls refused by authentication (UNAUTHENTICATED) or authorization (PERMISSION_DENIED), by code and service.",
    labelNames: ["code", "service"] as const,
    registers: [this.registry],
  });
  readonly flushRows = new Histogram({
    name: "wattstream_insert_rows",
    help: "Rows per history insert.",
    labelNames: ["table"] as const,
    buckets: [1, 10, 100, 1_000, 5_000, 10_000, 50_000, 100_000],
    registers: [this.registry],
  });
  readonly flushSeconds = new Histogram({
    name: "wattstream_insert_duration_seconds",
    help: "Duration of history inserts, by table and result.",
    labelNames: ["table", "result"] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly callSeconds = new Histogram({
    name: "wattstream_call_duration_seconds",
    help: "Duration of ingest calls, from start to answer, by method and code.",
    labelNames: ["method", "code"] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly performanceAnswers = new Counter({
    name: "wattstream_vehicle_performance_answers_total",
    help:
      "GetVehiclePerformance answers by where their totals came from: snapshot (every device's default window, read once a minute) " +
      "or statement (a query of their own: another window, a link changing inside it, or a device written to since the snapshot).",
    labelNames: ["source"] as const,
    registers: [this.registry],
  });
  readonly openStreams = new Gauge({
    name: "wattstream_open_streams",
    help: "Ingest streams currently open.",
    labelNames: ["method"] as const,
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: "wattstream_" });
  }

  countOutcome(outcome: OutcomeCounts): void {
    if (outcome.accepted > 0) this.readings.inc({ outcome: "accepted", reason: "" }, outcome.accepted);
    if (outcome.duplicates > 0) this.readings.inc({ outcome: "duplicate", reason: "" }, outcome.duplicates);
    for (const r of outcome.rejected) this.readings.inc({ outcome: "rejected", reason: RejectReason[r.reason] ?? String(r.reason) });
  }

  recordFlush(record: FlushRecord): void {
    this.flushSeconds.observe({ table: record.kind, result: record.ok ? "ok" : "error" }, record.durationMs / 1000);
    if (record.ok) this.flushRows.observe({ table: record.kind }, record.rows);
  }

  /** Gauges read at scrape time from the parts that own the numbers. */
  observeGauges(read: {
    rowsInFlight: () => number;
    rowsWaiting: () => number;
    rollupBlocksWaiting: () => number;
    workerQueue: () => number;
    workers: () => number;
  }): void {
    const gauge = (name: string, help: string, value: () => number) =>
      new Gauge({ name, help, registers: [this.registry], collect() { this.set(value()); } });
    gauge("wattstream_rows_in_flight", "Readings admitted and not yet answered.", read.rowsInFlight);
    gauge("wattstream_rows_waiting_for_insert", "Encoded rows queued for the next history inserts.", read.rowsWaiting);
    gauge(
      "wattstream_rollup_blocks_waiting",
      "Blocks stored in history whose rollups are not yet written (embedded engine; written within ROLLUP_INTERVAL, or at once for a read). A value that keeps growing means the rollup inserts fail.",
      read.rollupBlocksWaiting,
    );
    gauge("wattstream_worker_queue_depth", "Batches waiting for a worker thread.", read.workerQueue);
    gauge("wattstream_worker_threads", "Worker threads running.", read.workers);
  }

  /** `read` answers, in ms, how long the oldest unfinished bound statement has waited (0 for none). */
  observeBoundStatementWait(read: () => number): void {
    new Gauge({
      name: "wattstream_engine_bound_statement_wait_seconds",
      help:
        "How long the oldest unfinished statement binding parameters has waited on the embedded engine (0 when none). " +
        "The engine runs them one at a time process-wide: a value that keeps growing is one that will not return, and every fleet call waits behind it.",
      registers: [this.registry],
      collect() {
        this.set(read() / 1000);
      },
    });
  }

  /** The live store's change-feed listeners: one per open WatchLiveState call. */
  observeLiveWatchers(read: () => number): void {
    new Gauge({
      name: "wattstream_live_watchers",
      help: "Listeners on the live state change feed (one per open WatchLiveState call).",
      registers: [this.registry],
      collect() {
        this.set(read());
      },
    });
  }
}
