-- Scenarios: named, tagged sets of routes. A scenario's routes (the rows of
-- `routes` pointing at it) are its working copy, served by the first
-- environment of the chain. `tags` is a JSON array of strings.
CREATE TABLE scenarios (
    id            UUID PRIMARY KEY,
    workspace_id  UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    org_id        UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    description   TEXT NOT NULL,
    tags          TEXT NOT NULL,
    version       BIGINT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (workspace_id, name)
);

-- Every existing workspace gets the scenario 'default', holding its routes.
INSERT INTO scenarios (id, workspace_id, org_id, name, description, tags, version, created_at, updated_at)
SELECT gen_random_uuid(), w.id, w.org_id, 'default', '', '[]', 1, w.created_at, w.created_at
FROM workspaces w;

ALTER TABLE routes ADD COLUMN scenario_id UUID REFERENCES scenarios (id) ON DELETE CASCADE;
UPDATE routes SET scenario_id = (SELECT s.id FROM scenarios s WHERE s.workspace_id = routes.workspace_id AND s.name = 'default');
ALTER TABLE routes ALTER COLUMN scenario_id SET NOT NULL;
CREATE INDEX routes_scenario_id ON routes (scenario_id, id);

-- Immutable, content-hashed copies of a scenario's routes. `content` is a
-- protobuf ScenarioContent (the routes as nodes receive them);
-- `content_hash` is the sha256 of the routes without their ids.
CREATE TABLE scenario_versions (
    id            UUID PRIMARY KEY,
    scenario_id   UUID NOT NULL REFERENCES scenarios (id) ON DELETE CASCADE,
    workspace_id  UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    number        INTEGER NOT NULL CHECK (number >= 1),
    content_hash  TEXT NOT NULL,
    content       BYTEA NOT NULL,
    route_count   INTEGER NOT NULL,
    note          TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (scenario_id, number)
);

-- Which version of each scenario an environment after the first serves.
CREATE TABLE deployments (
    environment_id  UUID NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    scenario_id     UUID NOT NULL REFERENCES scenarios (id) ON DELETE CASCADE,
    version_id      UUID NOT NULL REFERENCES scenario_versions (id),
    workspace_id    UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    deployed_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (environment_id, scenario_id)
);
CREATE INDEX deployments_workspace ON deployments (workspace_id);
