// What each step the ingest path asks of the Redis live store costs, per reading: redis-server's
// CPU (read from /proc) and this process's, on a private redis-server. Batches of 2,000 fresh ids
// over 20,000 devices, as the throughput bench sends them: claim; commit, both in one step for the
// batch (under the claim's token) and event by event (as batches under BATCH_COMMIT_MIN_EVENTS
// and every batch before 2026-11-26 did); a resend's claim (every id a duplicate); the
// live-state update of each device; the trends read. Then what the ledger holds per reading in
// Redis's memory (INFO memory's used_memory, before and after the claims and their commits).
// Claim tokens are made as the ingest engine makes them (16 characters); event ids are
// `--id-length` characters long (26 by default, a ULID's length).
// Run: node --import tsx bench/live-store-costs.ts [--readings 200000] [--devices 20000] [--id-length 26]
//   [--listpack-entries N]   (redis-server's hash-max-listpack-entries: a ledger bucket with more ids
//                             than this, 512 by default, takes Redis's larger hash table encoding)
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import { cpuSeconds } from "./process-stats.js";
import { startRedisServer } from "../test/support/redis-server.js";
import type { EventKey } from "../src/store/live/live-store.js";
import { RedisLiveStore } from "../src/store/live/redis-live-store.js";

const { values } = parseArgs({
  options: {
    readings: { type: "string", default: "200000" },
    devices: { type: "string", default: "20000" },
    "id-length": { type: "string", default: "26" },
    "listpack-entries": { type: "string" },
  },
});
const READINGS = Number(values.readings);
const BATCH = 2_000;
const DEVICES = Number(values.devices);
const ID_LENGTH = Number(values["id-length"]);
/** One claim token per batch, as the ingest engine makes them. */
const tokens = new Map<string, string>();
const tokenOf = (name: string) => tokens.get(name) ?? tokens.set(name, randomBytes(12).toString("base64url")).get(name)!;
const LEASE_MS = 30_000;
const WINDOW_MS = 7 * 86_400_000;

const server = await startRedisServer();
const serverCpuSeconds = () => cpuSeconds(server.pid!);
const store = new RedisLiveStore({ url: server.url });
await store.connect();
const admin = new Redis(server.url);
if (values["listpack-entries"] !== undefined) await admin.config("SET", "hash-max-listpack-entries", values["listpack-entries"]);
const usedMemory = async () => Number(/used_memory:(\d+)/.exec(await admin.info("memory"))![1]);

const batches = (run: string): EventKey[][] =>
  Array.from({ length: READINGS / BATCH }, (_, b) =>
    Array.from({ length: BATCH }, (_, i) => ({
      // Each run its own devices, so that each run's ledger memory includes its own hashes.
      deviceId: `${run}-meter-${(b * BATCH + i) % DEVICES}`,
      eventId: `${run}-${b * BATCH + i}-`.padEnd(ID_LENGTH, "0"),
      observedAtMs: Date.now(),
    })),
  );

async function measure(name: string, steps: readonly (() => Promise<unknown>)[]): Promise<void> {
  const serverBefore = serverCpuSeconds();
  const clientBefore = process.cpuUsage();
  for (const step of steps) await step();
  const client = process.cpuUsage(clientBefore);
  const perReading = (seconds: number) => ((seconds / READINGS) * 1e6).toFixed(2);
  console.log(`${name.padEnd(34)} redis-server ${perReading(serverCpuSeconds() - serverBefore)} µs   client ${perReading((client.user + client.system) / 1e6)} µs`);
}

const byBatch = batches("a");
const perEvent = batches("b");
let memoryBefore = await usedMemory();
await measure("claim (new ids)", byBatch.map((keys, b) => () => store.claimEvents(keys, tokenOf(`a${b}`), LEASE_MS, WINDOW_MS)));
await measure("commit, once per batch", byBatch.map((keys, b) => () => store.commitClaims(tokenOf(`a${b}`), keys, WINDOW_MS)));
const batchCommittedBytes = (await usedMemory()) - memoryBefore;
memoryBefore = await usedMemory();
for (const [b, keys] of perEvent.entries()) await store.claimEvents(keys, tokenOf(`b${b}`), LEASE_MS, WINDOW_MS);
await measure("commit, event by event", perEvent.map((keys, b) => () => store.commitEvents(keys, tokenOf(`b${b}`), WINDOW_MS)));
const eventCommittedBytes = (await usedMemory()) - memoryBefore;
await measure("claim of a resend (all duplicates)", byBatch.map((keys, b) => () => store.claimEvents(keys, tokenOf(`r${b}`), LEASE_MS, WINDOW_MS)));
let observedAtMs = Date.now();
await measure(
  "live state, one update per reading",
  byBatch.map((keys) => () =>
    store.applyLiveState(
      keys.map(({ deviceId }) => ({
        deviceId,
        kind: "meter" as const,
        observedAtMs: ++observedAtMs,
        receivedAtMs: observedAtMs,
        values: { kwh_consumed_ac: 0.13, voltage: 231, current_a: 0 },
      })),
    ),
  ),
);
await measure("trends read, one per reading", byBatch.map((keys) => () => store.getTrends(keys.map((k) => k.deviceId))));
const perReadingBytes = (bytes: number) => `${(bytes / READINGS).toFixed(1)} B per reading`;
console.log(`ledger memory, batches committed at once      ${perReadingBytes(batchCommittedBytes)} (${READINGS / DEVICES} per device)`);
console.log(`ledger memory, batches committed id by id     ${perReadingBytes(eventCommittedBytes)}`);
admin.disconnect();
await store.close();
await server.stop();
