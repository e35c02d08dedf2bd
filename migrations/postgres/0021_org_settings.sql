-- Orgs as a resource: a display name, settings (whether members may create
-- workspaces, quotas; JSON, a field left out takes its default) and a
-- version for etags. Principals gain the platform role above orgs.
ALTER TABLE orgs ADD COLUMN display_name TEXT NOT NULL DEFAULT '';
ALTER TABLE orgs ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
ALTER TABLE orgs ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
-- NULL: never updated (read as created_at).
ALTER TABLE orgs ADD COLUMN updated_at TIMESTAMPTZ;

-- Platform admins create orgs and set their quotas. The first run's owners
-- (the owners of the oldest org) are the first.
ALTER TABLE principals ADD COLUMN platform_admin INTEGER NOT NULL DEFAULT 0 CHECK (platform_admin IN (0, 1));
-- The tables force row-level security on their owner too: this one
-- statement acts for the whole system.
SELECT set_config('mockplane.system', 'on', true);
UPDATE principals SET platform_admin = 1
    WHERE org_role = 'owner'
      AND org_id = (SELECT id FROM orgs ORDER BY created_at, id LIMIT 1);
SELECT set_config('mockplane.system', 'off', true);
