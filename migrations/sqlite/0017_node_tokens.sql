-- Node tokens; see migrations/postgres/0017_node_tokens.sql.
CREATE TABLE node_tokens (
    id            BLOB PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    revoked_at    TEXT,
    last_used_at  TEXT
) STRICT;
