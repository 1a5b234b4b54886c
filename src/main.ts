// The process entry point: read the configuration, start the service, stop it on SIGTERM/SIGINT.
import { ConfigError, loadConfig, StartupError } from "./config.js";
import { createLogger } from "./observe/logger.js";
import { startService } from "./service.js";

let config;
try {
  config = loadConfig();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  process.stderr.write(`wattstream: ${error.message}\n`);
  process.exit(2);
}

const log = createLogger(config.logLevel);
try {
  const service = await startService(config, log);
  const stop = (signal: NodeJS.Signals) => {
    log.info({ signal }, "signal received");
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
  // Said plainly too, as a bad setting is: the JSON line may go to a log the operator is not reading.
  if (error instanceof StartupError) process.stderr.write(`wattstream: could not start: ${error.message}\n`);
  process.exit(1);
}
