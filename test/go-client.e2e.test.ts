// A backend team's client in Go: grpc-go with stubs that buf generates from proto/
// (examples/go/buf.gen.yaml, local plugins protoc-gen-go and protoc-gen-go-grpc), the example in
// examples/go built and run against the real service — client streaming, bidi SyncReadings, a
// server-streaming watch and the fleet calls, with authentication on over h2c and off over TLS
// (the checks: test/support/example-client-suites.ts). Built in GOPATH mode against Debian's Go
// packages, as this machine has no module proxy. Skipped where they are missing, unless
// REQUIRE_GO=1 (CI; Debian: golang-go protoc-gen-go protoc-gen-go-grpc golang-google-grpc-dev
// golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev).
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { beforeAll, describe } from "vitest";
import { exampleClientSuites, onPath, type DemoReport, type RetriedSend } from "./support/example-client-suites.js";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const exampleDir = path.join(repoRoot, "examples/go");
const run = promisify(execFile);

/** Where Debian's Go packages keep their sources (GOPATH mode). */
const DEBIAN_GOPATH = "/usr/share/gocode";

const haveGo =
  onPath("go") &&
  onPath("protoc-gen-go") &&
  onPath("protoc-gen-go-grpc") &&
  existsSync(path.join(DEBIAN_GOPATH, "src/google.golang.org/grpc")) &&
  // grpc-go's codec needs the APIv1 shim over APIv2 messages (1.5); the 1.3 package cannot read them.
  existsSync(path.join(DEBIAN_GOPATH, "src/github.com/golang/protobuf/proto/registry.go"));
if (!haveGo && process.env.REQUIRE_GO === "1") {
  throw new Error(
    "REQUIRE_GO=1 but Go, its protoc plugins or Debian's gRPC packages are missing (apt-get install -y golang-go protoc-gen-go " +
      "protoc-gen-go-grpc golang-google-grpc-dev golang-google-protobuf-dev golang-github-golang-protobuf-1-5-dev)",
  );
}

let demo: string;

describe.skipIf(!haveGo)("a Go client (grpc-go) with stubs generated from proto/", () => {
  beforeAll(async () => {
    // The stubs, generated as a backend team would (buf, the example's template, local plugins),
    // into a GOPATH of their own, then the example built against them.
    const gopath = mkdtempSync(path.join(tmpdir(), "wattstream-go-"));
    await run(path.join(repoRoot, "node_modules/.bin/buf"), ["generate", "--template", "examples/go/buf.gen.yaml", "-o", gopath], { cwd: repoRoot });
    demo = path.join(gopath, "wattstream-demo");
    await run("go", ["build", "-o", demo, "."], {
      cwd: exampleDir,
      env: { ...process.env, GO111MODULE: "off", GOPATH: `${gopath}:${DEBIAN_GOPATH}`, GOFLAGS: "", GOCACHE: path.join(tmpdir(), "wattstream-go-build-cache") },
      timeout: 180_000,
    });
  }, 200_000);

  const goRun = async (args: string[], env: Record<string, string> = {}) =>
    (await run(demo, args, { env: { ...process.env, ...env }, timeout: 60_000 })).stdout;

  exampleClientSuites({
    idPrefix: "go",
    runDemo: async (target, runId, env, extraArgs = []) =>
      JSON.parse(await goRun(["--target", target, "--run", runId, "--json", ...extraArgs], env)) as DemoReport,
    sendWithRetries: async (target, meterId) => JSON.parse(await goRun(["--target", target, "--send-with-retries", meterId])) as RetriedSend,
  });
});
