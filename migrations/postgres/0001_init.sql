-- Mockplane control-plane schema (PostgreSQL).
-- Every tenant table carries org_id; every query is scoped by it.

CREATE TABLE orgs (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL
);

-- Bearer tokens for the gRPC API. Only the SHA-256 of the secret is kept.
CREATE TABLE api_tokens (
    id          UUID PRIMARY KEY,
    org_id      UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE workspaces (
    id           UUID PRIMARY KEY,
    org_id       UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    -- Globally unique: the slug addresses the workspace on every data-plane node.
    slug         TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL,
    -- Bumped on every update; the etag is derived from it.
    version      BIGINT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX workspaces_org_slug ON workspaces (org_id, slug);

CREATE TABLE routes (
    -- UUIDv7: ordering by id is ordering by creation.
    id            UUID PRIMARY KEY,
    workspace_id  UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    org_id        UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    method        TEXT NOT NULL,
    path          TEXT NOT NULL,
    -- Method and path with parameter names erased: two routes with the same
    -- key would match the same requests.
    match_key     TEXT NOT NULL,
    status        INTEGER NOT NULL,
    -- JSON array of [name, value] pairs, in order.
    headers       TEXT NOT NULL,
    body          BYTEA NOT NULL,
    version       BIGINT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (workspace_id, match_key)
);
CREATE INDEX routes_workspace_id ON routes (workspace_id, id);

-- The config revision: one row, bumped by every transaction that changes
-- what data-plane nodes serve. The row lock it takes serializes those
-- transactions, so revisions commit in increasing order and a reader never
-- sees revision N+1 without N.
CREATE TABLE config_revision (
    id              SMALLINT PRIMARY KEY CHECK (id = 1),
    revision        BIGINT NOT NULL,
    -- change_log rows at or below this revision may have been deleted.
    pruned_through  BIGINT NOT NULL
);
INSERT INTO config_revision (id, revision, pruned_through) VALUES (1, 0, 0);

-- Which workspaces each revision changed. No foreign key: a deleted
-- workspace's rows are how nodes learn to stop serving it.
CREATE TABLE change_log (
    revision      BIGINT NOT NULL,
    workspace_id  UUID NOT NULL,
    changed_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (revision, workspace_id)
);
