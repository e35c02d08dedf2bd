//! How configuration reaches the nodes: the snapshot cache that turns
//! committed revisions into encoded snapshots and deltas (`snapshot`), the
//! `ConfigDiscovery` service that streams them to each node and takes its
//! ACKs, NACKs and usage reports (`discovery`), and the replica's metrics of
//! it all (`metrics`).

pub mod discovery;
pub mod metrics;
pub mod snapshot;
