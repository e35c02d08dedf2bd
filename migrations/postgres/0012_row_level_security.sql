-- Row-level security: the second wall between tenants.
--
-- The store names whose rows every transaction may touch before its first
-- statement (`set_config(..., true)`, so it ends with the transaction):
--
--   mockplane.org        the org of the caller;
--   mockplane.workspace  once a transaction has found the workspace it acts
--                        on, that workspace: rows of the org's other
--                        workspaces disappear from it;
--   mockplane.system     'on' only for the few look-ups that serve the whole
--                        fleet or find the caller before its org is known
--                        (token, login and refresh look-ups by secret hash,
--                        node snapshots, usage reports, retention jobs).
--
-- A transaction that names nothing sees no tenant row at all. Policies are
-- FORCEd, so they hold for the tables' owner too; the service must connect
-- as a role that is neither superuser nor BYPASSRLS (it checks at start).
-- Fleet bookkeeping without tenant content (config_revision, change_log) and
-- sqlx's own table are left out.

CREATE FUNCTION mockplane_system() RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT COALESCE(current_setting('mockplane.system', true) = 'on', false)
$$;

CREATE FUNCTION mockplane_org() RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT NULLIF(current_setting('mockplane.org', true), '')::uuid
$$;

CREATE FUNCTION mockplane_workspace() RETURNS uuid LANGUAGE sql STABLE AS $$
    SELECT NULLIF(current_setting('mockplane.workspace', true), '')::uuid
$$;

-- The policies read the settings through scalar sub-queries, which
-- PostgreSQL evaluates once per statement rather than once per row (and can
-- then use indexes on org_id and workspace_id).

DO $$
DECLARE
    t text;
    org_row constant text :=
        '(SELECT mockplane_system()) OR org_id = (SELECT mockplane_org())';
    workspace_row constant text :=
        '(SELECT mockplane_system()) OR (org_id = (SELECT mockplane_org()) AND '
        '((SELECT mockplane_workspace()) IS NULL OR %I = (SELECT mockplane_workspace())))';
    via_workspace constant text :=
        '(SELECT mockplane_system()) OR EXISTS (SELECT 1 FROM workspaces w WHERE w.id = workspace_id)';
BEGIN
    EXECUTE 'ALTER TABLE orgs ENABLE ROW LEVEL SECURITY';
    EXECUTE 'ALTER TABLE orgs FORCE ROW LEVEL SECURITY';
    EXECUTE 'CREATE POLICY tenant ON orgs USING ((SELECT mockplane_system()) OR id = (SELECT mockplane_org())) '
            'WITH CHECK ((SELECT mockplane_system()) OR id = (SELECT mockplane_org()))';
    -- Org-wide tables: people, roles, tokens, the audit chain's heads.
    FOREACH t IN ARRAY ARRAY['api_tokens', 'principals', 'roles', 'refresh_tokens',
                             'audit_heads'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant ON %I USING (%s) WITH CHECK (%s)', t, org_row, org_row);
    END LOOP;
    -- Rows of one workspace.
    FOREACH t IN ARRAY ARRAY['routes', 'environments', 'scenarios', 'personas', 'memberships',
                             'env_policies', 'environment_access', 'api_keys', 'usage'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant ON %I USING (%s) WITH CHECK (%s)', t,
                       format(workspace_row, 'workspace_id'), format(workspace_row, 'workspace_id'));
    END LOOP;
    EXECUTE 'ALTER TABLE workspaces ENABLE ROW LEVEL SECURITY';
    EXECUTE 'ALTER TABLE workspaces FORCE ROW LEVEL SECURITY';
    EXECUTE format('CREATE POLICY tenant ON workspaces USING (%s) WITH CHECK (%s)',
                   format(workspace_row, 'id'), format(workspace_row, 'id'));
    -- Tables without an org column see through their workspace, whose own
    -- policy applies inside the sub-query.
    FOREACH t IN ARRAY ARRAY['scenario_versions', 'deployments'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant ON %I USING (%s) WITH CHECK (%s)', t,
                       via_workspace, via_workspace);
    END LOOP;
END
$$;

-- Events of the whole org ('' workspace) stay in reach of a transaction
-- confined to one workspace; other workspaces' events do not.
ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON audit_events
    USING ((SELECT mockplane_system())
           OR (org_id = (SELECT mockplane_org())
               AND ((SELECT mockplane_workspace()) IS NULL
                    OR workspace_id IN ('', (SELECT mockplane_workspace())::text))))
    WITH CHECK ((SELECT mockplane_system())
           OR (org_id = (SELECT mockplane_org())
               AND ((SELECT mockplane_workspace()) IS NULL
                    OR workspace_id IN ('', (SELECT mockplane_workspace())::text))));

-- Persona versions see through their persona.
ALTER TABLE persona_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE persona_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON persona_versions
    USING ((SELECT mockplane_system()) OR EXISTS (SELECT 1 FROM personas p WHERE p.id = persona_id))
    WITH CHECK ((SELECT mockplane_system()) OR EXISTS (SELECT 1 FROM personas p WHERE p.id = persona_id));
