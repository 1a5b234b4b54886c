// A test-only entry point: src/main.ts's service with a switch that breaks its storage, so a test
// can take ClickHouse away from a service running in its own process (the embedded engine cannot
// be made to fail on demand, and the fault suite must be able to `kill -9` the process too).
//
// FAULT_CONTROL_FILE names a file holding one word: `ok`, `fail` (every insert is refused),
// `stall` (every insert hangs until the mode changes) or `crash-after-insert` (the first insert
// ClickHouse acknowledges is followed by SIGKILL to this process: the rows are durable, but nothing
// after the insert — committing the event ids, answering the device — happens). The file is read at start-up — an outage
// outlives a restart, as a real one would — and again on each SIGUSR2; every switch is logged as
// "storage fault mode" with the mode, so the test can wait for it to take effect.
import { readFileSync } from "node:fs";
import { ConfigError, loadConfig } from "../../src/config.js";
import type { HistorySink } from "../../src/store/history/history-sink.js";
import { createLogger } from "../../src/observe/logger.js";
import { startService } from "../../src/service.js";
import { FaultySink } from "./faulty-sink.js";

export type StorageFaultMode = "ok" | "fail" | "stall" | "crash-after-insert";

const MODES: readonly StorageFaultMode[] = ["ok", "fail", "stall", "crash-after-insert"];

let config;
try {
  config = loadConfig();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`wattstream (faulty): ${error.message}\n`);
  process.exit(2);
}
const controlFile = process.env.FAULT_CONTROL_FILE;
if (controlFile === undefined || controlFile === "") {
  process.stderr.write("wattstream (faulty): FAULT_CONTROL_FILE must name the fault switch file\n");
  process.exit(2);
}

const log = createLogger(config.logLevel);
let sink: FaultySink | undefined;
let mode: StorageFaultMode = "ok";

function readMode(): StorageFaultMode {
  let text = "ok";
  try {
    text = readFileSync(controlFile!, "utf8").trim() || "ok";
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
  if (!MODES.includes(text as StorageFaultMode)) throw new Error(`${controlFile}: unknown storage fault mode ${JSON.stringify(text)}`);
  return text as StorageFaultMode;
}

function applyMode(next: StorageFaultMode): void {
  const s = sink;
  if (s === undefined) return; // not wired yet: the sink reads the file when it is created
  // Release a stall first: FaultySink.stall() replaces the gate, and inserts held by the old one
  // would otherwise hang for good. Released inserts then see the new mode.
  s.failing = next === "fail";
  if (mode === "stall" && next !== "stall") s.unstall();
  if (next === "stall" && mode !== "stall") s.stall();
  mode = next;
  log.warn({ storageFault: mode, insertAttempts: s.attempts, insertsFailed: s.failed }, "storage fault mode");
}

// Installed first: SIGUSR2's default action would end the process.
process.on("SIGUSR2", () => {
  try {
    applyMode(readMode());
  } catch (error) {
    log.error({ err: error }, "could not switch the storage fault mode");
  }
});

try {
  const service = await startService(config, log, {
    wrapHistorySink: (real) => {
      const faulty = (sink = new FaultySink(real));
      // Before the port opens, so no insert of this process escapes an outage that is still on.
      applyMode(readMode());
      const crashing: HistorySink = {
        async insert(...args) {
          await faulty.insert(...args);
          if (mode === "crash-after-insert") process.kill(process.pid, "SIGKILL");
        },
      };
      return crashing;
    },
  });
  const stop = (signal: NodeJS.Signals) => {
    log.info({ signal }, "signal received");
    // A graceful stop must not wait on inserts held by a stall.
    if (mode !== "ok") applyMode("ok");
    service.stop().then(
      () => process.exit(0),
      (error: unknown) => {
        log.error({ err: error }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
} catch (error) {
  log.fatal({ err: error }, "could not start");
  process.exit(1);
}
