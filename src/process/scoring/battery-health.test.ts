import { describe, expect, it } from "vitest";
import {
  BATTERY_SCORE_VERSION,
  healthLevelForScore,
  scoreBattery,
  type BatteryInput,
  type BatteryScore,
  type BatteryTrend,
} from "./battery-health.js";

const MINUTE = 60_000;
/** 2025-03-10T12:00:00.000Z */
const T0 = Date.UTC(2025, 2, 10, 12, 0, 0);

function reading(r: Partial<BatteryInput> & { at: number }): BatteryInput {
  return { voltage: 48, temperature: 25, errorCodes: [], observedAtMs: T0 + r.at * MINUTE, ...r };
}

/** Scores readings one after another, threading the trend as the caller would; returns every result. */
function series(readings: readonly BatteryInput[], start?: BatteryTrend): BatteryScore[] {
  const out: BatteryScore[] = [];
  let trend = start;
  for (const r of readings) {
    const result = scoreBattery(r, trend);
    out.push(result);
    trend = result.trend;
  }
  return out;
}

describe("scoreBattery: hand-worked examples", () => {
  it("a healthy 48 V unit at 25 °C with no codes scores 100, OK, NONE, and starts a trend from itself", () => {
    // No heat (25 ≤ 35), no sag (first reading has no baseline), no codes: 100 − 0 = 100.
    const first = scoreBattery(reading({ at: 0 }), undefined);
    expect(first).toEqual({
      score: 100,
      level: "OK",
      recommendation: "NONE",
      reasons: [],
      version: 1,
      trend: { baselineVoltage: 48, tempEwma: 25, errorStreak: 0, samples: 1, lastObservedAtMs: T0 },
    });
    // The second reading at the same voltage: sag (48 − 48) / 48 = 0, still 100.
    const second = scoreBattery(reading({ at: 1 }), first.trend);
    expect(second.score).toBe(100);
    expect(second.trend).toEqual({ baselineVoltage: 48, tempEwma: 25, errorStreak: 0, samples: 2, lastObservedAtMs: T0 + MINUTE });
  });

  it("a unit at 50 °C loses 27.5 points for heat, and 15 more once the heat is sustained", () => {
    // heat(50) = 15 + (50 − 45) / (55 − 45) × (40 − 15) = 15 + 12.5 = 27.5
    // 100 − 27.5 = 72.5 → Math.round → 73: OK. One reading is not sustained (samples 1 < 3).
    const results = series([reading({ at: 0, temperature: 50 }), reading({ at: 1, temperature: 50 }), reading({ at: 2, temperature: 50 })]);
    expect(results[0]).toMatchObject({ score: 73, level: "OK", recommendation: "NONE", reasons: ["HEAT"] });
    expect(results[1]).toMatchObject({ score: 73, reasons: ["HEAT"] });
    // Third reading: EWMA started at 50 and stays 50 > 45, samples = 3 ≥ 3 → SUSTAINED_HEAT, −15.
    // 100 − 27.5 − 15 = 57.5 → 58: WARN → INSPECT.
    expect(results[2]).toMatchObject({ score: 58, level: "WARN", recommendation: "INSPECT", reasons: ["HEAT", "SUSTAINED_HEAT"] });
    expect(results[2]?.trend.tempEwma).toBe(50);
  });

  it("a single hot spike on a cool unit is heat, not sustained heat", () => {
    const cool: BatteryTrend = { baselineVoltage: 48, tempEwma: 25, errorStreak: 0, samples: 100, lastObservedAtMs: T0 };
    // EWMA = 25 + 0.2 × (50 − 25) = 30 ≤ 45: only the 27.5 heat points → 73.
    const r = scoreBattery(reading({ at: 1, temperature: 50 }), cool);
    expect(r).toMatchObject({ score: 73, reasons: ["HEAT"] });
    expect(r.trend.tempEwma).toBe(30);
  });

  it("a sag of 8 % against a 400 V baseline costs 17.857 points: 82, OK", () => {
    // Baseline from the first reading: 400 V. Next reading 368 V:
    // sag = (400 − 368) / 400 = 0.08
    // penalty = (0.08 − 0.03) / (0.10 − 0.03) × 25 = 0.05 / 0.07 × 25 = 17.857…
    // 100 − 17.857 = 82.14 → 82: OK, NONE, tagged VOLTAGE_SAG.
    const [, sagged] = series([reading({ at: 0, voltage: 400 }), reading({ at: 1, voltage: 368 })]);
    expect(sagged).toMatchObject({ score: 82, level: "OK", recommendation: "NONE", reasons: ["VOLTAGE_SAG"] });
    // The baseline follows a drop slowly: 400 + 0.01 × (368 − 400) = 399.68.
    expect(sagged?.trend.baselineVoltage).toBeCloseTo(399.68, 10);
  });

  it("judges sag against the unit's own baseline, whatever its nominal voltage", () => {
    // 12 V unit: (12 − 11.04) / 12 = 0.08 → the same 17.857 points → 82, as for 400 V above.
    const [, twelve] = series([reading({ at: 0, voltage: 12 }), reading({ at: 1, voltage: 11.04 })]);
    expect(twelve?.score).toBe(82);
    // 48 V at 2 % down is inside the 3 % dead band: no penalty.
    const [, small] = series([reading({ at: 0, voltage: 48 }), reading({ at: 1, voltage: 47.04 })]);
    expect(small).toMatchObject({ score: 100, reasons: [] });
  });

  it("judges sag against the baseline before the reading, so a reading never softens its own sag", () => {
    // Prior baseline 100 V, reading 96.99 V: sag = 3.01 / 100 = 0.0301 > 0.03 → VOLTAGE_SAG
    // (0.0001 / 0.07 × 25 = 0.036 points, which rounds away: 100). Against the baseline after this
    // reading (100 − 0.01 × 3.01 = 99.9699) the sag would be 0.0298, inside the dead band.
    const trend: BatteryTrend = { baselineVoltage: 100, tempEwma: 25, errorStreak: 0, samples: 5, lastObservedAtMs: T0 };
    const r = scoreBattery(reading({ at: 1, voltage: 96.99 }), trend);
    expect(r).toMatchObject({ score: 100, reasons: ["VOLTAGE_SAG"] });
  });

  it("the baseline rises quickly: a rise is not a sag and lifts the reference by a fifth of the gap", () => {
    // 400 → 410: baseline 400 + 0.2 × (410 − 400) = 402; voltage above baseline is no sag.
    const [, up] = series([reading({ at: 0, voltage: 400 }), reading({ at: 1, voltage: 410 })]);
    expect(up?.score).toBe(100);
    expect(up?.trend.baselineVoltage).toBeCloseTo(402, 10);
  });

  it("three consecutive readings with error codes are REPEATED_ERRORS", () => {
    const results = series([
      reading({ at: 0, errorCodes: ["E1"] }), // 1 code: −10 → 90, streak 1
      reading({ at: 1, errorCodes: ["E1", "E1"] }), // duplicates count once: −10 → 90, streak 2
      reading({ at: 2, errorCodes: ["E1", "E7"] }), // 2 codes −20, streak 3 ≥ 3 → −20: 100 − 40 = 60
      reading({ at: 3 }), // no codes: streak resets, 100
    ]);
    expect(results.map((r) => r.score)).toEqual([90, 90, 60, 100]);
    expect(results.map((r) => r.trend.errorStreak)).toEqual([1, 2, 3, 0]);
    expect(results[1]?.reasons).toEqual(["ERROR_CODES"]);
    // 60 is WARN; the cause is persistent but only CRITICAL turns into REPLACE.
    expect(results[2]).toMatchObject({ level: "WARN", recommendation: "INSPECT", reasons: ["ERROR_CODES", "REPEATED_ERRORS"] });
  });

  it("error codes cost 10 each up to 30", () => {
    // 5 distinct codes: min(5 × 10, 30) = 30 → 70.
    expect(scoreBattery(reading({ at: 0, errorCodes: ["A", "B", "C", "D", "E"] }), undefined).score).toBe(70);
  });

  it("a worn unit (sustained heat, severe sag, repeated errors) is CRITICAL, REPLACE", () => {
    const worn: BatteryTrend = { baselineVoltage: 48, tempEwma: 50, errorStreak: 2, samples: 40, lastObservedAtMs: T0 };
    // heat(52)        = 15 + (52 − 45) / 10 × 25          = 32.5
    // sustained heat  : EWMA 50 + 0.2 × (52 − 50) = 50.4 > 45, samples 41 → 15
    // sag             = (48 − 40.32) / 48 = 0.16 ≥ 0.15     → 40, and > 0.15 → SEVERE_SAG
    // codes           : 2 distinct                          → 20
    // repeated errors : streak 2 + 1 = 3 ≥ 3                → 20
    // 100 − 127.5 = −27.5 → clamped to 0: CRITICAL, and the causes persist → REPLACE.
    const r = scoreBattery(reading({ at: 1, voltage: 40.32, temperature: 52, errorCodes: ["E12", "E31"] }), worn);
    expect(r).toMatchObject({
      score: 0,
      level: "CRITICAL",
      recommendation: "REPLACE",
      reasons: ["HEAT", "SUSTAINED_HEAT", "VOLTAGE_SAG", "SEVERE_SAG", "ERROR_CODES", "REPEATED_ERRORS"],
      version: BATTERY_SCORE_VERSION,
    });
    expect(r.trend).toMatchObject({ errorStreak: 3, samples: 41, lastObservedAtMs: T0 + MINUTE });
    expect(r.trend.tempEwma).toBeCloseTo(50.4, 10);
  });

  it("CRITICAL from repeated errors alone is REPLACE; CRITICAL from a one-off is SERVICE", () => {
    const erring: BatteryTrend = { baselineVoltage: 48, tempEwma: 30, errorStreak: 4, samples: 40, lastObservedAtMs: T0 };
    // heat(45) = 15, 3 codes = 30, streak 5 → 20: 100 − 65 = 35 → CRITICAL, persistent → REPLACE.
    expect(scoreBattery(reading({ at: 1, temperature: 45, errorCodes: ["A", "B", "C"] }), erring)).toMatchObject({
      score: 35,
      level: "CRITICAL",
      recommendation: "REPLACE",
      reasons: ["HEAT", "ERROR_CODES", "REPEATED_ERRORS"],
    });
    // First reading at 62 °C with one code: heat 60 (capped), code 10: 100 − 70 = 30 → CRITICAL,
    // but nothing persistent yet → SERVICE.
    expect(scoreBattery(reading({ at: 0, temperature: 62, errorCodes: ["E9"] }), undefined)).toMatchObject({
      score: 30,
      level: "CRITICAL",
      recommendation: "SERVICE",
      reasons: ["HEAT", "ERROR_CODES"],
    });
  });
});

