import { describe, expect, it } from "vitest";
import { DeviceRateLimit } from "./device-rate-limit.js";

function limiter(readingsPerSecond: number, burst: number) {
  let nowMs = 0;
  const limit = new DeviceRateLimit({ readingsPerSecond, burst }, () => nowMs);
  return { limit, advance: (ms: number) => (nowMs += ms) };
}

describe("DeviceRateLimit", () => {
  it("lets a device send its burst at once, then at the sustained rate", () => {
    const { limit, advance } = limiter(10, 100);
    expect(limit.take(new Map([["a", 100]]))).toBe(0);
    expect(limit.take(new Map([["a", 5]]))).toBe(500); // 5 readings at 10/s
    advance(500);
    expect(limit.take(new Map([["a", 5]]))).toBe(0);
  });

  it("limits each device alone: one flooding leaves another untouched", () => {
    const { limit } = limiter(10, 100);
    expect(limit.take(new Map([["flood", 100]]))).toBe(0);
    expect(limit.take(new Map([["flood", 1]]))).toBeGreaterThan(0);
    expect(limit.take(new Map([["calm", 1]]))).toBe(0);
  });

  it("takes all devices' readings or none", () => {
    const { limit } = limiter(10, 100);
    limit.take(new Map([["b", 100]]));
    expect(limit.take(new Map([["a", 50], ["b", 10]]))).toBe(1000);
    // a's bucket was not charged by the refused request.
    expect(limit.take(new Map([["a", 100]]))).toBe(0);
  });

  it("never asks to wait longer than a full bucket takes, even for a request larger than the bucket", () => {
    const { limit, advance } = limiter(10, 100);
    limit.take(new Map([["a", 100]]));
    expect(limit.take(new Map([["a", 1_000]]))).toBe(10_000);
    advance(10_000);
    expect(limit.take(new Map([["a", 1_000]]))).toBe(0);
  });

  it("forgets idle devices so memory follows the devices sending", () => {
    const { limit, advance } = limiter(10, 100);
    limit.take(new Map([["a", 1]]));
    expect(limit.trackedDevices).toBe(1);
    advance(120_000);
    limit.take(new Map([["b", 1]]));
    expect(limit.trackedDevices).toBe(1);
  });

  it("takes back a refund, up to the bucket's size", () => {
    const { limit } = limiter(10, 100);
    limit.take(new Map([["a", 100]]));
    limit.refund(new Map([["a", 60]]));
    expect(limit.take(new Map([["a", 60]]))).toBe(0);
    limit.refund(new Map([["a", 1_000]]));
    expect(limit.take(new Map([["a", 100]]))).toBe(0);
    expect(limit.take(new Map([["a", 1]]))).toBeGreaterThan(0);
  });

  it("does nothing at rate 0", () => {
    const { limit } = limiter(0, 1);
    expect(limit.take(new Map([["a", 1_000_000]]))).toBe(0);
  });
});
