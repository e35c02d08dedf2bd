//! Answering one request from an environment's table: route lookup,
//! matchers, state machines, realism, templates with personas, and the
//! explained 404 and 405 when nothing matches.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use serde_json::json;
use uuid::Uuid;

use super::compile::{CompiledRoute, CompiledTemplate, Table, segments};
use super::problem::{json_head, problem};
use crate::engine::router::Lookup;
use crate::model::matcher::RequestParts;
use crate::model::realism::{Fault, Outcome as ChaosOutcome};
use crate::model::route::Method;
use crate::model::template::{Escape, RenderContext};

/// The request header that picks the persona templates read.
pub const PERSONA_HEADER: &str = "x-mockplane-persona";
/// Routes listed with their reasons when a request fails every matcher.
const NEAR_MISSES: usize = 3;

/// What answering asks of whoever runs the engine: a node keeps state
/// machines, applies latency and chaos and reads the clock; a contract
/// check serves every machine in its first state, without realism.
pub trait Effects {
    /// Whether routes' latency and chaos apply.
    fn realism(&self) -> bool;
    /// The time templates render.
    fn now(&self) -> SystemTime;
    /// Seeds the random helpers of templates without `seed=`.
    fn entropy(&self) -> u64;
    /// The current state of a machine copy of this environment.
    fn state(&self, machine: &str, key: &str) -> String;
    /// Whether a machine copy is in `state` (cheaper than [`Effects::state`]).
    fn is_in(&self, machine: &str, key: &str, state: &str) -> bool;
    /// Moves a machine copy to `state`.
    fn set_state(&self, machine: &str, key: &str, state: &str);
}

/// How a request was answered, for counters and the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Matched,
    /// A route matched and chaos answered instead.
    Chaos,
    NoRoute,
    MethodNotAllowed,
}

/// One request to an environment.
#[derive(Clone, Copy)]
pub struct Request<'a, 'r> {
    pub method: &'a http::Method,
    /// The path inside the workspace, without the query.
    pub path: &'a str,
    pub parts: &'a RequestParts<'r>,
}

/// The engine's answer: what to send and what the sender does with it.
#[derive(Debug)]
pub struct Response {
    pub outcome: Outcome,
    pub head: http::response::Parts,
    pub body: Bytes,
    /// Wait this long before answering (the route's latency).
    pub delay: Option<Duration>,
    /// Break the connection this way instead of answering normally.
    pub fault: Option<Fault>,
    /// The route that answered.
    pub route: Option<(Uuid, Arc<str>)>,
}

impl Response {
    fn new(outcome: Outcome, (head, body): (http::response::Parts, Bytes)) -> Self {
        Self {
            outcome,
            head,
            body,
            delay: None,
            fault: None,
            route: None,
        }
    }
}

/// The persona a request names; `None` when it names none. A value that
/// is not text names a persona no environment has.
pub fn requested_persona<'a>(request: &RequestParts<'a>) -> Option<&'a str> {
    request
        .headers()
        .get(PERSONA_HEADER)
        .map(|value| value.to_str().unwrap_or("\u{fffd}"))
}

/// Answers `request` from `table`. Never fails: what cannot be answered
/// is explained in the response.
pub fn answer(table: &Table, effects: &dyn Effects, request: Request<'_, '_>) -> Response {
    let Request {
        method,
        path: rest,
        parts,
    } = request;
    let route_method = Method::of_request(method);
    let in_state = |route: &CompiledRoute| match &route.state {
        Some(state) => match &state.rule.when {
            Some(when) => effects.is_in(&state.rule.machine, &state.key(parts, rest), when),
            None => true,
        },
        None => true,
    };
    match table.router.lookup_where(route_method, rest, |route| {
        route.accepts(parts) && in_state(route)
    }) {
        Lookup::Found(route) => matched(table, effects, request, route),
        Lookup::MethodNotAllowed => method_not_allowed(table, method, rest),
        Lookup::Rejected => rejected(table, effects, method, route_method, rest, parts),
        Lookup::NotFound => not_found(table, method, route_method, rest),
    }
}

fn matched(
    table: &Table,
    effects: &dyn Effects,
    Request {
        method,
        path: rest,
        parts,
    }: Request<'_, '_>,
    route: &CompiledRoute,
) -> Response {
    let Table { place, .. } = table;
    let (slug, env_name) = (&*place.workspace, &*place.environment);
    if let Some(state) = &route.state
        && let Some(next) = &state.rule.set
    {
        effects.set_state(&state.rule.machine, &state.key(parts, rest), next);
    }
    let (chaos, delay) = match &route.realism {
        Some(realism) if effects.realism() => realism.decide(),
        _ => (ChaosOutcome::Answer, None),
    };
    let mut response = match (chaos, &route.template) {
        (ChaosOutcome::Status(status), _) => Response::new(
            Outcome::Chaos,
            problem(
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
            ),
        ),
        (_, None) => Response::new(Outcome::Matched, (route.head(), route.body.clone())),
        (_, Some(template)) => match table.persona(requested_persona(parts)) {
            Err(_) => unknown_persona(table, parts),
            Ok(persona) => match render(route, template, effects, method, rest, parts, persona) {
                Ok(rendered) => Response::new(Outcome::Matched, rendered),
                Err(message) => Response::new(
                    Outcome::Matched,
                    problem(
                        500,
                        "template_failed",
                        format!(
                            "route {} of workspace '{slug}' ({env_name}): {message}",
                            route.label
                        ),
                        None,
                    ),
                ),
            },
        },
    };
    if let ChaosOutcome::Fault(fault) = chaos {
        response.outcome = Outcome::Chaos;
        response.fault = Some(fault);
    }
    response.delay = delay;
    response.route = Some((route.id, route.label.clone()));
    response
}