describe("scoreBattery: out-of-order readings", () => {
  it("scores a backlog reading against the trend and returns the trend unchanged", () => {
    const [, newest] = series([reading({ at: 0, voltage: 48 }), reading({ at: 10, voltage: 48 })]);
    const trend = newest!.trend;
    const before = structuredClone(trend);
    // Observed at minute 5, older than the trend's minute 10. sag = (48 − 44.16) / 48 = 0.08 → 82.
    const late = scoreBattery(reading({ at: 5, voltage: 44.16 }), trend);
    expect(late).toMatchObject({ score: 82, level: "OK", reasons: ["VOLTAGE_SAG"] });
    expect(late.trend).toBe(trend);
    expect(trend).toEqual(before);
    // The next in-order reading carries on from the untouched trend (samples 2 → 3).
    expect(scoreBattery(reading({ at: 11 }), late.trend).trend.samples).toBe(3);
  });

  it("fires persistence rules for a backlog reading only when the reading itself shows the symptom", () => {
    const bad: BatteryTrend = { baselineVoltage: 48, tempEwma: 50, errorStreak: 5, samples: 10, lastObservedAtMs: T0 + 60 * MINUTE };
    // A cool, code-free reading from before the trouble: nothing to take off.
    expect(scoreBattery(reading({ at: 0 }), bad)).toMatchObject({ score: 100, reasons: [] });
    // A hot reading with a code: heat 27.5 + sustained 15 + code 10 + repeated 20 = 72.5
    // → 100 − 72.5 = 27.5 → Math.round → 28: CRITICAL, persistent → REPLACE.
    const hot = scoreBattery(reading({ at: 0, temperature: 50, errorCodes: ["E1"] }), bad);
    expect(hot).toMatchObject({
      score: 28,
      level: "CRITICAL",
      recommendation: "REPLACE",
      reasons: ["HEAT", "SUSTAINED_HEAT", "ERROR_CODES", "REPEATED_ERRORS"],
    });
    expect(hot.trend).toBe(bad);
  });

  it("folds in a reading observed at exactly the trend's last time", () => {
    const [first] = series([reading({ at: 0 })]);
    const same = scoreBattery(reading({ at: 0, errorCodes: ["E1"] }), first!.trend);
    expect(same.trend).toMatchObject({ samples: 2, errorStreak: 1, lastObservedAtMs: T0 });
  });
});

