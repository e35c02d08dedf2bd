-- Whether a route's response is a template; see migrations/postgres.
ALTER TABLE routes ADD COLUMN template INTEGER NOT NULL DEFAULT 0 CHECK (template IN (0, 1));
