//! `mockplane nodes`: the data-plane fleet as the control plane's node
//! registry knows it, and how far a workspace's change has spread.

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, Subcommand};
use mockplane_proto::v1;
use serde::Serialize;

use crate::client::{Api, status_error};
use crate::output::{self, Format};

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodesArgs {
    #[command(subcommand)]
    command: Option<NodesCommand>,
    #[command(flatten)]
    list: ListArgs,
}

#[derive(Subcommand)]
enum NodesCommand {
    /// List the nodes (what `mockplane nodes` alone does).
    List(ListArgs),
    /// How many connected nodes serve a workspace's newest change (or a
    /// given revision) yet; which are behind, which rejected it.
    Propagation(PropagationArgs),
}

#[derive(Args)]
struct ListArgs {
    /// Also nodes that disconnected (kept a week).
    #[arg(long)]
    all: bool,
}

#[derive(Args)]
struct PropagationArgs {
    workspace: String,
    /// The config revision to count; default: the workspace's newest
    /// change.
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    revision: u64,
    /// Wait up to this many seconds for every connected node to serve it;
    /// fails if some do not by then, or reject it.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    wait: Option<u64>,
}

const NODE_COLUMNS: [&str; 8] = [
    "node",
    "state",
    "replica",
    "revision",
    "lag",
    "last_seen",
    "version",
    "errors",
];

/// A node as `mockplane nodes` shows it.
#[derive(Serialize)]
struct NodeView {
    node: String,
    state: String,
    replica: String,
    revision: u64,
    lag: u64,
    last_seen: String,
    version: String,
    labels: std::collections::BTreeMap<String, String>,
    capabilities: Vec<String>,
    token: String,
    connected_at: String,
    last_ack: String,
    last_nack: String,
    last_nack_revision: u64,
    /// A short summary for the table: the refused update's error, then
    /// each rejected workspace.
    errors: String,
    failing: Vec<FailingView>,
}

#[derive(Serialize)]
struct FailingView {
    workspace: String,
    revision: u64,
    message: String,
}

impl NodeView {
    fn new(node: v1::Node) -> Self {
        let failing: Vec<FailingView> = node
            .failing
            .into_iter()
            .map(|f| FailingView {
                workspace: f.workspace,
                revision: f.revision,
                message: f.message,
            })
            .collect();
        let mut errors: Vec<String> = Vec::new();
        if !node.last_error.is_empty() {
            errors.push(node.last_error.clone());
        }
        errors.extend(
            failing
                .iter()
                .map(|f| format!("{}@{}: {}", f.workspace, f.revision, f.message)),
        );
        Self {
            node: node.node_id,
            state: node.state,
            replica: node.replica,
            revision: node.applied_revision,
            lag: node.lag_revisions,
            last_seen: output::time(node.last_seen.as_ref()),
            version: node.binary_version,
            labels: node.labels.into_iter().collect(),
            capabilities: node.capabilities,
            token: node.token_name,
            connected_at: output::time(node.connected_at.as_ref()),
            last_ack: output::time(node.last_ack_time.as_ref()),
            last_nack: output::time(node.last_nack_time.as_ref()),
            last_nack_revision: node.last_nack_revision,
            errors: errors.join("; "),
            failing,
        }
    }
}

#[derive(Serialize)]
struct PropagationView {
    workspace: String,
    revision: u64,
    serving: u32,
    total: u32,
    pending: Vec<String>,
    failing: Vec<FailingNodeView>,
}

#[derive(Serialize)]
struct FailingNodeView {
    node: String,
    message: String,
}

pub async fn nodes(
    server: &str,
    token: Option<&str>,
    args: NodesArgs,
    format: Format,
) -> anyhow::Result<()> {
    let api = Api::connect(server, token).await?;
    match args.command {
        None => list(api, args.list, format).await,
        Some(NodesCommand::List(list_args)) => list(api, list_args, format).await,
        Some(NodesCommand::Propagation(propagation_args)) => {
            propagation(api, propagation_args, format).await
        }
    }
}

async fn list(mut api: Api, args: ListArgs, format: Format) -> anyhow::Result<()> {
    let found = api
        .nodes
        .list_nodes(v1::ListNodesRequest {
            include_disconnected: args.all,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let views: Vec<NodeView> = found.nodes.into_iter().map(NodeView::new).collect();
    match format {
        Format::Json => output::json(&views),
        Format::Table => {
            output::list(format, &views, &NODE_COLUMNS);
            outln!("current revision: {}", found.current_revision);
        }
    }
    Ok(())
}

async fn propagation(mut api: Api, args: PropagationArgs, format: Format) -> anyhow::Result<()> {
    let deadline = args.wait.map(|s| Instant::now() + Duration::from_secs(s));
    let mut pause = Duration::from_millis(100);
    let found = loop {
        let found = api
            .nodes
            .get_propagation(v1::GetPropagationRequest {
                workspace: args.workspace.clone(),
                revision: args.revision,
            })
            .await
            .map_err(status_error)?
            .into_inner();
        let settled = found.nodes_serving == found.nodes_total || !found.failing_nodes.is_empty();
        match deadline {
            Some(deadline) if !settled && Instant::now() < deadline => {
                tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            _ => break found,
        }
    };
    let view = PropagationView {
        workspace: args.workspace.clone(),
        revision: found.revision,
        serving: found.nodes_serving,
        total: found.nodes_total,
        pending: found.pending_nodes,
        failing: found
            .failing_nodes
            .into_iter()
            .map(|f| FailingNodeView {
                node: f.node_id,
                message: f.message,
            })
            .collect(),
    };
    match format {
        Format::Json => output::json(&view),
        Format::Table => {
            outln!(
                "revision {} of {}: served by {} of {} connected nodes",
                view.revision,
                view.workspace,
                view.serving,
                view.total
            );
            if !view.pending.is_empty() {
                outln!("behind: {}", view.pending.join(", "));
            }
            for failure in &view.failing {
                outln!("rejected by {}: {}", failure.node, failure.message);
            }
        }
    }
    if args.wait.is_some() {
        if !view.failing.is_empty() {
            bail!(
                "{} node(s) rejected revision {} of {}",
                view.failing.len(),
                view.revision,
                view.workspace
            );
        }
        if view.serving < view.total {
            bail!(
                "{} of {} connected nodes do not serve revision {} of {} yet",
                view.total - view.serving,
                view.total,
                view.revision,
                view.workspace
            );
        }
    }
    Ok(())
}
