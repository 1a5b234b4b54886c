// The operator console: FleetService from a browser through Connect-Web, as any browser client of
// the service would call it (unary calls and a server-streaming watch over HTTP/1.1 fetch). The
// service bundles this file when /console/console.js is first asked for (src/server/console-routes.ts).
// Device ids and messages come from devices and are shown with textContent, never as markup.
import { equals } from "@bufbuild/protobuf";
import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import {
  AlertKind,
  DeviceKind,
  DeviceLiveStateSchema,
  FleetService,
  HealthLevel,
  Recommendation,
  type DeviceLiveState,
} from "../gen/wattstream/fleet/v1/fleet_service_pb.js";

/** Most devices the live table shows: the most recently changed first. */
const LIVE_ROWS = 100;
/** How often the summary and the alerts are asked for again. */
const REFRESH_MS = 30_000;
/** The live table is redrawn at most this often, however fast changes arrive. */
const LIVE_REDRAW_MS = 250;
const API_KEY_STORAGE = "wattstream.apiKey";

const byId = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const apiKeyInput = byId<HTMLInputElement>("api-key");
apiKeyInput.value = sessionStorage.getItem(API_KEY_STORAGE) ?? "";

/** Sends the operator key, when one is set, as FleetService expects it with AUTH=on. */
const withApiKey: Interceptor = (next) => (req) => {
  const key = apiKeyInput.value.trim();
  if (key !== "") req.header.set("x-api-key", key);
  return next(req);
};
// Binary: a whole-fleet watch starts with every device's state, 81–94 bytes a device against
// 232–377 as JSON.
const fleet = createClient(FleetService, createConnectTransport({ baseUrl: location.origin, useBinaryFormat: true, interceptors: [withApiKey] }));

/** An element with text content and optional class. */
function el<K extends keyof HTMLElementTagNameMap>(tag: K, text = "", className = ""): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (text !== "") node.textContent = text;
  if (className !== "") node.className = className;
  return node;
}

function table(headings: readonly string[], rows: readonly (readonly (string | HTMLElement)[])[]): HTMLTableElement {
  const t = el("table");
  const head = t.createTHead().insertRow();
  for (const h of headings) head.append(el("th", h));
  const body = t.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    for (const cell of row) tr.append(typeof cell === "string" ? el("td", cell) : wrap(cell));
  }
  return t;
}

function wrap(content: HTMLElement): HTMLTableCellElement {
  const td = el("td");
  td.append(content);
  return td;
}

/** A list of named facts; fact() adds one, its value as text or as an element of its own. */
function factList(): { list: HTMLDListElement; fact(name: string, value: string | HTMLElement): void } {
  const list = el("dl");
  return { list, fact: (name, value) => list.append(el("dt", name), typeof value === "string" ? el("dd", value) : value) };
}

/** Shows "asking…" in target, then what render makes of the answer, or the error. */
function answerInto<T>(target: HTMLElement, answer: Promise<T>, render: (answer: T) => HTMLElement[]): void {
  target.replaceChildren(el("p", "asking…", "status"));
  answer.then(
    (value) => target.replaceChildren(...render(value)),
    (error: unknown) => showError(target, error),
  );
}

