// Browsers as clients, in a real one: Debian's Chromium, driven by playwright-core. The operator
// console loads from the service and calls FleetService through Connect-Web — unary calls and the
// server-streaming WatchLiveState over HTTP/1.1 fetch — with authentication on, as an operator
// would use it, and over TLS, where the browser speaks HTTP/2; and a page of another origin calls
// it over Connect and gRPC-Web when CORS_ORIGINS lets it, and cannot when it does not. Skipped where /usr/bin/chromium is missing, unless
// REQUIRE_BROWSER=1 (CI).
import { existsSync, mkdtempSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { build } from "esbuild";
import getPort from "get-port";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FleetService, HealthLevel } from "../gen/wattstream/fleet/v1/fleet_service_pb.js";
import { IngestService } from "../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { devicesCli } from "./support/devices-cli.js";
import { GrpcIngestClient } from "./support/grpc-ingest-client.js";
import { batteryReading, meterReading, vehicleReading } from "./support/readings.js";
import { selfSignedCertificate } from "./support/self-signed.js";
import { startTestService, testEnv, type TestService } from "./support/test-service.js";

const CHROMIUM = "/usr/bin/chromium";
const haveBrowser = existsSync(CHROMIUM);
if (!haveBrowser && process.env.REQUIRE_BROWSER === "1") {
  throw new Error(`REQUIRE_BROWSER=1 but ${CHROMIUM} is not installed (apt-get install -y chromium)`);
}

