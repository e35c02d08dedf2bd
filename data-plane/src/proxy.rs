//! The request path. Everything happens in `request_filter`, which answers
//! and returns `Ok(true)`: there is no upstream. The routing table is loaded
//! lock-free, the request matched on the precompiled trie, and the answer's
//! prebuilt header and shared body written out. Nothing here locks, touches
//! a database or calls the control plane.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use mockplane_shared::keys::{KEY_HEADER, digest};
use mockplane_shared::path::split_workspace_path;
use mockplane_shared::realism::{Fault, Outcome as ChaosOutcome};
use mockplane_shared::template::{Escape, RenderContext};
use mockplane_shared::{Lookup, Method, RequestParts};
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use serde_json::json;

use crate::journal::Entry;
use crate::machines::Machines;
use crate::metrics::Outcome;
use crate::state::NodeState;
use crate::table::{
    CompiledEnvironment, CompiledKey, CompiledRoute, CompiledTemplate, CompiledWorkspace,
    RoutingTable, response_header,
};
use crate::usage::unix_now;

/// The request header that picks an environment of the workspace.
pub const ENV_HEADER: &str = "x-mockplane-env";
/// The request header that picks the persona templates read.
pub const PERSONA_HEADER: &str = "x-mockplane-persona";

/// The environment a request names; `None` when it names none. A value
/// that is not text names an environment no workspace has.
fn requested_environment<'a>(request: &RequestParts<'a>) -> Option<&'a str> {
    request
        .headers()
        .get(ENV_HEADER)
        .map(|value| value.to_str().unwrap_or("\u{fffd}"))
}

fn requested_persona<'a>(request: &RequestParts<'a>) -> Option<&'a str> {
    request
        .headers()
        .get(PERSONA_HEADER)
        .map(|value| value.to_str().unwrap_or("\u{fffd}"))
}

/// Why a templated route did not render.
enum Rendered {
    /// The request named a persona the workspace does not have: this answer.
    UnknownPersona(Box<Result<Answer, String>>),
    Failed(String),
}

fn unknown_persona(
    env: &crate::table::CompiledEnvironment,
    slug: &str,
    request: &RequestParts<'_>,
) -> Rendered {
    let asked = requested_persona(request).unwrap_or_default();
    let names: Vec<&str> = env.personas.iter().map(|(n, _)| &**n).collect();
    let env_name = &*env.name;
    Rendered::UnknownPersona(Box::new(problem(
        Outcome::NoRoute,
        404,
        "persona_not_found",
        format!("workspace '{slug}' has no persona '{asked}' in {env_name}"),
        Some(if names.is_empty() {
            format!(
                "{env_name} serves no personas: `mockplane persona create` makes one in the first environment, `mockplane promote --persona` moves it on"
            )
        } else {
            format!("its personas in {env_name}: {}", names.join(", "))
        }),
    )))
}

/// Routes listed with their reasons when a request fails every matcher.
const NEAR_MISSES: usize = 3;
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
}

