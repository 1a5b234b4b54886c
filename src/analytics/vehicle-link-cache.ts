// Vehicle–meter links kept in the process, so that GetVehiclePerformance does not spend a statement
// of its own (a few ms of the engine's fixed cost per statement) reading one vehicle's links.
//
// The whole table is held (one row per link: ~7k for the bench's fleet) and reloaded in one
// statement when older than maxAgeMs — in the background: the call that finds the copy old is
// answered from it, so no call but the first after a start or an invalidation waits for a load
// (a count and a read of the whole table, two statements). A link written through this
// process invalidates the copy at once, so this process answers with its own writes right after
// they are acknowledged. A link written by another process sharing the same ClickHouse server (or
// by hand) is seen within maxAgeMs and one reload: that is the staleness this cache admits. The
// embedded engine locks its data directory to one process, so there the only writer is this
// process, nothing is ever stale, and the service sets no maxAgeMs (Infinity): the copy is loaded
// once and again only after a write. A table larger than maxLinks is not cached: each call then
// reads its vehicle's links.
import type { ClickHouseClient } from "@clickhouse/client";
import { listLinksStartingBefore, listVehicleLinks, type LinkSource, type StoredLink } from "./vehicle-links.js";

export interface VehicleLinkCacheOptions {
  /** How long a loaded copy answers before it is reloaded, in ms (the staleness bound for links written elsewhere). */
  readonly maxAgeMs?: number;
  /** Most links held; a larger table is read per call instead. */
  readonly maxLinks?: number;
  readonly now?: () => number;
}

export const DEFAULT_LINK_CACHE_MAX_AGE_MS = 5_000;
export const DEFAULT_LINK_CACHE_MAX_LINKS = 500_000;

interface Snapshot {
  readonly loadedAtMs: number;
  /** undefined: the table had more than maxLinks links. */
  readonly byVehicle: Map<string, StoredLink[]> | undefined;
}

export class VehicleLinkCache implements LinkSource {
  private readonly maxAgeMs: number;
  private readonly maxLinks: number;
  private readonly now: () => number;
  private snapshot: Snapshot | undefined;
  private loading: Promise<Snapshot> | undefined;
  /** Bumped by every invalidation; a load begun before one is not kept. */
  private generation = 0;

  constructor(
    private readonly client: ClickHouseClient,
    options: VehicleLinkCacheOptions = {},
  ) {
    this.maxAgeMs = options.maxAgeMs ?? DEFAULT_LINK_CACHE_MAX_AGE_MS;
    this.maxLinks = options.maxLinks ?? DEFAULT_LINK_CACHE_MAX_LINKS;
    this.now = options.now ?? Date.now;
  }

  async linksOf(vehicleId: string): Promise<StoredLink[]> {
    const { byVehicle } = await this.current();
    if (byVehicle === undefined) return listVehicleLinks(this.client, vehicleId);
    return byVehicle.get(vehicleId) ?? [];
  }

  async linksStartingBefore(endMs: number): Promise<Map<string, StoredLink[]>> {
    const { byVehicle } = await this.current();
    if (byVehicle === undefined) return listLinksStartingBefore(this.client, endMs);
    const out = new Map<string, StoredLink[]>();
    for (const [vehicleId, links] of byVehicle) {
      const before = links.filter((l) => l.validFromMs < endMs);
      if (before.length > 0) out.set(vehicleId, before);
    }
    return out;
  }

  /** Drops the copy: call after writing a link, before acknowledging the write. */
  invalidate(): void {
    this.generation++;
    this.snapshot = undefined;
    this.loading = undefined;
  }

  private current(): Promise<Snapshot> {
    const snapshot = this.snapshot;
    if (snapshot === undefined) return this.loading ?? this.reload();
    // An old copy answers while the next one loads; a failed reload is tried again by the next call.
    if (this.now() - snapshot.loadedAtMs >= this.maxAgeMs && this.loading === undefined) this.reload().catch(() => undefined);
    return Promise.resolve(snapshot);
  }

  private reload(): Promise<Snapshot> {
    const generation = this.generation;
    const loadedAtMs = this.now();
    const loading = this.load().then(
      (byVehicle) => {
        const loaded: Snapshot = { loadedAtMs, byVehicle };
        if (this.generation === generation) {
          this.snapshot = loaded;
          this.loading = undefined;
        }
        return loaded;
      },
      (error: unknown) => {
        if (this.loading === loading) this.loading = undefined;
        throw error;
      },
    );
    this.loading = loading;
    return loading;
  }

  private async load(): Promise<Map<string, StoredLink[]> | undefined> {
    // count() without FINAL reads part metadata only; it also counts replaced rows not merged
    // away yet, so it bounds the links the copy would hold from above.
    const result = await this.client.query({ query: "SELECT count() AS n FROM vehicle_meter_links", format: "JSONCompactEachRow" });
    const [[rows] = [0]] = await result.json<[string | number]>();
    if (Number(rows) > this.maxLinks) return undefined;
    return listLinksStartingBefore(this.client);
  }
}
