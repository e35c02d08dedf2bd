-- See migrations/postgres/0015_notifications.sql.
-- Where a workspace's promotion events go (webhooks, e-mail, GitOps pull
-- requests), and the outbox of deliveries: written in the transaction of
-- the event itself, delivered (and retried) by any replica afterwards.

CREATE TABLE notification_channels (
    id            BLOB PRIMARY KEY,
    org_id        BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    workspace_id  BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    kind          TEXT NOT NULL CHECK (kind IN ('webhook', 'email', 'gitops')),
    -- The webhook URL, the e-mail address, the git repository.
    target        TEXT NOT NULL,
    -- The webhook's signing secret, the provider API token; '' for e-mail.
    secret        TEXT NOT NULL,
    -- JSON list of event names; empty: every event.
    events        TEXT NOT NULL,
    -- JSON: the GitOps settings (provider, API URL, repository, branch,
    -- path); {} otherwise.
    config        TEXT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    TEXT NOT NULL
) STRICT;
CREATE INDEX notification_channels_workspace ON notification_channels (workspace_id);

CREATE TABLE notifications (
    id               BLOB PRIMARY KEY,
    org_id           BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    workspace_id     BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    channel_id       BLOB NOT NULL REFERENCES notification_channels (id) ON DELETE CASCADE,
    promotion_id     BLOB REFERENCES promotions (id) ON DELETE CASCADE,
    event            TEXT NOT NULL,
    -- JSON: what is delivered.
    payload          TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         INTEGER NOT NULL,
    next_attempt_at  TEXT NOT NULL,
    last_error       TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    delivered_at     TEXT
) STRICT;
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notifications_workspace ON notifications (workspace_id, created_at);

-- Every delivery attempt: the delivery log.
CREATE TABLE notification_attempts (
    notification_id  BLOB NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    org_id           BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    workspace_id     BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    attempt          INTEGER NOT NULL,
    at               TEXT NOT NULL,
    outcome          TEXT NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed')),
    detail           TEXT NOT NULL,
    PRIMARY KEY (notification_id, attempt)
) STRICT;
