//! An environment's table: its routes compiled once per config change —
//! headers parsed, templates parsed, realism merged, routes ranked — so a
//! request costs a lookup and a copy of shared parts.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use uuid::Uuid;

use crate::engine::router::{RouteDef, Router};
use crate::model::config::ConfigRoute;
use crate::model::matcher::{RequestMatch, RequestParts};
use crate::model::persona::PersonaConfig;
use crate::model::realism::{Outcome as ChaosOutcome, Realism, Rng};
use crate::model::route::{RouteSpec, Segment};
use crate::model::state::{StateKey, StateRule};
use crate::model::template::{Escape, Template};

/// Seeded per process, so request-chosen keys cannot be made to collide,
/// and far cheaper than SipHash on short keys.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The headers of a response, parsed once, with room for the content
/// length; routes with the same headers share one map.
pub type HeaderList = Arc<HeaderMap>;

/// Where a table serves: its workspace and environment, named in the
/// answers it gives when nothing matches.
#[derive(Debug, Clone)]
pub struct Place {
    pub workspace: Arc<str>,
    pub environment: Arc<str>,
    /// The first environment of the chain (it serves working copies).
    pub first: bool,
}

/// What one environment of a workspace serves, ready to answer requests.
#[derive(Debug)]
pub struct Table {
    pub place: Place,
    pub router: Router<CompiledRoute>,
    /// Some route matches on or renders the body: read it before answering.
    pub needs_body: bool,
    /// Personas by name, sorted; templates read them.
    pub personas: Box<[(Box<str>, serde_json::Value)]>,
}

/// A request named a persona its environment does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownPersona;

impl Table {
    /// The persona a request names, or "default" when it names none (and
    /// the environment has one). `Err` when it names one that does not
    /// exist here.
    pub fn persona(
        &self,
        requested: Option<&str>,
    ) -> Result<Option<&serde_json::Value>, UnknownPersona> {
        let wanted = requested.unwrap_or(crate::model::persona::DEFAULT_PERSONA);
        match self
            .personas
            .binary_search_by(|(name, _)| (**name).cmp(wanted))
        {
            Ok(index) => Ok(Some(&self.personas[index].1)),
            Err(_) if requested.is_none() => Ok(None),
            Err(_) => Err(UnknownPersona),
        }
    }
}

/// A route's answer, parsed once per config change. Per request the shared
/// header map is copied (no parsing, no hashing) and given the content
/// length; the body is shared.
#[derive(Debug)]
pub struct CompiledRoute {
    pub id: Uuid,
    /// The route's name, or `METHOD template` when it has none; for reports.
    pub label: Arc<str>,
    /// `None` when the route matches on method and path alone.
    pub matcher: Option<Box<RequestMatch>>,
    pub status: StatusCode,
    pub headers: HeaderList,
    pub content_length: HeaderValue,
    pub body: Bytes,
    /// Set when the response is rendered per request.
    pub template: Option<Box<CompiledTemplate>>,
    /// Set when the route has latency or chaos.
    pub realism: Option<Box<CompiledRealism>>,
    /// Set when the route needs or moves a state machine.
    pub state: Option<Box<CompiledState>>,
}

impl CompiledRoute {
    /// Whether a request passes the route's matchers.
    pub fn accepts(&self, request: &RequestParts<'_>) -> bool {
        self.matcher
            .as_ref()
            .is_none_or(|matcher| matcher.matches(request))
    }

    /// The head of the route's fixed answer.
    pub fn head(&self) -> http::response::Parts {
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = self.status;
        parts.headers = HeaderMap::clone(&self.headers);
        parts
            .headers
            .insert(http::header::CONTENT_LENGTH, self.content_length.clone());
        parts
    }
}

/// A route's state rule, with where its key comes from.
#[derive(Debug)]
pub struct CompiledState {
    pub rule: StateRule,
    /// For `param:` keys: the index of the parameter's path segment.
    pub param_segment: Option<usize>,
}

