//! The request path. Everything happens in `request_filter`, which answers
//! and returns `Ok(true)`: there is no upstream. The routing table is loaded
//! lock-free, the workspace and environment picked, the API key checked, and
//! the mock engine (`mockplane_shared::engine`) answers from the
//! environment's precompiled table; this file adds only what a server does
//! around it (keys, journal, usage, timers, the socket). Nothing here locks,
//! touches a database or calls the control plane.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use mockplane_shared::RequestParts;
use mockplane_shared::engine::path::split_workspace_path;
use mockplane_shared::engine::{self, Effects};
use mockplane_shared::model::keys::{KEY_HEADER, digest};
use mockplane_shared::model::realism::Fault;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::journal::Entry;
use crate::limits::Refusal;
use crate::machines::Machines;
use crate::metrics::Outcome;
use crate::state::NodeState;
use crate::table::{CompiledEnvironment, CompiledKey, CompiledWorkspace, RoutingTable};
use crate::usage::unix_now;

pub use mockplane_shared::engine::PERSONA_HEADER;

/// The request header that picks an environment of the workspace.
pub const ENV_HEADER: &str = "x-mockplane-env";

/// The environment a request names; `None` when it names none. A value
/// that is not text names an environment no workspace has.
fn requested_environment<'a>(request: &RequestParts<'a>) -> Option<&'a str> {
    request
        .headers()
        .get(ENV_HEADER)
        .map(|value| value.to_str().unwrap_or("\u{fffd}"))
}

/// Largest request body read for body matchers; a larger one is refused
/// with 413 rather than matched on a part.
pub const MAX_REQUEST_BODY: usize = 1024 * 1024;

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
    /// A chaos fault broke the connection on purpose: write nothing more.
    faulted: bool,
    /// The request body, when it was read (for the journal).
    body: Option<Bytes>,
}

/// What to send for a request.
#[derive(Debug)]
pub struct Answer {
    pub outcome: Outcome,
    pub header: Box<ResponseHeader>,
    pub body: Bytes,
    /// Wait this long before answering (the route's latency).
    pub delay: Option<Duration>,
    /// Break the connection this way instead of answering normally.
    pub fault: Option<Fault>,
    /// The workspace and environment that answered, for the journal.
    pub place: Option<(uuid::Uuid, std::sync::Arc<str>)>,
    /// The route that answered.
    pub route: Option<(uuid::Uuid, std::sync::Arc<str>)>,
    /// The API key the request presented (id, test key), when valid.
    pub key: Option<(uuid::Uuid, bool)>,
    /// Counts the request in flight against its environment's concurrency
    /// limit until the answer is sent.
    pub permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl From<engine::Response> for Answer {
    fn from(response: engine::Response) -> Self {
        Self {
            outcome: response.outcome.into(),
            header: Box::new(ResponseHeader::from(response.head)),
            body: response.body,
            delay: response.delay,
            fault: response.fault,
            place: None,
            route: response.route,
            key: None,
            permit: None,
        }
    }
}

/// What the engine asks of a node: its state machines for the
/// environment that answers, the clock, realism on.
struct NodeEffects<'a> {
    machines: &'a Machines,
    workspace: uuid::Uuid,
    environment: &'a str,
}

impl Effects for NodeEffects<'_> {
    fn realism(&self) -> bool {
        true
    }

    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn entropy(&self) -> u64 {
        entropy()
    }

    fn state(&self, machine: &str, key: &str) -> String {
        self.machines
            .get(self.workspace, self.environment, machine, key)
    }

    fn is_in(&self, machine: &str, key: &str, state: &str) -> bool {
        self.machines
            .is(self.workspace, self.environment, machine, key, state)
    }

    fn set_state(&self, machine: &str, key: &str, state: &str) {
        self.machines
            .set(self.workspace, self.environment, machine, key, state);
    }
}

/// Matches a request against the table. Pure, so the whole routing
/// decision is testable without a socket.
pub fn answer(
    table: &RoutingTable,
    method: &http::Method,
    path: &str,
    request: &RequestParts<'_>,
) -> Answer {
    static MACHINES: std::sync::LazyLock<Machines> = std::sync::LazyLock::new(Machines::default);
    answer_with(table, &MACHINES, method, path, request)
}

