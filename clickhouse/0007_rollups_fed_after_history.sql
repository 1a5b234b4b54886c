-- The rollups are fed from their own table, not from every insert into history.
--
-- Until now each insert into a history table also wrote its rollups (the minute rollup, and from
-- it the hourly and by-time ones): four parts for a meter or vehicle block, two for a battery
-- block. On the embedded engine a fleet's readings come in small blocks, several a second per
-- table, and those extra parts were ~60 % of each insert's cost and of the acknowledgement's wait
-- (docs/benchmarks.md, "Rollups fed after history"). Now the first view of each kind reads a
-- Null table, <kind>_rollup_feed, which stores nothing itself: whoever inserts there feeds the
-- rollups. The views' SELECTs are unchanged; the views fed from the minute rollups are untouched.
--
-- Two ways rows reach the feed:
-- - the embedded engine's service inserts a block into history alone, acknowledges it, and feeds
--   the blocks of the last second or so to <kind>_rollup_feed in one insert (history-sink.ts); a
--   query that reads the rollups first waits for what has been acknowledged to be fed;
-- - against a ClickHouse server, the service inserts into <kind>_ingest, whose two views write
--   the block to history and to the feed in one statement, as the single history insert did.
--
-- The feed and ingest tables copy the history table's columns: a later migration that changes a
-- history table's columns changes its feed and ingest tables the same way.
--
-- Upgrading a deployment on a ClickHouse server: stop every service instance before the first one
-- of this version starts. An older instance still running would insert into history alone, and
-- its readings would be missing from the rollups.

CREATE TABLE IF NOT EXISTS meter_rollup_feed AS meter_readings ENGINE = Null;
CREATE TABLE IF NOT EXISTS vehicle_rollup_feed AS vehicle_readings ENGINE = Null;
CREATE TABLE IF NOT EXISTS battery_rollup_feed AS battery_readings ENGINE = Null;

DROP VIEW IF EXISTS meter_minutes_mv;
CREATE MATERIALIZED VIEW IF NOT EXISTS meter_minutes_mv TO meter_minutes AS
SELECT
    device_id,
    toStartOfMinute(observed_at) AS minute,
    sum(kwh_consumed_ac) AS kwh_consumed_ac,
    count() AS readings
FROM meter_rollup_feed
GROUP BY device_id, minute;

DROP VIEW IF EXISTS vehicle_minutes_mv;
CREATE MATERIALIZED VIEW IF NOT EXISTS vehicle_minutes_mv TO vehicle_minutes AS
SELECT
    device_id,
    toStartOfMinute(observed_at) AS minute,
    sum(kwh_delivered_dc) AS kwh_delivered_dc,
    sum(battery_temp) AS battery_temp_sum,
    count() AS readings
FROM vehicle_rollup_feed
GROUP BY device_id, minute;

DROP VIEW IF EXISTS battery_health_hours_mv;
CREATE MATERIALIZED VIEW IF NOT EXISTS battery_health_hours_mv TO battery_health_hours AS
SELECT
    device_id,
    score_version,
    toStartOfHour(observed_at) AS hour,
    sum(toUInt64(health_score)) AS score_sum,
    min(health_score) AS score_min,
    max(health_score) AS score_max,
    count() AS readings
FROM battery_rollup_feed
GROUP BY device_id, score_version, hour;

CREATE TABLE IF NOT EXISTS meter_ingest AS meter_readings ENGINE = Null;
CREATE TABLE IF NOT EXISTS vehicle_ingest AS vehicle_readings ENGINE = Null;
CREATE TABLE IF NOT EXISTS battery_ingest AS battery_readings ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS meter_ingest_history_mv TO meter_readings AS SELECT * FROM meter_ingest;
CREATE MATERIALIZED VIEW IF NOT EXISTS meter_ingest_rollups_mv TO meter_rollup_feed AS SELECT * FROM meter_ingest;
CREATE MATERIALIZED VIEW IF NOT EXISTS vehicle_ingest_history_mv TO vehicle_readings AS SELECT * FROM vehicle_ingest;
CREATE MATERIALIZED VIEW IF NOT EXISTS vehicle_ingest_rollups_mv TO vehicle_rollup_feed AS SELECT * FROM vehicle_ingest;
CREATE MATERIALIZED VIEW IF NOT EXISTS battery_ingest_history_mv TO battery_readings AS SELECT * FROM battery_ingest;
CREATE MATERIALIZED VIEW IF NOT EXISTS battery_ingest_rollups_mv TO battery_rollup_feed AS SELECT * FROM battery_ingest;