impl CompiledState {
    /// The key of the machine copy a request uses ("" when the rule has no
    /// key or the request lacks the value).
    pub fn key<'r>(
        &self,
        request: &'r RequestParts<'_>,
        rest: &'r str,
    ) -> std::borrow::Cow<'r, str> {
        use std::borrow::Cow;
        match &self.rule.key {
            None => Cow::Borrowed(""),
            Some(StateKey::Header(name)) => Cow::Owned(
                request
                    .header_values(name)
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            Some(StateKey::Query(name)) => Cow::Owned(
                request
                    .query_values(name)
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            Some(StateKey::Param(_)) => Cow::Borrowed(
                self.param_segment
                    .and_then(|i| segments(rest).nth(i))
                    .unwrap_or_default(),
            ),
        }
    }
}

/// The segments of a path inside a workspace, as route templates count
/// them.
pub fn segments(rest: &str) -> std::str::Split<'_, char> {
    rest.strip_prefix('/').unwrap_or(rest).split('/')
}

/// A route's latency and chaos, with the position in its random stream.
#[derive(Debug)]
pub struct CompiledRealism {
    pub realism: Realism,
    /// The chaos seed, or one derived from the route id: decisions are a
    /// function of (seed, request number on this node).
    pub seed: u64,
    pub requests: AtomicU64,
}

impl CompiledRealism {
    /// Decides one request: chaos first, then the delay.
    pub fn decide(&self) -> (ChaosOutcome, Option<std::time::Duration>) {
        let index = self.requests.fetch_add(1, Ordering::Relaxed);
        let mut rng = Rng::at(self.seed, index);
        let outcome = self
            .realism
            .chaos
            .as_ref()
            .map_or(ChaosOutcome::Answer, |chaos| chaos.decide(&mut rng));
        let delay = self.realism.latency.as_ref().map(|l| l.sample(&mut rng));
        (outcome, delay)
    }
}

/// A templated response, parsed once.
#[derive(Debug)]
pub struct CompiledTemplate {
    pub body: Template,
    /// Header names and value templates, in order.
    pub headers: Vec<(HeaderName, Template)>,
    pub escape: Escape,
    /// Each path parameter's name and the index of its segment.
    pub params: Box<[(Box<str>, usize)]>,
}

/// Response parts shared by every table built with it: a header map per
/// distinct header list, a value per distinct content length. Most routes
/// of most workspaces share a handful of them, which then stay in the CPU
/// caches however many workspaces a node serves.
#[derive(Debug, Default, Clone)]
pub struct Interned {
    headers: FastMap<Vec<(String, String)>, HeaderList>,
    lengths: FastMap<usize, HeaderValue>,
}

impl Interned {
    fn headers(&mut self, list: Vec<(String, String)>) -> Result<HeaderList, String> {
        if let Some(found) = self.headers.get(&list) {
            return Ok(found.clone());
        }
        let parsed = parse_headers(&list)?;
        self.headers.insert(list, parsed.clone());
        Ok(parsed)
    }

    fn length(&mut self, length: usize) -> HeaderValue {
        self.lengths
            .entry(length)
            .or_insert_with(|| HeaderValue::from(length))
            .clone()
    }
}

/// A route's latency and chaos over its environment's: each one the route
/// sets wins, each one it leaves unset comes from the environment.
fn route_realism(route: &Realism, environment: &Realism) -> Realism {
    Realism {
        latency: route.latency.or(environment.latency),
        chaos: route.chaos.clone().or_else(|| environment.chaos.clone()),
    }
}

/// Compiles what one environment serves. Nothing in `routes` can make
/// this panic; the error names the route that cannot be served.
pub fn compile(
    place: Place,
    routes: Vec<ConfigRoute>,
    realism: &Realism,
    personas: Vec<PersonaConfig>,
    interned: &mut Interned,
) -> Result<Table, String> {
    let mut needs_body = false;
    let routes = routes
        .into_iter()
        .map(|route| {
            let id = route.id;
            let (def, body) =
                compile_route(route, realism, interned).map_err(|e| format!("route {id}: {e}"))?;
            needs_body |= body;
            Ok(def)
        })
        .collect::<Result<Vec<_>, String>>()?;
    let router = Router::build(routes).map_err(|e| e.to_string())?;
    let mut personas: Vec<(Box<str>, serde_json::Value)> = personas
        .into_iter()
        .map(|p| (Box::from(p.name.as_str()), p.data))
        .collect();
    personas.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Table {
        place,
        router,
        needs_body,
        personas: personas.into(),
    })
}

