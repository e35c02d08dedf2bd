//! The snapshot cache: the serving config of every workspace, encoded once
//! per change and shared by every config stream.
//!
//! One task owns the cache. It wakes when a local write commits (and on a
//! poll, as a safety net against missed signals), reads everything committed
//! since its revision in one consistent snapshot, and publishes a new
//! immutable [`Snapshot`] through a `watch` channel: publishing never waits
//! on a subscriber, and a slow stream simply finds the latest snapshot when
//! it comes back (latest wins).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use mockplane_proto::{resource, v1};
use mockplane_shared::WorkspaceConfig;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config_stream::metrics::Metrics;
use crate::store::{ConfigChanges, Store, StoreResult};

/// How many revisions of change history the cache keeps for deltas; a node
/// further behind gets a full snapshot.
pub const HISTORY_REVISIONS: u64 = 10_000;

/// Upserts per config message are cut at about this many encoded bytes:
/// well below the node's decode limit, and small enough that each stream's
/// encode buffer (which keeps the capacity of its largest message) stays
/// small with a thousand nodes connected.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// One workspace's config as it goes on the wire, encoded once.
#[derive(Debug)]
pub struct EncodedWorkspace {
    pub id: Uuid,
    /// The revision in which this workspace last changed.
    pub revision: u64,
    pub resource: v1::WorkspaceResource,
}

impl EncodedWorkspace {
    pub fn encode(config: &WorkspaceConfig, revision: u64) -> Self {
        Self {
            id: config.id,
            revision,
            resource: resource::encode(config, revision),
        }
    }
}

/// The serving config at one revision. Immutable once published.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub revision: u64,
    workspaces: HashMap<Uuid, Arc<EncodedWorkspace>>,
    /// Workspaces changed per revision, for every revision after
    /// `history_from`. The lists are shared, so the next snapshot's copy of
    /// the history costs no allocation per revision.
    history: BTreeMap<u64, Arc<[Uuid]>>,
    history_from: u64,
    /// Encoded bytes of every workspace: what a full snapshot sends.
    bytes: usize,
    /// When this replica published it (for publish → ACK latency).
    pub published_at: Option<std::time::Instant>,
}

/// What a node at some revision needs to reach a snapshot's revision.
#[derive(Debug)]
pub struct Plan {
    pub full: bool,
    pub base_revision: u64,
    pub upserts: Vec<Arc<EncodedWorkspace>>,
    pub removed: Vec<Uuid>,
    /// With `full`: workspaces the node keeps as it serves them.
    pub kept: Vec<Uuid>,
}

impl Plan {
    /// Leaves out of a full plan the workspaces the node already serves
    /// exactly (`hashes`: its workspaces' content hashes, by id), listing
    /// them as kept instead.
    pub fn keeping(mut self, hashes: &HashMap<Uuid, String>) -> Self {
        if !self.full || hashes.is_empty() {
            return self;
        }
        let (kept, sent): (Vec<_>, Vec<_>) = self
            .upserts
            .into_iter()
            .partition(|w| hashes.get(&w.id) == Some(&w.resource.hash));
        self.upserts = sent;
        self.kept = kept.iter().map(|w| w.id).collect();
        self
    }
}

impl Snapshot {
    pub fn workspace_count(&self) -> usize {
        self.workspaces.len()
    }

    /// Encoded bytes of every workspace's config.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The update that takes a node from `applied` to this revision: a delta
    /// when the history reaches back that far, else everything. A node that
    /// serves nothing yet (revision 0) always gets everything.
    pub fn plan_from(&self, applied: u64) -> Plan {
        if applied == 0 || applied > self.revision || applied < self.history_from {
            return Plan {
                full: true,
                base_revision: 0,
                upserts: self.workspaces.values().cloned().collect(),
                removed: Vec::new(),
                kept: Vec::new(),
            };
        }
        let changed: HashSet<Uuid> = self
            .history
            .range(applied + 1..)
            .flat_map(|(_, ids)| ids.iter().copied())
            .collect();
        let mut plan = Plan {
            full: false,
            base_revision: applied,
            upserts: Vec::new(),
            removed: Vec::new(),
            kept: Vec::new(),
        };
        for id in changed {
            match self.workspaces.get(&id) {
                Some(workspace) => plan.upserts.push(workspace.clone()),
                None => plan.removed.push(id),
            }
        }
        plan
    }

