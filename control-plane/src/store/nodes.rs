//! The node registry: the control-plane replicas (a row per process run,
//! with a heartbeat) and the data-plane nodes that stream from them, as
//! their replica last reported them. Fleet-wide, so every transaction here
//! runs in `Scope::System`; the API filters per-workspace errors to the
//! caller's org.
//!
//! A replica writes its nodes in batches ([`NodeRegistryStore::report_nodes`]):
//! a row is only overwritten by a report of the same stream or of a newer
//! one, so a replica that lost a node to another cannot undo the newer
//! row. A node counts as connected while its row says so and its replica's
//! heartbeat is fresh: a replica killed without a word leaves its nodes
//! stale, not connected.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::tx::{Scope, now, to_i64, to_u64};
use super::{Dialect, SqlStore, StoreResult};

/// How often a replica writes its heartbeat.
pub const REPLICA_HEARTBEAT: Duration = Duration::from_secs(5);
/// A replica whose heartbeat is older than this is gone, and so are the
/// streams it reported.
pub const REPLICA_STALE_AFTER: Duration = Duration::from_secs(15);

/// A workspace a node serves an older config of, because it rejected the
/// newest one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailingWorkspace {
    pub workspace_id: String,
    /// The revision the node rejected.
    pub revision: u64,
    pub message: String,
}

/// What a replica knows of one node's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    pub node_id: String,
    pub labels: BTreeMap<String, String>,
    pub binary_version: String,
    pub protocol_version: u32,
    pub schema_version: u32,
    pub capabilities: Vec<String>,
    /// The name of the node token the stream presented.
    pub token_name: String,
    pub replica_id: String,
    pub stream_id: String,
    pub ops_url: String,
    /// False once the stream ended.
    pub connected: bool,
    pub connected_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The newest revision the node said it serves (Hello, then ACKs and
    /// NACKs: a NACKed revision is served but for the failing workspaces).
    pub applied_revision: u64,
    pub last_ack_at: Option<DateTime<Utc>>,
    pub last_nack_at: Option<DateTime<Utc>>,
    pub last_nack_revision: Option<u64>,
    /// The last NACK that named no workspace (an update refused whole).
    pub last_error: Option<String>,
    pub failing: Vec<FailingWorkspace>,
}

/// A replica's own row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaReport {
    pub id: String,
    pub name: String,
    pub started_at: DateTime<Utc>,
    /// Set by the last report of a replica that shuts down.
    pub stopped: bool,
}

/// How a registered node stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Its stream is open and its replica reports.
    Connected,
    /// Its replica stopped reporting without closing the stream (killed):
    /// the node is most likely reconnecting elsewhere.
    Stale,
    Disconnected,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Connected => "connected",
            NodeState::Stale => "stale",
            NodeState::Disconnected => "disconnected",
        }
    }
}

/// A node as the registry holds it, with its replica's name and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredNode {
    pub report: NodeReport,
    pub replica_name: String,
    pub state: NodeState,
}

#[async_trait]
pub trait NodeRegistryStore: Send + Sync {
    /// Writes a replica's heartbeat and the nodes that changed since its
    /// last report, in one transaction. A node's row is replaced only by a
    /// report of the same stream or of one that connected no earlier.
    async fn report_nodes(&self, replica: &ReplicaReport, nodes: &[NodeReport]) -> StoreResult<()>;
    /// Every registered node, by id.
    async fn list_nodes(&self) -> StoreResult<Vec<RegisteredNode>>;
    /// Forgets nodes not connected (or stale) and not seen since `before`,
    /// and replicas gone since then with no node left. Returns the nodes
    /// forgotten.
    async fn prune_nodes(&self, before: DateTime<Utc>) -> StoreResult<u64>;
    /// The revision of a workspace's newest change; 0 when it has none.
    async fn last_change_revision(&self, workspace: Uuid) -> StoreResult<u64>;
    /// The slugs of an org's workspaces, by id.
    async fn workspace_slugs(&self, org: Uuid) -> StoreResult<HashMap<Uuid, String>>;
}

