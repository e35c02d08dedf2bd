//! `mockplane.v1.NodeService`: the node registry, and how far a
//! workspace's change has spread over the fleet.

use mockplane_proto::v1;
use mockplane_proto::v1::node_service_server::NodeService;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::authz::Target;
use super::error::ApiError;
use super::{ApiState, timestamp};
use crate::fleet::nodes::FleetNode;
use crate::store::{NodeState, WorkspaceRef};

pub struct Nodes(pub ApiState);

/// A node as the API shows it to an org: per-workspace errors only for
/// the org's workspaces (`slugs`).
fn to_proto(
    node: FleetNode,
    current: u64,
    slugs: &std::collections::HashMap<Uuid, String>,
) -> v1::Node {
    let report = node.report;
    let lag = if node.state == NodeState::Connected {
        current.saturating_sub(report.applied_revision)
    } else {
        0
    };
    let failing = report
        .failing
        .into_iter()
        .filter_map(|f| {
            let id = Uuid::try_parse(&f.workspace_id).ok()?;
            let slug = slugs.get(&id)?;
            Some(v1::NodeWorkspaceError {
                workspace_id: f.workspace_id,
                workspace: slug.clone(),
                revision: f.revision,
                message: f.message,
            })
        })
        .collect();
    v1::Node {
        node_id: report.node_id,
        labels: report.labels.into_iter().collect(),
        binary_version: report.binary_version,
        protocol_version: report.protocol_version,
        config_schema_version: report.schema_version,
        capabilities: report.capabilities,
        state: node.state.as_str().to_owned(),
        replica: node.replica_name,
        token_name: report.token_name,
        applied_revision: report.applied_revision,
        lag_revisions: lag,
        connected_at: Some(timestamp(report.connected_at)),
        last_seen: Some(timestamp(report.last_seen)),
        last_ack_time: report.last_ack_at.map(timestamp),
        last_nack_time: report.last_nack_at.map(timestamp),
        last_nack_revision: report.last_nack_revision.unwrap_or(0),
        last_error: report.last_error.unwrap_or_default(),
        failing,
    }
}

#[tonic::async_trait]
impl NodeService for Nodes {
    async fn list_nodes(
        &self,
        request: Request<v1::ListNodesRequest>,
    ) -> Result<Response<v1::ListNodesResponse>, Status> {
        let grant = self.0.authorize(&request, Target::Org).await?;
        let include_gone = request.get_ref().include_disconnected;
        let fleet = self.0.nodes.fleet().await.map_err(ApiError::from)?;
        let slugs = grant
            .store()
            .workspace_slugs(grant.org_id())
            .await
            .map_err(ApiError::from)?;
        let current = self.0.cache.current().revision;
        Ok(Response::new(v1::ListNodesResponse {
            nodes: fleet
                .into_iter()
                .filter(|n| include_gone || n.state != NodeState::Disconnected)
                .map(|n| to_proto(n, current, &slugs))
                .collect(),
            current_revision: current,
        }))
    }

    async fn get_propagation(
        &self,
        request: Request<v1::GetPropagationRequest>,
    ) -> Result<Response<v1::Propagation>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        // Also the org check: another org's workspace is NotFound here.
        let workspace = grant
            .store()
            .get_workspace(grant.org_id(), &key)
            .await
            .map_err(ApiError::from)?;
        let revision = match request.get_ref().revision {
            0 => grant
                .store()
                .last_change_revision(workspace.id)
                .await
                .map_err(ApiError::from)?,
            revision => revision,
        };
        let counted = self
            .0
            .nodes
            .serving(revision, Some(workspace.id))
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(propagation(revision, counted)))
    }
}

/// The wire form of a count of `revision`.
pub fn propagation(revision: u64, counted: crate::fleet::nodes::Propagation) -> v1::Propagation {
    v1::Propagation {
        nodes_serving: u32::try_from(counted.serving).unwrap_or(u32::MAX),
        nodes_total: u32::try_from(counted.total).unwrap_or(u32::MAX),
        revision,
        pending_nodes: counted.pending,
        failing_nodes: counted
            .failing
            .into_iter()
            .map(|(node_id, message)| v1::PropagationFailure { node_id, message })
            .collect(),
    }
}
