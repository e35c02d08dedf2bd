-- A route's latency and chaos, as the JSON file form of its Realism ('' when
-- it has none).
ALTER TABLE routes ADD COLUMN realism TEXT NOT NULL DEFAULT '';
