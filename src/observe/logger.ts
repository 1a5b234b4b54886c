// Structured JSON logs on stdout, one object per line, for whatever collects the container's output.
import { pino, type DestinationStream, type Logger } from "pino";
import type { LogLevel } from "../config.js";

/** A logger writing to stdout, or to `destination` (tests keep the lines to show them on failure). */
export function createLogger(level: LogLevel, destination?: DestinationStream): Logger {
  const options = {
    level,
    base: { service: "wattstream" },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  return destination === undefined ? pino(options) : pino(options, destination);
}
