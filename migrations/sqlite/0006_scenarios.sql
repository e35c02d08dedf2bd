-- Scenarios, versions and deployments; see migrations/postgres/0006_scenarios.sql.
CREATE TABLE scenarios (
    id            BLOB PRIMARY KEY,
    workspace_id  BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    org_id        BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL,
    tags          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    UNIQUE (workspace_id, name)
) STRICT;

INSERT INTO scenarios (id, workspace_id, org_id, name, description, tags, version, created_at, updated_at)
SELECT randomblob(16), w.id, w.org_id, 'default', '', '[]', 1, w.created_at, w.created_at
FROM workspaces w;

-- SQLite cannot add a NOT NULL column without a default; the store always sets it.
ALTER TABLE routes ADD COLUMN scenario_id BLOB REFERENCES scenarios (id) ON DELETE CASCADE;
UPDATE routes SET scenario_id = (SELECT s.id FROM scenarios s WHERE s.workspace_id = routes.workspace_id AND s.name = 'default');
CREATE INDEX routes_scenario_id ON routes (scenario_id, id);

CREATE TABLE scenario_versions (
    id            BLOB PRIMARY KEY,
    scenario_id   BLOB NOT NULL REFERENCES scenarios (id) ON DELETE CASCADE,
    workspace_id  BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    number        INTEGER NOT NULL CHECK (number >= 1),
    content_hash  TEXT NOT NULL,
    content       BLOB NOT NULL,
    route_count   INTEGER NOT NULL,
    note          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    UNIQUE (scenario_id, number)
) STRICT;

CREATE TABLE deployments (
    environment_id  BLOB NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    scenario_id     BLOB NOT NULL REFERENCES scenarios (id) ON DELETE CASCADE,
    version_id      BLOB NOT NULL REFERENCES scenario_versions (id),
    workspace_id    BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    deployed_at     TEXT NOT NULL,
    PRIMARY KEY (environment_id, scenario_id)
) STRICT;
CREATE INDEX deployments_workspace ON deployments (workspace_id);
