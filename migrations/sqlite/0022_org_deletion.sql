-- Deleted orgs stay as tombstones; see migrations/postgres/0022_org_deletion.sql.
ALTER TABLE orgs ADD COLUMN deleted_at TEXT;
ALTER TABLE orgs ADD COLUMN deleted_reason TEXT;
