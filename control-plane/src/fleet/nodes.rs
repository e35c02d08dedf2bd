//! The data-plane nodes: those streaming from this replica (in memory,
//! exact the moment they ACK) and the whole fleet (the node registry in the
//! database, which every replica writes in batches).
//!
//! Each stream's task tells [`Nodes`] what its node said (Hello, ACK, NACK,
//! the end of the stream); [`Nodes::run`] writes what changed about once a
//! second, with the replica's heartbeat, so a change made through one
//! replica can be asked "how many nodes serve it" on any other.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use mockplane_proto::v1;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config_stream::metrics::Metrics;
use crate::store::{
    FailingWorkspace, NodeReport, NodeState, REPLICA_HEARTBEAT, RegisteredNode, ReplicaReport,
    Store, StoreResult,
};

/// How often changed nodes are written to the registry.
pub const REGISTRY_FLUSH: Duration = Duration::from_secs(1);
/// How long a read of the registry is reused for counting.
const FLEET_READ_TTL: Duration = Duration::from_millis(500);
/// Nodes gone (disconnected or stale) this long are forgotten.
pub const GONE_NODE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often the registry is pruned (by one replica).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Most workspace errors kept per node.
const MAX_FAILING: usize = 256;
/// Longest error message kept.
const MAX_ERROR_CHARS: usize = 1024;

/// What a stream sent in one update, to account for its ACK or NACK.
#[derive(Debug, Clone)]
pub struct SentUpdate {
    pub revision: u64,
    pub nonce: String,
    pub full: bool,
    /// Workspaces the update upserted or removed.
    pub workspaces: Vec<Uuid>,
    /// When the snapshot it came from was published.
    pub published_at: Option<Instant>,
}

/// A node as counted for propagation: its registry entry, this replica's
/// own knowledge taking precedence.
#[derive(Debug, Clone)]
pub struct FleetNode {
    pub report: NodeReport,
    pub replica_name: String,
    pub state: NodeState,
}

/// How far one revision (of one workspace, or of everything) has spread.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Propagation {
    /// Connected nodes serving it.
    pub serving: usize,
    /// Connected nodes.
    pub total: usize,
    /// Connected nodes not at the revision yet.
    pub pending: Vec<String>,
    /// Connected nodes at the revision that rejected the workspace:
    /// (node, message).
    pub failing: Vec<(String, String)>,
}

struct Entry {
    stream: u64,
    report: NodeReport,
}

#[derive(Default)]
struct Local {
    connected: HashMap<String, Entry>,
    /// Nodes whose entry changed since the last write.
    dirty: HashSet<String>,
    /// Reports of streams that ended, not yet written.
    departed: Vec<NodeReport>,
}

pub struct Nodes {
    replica: ReplicaReport,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    local: Mutex<Local>,
    streams: AtomicU64,
    fleet: tokio::sync::Mutex<Option<(Instant, Arc<Vec<RegisteredNode>>)>>,
}

impl Nodes {
    pub fn new(replica_name: &str, store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Self {
            replica: ReplicaReport {
                id: Uuid::new_v4().to_string(),
                name: replica_name.to_owned(),
                started_at: Utc::now(),
                stopped: false,
            },
            store,
            metrics,
            local: Mutex::default(),
            streams: AtomicU64::new(0),
            fleet: tokio::sync::Mutex::new(None),
        }
    }

