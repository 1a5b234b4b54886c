-- One history table per device kind, ordered for per-device time-range reads and partitioned by
-- month so old data can be dropped a partition at a time.
--
-- ReplacingMergeTree keyed on the event makes a leftover duplicate (one that slipped past the
-- Redis dedupe, e.g. after its window) collapse on merge and invisible to FINAL reads.
-- non_replicated_deduplication_window lets a retried insert carrying the same
-- insert_deduplication_token be written once.

CREATE TABLE IF NOT EXISTS meter_readings
(
    device_id String,
    event_id String,
    observed_at DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    kwh_consumed_ac Float64 COMMENT 'AC energy consumed since the previous reading, kWh',
    voltage Float64 COMMENT 'RMS supply voltage, V',
    register_kwh_ac Nullable(Float64) COMMENT 'cumulative AC register, kWh'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(observed_at)
ORDER BY (device_id, observed_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS vehicle_readings
(
    device_id String,
    event_id String,
    observed_at DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    soc Float64 COMMENT 'state of charge, %',
    kwh_delivered_dc Float64 COMMENT 'DC energy delivered since the previous reading, kWh',
    battery_temp Float64 COMMENT 'traction battery temperature, °C',
    register_kwh_dc Nullable(Float64) COMMENT 'cumulative DC register, kWh'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(observed_at)
ORDER BY (device_id, observed_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS battery_readings
(
    device_id String,
    event_id String,
    observed_at DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    voltage Float64 COMMENT 'pack terminal voltage, V',
    temperature Float64 COMMENT 'pack temperature, °C',
    error_codes Array(String) COMMENT 'active vendor error codes'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(observed_at)
ORDER BY (device_id, observed_at, event_id)
SETTINGS non_replicated_deduplication_window = 10000;