/// Matches a request against the table. Pure, so the whole routing
/// decision is testable without a socket. Fails only if an error response
/// cannot be built, which constant statuses and headers rule out.
pub fn answer(
    table: &RoutingTable,
    method: &http::Method,
    path: &str,
    request: &RequestParts<'_>,
) -> Result<Answer, String> {
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
) -> Result<Answer, String> {
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
    let key = match check_key(workspace, env, slug, requested.is_some(), request) {
        Ok(key) => key,
        Err(refused) => {
            return (*refused).map(|mut answer| {
                answer.place = Some((workspace.id, env.name.clone()));
                answer
            });
        }
    };
    env.usage.count(key.is_some_and(|k| k.test));
    let router = &env.router;
    let env_name = &*env.name;
    let route_method = Method::of_request(method);
    let in_state = |route: &CompiledRoute| match &route.state {
        Some(state) => match &state.rule.when {
            Some(when) => machines.is(
                workspace.id,
                env_name,
                &state.rule.machine,
                &state.key(request, rest),
                when,
            ),
            None => true,
        },
        None => true,
    };
    let answered = match router.lookup_where(route_method, rest, |route| {
        route.accepts(request) && in_state(route)
    }) {
        Lookup::Found(route) => {
            if let Some(state) = &route.state
                && let Some(next) = &state.rule.set
            {
                machines.set(
                    workspace.id,
                    env_name,
                    &state.rule.machine,
                    &state.key(request, rest),
                    next,
                );
            }
            let (chaos, delay) = match &route.realism {
                Some(realism) => realism.decide(),
                None => (ChaosOutcome::Answer, None),
            };
            let mut answer = match (chaos, &route.template) {
                (ChaosOutcome::Status(status), _) => problem(
                    Outcome::Chaos,
                    status,
                    "chaos",
                    format!(
                        "route {} of workspace '{slug}' ({env_name}) answered with an injected {status}",
                        route.label
                    ),
                    Some(
                        "the chaos profile of the route or of its environment sets the rate of these errors"
                            .into(),
                    ),
                )?,
                (_, None) => Answer {
                    outcome: Outcome::Matched,
                    header: Box::new(route.response_header()),
                    body: route.body.clone(),
                    delay: None,
                    fault: None,
                    place: None,
                    route: None,
                    key: None,
                },
                (_, Some(template)) => match env
                    .persona(requested_persona(request))
                    .map_err(|_| unknown_persona(env, slug, request))
                    .and_then(|persona| {
                        render(route, template, method, rest, request, persona)
                            .map_err(Rendered::Failed)
                    })
                {
                    Ok(answer) => answer,
                    Err(Rendered::UnknownPersona(answer)) => (*answer)?,
                    Err(Rendered::Failed(message)) => problem(
                        Outcome::Matched,
                        500,
                        "template_failed",
                        format!(
                            "route {} of workspace '{slug}' ({env_name}): {message}",
                            route.label
                        ),
                        None,
                    )?,
                },
            };
            if let ChaosOutcome::Fault(fault) = chaos {
                answer.outcome = Outcome::Chaos;
                answer.fault = Some(fault);
            }
            answer.delay = delay;
            answer.route = Some((route.id, route.label.clone()));
            Ok(answer)
        }
        Lookup::MethodNotAllowed => {
            let allowed: Vec<&str> = router
                .allowed_methods(rest)
                .into_iter()
                .map(Method::as_str)
                .collect();
            let mut answer = problem(
                Outcome::MethodNotAllowed,
                405,
                "method_not_allowed",
                format!("{method} is not allowed on {rest} in workspace '{slug}' ({env_name})"),
                Some(format!("allowed: {}", allowed.join(", "))),
            )?;
            answer
                .header
                .insert_header(http::header::ALLOW, allowed.join(", "))
                .map_err(|e| e.to_string())?;
            Ok(answer)
        }
        Lookup::Rejected => {
            let near: Vec<serde_json::Value> = router
                .candidates(route_method, rest, NEAR_MISSES)
                .into_iter()
                .map(|route| {
                    let mut reasons = route
                        .matcher
                        .as_ref()
                        .map(|m| m.explain(request))
                        .unwrap_or_default();
                    if let Some(state) = &route.state
                        && let Some(when) = &state.rule.when
                    {
                        let key = state.key(request, rest);
                        let now = machines.get(workspace.id, env_name, &state.rule.machine, &key);
                        if now != *when {
                            reasons.push(format!(
                                "state machine {}{} is in '{now}', the route needs '{when}'",
                                state.rule.machine,
                                if key.is_empty() {
                                    String::new()
                                } else {
                                    format!(" (key {key:?})")
                                }
                            ));
                        }
                    }
                    json!({ "route": route.id, "name": &*route.label, "reasons": reasons })
                })
                .collect();
            let hint = near
                .first()
                .and_then(|first| {
                    let reason = first["reasons"].get(0)?.as_str()?;
                    Some(format!("closest: {}: {reason}", first["name"].as_str()?))
                })
                .unwrap_or_else(|| "see near_misses".into());
            let body = json!({ "error": {
                "code": "no_route_matched",
                "message": format!(
                    "routes of workspace '{slug}' ({env_name}) have {method} {rest}, but the request fails their matchers"
                ),
                "hint": hint,
                "near_misses": near,
            }});
            json_answer(Outcome::NoRoute, 404, &body)
        }
        Lookup::NotFound => {
            let hint = match router.closest(route_method, rest) {
                Some((method, template)) => format!("the closest route is {method} {template}"),
                None if router.is_empty() && env.name == workspace.environments[0].name => format!(
                    "environment {env_name} of workspace '{slug}' has no routes yet: add some with `mockplane route add {slug} --file mocks.yaml`"
                ),
                None if router.is_empty() => format!(
                    "environment {env_name} of workspace '{slug}' serves no routes yet: it serves versions deployed or promoted to it"
                ),
                None => format!("`mockplane route list {slug}` shows the workspace's routes"),
            };
            problem(
                Outcome::NoRoute,
                404,
                "route_not_found",
                format!("no route of workspace '{slug}' ({env_name}) matches {method} {rest}"),
                Some(hint),
            )
        }
    };
    answered.map(|mut answer| {
        answer.place = Some((workspace.id, env.name.clone()));
        answer.key = key.map(|k| (k.id, k.test));
        answer
    })
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
fn refused(code: &str, message: String, hint: String) -> Result<Answer, String> {
    let mut answer = problem(Outcome::Unauthorized, 401, code, message, Some(hint))?;
    answer
        .header
        .insert_header(
            http::header::WWW_AUTHENTICATE,
            format!("ApiKey header=\"{KEY_HEADER}\""),
        )
        .map_err(|e| e.to_string())?;
    Ok(answer)
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
fn stranger(slug: &str, request: &RequestParts<'_>) -> Result<Answer, String> {
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
) -> Result<Option<&'t CompiledKey>, Box<Result<Answer, String>>> {
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
                "it is a key of environment '{other}': a key opens only the environment it was made for; use a key of '{env_name}' or send {}: {other}",
                crate::proxy::ENV_HEADER
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

/// Renders a templated route for one request.
fn render(
    route: &CompiledRoute,
    template: &CompiledTemplate,
    method: &http::Method,
    rest: &str,
    request: &RequestParts<'_>,
    persona: Option<&serde_json::Value>,
) -> Result<Answer, String> {
    let segments: Vec<&str> = rest.strip_prefix('/').unwrap_or(rest).split('/').collect();
    let params: Vec<(&str, &str)> = template
        .params
        .iter()
        .filter_map(|(name, index)| segments.get(*index).map(|value| (&**name, *value)))
        .collect();
    let context = RenderContext {
        method: method.as_str(),
        path: rest,
        params: &params,
        request,
        now: SystemTime::now(),
        entropy: entropy(),
        persona,
    };
    let body = Bytes::from(template.body.render(&context, template.escape)?);
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = route.status;
    for (name, value) in &template.headers {
        let text = value.render(&context, Escape::None)?;
        let value = http::HeaderValue::from_str(&text).map_err(|_| {
            format!("header {name} rendered to a value that is not valid in a header")
        })?;
        parts.headers.append(name.clone(), value);
    }
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, body.len().into());
    Ok(Answer {
        outcome: Outcome::Matched,
        header: Box::new(ResponseHeader::from(parts)),
        body,
        delay: None,
        fault: None,
        place: None,
        route: None,
        key: None,
    })
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
    json_answer(outcome, status, &body)
}

/// A JSON response.
fn json_answer(outcome: Outcome, status: u16, body: &serde_json::Value) -> Result<Answer, String> {
    let body = Bytes::from(body.to_string());
    let content_type = [("content-type".to_owned(), "application/json".to_owned())];
    let header = response_header(status, &content_type, body.len())?;
    Ok(Answer {
        outcome,
        header: Box::new(header),
        body,
        delay: None,
        fault: None,
        place: None,
        route: None,
        key: None,
    })
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
                .is_some_and(|env| env.needs_body);
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
        let answered = match answered {
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
        let answer = answered.map_err(|e| Error::explain(ErrorType::InternalError, e))?;
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
mod tests {
    use mockplane_shared::{ConfigRoute, ResponseSpec, RouteSpec, Slug, WorkspaceConfig};
    use uuid::Uuid;

    use super::*;
    use crate::table::Update;

    fn table() -> RoutingTable {
        let config = WorkspaceConfig::single(
            Uuid::new_v4(),
            Slug::parse("demo").unwrap(),
            vec![ConfigRoute {
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
        );
        let update = Update {
            revision: 1,
            full: true,
            upserts: vec![mockplane_proto::resource::encode(&config, 1)],
            ..Default::default()
        };
        RoutingTable::default().apply(&update).0
    }

    fn ask(table: &RoutingTable, method: &http::Method, path: &str) -> Result<Answer, String> {
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        let headers = http::HeaderMap::new();
        answer(
            table,
            method,
            path,
            &RequestParts::new(query, &headers, b""),
        )
    }

    fn error_code(answer: &Answer) -> String {
        let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        body["error"]["code"].as_str().unwrap().to_owned()
    }

    #[test]
    fn routes_by_workspace_and_route() {
        let table = table();
        let hit = ask(&table, &http::Method::GET, "/w/demo/users/7").unwrap();
        assert_eq!(hit.outcome, Outcome::Matched);
        assert_eq!(hit.header.status, 200);
        assert_eq!(&hit.body[..], b"{\"id\":1}");
        assert_eq!(hit.header.headers["content-length"], "8");
        let long = ask(&table, &http::Method::GET, "/workspace/demo/users/7").unwrap();
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
            let miss = ask(&table, &http::Method::GET, path).unwrap();
            assert_eq!(miss.outcome, outcome, "{path}");
            assert_eq!(miss.header.status, status);
            assert_eq!(error_code(&miss), code);
            assert_eq!(miss.header.headers["content-type"], "application/json");
        }
        let not_allowed = ask(&table, &http::Method::POST, "/w/demo/users/7").unwrap();
        assert_eq!(not_allowed.header.status, 405);
        assert_eq!(not_allowed.header.headers["allow"], "GET");
        let upper = ask(&table, &http::Method::GET, "/w/Demo/users/7").unwrap();
        let body: serde_json::Value = serde_json::from_slice(&upper.body).unwrap();
        assert!(body["error"]["hint"].as_str().unwrap().contains("'demo'"));
        let near = ask(&table, &http::Method::GET, "/w/demo/users/7/x").unwrap();
        let body: serde_json::Value = serde_json::from_slice(&near.body).unwrap();
        assert_eq!(
            body["error"]["hint"],
            "the closest route is GET /users/{id}"
        );
    }

    #[test]
    fn matchers_choose_the_route_and_misses_explain_why() {
        let route = |path: &str, method: &str, matcher: serde_json::Value, body: &'static str| {
            ConfigRoute {
                id: Uuid::new_v4(),
                spec: RouteSpec::parse("", method, path, || {
                    ResponseSpec::parse(200, vec![], Bytes::from_static(body.as_bytes()))
                })
                .and_then(|spec| spec.matching(serde_json::from_value(matcher).unwrap(), 0))
                .unwrap(),
            }
        };
        let config = WorkspaceConfig::single(
            Uuid::new_v4(),
            Slug::parse("shop").unwrap(),
            vec![
                route("/users/{id:int}", "GET", json!({}), "plain"),
                route(
                    "/users/{id:int}",
                    "GET",
                    json!({ "headers": [{ "name": "x-tenant", "equals": "acme" }] }),
                    "acme",
                ),
                route(
                    "/orders",
                    "POST",
                    json!({ "body": [{ "jsonPath": "$.kind", "equals": "rush" }] }),
                    "rush",
                ),
            ],
        );
        let update = Update {
            revision: 1,
            full: true,
            upserts: vec![mockplane_proto::resource::encode(&config, 1)],
            ..Default::default()
        };
        let table = RoutingTable::default().apply(&update).0;
        assert!(
            table
                .workspace("shop")
                .unwrap()
                .environment(None)
                .unwrap()
                .needs_body
        );

        let mut headers = http::HeaderMap::new();
        let get = |headers: &http::HeaderMap, path: &str| {
            answer(
                &table,
                &http::Method::GET,
                path,
                &RequestParts::new(None, headers, b""),
            )
            .unwrap()
        };
        assert_eq!(&get(&headers, "/w/shop/users/1").body[..], b"plain");
        headers.insert("x-tenant", http::HeaderValue::from_static("acme"));
        assert_eq!(&get(&headers, "/w/shop/users/1").body[..], b"acme");
        assert_eq!(get(&headers, "/w/shop/users/x").outcome, Outcome::NoRoute);

        let post = |body: &[u8]| {
            answer(
                &table,
                &http::Method::POST,
                "/w/shop/orders",
                &RequestParts::new(None, &headers, body),
            )
            .unwrap()
        };
        assert_eq!(&post(br#"{"kind":"rush"}"#).body[..], b"rush");
        let miss = post(br#"{"kind":"slow"}"#);
        assert_eq!(miss.header.status, 404);
        assert_eq!(
            miss.header.headers["content-length"],
            miss.body.len().to_string().as_str()
        );
        let body: serde_json::Value = serde_json::from_slice(&miss.body).unwrap();
        assert_eq!(body["error"]["code"], "no_route_matched");
        let near = &body["error"]["near_misses"][0];
        assert_eq!(near["name"], "POST /orders");
        assert_eq!(
            near["reasons"][0],
            "body JSON at $.kind must equal \"rush\""
        );
    }

    #[test]
    fn templates_render_per_request() {
        let spec = RouteSpec::parse("user", "GET", "/users/{id:int}", || {
            ResponseSpec::parse(
                200,
                vec![
                    ("content-type".into(), "application/json".into()),
                    ("x-user".into(), "u-{{request.params.id}}".into()),
                ],
                Bytes::from_static(
                    br#"{"id":{{request.params.id}},"q":"{{request.query.q}}","name":"{{faker.name seed=request.params.id}}"}"#,
                ),
            )
        })
        .and_then(|spec| spec.templated(true))
        .unwrap();
        let config = WorkspaceConfig::single(
            Uuid::new_v4(),
            Slug::parse("t").unwrap(),
            vec![ConfigRoute {
                id: Uuid::new_v4(),
                spec,
            }],
        );
        let update = Update {
            revision: 1,
            full: true,
            upserts: vec![mockplane_proto::resource::encode(&config, 1)],
            ..Default::default()
        };
        let table = RoutingTable::default().apply(&update).0;
        assert!(
            !table
                .workspace("t")
                .unwrap()
                .environment(None)
                .unwrap()
                .needs_body
        );
        let reply = ask(&table, &http::Method::GET, "/w/t/users/42?q=%22x%22").unwrap();
        assert_eq!(reply.header.status, 200);
        assert_eq!(reply.header.headers["x-user"], "u-42");
        assert_eq!(
            reply.header.headers["content-length"],
            reply.body.len().to_string().as_str()
        );
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["id"], 42);
        assert_eq!(body["q"], "\"x\"");
        let again = ask(&table, &http::Method::GET, "/w/t/users/42").unwrap();
        let again: serde_json::Value = serde_json::from_slice(&again.body).unwrap();
        assert_eq!(again["name"], body["name"], "seeded by the id");
    }

    fn table_of(configs: &[WorkspaceConfig]) -> RoutingTable {
        let update = Update {
            revision: 1,
            full: true,
            upserts: configs
                .iter()
                .map(|c| mockplane_proto::resource::encode(c, 1))
                .collect(),
            ..Default::default()
        };
        let (table, errors) = RoutingTable::default().apply(&update);
        assert!(errors.is_empty(), "{errors:?}");
        table
    }

    fn plain(path: &str, body: String) -> ConfigRoute {
        ConfigRoute {
            id: Uuid::new_v4(),
            spec: RouteSpec::parse("", "GET", path, || {
                ResponseSpec::parse(200, vec![], Bytes::from(body))
            })
            .unwrap(),
        }
    }

    fn ask_env(table: &RoutingTable, path: &str, env: Option<&str>) -> Answer {
        let mut headers = http::HeaderMap::new();
        if let Some(env) = env {
            headers.insert(ENV_HEADER, http::HeaderValue::from_str(env).unwrap());
        }
        answer(
            table,
            &http::Method::GET,
            path,
            &RequestParts::new(None, &headers, b""),
        )
        .unwrap()
    }

    fn three_environments() -> WorkspaceConfig {
        use mockplane_shared::EnvironmentConfig;
        let env = |name: &str, routes| EnvironmentConfig::plain(Slug::parse(name).unwrap(), routes);
        WorkspaceConfig {
            id: Uuid::new_v4(),
            slug: Slug::parse("shop").unwrap(),
            active: Slug::parse("test").unwrap(),
            environments: vec![
                env(
                    "dev",
                    vec![plain("/a", "dev".into()), plain("/new", "dev".into())],
                ),
                env("test", vec![plain("/a", "test".into())]),
                env("prod", vec![]),
            ],
            state_epoch: 0,
            require_api_keys: false,
        }
    }

    fn ask_with_key(
        table: &RoutingTable,
        path: &str,
        env: Option<&str>,
        key: Option<&str>,
    ) -> Answer {
        let mut headers = http::HeaderMap::new();
        if let Some(env) = env {
            headers.insert(ENV_HEADER, http::HeaderValue::from_str(env).unwrap());
        }
        if let Some(key) = key {
            headers.insert(KEY_HEADER, http::HeaderValue::from_str(key).unwrap());
        }
        answer(
            table,
            &http::Method::GET,
            path,
            &RequestParts::new(None, &headers, b""),
        )
        .unwrap()
    }

    /// `shop` with dev, test (active) and prod; a key in dev, a test key in
    /// prod, an expired key in prod.
    fn keyed(require: bool) -> (WorkspaceConfig, [Uuid; 3]) {
        use mockplane_shared::keys::ApiKeyConfig;
        let mut config = three_environments();
        config.require_api_keys = require;
        let ids = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
        let key = |id, secret: &str, test, expires_at_unix| ApiKeyConfig {
            id,
            sha256: digest(secret.as_bytes()),
            test,
            expires_at_unix,
        };
        config.environments[0]
            .keys
            .push(key(ids[0], "mpk_dev", false, 0));
        config.environments[2].keys.extend([
            key(ids[1], "mpk_test_key", true, unix_now() + 3600),
            key(ids[2], "mpk_old", false, unix_now() - 90),
        ]);
        config.environments[2]
            .routes
            .push(plain("/a", "prod".into()));
        (config, ids)
    }

    #[test]
    fn keys_open_their_own_environment_only() {
        let (config, [dev, test_key, old]) = keyed(true);
        let table = table_of(&[config]);
        let refused = |answer: &Answer, code: &str| {
            assert_eq!(answer.header.status, 401, "{code}");
            assert_eq!(answer.outcome, Outcome::Unauthorized);
            assert_eq!(error_code(answer), code);
            assert_eq!(
                answer.header.headers["www-authenticate"],
                "ApiKey header=\"x-mockplane-key\""
            );
            assert!(answer.place.is_some(), "refusals go to the journal");
            assert!(answer.key.is_none());
            let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
            body["error"].clone()
        };
        let missing = ask_with_key(&table, "/w/shop/a", Some("dev"), None);
        let error = refused(&missing, "api_key_required");
        assert!(error["message"].as_str().unwrap().contains("'dev'"));

        let opened = ask_with_key(&table, "/w/shop/a", Some("dev"), Some("mpk_dev"));
        assert_eq!(opened.header.status, 200);
        assert_eq!(&opened.body[..], b"dev");
        assert_eq!(opened.key, Some((dev, false)));

        // A dev key is not a prod key, and says where it belongs.
        let elsewhere = ask_with_key(&table, "/w/shop/a", Some("prod"), Some("mpk_dev"));
        let error = refused(&elsewhere, "api_key_invalid");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("no key of environment 'prod'"),
            "{error}"
        );
        assert!(
            error["hint"]
                .as_str()
                .unwrap()
                .contains("key of environment 'dev'"),
            "{error}"
        );
        // Without the env header the active environment (test) answers,
        // and the dev key does not open it either.
        refused(
            &ask_with_key(&table, "/w/shop/a", None, Some("mpk_dev")),
            "api_key_invalid",
        );
        let unknown = ask_with_key(&table, "/w/shop/a", Some("dev"), Some("mpk_nope"));
        let error = refused(&unknown, "api_key_invalid");
        assert!(error["hint"].as_str().unwrap().contains("revoked"));

        let expired = ask_with_key(&table, "/w/shop/a", Some("prod"), Some("mpk_old"));
        let error = refused(&expired, "api_key_expired");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains(&old.to_string()),
            "{error}"
        );

        let tested = ask_with_key(&table, "/w/shop/a", Some("prod"), Some("mpk_test_key"));
        assert_eq!(tested.header.status, 200);
        assert_eq!(tested.key, Some((test_key, true)));

        // An unknown environment is a 404 naming the environments only to
        // a caller with a key of the workspace.
        let nowhere = ask_with_key(&table, "/w/shop/a", Some("qa"), Some("mpk_dev"));
        assert_eq!(error_code(&nowhere), "environment_not_found");
        assert!(String::from_utf8_lossy(&nowhere.body).contains("dev, test, prod"));
    }

    #[test]
    fn a_protected_workspace_names_no_environment_to_a_caller_without_a_key() {
        let (config, _) = keyed(true);
        let table = table_of(&[config]);
        for (env, key, code) in [
            (Some("nope"), None, "api_key_required"),
            (Some("nope"), Some("mpk_nope"), "api_key_invalid"),
            (None, None, "api_key_required"),
            (None, Some("mpk_nope"), "api_key_invalid"),
        ] {
            let answer = ask_with_key(&table, "/w/shop/a", env, key);
            assert_eq!(answer.header.status, 401, "{env:?} {key:?}");
            assert_eq!(error_code(&answer), code);
            let body = String::from_utf8_lossy(&answer.body).into_owned();
            for name in ["dev", "test", "prod"] {
                assert!(!body.contains(name), "{env:?} {key:?} names {name}: {body}");
            }
        }
    }

    #[test]
    fn keys_are_optional_unless_required_but_a_bad_one_is_refused() {
        let (config, _) = keyed(false);
        let table = table_of(&[config]);
        let open = ask_with_key(&table, "/w/shop/a", Some("dev"), None);
        assert_eq!(open.header.status, 200);
        assert_eq!(open.key, None);
        let bad = ask_with_key(&table, "/w/shop/a", Some("dev"), Some("mpk_nope"));
        assert_eq!(bad.header.status, 401);
        assert_eq!(error_code(&bad), "api_key_invalid");
        let good = ask_with_key(&table, "/w/shop/a", Some("dev"), Some("mpk_dev"));
        assert_eq!(good.header.status, 200);
    }

    #[test]
    fn usage_counts_test_keys_apart_and_refusals_not_at_all() {
        let (config, [dev, _, _]) = keyed(false);
        let id = config.id;
        let table = table_of(&[config]);
        for _ in 0..3 {
            ask_with_key(&table, "/w/shop/a", Some("prod"), None);
        }
        ask_with_key(&table, "/w/shop/missing", Some("prod"), None);
        for _ in 0..2 {
            ask_with_key(&table, "/w/shop/a", Some("prod"), Some("mpk_test_key"));
        }
        ask_with_key(&table, "/w/shop/a", Some("prod"), Some("mpk_old"));
        ask_with_key(&table, "/w/shop/a", Some("prod"), Some("mpk_nope"));
        ask_with_key(&table, "/w/shop/a", Some("dev"), Some("mpk_dev"));
        let pending = table.usage().report(unix_now()).unwrap();
        let count = |env: &str| {
            pending
                .report
                .counts
                .iter()
                .find(|c| c.environment == env && c.workspace_id == id.to_string())
                .map(|c| (c.requests, c.test_requests))
        };
        assert_eq!(count("prod"), Some((4, 2)), "404s count, refusals do not");
        assert_eq!(count("dev"), Some((1, 0)));
        assert_eq!(count("test"), None);
        assert!(
            pending
                .report
                .key_uses
                .iter()
                .any(|u| u.key_id == dev.to_string() && u.last_used_unix > 0)
        );
        // Counters survive a config change: the next table shares them.
        let (next, _) = table.apply(&Update {
            revision: 2,
            full: true,
            upserts: vec![mockplane_proto::resource::encode(&keyed(false).0, 2)],
            ..Default::default()
        });
        assert!(Arc::ptr_eq(next.usage(), table.usage()));
    }

    #[test]
    fn environments_are_chosen_by_header_and_unknown_ones_are_404() {
        let table = table_of(&[three_environments()]);
        let body = |a: &Answer| String::from_utf8(a.body.to_vec()).unwrap();
        assert_eq!(
            body(&ask_env(&table, "/w/shop/a", None)),
            "test",
            "the active one"
        );
        assert_eq!(body(&ask_env(&table, "/w/shop/a", Some("dev"))), "dev");
        // What dev has, test does not serve.
        let isolated = ask_env(&table, "/w/shop/new", None);
        assert_eq!(isolated.header.status, 404);
        assert_eq!(error_code(&isolated), "route_not_found");
        let empty = ask_env(&table, "/w/shop/a", Some("prod"));
        let hint: serde_json::Value = serde_json::from_slice(&empty.body).unwrap();
        assert!(
            hint["error"]["hint"]
                .as_str()
                .unwrap()
                .contains("serves no routes yet"),
            "{hint}"
        );
        for (asked, hint) in [
            (
                "staging",
                "has dev, test, prod; without the x-mockplane-env header, test answers",
            ),
            ("PROD", "lower case: try 'prod'"),
        ] {
            let unknown = ask_env(&table, "/w/shop/a", Some(asked));
            assert_eq!(unknown.header.status, 404);
            assert_eq!(unknown.outcome, Outcome::UnknownEnvironment);
            assert_eq!(error_code(&unknown), "environment_not_found");
            let body: serde_json::Value = serde_json::from_slice(&unknown.body).unwrap();
            assert!(
                body["error"]["message"].as_str().unwrap().contains(asked),
                "{body}"
            );
            assert!(
                body["error"]["hint"].as_str().unwrap().contains(hint),
                "{body}"
            );
        }
    }

    #[test]
    fn environment_realism_applies_unless_the_route_sets_its_own() {
        use mockplane_shared::realism::{Chaos, Realism};
        let mut config = three_environments();
        let always = |status: u16| Chaos {
            rate: 1.0,
            statuses: [(status, 1)].into(),
            ..Default::default()
        };
        config.environments[1].realism = Realism {
            latency: None,
            chaos: Some(always(418)),
        };
        let mut calm = plain("/calm", "calm".into());
        calm.spec.realism.chaos = Some(Chaos::default());
        config.environments[1].routes.push(calm);
        let table = table_of(&[config]);
        let chaotic = ask_env(&table, "/w/shop/a", Some("test"));
        assert_eq!(
            (chaotic.outcome, chaotic.header.status.as_u16()),
            (Outcome::Chaos, 418)
        );
        let calm = ask_env(&table, "/w/shop/calm", Some("test"));
        assert_eq!(
            (calm.outcome, calm.header.status.as_u16()),
            (Outcome::Matched, 200)
        );
        let dev = ask_env(&table, "/w/shop/a", Some("dev"));
        assert_eq!(dev.header.status, 200, "dev has no chaos");
    }

    #[test]
    fn templates_read_the_persona_the_request_names() {
        use mockplane_shared::persona::PersonaConfig;
        let spec = RouteSpec::parse("me", "GET", "/me", || {
            ResponseSpec::parse(
                200,
                vec![],
                Bytes::from_static(b"{{persona.user.name default=\"nobody\"}}"),
            )
        })
        .and_then(|spec| spec.templated(true))
        .unwrap();
        let mut config = WorkspaceConfig::single(
            Uuid::new_v4(),
            Slug::parse("p").unwrap(),
            vec![
                ConfigRoute {
                    id: Uuid::new_v4(),
                    spec,
                },
                plain("/plain", "plain".into()),
            ],
        );
        config.environments[0].personas = ["default", "ada"]
            .map(|name| PersonaConfig {
                name: Slug::parse(name).unwrap(),
                data: serde_json::json!({ "user": { "name": format!("{name} user") } }),
            })
            .to_vec();
        let table = table_of(&[config]);
        let with = |persona: Option<&str>, path: &str| {
            let mut headers = http::HeaderMap::new();
            if let Some(persona) = persona {
                headers.insert(
                    PERSONA_HEADER,
                    http::HeaderValue::from_str(persona).unwrap(),
                );
            }
            answer(
                &table,
                &http::Method::GET,
                path,
                &RequestParts::new(None, &headers, b""),
            )
            .unwrap()
        };
        let body = |a: Answer| String::from_utf8(a.body.to_vec()).unwrap();
        assert_eq!(body(with(None, "/w/p/me")), "default user");
        assert_eq!(body(with(Some("ada"), "/w/p/me")), "ada user");
        let unknown = with(Some("bob"), "/w/p/me");
        assert_eq!(unknown.header.status, 404);
        assert_eq!(error_code(&unknown), "persona_not_found");
        assert!(String::from_utf8_lossy(&unknown.body).contains("ada, default"));
        assert_eq!(
            body(with(Some("bob"), "/w/p/plain")),
            "plain",
            "routes without templates read no persona"
        );
    }

    #[test]
    fn stateful_routes_follow_their_machine_per_key() {
        use mockplane_shared::state::RawStateRule;
        let stateful = |method: &str,
                        path: &str,
                        body: &'static str,
                        when: Option<&str>,
                        set: Option<&str>| {
            let spec = RouteSpec::parse("", method, path, || {
                ResponseSpec::parse(200, vec![], Bytes::from_static(body.as_bytes()))
            })
            .and_then(|spec| {
                spec.with_state(Some(&RawStateRule {
                    machine: "cart".into(),
                    when: when.map(Into::into),
                    set: set.map(Into::into),
                    key: Some("header:x-run".into()),
                }))
            })
            .unwrap();
            ConfigRoute {
                id: Uuid::new_v4(),
                spec,
            }
        };
        let config = WorkspaceConfig::single(
            Uuid::new_v4(),
            Slug::parse("shop").unwrap(),
            vec![
                stateful("GET", "/cart", "empty", Some("started"), None),
                stateful("GET", "/cart", "one item", Some("full"), None),
                stateful("POST", "/cart", "added", None, Some("full")),
                stateful("DELETE", "/cart", "cleared", Some("full"), Some("started")),
            ],
        );
        let table = table_of(&[config]);
        let machines = Machines::default();
        let send = |method: http::Method, run: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("x-run", http::HeaderValue::from_str(run).unwrap());
            answer_with(
                &table,
                &machines,
                &method,
                "/w/shop/cart",
                &RequestParts::new(None, &headers, b""),
            )
            .unwrap()
        };
        let body = |a: Answer| String::from_utf8(a.body.to_vec()).unwrap();
        assert_eq!(body(send(http::Method::GET, "a")), "empty");
        assert_eq!(body(send(http::Method::POST, "a")), "added");
        assert_eq!(body(send(http::Method::GET, "a")), "one item");
        assert_eq!(
            body(send(http::Method::GET, "b")),
            "empty",
            "run b has its own cart"
        );
        let refused = send(http::Method::DELETE, "b");
        assert_eq!(error_code(&refused), "no_route_matched");
        assert!(
            String::from_utf8_lossy(&refused.body).contains(
                "state machine cart (key \\\"b\\\") is in 'started', the route needs 'full'"
            ),
            "{}",
            String::from_utf8_lossy(&refused.body)
        );
        assert_eq!(body(send(http::Method::DELETE, "a")), "cleared");
        assert_eq!(body(send(http::Method::GET, "a")), "empty");
    }

    mod isolation {
        use proptest::prelude::*;

        use super::*;

        const SLUGS: [&str; 3] = ["alpha", "beta", "gamma"];
        const ENVS: [&str; 4] = ["dev", "test", "prod", "sandbox"];
        const PATHS: [&str; 4] = ["/a", "/b", "/c/d", "/items/{id}"];

        /// Per workspace: which environments it has (at least one), which
        /// is active, and which paths each serves.
        fn workspace() -> impl Strategy<Value = (Vec<(usize, Vec<bool>)>, usize)> {
            (
                proptest::sample::subsequence((0..ENVS.len()).collect::<Vec<_>>(), 1..=ENVS.len()),
                any::<prop::sample::Index>(),
                proptest::collection::vec(
                    proptest::collection::vec(any::<bool>(), PATHS.len()),
                    ENVS.len(),
                ),
            )
                .prop_map(|(envs, active, paths)| {
                    let active = active.index(envs.len());
                    (
                        envs.into_iter().map(|e| (e, paths[e].clone())).collect(),
                        active,
                    )
                })
        }

        fn request() -> impl Strategy<Value = (usize, Option<usize>, usize)> {
            (
                0..SLUGS.len() + 1,
                proptest::option::of(0..ENVS.len()),
                0..PATHS.len(),
            )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Random workspaces, environments and requests: an answer
            /// always comes from the workspace and environment the request
            /// asked for (or the active one), and from nowhere else.
            #[test]
            fn no_request_gets_another_environments_answer(
                spaces in proptest::collection::vec(workspace(), SLUGS.len()),
                requests in proptest::collection::vec(request(), 1..40),
            ) {
                let configs: Vec<WorkspaceConfig> = spaces
                    .iter()
                    .enumerate()
                    .map(|(w, (envs, active))| WorkspaceConfig {
                        id: Uuid::new_v4(),
                        slug: Slug::parse(SLUGS[w]).unwrap(),
                        active: Slug::parse(ENVS[envs[*active].0]).unwrap(),
                        environments: envs
                            .iter()
                            .map(|(e, paths)| mockplane_shared::EnvironmentConfig::plain(
                                Slug::parse(ENVS[*e]).unwrap(),
                                PATHS
                                    .iter()
                                    .zip(paths)
                                    .filter(|(_, on)| **on)
                                    .map(|(path, _)| plain(path, format!("{}/{}/{path}", SLUGS[w], ENVS[*e])))
                                    .collect(),
                            ))
                            .collect(),
                        state_epoch: 0,
                        require_api_keys: false,
                    })
                    .collect();
                let table = table_of(&configs);
                for (w, env, p) in requests {
                    let slug = SLUGS.get(w).copied().unwrap_or("nobody");
                    let request_path = PATHS[p].replace("{id}", "7");
                    let got = ask_env(&table, &format!("/w/{slug}{request_path}"), env.map(|e| ENVS[e]));
                    let Some((envs, active)) = spaces.get(w) else {
                        prop_assert_eq!(got.outcome, Outcome::UnknownWorkspace);
                        continue;
                    };
                    let chosen = match env {
                        None => Some(&envs[*active]),
                        Some(e) => envs.iter().find(|(have, _)| *have == e),
                    };
                    let Some((e, paths)) = chosen else {
                        prop_assert_eq!(got.outcome, Outcome::UnknownEnvironment);
                        continue;
                    };
                    if paths[p] {
                        prop_assert_eq!(got.outcome, Outcome::Matched);
                        prop_assert_eq!(
                            String::from_utf8(got.body.to_vec()).unwrap(),
                            format!("{slug}/{}/{}", ENVS[*e], PATHS[p])
                        );
                    } else {
                        prop_assert_ne!(got.outcome, Outcome::Matched);
                        prop_assert_eq!(got.header.status, 404);
                    }
                }
            }
        }
    }
}
