-- Scores computed at ingest, stored with the version of the algorithm that computed them, so a
-- later algorithm can be introduced under a new version without rewriting old rows.

ALTER TABLE battery_readings
    ADD COLUMN IF NOT EXISTS health_score UInt8 DEFAULT 0 COMMENT 'health score 0–100',
    ADD COLUMN IF NOT EXISTS health_level LowCardinality(String) DEFAULT '' COMMENT 'OK, WARN or CRITICAL',
    ADD COLUMN IF NOT EXISTS recommendation LowCardinality(String) DEFAULT '' COMMENT 'NONE, INSPECT, SERVICE or REPLACE',
    ADD COLUMN IF NOT EXISTS score_version UInt16 DEFAULT 0 COMMENT 'scoring algorithm version; 0 = not scored';

ALTER TABLE vehicle_readings
    ADD COLUMN IF NOT EXISTS temp_risk LowCardinality(String) DEFAULT '' COMMENT 'battery temperature risk: OK, WARN or CRITICAL',
    ADD COLUMN IF NOT EXISTS score_version UInt16 DEFAULT 0 COMMENT 'scoring algorithm version; 0 = not scored';
