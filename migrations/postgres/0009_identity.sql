-- Identity and access: users and service accounts, custom roles, roles per
-- environment, environment policies, refresh tokens and the environment
-- access log.

-- People (kind 'user') and automation (kind 'service'). Users log in by
-- e-mail (unique across orgs, so a login names one org); service accounts
-- have a name unique in their org and authenticate with API tokens only.
CREATE TABLE principals (
    id               UUID PRIMARY KEY,
    org_id           UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    kind             TEXT NOT NULL CHECK (kind IN ('user', 'service')),
    -- Lowercased e-mail for users, NULL for service accounts.
    email            TEXT UNIQUE,
    name             TEXT NOT NULL,
    org_role         TEXT NOT NULL CHECK (org_role IN ('owner', 'admin', 'member')),
    -- argon2id PHC string; NULL: no password login (API tokens or an IdP).
    password_hash    TEXT,
    disabled         INTEGER NOT NULL DEFAULT 0,
    version          BIGINT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    UNIQUE (org_id, kind, name)
);

-- Every API token belongs to a principal. Tokens made before this
-- migration become service accounts that own the org, named after the
-- token, so nothing that worked stops working.
INSERT INTO principals (id, org_id, kind, email, name, org_role, version, created_at, updated_at)
    SELECT id, org_id, 'service', NULL, name || '-' || substr(id::text, 1, 8), 'owner', 1, created_at, created_at
    FROM api_tokens;
ALTER TABLE api_tokens ADD COLUMN principal_id UUID REFERENCES principals (id) ON DELETE CASCADE;
UPDATE api_tokens SET principal_id = id;
ALTER TABLE api_tokens ALTER COLUMN principal_id SET NOT NULL;
ALTER TABLE api_tokens ADD COLUMN expires_at TIMESTAMPTZ;
ALTER TABLE api_tokens ADD COLUMN last_used_at TIMESTAMPTZ;
CREATE INDEX api_tokens_principal ON api_tokens (principal_id);

-- Custom roles an org defines; the built-in admin, editor and viewer are
-- not stored. permissions: JSON array of permission names.
CREATE TABLE roles (
    org_id       UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL,
    permissions  TEXT NOT NULL,
    version      BIGINT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (org_id, name)
);

-- A principal's role in one environment of a workspace. Environments are
-- named, not referenced: deleting an environment deletes its rows.
CREATE TABLE memberships (
    workspace_id  UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    org_id        UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    principal_id  UUID NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    environment   TEXT NOT NULL,
    role          TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (workspace_id, principal_id, environment)
);
CREATE INDEX memberships_principal ON memberships (principal_id);

-- (environment, permission) -> the roles allowed; roles: JSON array.
CREATE TABLE env_policies (
    workspace_id  UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    org_id        UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    environment   TEXT NOT NULL,
    permission    TEXT NOT NULL,
    roles         TEXT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (workspace_id, environment, permission)
);

-- Refresh tokens: opaque, hashed, single use. Using one replaces it; using
-- a replaced one again revokes the whole family (a stolen token shows).
CREATE TABLE refresh_tokens (
    id            UUID PRIMARY KEY,
    org_id        UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    principal_id  UUID NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    family        UUID NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    expires_at    TIMESTAMPTZ NOT NULL,
    used_at       TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);

-- Every environment-scoped token granted, with the reason stated.
CREATE TABLE environment_access (
    id            UUID PRIMARY KEY,
    org_id        UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    workspace_id  UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    environment   TEXT NOT NULL,
    principal_id  UUID NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    reason        TEXT NOT NULL,
    token_id      TEXT NOT NULL,
    granted_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX environment_access_workspace ON environment_access (workspace_id, granted_at);
