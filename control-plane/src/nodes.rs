//! The data-plane nodes connected to this control-plane replica, and how to
//! reach their ops listeners (for the request journal). In memory: each
//! replica knows the nodes streaming from it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A connected node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedNode {
    pub node_id: String,
    /// `http://host:port` of its ops listener; empty when it gave none.
    pub ops_url: String,
    /// The newest revision the node said it serves (Hello, then ACKs).
    pub applied: u64,
    stream: u64,
}

#[derive(Debug, Default)]
pub struct Nodes {
    connected: Mutex<HashMap<String, ConnectedNode>>,
    streams: AtomicU64,
}

impl Nodes {
    /// Records a node's new stream; returns the stream's number, which
    /// [`Nodes::disconnected`] needs (a node that reconnects replaces its
    /// entry before the old stream ends).
    pub fn connected(&self, node_id: &str, ops_url: &str, applied: u64) -> u64 {
        let stream = self.streams.fetch_add(1, Ordering::Relaxed) + 1;
        let mut connected = self.connected.lock().unwrap_or_else(|e| e.into_inner());
        connected.insert(
            node_id.to_owned(),
            ConnectedNode {
                node_id: node_id.to_owned(),
                ops_url: ops_url.to_owned(),
                applied,
                stream,
            },
        );
        stream
    }

    pub fn disconnected(&self, node_id: &str, stream: u64) {
        let mut connected = self.connected.lock().unwrap_or_else(|e| e.into_inner());
        if connected.get(node_id).is_some_and(|n| n.stream == stream) {
            connected.remove(node_id);
        }
    }

    /// A node ACKed `revision` on stream `stream`.
    pub fn applied(&self, node_id: &str, stream: u64, revision: u64) {
        let mut connected = self.connected.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(node) = connected.get_mut(node_id)
            && node.stream == stream
        {
            node.applied = node.applied.max(revision);
        }
    }

    /// How many connected nodes serve `revision` or later, of how many.
    pub fn serving(&self, revision: u64) -> (usize, usize) {
        let connected = self.connected.lock().unwrap_or_else(|e| e.into_inner());
        let serving = connected.values().filter(|n| n.applied >= revision).count();
        (serving, connected.len())
    }

    /// Every connected node, by id.
    pub fn list(&self) -> Vec<ConnectedNode> {
        let connected = self.connected.lock().unwrap_or_else(|e| e.into_inner());
        let mut nodes: Vec<ConnectedNode> = connected.values().cloned().collect();
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        nodes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnected_node_outlives_its_old_stream() {
        let nodes = Nodes::default();
        let old = nodes.connected("n1", "http://127.0.0.1:1", 0);
        let new = nodes.connected("n1", "http://127.0.0.1:2", 0);
        nodes.disconnected("n1", old);
        assert_eq!(nodes.list()[0].ops_url, "http://127.0.0.1:2");
        nodes.disconnected("n1", new);
        assert!(nodes.list().is_empty());
    }

    #[test]
    fn serving_counts_nodes_at_or_past_a_revision() {
        let nodes = Nodes::default();
        let a = nodes.connected("a", "", 3);
        let b = nodes.connected("b", "", 0);
        assert_eq!(nodes.serving(5), (0, 2));
        nodes.applied("a", a, 5);
        assert_eq!(nodes.serving(5), (1, 2));
        // An ACK of an older stream of the node does not count.
        nodes.applied("b", b + 100, 9);
        assert_eq!(nodes.serving(5), (1, 2));
        nodes.applied("b", b, 6);
        nodes.applied("a", a, 4);
        assert_eq!(nodes.serving(5), (2, 2));
    }
}