describe("scoreBattery: levels at the 70 / 40 boundaries", () => {
  it("maps scores to levels: ≥ 70 OK, 40–69 WARN, < 40 CRITICAL", () => {
    expect([100, 70, 69, 40, 39, 0].map(healthLevelForScore)).toEqual(["OK", "OK", "WARN", "WARN", "CRITICAL", "CRITICAL"]);
  });

  it("lands on each side of each boundary", () => {
    // 3 codes: 100 − 30 = 70 → OK.
    expect(scoreBattery(reading({ at: 0, errorCodes: ["A", "B", "C"] }), undefined)).toMatchObject({
      score: 70,
      level: "OK",
      recommendation: "NONE",
    });
    // 3 codes + heat(35.5) = 0.5 / 10 × 15 = 0.75: 100 − 30.75 = 69.25 → 69 → WARN.
    expect(scoreBattery(reading({ at: 0, temperature: 35.5, errorCodes: ["A", "B", "C"] }), undefined)).toMatchObject({
      score: 69,
      level: "WARN",
      recommendation: "INSPECT",
    });
    // heat(60) = 60: 100 − 60 = 40 → WARN.
    expect(scoreBattery(reading({ at: 0, temperature: 60 }), undefined)).toMatchObject({
      score: 40,
      level: "WARN",
      recommendation: "INSPECT",
    });
    // heat(55.25) = 40 + 0.25 / 5 × 20 = 41, 2 codes 20: 100 − 61 = 39 → CRITICAL, one-off → SERVICE.
    expect(scoreBattery(reading({ at: 0, temperature: 55.25, errorCodes: ["A", "B"] }), undefined)).toMatchObject({
      score: 39,
      level: "CRITICAL",
      recommendation: "SERVICE",
    });
  });
});

