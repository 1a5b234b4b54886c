// A backend team's client in another language: Python's stock gRPC stack (grpcio, the C core)
// with stubs that buf generates from proto/ (examples/python/buf.gen.yaml, local plugins only),
// running the example in examples/python against the real service — client streaming, bidi
// SyncReadings, a server-streaming watch and the fleet calls, with authentication on over h2c and
// off over TLS (the checks: test/support/example-client-suites.ts). Skipped where Python's grpcio
// or the protoc plugins are missing, unless REQUIRE_PYTHON=1 (CI; Debian: python3-grpcio
// python3-protobuf protobuf-compiler protobuf-compiler-grpc).
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { beforeAll, describe } from "vitest";
import { exampleClientSuites, onPath, type DemoReport, type RetriedSend } from "./support/example-client-suites.js";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const exampleDir = path.join(repoRoot, "examples/python");
const run = promisify(execFile);

/** The first Python that has grpcio and protobuf: $PYTHON, Debian's, then the one on PATH. */
function findPython(): string | undefined {
  for (const candidate of [process.env.PYTHON, "/usr/bin/python3", "python3"]) {
    if (!candidate) continue;
    try {
      execFileSync(candidate, ["-c", "import grpc, google.protobuf"], { stdio: "ignore" });
      return candidate;
    } catch {
      // not this one
    }
  }
  return undefined;
}

const python = findPython();
const havePython = python !== undefined && onPath("protoc") && onPath("grpc_python_plugin");
if (!havePython && process.env.REQUIRE_PYTHON === "1") {
  throw new Error(
    "REQUIRE_PYTHON=1 but Python's grpcio or protoc with grpc_python_plugin is missing " +
      "(apt-get install -y python3-grpcio python3-protobuf protobuf-compiler protobuf-compiler-grpc)",
  );
}

let genDir: string;

describe.skipIf(!havePython)("a Python client (grpcio) with stubs generated from proto/", () => {
  beforeAll(async () => {
    // The stubs, generated as a backend team would: buf with the example's template, local plugins.
    const out = mkdtempSync(path.join(tmpdir(), "wattstream-python-"));
    await run(path.join(repoRoot, "node_modules/.bin/buf"), ["generate", "--template", "examples/python/buf.gen.yaml", "-o", out], { cwd: repoRoot });
    genDir = path.join(out, "examples/python/gen");
  });

  const pythonRun = async (args: string[], env: Record<string, string> = {}) =>
    (await run(python!, args, { cwd: exampleDir, env: { ...process.env, WATTSTREAM_PY_GEN: genDir, ...env }, timeout: 60_000 })).stdout;

  exampleClientSuites({
    idPrefix: "py",
    runDemo: async (target, runId, env, extraArgs = []) =>
      JSON.parse(await pythonRun(["demo.py", "--target", target, "--run", runId, "--json", ...extraArgs], env)) as DemoReport,
    sendWithRetries: async (target, meterId) => {
      // The example's Device, retrying as its docstring says a device must.
      const script = [
        "import json, sys, time",
        "from wattstream_client import Device, meter_reading, open_channel",
        "now = int(time.time() * 1000)",
        "device = Device(open_channel(sys.argv[1]), sys.argv[2])",
        "readings = [meter_reading(sys.argv[2], now - 60_000 * (i + 1), 1.0, 230.0) for i in range(20)]",
        "started = time.monotonic()",
        "result = device.send(readings, per_message=5)",
        "print(json.dumps({'accepted': result.accepted, 'duplicates': result.duplicates, 'rejected': len(result.rejected), 'calls': result.calls, 'seconds': time.monotonic() - started}))",
      ].join("\n");
      return JSON.parse(await pythonRun(["-c", script, target, meterId])) as RetriedSend;
    },
  });
});
