// Battery health answers: a unit's latest stored score (raw history, newest row by observed_at) and
// its hourly trend from the battery_health_hours rollup (fed by a materialized view).
import type { ClickHouseClient } from "@clickhouse/client";

const HOUR_MS = 3_600_000;

export interface LatestBatteryScore {
  readonly healthScore: number;
  readonly healthLevel: string;
  readonly recommendation: string;
  readonly scoreVersion: number;
  readonly observedAtMs: number;
}

export interface HealthTrendPoint {
  /** Start of the hour, epoch ms. */
  readonly hourStartMs: number;
  readonly minScore: number;
  readonly avgScore: number;
  readonly maxScore: number;
  readonly readings: number;
}

/**
 * The trend window of `hours` whole hours ending with the hour that holds nowMs: readings observed
 * in [startMs, endMs). Whole hours, because the rollup keeps hours.
 */
export function healthWindow(nowMs: number, hours: number): { startMs: number; endMs: number } {
  const endMs = Math.floor(nowMs / HOUR_MS) * HOUR_MS + HOUR_MS;
  return { startMs: endMs - hours * HOUR_MS, endMs };
}

/** The score of the unit's newest stored reading, or undefined for a unit with none. */
export async function queryLatestBatteryScore(client: ClickHouseClient, deviceId: string): Promise<LatestBatteryScore | undefined> {
  const result = await client.query({
    query: `SELECT health_score, health_level, recommendation, score_version, toUnixTimestamp64Milli(observed_at) AS observed_ms
            FROM battery_readings FINAL
            WHERE device_id = {device:String}
            ORDER BY observed_at DESC, received_at DESC, event_id DESC
            LIMIT 1`,
    query_params: { device: deviceId },
    format: "JSONEachRow",
  });
  const [row] = await result.json<{
    health_score: number;
    health_level: string;
    recommendation: string;
    score_version: number;
    observed_ms: string | number;
  }>();
  if (row === undefined) return undefined;
  return {
    healthScore: Number(row.health_score),
    healthLevel: row.health_level,
    recommendation: row.recommendation,
    scoreVersion: Number(row.score_version),
    observedAtMs: Number(row.observed_ms),
  };
}

/** Per-hour min/avg/max of the unit's scores of one version in [startMs, endMs) (whole hours). */
export async function queryHealthTrend(
  client: ClickHouseClient,
  deviceId: string,
  scoreVersion: number,
  startMs: number,
  endMs: number,
): Promise<HealthTrendPoint[]> {
  const result = await client.query({
    query: `SELECT toUnixTimestamp(hour) * 1000 AS hour_ms, sum(score_sum) AS score_sum, min(score_min) AS lo, max(score_max) AS hi,
                   sum(readings) AS n
            FROM battery_health_hours
            WHERE device_id = {device:String} AND score_version = {version:UInt16}
              AND hour >= fromUnixTimestamp64Milli({from:Int64}, 'UTC') AND hour < fromUnixTimestamp64Milli({to:Int64}, 'UTC')
            GROUP BY hour
            ORDER BY hour`,
    query_params: { device: deviceId, version: scoreVersion, from: startMs, to: endMs },
    format: "JSONEachRow",
  });
  const rows = await result.json<{ hour_ms: string | number; score_sum: string | number; lo: number; hi: number; n: string | number }>();
  return rows
    .filter((r) => Number(r.n) > 0)
    .map((r) => ({
      hourStartMs: Number(r.hour_ms),
      minScore: Number(r.lo),
      avgScore: Number(r.score_sum) / Number(r.n),
      maxScore: Number(r.hi),
      readings: Number(r.n),
    }));
}

export interface FallingCandidate {
  readonly deviceId: string;
  /** The unit's highest score of the version since fromMs's hour began. */
  readonly peakScore: number;
}

/**
 * Battery units that may have fallen by `points` or more: per unit, the highest score of `version`
 * in the hours from fromMs's, and the lowest in the newest of those hours. The newest reading lies
 * in that hour, so its score is no lower than that hour's lowest: every unit whose newest score is
 * `points` below its peak is a candidate, and few others are. Read from the hourly rollup.
 */
export async function queryFallingBatteryCandidates(
  client: ClickHouseClient,
  fromMs: number,
  version: number,
  points: number,
): Promise<FallingCandidate[]> {
  const result = await client.query({
    query: `SELECT device_id, max(hour_max) AS peak
            FROM (SELECT device_id, hour, max(score_max) AS hour_max, min(score_min) AS hour_min
                  FROM battery_health_hours
                  WHERE score_version = {version:UInt16} AND hour >= toStartOfHour(fromUnixTimestamp64Milli({from:Int64}, 'UTC'))
                  GROUP BY device_id, hour)
            GROUP BY device_id
            HAVING peak >= argMax(hour_min, hour) + {points:UInt8}`,
    query_params: { version, from: fromMs, points },
    format: "JSONEachRow",
  });
  const rows = await result.json<{ device_id: string; peak: number }>();
  return rows.map((r) => ({ deviceId: r.device_id, peakScore: Number(r.peak) }));
}
