// The simulator's fleet model: reproducible per seed, and realistic where the service's answers
// depend on it — charger efficiency from vehicle DC against the linked meter's AC, and battery
// units that the real scorer rates WARN and CRITICAL as they age.
import { describe, expect, it } from "vitest";
import { RejectReason } from "../../gen/wattstream/telemetry/v1/ingest_service_pb.js";
import { scoreBattery, type BatteryTrend } from "../../src/process/scoring/battery-health.js";
import type { HealthLevel } from "../../src/process/scoring/health-level.js";
import { validateReading } from "../../src/process/validate-reading.js";
import { toWireReading } from "../../bench/simulator/device-client.js";
import { FleetModel, type FleetOptions, type SimReading, type VehicleInfo } from "../../bench/simulator/fleet-model.js";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
// Noon: a whole evening-to-morning charging session lies inside each noon-to-noon day.
const START = Date.UTC(2026, 10, 2, 12);

function fleet(extra: Partial<FleetOptions> = {}): FleetModel {
  return new FleetModel({ seed: 42, meters: 4, vehicles: 4, batteries: 4, intervalMs: MINUTE, startMs: START, endMs: START + DAY, ...extra });
}

function sum<T>(items: readonly T[], f: (item: T) => number): number {
  return items.reduce((total, item) => total + f(item), 0);
}

