-- The node registry: every control-plane replica (one row per process
-- run, with a heartbeat) and every data-plane node that streamed config
-- from one, as that replica last reported it. Replicas write their nodes'
-- rows in batches about once a second, and their own heartbeat every few
-- seconds: a node is connected while its row says so and its replica's
-- heartbeat is fresh, so a replica killed without a word leaves its nodes
-- stale, not connected. Like node tokens, these tables belong to the fleet:
-- only system-scope transactions see them. Per-workspace errors are
-- filtered to the caller's org by the API.
CREATE TABLE control_plane_replicas (
    id          TEXT PRIMARY KEY,     -- random per process run
    name        TEXT NOT NULL,        -- --replica-name: host:port by default
    started_at  TIMESTAMPTZ NOT NULL,
    last_seen   TIMESTAMPTZ NOT NULL,
    stopped_at  TIMESTAMPTZ
);

CREATE TABLE data_plane_nodes (
    node_id           TEXT PRIMARY KEY,
    labels            TEXT NOT NULL,      -- JSON object
    binary_version    TEXT NOT NULL,
    protocol_version  BIGINT NOT NULL,
    schema_version    BIGINT NOT NULL,
    capabilities      TEXT NOT NULL,      -- JSON array
    token_name        TEXT NOT NULL,
    replica_id        TEXT NOT NULL,
    -- Identifies the stream the row describes: a replica that lost the
    -- node to another one cannot overwrite the newer stream's row.
    stream_id         TEXT NOT NULL,
    ops_url           TEXT NOT NULL,
    connected         INTEGER NOT NULL CHECK (connected IN (0, 1)),
    connected_at      TIMESTAMPTZ NOT NULL,
    last_seen         TIMESTAMPTZ NOT NULL,
    applied_revision  BIGINT NOT NULL,
    last_ack_at       TIMESTAMPTZ,
    last_nack_at      TIMESTAMPTZ,
    last_nack_revision BIGINT,
    -- A NACK that named no workspace (a refused update).
    last_error        TEXT,
    -- JSON array of {workspace_id, revision, message}: workspaces the node
    -- serves an older config of because it rejected their newest.
    failing           TEXT NOT NULL
);

CREATE INDEX data_plane_nodes_last_seen ON data_plane_nodes (last_seen);

ALTER TABLE data_plane_nodes ENABLE ROW LEVEL SECURITY;
ALTER TABLE data_plane_nodes FORCE ROW LEVEL SECURITY;
CREATE POLICY system_only ON data_plane_nodes
    USING ((SELECT mockplane_system())) WITH CHECK ((SELECT mockplane_system()));

ALTER TABLE control_plane_replicas ENABLE ROW LEVEL SECURITY;
ALTER TABLE control_plane_replicas FORCE ROW LEVEL SECURITY;
CREATE POLICY system_only ON control_plane_replicas
    USING ((SELECT mockplane_system())) WITH CHECK ((SELECT mockplane_system()));
