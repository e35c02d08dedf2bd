-- Deleting an org: its data goes (workspaces, people, keys, ...), its row
-- stays as a tombstone, because the audit chain hangs off it (events are
-- pruned, never deleted, so the chain still verifies). A deleted org's name
-- is not given to a new org: its chain's events name it.
ALTER TABLE orgs ADD COLUMN deleted_at TIMESTAMPTZ;
ALTER TABLE orgs ADD COLUMN deleted_reason TEXT;
