// The link cache against the real embedded engine: what it answers after writes through it, after
// writes it did not see (another process sharing a server), and when a write lands mid-load.
import { randomUUID } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { openHistoryClient, type HistoryClient } from "../store/history/clickhouse-client.js";
import { applyMigrations, loadMigrations } from "../store/history/migrations.js";
import { VehicleLinkCache } from "./vehicle-link-cache.js";
import { insertVehicleLink } from "./vehicle-links.js";

let history: HistoryClient;

beforeAll(async () => {
  history = await openHistoryClient({
    url: undefined,
    username: "default",
    password: "",
    database: `link_cache_${randomUUID().replaceAll("-", "")}`,
    dataDir: mkdtempSync(path.join(tmpdir(), "wattstream-link-cache-test-")),
  });
  await applyMigrations(history.client, await loadMigrations());
});
afterAll(async () => {
  await history?.client.close();
});

const link = (vehicleId: string, meterId: string, validFromMs: number) =>
  insertVehicleLink(history.client, { vehicleId, meterId, validFromMs, validUntilMs: undefined });
const meters = async (cache: VehicleLinkCache, vehicleId: string) => (await cache.linksOf(vehicleId)).map((l) => l.meterId);

describe("VehicleLinkCache", () => {
  it("answers a write made through it at once, and one made elsewhere after maxAgeMs and a reload", async () => {
    let now = 1_000_000;
    const cache = new VehicleLinkCache(history.client, { maxAgeMs: 5_000, now: () => now });
    await link("ev-1", "meter-1", 1_000);
    expect(await meters(cache, "ev-1")).toEqual(["meter-1"]);

    // Written by another process: this copy does not know yet.
    await link("ev-1", "meter-2", 2_000);
    expect(await meters(cache, "ev-1")).toEqual(["meter-1"]);
    now += 4_999;
    expect(await meters(cache, "ev-1")).toEqual(["meter-1"]);
    now += 1;
    // The old copy answers the call that finds it old, and reloads behind it.
    expect(await meters(cache, "ev-1")).toEqual(["meter-1"]);
    await vi.waitFor(async () => expect(await meters(cache, "ev-1")).toEqual(["meter-1", "meter-2"]));

    // Written through this process: invalidate() makes the next answer read it.
    await link("ev-1", "meter-3", 3_000);
    cache.invalidate();
    expect(await meters(cache, "ev-1")).toEqual(["meter-1", "meter-2", "meter-3"]);
    expect(await meters(cache, "ev-unknown")).toEqual([]);
  });

  it("without an age bound (the embedded engine, its only writer) loads once, and again only after a write", async () => {
    let now = 1_000_000;
    const cache = new VehicleLinkCache(history.client, { maxAgeMs: Infinity, now: () => now });
    await link("ev-once", "meter-1", 1_000);
    const reads = vi.spyOn(history.client, "query");
    try {
      expect(await meters(cache, "ev-once")).toEqual(["meter-1"]);
      const loadReads = reads.mock.calls.length;
      expect(loadReads).toBeGreaterThan(0);
      now += 30 * 86_400_000;
      expect(await meters(cache, "ev-once")).toEqual(["meter-1"]);
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(reads.mock.calls.length).toBe(loadReads);

      await link("ev-once", "meter-2", 2_000);
      cache.invalidate();
      expect(await meters(cache, "ev-once")).toEqual(["meter-1", "meter-2"]);
    } finally {
      reads.mockRestore();
    }
  });

  it("does not keep a copy whose load began before an invalidation", async () => {
    const cache = new VehicleLinkCache(history.client, { maxAgeMs: 60_000 });
    await link("ev-race", "meter-old", 1_000);
    const loading = cache.linksOf("ev-race");
    await link("ev-race", "meter-new", 2_000);
    cache.invalidate();
    await loading;
    expect(await meters(cache, "ev-race")).toEqual(["meter-old", "meter-new"]);
  });

  it("lists the links that start before a time, and reads storage per call beyond maxLinks", async () => {
    await link("ev-b", "meter-b1", 10_000);
    await link("ev-b", "meter-b2", 20_000);
    const cache = new VehicleLinkCache(history.client);
    const before = await cache.linksStartingBefore(20_000);
    expect(before.get("ev-b")?.map((l) => l.meterId)).toEqual(["meter-b1"]);
    expect((await cache.linksStartingBefore(20_001)).get("ev-b")?.map((l) => l.meterId)).toEqual(["meter-b1", "meter-b2"]);

    const tiny = new VehicleLinkCache(history.client, { maxLinks: 1 });
    expect(await meters(tiny, "ev-b")).toEqual(["meter-b1", "meter-b2"]);
    await link("ev-b", "meter-b3", 30_000);
    expect(await meters(tiny, "ev-b")).toEqual(["meter-b1", "meter-b2", "meter-b3"]);
  });
});
