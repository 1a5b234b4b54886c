// What one open device stream keeps on the service's JavaScript heap. Starts the service (embedded
// storage in a fresh DATA_DIR; live state and the dedupe ledger in a redis-server of its own, as
// `npm run bench` does, so the devices' own state stays off the heap) under
// `--heapsnapshot-signal`, takes a heap snapshot with nothing connected, opens --streams
// SyncReadings streams with the connections load, takes another while every stream waits for its
// next reading, and prints the difference per stream: in all, and by kind of object (the
// snapshot's node type and constructor name). A snapshot counts only what is reachable after a
// full collection, so garbage does not blur the figure.
//   node --import tsx bench/stream-heap.ts [--streams 2000] [--top 15] [--json FILE]
// KEEP_SNAPSHOTS=1 keeps the two .heapsnapshot files (for Chrome's DevTools) and says where.
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { startRedisServer } from "../test/support/redis-server.js";
import { builtService, startServiceProcess } from "../test/support/service-process.js";

const { values } = parseArgs({
  options: {
    streams: { type: "string", default: "2000" },
    top: { type: "string", default: "15" },
    json: { type: "string" },
  },
});
const streams = Number(values.streams);

/** Self size in bytes and object count, by "type:name" (a closure's name is its function's). */
type HeapTally = Map<string, { bytes: number; count: number }>;

/** Reads a .heapsnapshot and tallies its nodes by type and name; closures also by where they were made. */
function tallySnapshot(file: string): { total: number; byKind: HeapTally } {
  const snapshot = JSON.parse(readFileSync(file, "utf8")) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]]; edge_fields: string[]; edge_types: [string[], ...unknown[]]; location_fields: string[] } };
    nodes: number[];
    edges: number[];
    locations: number[];
    strings: string[];
  };
  const { meta } = snapshot.snapshot;
  const nodeFields = meta.node_fields.length;
  const edgeFields = meta.edge_fields.length;
  const [typeAt, nameAt, sizeAt, edgeCountAt] = ["type", "name", "self_size", "edge_count"].map((f) => meta.node_fields.indexOf(f)) as [number, number, number, number];
  const [edgeNameAt, edgeToAt] = ["name_or_index", "to_node"].map((f) => meta.edge_fields.indexOf(f)) as [number, number];
  const nodeCount = snapshot.nodes.length / nodeFields;
  const firstEdge = new Uint32Array(nodeCount + 1);
  for (let n = 0; n < nodeCount; n++) firstEdge[n + 1] = firstEdge[n]! + snapshot.nodes[n * nodeFields + edgeCountAt]!;
  const nameOf = (node: number) => snapshot.strings[snapshot.nodes[node * nodeFields + nameAt]!]!;
  /** The node an edge of `node` named `name` leads to (named edges only). */
  const edgeTo = (node: number, name: string): number | undefined => {
    for (let e = firstEdge[node]!; e < firstEdge[node + 1]!; e++) {
      if (snapshot.strings[snapshot.edges[e * edgeFields + edgeNameAt]!] === name) return snapshot.edges[e * edgeFields + edgeToAt]! / nodeFields;
    }
    return undefined;
  };
  // Where each closure was made: its script (through its shared function info) and line.
  const lineOf = new Map<number, number>();
  const [objectAt, lineAt] = ["object_index", "line"].map((f) => meta.location_fields.indexOf(f)) as [number, number];
  for (let i = 0; i < snapshot.locations.length; i += meta.location_fields.length) {
    lineOf.set(snapshot.locations[i + objectAt]! / nodeFields, snapshot.locations[i + lineAt]! + 1);
  }
  const whereMade = (closure: number): string => {
    const shared = edgeTo(closure, "shared");
    // V8 names the edge "script" when the function has no debug info, "script_or_debug_info" otherwise.
    const script = shared === undefined ? undefined : (edgeTo(shared, "script") ?? edgeTo(shared, "script_or_debug_info"));
    const url = script === undefined ? "?" : nameOf(script);
    // Paths from the repository on (src/…, node_modules/…), or node's own (node:…).
    const short = url.replace(/^file:\/\/.*?\/(src|gen|bench|test|node_modules)\//, "$1/");
    return `${short}:${lineOf.get(closure) ?? "?"}`;
  };
  const typeNames = meta.node_types[0];
  const byKind: HeapTally = new Map();
  let total = 0;
  for (let node = 0; node < nodeCount; node++) {
    const type = typeNames[snapshot.nodes[node * nodeFields + typeAt]!]!;
    // Strings and numbers are named by their content: count them as one kind each.
    let key = `${type}:`;
    if (type === "object" || type === "native") key += nameOf(node);
    else if (type === "closure") key += `${nameOf(node) || "(anonymous)"} ${whereMade(node)}`;
    const size = snapshot.nodes[node * nodeFields + sizeAt]!;
    total += size;
    const entry = byKind.get(key) ?? { bytes: 0, count: 0 };
    entry.bytes += size;
    entry.count += 1;
    byKind.set(key, entry);
  }
  return { total, byKind };
}

