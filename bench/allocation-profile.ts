// Where a running service allocates: V8's sampling heap profiler, asked through the inspector
// protocol to count every sampled allocation — also the ones collected since, which a heap
// snapshot or `node --heap-prof` leave out and which are what makes the young generation's
// collections frequent. Start the service with the inspector on (`SERVICE_NODE_OPTIONS` for
// `npm run bench`), put it under load, then:
//   node --import tsx bench/allocation-profile.ts --inspect 127.0.0.1:9229 [--seconds 10] [--top 30] [--count all|live] [--save FILE]
// It prints the allocation rate and the functions that allocated most (self: allocated in the
// function's own frame), each with its script and line. --save writes the .heapprofile, which
// Chrome's DevTools open.
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    inspect: { type: "string", default: "127.0.0.1:9229" },
    seconds: { type: "string", default: "10" },
    top: { type: "string", default: "30" },
    // Bytes between samples, on average; smaller counts more exactly and costs the service more.
    interval: { type: "string", default: "32768" },
    save: { type: "string" },
    // What to count: every allocation ("all"), or only what is still alive when sampling stops
    // ("live": in our runs ~8 MB of the ~120 MB allocated in 2 s, so garbage not yet collected did
    // not count). With a window of a second or two, "live" shows what lives long enough to be
    // promoted — a stream's wait for its next message, say — which the young generation's
    // collections copy and a full one must then mark.
    count: { type: "string", default: "all" },
  },
});

interface ProfileNode {
  callFrame: { functionName: string; url: string; lineNumber: number };
  selfSize: number;
  children: ProfileNode[];
}

/** One inspector session over the WebSocket the inspector announces at /json/list. */
async function connect(address: string): Promise<(method: string, params?: object) => Promise<Record<string, unknown>>> {
  const targets = (await (await fetch(`http://${address}/json/list`)).json()) as { webSocketDebuggerUrl: string }[];
  const socket = new WebSocket(targets[0]!.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    socket.addEventListener("open", resolve, { once: true });
    socket.addEventListener("error", reject, { once: true });
  });
  let nextId = 1;
  const pending = new Map<number, { resolve: (r: Record<string, unknown>) => void; reject: (e: Error) => void }>();
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(String(event.data)) as { id?: number; result?: Record<string, unknown>; error?: { message: string } };
    const waiting = message.id === undefined ? undefined : pending.get(message.id);
    if (waiting === undefined) return;
    pending.delete(message.id!);
    if (message.error !== undefined) waiting.reject(new Error(message.error.message));
    else waiting.resolve(message.result ?? {});
  });
  return (method, params = {}) =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      socket.send(JSON.stringify({ id, method, params }));
    });
}

if (values.count !== "all" && values.count !== "live") throw new Error(`--count is all or live, not ${values.count}`);
const call = await connect(values.inspect!);
const seconds = Number(values.seconds);
await call("HeapProfiler.enable");
await call("HeapProfiler.startSampling", {
  samplingInterval: Number(values.interval),
  includeObjectsCollectedByMajorGC: values.count === "all",
  includeObjectsCollectedByMinorGC: values.count === "all",
});
await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
const { profile } = (await call("HeapProfiler.stopSampling")) as { profile: { head: ProfileNode } };
if (values.save !== undefined) writeFileSync(values.save, JSON.stringify(profile));

const bySite = new Map<string, number>();
let total = 0;
const visit = (node: ProfileNode) => {
  const { functionName, url, lineNumber } = node.callFrame;
  const where = `${functionName || "(anonymous)"} ${url.replace(/^file:\/\/.*?\/(src|gen|bench|dist|node_modules)\//, "$1/") || "(native)"}:${lineNumber + 1}`;
  bySite.set(where, (bySite.get(where) ?? 0) + node.selfSize);
  total += node.selfSize;
  for (const child of node.children) visit(child);
};
visit(profile.head);
console.log(`${values.count === "all" ? "allocated" : "still alive"} ~${(total / 1e6).toFixed(0)} MB in ${seconds} s (${(total / 1e6 / seconds).toFixed(1)} MB/s), sampled every ~${values.interval} B`);
for (const [where, bytes] of [...bySite].sort((a, b) => b[1] - a[1]).slice(0, Number(values.top))) {
  console.log(`  ${(bytes / 1e6).toFixed(1).padStart(7)} MB  ${((100 * bytes) / total).toFixed(1).padStart(5)} %  ${where}`);
}
process.exit(0);
