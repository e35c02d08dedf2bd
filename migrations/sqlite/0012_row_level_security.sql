-- PostgreSQL's 0012 turns on row-level security. SQLite has none: an
-- embedded database serves one machine and has no other tenant's session to
-- wall off. Kept so both backends number their migrations alike.
SELECT 1;