    /// The wire messages of a plan: chunks of at most about [`CHUNK_BYTES`]
    /// of upserts, sharing one nonce. Always at least one message, so a
    /// node that is already up to date hears so.
    pub fn messages(&self, plan: Plan, nonce: &str) -> Vec<v1::ConfigUpdate> {
        let mut chunks: Vec<Vec<v1::WorkspaceResource>> = vec![Vec::new()];
        let mut bytes = 0;
        for workspace in plan.upserts {
            let size = workspace.resource.config.len();
            let current = chunks.last().map_or(0, Vec::len);
            if current > 0 && bytes + size > CHUNK_BYTES {
                chunks.push(Vec::new());
                bytes = 0;
            }
            bytes += size;
            if let Some(chunk) = chunks.last_mut() {
                // Cloning a resource copies two short strings; the config
                // bytes are shared.
                chunk.push(workspace.resource.clone());
            }
        }
        let count = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
        let mut removed: Vec<String> = plan.removed.iter().map(Uuid::to_string).collect();
        let mut kept: Vec<String> = plan.kept.iter().map(Uuid::to_string).collect();
        chunks
            .into_iter()
            .enumerate()
            .map(|(index, upserts)| v1::ConfigUpdate {
                revision: self.revision,
                nonce: nonce.to_owned(),
                full: plan.full,
                base_revision: plan.base_revision,
                upserts,
                removed: std::mem::take(&mut removed),
                chunk_index: u32::try_from(index).unwrap_or(u32::MAX),
                chunk_count: count,
                // Nothing to serve after changes (every workspace deleted)
                // is meant; an empty database that never had any is not.
                empty_is_intended: self.workspaces.is_empty() && self.revision > 0,
                kept: std::mem::take(&mut kept),
            })
            .collect()
    }

    /// The next snapshot: this one with `changes` applied, keeping at most
    /// `history_limit` revisions of history.
    fn apply(&self, changes: ConfigChanges, history_limit: u64) -> Snapshot {
        let mut workspaces = self.workspaces.clone();
        let mut bytes = self.bytes;
        if !changes.complete {
            // The change log no longer reaches back to this snapshot: what
            // `changes` lists is everything there is.
            let listed: HashSet<Uuid> = changes.changed.iter().map(|(id, _)| *id).collect();
            workspaces.retain(|id, _| listed.contains(id));
            bytes = workspaces.values().map(|w| w.resource.config.len()).sum();
        }
        let mut ids = Vec::with_capacity(changes.changed.len());
        for (id, config) in changes.changed {
            match config {
                None => {
                    if let Some(old) = workspaces.remove(&id) {
                        bytes = bytes.saturating_sub(old.resource.config.len());
                    }
                }
                Some(Ok(config)) => {
                    let encoded = EncodedWorkspace::encode(&config, changes.revision);
                    bytes += encoded.resource.config.len();
                    if let Some(old) = workspaces.insert(id, Arc::new(encoded)) {
                        bytes = bytes.saturating_sub(old.resource.config.len());
                    }
                }
                Some(Err(error)) => {
                    // Keep serving what this workspace had; a bad row must
                    // not take it (or anything else) down.
                    tracing::error!(workspace = %id, %error, "stored workspace config is invalid; keeping the previous one");
                    continue;
                }
            }
            ids.push(id);
        }
        let (mut history, mut history_from) = if changes.complete {
            (self.history.clone(), self.history_from)
        } else {
            // No delta reaches across this revision: nodes behind it get
            // everything.
            (BTreeMap::new(), changes.revision)
        };
        history.insert(changes.revision, ids.into());
        while history.len() as u64 > history_limit {
            if let Some((revision, _)) = history.pop_first() {
                history_from = revision;
            }
        }
        Snapshot {
            revision: changes.revision,
            workspaces,
            history,
            history_from,
            bytes,
            published_at: None,
        }
    }
}

/// The cache's handle: subscribe to snapshots, or say that something
/// changed.
pub struct ConfigCache {
    snapshots: watch::Sender<Arc<Snapshot>>,
    wake: Notify,
    metrics: Arc<Metrics>,
}

impl ConfigCache {
    /// Loads the whole config and the recent change history, so that nodes
    /// reconnecting after a restart still get deltas.
    pub async fn load(store: &dyn Store, metrics: Arc<Metrics>) -> StoreResult<Arc<Self>> {
        let full = store.load_config().await?;
        for (id, error) in &full.invalid {
            tracing::error!(workspace = %id, %error, "stored workspace config is invalid; not serving it");
        }
        let history_from = full.revision.saturating_sub(HISTORY_REVISIONS);
        let log = store.change_history(history_from).await?;
        let mut changed: BTreeMap<u64, Vec<Uuid>> = BTreeMap::new();
        for (revision, id) in log.entries.into_iter().filter(|(r, _)| *r <= full.revision) {
            changed.entry(revision).or_default().push(id);
        }
        let history = changed
            .into_iter()
            .map(|(revision, ids)| (revision, ids.into()))
            .collect();
        let workspaces: HashMap<Uuid, Arc<EncodedWorkspace>> = full
            .workspaces
            .iter()
            .map(|config| {
                // The revision a workspace last changed in is not kept
                // per workspace; the snapshot's revision is an upper bound.
                (
                    config.id,
                    Arc::new(EncodedWorkspace::encode(config, full.revision)),
                )
            })
            .collect();
        let bytes = workspaces.values().map(|w| w.resource.config.len()).sum();
        let snapshot = Snapshot {
            revision: full.revision,
            workspaces,
            history,
            history_from: log.complete_after,
            bytes,
            published_at: Some(std::time::Instant::now()),
        };
        observe(&metrics, &snapshot);
        let (snapshots, _) = watch::channel(Arc::new(snapshot));
        Ok(Arc::new(Self {
            snapshots,
            wake: Notify::new(),
            metrics,
        }))
    }

