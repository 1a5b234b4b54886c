// Which meter a vehicle charges from, over time: stored in vehicle_meter_links and turned into the
// per-meter intervals whose readings count as the vehicle's AC side.
import type { ClickHouseClient } from "@clickhouse/client";

/** A link as stored; times in epoch milliseconds. */
export interface StoredLink {
  readonly vehicleId: string;
  readonly meterId: string;
  readonly validFromMs: number;
  /** Exclusive end; undefined until the vehicle's next link starts. */
  readonly validUntilMs: number | undefined;
}

/** A half-open interval [fromMs, toMs) during which a meter's readings count for the vehicle. */
export interface MeterInterval {
  readonly meterId: string;
  readonly fromMs: number;
  readonly toMs: number;
}

export async function insertVehicleLink(client: ClickHouseClient, link: StoredLink): Promise<void> {
  // INSERT … SELECT with query parameters: the values never become SQL text.
  await client.command({
    query: `INSERT INTO vehicle_meter_links (vehicle_id, meter_id, valid_from, valid_until, linked_at)
            SELECT {vehicle:String}, {meter:String}, fromUnixTimestamp64Milli({from:Int64}, 'UTC'),
                   if({hasUntil:UInt8} = 1, fromUnixTimestamp64Milli({until:Int64}, 'UTC'), NULL),
                   now64(3, 'UTC')`,
    query_params: {
      vehicle: link.vehicleId,
      meter: link.meterId,
      from: link.validFromMs,
      hasUntil: link.validUntilMs === undefined ? 0 : 1,
      until: link.validUntilMs ?? 0,
    },
  });
}

export async function listVehicleLinks(client: ClickHouseClient, vehicleId: string): Promise<StoredLink[]> {
  const result = await client.query({
    query: `SELECT meter_id, toUnixTimestamp64Milli(valid_from) AS from_ms, toUnixTimestamp64Milli(valid_until) AS until_ms
            FROM vehicle_meter_links FINAL
            WHERE vehicle_id = {vehicle:String}
            ORDER BY valid_from, meter_id`,
    query_params: { vehicle: vehicleId },
    format: "JSONEachRow",
  });
  // Int64 columns arrive as strings in JSON output.
  const rows = await result.json<{ meter_id: string; from_ms: string | number; until_ms: string | number | null }>();
  return rows.map((r) => ({
    vehicleId,
    meterId: r.meter_id,
    validFromMs: Number(r.from_ms),
    validUntilMs: r.until_ms === null ? undefined : Number(r.until_ms),
  }));
}

/**
 * Every vehicle's links that start before endMs, by vehicle (each list in valid_from order). Later
 * links cannot affect the intervals within a window ending at endMs (they only end open links,
 * after the window). Without endMs, every link.
 */
export async function listLinksStartingBefore(client: ClickHouseClient, endMs?: number): Promise<Map<string, StoredLink[]>> {
  const result = await client.query({
    query: `SELECT vehicle_id, meter_id, toUnixTimestamp64Milli(valid_from) AS from_ms, toUnixTimestamp64Milli(valid_until) AS until_ms
            FROM vehicle_meter_links FINAL
            WHERE {all:UInt8} = 1 OR valid_from < fromUnixTimestamp64Milli({end:Int64}, 'UTC')
            ORDER BY vehicle_id, valid_from, meter_id`,
    query_params: { all: endMs === undefined ? 1 : 0, end: endMs ?? 0 },
    format: "JSONCompactEachRow",
  });
  const rows = await result.json<[string, string, string | number, string | number | null]>();
  const byVehicle = new Map<string, StoredLink[]>();
  for (const [vehicleId, meterId, fromMs, untilMs] of rows) {
    const link: StoredLink = { vehicleId, meterId, validFromMs: Number(fromMs), validUntilMs: untilMs === null ? undefined : Number(untilMs) };
    const list = byVehicle.get(vehicleId);
    if (list) list.push(link);
    else byVehicle.set(vehicleId, [link]);
  }
  return byVehicle;
}

/** Where the answers read links from: storage on every call, or a cache of it (vehicle-link-cache.ts). */
export interface LinkSource {
  /** The vehicle's links, in valid_from order. */
  linksOf(vehicleId: string): Promise<StoredLink[]>;
  /** Every vehicle's links that start before endMs, by vehicle. */
  linksStartingBefore(endMs: number): Promise<Map<string, StoredLink[]>>;
}

/** Links read from storage on every call. */
export function storedLinks(client: ClickHouseClient): LinkSource {
  return {
    linksOf: (vehicleId) => listVehicleLinks(client, vehicleId),
    linksStartingBefore: (endMs) => listLinksStartingBefore(client, endMs),
  };
}

/**
 * The intervals, clipped to [windowStartMs, windowEndMs), during which each meter's readings count
 * for the vehicle. A link without valid_until ends where the vehicle's next link (by valid_from)
 * starts: a vehicle moving to another charger needs no explicit close. Overlapping or touching
 * intervals of one meter are merged, so no reading is counted twice.
 */
export function meterIntervals(links: readonly StoredLink[], windowStartMs: number, windowEndMs: number): MeterInterval[] {
  const sorted = [...links].sort((a, b) => a.validFromMs - b.validFromMs);
  const perMeter = new Map<string, { fromMs: number; toMs: number }[]>();
  sorted.forEach((link, i) => {
    const next = sorted.slice(i + 1).find((l) => l.validFromMs > link.validFromMs);
    const end = link.validUntilMs ?? next?.validFromMs ?? Infinity;
    const fromMs = Math.max(link.validFromMs, windowStartMs);
    const toMs = Math.min(end, windowEndMs);
    if (fromMs >= toMs) return;
    const list = perMeter.get(link.meterId) ?? [];
    list.push({ fromMs, toMs });
    perMeter.set(link.meterId, list);
  });
  const merged: MeterInterval[] = [];
  for (const [meterId, list] of perMeter) {
    list.sort((a, b) => a.fromMs - b.fromMs);
    let current = list[0]!;
    for (const interval of list.slice(1)) {
      if (interval.fromMs <= current.toMs) current = { fromMs: current.fromMs, toMs: Math.max(current.toMs, interval.toMs) };
      else {
        merged.push({ meterId, ...current });
        current = interval;
      }
    }
    merged.push({ meterId, ...current });
  }
  return merged;
}
