-- Promotions of personas and of environment settings; see
-- migrations/postgres/0016_promotion_entities.sql.
CREATE TABLE persona_deployments (
    environment_id  BLOB NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    persona_id      BLOB NOT NULL REFERENCES personas (id) ON DELETE CASCADE,
    number          INTEGER NOT NULL CHECK (number >= 1),
    org_id          BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    workspace_id    BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    deployed_at     TEXT NOT NULL,
    PRIMARY KEY (environment_id, persona_id),
    FOREIGN KEY (persona_id, number) REFERENCES persona_versions (persona_id, number)
) STRICT;
CREATE INDEX persona_deployments_workspace ON persona_deployments (workspace_id);

INSERT INTO persona_deployments (environment_id, persona_id, number, org_id, workspace_id, deployed_at)
SELECT e.id, p.id, p.version, p.org_id, p.workspace_id, p.updated_at
FROM personas p JOIN environments e ON e.workspace_id = p.workspace_id
-- (not the first environment of the chain: it serves the working copy)
WHERE NOT (e.position > 0 AND e.position = (SELECT MIN(f.position) FROM environments f
                                            WHERE f.workspace_id = e.workspace_id AND f.position > 0));

ALTER TABLE promotions ADD COLUMN persona_id BLOB REFERENCES personas (id) ON DELETE SET NULL;
ALTER TABLE promotions ADD COLUMN settings TEXT;
ALTER TABLE promotions ADD COLUMN previous_settings TEXT;

-- SQLite cannot drop a NOT NULL constraint: the table is rebuilt.
CREATE TABLE releases_next (
    id                BLOB PRIMARY KEY,
    org_id            BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    workspace_id      BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    environment_id    BLOB NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    entity_kind       TEXT NOT NULL DEFAULT 'scenario'
                      CHECK (entity_kind IN ('scenario', 'persona', 'environment')),
    scenario_id       BLOB REFERENCES scenarios (id) ON DELETE CASCADE,
    persona_id        BLOB REFERENCES personas (id) ON DELETE CASCADE,
    scenario          TEXT NOT NULL,
    version           INTEGER NOT NULL,
    previous_version  INTEGER NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('promotion', 'rollback', 'deploy')),
    promotion_id      BLOB REFERENCES promotions (id) ON DELETE SET NULL,
    actor             TEXT NOT NULL,
    at                TEXT NOT NULL
) STRICT;
INSERT INTO releases_next (id, org_id, workspace_id, environment_id, entity_kind, scenario_id, persona_id,
                           scenario, version, previous_version, kind, promotion_id, actor, at)
SELECT id, org_id, workspace_id, environment_id, 'scenario', scenario_id, NULL,
       scenario, version, previous_version, kind, promotion_id, actor, at
FROM releases;
DROP TABLE releases;
ALTER TABLE releases_next RENAME TO releases;
CREATE INDEX releases_environment ON releases (environment_id, at);
