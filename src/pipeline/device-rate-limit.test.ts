import { describe, expect, it } from "vitest";
import { DeviceRateLimit } from "./device-rate-limit.js";

/** Readings of each device named, `count` of each. */
function of(...counts: [string, number][]) {
  return counts.flatMap(([deviceId, count]) => Array<{ deviceId: string }>(count).fill({ deviceId }));
}

function limiter(readingsPerSecond: number, burst: number) {
  let nowMs = 0;
  const limit = new DeviceRateLimit({ readingsPerSecond, burst }, () => nowMs);
  return { limit, advance: (ms: number) => (nowMs += ms) };
}

describe("DeviceRateLimit", () => {
  it("lets a device send its burst at once, then at the sustained rate", () => {
    const { limit, advance } = limiter(10, 100);
    expect(limit.take(of(["a", 100]))).toBe(0);
    expect(limit.take(of(["a", 5]))).toBe(500); // 5 readings at 10/s
    advance(500);
    expect(limit.take(of(["a", 5]))).toBe(0);
  });

  it("limits each device alone: one flooding leaves another untouched", () => {
    const { limit } = limiter(10, 100);
    expect(limit.take(of(["flood", 100]))).toBe(0);
    expect(limit.take(of(["flood", 1]))).toBeGreaterThan(0);
    expect(limit.take(of(["calm", 1]))).toBe(0);
  });

  it("takes all devices' readings or none", () => {
    const { limit } = limiter(10, 100);
    limit.take(of(["b", 100]));
    expect(limit.take(of(["a", 50], ["b", 10]))).toBe(1000);
    // a's bucket was not charged by the refused request, nor counts it later.
    expect(limit.take(of(["a", 100]))).toBe(0);
    expect(limit.take(of(["a", 1]))).toBe(100);
  });

  it("counts a device named many times in one request once per reading, in any order", () => {
    const { limit } = limiter(10, 100);
    const mixed = [...of(["a", 30]), ...of(["b", 5]), ...of(["a", 30]), ...of(["b", 5])];
    expect(limit.take(mixed)).toBe(0);
    expect(limit.take(of(["a", 41]))).toBe(100);
    expect(limit.take(of(["a", 40], ["b", 90]))).toBe(0);
  });

  it("charges readings refused as another device's to the caller's device, and refunds only the others", () => {
    const { limit } = limiter(10, 100);
    expect(limit.take(of(["a", 60]), { deviceId: "a", count: 40 })).toBe(0);
    limit.refund(of(["a", 60]));
    expect(limit.take(of(["a", 61]))).toBe(100);
    expect(limit.take(of(["a", 60]))).toBe(0);
  });

  it("never asks to wait longer than a full bucket takes, even for a request larger than the bucket", () => {
    const { limit, advance } = limiter(10, 100);
    limit.take(of(["a", 100]));
    expect(limit.take(of(["a", 1_000]))).toBe(10_000);
    advance(10_000);
    expect(limit.take(of(["a", 1_000]))).toBe(0);
  });

  it("forgets idle devices so memory follows the devices sending", () => {
    const { limit, advance } = limiter(10, 100);
    limit.take(of(["a", 1]));
    expect(limit.trackedDevices).toBe(1);
    advance(120_000);
    limit.take(of(["b", 1]));
    expect(limit.trackedDevices).toBe(1);
  });

  it("takes back a refund, up to the bucket's size", () => {
    const { limit } = limiter(10, 100);
    limit.take(of(["a", 100]));
    limit.refund(of(["a", 60]));
    expect(limit.take(of(["a", 60]))).toBe(0);
    limit.refund(of(["a", 1_000]));
    expect(limit.take(of(["a", 100]))).toBe(0);
    expect(limit.take(of(["a", 1]))).toBeGreaterThan(0);
  });

  it("does nothing at rate 0", () => {
    const { limit } = limiter(0, 1);
    expect(limit.take(of(["a", 1_000_000]))).toBe(0);
  });
});
