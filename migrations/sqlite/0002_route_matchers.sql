-- Request matchers and priority per route; see migrations/postgres.
ALTER TABLE routes ADD COLUMN matchers TEXT NOT NULL DEFAULT '';
ALTER TABLE routes ADD COLUMN priority INTEGER NOT NULL DEFAULT 5 CHECK (priority BETWEEN 1 AND 1000);
