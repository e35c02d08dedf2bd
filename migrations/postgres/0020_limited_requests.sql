-- Requests a node refused because the environment's rate or concurrency
-- limit was reached (429): counted apart from those it answered.
ALTER TABLE usage ADD COLUMN limited_requests BIGINT NOT NULL DEFAULT 0;
