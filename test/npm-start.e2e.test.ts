// The one command of the quick start, as an operator runs it: `npm start`, stopped by a SIGTERM
// to npm itself (what a supervisor or `kill` on the process it started sends). The service must
// hear it and stop gracefully — not be left running, orphaned, holding the port and DATA_DIR.
import { expect, it } from "vitest";
import { startServiceProcess } from "./support/service-process.js";
import { testEnv } from "./support/test-service.js";

it("serves under npm start, and stops gracefully when npm is sent SIGTERM", async () => {
  const service = await startServiceProcess({ ...testEnv(), PORT: "0", HOST: "127.0.0.1", LOG_LEVEL: "info" }, 60_000, { command: "npm", args: ["start", "--silent"] });
  try {
    expect((await fetch(`http://${service.target}/healthz`)).status).toBe(200);
    const code = await service.stop(20_000);
    expect(service.logs.some((line) => line.msg === "stopped")).toBe(true);
    expect(code).toBe(0);
    await expect(fetch(`http://${service.target}/healthz`)).rejects.toThrow();
  } finally {
    service.kill();
  }
}, 90_000);