/// [`answer`] with the node's state machines: stateful routes read and move
/// them. (`answer` keeps one store of its own, for tests and benchmarks.)
pub fn answer_with(
    table: &RoutingTable,
    machines: &Machines,
    method: &http::Method,
    path: &str,
    request: &RequestParts<'_>,
) -> Answer {
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
    let requested = requested_environment(request);
    let Some(env) = workspace.environment(requested) else {
        // A protected workspace tells a caller without a key of it only
        // that a key is required, not which environments it has.
        if workspace.require_keys && !holds_a_key(workspace, request) {
            return stranger(slug, request);
        }
        let asked = requested.unwrap_or_default();
        let names: Vec<&str> = workspace.environments.iter().map(|e| &*e.name).collect();
        let hint = if asked.chars().any(|c| c.is_ascii_uppercase()) {
            format!(
                "environment names are lower case: try '{}'",
                asked.to_ascii_lowercase()
            )
        } else {
            format!(
                "workspace '{slug}' has {}; without the {ENV_HEADER} header, {} answers",
                names.join(", "),
                workspace.active()
            )
        };
        return problem(
            Outcome::UnknownEnvironment,
            404,
            "environment_not_found",
            format!("workspace '{slug}' has no environment '{asked}'"),
            Some(hint),
        );
    };
    let place = Some((workspace.id, env.name.clone()));
    let key = match check_key(workspace, env, slug, requested.is_some(), request) {
        Ok(key) => key,
        Err(mut refused) => {
            refused.place = place;
            return *refused;
        }
    };
    let permit = match &env.limiter {
        None => None,
        Some(limiter) => match limiter.admit() {
            Ok(permit) => permit,
            Err(refusal) => {
                env.usage.count_limited();
                let mut over = over_limit(slug, &env.name, refusal);
                over.place = place;
                over.key = key.map(|k| (k.id, k.test));
                return over;
            }
        },
    };
    env.usage.count(key.is_some_and(|k| k.test));
    let effects = NodeEffects {
        machines,
        workspace: workspace.id,
        environment: &env.name,
    };
    let mut answer = Answer::from(engine::answer(
        &env.table,
        &effects,
        engine::Request {
            method,
            path: rest,
            parts: request,
        },
    ));
    answer.place = place;
    answer.key = key.map(|k| (k.id, k.test));
    answer.permit = permit;
    answer
}

/// The 429 for a request over its environment's limits on this node: the
/// limit by name and value in the body, when to retry in `Retry-After`
/// (whole seconds, at least 1).
fn over_limit(slug: &str, env: &str, refusal: Refusal) -> Answer {
    let (code, limit, value, retry_after, message) = match refusal {
        Refusal::Rate {
            per_second,
            burst,
            retry_after,
        } => (
            "rate_limited",
            "requests_per_second",
            per_second,
            retry_after,
            format!(
                "environment '{env}' of workspace '{slug}' admits {per_second} requests per second (bursts of {burst}) on this node; this request is over"
            ),
        ),
        Refusal::Concurrency { max } => (
            "concurrency_limited",
            "max_concurrent",
            max,
            Duration::from_secs(1),
            format!(
                "environment '{env}' of workspace '{slug}' answers at most {max} requests at once on this node, and that many are in flight"
            ),
        ),
    };
    let retry_secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let retry_secs = retry_secs.max(1);
    let (mut head, body) = engine::json_head(
        429,
        &serde_json::json!({
            "error": {
                "code": code,
                "message": message,
                "hint": format!(
                    "retry after {retry_secs} s; limits are per node (k nodes admit up to k times as much) and set with `mockplane env update {slug} {env} --rate-limit/--burst/--max-concurrent`"
                ),
                "limit": limit,
                "value": value,
                "retry_after_secs": retry_secs,
            }
        }),
    );
    head.headers.insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from(retry_secs),
    );
    answer_of(Outcome::Limited, head, body)
}

impl From<engine::Outcome> for Outcome {
    fn from(outcome: engine::Outcome) -> Self {
        match outcome {
            engine::Outcome::Matched => Outcome::Matched,
            engine::Outcome::Chaos => Outcome::Chaos,
            engine::Outcome::NoRoute => Outcome::NoRoute,
            engine::Outcome::MethodNotAllowed => Outcome::MethodNotAllowed,
        }
    }
}

/// How long ago, for people.
fn ago(seconds: u64) -> String {
    match seconds {
        0..120 => format!("{seconds} seconds"),
        120..7_200 => format!("{} minutes", seconds / 60),
        7_200..172_800 => format!("{} hours", seconds / 3_600),
        _ => format!("{} days", seconds / 86_400),
    }
}

/// A 401 for a key problem, saying where keys go.
fn refused(code: &str, message: String, hint: String) -> Answer {
    let (mut head, body) = engine::problem(401, code, message, Some(hint));
    // The header name is a constant token, so the value is always valid.
    if let Ok(value) = http::HeaderValue::try_from(format!("ApiKey header=\"{KEY_HEADER}\"")) {
        head.headers.insert(http::header::WWW_AUTHENTICATE, value);
    }
    answer_of(Outcome::Unauthorized, head, body)
}