fn unknown_persona(table: &Table, parts: &RequestParts<'_>) -> Response {
    let asked = requested_persona(parts).unwrap_or_default();
    let names: Vec<&str> = table.personas.iter().map(|(n, _)| &**n).collect();
    let (slug, env_name) = (&*table.place.workspace, &*table.place.environment);
    Response::new(
        Outcome::NoRoute,
        problem(
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
        ),
    )
}

/// Renders a templated route for one request.
fn render(
    route: &CompiledRoute,
    template: &CompiledTemplate,
    effects: &dyn Effects,
    method: &http::Method,
    rest: &str,
    request: &RequestParts<'_>,
    persona: Option<&serde_json::Value>,
) -> Result<(http::response::Parts, Bytes), String> {
    let segments: Vec<&str> = segments(rest).collect();
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
        now: effects.now(),
        entropy: effects.entropy(),
        persona,
    };
    let body = Bytes::from(template.body.render(&context, template.escape)?);
    let (mut head, ()) = http::Response::new(()).into_parts();
    head.status = route.status;
    for (name, value) in &template.headers {
        let text = value.render(&context, Escape::None)?;
        let value = http::HeaderValue::from_str(&text).map_err(|_| {
            format!("header {name} rendered to a value that is not valid in a header")
        })?;
        head.headers.append(name.clone(), value);
    }
    head.headers
        .insert(http::header::CONTENT_LENGTH, body.len().into());
    Ok((head, body))
}

fn method_not_allowed(table: &Table, method: &http::Method, rest: &str) -> Response {
    let (slug, env_name) = (&*table.place.workspace, &*table.place.environment);
    let allowed: Vec<&str> = table
        .router
        .allowed_methods(rest)
        .into_iter()
        .map(Method::as_str)
        .collect();
    let allowed = allowed.join(", ");
    let mut response = Response::new(
        Outcome::MethodNotAllowed,
        problem(
            405,
            "method_not_allowed",
            format!("{method} is not allowed on {rest} in workspace '{slug}' ({env_name})"),
            Some(format!("allowed: {allowed}")),
        ),
    );
    // Method names are tokens, so the list is always a valid value.
    if let Ok(value) = http::HeaderValue::from_str(&allowed) {
        response.head.headers.insert(http::header::ALLOW, value);
    }
    response
}

/// A 404 for a request that reaches routes but fails their matchers or
/// state conditions, with the closest routes and why each refused it.
fn rejected(
    table: &Table,
    effects: &dyn Effects,
    method: &http::Method,
    route_method: Option<Method>,
    rest: &str,
    parts: &RequestParts<'_>,
) -> Response {
    let (slug, env_name) = (&*table.place.workspace, &*table.place.environment);
    let near: Vec<serde_json::Value> = table
        .router
        .candidates(route_method, rest, NEAR_MISSES)
        .into_iter()
        .map(|route| {
            let mut reasons = route
                .matcher
                .as_ref()
                .map(|m| m.explain(parts))
                .unwrap_or_default();
            if let Some(state) = &route.state
                && let Some(when) = &state.rule.when
            {
                let key = state.key(parts, rest);
                let now = effects.state(&state.rule.machine, &key);
                if now != *when {
                    reasons.push(format!(
                        "state machine {}{} is in '{now}', the route needs '{when}'",
                        state.rule.machine,
                        if key.is_empty() {
                            Cow::Borrowed("")
                        } else {
                            Cow::Owned(format!(" (key {key:?})"))
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
    Response::new(Outcome::NoRoute, json_head(404, &body))
}

fn not_found(
    table: &Table,
    method: &http::Method,
    route_method: Option<Method>,
    rest: &str,
) -> Response {
    let (slug, env_name) = (&*table.place.workspace, &*table.place.environment);
    let router = &table.router;
    let hint = match router.closest(route_method, rest) {
        Some((method, template)) => format!("the closest route is {method} {template}"),
        None if router.is_empty() && table.place.first => format!(
            "environment {env_name} of workspace '{slug}' has no routes yet: add some with `mockplane route add {slug} --file mocks.yaml`"
        ),
        None if router.is_empty() => format!(
            "environment {env_name} of workspace '{slug}' serves no routes yet: it serves versions deployed or promoted to it"
        ),
        None => format!("`mockplane route list {slug}` shows the workspace's routes"),
    };
    Response::new(
        Outcome::NoRoute,
        problem(
            404,
            "route_not_found",
            format!("no route of workspace '{slug}' ({env_name}) matches {method} {rest}"),
            Some(hint),
        ),
    )
}
