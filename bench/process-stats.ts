// A process's CPU and memory as Linux's /proc tells them: what the benchmarks report of the
// service they drive (and of redis-server), read from outside the process so the reading costs it
// nothing.
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

let clockTicks: number | undefined;

/** The name and user + system CPU seconds in a /proc stat line (of a process or a thread). */
function readStat(path: string): { name: string; cpuSeconds: number } {
  const stat = readFileSync(path, "utf8");
  // The name is in parentheses and may itself hold ") ": the fields follow the last one.
  const fields = stat.slice(stat.lastIndexOf(") ") + 2).split(" ");
  clockTicks ??= Number(spawnSync("getconf", ["CLK_TCK"]).stdout.toString().trim()) || 100;
  return { name: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")), cpuSeconds: (Number(fields[11]) + Number(fields[12])) / clockTicks };
}

/** User + system CPU of a process, all its threads. */
export function cpuSeconds(pid: number): number {
  return readStat(`/proc/${pid}/stat`).cpuSeconds;
}

/**
 * CPU seconds of the process's live threads, summed by thread name. A thread that ended in between
 * takes its time with it, so this under-counts short-lived threads.
 */
export function threadCpuSeconds(pid: number): Map<string, number> {
  const byName = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const { name, cpuSeconds } = readStat(`/proc/${pid}/task/${tid}/stat`);
      byName.set(name || "Unknown", (byName.get(name || "Unknown") ?? 0) + cpuSeconds);
    } catch {
      // The thread ended while we read.
    }
  }
  return byName;
}

/** The process's resident set now (VmRSS). */
export function rssBytes(pid: number): number {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return match ? Number(match[1]) * 1024 : 0;
}

/** The process's peak resident set (VmHWM). */
export function peakRssBytes(pid: number): number {
  const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return match ? Number(match[1]) * 1024 : 0;
}