describe("scoreBattery: bad input", () => {
  it("throws a RangeError naming a non-finite value", () => {
    expect(() => scoreBattery(reading({ at: 0, voltage: Number.NaN }), undefined)).toThrow(RangeError);
    expect(() => scoreBattery(reading({ at: 0, temperature: Number.POSITIVE_INFINITY }), undefined)).toThrow(/temperature/);
    expect(() => scoreBattery({ ...reading({ at: 0 }), observedAtMs: Number.NaN }, undefined)).toThrow(/observedAtMs/);
  });

  it("starts afresh from a corrupted trend instead of carrying NaN forever", () => {
    // A NaN stored as JSON comes back as null.
    const corrupted = { baselineVoltage: null, tempEwma: 25, errorStreak: 0, samples: 9, lastObservedAtMs: T0 } as unknown as BatteryTrend;
    const r = scoreBattery(reading({ at: 1 }), corrupted);
    expect(r.score).toBe(100);
    expect(r.trend).toEqual({ baselineVoltage: 48, tempEwma: 25, errorStreak: 0, samples: 1, lastObservedAtMs: T0 + MINUTE });
  });

  it("a zero baseline (a dead first reading) gives no sag rather than dividing by zero", () => {
    const [, next] = series([reading({ at: 0, voltage: 0 }), reading({ at: 1, voltage: 0 })]);
    expect(next?.score).toBe(100);
  });
});

