//! The routing table a node serves from: every workspace compiled, looked up
//! by slug. Immutable; a config update builds the next table and swaps it in
//! whole, so a request sees either the old table or the new one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use mockplane_proto::v1;
use mockplane_shared::realism::{Outcome as ChaosOutcome, Realism, Rng};
use mockplane_shared::route::Segment;
use mockplane_shared::state::{StateKey, StateRule};
use mockplane_shared::template::{Escape, Template};
use mockplane_shared::{EnvironmentConfig, RequestMatch, RequestParts, RouteDef, Router};
use pingora_http::ResponseHeader;
use uuid::Uuid;

use crate::usage::{EnvUsage, KeyUse, Usage};

/// The headers of a response, parsed once, with room for the content
/// length; routes with the same headers share one map.
pub type HeaderList = Arc<HeaderMap>;

/// A route's answer, parsed once per config change. Per request the shared
/// header map is copied (no parsing, no hashing) and given the content
/// length; the body is shared.
#[derive(Debug)]
pub struct CompiledRoute {
    pub id: Uuid,
    /// The route's name, or `METHOD template` when it has none; for reports.
    pub label: std::sync::Arc<str>,
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
                    .and_then(|i| rest.strip_prefix('/').unwrap_or(rest).split('/').nth(i))
                    .unwrap_or_default(),
            ),
        }
    }
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

impl CompiledRoute {
    /// Whether a request passes the route's matchers.
    pub fn accepts(&self, request: &mockplane_shared::RequestParts<'_>) -> bool {
        self.matcher
            .as_ref()
            .is_none_or(|matcher| matcher.matches(request))
    }

    pub fn response_header(&self) -> ResponseHeader {
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = self.status;
        parts.headers = HeaderMap::clone(&self.headers);
        parts
            .headers
            .insert(http::header::CONTENT_LENGTH, self.content_length.clone());
        ResponseHeader::from(parts)
    }
}

/// An API key of an environment, as a node checks it.
#[derive(Debug)]
pub struct CompiledKey {
    pub id: Uuid,
    /// A temporary test key: its requests are not usage.
    pub test: bool,
    /// Unix seconds from which the key is refused; 0: never.
    pub expires_at_unix: u64,
    /// When the key was last presented, for the usage report.
    pub used: Arc<KeyUse>,
}

impl CompiledKey {
    pub fn is_expired(&self, now_unix: u64) -> bool {
        self.expires_at_unix != 0 && now_unix >= self.expires_at_unix
    }
}

/// One environment of a workspace, ready to serve.
#[derive(Debug)]
pub struct CompiledEnvironment {
    pub name: Arc<str>,
    pub router: Router<CompiledRoute>,
    /// Some route matches on the body: read it before matching.
    pub needs_body: bool,
    /// The environment's API keys by the SHA-256 of their secret. Digests
    /// are uniform, so a fast hasher is safe here.
    pub keys: FastMap<[u8; 32], CompiledKey>,
    /// What the environment answered, for the usage report.
    pub usage: Arc<EnvUsage>,
    /// Personas by name, sorted; templates read them.
    pub personas: Box<[(Box<str>, serde_json::Value)]>,
}

impl CompiledEnvironment {
    /// The persona a request names, or "default" when it names none (and
    /// the environment has one). `Err` when it names one that does not
    /// exist here.
    pub fn persona(
        &self,
        requested: Option<&str>,
    ) -> Result<Option<&serde_json::Value>, UnknownPersona> {
        let wanted = requested.unwrap_or(mockplane_shared::persona::DEFAULT_PERSONA);
        match self
            .personas
            .binary_search_by(|(name, _)| (**name).cmp(wanted))
        {
            Ok(index) => Ok(Some(&self.personas[index].1)),
            Err(_) if requested.is_none() => Ok(None),
            Err(_) => Err(UnknownPersona),
        }
    }

    /// The key whose secret has this SHA-256.
    pub fn key(&self, sha256: &[u8; 32]) -> Option<&CompiledKey> {
        self.keys.get(sha256)
    }
}

#[derive(Debug)]
pub struct CompiledWorkspace {
    pub id: Uuid,
    pub slug: Box<str>,
    pub hash: String,
    /// The resource it was compiled from, kept only by a node that writes
    /// a last-known-good file (see `lkg.rs`; [`RoutingTable::keeping_resources`]).
    pub resource: Option<v1::WorkspaceResource>,
    /// In the control plane's order: the chain, then the others.
    pub environments: Box<[CompiledEnvironment]>,
    /// Index of the environment that answers requests naming none.
    pub active: usize,
    /// Changes when the workspace's state machines are reset.
    pub state_epoch: u64,
    /// Every request must present a key of the environment it reaches.
    pub require_keys: bool,
}

