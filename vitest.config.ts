import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts"],
    // The embedded ClickHouse engine is a process singleton: each test file gets a process.
    pool: "forks",
    // Memory assertions collect garbage first, so they measure what is held, not what is pending.
    execArgv: ["--expose-gc"],
    // A failing test prints what its services logged (test/support/service-log.ts).
    setupFiles: ["test/support/print-service-log-on-failure.ts"],
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
