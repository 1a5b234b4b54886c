-- Hourly energy rollups for the fleet-wide answers (GetFleetSummary, ListAlerts): a 24 h window
-- reads its whole hours here, the minute rollups (0003) only for the partial hours at its edges,
-- and raw rows only for the partial minutes. One row per device per hour (rows of one hour merge
-- by summing); read them with sum() … GROUP BY, never as single rows.
--
-- Ordered by hour first, unlike the minute rollups: these are read across every device for a
-- range of hours, so the primary key narrows a read to the window's hours however much history
-- the partition holds. Per-device answers keep reading the minute rollups.
--
-- Fed from the minute rollups (a view on a view), so an hour is always the sum of its minutes
-- and each reading is aggregated once more per minute, not once per reading. The deduplication
-- window matters here as in 0003: a retried block carries its insert_deduplication_token down
-- the chain of views, and without the window the hourly rollup would count it twice.
CREATE TABLE IF NOT EXISTS meter_hours
(
    hour DateTime('UTC'),
    device_id String,
    kwh_consumed_ac Float64 COMMENT 'AC energy consumed in the hour, kWh',
    readings UInt64 COMMENT 'meter readings in the hour'
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, device_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS vehicle_hours
(
    hour DateTime('UTC'),
    device_id String,
    kwh_delivered_dc Float64 COMMENT 'DC energy delivered in the hour, kWh',
    battery_temp_sum Float64 COMMENT 'sum of battery temperatures of the readings, °C',
    readings UInt64 COMMENT 'vehicle readings in the hour'
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, device_id)
SETTINGS non_replicated_deduplication_window = 10000;

-- Backfill from the minute rollups, once: only while an hourly rollup is still empty, so running
-- this file again adds nothing. As for 0003, migrations run before the service takes readings.
INSERT INTO meter_hours
SELECT toStartOfHour(minute), device_id, sum(kwh_consumed_ac), sum(readings)
FROM meter_minutes
WHERE (SELECT count() FROM meter_hours) = 0
GROUP BY toStartOfHour(minute), device_id;

INSERT INTO vehicle_hours
SELECT toStartOfHour(minute), device_id, sum(kwh_delivered_dc), sum(battery_temp_sum), sum(readings)
FROM vehicle_minutes
WHERE (SELECT count() FROM vehicle_hours) = 0
GROUP BY toStartOfHour(minute), device_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS meter_hours_mv TO meter_hours AS
SELECT
    toStartOfHour(minute) AS hour,
    device_id,
    sum(kwh_consumed_ac) AS kwh_consumed_ac,
    sum(readings) AS readings
FROM meter_minutes
GROUP BY hour, device_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS vehicle_hours_mv TO vehicle_hours AS
SELECT
    toStartOfHour(minute) AS hour,
    device_id,
    sum(kwh_delivered_dc) AS kwh_delivered_dc,
    sum(battery_temp_sum) AS battery_temp_sum,
    sum(readings) AS readings
FROM vehicle_minutes
GROUP BY hour, device_id;