    /// The replica's metrics of config distribution.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.subscribe()
    }

    /// Tells the refresh task that a write committed.
    pub fn changed(&self) {
        self.wake.notify_one();
    }

    /// Reads what changed since the current snapshot and publishes the
    /// result. Returns the revision now published.
    pub async fn refresh(&self, store: &dyn Store) -> StoreResult<u64> {
        let current = self.current();
        let changes = store.config_changes_since(current.revision).await?;
        if changes.revision <= current.revision {
            return Ok(current.revision);
        }
        let committed_at = changes.committed_at;
        let mut next = current.apply(changes, HISTORY_REVISIONS);
        next.published_at = Some(std::time::Instant::now());
        let revision = next.revision;
        observe(&self.metrics, &next);
        if let Some(committed_at) = committed_at {
            let took = chrono::Utc::now() - committed_at;
            // Clocks of replicas may differ a little; never negative.
            self.metrics
                .commit_to_publish
                .observe(took.to_std().unwrap_or_default().as_secs_f64());
        }
        self.snapshots.send_replace(Arc::new(next));
        tracing::debug!(revision, "published config snapshot");
        Ok(revision)
    }

    /// Keeps the cache current until `shutdown`: on every local write
    /// signal, and every `poll` in case a signal was missed or a change came
    /// from elsewhere.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        poll: Duration,
        shutdown: CancellationToken,
    ) {
        // Changes committed by other replicas (PostgreSQL NOTIFY); the poll
        // stays as the safety net for a lost signal.
        let cache = self.clone();
        let watcher = store.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            watcher
                .watch_config_changes(Arc::new(move || cache.changed()), stop)
                .await;
        });
        let mut ticker = tokio::time::interval(poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                _ = ticker.tick() => {}
            }
            if let Err(error) = self.refresh(&*store).await {
                tracing::warn!(%error, "could not refresh the config snapshot; will retry");
            }
        }
    }
}

