-- Environments; see migrations/postgres/0005_environments.sql.
CREATE TABLE environments (
    id            BLOB PRIMARY KEY,
    workspace_id  BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    org_id        BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    position      INTEGER NOT NULL CHECK (position >= 0),
    settings      TEXT NOT NULL,
    version       INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    UNIQUE (workspace_id, name)
) STRICT;

ALTER TABLE workspaces ADD COLUMN active_env TEXT NOT NULL DEFAULT 'dev';
ALTER TABLE workspaces ADD COLUMN env_defaults TEXT NOT NULL DEFAULT '';
ALTER TABLE workspaces ADD COLUMN allow_skips INTEGER NOT NULL DEFAULT 0 CHECK (allow_skips IN (0, 1));

INSERT INTO environments (id, workspace_id, org_id, name, position, settings, version, created_at, updated_at)
SELECT randomblob(16), w.id, w.org_id, e.name, e.position, e.settings, 1, w.created_at, w.created_at
FROM workspaces w
CROSS JOIN (
    SELECT 'dev' AS name, 1 AS position, '{"reality":1}' AS settings
    UNION ALL SELECT 'test', 2, '{"reality":3,"drift_budget":5}'
    UNION ALL SELECT 'prod', 3, '{"reality":4,"drift_budget":0,"validation":"enforce","reason_required":true}'
) AS e;
