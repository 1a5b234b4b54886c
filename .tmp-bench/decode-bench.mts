import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { IngestReadingsRequestSchema, StreamReadingsRequestSchema } from "/work/main/gen/wattstream/telemetry/v1/ingest_service_pb.ts";
import { benchReading } from "/work/main/bench/limit.ts";
const now = Date.now();
let seq = 0;
const frames = Array.from({ length: 2000 }, () => toBinary(StreamReadingsRequestSchema, create(StreamReadingsRequestSchema, { readings: Array.from({ length: 100 }, () => benchReading(seq++, 20000, now, "run-abc-w0")) })));
function scan(bytes: Uint8Array) {
  const r = new BinaryReader(bytes);
  const out: { deviceId: string; eventId: string; ms: number; kind: number; start: number; end: number }[] = [];
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    if (no !== 1 || wt !== WireType.LengthDelimited) { r.skip(wt, no); continue; }
    const len = r.uint32(); const start = r.pos; const end = start + len;
    let deviceId = "", eventId = "", ms = 0, kind = 0;
    const outerLen = r.len; r.len = end;
    while (r.pos < end) {
      const [f, w] = r.tag();
      if (f === 1 && w === 2) eventId = r.string();
      else if (f === 2 && w === 2) deviceId = r.string();
      else if (f === 3 && w === 2) { const l = r.uint32(); const e = r.pos + l; let s = 0, n = 0; while (r.pos < e) { const [tf, tw] = r.tag(); if (tf === 1 && tw === 0) s = Number(r.int64()); else if (tf === 2 && tw === 0) n = r.int32(); else r.skip(tw, tf); } ms = s * 1000 + Math.round(n / 1e6); }
      else { if (f >= 10 && f <= 12) kind = f; r.skip(w, f); }
    }
    r.len = outerLen;
    out.push({ deviceId, eventId, ms, kind, start, end });
  }
  return out;
}
function time(name: string, fn: () => void) { fn(); const t = performance.now(); for (let i = 0; i < 3; i++) fn(); console.log(name, ((performance.now() - t) / 3 / 200000 * 1e3).toFixed(3), "µs/reading"); }
let decoded: any[] = [];
time("fromBinary frames", () => { decoded = frames.map((f) => fromBinary(StreamReadingsRequestSchema, f)); });
const all = decoded.flatMap((d) => d.readings);
time("toBinary batches of 2000", () => { for (let i = 0; i < all.length; i += 2000) toBinary(IngestReadingsRequestSchema, create(IngestReadingsRequestSchema, { readings: all.slice(i, i + 2000) })); });
time("scan frames", () => { for (const f of frames) scan(f); });
time("scan + concat", () => { for (let b = 0; b < frames.length; b += 20) { const parts = frames.slice(b, b + 20); for (const f of parts) scan(f); Buffer.concat(parts); } });