    pub fn replica_name(&self) -> &str {
        &self.replica.name
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a node's new stream; returns the stream's number, which the
    /// other calls need (a node that reconnects replaces its entry before
    /// the old stream ends).
    pub fn connected(&self, hello: &v1::Hello, token_name: &str) -> u64 {
        let stream = self.streams.fetch_add(1, Ordering::Relaxed) + 1;
        let at = Utc::now();
        let report = NodeReport {
            node_id: hello.node_id.clone(),
            labels: hello
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
            binary_version: hello.binary_version.clone(),
            protocol_version: hello.protocol_version,
            schema_version: hello.config_schema_version,
            capabilities: hello.capabilities.clone(),
            token_name: token_name.to_owned(),
            replica_id: self.replica.id.clone(),
            stream_id: format!("{}/{stream}", self.replica.id),
            ops_url: hello.ops_url.clone(),
            connected: true,
            connected_at: at,
            last_seen: at,
            applied_revision: hello.applied_revision,
            last_ack_at: None,
            last_nack_at: None,
            last_nack_revision: None,
            last_error: None,
            failing: Vec::new(),
        };
        let mut local = self.local();
        local.dirty.insert(hello.node_id.clone());
        local
            .connected
            .insert(hello.node_id.clone(), Entry { stream, report });
        self.metrics
            .connected_nodes
            .set(i64::try_from(local.connected.len()).unwrap_or(i64::MAX));
        stream
    }

    pub fn disconnected(&self, node_id: &str, stream: u64) {
        let mut local = self.local();
        if local
            .connected
            .get(node_id)
            .is_some_and(|e| e.stream == stream)
            && let Some(entry) = local.connected.remove(node_id)
        {
            let mut report = entry.report;
            report.connected = false;
            report.last_seen = Utc::now();
            local.dirty.remove(node_id);
            local.departed.push(report);
        }
        self.metrics
            .connected_nodes
            .set(i64::try_from(local.connected.len()).unwrap_or(i64::MAX));
    }

    /// Changes the entry of `node_id` if `stream` is still its stream.
    fn update(&self, node_id: &str, stream: u64, change: impl FnOnce(&mut NodeReport)) {
        let mut local = self.local();
        if let Some(entry) = local.connected.get_mut(node_id)
            && entry.stream == stream
        {
            change(&mut entry.report);
            entry.report.last_seen = Utc::now();
            local.dirty.insert(node_id.to_owned());
        }
    }

    /// The node applied `revision` whole. `sent`: what that update carried,
    /// when the stream still knows.
    pub fn acked(&self, node_id: &str, stream: u64, revision: u64, sent: Option<&SentUpdate>) {
        self.metrics.acks.inc();
        if let Some(published) = sent.and_then(|s| s.published_at) {
            self.metrics
                .publish_to_ack
                .observe(published.elapsed().as_secs_f64());
        }
        self.update(node_id, stream, |report| {
            report.applied_revision = report.applied_revision.max(revision);
            report.last_ack_at = Some(Utc::now());
            match sent {
                Some(sent) if sent.full => report.failing.clear(),
                Some(sent) => report
                    .failing
                    .retain(|f| !mentions(&sent.workspaces, &f.workspace_id)),
                None => {}
            }
        });
    }

    /// The node NACKed `revision`: it serves the revision but for the
    /// workspaces named, or (an error naming no workspace) refused it whole.
    pub fn nacked(
        &self,
        node_id: &str,
        stream: u64,
        revision: u64,
        errors: &[v1::WorkspaceError],
        sent: Option<&SentUpdate>,
    ) {
        self.metrics.nacks.inc();
        let named = errors.iter().filter(|e| !e.workspace_id.is_empty());
        self.metrics
            .rejected_workspaces
            .inc_by(u64::try_from(named.clone().count()).unwrap_or(u64::MAX));
        let whole = errors
            .iter()
            .find(|e| e.workspace_id.is_empty())
            .map(|e| clip(&e.message));
        self.update(node_id, stream, |report| {
            report.last_nack_at = Some(Utc::now());
            report.last_nack_revision = Some(revision);
            report.last_error.clone_from(&whole);
            if whole.is_some() {
                // Refused whole: it serves what it served.
                return;
            }
            report.applied_revision = report.applied_revision.max(revision);
            match sent {
                Some(sent) if sent.full => report.failing.clear(),
                Some(sent) => report
                    .failing
                    .retain(|f| !mentions(&sent.workspaces, &f.workspace_id)),
                None => {}
            }
            for error in named {
                report
                    .failing
                    .retain(|f| f.workspace_id != error.workspace_id);
                if report.failing.len() < MAX_FAILING {
                    report.failing.push(FailingWorkspace {
                        workspace_id: clip(&error.workspace_id),
                        revision,
                        message: clip(&error.message),
                    });
                }
            }
        });
    }

    /// The nodes streaming from this replica, by id.
    pub fn list(&self) -> Vec<NodeReport> {
        let local = self.local();
        let mut nodes: Vec<NodeReport> =
            local.connected.values().map(|e| e.report.clone()).collect();
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        nodes
    }

    /// Sets the lag gauges against the `current` revision.
    pub fn observe_lag(&self, current: u64) {
        let local = self.local();
        let behind = local
            .connected
            .values()
            .map(|e| current.saturating_sub(e.report.applied_revision));
        let (lagging, max) = behind.fold((0_i64, 0_u64), |(n, max), lag| {
            (n + i64::from(lag > 0), max.max(lag))
        });
        self.metrics.lagging_nodes.set(lagging);
        self.metrics
            .max_lag_revisions
            .set(i64::try_from(max).unwrap_or(i64::MAX));
    }

    /// Every node the registry knows, with this replica's own streams as
    /// they are now (fresher than what it last wrote).
    pub async fn fleet(&self) -> StoreResult<Vec<FleetNode>> {
        let registered = {
            let mut cached = self.fleet.lock().await;
            match &*cached {
                Some((at, rows)) if at.elapsed() < FLEET_READ_TTL => rows.clone(),
                _ => {
                    let rows = Arc::new(self.store.list_nodes().await?);
                    *cached = Some((Instant::now(), rows.clone()));
                    rows
                }
            }
        };
        let mut nodes: BTreeMap<String, FleetNode> = registered
            .iter()
            .map(|r| {
                (
                    r.report.node_id.clone(),
                    FleetNode {
                        report: r.report.clone(),
                        replica_name: r.replica_name.clone(),
                        state: r.state,
                    },
                )
            })
            .collect();
        for report in self.list() {
            let newer = nodes
                .get(&report.node_id)
                .is_none_or(|n| n.report.connected_at <= report.connected_at);
            if newer {
                nodes.insert(
                    report.node_id.clone(),
                    FleetNode {
                        report,
                        replica_name: self.replica.name.clone(),
                        state: NodeState::Connected,
                    },
                );
            }
        }
        Ok(nodes.into_values().collect())
    }

    /// [`Nodes::fleet`], or this replica's own nodes when the registry
    /// cannot be read (logged).
    pub async fn fleet_or_local(&self) -> Vec<FleetNode> {
        match self.fleet().await {
            Ok(nodes) => nodes,
            Err(error) => {
                tracing::warn!(%error, "could not read the node registry; counting this replica's nodes");
                self.list()
                    .into_iter()
                    .map(|report| FleetNode {
                        report,
                        replica_name: self.replica.name.clone(),
                        state: NodeState::Connected,
                    })
                    .collect()
            }
        }
    }

    /// How many connected nodes of the fleet serve `revision`, and of
    /// `workspace` when given (a node that rejected the workspace's config
    /// at or after `revision` does not serve it).
    pub async fn serving(
        &self,
        revision: u64,
        workspace: Option<Uuid>,
    ) -> StoreResult<Propagation> {
        Ok(count(&self.fleet().await?, revision, workspace))
    }

    /// Writes this replica's changed nodes and its heartbeat until
    /// `shutdown`, then marks its streams ended and itself stopped. Prunes
    /// nodes gone for [`GONE_NODE_RETENTION`] hourly (one replica at a time).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(REGISTRY_FLUSH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_write: Option<Instant> = None;
        let mut last_prune: Option<Instant> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let pending = {
                let local = self.local();
                !local.dirty.is_empty() || !local.departed.is_empty()
            };
            let due = pending || last_write.is_none_or(|at| at.elapsed() >= REPLICA_HEARTBEAT);
            if due && self.write(false).await {
                last_write = Some(Instant::now());
            }
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(Instant::now());
                self.prune().await;
            }
        }
        {
            let mut local = self.local();
            let at = Utc::now();
            let ended: Vec<NodeReport> = local
                .connected
                .drain()
                .map(|(_, e)| {
                    let mut report = e.report;
                    report.connected = false;
                    report.last_seen = at;
                    report
                })
                .collect();
            local.dirty.clear();
            local.departed.extend(ended);
        }
        // Shutting down does not wait long on a database that is away:
        // its nodes then show as stale once the heartbeat is old.
        if tokio::time::timeout(Duration::from_secs(5), self.write(true))
            .await
            .is_err()
        {
            tracing::warn!(
                "could not mark this replica's streams ended in the node registry in time"
            );
        }
    }

    /// Writes what changed; on failure keeps it for the next attempt.
    async fn write(&self, stopping: bool) -> bool {
        let (reports, departed) = {
            let mut local = self.local();
            let dirty = std::mem::take(&mut local.dirty);
            let mut reports: Vec<NodeReport> = dirty
                .iter()
                .filter_map(|id| local.connected.get(id).map(|e| e.report.clone()))
                .collect();
            let departed = std::mem::take(&mut local.departed);
            reports.extend(departed.iter().cloned());
            (reports, (dirty, departed))
        };
        let mut replica = self.replica.clone();
        replica.stopped = stopping;
        match self.store.report_nodes(&replica, &reports).await {
            Ok(()) => true,
            Err(error) => {
                self.metrics.registry_write_errors.inc();
                tracing::warn!(%error, nodes = reports.len(), "could not write the node registry; will retry");
                let (dirty, departed) = departed;
                let mut local = self.local();
                local.dirty.extend(dirty);
                // Reports of ended streams come first: a node that
                // reconnected here since is written after them.
                let newer = std::mem::take(&mut local.departed);
                local.departed = departed;
                local.departed.extend(newer);
                false
            }
        }
    }

    async fn prune(&self) {
        let Some(_lock) = crate::jobs::lead(&*self.store, "nodes.prune").await else {
            return;
        };
        let before = Utc::now()
            - chrono::Duration::from_std(GONE_NODE_RETENTION).unwrap_or(chrono::Duration::MAX);
        match self.store.prune_nodes(before).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "forgot nodes gone for a week"),
            Err(error) => tracing::warn!(%error, "could not prune the node registry"),
        }
    }
}

