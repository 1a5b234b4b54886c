// How the load generators summarise their latencies, so that every scenario's figures mean the
// same: the nearest-rank 50th and 99th percentiles, and the largest.

export interface LatencySummary {
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

/** The summary of `sample` (ms); zeros when it is empty. Sorts `sample` in place. */
export function latencySummary(sample: number[]): LatencySummary {
  sample.sort((a, b) => a - b);
  const at = (p: number) => sample[Math.min(sample.length - 1, Math.floor(p * sample.length))] ?? 0;
  return { p50: at(0.5), p99: at(0.99), max: sample.at(-1) ?? 0 };
}
