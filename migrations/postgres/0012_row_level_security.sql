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

-- A row of an org-wide table (people, roles, tokens, audit).
CREATE FUNCTION mockplane_org_row(row_org uuid) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT mockplane_system() OR row_org = mockplane_org()
$$;

-- A row that belongs to one workspace.
CREATE FUNCTION mockplane_workspace_row(row_org uuid, row_workspace uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT mockplane_system()
        OR (row_org = mockplane_org()
            AND (mockplane_workspace() IS NULL OR row_workspace = mockplane_workspace()))
$$;

ALTER TABLE orgs ENABLE ROW LEVEL SECURITY;
ALTER TABLE orgs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON orgs USING (mockplane_org_row(id)) WITH CHECK (mockplane_org_row(id));

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['api_tokens', 'principals', 'roles', 'refresh_tokens',
                             'audit_heads'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant ON %I USING (mockplane_org_row(org_id)) '
                       'WITH CHECK (mockplane_org_row(org_id))', t);
    END LOOP;
    FOREACH t IN ARRAY ARRAY['routes', 'environments', 'scenarios', 'personas', 'memberships',
                             'env_policies', 'environment_access', 'api_keys', 'usage'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant ON %I USING (mockplane_workspace_row(org_id, workspace_id)) '
                       'WITH CHECK (mockplane_workspace_row(org_id, workspace_id))', t);
    END LOOP;
    -- Tables without an org column see through their parent, whose own
    -- policy applies inside the sub-query.
    FOREACH t IN ARRAY ARRAY['scenario_versions', 'deployments'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant ON %I '
                       'USING (mockplane_system() OR EXISTS (SELECT 1 FROM workspaces w WHERE w.id = workspace_id)) '
                       'WITH CHECK (mockplane_system() OR EXISTS (SELECT 1 FROM workspaces w WHERE w.id = workspace_id))', t);
    END LOOP;
END
$$;

ALTER TABLE workspaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE workspaces FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON workspaces
    USING (mockplane_workspace_row(org_id, id))
    WITH CHECK (mockplane_workspace_row(org_id, id));

-- Events of the whole org ('' workspace) stay in reach of a transaction
-- confined to one workspace; other workspaces' events do not.
ALTER TABLE audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON audit_events
    USING (mockplane_system()
           OR (org_id = mockplane_org()
               AND (mockplane_workspace() IS NULL OR workspace_id IN ('', mockplane_workspace()::text))))
    WITH CHECK (mockplane_system()
           OR (org_id = mockplane_org()
               AND (mockplane_workspace() IS NULL OR workspace_id IN ('', mockplane_workspace()::text))));

ALTER TABLE persona_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE persona_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON persona_versions
    USING (mockplane_system() OR EXISTS (SELECT 1 FROM personas p WHERE p.id = persona_id))
    WITH CHECK (mockplane_system() OR EXISTS (SELECT 1 FROM personas p WHERE p.id = persona_id));
