-- Mockplane control-plane schema (SQLite, the embedded single-machine store).
-- Mirrors migrations/postgres; see there for what each column means.
-- UUIDs are 16-byte BLOBs, timestamps RFC 3339 TEXT. STRICT tables refuse
-- values of the wrong type.

CREATE TABLE orgs (
    id          BLOB PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
) STRICT;

CREATE TABLE api_tokens (
    id          BLOB PRIMARY KEY,
    org_id      BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
) STRICT;

CREATE TABLE workspaces (
    id           BLOB PRIMARY KEY,
    org_id       BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    slug         TEXT NOT NULL UNIQUE,
    name         TEXT NOT NULL,
    description  TEXT NOT NULL,
    version      INTEGER NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
) STRICT;
CREATE INDEX workspaces_org_slug ON workspaces (org_id, slug);

CREATE TABLE routes (
    id            BLOB PRIMARY KEY,
    workspace_id  BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    org_id        BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    method        TEXT NOT NULL,
    path          TEXT NOT NULL,
    match_key     TEXT NOT NULL,
    status        INTEGER NOT NULL,
    headers       TEXT NOT NULL,
    body          BLOB NOT NULL,
    version       INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    UNIQUE (workspace_id, match_key)
) STRICT;
CREATE INDEX routes_workspace_id ON routes (workspace_id, id);

CREATE TABLE config_revision (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    revision        INTEGER NOT NULL,
    pruned_through  INTEGER NOT NULL
) STRICT;
INSERT INTO config_revision (id, revision, pruned_through) VALUES (1, 0, 0);

CREATE TABLE change_log (
    revision      INTEGER NOT NULL,
    workspace_id  BLOB NOT NULL,
    changed_at    TEXT NOT NULL,
    PRIMARY KEY (revision, workspace_id)
) STRICT;
