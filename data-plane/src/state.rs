//! What the node's services share: the routing table, readiness, and the
//! config connection's status.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use crate::journal::Journal;
use crate::machines::Machines;
use crate::metrics::Metrics;
use crate::table::RoutingTable;

pub struct NodeState {
    pub node_id: String,
    /// Swapped whole by the config client; read lock-free by every request.
    pub table: ArcSwap<RoutingTable>,
    /// A config snapshot has been applied: only then is the node ready.
    ready: AtomicBool,
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
            ready: AtomicBool::new(false),
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
        self.ready.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
        self.metrics.config_connected.set(i64::from(connected));
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}
