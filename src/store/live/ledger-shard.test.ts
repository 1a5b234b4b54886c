// The ledger's shard must behave as the insertion-ordered Map it replaced: the same entries found,
// the same kept in the same order through removals and the compactions they lead to, and two ids
// told apart even when their hashes are equal.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { hashEvent, LedgerShard, STORED_ALONE } from "./ledger-shard.js";

type Op =
  | { readonly kind: "put"; readonly device: number; readonly event: number; readonly holder: number }
  | { readonly kind: "remove"; readonly device: number; readonly event: number }
  | { readonly kind: "forgetOldest"; readonly count: number };

// Few devices and events, so puts hit entries already there; ids that are prefixes of each other
// and non-ASCII, so only the whole of both ids tells two entries apart.
const DEVICES = ["m", "m1", "m11", "bbu-ü", "😀", ""];
const opArbitrary: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant("put" as const), device: fc.nat(DEVICES.length - 1), event: fc.nat(400), holder: fc.nat(5) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("remove" as const), device: fc.nat(DEVICES.length - 1), event: fc.nat(400) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("forgetOldest" as const), count: fc.nat(50) }) },
);

/** The hashes to run with: the real one, and poor ones that make most ids collide. */
const HASHES: Record<string, (deviceId: string, eventId: string) => number> = {
  real: hashEvent,
  "four values": (deviceId, eventId) => hashEvent(deviceId, eventId) & 3,
  "one value": () => 12345,
};

describe("LedgerShard", () => {
  it.each(Object.keys(HASHES))("keeps what an insertion-ordered Map keeps, with the %s hash", (hashName) => {
    const hash = HASHES[hashName]!;
    fc.assert(
      fc.property(fc.array(opArbitrary, { minLength: 200, maxLength: 2_000, size: "max" }), (ops) => {
        const shard = new LedgerShard();
        const model = new Map<string, { holder: number; expirySeconds: number }>();
        const key = (device: number, event: number) => [DEVICES[device]!, `e-${event}`] as const;
        for (const op of ops) {
          if (op.kind === "forgetOldest") {
            // Removing from the front while iterating, as the store's forgetOldest does.
            let left = op.count;
            shard.forEachOldestFirst((entry) => {
              if (left-- === 0) return false;
              shard.remove(entry);
              return true;
            });
            for (const id of [...model.keys()].slice(0, op.count)) model.delete(id);
            continue;
          }
          const [deviceId, eventId] = key(op.device, op.event);
          const id = JSON.stringify([deviceId, eventId]);
          const entry = shard.find(deviceId, eventId, hash(deviceId, eventId));
          expect(entry >= 0).toBe(model.has(id));
          if (op.kind === "remove") {
            if (entry >= 0) shard.remove(entry);
            model.delete(id);
          } else if (entry >= 0) {
            shard.setHolder(entry, op.holder, op.holder === STORED_ALONE ? op.event : 0);
            model.set(id, { holder: op.holder, expirySeconds: op.holder === STORED_ALONE ? op.event : 0 });
          } else {
            shard.append(deviceId, eventId, hash(deviceId, eventId), op.holder, op.holder === STORED_ALONE ? op.event : 0);
            model.set(id, { holder: op.holder, expirySeconds: op.holder === STORED_ALONE ? op.event : 0 });
          }
        }
        expect(shard.size).toBe(model.size);
        // Every entry the model holds is found with its state, in the model's order.
        const inOrder: number[] = [];
        shard.forEachOldestFirst((entry) => inOrder.push(entry) > 0);
        const expected = [...model.entries()].map(([id, state]) => {
          const [deviceId, eventId] = JSON.parse(id) as [string, string];
          const entry = shard.find(deviceId, eventId, hash(deviceId, eventId));
          expect({ holder: shard.holderOf(entry), expirySeconds: shard.expirySecondsOf(entry) }).toEqual(state);
          return entry;
        });
        expect(inOrder).toEqual(expected);
      }),
      // No shrinking: a counterexample of a thousand operations takes minutes to shrink.
      { numRuns: hashName === "real" ? 200 : 60, seed: 20261127, endOnFailure: true },
    );
  });

  it("finds every entry after compactions around removed ones, whatever their ids' lengths", () => {
    const shard = new LedgerShard();
    const ids = (n: number) => [`d-${n % 7}`, `e-${"x".repeat(n % 13)}-${n}`] as const;
    const kept = new Set<number>();
    // Thousands of appends, every third entry removed soon after: each compaction copies many
    // runs of ids between gaps, of varying lengths.
    for (let n = 0; n < 5_000; n++) {
      const [deviceId, eventId] = ids(n);
      shard.append(deviceId, eventId, hashEvent(deviceId, eventId), 1);
      kept.add(n);
      if (n % 3 === 0 && n >= 2) {
        const [d, e] = ids(n - 2);
        shard.remove(shard.find(d, e, hashEvent(d, e)));
        kept.delete(n - 2);
      }
    }
    for (let n = 0; n < 5_000; n++) {
      const [deviceId, eventId] = ids(n);
      expect(shard.find(deviceId, eventId, hashEvent(deviceId, eventId)) >= 0).toBe(kept.has(n));
    }
  });

  it("keeps an expiry past 2106 and one before 1970 as they are", () => {
    const shard = new LedgerShard();
    for (const seconds of [2 ** 32 + 5, -10, 1_764_000_000]) {
      const entry = shard.append("m", `e${seconds}`, hashEvent("m", `e${seconds}`), STORED_ALONE, seconds);
      expect(shard.expirySecondsOf(entry)).toBe(seconds);
    }
  });

  it("hashes a device id and an event id apart, not their characters run together", () => {
    expect(hashEvent("ab", "c")).not.toBe(hashEvent("a", "bc"));
    const shard = new LedgerShard();
    shard.append("ab", "c", 1, 7);
    expect(shard.find("a", "bc", 1)).toBe(-1);
    expect(shard.find("ab", "c", 1)).toBe(0);
  });
});
