//! The request path. Everything happens in `request_filter`, which answers
//! and returns `Ok(true)`: there is no upstream. The routing table is loaded
//! lock-free, the request matched on the precompiled trie, and the answer's
//! prebuilt header and shared body written out. Nothing here locks, touches
//! a database or calls the control plane.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use mockplane_shared::path::split_workspace_path;
use mockplane_shared::{Lookup, Method};
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::{ProxyHttp, Session};
use serde_json::json;

use crate::metrics::Outcome;
use crate::state::NodeState;
use crate::table::{RoutingTable, response_header};

pub struct MockProxy {
    state: Arc<NodeState>,
}

impl MockProxy {
    pub fn new(state: Arc<NodeState>) -> Self {
        Self { state }
    }
}

pub struct RequestCtx {
    started: Instant,
    outcome: Option<Outcome>,
}

/// What to send for a request.
#[derive(Debug)]
pub struct Answer {
    pub outcome: Outcome,
    pub header: Box<ResponseHeader>,
    pub body: Bytes,
}

/// Matches a request against the table. Pure, so the whole routing
/// decision is testable without a socket. Fails only if an error response
/// cannot be built, which constant statuses and headers rule out.
pub fn answer(table: &RoutingTable, method: &http::Method, path: &str) -> Result<Answer, String> {
    let Some((slug, rest)) = split_workspace_path(path) else {
        return problem(
            Outcome::NoWorkspace,
            404,
            "no_workspace",
            format!("{path} names no workspace"),
            Some(
                "mocks are served at /w/{workspace}/{path} or /workspace/{workspace}/{path}".into(),
            ),
        );
    };
    let Some(workspace) = table.workspace(slug) else {
        let hint = if slug.chars().any(|c| c.is_ascii_uppercase()) {
            format!(
                "workspace slugs are lower case: try '{}'",
                slug.to_ascii_lowercase()
            )
        } else {
            "check the slug: `mockplane workspace list` shows the workspaces".into()
        };
        return problem(
            Outcome::UnknownWorkspace,
            404,
            "workspace_not_found",
            format!("no workspace '{slug}' is served here"),
            Some(hint),
        );
    };
    let route_method = Method::of_request(method);
    match workspace.router.lookup(route_method, rest) {
        Lookup::Found(route) => Ok(Answer {
            outcome: Outcome::Matched,
            header: Box::new(route.response_header()),
            body: route.body.clone(),
        }),
        Lookup::MethodNotAllowed => {
            let allowed: Vec<&str> = workspace
                .router
                .allowed_methods(rest)
                .into_iter()
                .map(Method::as_str)
                .collect();
            let mut answer = problem(
                Outcome::MethodNotAllowed,
                405,
                "method_not_allowed",
                format!("{method} is not allowed on {rest} in workspace '{slug}'"),
                Some(format!("allowed: {}", allowed.join(", "))),
            )?;
            answer
                .header
                .insert_header(http::header::ALLOW, allowed.join(", "))
                .map_err(|e| e.to_string())?;
            Ok(answer)
        }
        Lookup::NotFound => {
            let hint = match workspace.router.closest(route_method, rest) {
                Some((method, template)) => format!("the closest route is {method} {template}"),
                None if workspace.router.is_empty() => format!(
                    "workspace '{slug}' has no routes yet: add some with `mockplane route add {slug} --file mocks.yaml`"
                ),
                None => format!("`mockplane route list {slug}` shows the workspace's routes"),
            };
            problem(
                Outcome::NoRoute,
                404,
                "route_not_found",
                format!("no route of workspace '{slug}' matches {method} {rest}"),
                Some(hint),
            )
        }
    }
}

/// A JSON error: a stable `code` for programs, a `message` and a `hint` for
/// people.
fn problem(
    outcome: Outcome,
    status: u16,
    code: &str,
    message: String,
    hint: Option<String>,
) -> Result<Answer, String> {
    let body = json!({ "error": { "code": code, "message": message, "hint": hint } });
    let body = Bytes::from(body.to_string());
    let content_type = [("content-type".to_owned(), "application/json".to_owned())];
    let header = response_header(status, &content_type, body.len())?;
    Ok(Answer {
        outcome,
        header: Box::new(header),
        body,
    })
}

