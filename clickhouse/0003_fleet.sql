-- Fleet analytics: which meter a vehicle charges from, over time, and per-device per-minute
-- rollups that the vehicle performance answer reads instead of scanning raw history.

-- A link says a vehicle charged from a meter from valid_from on, until valid_until (NULL: until
-- the vehicle's next link starts). Relinking with the same (vehicle_id, valid_from, meter_id)
-- replaces the row; the newest linked_at wins, so read with FINAL.
CREATE TABLE IF NOT EXISTS vehicle_meter_links
(
    vehicle_id String,
    meter_id String,
    valid_from DateTime64(3, 'UTC'),
    valid_until Nullable(DateTime64(3, 'UTC')),
    linked_at DateTime64(3, 'UTC') COMMENT 'when the link was written; the newest version wins'
)
ENGINE = ReplacingMergeTree(linked_at)
ORDER BY (vehicle_id, valid_from, meter_id);

-- Rollups: one row per device per minute (rows of one minute merge by summing). Read them with
-- sum() … GROUP BY, never as single rows. The views see each inserted block once; a block that
-- the history table drops as a retried duplicate (same insert_deduplication_token) does not
-- reach them — which takes a deduplication window on the rollup tables too (measured: without
-- it, a retried block was counted twice here while the history table kept it once).
CREATE TABLE IF NOT EXISTS meter_minutes
(
    device_id String,
    minute DateTime('UTC'),
    kwh_consumed_ac Float64 COMMENT 'AC energy consumed in the minute, kWh',
    readings UInt64 COMMENT 'meter readings in the minute'
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (device_id, minute)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS vehicle_minutes
(
    device_id String,
    minute DateTime('UTC'),
    kwh_delivered_dc Float64 COMMENT 'DC energy delivered in the minute, kWh',
    battery_temp_sum Float64 COMMENT 'sum of battery temperatures of the readings, °C',
    readings UInt64 COMMENT 'vehicle readings in the minute'
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (device_id, minute)
SETTINGS non_replicated_deduplication_window = 10000;

-- Backfill history stored before the views existed, once: only while a rollup is still empty, so
-- running this file again adds nothing. Migrations run before the service takes readings; with
-- several processes on one server, migrate before starting them.
INSERT INTO meter_minutes
SELECT device_id, toStartOfMinute(observed_at), sum(kwh_consumed_ac), count()
FROM meter_readings FINAL
WHERE (SELECT count() FROM meter_minutes) = 0
GROUP BY device_id, toStartOfMinute(observed_at);

INSERT INTO vehicle_minutes
SELECT device_id, toStartOfMinute(observed_at), sum(kwh_delivered_dc), sum(battery_temp), count()
FROM vehicle_readings FINAL
WHERE (SELECT count() FROM vehicle_minutes) = 0
GROUP BY device_id, toStartOfMinute(observed_at);

CREATE MATERIALIZED VIEW IF NOT EXISTS meter_minutes_mv TO meter_minutes AS
SELECT
    device_id,
    toStartOfMinute(observed_at) AS minute,
    sum(kwh_consumed_ac) AS kwh_consumed_ac,
    count() AS readings
FROM meter_readings
GROUP BY device_id, minute;

CREATE MATERIALIZED VIEW IF NOT EXISTS vehicle_minutes_mv TO vehicle_minutes AS
SELECT
    device_id,
    toStartOfMinute(observed_at) AS minute,
    sum(kwh_delivered_dc) AS kwh_delivered_dc,
    sum(battery_temp) AS battery_temp_sum,
    count() AS readings
FROM vehicle_readings
GROUP BY device_id, minute;