const launchChromium = () =>
  chromium.launch({ executablePath: CHROMIUM, args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"] });

const credentialsFile = () => path.join(mkdtempSync(path.join(tmpdir(), "wattstream-browser-")), "credentials.json");

describe.skipIf(!haveBrowser)("the operator console in Chromium", () => {
  let app: TestService;
  let browser: Browser;
  let page: Page;
  const tokens: Record<string, string> = {};
  let operatorKey: string;
  const now = Date.now();
  // Whole minutes before this one: fleet-wide windows and the default performance window end at
  // the start of the current minute.
  const observedAtMs = now - 3 * 60_000;

  // A device id is whatever a registered device sends (printable, no spaces); the console must
  // show it as text, never run it.
  const HOSTILE_ID = "<svg/onload=window.__hostile=1>";
  const device = (id: string) => new GrpcIngestClient(app.target, { headers: { authorization: `Bearer ${tokens[id]}` } });

  beforeAll(async () => {
    const file = credentialsFile();
    for (const id of ["meter-c", "ev-c", "bbu-c", HOSTILE_ID]) tokens[id] = await devicesCli(file, "add", id);
    operatorKey = await devicesCli(file, "key", "add", "console", "--role", "operator");
    app = await startTestService(testEnv({ AUTH: "on", CREDENTIALS_FILE: file }));

    // The seeds' example: 150 kWh AC from the meter, 120 kWh DC into the vehicle — 80 %, an alert.
    const fleet = createClient(FleetService, createGrpcTransport({ baseUrl: app.baseUrl }));
    await fleet.linkVehicleToMeter(
      { vehicleId: "ev-c", meterId: "meter-c", validFrom: timestampFromMs(now - 3_600_000) },
      { headers: { "x-api-key": operatorKey } },
    );
    expect((await device("meter-c").streamReadings([[meterReading("meter-c", "m-1", observedAtMs, 150)]])).accepted).toBe(1n);
    expect((await device("ev-c").streamReadings([[vehicleReading("ev-c", "v-1", observedAtMs, 120, 60, 31)]])).accepted).toBe(1n);

    browser = await launchChromium();
    page = await browser.newPage();
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await app?.service.stop();
  });

  it("asks for an operator key, then shows the fleet summary and the alerts", async () => {
    const pageErrors: string[] = [];
    page.on("pageerror", (error) => pageErrors.push(error.message));
    // Calls refused without a key log their 401s; nothing else may be logged as an error — a
    // missing file (the browser logs a 404 even for an icon it looks for on its own), a resource
    // the page's content security policy refuses.
    const consoleErrors: string[] = [];
    page.on("console", (message) => message.type() === "error" && !message.text().includes("401 (Unauthorized)") && consoleErrors.push(message.text()));
    await page.goto(`${app.baseUrl}/`);
    expect(page.url()).toBe(`${app.baseUrl}/console/`);
    // Without a key every call is refused, and the page says what to do.
    await expect.poll(() => page.getByTestId("summary").textContent(), { timeout: 10_000 }).toContain("enter an operator key");

    // The watch is refused too, and backs off: 1 s, 2 s, then 4 s between attempts.
    await expect.poll(() => page.getByTestId("connection").textContent(), { timeout: 10_000 }).toMatch(/Unauthenticated.*again in 4 s/);

    await page.fill("#api-key", operatorKey);
    await page.press("#api-key", "Enter");
    // Entering a key starts the watch again at once rather than after the backoff.
    await expect.poll(() => page.getByTestId("connection").textContent(), { timeout: 3_000 }).toBe("live");
    await expect.poll(() => page.getByTestId("summary").textContent(), { timeout: 10_000 }).toContain("150 kWh");
    const summary = await page.getByTestId("summary").textContent();
    expect(summary).toContain("120 kWh");
    // One vehicle in the 80–90 % bucket.
    expect(await page.getByTestId("summary").locator("tr", { hasText: "80.0 % – 90.0 %" }).locator("td").nth(1).textContent()).toBe("1");

    await expect.poll(() => page.getByTestId("alerts").textContent(), { timeout: 10_000 }).toContain("ev-c");
    const alertRow = page.getByTestId("alerts").locator("tr", { hasText: "ev-c" });
    expect(await alertRow.textContent()).toContain("low efficiency");
    expect(await alertRow.textContent()).toContain("80.0 %");
    expect(pageErrors).toEqual([]);
    expect(consoleErrors).toEqual([]);
  }, 30_000);

  it("answers a vehicle's performance from the form", async () => {
    await page.fill("#vehicle-id", "ev-c");
    await page.click("#performance-form button");
    await expect.poll(() => page.getByTestId("performance").textContent(), { timeout: 10_000 }).toContain("80.0 %");
    const answer = await page.getByTestId("performance").textContent();
    expect(answer).toContain("150 kWh");
    expect(answer).toContain("120 kWh");
    expect(answer).toContain("31.0 °C");
    expect(answer).toContain("1 vehicle, 1 meter");
    expect(answer).toContain("below the 85.0 % threshold");
  }, 30_000);

  it("watches live state: every device first, then a reading stored while the page is open", async () => {
    await expect.poll(() => page.getByTestId("connection").textContent(), { timeout: 10_000 }).toBe("live");
    await expect.poll(() => page.getByTestId("live-count").textContent(), { timeout: 10_000 }).toMatch(/^2 devices/);
    const live = page.getByTestId("live");
    expect(await live.locator("tr", { hasText: "meter-c" }).textContent()).toContain("150 kWh AC");
    expect(await live.locator("tr", { hasText: "ev-c" }).textContent()).toContain("SoC 60 %");

    expect((await device("bbu-c").streamReadings([[batteryReading("bbu-c", "b-1", now - 1_000, 44.1, 58, ["E12"])]])).accepted).toBe(1n);
    await expect.poll(() => live.locator("tr", { hasText: "bbu-c" }).count(), { timeout: 10_000 }).toBe(1);
    const row = await live.locator("tr", { hasText: "bbu-c" }).textContent();
    expect(row).toContain("44.1 V, 58 °C, errors E12");
    expect(row).toContain("online");
    // Newest change first.
    expect(await live.locator("tbody tr").first().textContent()).toContain("bbu-c");
    expect(await page.getByTestId("live-count").textContent()).toMatch(/^3 devices/);
  }, 60_000);

  it("keeps the live table's order when the watch starts again and every device is sent anew", async () => {
    const live = page.getByTestId("live");
    const order = async () => (await live.locator("tbody tr td:first-child").allTextContents()).map((id) => id.trim());
    const before = await order();
    expect(before[0]).toBe("bbu-c");
    // The key input's change restarts the watch, as entering a key does.
    await page.locator("#api-key").dispatchEvent("change");
    await expect.poll(() => page.getByTestId("connection").textContent(), { timeout: 10_000 }).toBe("live");
    // Long enough for the resent states to arrive and the table to redraw (250 ms after a change).
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(await order()).toEqual(before);
  }, 30_000);

  it("shows a device id holding markup as text, and runs none of it", async () => {
    expect((await device(HOSTILE_ID).streamReadings([[meterReading(HOSTILE_ID, "h-1", Date.now() - 1_000, 0.1)]])).accepted).toBe(1n);
    const live = page.getByTestId("live");
    await expect.poll(() => live.locator("td", { hasText: HOSTILE_ID }).count(), { timeout: 10_000 }).toBe(1);
    expect(await live.locator("svg").count()).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { __hostile?: number }).__hostile)).toBeUndefined();
  }, 30_000);

  it("opens a battery unit's health from the live table, as GetDeviceHealth answers it", async () => {
    const fleet = createClient(FleetService, createGrpcTransport({ baseUrl: app.baseUrl }));
    const health = await fleet.getDeviceHealth({ deviceId: "bbu-c" }, { headers: { "x-api-key": operatorKey } });
    const level = HealthLevel[health.latest!.healthLevel];
    expect(health.trend).toHaveLength(1);

    await page.getByTestId("live").getByRole("button", { name: "bbu-c" }).click();
    await expect.poll(() => page.getByTestId("health").textContent(), { timeout: 10_000 }).toContain(`${health.latest!.healthScore} of 100, ${level}`);
    const rows = page.getByTestId("health").locator("tbody tr");
    expect(await rows.count()).toBe(1);
    const point = health.trend[0]!;
    expect(await rows.first().textContent()).toContain(`${point.minHealthScore} – ${point.maxHealthScore}`);
    expect(await rows.first().textContent()).toContain(point.avgHealthScore.toFixed(1));
  }, 30_000);

  it("opens a vehicle's performance from its alert", async () => {
    await page.fill("#vehicle-id", "");
    await page.getByTestId("performance").evaluate((node) => node.replaceChildren());
    await page.getByTestId("alerts").getByRole("button", { name: "ev-c" }).click();
    await expect.poll(() => page.getByTestId("performance").textContent(), { timeout: 10_000 }).toContain("80.0 %");
    expect(await page.inputValue("#vehicle-id")).toBe("ev-c");
  }, 30_000);
});

