-- Request matchers (query, headers, body) and priority per route.
-- `matchers` is the file form of the route's RequestMatch as JSON text
-- ('' when it has none); the node compiles it, the database only stores it.
ALTER TABLE routes ADD COLUMN matchers TEXT NOT NULL DEFAULT '';
ALTER TABLE routes ADD COLUMN priority INTEGER NOT NULL DEFAULT 5 CHECK (priority BETWEEN 1 AND 1000);
