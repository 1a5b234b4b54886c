// A vitest setup file: after a test fails, print the log its test services wrote (see
// service-log.ts); after one that passes, forget it.
import { afterEach } from "vitest";
import { takeRecordedLog } from "./service-log.js";

afterEach((context) => {
  const log = takeRecordedLog();
  if (context.task.result?.state === "fail" && log !== "") {
    process.stderr.write(`\n--- the test services' log for "${context.task.name}" (debug) ---\n${log}--- end of log ---\n`);
  }
});
