// Ports for servers a test kills and starts again on the same port (the service, redis-server).
import getPort, { portNumbers } from "get-port";

/**
 * A free port for a server that is restarted on the same port. Outside the kernel's ephemeral
 * range (32768–60999 on Linux), so no outgoing connection of any process takes it as its local
 * port while the server is down; from a random point of the range, so test files started together
 * do not race for the same one.
 */
export async function restartablePort(): Promise<number> {
  const from = 20_000 + Math.floor(Math.random() * 12_000);
  return getPort({ port: portNumbers(from, Math.min(from + 200, 32_000)) });
}
