-- Personas: named JSON documents templates read ({{persona.user.name}}).
-- `data` is the current JSON text; every change writes the next row of
-- persona_versions, which are never changed.
CREATE TABLE personas (
    id            UUID PRIMARY KEY,
    workspace_id  UUID NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    org_id        UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    data          TEXT NOT NULL,
    version       BIGINT NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE persona_versions (
    persona_id  UUID NOT NULL REFERENCES personas (id) ON DELETE CASCADE,
    number      BIGINT NOT NULL,
    data        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (persona_id, number)
);
