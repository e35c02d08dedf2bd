-- The audit trail: one event per change, written in the transaction of
-- the change, chained per org by hashes so an edited or removed event is
-- detectable.
--
-- digest = SHA-256 of the event's canonical content; hash = SHA-256 of
-- "<prev_hash>:<digest>". Pruning (retention) empties an event's content
-- but keeps seq, digest and both hashes, so the chain still verifies.
CREATE TABLE audit_events (
    org_id         UUID NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    seq            BIGINT NOT NULL,
    id             UUID NOT NULL UNIQUE,
    at             TIMESTAMPTZ NOT NULL,
    actor_id       TEXT NOT NULL,
    actor          TEXT NOT NULL,
    credential     TEXT NOT NULL,
    action         TEXT NOT NULL,
    resource       TEXT NOT NULL,
    workspace_id   TEXT NOT NULL,
    environment    TEXT NOT NULL,
    reason         TEXT NOT NULL,
    summary        TEXT NOT NULL,
    request_id     TEXT NOT NULL,
    pruned         INTEGER NOT NULL DEFAULT 0,
    digest         TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL,
    PRIMARY KEY (org_id, seq)
);
CREATE INDEX audit_events_workspace ON audit_events (org_id, workspace_id, seq);

-- The newest event of each org: appends lock this row, so an org's events
-- get consecutive sequence numbers in commit order.
CREATE TABLE audit_heads (
    org_id  UUID PRIMARY KEY REFERENCES orgs (id) ON DELETE CASCADE,
    seq     BIGINT NOT NULL,
    hash    TEXT NOT NULL
);

-- Append-only: events are never deleted, and an update may only prune
-- (empty the content of) an event, never change what the chain covers.
CREATE FUNCTION audit_events_guard() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'audit events are append-only';
    END IF;
    IF NEW.seq <> OLD.seq OR NEW.org_id <> OLD.org_id OR NEW.digest <> OLD.digest
        OR NEW.prev_hash <> OLD.prev_hash OR NEW.hash <> OLD.hash OR NEW.pruned <> 1 THEN
        RAISE EXCEPTION 'audit events are append-only; only pruning is allowed';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_guard();
