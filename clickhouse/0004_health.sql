-- Battery health per unit per hour, for the health trend: one row per (device, scoring version,
-- hour) that merges by summing the scores and readings and keeping the lowest and highest score.
-- Read it with sum()/min()/max() … GROUP BY, never as single rows. The scoring version is part of
-- the key because scores of different versions are not comparable (docs/scoring.md).
--
-- Like the minute rollups (0003), the view sees each inserted block once, and the deduplication
-- window lets a retried block (same insert_deduplication_token) be dropped here too instead of
-- counted twice.
CREATE TABLE IF NOT EXISTS battery_health_hours
(
    device_id String,
    score_version UInt16 COMMENT 'scoring algorithm version of the scores',
    hour DateTime('UTC'),
    score_sum SimpleAggregateFunction(sum, UInt64) COMMENT 'sum of the readings'' health scores, points',
    score_min SimpleAggregateFunction(min, UInt8) COMMENT 'lowest health score in the hour, points',
    score_max SimpleAggregateFunction(max, UInt8) COMMENT 'highest health score in the hour, points',
    readings SimpleAggregateFunction(sum, UInt64) COMMENT 'battery readings in the hour'
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (device_id, score_version, hour)
SETTINGS non_replicated_deduplication_window = 10000;

-- Backfill history stored before the view existed, once: only while the rollup is still empty.
INSERT INTO battery_health_hours
SELECT device_id, score_version, toStartOfHour(observed_at), sum(toUInt64(health_score)), min(health_score), max(health_score), count()
FROM battery_readings FINAL
WHERE (SELECT count() FROM battery_health_hours) = 0
GROUP BY device_id, score_version, toStartOfHour(observed_at);

CREATE MATERIALIZED VIEW IF NOT EXISTS battery_health_hours_mv TO battery_health_hours AS
SELECT
    device_id,
    score_version,
    toStartOfHour(observed_at) AS hour,
    sum(toUInt64(health_score)) AS score_sum,
    min(health_score) AS score_min,
    max(health_score) AS score_max,
    count() AS readings
FROM battery_readings
GROUP BY device_id, score_version, hour;
