-- Promotions of personas and of environment settings.
--
-- Personas are served per environment, like scenarios: the first
-- environment of the chain serves the working copy, every other one the
-- version promoted into it (persona_deployments).
CREATE TABLE persona_deployments (
    environment_id  UUID NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    persona_id      UUID NOT NULL REFERENCES personas (id) ON DELETE CASCADE,
    number          BIGINT NOT NULL CHECK (number >= 1),
    org_id          UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    workspace_id    UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    deployed_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (environment_id, persona_id),
    FOREIGN KEY (persona_id, number) REFERENCES persona_versions (persona_id, number)
);
CREATE INDEX persona_deployments_workspace ON persona_deployments (workspace_id);

-- Until now every environment served every persona's current version:
-- they keep serving it.
INSERT INTO persona_deployments (environment_id, persona_id, number, org_id, workspace_id, deployed_at)
SELECT e.id, p.id, p.version, p.org_id, p.workspace_id, p.updated_at
FROM personas p JOIN environments e ON e.workspace_id = p.workspace_id
-- (not the first environment of the chain: it serves the working copy)
WHERE NOT (e.position > 0 AND e.position = (SELECT MIN(f.position) FROM environments f
                                            WHERE f.workspace_id = e.workspace_id AND f.position > 0));

-- What a promotion moves: a persona version (persona_id, version), or an
-- environment's served settings (settings: the source's, frozen at the
-- request; previous_settings: the target's before the execution, for the
-- rollback). `scenario` holds the name of what is promoted.
ALTER TABLE promotions ADD COLUMN persona_id UUID REFERENCES personas (id) ON DELETE SET NULL;
ALTER TABLE promotions ADD COLUMN settings TEXT;
ALTER TABLE promotions ADD COLUMN previous_settings TEXT;

-- Releases of personas and settings next to those of scenarios.
ALTER TABLE releases ADD COLUMN entity_kind TEXT NOT NULL DEFAULT 'scenario'
    CHECK (entity_kind IN ('scenario', 'persona', 'environment'));
ALTER TABLE releases ALTER COLUMN scenario_id DROP NOT NULL;
ALTER TABLE releases ADD COLUMN persona_id UUID REFERENCES personas (id) ON DELETE CASCADE;

DO $$
DECLARE
    workspace_row constant text :=
        '(SELECT mockplane_system()) OR (org_id = (SELECT mockplane_org()) AND '
        '((SELECT mockplane_workspace()) IS NULL OR workspace_id = (SELECT mockplane_workspace())))';
BEGIN
    EXECUTE 'ALTER TABLE persona_deployments ENABLE ROW LEVEL SECURITY';
    EXECUTE 'ALTER TABLE persona_deployments FORCE ROW LEVEL SECURITY';
    EXECUTE format('CREATE POLICY tenant ON persona_deployments USING (%s) WITH CHECK (%s)',
                   workspace_row, workspace_row);
END
$$;
