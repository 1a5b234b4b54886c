-- The history tables merge their parts in larger, rarer steps.
--
-- A fleet's readings reach each history table as small blocks, 15–20 a second per table, each one
-- part. With the engine's default merge policy (merge_selector_base = 5) every new small part was
-- soon merged again into the larger ones: 10,000–14,000 rows rewritten for each 51-row insert, and
-- the merges used about half a core of this 2-core machine at 3,333 readings a second, and as much
-- at 333 (docs/benchmarks.md, "A merge policy for small parts"). With base 10 a merge waits for
-- parts of more similar sizes: ~600 rows rewritten per insert, the merge threads' CPU a quarter of
-- what it was, and a few more active parts (~21 against ~15 after 30 s of such inserts; the
-- figures at two minutes are in the same section). The history tables are read by device and time
-- range, a granule or so per part, so the extra parts cost the answers little; the rollup tables,
-- which the answers read most and which get one small part a second, keep the default.
--
-- A table-level setting: it takes effect on a running server too, and is kept in the table's
-- metadata.

ALTER TABLE meter_readings MODIFY SETTING merge_selector_base = 10;
ALTER TABLE vehicle_readings MODIFY SETTING merge_selector_base = 10;
ALTER TABLE battery_readings MODIFY SETTING merge_selector_base = 10;