/// Whether `workspaces` holds the id `raw`.
fn mentions(workspaces: &[Uuid], raw: &str) -> bool {
    Uuid::try_parse(raw).is_ok_and(|id| workspaces.contains(&id))
}

fn clip(text: &str) -> String {
    text.chars().take(MAX_ERROR_CHARS).collect()
}

/// Counts `revision` (of `workspace`) over the connected nodes of `nodes`.
pub fn count(nodes: &[FleetNode], revision: u64, workspace: Option<Uuid>) -> Propagation {
    let mut propagation = Propagation::default();
    let workspace = workspace.map(|id| id.to_string());
    for node in nodes.iter().filter(|n| n.state == NodeState::Connected) {
        propagation.total += 1;
        let report = &node.report;
        if report.applied_revision < revision {
            propagation.pending.push(report.node_id.clone());
            continue;
        }
        let failed = workspace.as_ref().and_then(|id| {
            report
                .failing
                .iter()
                .find(|f| &f.workspace_id == id && f.revision >= revision)
        });
        match failed {
            Some(failure) => propagation
                .failing
                .push((report.node_id.clone(), failure.message.clone())),
            None => propagation.serving += 1,
        }
    }
    propagation
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(id: &str, applied: u64) -> v1::Hello {
        v1::Hello {
            node_id: id.to_owned(),
            applied_revision: applied,
            ..Default::default()
        }
    }

    async fn nodes() -> (Nodes, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db").display());
        let store = crate::store::open(&url).await.unwrap();
        let nodes = Nodes::new("test", store, Arc::new(Metrics::new().unwrap()));
        (nodes, dir)
    }

    fn sent(revision: u64, full: bool, workspaces: &[Uuid]) -> SentUpdate {
        SentUpdate {
            revision,
            nonce: format!("{revision}-1"),
            full,
            workspaces: workspaces.to_vec(),
            published_at: None,
        }
    }

    #[tokio::test]
    async fn a_reconnected_node_outlives_its_old_stream() {
        let (nodes, _dir) = nodes().await;
        let mut first = hello("n1", 0);
        first.ops_url = "http://127.0.0.1:1".into();
        let old = nodes.connected(&first, "t");
        let mut second = hello("n1", 0);
        second.ops_url = "http://127.0.0.1:2".into();
        let new = nodes.connected(&second, "t");
        nodes.disconnected("n1", old);
        assert_eq!(nodes.list()[0].ops_url, "http://127.0.0.1:2");
        nodes.disconnected("n1", new);
        assert!(nodes.list().is_empty());
    }

    #[tokio::test]
    async fn serving_counts_nodes_at_or_past_a_revision_and_not_failing() {
        let (nodes, _dir) = nodes().await;
        let (w1, w2) = (Uuid::new_v4(), Uuid::new_v4());
        let a = nodes.connected(&hello("a", 3), "t");
        let b = nodes.connected(&hello("b", 0), "t");
        assert_eq!(nodes.serving(5, None).await.unwrap().serving, 0);
        nodes.acked("a", a, 5, Some(&sent(5, false, &[w1])));
        let p = nodes.serving(5, None).await.unwrap();
        assert_eq!(
            (p.serving, p.total, p.pending),
            (1, 2, vec!["b".to_owned()])
        );
        // An ACK of an older stream of the node does not count.
        nodes.acked("b", b + 100, 9, None);
        assert_eq!(nodes.serving(5, None).await.unwrap().serving, 1);
        // b rejects w1 at 6: it serves revision 6, but not w1's change.
        nodes.nacked(
            "b",
            b,
            6,
            &[v1::WorkspaceError {
                workspace_id: w1.to_string(),
                message: "bad route".into(),
            }],
            Some(&sent(6, false, &[w1, w2])),
        );
        assert_eq!(nodes.serving(6, None).await.unwrap().serving, 1);
        let p = nodes.serving(6, Some(w1)).await.unwrap();
        assert_eq!(p.failing, vec![("b".to_owned(), "bad route".to_owned())]);
        assert_eq!(nodes.serving(6, Some(w2)).await.unwrap().pending, ["a"]);
        // A later update that carries w1 and is ACKed clears the failure.
        nodes.acked("b", b, 7, Some(&sent(7, false, &[w1])));
        assert!(nodes.serving(6, Some(w1)).await.unwrap().failing.is_empty());
        // A refusal of a whole update changes nothing it serves.
        nodes.nacked(
            "a",
            a,
            8,
            &[v1::WorkspaceError {
                workspace_id: String::new(),
                message: "refused: would empty".into(),
            }],
            Some(&sent(8, true, &[])),
        );
        let a_now = nodes.list().into_iter().find(|n| n.node_id == "a").unwrap();
        assert_eq!(a_now.applied_revision, 5);
        assert_eq!(a_now.last_error.as_deref(), Some("refused: would empty"));
    }

    #[tokio::test]
    async fn the_registry_holds_what_replicas_wrote() {
        let (nodes, _dir) = nodes().await;
        let s = nodes.connected(&hello("a", 0), "t");
        nodes.acked("a", s, 4, None);
        assert!(nodes.write(false).await);
        let rows = nodes.store.list_nodes().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].state, NodeState::Connected);
        assert_eq!(rows[0].report.applied_revision, 4);
        assert_eq!(rows[0].replica_name, "test");
        nodes.disconnected("a", s);
        assert!(nodes.write(false).await);
        let rows = nodes.store.list_nodes().await.unwrap();
        assert_eq!(rows[0].state, NodeState::Disconnected);
    }
}