/// Sets the gauges that describe the published snapshot.
fn observe(metrics: &Metrics, snapshot: &Snapshot) {
    let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    metrics
        .revision
        .set(i64::try_from(snapshot.revision).unwrap_or(i64::MAX));
    metrics.workspaces.set(gauge(snapshot.workspaces.len()));
    metrics.snapshot_bytes.set(gauge(snapshot.bytes));
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use mockplane_shared::{Slug, WorkspaceConfig};

    use super::*;

    fn config(id: Uuid, slug: &str) -> WorkspaceConfig {
        WorkspaceConfig::single(id, Slug::parse(slug).unwrap(), Vec::new())
    }

    fn snapshot_with(ids: &[Uuid], revision: u64) -> Snapshot {
        let mut snapshot = Snapshot {
            revision,
            history_from: revision,
            ..Default::default()
        };
        for (i, id) in ids.iter().enumerate() {
            let encoded = EncodedWorkspace::encode(&config(*id, &format!("w{i}")), revision);
            snapshot.workspaces.insert(*id, Arc::new(encoded));
        }
        snapshot
    }

    #[test]
    fn deltas_carry_only_what_changed() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let s5 = snapshot_with(&[a, b], 5);
        let s6 = s5.apply(
            ConfigChanges {
                revision: 6,
                changed: vec![
                    (a, Some(Ok(config(a, "renamed")))),
                    (c, Some(Ok(config(c, "new")))),
                ],
                committed_at: None,
                complete: true,
            },
            100,
        );
        let s7 = s6.apply(
            ConfigChanges {
                revision: 7,
                changed: vec![(b, None)],
                committed_at: None,
                complete: true,
            },
            100,
        );

        let plan = s7.plan_from(6);
        assert!(!plan.full);
        assert!(plan.upserts.is_empty());
        assert_eq!(plan.removed, [b]);

        let plan = s7.plan_from(5);
        let mut upserted: Vec<Uuid> = plan.upserts.iter().map(|w| w.id).collect();
        upserted.sort();
        let mut expected = vec![a, c];
        expected.sort();
        assert_eq!((upserted, plan.removed), (expected, vec![b]));

        // Too far behind, new, or ahead of us: everything.
        for applied in [0, 4, 8] {
            let plan = s7.plan_from(applied);
            assert!(plan.full, "from {applied}");
            assert_eq!(plan.upserts.len(), 2);
        }
        assert!(s7.plan_from(7).upserts.is_empty());
    }

    #[test]
    fn a_full_plan_leaves_out_what_the_node_serves_already() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let snapshot = snapshot_with(&[a, b, c], 7);
        let hash = |id: Uuid| snapshot.workspaces[&id].resource.hash.clone();
        let node: HashMap<Uuid, String> = [(a, hash(a)), (b, "0".repeat(64))].into();
        let plan = snapshot.plan_from(0).keeping(&node);
        assert!(plan.full);
        assert_eq!(plan.kept, [a]);
        let mut sent: Vec<Uuid> = plan.upserts.iter().map(|w| w.id).collect();
        sent.sort();
        let mut expected = vec![b, c];
        expected.sort();
        assert_eq!(
            sent, expected,
            "a changed hash and an unknown workspace are sent"
        );
        let messages = snapshot.messages(plan, "n");
        assert_eq!(messages[0].kept, [a.to_string()]);
        // A delta is a delta: hashes change nothing.
        let delta = snapshot.plan_from(7).keeping(&node);
        assert!(!delta.full && delta.kept.is_empty());
    }

    #[test]
    fn invalid_workspace_keeps_its_previous_config() {
        let a = Uuid::new_v4();
        let s1 = snapshot_with(&[a], 1);
        let s2 = s1.apply(
            ConfigChanges {
                revision: 2,
                changed: vec![(
                    a,
                    Some(Err(mockplane_shared::FieldError::new("slug", "bad"))),
                )],
                committed_at: None,
                complete: true,
            },
            100,
        );
        assert_eq!(s2.workspace_count(), 1);
        assert!(s2.plan_from(1).upserts.is_empty());
        assert!(s2.plan_from(1).removed.is_empty());
    }

    #[test]
    fn big_updates_are_chunked_and_share_a_nonce() {
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        let mut snapshot = snapshot_with(&[], 9);
        for id in &ids {
            let mut encoded = EncodedWorkspace::encode(&config(*id, "x"), 9);
            encoded.resource.config = Bytes::from(vec![0u8; CHUNK_BYTES / 2 + 1]);
            snapshot.workspaces.insert(*id, Arc::new(encoded));
        }
        let messages = snapshot.messages(snapshot.plan_from(0), "n1");
        assert_eq!(messages.len(), 3);
        for (index, message) in messages.iter().enumerate() {
            assert_eq!(message.nonce, "n1");
            assert_eq!(message.chunk_index as usize, index);
            assert_eq!(message.chunk_count, 3);
            assert!(message.full);
        }
        let up_to_date = snapshot.messages(snapshot.plan_from(9), "n2");
        assert_eq!(up_to_date.len(), 1);
        assert!(up_to_date[0].upserts.is_empty() && !up_to_date[0].full);
    }

    #[test]
    fn history_is_bounded() {
        let a = Uuid::new_v4();
        let mut snapshot = snapshot_with(&[a], 0);
        for revision in 1..=15 {
            snapshot = snapshot.apply(
                ConfigChanges {
                    revision,
                    changed: vec![(a, Some(Ok(config(a, "a"))))],
                    committed_at: None,
                    complete: true,
                },
                10,
            );
        }
        assert_eq!(snapshot.history.len(), 10);
        // Revisions 6..=15 are kept: a node at 5 still gets a delta, at 4 not.
        assert!(!snapshot.plan_from(5).full);
        assert!(snapshot.plan_from(4).full);
    }

    #[test]
    fn changes_past_a_pruned_log_replace_everything() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let s5 = snapshot_with(&[a, b], 5);
        // The cache fell behind what retention left of the change log: the
        // store lists every workspace there is (b was deleted meanwhile).
        let s9 = s5.apply(
            ConfigChanges {
                revision: 9,
                changed: vec![(a, Some(Ok(config(a, "a")))), (c, Some(Ok(config(c, "c"))))],
                committed_at: None,
                complete: false,
            },
            100,
        );
        let mut serving: Vec<Uuid> = s9.workspaces.keys().copied().collect();
        serving.sort();
        let mut expected = vec![a, c];
        expected.sort();
        assert_eq!(serving, expected);
        assert_eq!(
            s9.bytes,
            s9.workspaces
                .values()
                .map(|w| w.resource.config.len())
                .sum::<usize>()
        );
        // No delta reaches across it: a node at 5 gets everything.
        assert!(s9.plan_from(5).full);
        assert!(s9.plan_from(9).upserts.is_empty());
    }
}
