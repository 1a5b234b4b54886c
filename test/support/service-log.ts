// The test services' log lines at debug level, kept in memory (the newest RECORDED_LINES), so a
// failing test — a timeout above all, where nothing else says what the service was doing — can
// show them. Lines also go to stdout at TEST_LOG_LEVEL, as before.
import type { Logger } from "pino";
import { pino } from "pino";
import type { LogLevel } from "../../src/config.js";
import { createLogger } from "../../src/observe/logger.js";

const RECORDED_LINES = 2_000;
const recorded: string[] = [];

const recorder = {
  write(line: string) {
    recorded.push(line);
    if (recorded.length > RECORDED_LINES) recorded.splice(0, recorded.length - RECORDED_LINES);
  },
};

/** A logger for a test service: everything at debug to the recorder, `stdoutLevel` and up to stdout. */
export function createTestLogger(stdoutLevel: LogLevel): Logger {
  const streams: pino.StreamEntry[] = [{ level: "debug", stream: recorder }];
  if (stdoutLevel !== "silent") streams.push({ level: stdoutLevel, stream: pino.destination(1) });
  return createLogger("debug", pino.multistream(streams));
}

/** The recorded lines since the last call, which forgets them. */
export function takeRecordedLog(): string {
  return recorded.splice(0).join("");
}
