// The worker pool that validates, scores and encodes batches off the event loop. The main thread
// moves each batch in as one encoded buffer and gets payloads back as moved buffers; no object
// graph is cloned either way beyond the small rejection and live-state lists.
import { fileURLToPath } from "node:url";
import { Piscina } from "piscina";
import type { ProcessTask, ProcessedBatch } from "./process-batch.js";

export interface ProcessPoolOptions {
  readonly minThreads: number;
  readonly maxThreads: number;
  /** Tasks waiting for a worker beyond this are refused (the caller answers retryably). */
  readonly maxQueue: number;
  /** An idle worker above minThreads exits after this, in ms. */
  readonly idleTimeoutMs: number;
}

const workerFile = new URL(import.meta.url.endsWith(".ts") ? "./process-worker.ts" : "./process-worker.js", import.meta.url);

/** The process's flags a worker thread accepts and should share: profiling and module loaders. */
function workerFlags(argv: readonly string[]): string[] {
  const kept: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (/^--(cpu|heap)-prof/.test(arg)) kept.push(arg);
    else if (arg === "--import" && i + 1 < argv.length) kept.push(arg, argv[++i]!);
    else if (arg.startsWith("--import=")) kept.push(arg);
  }
  return kept;
}

function needsLoader(file: URL): boolean {
  return file.pathname.endsWith(".ts") && !process.execArgv.some((arg) => arg.includes("tsx"));
}

export class ProcessPool {
  private readonly piscina: Piscina<ProcessTask, ProcessedBatch>;

  constructor(private readonly options: ProcessPoolOptions) {
    this.piscina = new Piscina({
      filename: fileURLToPath(workerFile),
      minThreads: options.minThreads,
      maxThreads: options.maxThreads,
      maxQueue: options.maxQueue,
      idleTimeout: options.idleTimeoutMs,
      // Workers take the process's own flags (e.g. --cpu-prof), and, run from TypeScript sources,
      // the same loader as the main thread.
      execArgv: [...workerFlags(process.execArgv), ...(needsLoader(workerFile) ? ["--import", "tsx"] : [])],
    });
  }

  run(task: ProcessTask): Promise<ProcessedBatch> {
    const { encoded, entryEnds, scanned, batteryTrends } = task;
    const transferList = [encoded, entryEnds, scanned.observedAtMs, scanned.kinds, batteryTrends.fields].map((a) => a.buffer as ArrayBuffer);
    return this.piscina.run(task, { transferList });
  }

  /**
   * Settles once the pool's first minThreads workers have each loaded the worker module, or
   * rejects if one cannot. A worker loads it on start, and the first batch waits for that: the
   * first reading after a start took 1.9 s against 0.2–0.4 s for the next ones (from TypeScript
   * sources, on a busy machine).
   */
  async warmUp(): Promise<void> {
    // One task per worker: a worker runs one task at a time, so each goes to a different one.
    const tasks = Array.from({ length: this.options.minThreads }, () => this.piscina.run(null as unknown as ProcessTask, { name: "warmUp" }));
    await Promise.all(tasks);
  }

  /** Tasks waiting for a worker. */
  get queueSize(): number {
    return this.piscina.queueSize;
  }

  get threads(): number {
    return this.piscina.threads.length;
  }

  close(): Promise<void> {
    return this.piscina.destroy();
  }
}
