-- Personas; see migrations/postgres/0007_personas.sql.
CREATE TABLE personas (
    id            BLOB PRIMARY KEY,
    workspace_id  BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    org_id        BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    data          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    UNIQUE (workspace_id, name)
) STRICT;

CREATE TABLE persona_versions (
    persona_id  BLOB NOT NULL REFERENCES personas (id) ON DELETE CASCADE,
    number      INTEGER NOT NULL,
    data        TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (persona_id, number)
) STRICT;