/** What the other origin's page answers for one protocol (see BROWSER_CLIENT). */
interface CrossOriginAnswer {
  readonly error?: string;
  readonly kwhConsumedAc?: number;
  readonly watched?: string;
  readonly withoutKey?: string;
}

// A browser client as a team's own dashboard would write it: Connect-Web, its own origin, the
// operator key in a header. run(protocol) answers what it saw; a call that fails answers its code.
const BROWSER_CLIENT = `
import { ConnectError, Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { FleetService } from "./gen/wattstream/fleet/v1/fleet_service_pb.ts";
window.run = async (baseUrl, apiKey, protocol) => {
  const transport = protocol === "grpc-web" ? createGrpcWebTransport({ baseUrl }) : createConnectTransport({ baseUrl });
  const fleet = createClient(FleetService, transport);
  const headers = { "x-api-key": apiKey };
  const codeOf = (e) => Code[ConnectError.from(e).code];
  try {
    const summary = await fleet.getFleetSummary({}, { headers });
    const watch = new AbortController();
    let watched;
    for await (const { device } of fleet.watchLiveState({ deviceIds: ["meter-x"] }, { headers, signal: watch.signal })) {
      watched = device.deviceId;
      break;
    }
    watch.abort();
    const withoutKey = await fleet.getFleetSummary({}).then(() => "OK", codeOf);
    return { kwhConsumedAc: summary.totalKwhConsumedAc, watched, withoutKey };
  } catch (e) {
    return { error: codeOf(e) + ": " + ConnectError.from(e).rawMessage };
  }
};
`;

