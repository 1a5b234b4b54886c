-- The history tables merge their parts in larger, rarer steps.
--
-- A fleet's readings reach each history table as small blocks, 15–30 a second per table, each one
-- part. With the engine's default merge policy (merge_selector_base = 5) the new small parts were
-- merged again and again into the large ones (up to ~14,000 rows rewritten for a 51-row insert),
-- and in the fleet benchmark the merges took 8–11 s of the service's ~30 s of CPU in 20 s, at
-- 3,333 readings a second and nearly as much at 333. With base 10 a merge waits for parts of more
-- similar sizes: the merges took 1.7–2.5 s of the same windows, and the service used 5–31 % less
-- CPU in alternated pairs, on fresh and on seeded data, for a few more active parts per partition
-- (docs/benchmarks.md, "A merge policy for small parts"). The history tables are read by device
-- and time range, a granule or so per part, so the extra parts cost the answers little; the rollup
-- tables, which the answers read most and which get about one small part a second each, keep the
-- default.
--
-- A table-level setting: it takes effect on a running server too, and is kept in the table's
-- metadata.

ALTER TABLE meter_readings MODIFY SETTING merge_selector_base = 10;
ALTER TABLE vehicle_readings MODIFY SETTING merge_selector_base = 10;
ALTER TABLE battery_readings MODIFY SETTING merge_selector_base = 10;
