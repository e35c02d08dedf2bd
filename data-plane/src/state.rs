//! What the node's services share: the routing table, readiness, and the
//! config connection's status.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use arc_swap::ArcSwap;

use crate::journal::Journal;
use crate::machines::Machines;
use crate::metrics::Metrics;
use crate::table::RoutingTable;

pub struct NodeState {
    pub node_id: String,
    /// Swapped whole by the config client; read lock-free by every request.
    pub table: ArcSwap<RoutingTable>,
    /// A [`Readiness`]: ready once a config snapshot has been applied whole.
    readiness: AtomicU8,
    /// The config stream is open.
    connected: AtomicBool,
    pub metrics: Metrics,
    /// The state of stateful routes.
    pub machines: Machines,
    /// The latest requests per workspace and environment.
    pub journal: Journal,
}

impl NodeState {
    pub fn new(node_id: String, metrics: Metrics) -> Arc<Self> {
        Self::with_journal(node_id, metrics, Journal::default())
    }

    pub fn with_journal(node_id: String, metrics: Metrics, journal: Journal) -> Arc<Self> {
        Arc::new(Self {
            node_id,
            table: ArcSwap::from_pointee(RoutingTable::default()),
            readiness: AtomicU8::new(Readiness::NoSnapshot as u8),
            connected: AtomicBool::new(false),
            metrics,
            machines: Machines::default(),
            journal,
        })
    }

    /// Publishes a new table; the node is ready from the first one on.
    pub fn publish(&self, table: RoutingTable) {
        self.metrics
            .config_revision
            .set(i64::try_from(table.revision).unwrap_or(i64::MAX));
        self.metrics
            .config_workspaces
            .set(i64::try_from(table.len()).unwrap_or(i64::MAX));
        self.machines.sync(table.state_epochs());
        self.journal.forget(|id| table.contains(id));
        self.table.store(Arc::new(table));
        self.readiness
            .store(Readiness::Ready as u8, Ordering::Release);
    }

    /// Serves what a damaged last-known-good file still held, without
    /// becoming ready: a load balancer keeps sending traffic elsewhere until
    /// a snapshot from a control plane replaces it. (A node already ready
    /// stays ready.)
    pub fn publish_refused(&self, table: RoutingTable) {
        let ready = self.is_ready();
        self.publish(table);
        if !ready {
            self.readiness
                .store(Readiness::RefusedLastKnownGood as u8, Ordering::Release);
        }
    }

    pub fn readiness(&self) -> Readiness {
        match self.readiness.load(Ordering::Acquire) {
            r if r == Readiness::Ready as u8 => Readiness::Ready,
            r if r == Readiness::RefusedLastKnownGood as u8 => Readiness::RefusedLastKnownGood,
            _ => Readiness::NoSnapshot,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.readiness() == Readiness::Ready
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
        self.metrics.config_connected.set(i64::from(connected));
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}

/// Whether the node takes traffic, and why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Readiness {
    /// No config yet: neither a snapshot nor a last-known-good file.
    NoSnapshot,
    /// The last-known-good file was read but some of its workspaces were
    /// refused; what remains is served, but the node is not ready until a
    /// control plane sends a snapshot.
    RefusedLastKnownGood,
    Ready,
}

impl Readiness {
    /// Why the node is not ready, for `/readyz` and `/status`.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            Readiness::NoSnapshot => Some("no config snapshot applied yet"),
            Readiness::RefusedLastKnownGood => Some(
                "the last-known-good file held workspaces that were refused; waiting for a snapshot from the control plane",
            ),
            Readiness::Ready => None,
        }
    }
}
