//! A Mockplane data-plane node: a pingora server that answers mock requests
//! from an in-memory routing table, kept current by a config client that
//! streams from the control plane, plus an ops listener.
#![forbid(unsafe_code)]

pub mod client;
pub mod journal;
pub mod limits;
pub mod listener;
pub mod lkg;
pub mod machines;
pub mod metrics;
pub mod ops;
pub mod proxy;
pub mod state;
pub mod table;
pub mod usage;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use pingora_core::server::Server;
use pingora_core::server::configuration::ServerConf;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service as ListeningService;

use crate::client::{Backoff, ClientConfig, ConfigClient};
use crate::journal::Journal;
use crate::listener::{BoundSocket, Prebound};
use crate::lkg::LastKnownGood;
use crate::metrics::Metrics;
use crate::ops::OpsApp;
use crate::proxy::MockProxy;
use crate::state::NodeState;

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where mock traffic is served. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where /healthz, /readyz, /metrics and /status are served.
    pub ops_listen: SocketAddr,
    /// How the control plane reaches the ops listener (`http://host:port`);
    /// `None`: the address bound.
    pub ops_advertise: Option<String>,
    /// MiB of recent requests the journal keeps; 0 turns it off.
    pub journal_mib: usize,
    /// How often the node reports usage to the control plane; `None`:
    /// never. Reports are also sent when the node shuts down.
    pub usage_interval: Option<Duration>,
    /// `http://host:port` of each control-plane replica the node may use;
    /// it moves to the next when a stream fails or ends.
    pub control_planes: Vec<String>,
    pub node_id: String,
    pub labels: HashMap<String, String>,
    /// Worker threads for mock traffic.
    pub threads: usize,
    pub backoff: Backoff,
    /// On SIGTERM, how long to keep serving before closing listeners, and
    /// then how long to let requests in flight finish. SIGINT stops at once.
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    /// Where the node keeps its last-known-good config (see `lkg.rs`), to
    /// boot and serve from while the control plane is away; `None`: it
    /// keeps none.
    pub state_dir: Option<std::path::PathBuf>,
    /// The node token presented to the control plane (`mpn_…`).
    pub token: String,
}

impl NodeConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        if let Some(ops) = &self.ops_advertise
            && !ops.starts_with("http://")
        {
            anyhow::bail!("--ops-advertise must be an http://host:port address, got {ops:?}");
        }
        if self.control_planes.is_empty() {
            anyhow::bail!("--control-plane must name at least one http://host:port address");
        }
        for url in &self.control_planes {
            if !url.starts_with("http://") {
                anyhow::bail!(
                    "--control-plane must be http://host:port addresses (comma-separated), got {url:?}"
                );
            }
        }
        let id = &self.node_id;
        if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
            anyhow::bail!("--node-id must be 1 to 128 printable characters, got {id:?}");
        }
        if self.threads == 0 {
            anyhow::bail!("--threads must be at least 1");
        }
        let token = &self.token;
        if token.is_empty() {
            anyhow::bail!(
                "a node needs a node token: --token-file FILE or MOCKPLANE_NODE_TOKEN (`mockplane-control-plane create-node-token` makes one)"
            );
        }
        if !token.starts_with(mockplane_proto::NODE_TOKEN_PREFIX)
            || token.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            anyhow::bail!("the node token must be one mpn_… word (a node token, not an API token)");
        }
        Ok(())
    }
}

/// A built node, its sockets bound, ready to run.
pub struct Node {
    pub server: Server,
    pub http_address: SocketAddr,
    pub ops_address: SocketAddr,
    pub state: Arc<NodeState>,
}

/// Binds the node's sockets and assembles its services. Nothing is served
/// until `node.server.run_forever()`.
pub fn build(config: NodeConfig) -> anyhow::Result<Node> {
    config.validate()?;
    let state = NodeState::with_journal(
        config.node_id.clone(),
        Metrics::new().context("registering metrics")?,
        Journal::with_budget(config.journal_mib.saturating_mul(1024 * 1024)),
    );
    let lkg = match &config.state_dir {
        None => None,
        Some(dir) => Some(
            LastKnownGood::in_dir(dir)
                .with_context(|| format!("creating the state directory {}", dir.display()))?,
        ),
    };
    if let Some(lkg) = &lkg {
        // Its workspaces keep their resources, for the file.
        state
            .table
            .store(Arc::new(table::RoutingTable::keeping_resources()));
        boot_from(lkg, &state);
    }
    let http_socket = BoundSocket::bind(config.listen)
        .with_context(|| format!("binding the mock listener {}", config.listen))?;
    let ops_socket = BoundSocket::bind(config.ops_listen)
        .with_context(|| format!("binding the ops listener {}", config.ops_listen))?;
    let (http_address, ops_address) = (http_socket.address(), ops_socket.address());

    let conf = ServerConf {
        threads: config.threads,
        grace_period_seconds: Some(config.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.shutdown_timeout.as_secs()),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut mocks = pingora_proxy::http_proxy_service_with_name(
        &server.configuration,
        MockProxy::new(state.clone()),
        "mocks",
    );
    mocks.add_tcp(&http_socket.key());
    let mut ops = ListeningService::new("ops".to_owned(), OpsApp::new(state.clone()));
    ops.add_tcp(&ops_socket.key());
    ops.threads = Some(1);
    let client = ConfigClient::new(
        ClientConfig {
            control_planes: config.control_planes,
            labels: config.labels,
            backoff: config.backoff,
            ops_url: config
                .ops_advertise
                .clone()
                .unwrap_or_else(|| format!("http://{ops_address}")),
            usage_interval: config.usage_interval,
            lkg,
            token: config.token.clone(),
        },
        state.clone(),
    );

    server.add_service(Prebound::new(mocks, vec![http_socket]));
    server.add_service(Prebound::new(ops, vec![ops_socket]));
    server.add_service(background_service("config client", client));
    Ok(Node {
        server,
        http_address,
        ops_address,
        state,
    })
}

/// Serves the last-known-good config, if there is a good one, until the
/// control plane sends something newer: a node restarted while the control
/// plane is away is ready at once. A damaged file is reported and ignored.
fn boot_from(lkg: &LastKnownGood, state: &NodeState) {
    match lkg.load() {
        Ok(None) => {
            tracing::info!(file = %lkg.path().display(), "no last-known-good config yet");
        }
        Err(error) => {
            tracing::error!(%error, "ignoring the last-known-good config; waiting for the control plane");
        }
        Ok(Some(update)) => {
            let (table, errors) = state.table.load().apply(&update);
            for error in &errors {
                tracing::warn!(workspace = %error.workspace_id, error = %error.message, "last-known-good workspace not served");
            }
            if errors.is_empty() {
                tracing::info!(
                    revision = table.revision,
                    workspaces = table.len(),
                    "serving the last-known-good config until the control plane answers"
                );
                state.publish(table);
            } else {
                // The file's content was damaged after it was written: what
                // remains is served, but the node is not ready (a load
                // balancer would send it traffic for the refused workspaces)
                // until a control plane sends a snapshot.
                tracing::error!(
                    revision = table.revision,
                    workspaces = table.len(),
                    refused = errors.len(),
                    "the last-known-good config has refused workspaces; not ready until the control plane answers"
                );
                state.publish_refused(table);
            }
        }
    }
}