#[async_trait]
impl ProxyHttp for MockProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            started: Instant::now(),
            outcome: None,
        }
    }

    /// No modules: mock responses are sent as they are.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        Err(Error::explain(
            ErrorType::InternalError,
            "mock responses have no upstream",
        ))
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        let request = session.req_header();
        let head = request.method == http::Method::HEAD;
        let answer = {
            // The table guard is dropped before any await.
            let table = self.state.table.load();
            answer(&table, &request.method, request.uri.path())
        }
        .map_err(|e| Error::explain(ErrorType::InternalError, e))?;
        ctx.outcome = Some(answer.outcome);
        let body_follows = !head && !answer.body.is_empty();
        session
            .write_response_header(answer.header, !body_follows)
            .await?;
        if body_follows {
            session.write_response_body(Some(answer.body), true).await?;
        }
        Ok(true)
    }

    async fn logging(&self, _session: &mut Session, _error: Option<&Error>, ctx: &mut Self::CTX) {
        if let Some(outcome) = ctx.outcome {
            let metrics = &self.state.metrics;
            metrics.count(outcome);
            metrics
                .request_seconds
                .observe(ctx.started.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use mockplane_shared::{ConfigRoute, ResponseSpec, RouteSpec, Slug, WorkspaceConfig};
    use uuid::Uuid;

    use super::*;
    use crate::table::Update;

    fn table() -> RoutingTable {
        let config = WorkspaceConfig {
            id: Uuid::new_v4(),
            slug: Slug::parse("demo").unwrap(),
            routes: vec![ConfigRoute {
                id: Uuid::new_v4(),
                spec: RouteSpec::parse("", "GET", "/users/{id}", || {
                    ResponseSpec::parse(
                        200,
                        vec![("content-type".into(), "application/json".into())],
                        Bytes::from_static(b"{\"id\":1}"),
                    )
                })
                .unwrap(),
            }],
        };
        let update = Update {
            revision: 1,
            full: true,
            upserts: vec![mockplane_proto::resource::encode(&config, 1)],
            ..Default::default()
        };
        RoutingTable::default().apply(&update).0
    }

    fn error_code(answer: &Answer) -> String {
        let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        body["error"]["code"].as_str().unwrap().to_owned()
    }

    #[test]
    fn routes_by_workspace_and_route() {
        let table = table();
        let hit = answer(&table, &http::Method::GET, "/w/demo/users/7").unwrap();
        assert_eq!(hit.outcome, Outcome::Matched);
        assert_eq!(hit.header.status, 200);
        assert_eq!(&hit.body[..], b"{\"id\":1}");
        assert_eq!(hit.header.headers["content-length"], "8");
        let long = answer(&table, &http::Method::GET, "/workspace/demo/users/7").unwrap();
        assert_eq!(long.outcome, Outcome::Matched);
    }

    #[test]
    fn each_miss_has_its_own_code() {
        let table = table();
        let cases = [
            ("/widgets/1", Outcome::NoWorkspace, 404, "no_workspace"),
            (
                "/w/idgets/1",
                Outcome::UnknownWorkspace,
                404,
                "workspace_not_found",
            ),
            ("/w/demo/users", Outcome::NoRoute, 404, "route_not_found"),
        ];
        for (path, outcome, status, code) in cases {
            let miss = answer(&table, &http::Method::GET, path).unwrap();
            assert_eq!(miss.outcome, outcome, "{path}");
            assert_eq!(miss.header.status, status);
            assert_eq!(error_code(&miss), code);
            assert_eq!(miss.header.headers["content-type"], "application/json");
        }
        let not_allowed = answer(&table, &http::Method::POST, "/w/demo/users/7").unwrap();
        assert_eq!(not_allowed.header.status, 405);
        assert_eq!(not_allowed.header.headers["allow"], "GET");
        let upper = answer(&table, &http::Method::GET, "/w/Demo/users/7").unwrap();
        let body: serde_json::Value = serde_json::from_slice(&upper.body).unwrap();
        assert!(body["error"]["hint"].as_str().unwrap().contains("'demo'"));
        let near = answer(&table, &http::Method::GET, "/w/demo/users/7/x").unwrap();
        let body: serde_json::Value = serde_json::from_slice(&near.body).unwrap();
        assert_eq!(
            body["error"]["hint"],
            "the closest route is GET /users/{id}"
        );
    }
}