/** Signals the service to write a snapshot into its working directory and waits for the file. */
async function snapshotOf(pid: number, dir: string): Promise<string> {
  const before = new Set(readdirSync(dir).filter((f) => f.endsWith(".heapsnapshot")));
  process.kill(pid, "SIGUSR2");
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    const file = readdirSync(dir).find((f) => f.endsWith(".heapsnapshot") && !before.has(f));
    // The file appears when writing starts; it is complete once its size stops changing.
    if (file === undefined) continue;
    const full = path.join(dir, file);
    let size = -1;
    for (;;) {
      const now = statSync(full).size;
      if (now === size && now > 0) return full;
      size = now;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
}

const workDir = mkdtempSync(path.join(tmpdir(), "wattstream-stream-heap-"));
const redis = await startRedisServer();
// As `npm start` runs it; STREAM_HEAP_TSX=1 runs the TypeScript through tsx instead, for comparison.
const entry = process.env.STREAM_HEAP_TSX === "1" ? "src/main.ts" : builtService();
const service = await startServiceProcess(
  {
    PORT: "0",
    HOST: "127.0.0.1",
    DATA_DIR: path.join(workDir, "data"),
    REDIS_URL: redis.url,
    WORKER_THREADS: "1",
    LOG_LEVEL: "info",
    // The service writes its snapshots into its working directory.
    NODE_OPTIONS: `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${workDir}`,
  },
  60_000,
  entry,
);
try {
  const pid = service.child.pid!;
  const idle = tallySnapshot(await snapshotOf(pid, workDir));
  // Each stream writes once when it opens, then waits: the hold outlasts the snapshot.
  const load = spawn(process.execPath, [
    "--import", "tsx", "bench/connections-load.ts", "--target", service.target, "--streams", String(streams),
    "--interval", "3600", "--hold", "600", "--step", "1000", "--per-connection", "500",
  ], { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise<void>((resolve, reject) => {
    load.once("exit", (code) => reject(new Error(`the connections load exited (${code}) before holding its streams`)));
    createInterface({ input: load.stdout! }).on("line", (line) => {
      if (line.includes('"hold_start"')) resolve();
    });
  });
  const held = tallySnapshot(await snapshotOf(pid, workDir));
  load.removeAllListeners("exit");
  load.kill("SIGKILL");

  const kinds = [...held.byKind].map(([kind, { bytes, count }]) => {
    const before = idle.byKind.get(kind) ?? { bytes: 0, count: 0 };
    return { kind, bytes_per_stream: (bytes - before.bytes) / streams, objects_per_stream: (count - before.count) / streams };
  });
  kinds.sort((a, b) => b.bytes_per_stream - a.bytes_per_stream);
  const result = {
    streams,
    heap_idle_bytes: idle.total,
    heap_held_bytes: held.total,
    heap_bytes_per_stream: Math.round((held.total - idle.total) / streams),
    top_kinds: kinds.slice(0, Number(values.top)).map((k) => ({ ...k, bytes_per_stream: Math.round(k.bytes_per_stream), objects_per_stream: Number(k.objects_per_stream.toFixed(2)) })),
  };
  console.log(`${streams} streams: heap ${(idle.total / 1e6).toFixed(1)} MB idle, ${(held.total / 1e6).toFixed(1)} MB held, ${result.heap_bytes_per_stream} B per stream`);
  for (const k of result.top_kinds) console.log(`  ${String(k.bytes_per_stream).padStart(6)} B  ${String(k.objects_per_stream).padStart(6)} objects  ${k.kind}`);
  if (values.json !== undefined) writeFileSync(values.json, `${JSON.stringify(result, null, 2)}\n`);
} finally {
  await service.stop();
  await redis.stop();
  if (process.env.KEEP_SNAPSHOTS === undefined) rmSync(workDir, { recursive: true, force: true });
  else console.log(`snapshots kept in ${workDir}`);
}