const KEYS_HINT: &str = "keys are made with ApiKeyService.CreateApiKey (the secret, mpk_…, is shown once) and open one environment each";
const UNKNOWN_KEY_HINT: &str = "check the key: it may be mistyped, revoked, or of another workspace; ListApiKeys shows the workspace's keys";

/// Whether the request presents a key of any environment of the workspace.
fn holds_a_key(workspace: &CompiledWorkspace, request: &RequestParts<'_>) -> bool {
    request.headers().get(KEY_HEADER).is_some_and(|presented| {
        let sha256 = digest(presented.as_bytes());
        workspace
            .environments
            .iter()
            .any(|env| env.key(&sha256).is_some())
    })
}

/// The 401 for a caller with no key of a protected workspace: it names
/// nothing of the workspace but its slug, which the caller sent.
fn stranger(slug: &str, request: &RequestParts<'_>) -> Answer {
    if request.headers().get(KEY_HEADER).is_some() {
        refused(
            "api_key_invalid",
            format!("the {KEY_HEADER} header holds no key of workspace '{slug}'"),
            UNKNOWN_KEY_HINT.into(),
        )
    } else {
        refused(
            "api_key_required",
            format!("workspace '{slug}' requires an API key in the {KEY_HEADER} header"),
            KEYS_HINT.into(),
        )
    }
}

/// The API key a request presents, checked against the environment that
/// answers it: `Ok(None)` when it presents none and the workspace does not
/// require one; `Err` with the 401 to send when the key is missing,
/// unknown, of another environment, or expired (boxed: refusals are the
/// cold path). A caller without a key of the workspace learns the name of
/// the environment only if it named it (`named`). One SHA-256 and one hash
/// lookup when a key is presented; nothing at all when none is.
fn check_key<'t>(
    workspace: &'t CompiledWorkspace,
    env: &'t CompiledEnvironment,
    slug: &str,
    named: bool,
    request: &RequestParts<'_>,
) -> Result<Option<&'t CompiledKey>, Box<Answer>> {
    let env_name = &*env.name;
    let Some(presented) = request.headers().get(KEY_HEADER) else {
        if !workspace.require_keys {
            return Ok(None);
        }
        if !named {
            return Err(Box::new(stranger(slug, request)));
        }
        return Err(Box::new(refused(
            "api_key_required",
            format!(
                "workspace '{slug}' requires an API key: send a key of environment '{env_name}' in the {KEY_HEADER} header"
            ),
            KEYS_HINT.into(),
        )));
    };
    let sha256 = digest(presented.as_bytes());
    let Some(key) = env.key(&sha256) else {
        let elsewhere = workspace
            .environments
            .iter()
            .find(|other| other.key(&sha256).is_some())
            .map(|other| &*other.name);
        let hint = match elsewhere {
            Some(other) => format!(
                "it is a key of environment '{other}': a key opens only the environment it was made for; use a key of '{env_name}' or send {ENV_HEADER}: {other}"
            ),
            None if !named => return Err(Box::new(stranger(slug, request))),
            None => UNKNOWN_KEY_HINT.into(),
        };
        return Err(Box::new(refused(
            "api_key_invalid",
            format!(
                "the {KEY_HEADER} header holds no key of environment '{env_name}' of workspace '{slug}'"
            ),
            hint,
        )));
    };
    let now = unix_now();
    if key.is_expired(now) {
        return Err(Box::new(refused(
            "api_key_expired",
            format!(
                "API key {} of environment '{env_name}' of workspace '{slug}' expired {} ago",
                key.id,
                ago(now.saturating_sub(key.expires_at_unix))
            ),
            "make a new key (ApiKeyService.CreateApiKey): a key is refused from its expiry on"
                .into(),
        )));
    }
    key.used.used(now);
    Ok(Some(key))
}

/// Different for every request: seeds the random helpers without `seed=`.
fn entropy() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ COUNTER.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
}

/// A JSON error of the node (the engine's form: a stable `code` for
/// programs, a `message` and a `hint` for people).
fn problem(
    outcome: Outcome,
    status: u16,
    code: &str,
    message: String,
    hint: Option<String>,
) -> Answer {
    let (head, body) = engine::problem(status, code, message, hint);
    answer_of(outcome, head, body)
}

fn answer_of(outcome: Outcome, head: http::response::Parts, body: Bytes) -> Answer {
    Answer {
        outcome,
        header: Box::new(ResponseHeader::from(head)),
        body,
        delay: None,
        fault: None,
        place: None,
        route: None,
        key: None,
        permit: None,
    }
}

