// Structured JSON logs on stdout, one object per line, for whatever collects the container's output.
import { pino, type Logger } from "pino";
import type { LogLevel } from "../config.js";

export function createLogger(level: LogLevel): Logger {
  return pino({
    level,
    base: { service: "wattstream" },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  });
}