#[derive(FromRow)]
struct NodeRow {
    node_id: String,
    labels: String,
    binary_version: String,
    protocol_version: i64,
    schema_version: i64,
    capabilities: String,
    token_name: String,
    replica_id: String,
    stream_id: String,
    ops_url: String,
    connected: i32,
    connected_at: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    applied_revision: i64,
    last_ack_at: Option<DateTime<Utc>>,
    last_nack_at: Option<DateTime<Utc>>,
    last_nack_revision: Option<i64>,
    last_error: Option<String>,
    failing: String,
    replica_name: Option<String>,
    replica_seen: Option<DateTime<Utc>>,
    replica_stopped: Option<DateTime<Utc>>,
}

impl NodeRow {
    fn into_registered(self, at: DateTime<Utc>) -> RegisteredNode {
        let stale_after = chrono::Duration::from_std(REPLICA_STALE_AFTER).unwrap_or_default();
        let replica_live = self.replica_stopped.is_none()
            && self
                .replica_seen
                .is_some_and(|seen| at - seen < stale_after);
        let state = match (self.connected != 0, replica_live) {
            (true, true) => NodeState::Connected,
            (true, false) => NodeState::Stale,
            (false, _) => NodeState::Disconnected,
        };
        // A connected node is seen as long as its replica reports.
        let last_seen = match (state, self.replica_seen) {
            (NodeState::Connected, Some(seen)) => seen.max(self.last_seen),
            _ => self.last_seen,
        };
        RegisteredNode {
            report: NodeReport {
                labels: serde_json::from_str(&self.labels).unwrap_or_default(),
                capabilities: serde_json::from_str(&self.capabilities).unwrap_or_default(),
                failing: serde_json::from_str(&self.failing).unwrap_or_default(),
                node_id: self.node_id,
                binary_version: self.binary_version,
                protocol_version: u32::try_from(self.protocol_version).unwrap_or(0),
                schema_version: u32::try_from(self.schema_version).unwrap_or(0),
                token_name: self.token_name,
                replica_id: self.replica_id,
                stream_id: self.stream_id,
                ops_url: self.ops_url,
                connected: self.connected != 0,
                connected_at: self.connected_at,
                last_seen,
                applied_revision: to_u64(self.applied_revision),
                last_ack_at: self.last_ack_at,
                last_nack_at: self.last_nack_at,
                last_nack_revision: self.last_nack_revision.map(to_u64),
                last_error: self.last_error,
            },
            replica_name: self.replica_name.unwrap_or_default(),
            state,
        }
    }
}

const UPSERT_REPLICA: &str = "INSERT INTO control_plane_replicas (id, name, started_at, last_seen, stopped_at) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen, stopped_at = excluded.stopped_at";

const UPSERT_NODE: &str = "INSERT INTO data_plane_nodes (node_id, labels, binary_version, protocol_version, \
     schema_version, capabilities, token_name, replica_id, stream_id, ops_url, connected, connected_at, \
     last_seen, applied_revision, last_ack_at, last_nack_at, last_nack_revision, last_error, failing) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
     ON CONFLICT (node_id) DO UPDATE SET labels = excluded.labels, binary_version = excluded.binary_version, \
     protocol_version = excluded.protocol_version, schema_version = excluded.schema_version, \
     capabilities = excluded.capabilities, token_name = excluded.token_name, \
     replica_id = excluded.replica_id, stream_id = excluded.stream_id, ops_url = excluded.ops_url, \
     connected = excluded.connected, connected_at = excluded.connected_at, last_seen = excluded.last_seen, \
     applied_revision = excluded.applied_revision, last_ack_at = excluded.last_ack_at, \
     last_nack_at = excluded.last_nack_at, last_nack_revision = excluded.last_nack_revision, \
     last_error = excluded.last_error, failing = excluded.failing \
     WHERE data_plane_nodes.stream_id = excluded.stream_id \
     OR data_plane_nodes.connected_at <= excluded.connected_at";

