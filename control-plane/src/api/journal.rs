//! `mockplane.v1.JournalService`: asks every node connected to this replica
//! for a workspace's latest requests (over the node's ops listener) and
//! merges the answers, newest first.

use std::time::Duration;

use mockplane_proto::v1;
use mockplane_proto::v1::journal_service_server::JournalService;
use serde::Deserialize;
use tonic::{Request, Response, Status};

use super::authz::Target;
use super::error::ApiError;
use super::{ApiState, page_size};
use crate::fleet::nodes::FleetNode;
use crate::store::NodeState;
use crate::store::WorkspaceRef;

/// How long one node has to answer.
const NODE_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Journal(pub ApiState);

#[derive(Deserialize)]
struct NodeAnswer {
    node_id: String,
    entries: Vec<NodeEntry>,
}

#[derive(Deserialize)]
struct NodeEntry {
    at_ms: u64,
    environment: String,
    method: String,
    path: String,
    #[serde(default)]
    query: Option<String>,
    headers: String,
    #[serde(default)]
    body: Option<String>,
    status: u16,
    outcome: String,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    route_name: Option<String>,
    #[serde(default)]
    miss: Option<serde_json::Value>,
    /// The request presented a test key.
    #[serde(default)]
    test_key: bool,
    /// The id of the API key the request presented.
    #[serde(default)]
    api_key: Option<String>,
}

impl NodeEntry {
    fn into_proto(self, node_id: &str) -> (u64, v1::JournalEntry) {
        let time = prost_types::Timestamp {
            seconds: i64::try_from(self.at_ms / 1000).unwrap_or(i64::MAX),
            nanos: i32::try_from((self.at_ms % 1000) * 1_000_000).unwrap_or(0),
        };
        (
            self.at_ms,
            v1::JournalEntry {
                node_id: node_id.to_owned(),
                time: Some(time),
                environment: self.environment,
                method: self.method,
                path: self.path,
                query: self.query.unwrap_or_default(),
                headers: self.headers,
                body: self.body.unwrap_or_default(),
                status: u32::from(self.status),
                outcome: self.outcome,
                route_id: self.route.unwrap_or_default(),
                route_name: self.route_name.unwrap_or_default(),
                miss: self.miss.map(|m| m.to_string()).unwrap_or_default(),
                test_key: self.test_key,
                api_key_id: self.api_key.unwrap_or_default(),
            },
        )
    }
}

/// The query string of a node's `/journal/{workspace}`.
fn node_query(request: &v1::ListRequestsRequest, limit: u32) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if !request.environment.is_empty() {
        query.append_pair("env", &request.environment);
    }
    if !request.method.is_empty() {
        query.append_pair("method", &request.method);
    }
    if !request.path_prefix.is_empty() {
        query.append_pair("path", &request.path_prefix);
    }
    if request.status != 0 {
        query.append_pair("status", &request.status.to_string());
    }
    if request.unmatched_only {
        query.append_pair("unmatched", "true");
    }
    if let Some(since) = &request.since {
        let ms = since.seconds.max(0) * 1000 + i64::from(since.nanos.max(0) / 1_000_000);
        query.append_pair("since_ms", &ms.to_string());
    }
    query.append_pair("limit", &limit.to_string());
    query.finish()
}

async fn ask(
    client: &reqwest::Client,
    node: &FleetNode,
    slug: &str,
    query: &str,
) -> Result<Vec<(u64, v1::JournalEntry)>, String> {
    let url = format!(
        "{}/journal/{slug}?{query}",
        node.report.ops_url.trim_end_matches('/')
    );
    let response = client
        .get(&url)
        .timeout(NODE_TIMEOUT)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        // The node does not serve the workspace (yet): nothing to add.
        return Ok(Vec::new());
    }
    if !response.status().is_success() {
        return Err(format!("answered {}", response.status()));
    }
    let text = response.text().await.map_err(|e| e.to_string())?;
    let answer: NodeAnswer = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    Ok(answer
        .entries
        .into_iter()
        .map(|entry| entry.into_proto(&answer.node_id))
        .collect())
}

#[tonic::async_trait]
impl JournalService for Journal {
    async fn list_requests(
        &self,
        request: Request<v1::ListRequestsRequest>,
    ) -> Result<Response<v1::ListRequestsResponse>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = if request.get_ref().environment.is_empty() {
            self.0.authorize(&request, Target::Workspace(&key)).await?
        } else {
            self.0
                .authorize(
                    &request,
                    Target::Environment(&key, &request.get_ref().environment),
                )
                .await?
        };
        let request = request.into_inner();
        // Also the org check: another org's workspace is NotFound here.
        let workspace = grant
            .store()
            .get_workspace(grant.org_id(), &key)
            .await
            .map_err(ApiError::from)?;
        let limit = page_size(request.limit, 100, 1000);
        let query = node_query(&request, limit);
        let slug = workspace.slug.to_string();
        // Every connected node of the fleet, whichever replica it streams
        // from.
        let nodes: Vec<FleetNode> = self
            .0
            .nodes
            .fleet_or_local()
            .await
            .into_iter()
            .filter(|n| n.state == NodeState::Connected && !n.report.ops_url.is_empty())
            .collect();
        let client = reqwest::Client::new();
        let answers =
            futures::future::join_all(nodes.iter().map(|node| ask(&client, node, &slug, &query)))
                .await;
        let mut entries = Vec::new();
        let mut unreachable = Vec::new();
        for (node, answer) in nodes.iter().zip(answers) {
            match answer {
                Ok(found) => entries.extend(found),
                Err(error) => {
                    tracing::warn!(node = %node.report.node_id, %error, "journal query failed");
                    unreachable.push(node.report.node_id.clone());
                }
            }
        }
        // A workspace-wide query shows only the environments whose journal
        // the caller may read.
        if !grant.environments.is_empty() {
            entries.retain(|(_, e)| grant.environments.contains(&e.environment));
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.0));
        entries.truncate(limit as usize);
        Ok(Response::new(v1::ListRequestsResponse {
            entries: entries.into_iter().map(|(_, e)| e).collect(),
            nodes_asked: u32::try_from(nodes.len()).unwrap_or(u32::MAX),
            unreachable_nodes: unreachable,
        }))
    }
}
