-- Whether a route's response body and header values are templates (0 or 1,
-- as in SQLite, so one query binds the same type on both backends).
ALTER TABLE routes ADD COLUMN template INTEGER NOT NULL DEFAULT 0 CHECK (template IN (0, 1));