/** mulberry32: a small seeded PRNG, so the property runs are reproducible. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const CODE_POOL = ["E1", "E2", "E3", "E4", "E5", "OVERTEMP", "CELL_IMBALANCE"];

function randomReading(rand: () => number, nominal: number, atMs: number): BatteryInput {
  // Mostly near nominal, sometimes anywhere in the validated range (0–1500 V, −50–150 °C).
  const voltage = rand() < 0.9 ? nominal * (0.7 + rand() * 0.4) : rand() * 1500;
  const temperature = rand() < 0.8 ? 10 + rand() * 55 : -50 + rand() * 200;
  const n = rand() < 0.6 ? 0 : Math.floor(rand() * 6);
  const errorCodes = Array.from({ length: n }, () => CODE_POOL[Math.floor(rand() * CODE_POOL.length)] ?? "E1");
  return { voltage, temperature, errorCodes, observedAtMs: atMs };
}

function randomTrend(rand: () => number, nominal: number): BatteryTrend {
  return {
    baselineVoltage: nominal * (0.8 + rand() * 0.3),
    tempEwma: -20 + rand() * 100,
    errorStreak: Math.floor(rand() * 8),
    samples: 1 + Math.floor(rand() * 50),
    lastObservedAtMs: T0,
  };
}

const NOMINALS = [12, 24, 48, 400, 800];

describe("scoreBattery: properties over random inputs", () => {
  it("always gives an integer 0–100 whose level and recommendation agree, and a sane trend", () => {
    const rand = prng(20250310);
    for (let unit = 0; unit < 200; unit++) {
      const nominal = NOMINALS[unit % NOMINALS.length] ?? 48;
      let trend: BatteryTrend | undefined;
      let at = T0;
      for (let i = 0; i < 100; i++) {
        // One reading in ten comes from a backlog, up to an hour old.
        const late = trend !== undefined && rand() < 0.1;
        const observedAtMs = late ? at - Math.floor(rand() * 60 * MINUTE) - 1 : (at += Math.floor(rand() * 5 * MINUTE));
        const input = randomReading(rand, nominal, observedAtMs);
        const prior = trend;
        const r = scoreBattery(input, prior);

        expect(Number.isInteger(r.score)).toBe(true);
        expect(r.score).toBeGreaterThanOrEqual(0);
        expect(r.score).toBeLessThanOrEqual(100);
        expect(r.level).toBe(healthLevelForScore(r.score));
        const persistent = r.reasons.some((x) => x === "SUSTAINED_HEAT" || x === "REPEATED_ERRORS" || x === "SEVERE_SAG");
        expect(r.recommendation).toBe(
          r.level === "OK" ? "NONE" : r.level === "WARN" ? "INSPECT" : persistent ? "REPLACE" : "SERVICE",
        );
        if (r.reasons.length === 0) expect(r.score).toBe(100);
        expect(r.version).toBe(BATTERY_SCORE_VERSION);
        for (const v of Object.values(r.trend)) expect(Number.isFinite(v)).toBe(true);
        if (late) {
          expect(r.trend).toBe(prior);
        } else {
          expect(r.trend.samples).toBe((prior?.samples ?? 0) + 1);
          expect(r.trend.lastObservedAtMs).toBe(observedAtMs);
        }
        trend = r.trend;
      }
    }
  });

  it("never scores higher for a hotter reading, a lower voltage, or an extra error code", () => {
    const rand = prng(7);
    for (let i = 0; i < 5000; i++) {
      const nominal = NOMINALS[i % NOMINALS.length] ?? 48;
      const trend = rand() < 0.1 ? undefined : randomTrend(rand, nominal);
      // Half in order, half a backlog.
      const at = rand() < 0.5 ? T0 + MINUTE : T0 - MINUTE;
      const base = randomReading(rand, nominal, at);
      const score = scoreBattery(base, trend).score;
      expect(scoreBattery({ ...base, temperature: base.temperature + rand() * 30 }, trend).score).toBeLessThanOrEqual(score);
      expect(scoreBattery({ ...base, voltage: base.voltage * rand() }, trend).score).toBeLessThanOrEqual(score);
      expect(scoreBattery({ ...base, errorCodes: [...base.errorCodes, "NEW"] }, trend).score).toBeLessThanOrEqual(score);
    }
  });
});
