// Compiles the service to JavaScript in dist/, file for file (src/ and gen/, without tests), which
// is what `npm start` and the container run. Running the TypeScript through tsx instead costs a
// running service memory: tsx has esbuild keep every function's name by wrapping it in a call that
// redefines `name`, which gives each closure made at run time a property store of its own — ~1.3 kB
// more heap per open device stream, measured with bench/stream-heap.ts — and its loader holds ~7 MB.
// The files read at run time beside the code (clickhouse/'s migrations, web/'s console) are copied
// into dist/ where the compiled modules look for them. Takes about a second.
//   node scripts/build.mjs
import { cpSync, readdirSync, rmSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));
const outdir = path.join(root, "dist");

const sources = ["src", "gen"].flatMap((dir) =>
  readdirSync(path.join(root, dir), { recursive: true, encoding: "utf8" })
    .filter((file) => file.endsWith(".ts") && !file.endsWith(".test.ts") && !file.endsWith(".d.ts"))
    .map((file) => path.join(root, dir, file)),
);

rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: sources,
  outbase: root,
  outdir,
  format: "esm",
  platform: "node",
  target: "node22",
  // Stack traces point at the TypeScript (with node --enable-source-maps).
  sourcemap: "linked",
  logLevel: "warning",
});
for (const dir of ["clickhouse", "web"]) cpSync(path.join(root, dir), path.join(outdir, dir), { recursive: true });