describe("the fleet model", () => {
  it("is deterministic per seed, however simulated time is sliced", () => {
    const whole = fleet().advanceTo(Number.POSITIVE_INFINITY);
    const sliced = fleet();
    const pieces: SimReading[] = [];
    // Uneven slices, as a wall-clock driver produces them.
    for (let t = START; !sliced.done; t += 7 * MINUTE + 13_000) pieces.push(...sliced.advanceTo(t));
    expect(pieces).toEqual(whole);
    expect(whole).toHaveLength(12 * 24 * 60);

    const other = fleet({ seed: 43 }).advanceTo(Number.POSITIVE_INFINITY);
    expect(other.map((r) => r.sample)).not.toEqual(whole.map((r) => r.sample));
    // Same seed, same fleet: traits and outages too.
    expect(fleet({ offlineShare: 0.5 }).devices).toEqual(fleet({ offlineShare: 0.5 }).devices);
  });

  it("gives every reading an event id unique per device, and ids that differ between runs at different times", () => {
    const readings = fleet().advanceTo(Number.POSITIVE_INFINITY);
    const ids = new Set(readings.map((r) => `${r.deviceId}/${r.eventId}`));
    expect(ids.size).toBe(readings.length);
    for (const r of readings) expect(Buffer.byteLength(r.eventId)).toBeLessThanOrEqual(64);
    const later = fleet({ startMs: START + 1000, endMs: START + 1000 + DAY }).advanceTo(Number.POSITIVE_INFINITY);
    expect(later[0]!.eventId).not.toBe(readings[0]!.eventId);
  });

  it("charges vehicles so that healthy chargers measure 88–94 % and faulty ones below 85 % against their meter over a day", () => {
    const model = fleet({ meters: 30, vehicles: 30, batteries: 0, faultyShare: 0.2, endMs: START + 2 * DAY });
    const readings = model.advanceTo(Number.POSITIVE_INFINITY);
    // The second noon-to-noon day: the first starts from arbitrary states of charge.
    const day = readings.filter((r) => r.observedAtMs! > START + DAY && r.observedAtMs! <= START + 2 * DAY);
    const energy = new Map<string, number>();
    for (const r of day) {
      const kwh = r.sample.kind === "meter" ? r.sample.kwhConsumedAc : r.sample.kind === "vehicle" ? r.sample.kwhDeliveredDc : 0;
      energy.set(r.deviceId, (energy.get(r.deviceId) ?? 0) + kwh);
    }
    const vehicles = model.devices.filter((d): d is VehicleInfo => d.kind === "vehicle");
    const efficiency = (v: VehicleInfo) => energy.get(v.id)! / energy.get(v.meterId!)!;
    const faulty = vehicles.filter((v) => v.faultyCharger);
    const healthy = vehicles.filter((v) => !v.faultyCharger);
    expect(faulty).toHaveLength(6);
    for (const v of faulty) expect(efficiency(v), v.id).toBeLessThan(0.85);
    for (const v of healthy) {
      expect(efficiency(v), v.id).toBeGreaterThanOrEqual(0.88);
      expect(efficiency(v), v.id).toBeLessThanOrEqual(0.94);
      // Each vehicle charged a real session's worth that day.
      expect(energy.get(v.id)!, v.id).toBeGreaterThan(8);
    }
  });

  it("follows a charging curve: SoC rises, power tapers above 80 %, the pack warms with charge rate", () => {
    const model = fleet({ meters: 1, vehicles: 8, batteries: 0 });
    const readings = model.advanceTo(Number.POSITIVE_INFINITY);
    for (const vehicle of model.devices.filter((d) => d.kind === "vehicle")) {
      const own = readings.filter((r) => r.deviceId === vehicle.id).map((r) => r.sample as Extract<SimReading["sample"], { kind: "vehicle" }>);
      const charging = own.filter((s) => s.kwhDeliveredDc > 0);
      expect(charging.length, vehicle.id).toBeGreaterThan(30);
      // SoC never falls while charging.
      own.forEach((s, i) => {
        if (i > 0 && s.kwhDeliveredDc > 0) expect(s.soc, vehicle.id).toBeGreaterThanOrEqual(own[i - 1]!.soc);
      });
      const maxPower = Math.max(...charging.map((s) => s.kwhDeliveredDc));
      const high = charging.filter((s) => s.soc > 92);
      for (const s of high) expect(s.kwhDeliveredDc).toBeLessThan(0.75 * maxPower);
      const temp = (xs: typeof own) => sum(xs, (s) => s.batteryTemp) / xs.length;
      const fullPower = charging.filter((s) => s.kwhDeliveredDc > 0.9 * maxPower);
      const parked = own.filter((s) => s.kwhDeliveredDc === 0);
      expect(temp(fullPower), vehicle.id).toBeGreaterThan(temp(parked) + 2);
    }
  });

  it("gives meters a daily load profile and 230 V ± a few volts, with occasional sags", () => {
    const model = fleet({ meters: 20, vehicles: 0, batteries: 0, endMs: START + 3 * DAY });
    const readings = model.advanceTo(Number.POSITIVE_INFINITY).map((r) => ({ at: r.observedAtMs!, ...(r.sample as Extract<SimReading["sample"], { kind: "meter" }>) }));
    const volts = readings.map((r) => r.voltage);
    const normal = volts.filter((v) => v > 220 && v < 240);
    expect(normal.length / volts.length).toBeGreaterThan(0.995);
    const sags = volts.filter((v) => v < 207);
    expect(sags.length).toBeGreaterThan(0);
    const hour = (at: number) => new Date(at).getUTCHours();
    const load = (h: number) => sum(readings.filter((r) => hour(r.at) === h), (r) => r.kwhConsumedAc);
    expect(load(19)).toBeGreaterThan(2 * load(3));
  });

  it("ages battery units so that the real scorer rates worn ones WARN and failing ones CRITICAL", () => {
    const model = fleet({ meters: 0, vehicles: 0, batteries: 12, agingShare: 0.5 });
    const levels = new Map<string, Record<HealthLevel, number>>();
    const trends = new Map<string, BatteryTrend>();
    for (const r of model.advanceTo(Number.POSITIVE_INFINITY)) {
      if (r.sample.kind !== "battery") continue;
      const score = scoreBattery(
        { voltage: r.sample.voltage, temperature: r.sample.temperature, errorCodes: r.sample.errorCodes, observedAtMs: r.observedAtMs! },
        trends.get(r.deviceId),
      );
      trends.set(r.deviceId, score.trend);
      const count = levels.get(r.deviceId) ?? { OK: 0, WARN: 0, CRITICAL: 0 };
      count[score.level]++;
      levels.set(r.deviceId, count);
    }
    const units = model.devices.filter((d) => d.kind === "battery");
    expect(units.filter((u) => u.condition === "worn")).toHaveLength(3);
    expect(units.filter((u) => u.condition === "failing")).toHaveLength(3);
    for (const unit of units) {
      const count = levels.get(unit.id)!;
      if (unit.condition === "healthy") expect(count, unit.id).toEqual({ OK: 24 * 60, WARN: 0, CRITICAL: 0 });
      if (unit.condition === "worn") {
        expect(count.WARN, unit.id).toBeGreaterThan(10);
        expect(count.CRITICAL, unit.id).toBeLessThan(count.WARN);
      }
      if (unit.condition === "failing") expect(count.CRITICAL, unit.id).toBeGreaterThan(60);
    }
  });

  it("lays out outages for offline-prone devices only, within the run", () => {
    const model = fleet({ offlineShare: 0.25 });
    const prone = model.devices.filter((d) => d.offline.length > 0);
    expect(prone).toHaveLength(3);
    for (const d of prone) {
      expect(d.offline[0]!.fromMs).toBeGreaterThan(START);
      expect(d.offline[0]!.fromMs).toBeLessThan(START + DAY);
      expect(model.isOnline(d.index, d.offline[0]!.fromMs)).toBe(false);
      expect(model.isOnline(d.index, d.offline[0]!.toMs)).toBe(true);
    }
  });

  it("sends malformed readings only when asked, and the real validator rejects every one of them", () => {
    expect(fleet().advanceTo(Number.POSITIVE_INFINITY).filter((r) => r.malformed)).toEqual([]);

    const readings = fleet({ malformedShare: 0.05 }).advanceTo(Number.POSITIVE_INFINITY);
    const clean = fleet().advanceTo(Number.POSITIVE_INFINITY);
    const malformed = readings.filter((r) => r.malformed !== undefined);
    expect(malformed.length / readings.length).toBeGreaterThan(0.03);
    expect(malformed.length / readings.length).toBeLessThan(0.07);
    const reasons = new Set<string>();
    readings.forEach((r, i) => {
      // The service's clock when the device sent it: the moment it was really observed.
      const window = { nowMs: clean[i]!.observedAtMs!, maxReadingAgeMs: 30 * DAY, maxClockSkewMs: 5 * MINUTE };
      const result = validateReading(toWireReading(r), window);
      expect(result.ok, `${r.deviceId} ${r.eventId} ${r.malformed ?? "valid"}`).toBe(r.malformed === undefined);
      if (!result.ok) reasons.add(RejectReason[result.rejection.reason]!);
      // The valid stream is the same whether or not malformed readings are asked for.
      if (r.malformed === undefined) expect(r).toEqual(clean[i]);
    });
    expect([...reasons].sort()).toEqual(["INVALID_ERROR_CODES", "MISSING_OBSERVED_AT", "NOT_FINITE", "OBSERVED_AT_IN_FUTURE", "OUT_OF_RANGE"]);
  });
});
