-- Environments: the stages of a workspace's promotion chain (dev → test →
-- prod by default) and any off the chain (a sandbox). `position` is the
-- 1-based place on the chain, 0 when off it; the first environment on the
-- chain serves the working copies. `settings` is the JSON of the overrides
-- set on the environment ('' when none); what is unset inherits the
-- workspace's `env_defaults`, then the built-in defaults.
CREATE TABLE environments (
    id            UUID PRIMARY KEY,
    workspace_id  UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    org_id        UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    position      INTEGER NOT NULL CHECK (position >= 0),
    settings      TEXT NOT NULL,
    version       BIGINT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (workspace_id, name)
);

ALTER TABLE workspaces ADD COLUMN active_env TEXT NOT NULL DEFAULT 'dev';
ALTER TABLE workspaces ADD COLUMN env_defaults TEXT NOT NULL DEFAULT '';
ALTER TABLE workspaces ADD COLUMN allow_skips INTEGER NOT NULL DEFAULT 0 CHECK (allow_skips IN (0, 1));

-- Every existing workspace gets the default environments.
INSERT INTO environments (id, workspace_id, org_id, name, position, settings, version, created_at, updated_at)
SELECT gen_random_uuid(), w.id, w.org_id, e.name, e.position, e.settings, 1, w.created_at, w.created_at
FROM workspaces w
CROSS JOIN (VALUES
    ('dev', 1, '{"reality":1}'),
    ('test', 2, '{"reality":3,"drift_budget":5}'),
    ('prod', 3, '{"reality":4,"drift_budget":0,"validation":"enforce","reason_required":true}')
) AS e (name, position, settings);
