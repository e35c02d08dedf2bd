-- Data-plane API keys and usage statistics; see
-- migrations/postgres/0011_api_keys_usage.sql.
ALTER TABLE workspaces ADD COLUMN require_keys INTEGER NOT NULL DEFAULT 0 CHECK (require_keys IN (0, 1));

CREATE TABLE api_keys (
    id              BLOB PRIMARY KEY,
    org_id          BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    workspace_id    BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    environment_id  BLOB NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    key_hash        TEXT NOT NULL UNIQUE,
    hint            TEXT NOT NULL,
    test            INTEGER NOT NULL DEFAULT 0 CHECK (test IN (0, 1)),
    reason          TEXT NOT NULL,
    created_by      BLOB REFERENCES principals (id) ON DELETE SET NULL,
    created_at      TEXT NOT NULL,
    expires_at      TEXT,
    last_used_at    TEXT
) STRICT;
CREATE INDEX api_keys_workspace ON api_keys (workspace_id, created_at);
CREATE INDEX api_keys_environment ON api_keys (environment_id);
CREATE INDEX api_keys_expiring ON api_keys (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE usage (
    workspace_id   BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    org_id         BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    environment    TEXT NOT NULL,
    minute         INTEGER NOT NULL,
    requests       INTEGER NOT NULL,
    test_requests  INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, environment, minute)
) STRICT;
