-- Identity and access; see migrations/postgres/0009_identity.sql.
CREATE TABLE principals (
    id               BLOB PRIMARY KEY,
    org_id           BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    kind             TEXT NOT NULL CHECK (kind IN ('user', 'service')),
    email            TEXT UNIQUE,
    name             TEXT NOT NULL,
    org_role         TEXT NOT NULL CHECK (org_role IN ('owner', 'admin', 'member')),
    password_hash    TEXT,
    disabled         INTEGER NOT NULL DEFAULT 0,
    version          INTEGER NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    UNIQUE (org_id, kind, name)
) STRICT;

INSERT INTO principals (id, org_id, kind, email, name, org_role, version, created_at, updated_at)
    SELECT id, org_id, 'service', NULL, name || '-' || substr(lower(hex(id)), 1, 8), 'owner', 1, created_at, created_at
    FROM api_tokens;

-- SQLite cannot add a NOT NULL foreign key column to a filled table, so the
-- table is rebuilt.
CREATE TABLE api_tokens_new (
    id            BLOB PRIMARY KEY,
    org_id        BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    principal_id  BLOB NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    last_used_at  TEXT
) STRICT;
INSERT INTO api_tokens_new (id, org_id, principal_id, name, token_hash, created_at)
    SELECT id, org_id, id, name, token_hash, created_at FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_new RENAME TO api_tokens;
CREATE INDEX api_tokens_principal ON api_tokens (principal_id);

CREATE TABLE roles (
    org_id       BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL,
    permissions  TEXT NOT NULL,
    version      INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (org_id, name)
) STRICT;

CREATE TABLE memberships (
    workspace_id  BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    org_id        BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    principal_id  BLOB NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    environment   TEXT NOT NULL,
    role          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (workspace_id, principal_id, environment)
) STRICT;
CREATE INDEX memberships_principal ON memberships (principal_id);

CREATE TABLE env_policies (
    workspace_id  BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    org_id        BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    environment   TEXT NOT NULL,
    permission    TEXT NOT NULL,
    roles         TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (workspace_id, environment, permission)
) STRICT;

CREATE TABLE refresh_tokens (
    id            BLOB PRIMARY KEY,
    org_id        BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    principal_id  BLOB NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    family        BLOB NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    expires_at    TEXT NOT NULL,
    used_at       TEXT,
    revoked_at    TEXT,
    created_at    TEXT NOT NULL
) STRICT;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family);

CREATE TABLE environment_access (
    id            BLOB PRIMARY KEY,
    org_id        BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    workspace_id  BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    environment   TEXT NOT NULL,
    principal_id  BLOB NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    reason        TEXT NOT NULL,
    token_id      TEXT NOT NULL,
    granted_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL
) STRICT;
CREATE INDEX environment_access_workspace ON environment_access (workspace_id, granted_at);
