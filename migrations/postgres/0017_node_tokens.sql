-- Node tokens: the credentials data-plane nodes present on the config
-- stream. They belong to the fleet, not to a tenant: only system-scope
-- transactions (the stream's look-up by hash, the operator commands) see
-- them. Only the SHA-256 of a token is stored.
CREATE TABLE node_tokens (
    id            UUID PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    TIMESTAMPTZ NOT NULL,
    revoked_at    TIMESTAMPTZ,
    last_used_at  TIMESTAMPTZ
);

ALTER TABLE node_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE node_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY system_only ON node_tokens
    USING ((SELECT mockplane_system())) WITH CHECK ((SELECT mockplane_system()));