/// One route, ranked for the router, and whether it reads the body.
fn compile_route(
    route: ConfigRoute,
    environment: &Realism,
    interned: &mut Interned,
) -> Result<(RouteDef<CompiledRoute>, bool), String> {
    let spec = route.spec;
    let template = compile_template(&spec)?;
    let needs_body = spec.matcher.needs_body()
        || template
            .as_ref()
            .is_some_and(|t| t.body.uses_body() || t.headers.iter().any(|(_, h)| h.uses_body()));
    let label = if spec.name.is_empty() {
        format!("{} {}", spec.method, spec.path)
    } else {
        spec.name.clone()
    };
    let response = spec.response;
    let headers = interned.headers(response.headers)?;
    let status = StatusCode::from_u16(response.status).map_err(|e| e.to_string())?;
    // A copy: a slice would keep the whole received message alive.
    let body = Bytes::copy_from_slice(&response.body);
    let state_key = spec.state.as_ref().and_then(StateRule::fingerprint);
    let conditions =
        u16::try_from(spec.matcher.len() + usize::from(state_key.is_some())).unwrap_or(u16::MAX);
    let (mut key, matcher) = if spec.matcher.is_empty() {
        (String::new(), None)
    } else {
        (spec.matcher.fingerprint(), Some(Box::new(spec.matcher)))
    };
    if let Some(state_key) = state_key {
        key.push_str(" s");
        key.push_str(&state_key);
    }
    let state = spec.state.map(|rule| {
        let param_segment =
            match &rule.key {
                Some(StateKey::Param(name)) => spec.path.segments().iter().position(
                    |segment| matches!(segment, Segment::Param { name: n, .. } if n == name),
                ),
                _ => None,
            };
        Box::new(CompiledState {
            rule,
            param_segment,
        })
    });
    let realism = route_realism(&spec.realism, environment);
    let realism = (!realism.is_empty()).then(|| {
        let seed = realism
            .chaos
            .as_ref()
            .and_then(|c| c.seed)
            .unwrap_or_else(|| route.id.as_u64_pair().0);
        Box::new(CompiledRealism {
            realism,
            seed,
            requests: AtomicU64::new(0),
        })
    });
    let def = RouteDef {
        method: spec.method,
        template: spec.path,
        priority: spec.priority,
        conditions,
        key,
        value: CompiledRoute {
            id: route.id,
            label: label.into(),
            matcher,
            status,
            headers,
            content_length: interned.length(body.len()),
            body,
            template,
            state,
            realism,
        },
    };
    Ok((def, needs_body))
}

fn compile_template(spec: &RouteSpec) -> Result<Option<Box<CompiledTemplate>>, String> {
    let Some((body, values)) = spec.templates().map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let headers = spec
        .response
        .headers
        .iter()
        .zip(values)
        .map(|((name, _), value)| {
            HeaderName::from_bytes(name.as_bytes())
                .map(|name| (name, value))
                .map_err(|e| format!("header {name}: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let json = spec
        .response
        .headers
        .iter()
        .any(|(name, value)| name == "content-type" && value.contains("json"));
    let params = spec
        .path
        .segments()
        .iter()
        .enumerate()
        .filter_map(|(index, segment)| match segment {
            Segment::Param { name, .. } => Some((Box::from(name.as_str()), index)),
            Segment::Literal(_) => None,
        })
        .collect();
    Ok(Some(Box::new(CompiledTemplate {
        body,
        headers,
        escape: if json { Escape::Json } else { Escape::None },
        params,
    })))
}

fn parse_headers(headers: &[(String, String)]) -> Result<HeaderList, String> {
    let mut map = HeaderMap::with_capacity(headers.len() + 1);
    for (name, value) in headers {
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("header {name}: {e}"))?;
        let value = HeaderValue::from_str(value).map_err(|e| format!("header {name}: {e}"))?;
        map.append(name, value);
    }
    Ok(Arc::new(map))
}
