-- Data-plane API keys and usage statistics.

-- Whether every request to the workspace's mocks must present an API key
-- of the environment it reaches.
ALTER TABLE workspaces ADD COLUMN require_keys INTEGER NOT NULL DEFAULT 0 CHECK (require_keys IN (0, 1));

-- A key opens one environment of one workspace; deleting the environment
-- deletes its keys. Only the SHA-256 of the secret is kept (`key_hash`, hex)
-- and `hint`, its first characters, to recognize it by. Test keys (`test`
-- = 1) have a reason and an expiry; `created_by` counts them per person.
-- Revoking deletes the row; keys expired for a day are deleted too.
CREATE TABLE api_keys (
    id              UUID PRIMARY KEY,
    org_id          UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    workspace_id    UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    environment_id  UUID NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    key_hash        TEXT NOT NULL UNIQUE,
    hint            TEXT NOT NULL,
    test            INTEGER NOT NULL DEFAULT 0 CHECK (test IN (0, 1)),
    reason          TEXT NOT NULL,
    created_by      UUID REFERENCES principals (id) ON DELETE SET NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ,
    last_used_at    TIMESTAMPTZ
);
CREATE INDEX api_keys_workspace ON api_keys (workspace_id, created_at);
CREATE INDEX api_keys_environment ON api_keys (environment_id);
CREATE INDEX api_keys_expiring ON api_keys (expires_at) WHERE expires_at IS NOT NULL;

-- Requests nodes answered, per workspace, environment (by name, as nodes
-- report it) and minute (`minute`: Unix seconds of the minute's start).
-- Reports add to the row of their minute. Test-key requests are counted
-- apart and never in `requests`.
CREATE TABLE usage (
    workspace_id   UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    org_id         UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    environment    TEXT NOT NULL,
    minute         BIGINT NOT NULL,
    requests       BIGINT NOT NULL,
    test_requests  BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, environment, minute)
);