impl CompiledWorkspace {
    /// The environment a request names, or the active one when it names
    /// none; `None` when the named one does not exist.
    pub fn environment(&self, requested: Option<&str>) -> Option<&CompiledEnvironment> {
        match requested {
            None => self.environments.get(self.active),
            Some(name) => self.environments.iter().find(|e| &*e.name == name),
        }
    }

    pub fn active(&self) -> &str {
        self.environments.get(self.active).map_or("", |e| &e.name)
    }
}

/// A request named a persona its environment does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownPersona;

/// Why a workspace of an update was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceError {
    pub workspace_id: String,
    pub message: String,
}

impl WorkspaceError {
    fn new(workspace_id: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            workspace_id: workspace_id.into(),
            message: message.into(),
        }
    }
}

/// Response parts shared by every workspace of a table: a header map per
/// distinct header list, a value per distinct content length. Most routes
/// of most workspaces share a handful of them, which then stay in the CPU
/// caches however many workspaces the table holds.
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

/// Checks a resource end to end and compiles it. Nothing a control plane
/// sends can make this panic.
pub fn compile(
    resource: &v1::WorkspaceResource,
    interned: &mut Interned,
    usage: &Usage,
    keep_resource: bool,
) -> Result<CompiledWorkspace, String> {
    let config = mockplane_proto::resource::decode(resource)?;
    let active = config
        .environments
        .iter()
        .position(|e| e.name == config.active)
        .ok_or_else(|| format!("active environment '{}' is missing", config.active))?;
    let environments = config
        .environments
        .into_iter()
        .map(|env| {
            let name = env.name.to_string();
            compile_environment(env, interned, config.id, usage)
                .map_err(|e| format!("environment {name}: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(CompiledWorkspace {
        id: config.id,
        slug: config.slug.as_str().into(),
        hash: resource.hash.clone(),
        resource: keep_resource.then(|| resource.clone()),
        environments: environments.into(),
        active,
        state_epoch: config.state_epoch,
        require_keys: config.require_api_keys,
    })
}

/// A route's latency and chaos over its environment's: each one the route
/// sets wins, each one it leaves unset comes from the environment.
fn route_realism(route: &Realism, environment: &Realism) -> Realism {
    Realism {
        latency: route.latency.or(environment.latency),
        chaos: route.chaos.clone().or_else(|| environment.chaos.clone()),
    }
}

fn compile_environment(
    env: EnvironmentConfig,
    interned: &mut Interned,
    workspace: Uuid,
    usage: &Usage,
) -> Result<CompiledEnvironment, String> {
    let mut keys: FastMap<[u8; 32], CompiledKey> =
        FastMap::with_capacity_and_hasher(env.keys.len(), Default::default());
    for key in &env.keys {
        let compiled = CompiledKey {
            id: key.id,
            test: key.test,
            expires_at_unix: key.expires_at_unix,
            used: usage.key(key.id),
        };
        if keys.insert(key.sha256, compiled).is_some() {
            return Err(format!("API key {} has the same hash as another", key.id));
        }
    }
    let mut needs_body = false;
    let routes = env
        .routes
        .into_iter()
        .map(|route| {
            let spec = route.spec;
            let template =
                compile_template(&spec).map_err(|e| format!("route {}: {e}", route.id))?;
            needs_body |= spec.matcher.needs_body()
                || template.as_ref().is_some_and(|t| {
                    t.body.uses_body() || t.headers.iter().any(|(_, h)| h.uses_body())
                });
            let response = spec.response;
            let headers = interned
                .headers(response.headers)
                .map_err(|e| format!("route {}: {e}", route.id))?;
            let status = StatusCode::from_u16(response.status)
                .map_err(|e| format!("route {}: {e}", route.id))?;
            // A copy: a slice would keep the whole received message alive.
            let body = Bytes::copy_from_slice(&response.body);
            let label = if spec.name.is_empty() {
                format!("{} {}", spec.method, spec.path)
            } else {
                spec.name.clone()
            };
            let state_key = spec.state.as_ref().and_then(StateRule::fingerprint);
            let conditions = u16::try_from(spec.matcher.len() + usize::from(state_key.is_some()))
                .unwrap_or(u16::MAX);
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
                let param_segment = match &rule.key {
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
            let realism = route_realism(&spec.realism, &env.realism);
            Ok(RouteDef {
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
                    realism: (!realism.is_empty()).then(|| {
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
                    }),
                },
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let router = Router::build(routes).map_err(|e| e.to_string())?;
    let name: Arc<str> = env.name.as_str().into();
    let mut personas: Vec<(Box<str>, serde_json::Value)> = env
        .personas
        .into_iter()
        .map(|p| (Box::from(p.name.as_str()), p.data))
        .collect();
    personas.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(CompiledEnvironment {
        usage: usage.environment(workspace, &name),
        name,
        router,
        needs_body,
        keys,
        personas: personas.into(),
    })
}

fn compile_template(
    spec: &mockplane_shared::RouteSpec,
) -> Result<Option<Box<CompiledTemplate>>, String> {
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

/// A response header with a content length, for a response sent whole.
/// Header names are lower case already, so the header keeps no map of their
/// original case: half the memory per route, half the work per clone.
pub fn response_header(
    status: u16,
    headers: &[(String, String)],
    body_len: usize,
) -> Result<ResponseHeader, String> {
    let mut header = ResponseHeader::build_no_case(status, Some(headers.len() + 1))
        .map_err(|e| e.to_string())?;
    for (name, value) in headers {
        header
            .append_header(name.clone(), value.as_str())
            .map_err(|e| format!("header {name}: {e}"))?;
    }
    header
        .insert_header(http::header::CONTENT_LENGTH, body_len.to_string())
        .map_err(|e| e.to_string())?;
    Ok(header)
}

/// A whole config update, its chunks put together.
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub revision: u64,
    pub nonce: String,
    pub full: bool,
    pub base_revision: u64,
    pub upserts: Vec<v1::WorkspaceResource>,
    pub removed: Vec<String>,
    /// The control plane says an update that leaves nothing to serve is
    /// meant (see [`RoutingTable::empties`]).
    pub empty_is_intended: bool,
    /// With `full`: workspaces this table keeps as they are (their hash
    /// matched what the node said it serves).
    pub kept: Vec<String>,
}

/// Seeded per process, so request-chosen slugs cannot be made to collide,
/// and far cheaper than SipHash on short keys.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
pub struct RoutingTable {
    pub revision: u64,
    by_slug: FastMap<Box<str>, Arc<CompiledWorkspace>>,
    by_id: FastMap<Uuid, Arc<CompiledWorkspace>>,
    interned: Interned,
    /// Usage counters, shared by every table built from this one.
    usage: Arc<Usage>,
    /// Workspaces keep the resource they were compiled from (a node with a
    /// last-known-good file); passed on to every table built from this one.
    keep_resources: bool,
}

impl RoutingTable {
    /// An empty table whose workspaces keep their resources, for a node
    /// that writes a last-known-good file; others do not pay for the copy.
    pub fn keeping_resources() -> Self {
        Self {
            keep_resources: true,
            ..Self::default()
        }
    }

    /// The node's usage counters.
    pub fn usage(&self) -> &Arc<Usage> {
        &self.usage
    }

    pub fn workspace(&self, slug: &str) -> Option<&CompiledWorkspace> {
        self.by_slug.get(slug).map(Arc::as_ref)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn contains(&self, id: &Uuid) -> bool {
        self.by_id.contains_key(id)
    }

    /// Whether `update` would leave this non-empty table with nothing to
    /// serve without the control plane saying so: a control plane pointed
    /// at an empty or wrong database must not take the fleet down.
    pub fn empties(&self, update: &Update) -> bool {
        if self.by_id.is_empty()
            || update.empty_is_intended
            || !update.upserts.is_empty()
            || !update.kept.is_empty()
        {
            return false;
        }
        update.full
            || self.by_id.keys().all(|id| {
                update
                    .removed
                    .iter()
                    .any(|r| Uuid::try_parse(r).ok() == Some(*id))
            })
    }

    /// Every workspace's content hash, by id, for the Hello.
    pub fn hashes(&self) -> std::collections::HashMap<String, String> {
        self.by_id
            .iter()
            .map(|(id, w)| (id.to_string(), w.hash.clone()))
            .collect()
    }

    /// The resources of every workspace served, for the last-known-good
    /// file; none unless the table keeps them.
    pub fn resources(&self) -> impl Iterator<Item = &v1::WorkspaceResource> {
        self.by_id.values().filter_map(|w| w.resource.as_ref())
    }

    /// Every workspace's state epoch, for the node's state machines.
    pub fn state_epochs(&self) -> impl Iterator<Item = (Uuid, u64)> + '_ {
        self.by_id.iter().map(|(id, w)| (*id, w.state_epoch))
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The table after `update`. Workspaces that fail to compile keep what
    /// they had (or stay absent) and are reported; the rest of the update
    /// applies. The caller checks that a delta's base is this table.
    pub fn apply(&self, update: &Update) -> (RoutingTable, Vec<WorkspaceError>) {
        let mut errors = Vec::new();
        // A full update starts afresh, which also drops what no route uses.
        let (mut by_id, mut interned) = if update.full {
            (FastMap::default(), Interned::default())
        } else {
            (self.by_id.clone(), self.interned.clone())
        };
        if update.full {
            for raw in &update.kept {
                match Uuid::try_parse(raw)
                    .ok()
                    .and_then(|id| self.by_id.get_key_value(&id))
                {
                    Some((id, workspace)) => {
                        by_id.insert(*id, workspace.clone());
                    }
                    None => errors.push(WorkspaceError::new(
                        raw.as_str(),
                        "told to keep a workspace this node does not serve",
                    )),
                }
            }
        }
        for raw in &update.removed {
            match Uuid::try_parse(raw) {
                Ok(id) => {
                    by_id.remove(&id);
                }
                Err(_) => errors.push(WorkspaceError::new(
                    raw.as_str(),
                    "removed id is not a UUID",
                )),
            }
        }
        for resource in &update.upserts {
            let Ok(id) = Uuid::try_parse(&resource.workspace_id) else {
                errors.push(WorkspaceError::new(
                    resource.workspace_id.as_str(),
                    "workspace id is not a UUID",
                ));
                continue;
            };
            match compile(resource, &mut interned, &self.usage, self.keep_resources) {
                Ok(compiled) => {
                    by_id.insert(id, Arc::new(compiled));
                }
                Err(message) => {
                    // On a full update, keep serving the previous version.
                    if let Some(previous) = self.by_id.get(&id) {
                        by_id.insert(id, previous.clone());
                    }
                    errors.push(WorkspaceError::new(resource.workspace_id.as_str(), message));
                }
            }
        }

        let mut by_slug: FastMap<Box<str>, Arc<CompiledWorkspace>> =
            FastMap::with_capacity_and_hasher(by_id.len(), Default::default());
        let mut clashes = Vec::new();
        for workspace in by_id.values() {
            if let Some(other) = by_slug.insert(workspace.slug.clone(), workspace.clone()) {
                clashes.push((workspace.id, other.id, workspace.slug.clone()));
            }
        }
        for (a, b, slug) in clashes {
            // The control plane keeps slugs unique; if it ever sends a clash,
            // serve neither rather than pick one at random.
            by_slug.remove(&slug);
            for id in [a, b] {
                errors.push(WorkspaceError::new(
                    id.to_string(),
                    format!("slug '{slug}' is used by two workspaces"),
                ));
            }
        }
        (
            RoutingTable {
                revision: update.revision,
                by_slug,
                by_id,
                interned,
                usage: self.usage.clone(),
                keep_resources: self.keep_resources,
            },
            errors,
        )
    }
}

#[cfg(test)]
mod tests {
    use mockplane_shared::{ConfigRoute, ResponseSpec, RouteSpec, Slug, WorkspaceConfig};

    use super::*;

    fn resource(id: Uuid, slug: &str, paths: &[&str]) -> v1::WorkspaceResource {
        let config = WorkspaceConfig::single(
            id,
            Slug::parse(slug).unwrap(),
            paths
                .iter()
                .map(|path| ConfigRoute {
                    id: Uuid::new_v4(),
                    spec: RouteSpec::parse("", "GET", path, || {
                        ResponseSpec::parse(200, vec![], Bytes::from_static(b"ok"))
                    })
                    .unwrap(),
                })
                .collect(),
        );
        mockplane_proto::resource::encode(&config, 1)
    }

    fn update(
        revision: u64,
        full: bool,
        upserts: Vec<v1::WorkspaceResource>,
        removed: Vec<Uuid>,
    ) -> Update {
        Update {
            revision,
            full,
            upserts,
            removed: removed.iter().map(Uuid::to_string).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_full_update_keeps_what_it_lists_as_kept() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let (table, _) = RoutingTable::default().apply(&update(
            1,
            true,
            vec![resource(a, "a", &["/x"]), resource(b, "b", &[])],
            vec![],
        ));
        let hashes = table.hashes();
        assert_eq!(hashes.len(), 2);
        assert_eq!(hashes[&a.to_string()], table.workspace("a").unwrap().hash);
        let kept = Update {
            kept: vec![a.to_string()],
            ..update(9, true, vec![resource(c, "c", &[])], vec![])
        };
        assert!(!table.empties(&Update {
            upserts: Vec::new(),
            ..kept.clone()
        }));
        let (next, errors) = table.apply(&kept);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(next.revision, 9);
        assert!(
            std::ptr::eq(next.workspace("a").unwrap(), table.workspace("a").unwrap()),
            "the same compiled workspace, not compiled again"
        );
        assert!(next.workspace("b").is_none(), "not kept, not sent: gone");
        assert!(next.workspace("c").is_some());
        // Told to keep what it does not hold: named, the rest applies.
        let (_, errors) = table.apply(&Update {
            kept: vec![c.to_string()],
            ..update(10, true, vec![], vec![])
        });
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("does not serve"), "{errors:?}");
    }

    #[test]
    fn full_then_delta() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let table = RoutingTable::default();
        let (table, errors) = table.apply(&update(
            1,
            true,
            vec![resource(a, "a", &["/x"]), resource(b, "b", &[])],
            vec![],
        ));
        assert!(errors.is_empty());
        assert_eq!((table.revision, table.len()), (1, 2));
        assert!(table.workspace("a").is_some());

        // Rename a to c, remove b.
        let (table, errors) =
            table.apply(&update(2, false, vec![resource(a, "c", &["/y"])], vec![b]));
        assert!(errors.is_empty());
        assert!(table.workspace("a").is_none() && table.workspace("b").is_none());
        let c = table.workspace("c").unwrap();
        assert_eq!(c.environment(None).unwrap().router.len(), 1);
        assert_eq!(table.len(), 1);

        // A full update replaces everything.
        let (table, _) = table.apply(&update(3, true, vec![resource(b, "b", &[])], vec![]));
        assert!(table.workspace("c").is_none());
        assert!(table.workspace("b").is_some());
    }

    #[test]
    fn an_update_that_empties_the_table_needs_the_control_plane_to_mean_it() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let empty = RoutingTable::default();
        assert!(
            !empty.empties(&update(1, true, vec![], vec![])),
            "nothing to lose"
        );
        let (table, _) = empty.apply(&update(
            1,
            true,
            vec![resource(a, "a", &[]), resource(b, "b", &[])],
            vec![],
        ));
        assert!(table.empties(&update(2, true, vec![], vec![])));
        assert!(table.empties(&update(2, false, vec![], vec![a, b])));
        assert!(
            !table.empties(&update(2, false, vec![], vec![a])),
            "b stays"
        );
        assert!(!table.empties(&update(2, true, vec![resource(a, "a", &[])], vec![])));
        let meant = Update {
            empty_is_intended: true,
            ..update(2, true, vec![], vec![])
        };
        assert!(!table.empties(&meant));
    }

    #[test]
    fn a_bad_workspace_keeps_its_old_config_and_the_rest_applies() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (table, _) = RoutingTable::default().apply(&update(
            1,
            true,
            vec![resource(a, "a", &["/old"])],
            vec![],
        ));
        let mut bad = resource(a, "a", &["/new"]);
        bad.hash = "0".repeat(64);
        let (table, errors) =
            table.apply(&update(2, true, vec![bad, resource(b, "b", &[])], vec![]));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].workspace_id, a.to_string());
        assert!(errors[0].message.contains("hash mismatch"));
        assert_eq!(table.revision, 2);
        let a_table = table.workspace("a").unwrap();
        assert!(matches!(
            a_table
                .environment(None)
                .unwrap()
                .router
                .lookup(Some(mockplane_shared::Method::Get), "/old"),
            mockplane_shared::Lookup::Found(_)
        ));
        assert!(table.workspace("b").is_some());
    }

    #[test]
    fn garbage_is_reported_not_panicked_on() {
        let id = Uuid::new_v4();
        let cases = [
            v1::WorkspaceResource {
                workspace_id: "not-a-uuid".into(),
                ..Default::default()
            },
            v1::WorkspaceResource {
                workspace_id: id.to_string(),
                config: Bytes::from_static(b"\xff\xff\xff\xff"),
                ..Default::default()
            },
            {
                let mut other = resource(Uuid::new_v4(), "x", &[]);
                other.workspace_id = id.to_string();
                other
            },
        ];
        for case in cases {
            let (table, errors) =
                RoutingTable::default().apply(&update(1, false, vec![case], vec![]));
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(table.is_empty());
        }
    }

    #[test]
    fn clashing_slugs_serve_neither() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (table, errors) = RoutingTable::default().apply(&update(
            1,
            true,
            vec![resource(a, "same", &[]), resource(b, "same", &[])],
            vec![],
        ));
        assert_eq!(errors.len(), 2);
        assert!(table.workspace("same").is_none());
    }
}