describe.skipIf(!haveBrowser)("a page of another origin, in Chromium", () => {
  let app: TestService;
  let browser: Browser;
  let operatorKey: string;
  let allowed: http.Server;
  let other: http.Server;
  const origin = (server: http.Server) => `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  /** Serves a blank page and the bundled client, as another team's web server would. */
  async function servePages(port: number, script: Uint8Array): Promise<http.Server> {
    const server = http.createServer((req, res) => {
      if (req.url === "/client.js") {
        res.writeHead(200, { "content-type": "text/javascript" });
        res.end(script);
        return;
      }
      res.writeHead(200, { "content-type": "text/html" });
      res.end('<!doctype html><title>dashboard</title><script type="module" src="/client.js"></script>');
    });
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
    return server;
  }

  beforeAll(async () => {
    const file = credentialsFile();
    const meterToken = await devicesCli(file, "add", "meter-x");
    operatorKey = await devicesCli(file, "key", "add", "dashboard", "--role", "operator");
    const allowedPort = await getPort();
    app = await startTestService(testEnv({ AUTH: "on", CREDENTIALS_FILE: file, CORS_ORIGINS: `http://127.0.0.1:${allowedPort}` }));
    const meter = new GrpcIngestClient(app.target, { headers: { authorization: `Bearer ${meterToken}` } });
    expect((await meter.streamReadings([[meterReading("meter-x", "x-1", Date.now() - 3 * 60_000, 42)]])).accepted).toBe(1n);

    const bundle = await build({
      stdin: { contents: BROWSER_CLIENT, resolveDir: path.resolve(import.meta.dirname, ".."), loader: "ts" },
      bundle: true,
      write: false,
      format: "esm",
      platform: "browser",
      logLevel: "silent",
    });
    allowed = await servePages(allowedPort, bundle.outputFiles[0]!.contents);
    other = await servePages(await getPort(), bundle.outputFiles[0]!.contents);
    browser = await launchChromium();
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    allowed?.close();
    other?.close();
    await app?.service.stop();
  });

  async function runIn(server: http.Server, protocol: "connect" | "grpc-web"): Promise<CrossOriginAnswer> {
    const page = await browser.newPage();
    try {
      await page.goto(`${origin(server)}/`);
      await page.waitForFunction(() => "run" in window);
      return await page.evaluate(
        ([baseUrl, apiKey, p]) => (window as unknown as { run(...args: string[]): Promise<CrossOriginAnswer> }).run(baseUrl!, apiKey!, p!),
        [app.baseUrl, operatorKey, protocol],
      );
    } finally {
      await page.close();
    }
  }

  it("calls and watches through Connect and gRPC-Web from an origin CORS_ORIGINS names, with its key in a header", async () => {
    for (const protocol of ["connect", "grpc-web"] as const) {
      // Refused without the key, and the page can read why.
      expect(await runIn(allowed, protocol)).toEqual({ kwhConsumedAc: 42, watched: "meter-x", withoutKey: "Unauthenticated" });
    }
  }, 30_000);

  it("cannot call from any other origin: the browser gets no answer to read", async () => {
    const answer = await runIn(other, "connect");
    expect(answer.error).toMatch(/^Unknown: .*fetch/i);
  }, 30_000);

  it("answers a preflight with what connect's protocols and the service's credentials need", async () => {
    const response = await fetch(`${app.baseUrl}/wattstream.fleet.v1.FleetService/GetFleetSummary`, {
      method: "OPTIONS",
      headers: {
        origin: origin(allowed),
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,connect-protocol-version,x-api-key",
      },
    });
    expect(response.status).toBe(204);
    expect(response.headers.get("access-control-allow-origin")).toBe(origin(allowed));
    const allowedHeaders = response.headers.get("access-control-allow-headers")!.toLowerCase().split(",");
    expect(allowedHeaders).toEqual(expect.arrayContaining(["content-type", "connect-protocol-version", "x-api-key", "authorization", "x-grpc-web"]));
    expect(response.headers.get("access-control-allow-credentials")).toBeNull();
  });
});

describe.skipIf(!haveBrowser)("the console over TLS, in Chromium", () => {
  let app: TestService;
  let browser: Browser;
  let ca: Buffer;
  beforeAll(async () => {
    const certificate = selfSignedCertificate();
    ca = certificate.ca;
    app = await startTestService(testEnv({ TLS_CERT: certificate.certFile, TLS_KEY: certificate.keyFile }));
    browser = await launchChromium();
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await app?.service.stop();
  });

  it("loads over HTTP/2 negotiated by ALPN, and its watch streams a reading stored meanwhile", async () => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    try {
      await page.goto(`https://127.0.0.1:${app.service.port}/`);
      expect(await page.evaluate(() => (performance.getEntriesByType("navigation")[0] as PerformanceNavigationTiming).nextHopProtocol)).toBe("h2");
      await expect.poll(() => page.getByTestId("connection").textContent(), { timeout: 10_000 }).toMatch(/^watching|^live/);
      await expect.poll(() => page.getByTestId("summary").textContent(), { timeout: 10_000 }).toContain("online / offline");

      const ingest = createClient(IngestService, createGrpcTransport({ baseUrl: `https://127.0.0.1:${app.service.port}`, nodeOptions: { ca } }));
      expect((await ingest.ingestReadings({ readings: [meterReading("meter-tls-console", "t-1", Date.now(), 0.7)] })).accepted).toBe(1n);
      await expect.poll(() => page.getByTestId("live").locator("tr", { hasText: "meter-tls-console" }).count(), { timeout: 10_000 }).toBe(1);
      expect(await page.getByTestId("connection").textContent()).toBe("live");
    } finally {
      await context.close();
    }
  }, 30_000);
});