const time = (ts: Timestamp | undefined) => (ts === undefined ? "—" : timestampDate(ts).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z"));
const kwh = (value: number) => `${value.toLocaleString("en", { maximumFractionDigits: 2 })} kWh`;
const percent = (ratio: number) => `${(ratio * 100).toFixed(1)} %`;
/** An enum value's name without its prefix: HEALTH_LEVEL_CRITICAL → CRITICAL. */
const enumName = (names: Record<number, string>, value: number, prefix: string) => (names[value] ?? String(value)).replace(prefix, "");
const levelName = (level: HealthLevel) => enumName(HealthLevel, level, "").replace(/^UNSPECIFIED$/, "—");

/**
 * A device id that opens the device where the console can say more of it: a vehicle's
 * performance, a battery unit's health. Other kinds are plain text.
 */
function deviceLink(deviceId: string, kind: "vehicle" | "battery" | undefined): HTMLElement {
  if (kind === undefined) return el("span", deviceId);
  const button = el("button", deviceId, "device");
  button.type = "button";
  button.title = kind === "vehicle" ? "show its charging efficiency" : "show its health trend";
  button.addEventListener("click", () => (kind === "vehicle" ? askPerformance(deviceId) : askHealth(deviceId)));
  return button;
}

const ALERT_DEVICE_KINDS: Partial<Record<AlertKind, "vehicle" | "battery">> = {
  [AlertKind.LOW_EFFICIENCY]: "vehicle",
  [AlertKind.BATTERY_CRITICAL]: "battery",
  [AlertKind.BATTERY_FALLING]: "battery",
};

/** Shows a failed call where its answer would be, saying what to do about it. */
function showError(target: HTMLElement, error: unknown): void {
  const e = ConnectError.from(error);
  const hint =
    e.code === Code.Unauthenticated || e.code === Code.PermissionDenied ? " — enter an operator key (npm run devices -- key add NAME --role operator)" : "";
  target.replaceChildren(el("p", `${Code[e.code]}: ${e.rawMessage}${hint}`, "error"));
}

async function showSummary(): Promise<void> {
  const target = byId("summary");
  try {
    const s = await fleet.getFleetSummary({ windowHours: 24 });
    byId("summary-window").textContent = `${time(s.windowStart)} – ${time(s.windowEnd)}`;
    const { list: facts, fact } = factList();
    fact("AC consumed", kwh(s.totalKwhConsumedAc));
    fact("DC delivered", kwh(s.totalKwhDeliveredDc));
    fact("online / offline", `${s.onlineDevices} / ${s.offlineDevices}`);
    fact("battery units", s.batteryLevels.map((l) => `${levelName(l.level)} ${l.devices}`).join(", ") || "—");
    fact("without efficiency", `${s.vehiclesWithoutEfficiency} vehicles`);
    const most = Math.max(1, ...s.efficiencyBuckets.map((b) => Number(b.vehicles)));
    const buckets = table(
      ["efficiency", "vehicles", ""],
      s.efficiencyBuckets.map((b) => {
        const bar = el("span", "", "bar");
        bar.style.width = `${(Number(b.vehicles) / most) * 12}rem`;
        const range = b.upperBound === undefined ? `≥ ${percent(b.lowerBound)}` : `${percent(b.lowerBound)} – ${percent(b.upperBound)}`;
        return [range, String(b.vehicles), bar];
      }),
    );
    target.replaceChildren(facts, buckets);
  } catch (error) {
    showError(target, error);
  }
}

async function showAlerts(): Promise<void> {
  const target = byId("alerts");
  try {
    const { alerts, nextPageToken } = await fleet.listAlerts({ pageSize: 50 });
    byId("alerts-count").textContent = `${alerts.length}${nextPageToken === "" ? "" : "+"}, newest first`;
    target.replaceChildren(
      alerts.length === 0
        ? el("p", "No alerts.")
        : table(
            ["kind", "device", "detected", "what"],
            alerts.map((a) => [
              enumName(AlertKind, a.kind, "").toLowerCase().replaceAll("_", " "),
              deviceLink(a.deviceId, ALERT_DEVICE_KINDS[a.kind]),
              time(a.detectedAt),
              a.message,
            ]),
          ),
    );
  } catch (error) {
    showError(target, error);
  }
}

byId<HTMLFormElement>("performance-form").addEventListener("submit", (event) => {
  event.preventDefault();
  askPerformance(byId<HTMLInputElement>("vehicle-id").value.trim());
});

function askPerformance(vehicleId: string): void {
  byId<HTMLInputElement>("vehicle-id").value = vehicleId;
  const windowHours = Number(byId<HTMLInputElement>("window-hours").value) || 24;
  answerInto(byId("performance"), fleet.getVehiclePerformance({ vehicleId, windowHours }), (p) => {
    const { list, fact } = factList();
    fact("window", `${time(p.windowStart)} – ${time(p.windowEnd)}`);
    fact("AC consumed", kwh(p.totalKwhConsumedAc));
    fact("DC delivered", kwh(p.totalKwhDeliveredDc));
    fact("efficiency (DC/AC)", percent(p.efficiencyRatio));
    fact("avg battery temperature", `${p.avgBatteryTemp.toFixed(1)} °C`);
    fact("readings", `${p.vehicleReadingCount} vehicle, ${p.meterReadingCount} meter`);
    const alert = p.alert !== undefined && p.alert.kind !== AlertKind.UNSPECIFIED ? el("p", p.alert.message, "error") : el("p", "No alert.");
    return [list, alert];
  });
}

byId<HTMLFormElement>("health-form").addEventListener("submit", (event) => {
  event.preventDefault();
  askHealth(byId<HTMLInputElement>("battery-id").value.trim());
});

function askHealth(deviceId: string): void {
  byId<HTMLInputElement>("battery-id").value = deviceId;
  const windowHours = Number(byId<HTMLInputElement>("health-hours").value) || 24;
  answerInto(byId("health"), fleet.getDeviceHealth({ deviceId, windowHours }), (h) => {
    const { list, fact } = factList();
    const latest = h.latest;
    if (latest !== undefined) {
      const level = levelName(latest.healthLevel);
      fact("latest score", el("dd", `${latest.healthScore} of 100, ${level}`, `level-${level}`));
      fact("recommendation", enumName(Recommendation, latest.recommendation, "").toLowerCase());
      fact("scored by", `version ${latest.scoreVersion}`);
    }
    fact("observed", time(h.observedAt));
    fact("trend window", `${time(h.windowStart)} – ${time(h.windowEnd)}`);
    if (h.trend.length === 0) return [list, el("p", "No scored readings in the window.")];
    // Each hour's range of scores as a bar from its lowest to its highest, the mean beside it.
    const trend = table(
      ["hour", "min – max", "", "mean", "readings"],
      h.trend.map((p) => {
        const bar = el("span", "", "trend");
        bar.style.marginLeft = `${p.minHealthScore / 10}rem`;
        bar.style.width = `${Math.max(0.15, (p.maxHealthScore - p.minHealthScore) / 10)}rem`;
        return [time(p.hourStart), `${p.minHealthScore} – ${p.maxHealthScore}`, bar, p.avgHealthScore.toFixed(1), String(p.readingCount)];
      }),
    );
    return [list, trend];
  });
}

/** One line of what a device's newest reading says. */
function describeSample(state: DeviceLiveState): string {
  const s = state.sample;
  switch (s.case) {
    case "meter":
      return `${s.value.kwhConsumedAc} kWh AC, ${s.value.voltage} V`;
    case "vehicle":
      return `SoC ${s.value.soc} %, ${s.value.kwhDeliveredDc} kWh DC, ${s.value.batteryTemp} °C`;
    case "battery":
      return `${s.value.voltage} V, ${s.value.temperature} °C${s.value.errorCodes.length > 0 ? `, errors ${s.value.errorCodes.join(" ")}` : ""}`;
    default:
      return "";
  }
}

function describeScore(state: DeviceLiveState): HTMLElement {
  const s = state.score;
  if (s.case === "batteryScore") return el("span", `${s.value.healthScore} ${levelName(s.value.healthLevel)}`, `level-${levelName(s.value.healthLevel)}`);
  if (s.case === "vehicleScore") return el("span", `temp risk ${levelName(s.value.tempRisk)}`, `level-${levelName(s.value.tempRisk)}`);
  return el("span", "—");
}

// Live state: the watch's first answers are every device's current state, then each change. The
// map's order is the order of the latest change, so the table shows what moved last first.
const live = new Map<string, DeviceLiveState>();
let redrawTimer: number | undefined;
function scheduleRedraw(): void {
  redrawTimer ??= window.setTimeout(() => {
    redrawTimer = undefined;
    drawLive();
  }, LIVE_REDRAW_MS);
}

function drawLive(): void {
  const filter = byId<HTMLInputElement>("live-filter").value.trim();
  const shown: DeviceLiveState[] = [];
  for (const state of [...live.values()].reverse()) {
    if (filter !== "" && !state.deviceId.includes(filter)) continue;
    shown.push(state);
    if (shown.length === LIVE_ROWS) break;
  }
  byId("live-count").textContent = `${live.size} devices; ${shown.length} shown, most recently changed first`;
  byId("live").replaceChildren(
    table(
      ["device", "kind", "observed", "last seen", "", "newest reading", "score"],
      shown.map((s) => [
        deviceLink(s.deviceId, s.kind === DeviceKind.VEHICLE ? "vehicle" : s.kind === DeviceKind.BATTERY ? "battery" : undefined),
        enumName(DeviceKind, s.kind, "").toLowerCase(),
        time(s.observedAt),
        time(s.lastSeen),
        el("span", s.online ? "online" : "offline", s.online ? "" : "offline"),
        describeSample(s),
        describeScore(s),
      ]),
    ),
  );
}
byId<HTMLInputElement>("live-filter").addEventListener("input", drawLive);
byId<HTMLFormElement>("live-filter-form").addEventListener("submit", (event) => event.preventDefault());

/** Ends the current watch, or the wait before the next, so the watch starts again at once. */
let restartWatch = () => {};

/** Watches the whole fleet for as long as the page is open, reconnecting with backoff. */
async function watchLive(): Promise<void> {
  const status = byId("connection");
  let retryMs = 1_000;
  for (;;) {
    const attempt = new AbortController();
    restartWatch = () => {
      retryMs = 1_000;
      attempt.abort();
    };
    try {
      status.textContent = "watching live state…";
      for await (const { device } of fleet.watchLiveState({}, { signal: attempt.signal })) {
        if (device === undefined) continue;
        retryMs = 1_000;
        status.textContent = "live";
        // A watch starts with every device's current state: after a reconnect, what the table
        // already shows is no change and keeps its place.
        const shown = live.get(device.deviceId);
        if (shown !== undefined && equals(DeviceLiveStateSchema, shown, device)) continue;
        live.delete(device.deviceId);
        live.set(device.deviceId, device);
        scheduleRedraw();
      }
      status.textContent = `the watch ended; again in ${retryMs / 1000} s`;
    } catch (error) {
      const e = ConnectError.from(error);
      if (!attempt.signal.aborted) status.textContent = `live state unavailable (${Code[e.code]}: ${e.rawMessage}); again in ${retryMs / 1000} s`;
    }
    if (!attempt.signal.aborted) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, retryMs);
        attempt.signal.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    if (!attempt.signal.aborted) retryMs = Math.min(retryMs * 2, 30_000);
  }
}

function refresh(): void {
  void showSummary();
  void showAlerts();
}

apiKeyInput.addEventListener("change", () => {
  sessionStorage.setItem(API_KEY_STORAGE, apiKeyInput.value.trim());
  refresh();
  // A watch refused for want of a key would otherwise wait out its backoff (up to 30 s).
  restartWatch();
});
refresh();
setInterval(refresh, REFRESH_MS);
void watchLive();
