-- A route's latency and chaos; see migrations/postgres.
ALTER TABLE routes ADD COLUMN realism TEXT NOT NULL DEFAULT '';
