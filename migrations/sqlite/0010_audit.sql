-- The audit trail; see migrations/postgres/0010_audit.sql.
CREATE TABLE audit_events (
    org_id         BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    seq            INTEGER NOT NULL,
    id             BLOB NOT NULL UNIQUE,
    at             TEXT NOT NULL,
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
) STRICT;
CREATE INDEX audit_events_workspace ON audit_events (org_id, workspace_id, seq);

CREATE TABLE audit_heads (
    org_id  BLOB PRIMARY KEY REFERENCES orgs (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,
    hash    TEXT NOT NULL
) STRICT;

CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only');
END;

CREATE TRIGGER audit_events_prune_only BEFORE UPDATE ON audit_events
WHEN NEW.seq <> OLD.seq OR NEW.org_id <> OLD.org_id OR NEW.digest <> OLD.digest
    OR NEW.prev_hash <> OLD.prev_hash OR NEW.hash <> OLD.hash OR NEW.pruned <> 1
BEGIN
    SELECT RAISE(ABORT, 'audit events are append-only; only pruning is allowed');
END;
