//! The ops listener: liveness, readiness, metrics and status, on a port of
//! its own so probes and scrapes never compete with mock traffic.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::json;

use crate::journal::Filter;
use crate::state::NodeState;

pub struct OpsApp {
    state: Arc<NodeState>,
}

impl OpsApp {
    pub fn new(state: Arc<NodeState>) -> Self {
        Self { state }
    }

    /// Status, content type and body for a path.
    pub fn route(&self, path: &str) -> (StatusCode, &'static str, Vec<u8>) {
        match path {
            "/healthz" => (StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => match self.state.readiness().reason() {
                None => (StatusCode::OK, "text/plain", b"ready\n".to_vec()),
                Some(reason) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: {reason}\n").into_bytes(),
                ),
            },
            "/metrics" => (
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.state.metrics.render().into_bytes(),
            ),
            "/status" => {
                let table = self.state.table.load();
                let status = json!({
                    "node_id": self.state.node_id,
                    "ready": self.state.is_ready(),
                    "not_ready_because": self.state.readiness().reason(),
                    "connected": self.state.is_connected(),
                    "revision": table.revision,
                    "workspaces": table.len(),
                });
                (
                    StatusCode::OK,
                    "application/json",
                    status.to_string().into_bytes(),
                )
            }
            _ if path.starts_with("/state/") => {
                let slug = &path["/state/".len()..];
                let table = self.state.table.load();
                match table.workspace(slug) {
                    Some(workspace) => (
                        StatusCode::OK,
                        "application/json",
                        json!({
                            "workspace": slug,
                            "state_epoch": workspace.state_epoch,
                            "machines": self.state.machines.of(workspace.id),
                        })
                        .to_string()
                        .into_bytes(),
                    ),
                    None => (
                        StatusCode::NOT_FOUND,
                        "text/plain",
                        format!("no workspace '{slug}' is served here\n").into_bytes(),
                    ),
                }
            }
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                b"not found: try /healthz, /readyz, /metrics, /status, /state/{workspace} or /journal/{workspace}\n"
                    .to_vec(),
            ),
        }
    }
}

impl OpsApp {
    /// `GET /journal/{workspace}?env=&method=&path=&status=&unmatched=true&since_ms=&limit=`:
    /// the workspace's latest requests on this node, newest first.
    pub fn journal(&self, slug: &str, query: &str) -> (StatusCode, &'static str, Vec<u8>) {
        let bad = |message: String| {
            (
                StatusCode::BAD_REQUEST,
                "application/json",
                json!({ "error": message }).to_string().into_bytes(),
            )
        };
        let mut filter = Filter {
            limit: 100,
            ..Filter::default()
        };
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let value = value.into_owned();
            match &*key {
                "env" => filter.environment = Some(value),
                "method" => filter.method = Some(value),
                "path" => filter.path_prefix = Some(value),
                "status" => match value.parse() {
                    Ok(status) => filter.status = Some(status),
                    Err(_) => return bad(format!("status={value:?} is not a status code")),
                },
                "unmatched" => filter.unmatched = value == "true",
                "since_ms" => match value.parse() {
                    Ok(since) => filter.since_ms = Some(since),
                    Err(_) => return bad(format!("since_ms={value:?} is not a number")),
                },
                "limit" => match value.parse::<usize>() {
                    Ok(limit) if (1..=1000).contains(&limit) => filter.limit = limit,
                    _ => return bad(format!("limit={value:?}: give 1 to 1000")),
                },
                other => return bad(format!("unknown parameter {other:?}")),
            }
        }
        let table = self.state.table.load();
        let Some(workspace) = table.workspace(slug) else {
            return (
                StatusCode::NOT_FOUND,
                "application/json",
                json!({ "error": format!("no workspace '{slug}' is served here") })
                    .to_string()
                    .into_bytes(),
            );
        };
        let entries = self.state.journal.query(workspace.id, &filter);
        (
            StatusCode::OK,
            "application/json",
            json!({ "node_id": self.state.node_id, "entries": entries })
                .to_string()
                .into_bytes(),
        )
    }
}

#[async_trait]
impl ServeHttp for OpsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let uri = &session.req_header().uri;
        let (status, content_type, body) = match uri.path().strip_prefix("/journal/") {
            Some(slug) => self.journal(slug, uri.query().unwrap_or("")),
            None => self.route(uri.path()),
        };
        let length = body.len();
        let mut response = Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        headers.insert(http::header::CONTENT_LENGTH, length.into());
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::table::RoutingTable;

    #[test]
    fn ready_only_after_a_snapshot() {
        let state = NodeState::new("n1".into(), Metrics::new().unwrap());
        let ops = OpsApp::new(state.clone());
        assert_eq!(ops.route("/healthz").0, StatusCode::OK);
        assert_eq!(ops.route("/readyz").0, StatusCode::SERVICE_UNAVAILABLE);
        state.publish(RoutingTable::default());
        assert_eq!(ops.route("/readyz").0, StatusCode::OK);
        let (_, _, metrics) = ops.route("/metrics");
        let metrics = String::from_utf8(metrics).unwrap();
        assert!(metrics.contains("mockplane_config_revision 0"), "{metrics}");
        let (_, _, status) = ops.route("/status");
        let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
        assert_eq!(status["ready"], true);
        assert_eq!(status["not_ready_because"], serde_json::Value::Null);
        assert_eq!(ops.route("/nope").0, StatusCode::NOT_FOUND);
    }

    #[test]
    fn a_refused_last_known_good_file_leaves_the_node_unready_until_a_snapshot() {
        let state = NodeState::new("n1".into(), Metrics::new().unwrap());
        let ops = OpsApp::new(state.clone());
        state.publish_refused(RoutingTable::default());
        let (code, _, body) = ops.route("/readyz");
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(String::from_utf8(body).unwrap().contains("refused"));
        let (_, _, status) = ops.route("/status");
        let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
        assert_eq!(status["ready"], false);
        assert!(
            status["not_ready_because"]
                .as_str()
                .unwrap()
                .contains("last-known-good")
        );
        state.publish(RoutingTable::default());
        assert_eq!(ops.route("/readyz").0, StatusCode::OK);
        // A node already ready is not made unready by it.
        state.publish_refused(RoutingTable::default());
        assert_eq!(ops.route("/readyz").0, StatusCode::OK);
    }
}
