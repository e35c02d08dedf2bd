-- The node registry; see migrations/postgres/0018_data_plane_nodes.sql.
CREATE TABLE control_plane_replicas (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    started_at  TEXT NOT NULL,
    last_seen   TEXT NOT NULL,
    stopped_at  TEXT
) STRICT;

CREATE TABLE data_plane_nodes (
    node_id           TEXT PRIMARY KEY,
    labels            TEXT NOT NULL,
    binary_version    TEXT NOT NULL,
    protocol_version  INTEGER NOT NULL,
    schema_version    INTEGER NOT NULL,
    capabilities      TEXT NOT NULL,
    token_name        TEXT NOT NULL,
    replica_id        TEXT NOT NULL,
    stream_id         TEXT NOT NULL,
    ops_url           TEXT NOT NULL,
    connected         INTEGER NOT NULL CHECK (connected IN (0, 1)),
    connected_at      TEXT NOT NULL,
    last_seen         TEXT NOT NULL,
    applied_revision  INTEGER NOT NULL,
    last_ack_at       TEXT,
    last_nack_at      TEXT,
    last_nack_revision INTEGER,
    last_error        TEXT,
    failing           TEXT NOT NULL
) STRICT;

CREATE INDEX data_plane_nodes_last_seen ON data_plane_nodes (last_seen);