#[async_trait]
impl ProxyHttp for MockProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            started: Instant::now(),
            outcome: None,
            faulted: false,
            body: None,
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

    /// Errors of the request path: nothing more is written after a chaos
    /// fault or on a broken connection; a bad request (an unreadable body)
    /// is a 400, anything else a 500.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        error: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let dead = matches!(
            error.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
        );
        let code = match error.etype() {
            _ if ctx.faulted || dead => 0,
            ErrorType::HTTPStatus(code) => *code,
            _ if error.esource() == &pingora_core::ErrorSource::Downstream => 400,
            _ => 500,
        };
        if code > 0 {
            session.respond_error(code).await.ok();
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        // Most workspaces match without the body: answer from one table
        // load, and drop its guard before any await.
        let answered = {
            let table = self.state.table.load();
            let request = session.req_header();
            let needs_body = split_workspace_path(request.uri.path())
                .and_then(|(slug, _)| table.workspace(slug))
                .and_then(|workspace| {
                    let requested = request
                        .headers
                        .get(ENV_HEADER)
                        .and_then(|value| value.to_str().ok());
                    workspace.environment(requested)
                })
                .is_some_and(|env| env.table.needs_body);
            (!needs_body).then(|| {
                let parts = RequestParts::new(request.uri.query(), &request.headers, b"");
                answer_with(
                    &table,
                    &self.state.machines,
                    &request.method,
                    request.uri.path(),
                    &parts,
                )
            })
        };
        let answer = match answered {
            Some(answered) => answered,
            None => match read_body(session).await? {
                Some(body) => {
                    // The table may have changed while the body arrived.
                    let table = self.state.table.load();
                    let request = session.req_header();
                    let parts = RequestParts::new(request.uri.query(), &request.headers, &body);
                    let answered = answer_with(
                        &table,
                        &self.state.machines,
                        &request.method,
                        request.uri.path(),
                        &parts,
                    );
                    ctx.body = Some(body);
                    answered
                }
                None => problem(
                    Outcome::NoRoute,
                    413,
                    "request_too_large",
                    format!(
                        "request bodies are matched up to {MAX_REQUEST_BODY} bytes; this one is larger"
                    ),
                    None,
                ),
            },
        };
        self.record(session, &answer, ctx.body.take());
        self.send(session, ctx, answer).await
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

/// The whole request body, or `None` when it is over [`MAX_REQUEST_BODY`].
async fn read_body(session: &mut Session) -> Result<Option<Bytes>> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        if body.len() + chunk.len() > MAX_REQUEST_BODY {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

impl MockProxy {
    /// Writes the request to the journal of the workspace and environment
    /// that answered it (requests that name no workspace go nowhere).
    fn record(&self, session: &Session, answer: &Answer, body: Option<Bytes>) {
        let Some((workspace, environment)) = &answer.place else {
            return;
        };
        if !self.state.journal.is_on() {
            return;
        }
        let request = session.req_header();
        let missed = answer.route.is_none();
        self.state.journal.record(
            *workspace,
            Entry::new(
                environment.clone(),
                request.method.as_str(),
                request.uri.path(),
                request.uri.query(),
                &request.headers,
                body.as_deref(),
                answer.header.status.as_u16(),
                answer.outcome.as_str(),
                answer.route.clone(),
                missed.then(|| answer.body.clone()),
            )
            .with_key(answer.key),
        );
    }

    async fn send(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        answer: Answer,
    ) -> Result<bool> {
        let head = session.req_header().method == http::Method::HEAD;
        ctx.outcome = Some(answer.outcome);
        // In flight until this returns: the answer is written (or failed).
        let _in_flight = answer.permit;
        if let Some(delay) = answer.delay {
            // A timer, not a thread: other requests go on meanwhile.
            tokio::time::sleep(delay).await;
        }
        match answer.fault {
            None => {}
            Some(Fault::Reset | Fault::Empty) => {
                ctx.faulted = true;
                return Err(Error::explain(
                    ErrorType::ConnectionClosed,
                    "chaos: connection closed without a response",
                ));
            }
            Some(Fault::Truncated) => {
                ctx.faulted = true;
                let half = answer.body.slice(..answer.body.len() / 2);
                session.write_response_header(answer.header, false).await?;
                session.write_response_body(Some(half), false).await?;
                session.finish_body().await.ok();
                return Err(Error::explain(
                    ErrorType::ConnectionClosed,
                    "chaos: body truncated",
                ));
            }
        }
        let body_follows = !head && !answer.body.is_empty();
        session
            .write_response_header(answer.header, !body_follows)
            .await?;
        if body_follows {
            session.write_response_body(Some(answer.body), true).await?;
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
