const live = Array.from({ length: 2000 }, (_, i) => ({
  deviceId: `bbu-${i}`, kind: "battery", observedAtMs: 1764000000000 + i,
  values: { event_id: `run-abc-w0-${i}`, voltage: 48.1, temperature: 30, error_codes: [], health_score: 87.5, health_level: 1, recommendation: "ok", score_version: "battery-health/2" },
  trend: { ewmaVoltage: 48.1, ewmaTemp: 30, lastMs: 1764000000000, samples: 12 },
}));
function time(name: string, fn: () => void) { for (let i = 0; i < 20; i++) fn(); const t = performance.now(); for (let i = 0; i < 200; i++) fn(); console.log(name, ((performance.now() - t) / 200 / 2000 * 1e3).toFixed(3), "µs/update"); }
time("structuredClone objects", () => structuredClone(live));
time("stringify values+trend per update", () => live.map((u) => ({ deviceId: u.deviceId, kind: u.kind, observedAtMs: u.observedAtMs, values: JSON.stringify(u.values), trend: JSON.stringify(u.trend) })));
const strs = live.map((u) => ({ deviceId: u.deviceId, kind: u.kind, observedAtMs: u.observedAtMs, values: JSON.stringify(u.values), trend: JSON.stringify(u.trend) }));
time("structuredClone with json strings", () => structuredClone(strs));
const one = JSON.stringify(live);
time("one JSON string clone", () => structuredClone(one));
time("JSON.parse one", () => JSON.parse(one));
time("JSON.stringify all", () => JSON.stringify(live));
