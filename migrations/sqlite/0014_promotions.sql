-- Promotions; see migrations/postgres/0014_promotions.sql.
-- Promotions: how a scenario version moves from one environment of the
-- chain to a later one, gated, approved, executed in one transaction and
-- reversible.

-- Pillar-tag approval rules (JSON, see shared/src/promotion.rs): the org's
-- (NULL: the built-in rule) and a workspace's own (NULL: the org's).
ALTER TABLE orgs ADD COLUMN approval_rules TEXT;
ALTER TABLE workspaces ADD COLUMN approval_rules TEXT;

-- Contract checks (JSON list): the working copy's, and each version's own
-- frozen copy.
ALTER TABLE scenarios ADD COLUMN checks TEXT NOT NULL DEFAULT '[]';
ALTER TABLE scenario_versions ADD COLUMN checks TEXT NOT NULL DEFAULT '[]';

CREATE TABLE promotions (
    id                   BLOB PRIMARY KEY,
    org_id               BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    workspace_id         BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    -- 1, 2, 3… per workspace, for people.
    number               INTEGER NOT NULL,
    entity_kind          TEXT NOT NULL,
    scenario_id          BLOB REFERENCES scenarios (id) ON DELETE SET NULL,
    scenario             TEXT NOT NULL,
    version_id           BLOB REFERENCES scenario_versions (id) ON DELETE SET NULL,
    version              INTEGER NOT NULL,
    from_environment_id  BLOB REFERENCES environments (id) ON DELETE SET NULL,
    to_environment_id    BLOB REFERENCES environments (id) ON DELETE SET NULL,
    from_environment     TEXT NOT NULL,
    to_environment       TEXT NOT NULL,
    status               TEXT NOT NULL,
    -- Why it is in its status (a failed gate, the rejection's comment).
    status_reason        TEXT NOT NULL,
    requested_by         BLOB,
    requested_by_name    TEXT NOT NULL,
    comment              TEXT NOT NULL,
    -- JSON: {"key": "value"} and the scenario's tags when requested.
    metadata             TEXT NOT NULL,
    tags                 TEXT NOT NULL,
    approvals_required   INTEGER NOT NULL,
    approver_roles       TEXT NOT NULL,
    approval_reasons     TEXT NOT NULL,
    -- JSON: what it changes in the target, and the gates' results.
    diff                 TEXT NOT NULL,
    gates                TEXT NOT NULL,
    -- Rollback data: what the target served of the scenario before.
    previous_version_id  BLOB REFERENCES scenario_versions (id) ON DELETE SET NULL,
    previous_version     INTEGER,
    -- The config revision that made the target serve it.
    revision             INTEGER,
    pr_url               TEXT,
    gitops_error         TEXT,
    expires_at           TEXT NOT NULL,
    reminded_at          TEXT,
    created_at           TEXT NOT NULL,
    updated_at           TEXT NOT NULL,
    completed_at         TEXT,
    UNIQUE (workspace_id, number)
) STRICT;
CREATE INDEX promotions_org_status ON promotions (org_id, status, created_at);
CREATE INDEX promotions_expiring ON promotions (expires_at) WHERE status = 'pending';

-- Every status a promotion took: who, when, why.
CREATE TABLE promotion_transitions (
    promotion_id  BLOB NOT NULL REFERENCES promotions (id) ON DELETE CASCADE,
    org_id        BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    workspace_id  BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    seq           INTEGER NOT NULL,
    from_status   TEXT,
    to_status     TEXT NOT NULL,
    actor_id      BLOB,
    actor         TEXT NOT NULL,
    reason        TEXT NOT NULL,
    at            TEXT NOT NULL,
    PRIMARY KEY (promotion_id, seq)
) STRICT;

-- One decision per approver.
CREATE TABLE promotion_decisions (
    promotion_id  BLOB NOT NULL REFERENCES promotions (id) ON DELETE CASCADE,
    org_id        BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    workspace_id  BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    approver_id   BLOB NOT NULL,
    approver      TEXT NOT NULL,
    role          TEXT NOT NULL,
    decision      TEXT NOT NULL CHECK (decision IN ('approve', 'reject')),
    comment       TEXT NOT NULL,
    at            TEXT NOT NULL,
    PRIMARY KEY (promotion_id, approver_id)
) STRICT;

-- External checks (CI jobs) reported on a promotion; the latest per name.
CREATE TABLE promotion_checks (
    promotion_id  BLOB NOT NULL REFERENCES promotions (id) ON DELETE CASCADE,
    org_id        BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    workspace_id  BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('pending', 'passed', 'failed')),
    url           TEXT NOT NULL,
    detail        TEXT NOT NULL,
    reported_by   TEXT NOT NULL,
    at            TEXT NOT NULL,
    PRIMARY KEY (promotion_id, name)
) STRICT;

-- What each environment served when: every promotion, rollback and direct
-- deployment, in order.
CREATE TABLE releases (
    id                BLOB PRIMARY KEY,
    org_id            BLOB NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    workspace_id      BLOB NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    environment_id    BLOB NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    scenario_id       BLOB NOT NULL REFERENCES scenarios (id) ON DELETE CASCADE,
    scenario          TEXT NOT NULL,
    -- 0: the environment stopped serving the scenario.
    version           INTEGER NOT NULL,
    previous_version  INTEGER NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('promotion', 'rollback', 'deploy')),
    promotion_id      BLOB REFERENCES promotions (id) ON DELETE SET NULL,
    actor             TEXT NOT NULL,
    at                TEXT NOT NULL
) STRICT;
CREATE INDEX releases_environment ON releases (environment_id, at);