const SELECT_NODES: &str = "SELECT n.node_id, n.labels, n.binary_version, n.protocol_version, n.schema_version, \
     n.capabilities, n.token_name, n.replica_id, n.stream_id, n.ops_url, n.connected, n.connected_at, \
     n.last_seen, n.applied_revision, n.last_ack_at, n.last_nack_at, n.last_nack_revision, n.last_error, \
     n.failing, r.name AS replica_name, r.last_seen AS replica_seen, r.stopped_at AS replica_stopped \
     FROM data_plane_nodes n LEFT JOIN control_plane_replicas r ON r.id = n.replica_id \
     ORDER BY n.node_id";

#[async_trait]
impl<DB> NodeRegistryStore for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<Uuid>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<i32>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB> + Decode<'q, DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    async fn report_nodes(&self, replica: &ReplicaReport, nodes: &[NodeReport]) -> StoreResult<()> {
        let at = now();
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        sqlx::query(UPSERT_REPLICA)
            .bind(replica.id.clone())
            .bind(replica.name.clone())
            .bind(replica.started_at)
            .bind(at)
            .bind(replica.stopped.then_some(at))
            .execute(&mut *tx)
            .await?;
        for node in nodes {
            let json = |value: serde_json::Result<String>| value.unwrap_or_default();
            sqlx::query(UPSERT_NODE)
                .bind(node.node_id.clone())
                .bind(json(serde_json::to_string(&node.labels)))
                .bind(node.binary_version.clone())
                .bind(i64::from(node.protocol_version))
                .bind(i64::from(node.schema_version))
                .bind(json(serde_json::to_string(&node.capabilities)))
                .bind(node.token_name.clone())
                .bind(node.replica_id.clone())
                .bind(node.stream_id.clone())
                .bind(node.ops_url.clone())
                .bind(i32::from(node.connected))
                .bind(node.connected_at)
                .bind(node.last_seen)
                .bind(to_i64(node.applied_revision))
                .bind(node.last_ack_at)
                .bind(node.last_nack_at)
                .bind(node.last_nack_revision.map(to_i64))
                .bind(node.last_error.clone())
                .bind(json(serde_json::to_string(&node.failing)))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_nodes(&self) -> StoreResult<Vec<RegisteredNode>> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::System).await?;
        let rows: Vec<NodeRow> = sqlx::query_as(SELECT_NODES).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let at = now();
        Ok(rows.into_iter().map(|r| r.into_registered(at)).collect())
    }

    async fn prune_nodes(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        // A node is gone when its stream closed, or when its replica
        // stopped reporting, and it was last seen before the cut-off.
        let pruned = sqlx::query(
            "DELETE FROM data_plane_nodes WHERE last_seen < $1 AND (connected = $2 OR replica_id NOT IN \
             (SELECT id FROM control_plane_replicas WHERE stopped_at IS NULL AND last_seen >= $3))",
        )
        .bind(before)
        .bind(0_i32)
        .bind(before)
        .execute(&mut *tx)
        .await?;
        let pruned = DB::rows_affected(&pruned);
        sqlx::query(
            "DELETE FROM control_plane_replicas WHERE last_seen < $1 \
             AND id NOT IN (SELECT replica_id FROM data_plane_nodes)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(pruned)
    }

    async fn last_change_revision(&self, workspace: Uuid) -> StoreResult<u64> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::System).await?;
        let revision: Option<i64> =
            sqlx::query_scalar("SELECT MAX(revision) FROM change_log WHERE workspace_id = $1")
                .bind(workspace)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(revision.map_or(0, to_u64))
    }

    async fn workspace_slugs(&self, org: Uuid) -> StoreResult<HashMap<Uuid, String>> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let rows: Vec<(Uuid, String)> =
            sqlx::query_as("SELECT id, slug FROM workspaces WHERE org_id = $1")
                .bind(org)
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(rows.into_iter().collect())
    }
}
