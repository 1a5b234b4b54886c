import { MemoryLiveStore } from "../src/store/live/memory-live-store.ts";
const shards = Number(process.argv[2] ?? 16);
const store = new MemoryLiveStore({ maxEvents: 4_000_000, shards });
const W = 7 * 86_400_000;
const times: number[] = [];
for (let b = 0; b < 3_000; b++) {
  const keys = Array.from({ length: 2_000 }, (_, i) => ({ deviceId: `meter-${i % 6667}`, eventId: `3f2a9c1e-0000-4000-8000-${String(b * 2000 + i).padStart(12, "0")}` }));
  const t = performance.now();
  await store.claimEvents(keys, `t${b}`, 60_000, W);
  await store.commitEvents(keys, W);
  times.push(performance.now() - t);
}
times.sort((a, b) => a - b);
const q = (p: number) => times[Math.floor(p * (times.length - 1))]!.toFixed(1);
console.log(`shards=${shards} 6M ids into 4M: per batch of 2,000 p50 ${q(0.5)} p99 ${q(0.99)} p99.9 ${q(0.999)} max ${q(1)} ms; mean ${(times.reduce((a, b) => a + b) / times.length).toFixed(2)} ms`);
await store.close();
