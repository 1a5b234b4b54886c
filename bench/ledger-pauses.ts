// How long the in-process dedupe ledger holds up the event loop while it fills and forgets: fresh
// ids claimed and committed in batches of 2,000 into a ledger of `--max` ids, each batch timed.
// Batches commit as the service's do (`--commit batch`, one step per batch) or event by event
// (`--commit events`, as they did before 2026-11-26).
// Run: node --import tsx bench/ledger-pauses.ts [--ids 6000000] [--max 4000000] [--shards 16] [--commit batch|events]
import { parseArgs } from "node:util";
import { MemoryLiveStore } from "../src/store/live/memory-live-store.js";

const { values } = parseArgs({
  options: {
    ids: { type: "string", default: "6000000" },
    max: { type: "string", default: "4000000" },
    shards: { type: "string", default: "16" },
    commit: { type: "string", default: "batch" },
  },
});
const BATCH = 2_000;
const WINDOW_MS = 7 * 86_400_000;
const store = new MemoryLiveStore({ maxEvents: Number(values.max), shards: Number(values.shards) });
const times: number[] = [];
for (let batch = 0; batch * BATCH < Number(values.ids); batch++) {
  // Ids shaped like a device's: its id, and a UUID-like event id.
  const keys = Array.from({ length: BATCH }, (_, i) => ({
    deviceId: `meter-${i % 6667}`,
    eventId: `3f2a9c1e-0000-4000-8000-${String(batch * BATCH + i).padStart(12, "0")}`,
    observedAtMs: Date.now(),
  }));
  const started = performance.now();
  await store.claimEvents(keys, `batch-${batch}`, 60_000, WINDOW_MS);
  if (values.commit === "events") await store.commitEvents(keys, `batch-${batch}`, WINDOW_MS);
  else await store.commitClaims(`batch-${batch}`, keys, WINDOW_MS);
  times.push(performance.now() - started);
}
await store.close();
const sorted = [...times].sort((a, b) => a - b);
const at = (q: number) => Number(sorted[Math.floor(q * (sorted.length - 1))]!.toFixed(1));
console.log(
  JSON.stringify({
    ids: Number(values.ids),
    max_events: Number(values.max),
    shards: Number(values.shards),
    commit: values.commit,
    batch_ms: { p50: at(0.5), p99: at(0.99), p999: at(0.999), max: at(1), mean: Number((times.reduce((a, b) => a + b, 0) / times.length).toFixed(2)) },
  }),
);
