// The operator console in a real browser: Debian's Chromium, driven by playwright-core, loads the
// page from the service and calls FleetService through Connect-Web — unary calls and the
// server-streaming WatchLiveState over HTTP/1.1 fetch — with authentication on, as an operator
// would use it. Skipped where /usr/bin/chromium is missing, unless REQUIRE_BROWSER=1 (CI).
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FleetService } from "../gen/wattstream/fleet/v1/fleet_service_pb.js";
import { devicesCli } from "./support/devices-cli.js";
import { GrpcIngestClient } from "./support/grpc-ingest-client.js";
import { batteryReading, meterReading, vehicleReading } from "./support/readings.js";
import { startTestService, testEnv, type TestService } from "./support/test-service.js";

const CHROMIUM = "/usr/bin/chromium";
const haveBrowser = existsSync(CHROMIUM);
if (!haveBrowser && process.env.REQUIRE_BROWSER === "1") {
  throw new Error(`REQUIRE_BROWSER=1 but ${CHROMIUM} is not installed (apt-get install -y chromium)`);
}

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

  const device = (id: string) => new GrpcIngestClient(app.target, { headers: { authorization: `Bearer ${tokens[id]}` } });

  beforeAll(async () => {
    const file = path.join(mkdtempSync(path.join(tmpdir(), "wattstream-console-")), "credentials.json");
    for (const id of ["meter-c", "ev-c", "bbu-c"]) tokens[id] = await devicesCli(file, "add", id);
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

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    });
    page = await browser.newPage();
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await app?.service.stop();
  });

  it("asks for an operator key, then shows the fleet summary and the alerts", async () => {
    const pageErrors: string[] = [];
    page.on("pageerror", (error) => pageErrors.push(error.message));
    await page.goto(`${app.baseUrl}/`);
    expect(page.url()).toBe(`${app.baseUrl}/console/`);
    // Without a key every call is refused, and the page says what to do.
    await expect.poll(() => page.getByTestId("summary").textContent(), { timeout: 10_000 }).toContain("enter an operator key");

    await page.fill("#api-key", operatorKey);
    await page.press("#api-key", "Enter");
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
    // The watch started with the page; with the key set it retries within its backoff.
    await expect.poll(() => page.getByTestId("connection").textContent(), { timeout: 40_000 }).toBe("live");
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
});
