//! What the CLI prints: a readable table by default, or JSON for scripts.
//! Both come from the same views, so they always agree.

use mockplane_proto::v1;
use mockplane_shared::{EnvSettings, ValidationMode};
use serde::Serialize;
use serde_json::Value;

/// Writes to standard output. When the reader has gone (`mockplane … |
/// head`), the program ends quietly instead of panicking as `print!` does.
pub fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(error) = out.write_fmt(args).and_then(|()| out.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {error}");
        std::process::exit(1);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Serialize)]
pub struct WorkspaceView {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub routes: u32,
    /// The environment that answers requests without an `x-mockplane-env`
    /// header.
    pub active_env: String,
    /// The promotion chain: `dev → test → prod`.
    pub chain: String,
    /// Whether a promotion may skip steps of the chain.
    pub allow_skips: bool,
    /// The settings every environment inherits, in settings-file form.
    pub env_defaults: EnvSettings,
    /// Whether every request to the workspace's mocks must present an API
    /// key of the environment it reaches (`x-mockplane-key`).
    pub require_api_keys: bool,
    pub etag: String,
    pub created: String,
    pub updated: String,
}

impl From<&v1::Workspace> for WorkspaceView {
    fn from(w: &v1::Workspace) -> Self {
        Self {
            id: w.id.clone(),
            slug: w.slug.clone(),
            name: w.name.clone(),
            description: w.description.clone(),
            routes: w.route_count,
            active_env: w.active_environment.clone(),
            chain: w.promotion_chain.join(" → "),
            allow_skips: w.allow_promotion_skips,
            env_defaults: settings(w.environment_defaults.as_ref()),
            require_api_keys: w.require_api_keys,
            etag: w.etag.clone(),
            created: time(w.create_time.as_ref()),
            updated: time(w.update_time.as_ref()),
        }
    }
}

#[derive(Serialize)]
pub struct RouteView {
    pub id: String,
    pub name: String,
    pub method: String,
    pub path: String,
    /// The scenario whose working copy (or version) holds the route.
    pub scenario: String,
    /// The matchers in mock-file form; absent when the route has none.
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub matcher: Option<mockplane_shared::RequestMatch>,
    pub priority: u32,
    /// Latency and chaos in mock-file form; absent when the route has none.
    #[serde(flatten)]
    pub realism: mockplane_shared::model::realism::Realism,
    /// The state machine the route needs or moves, in mock-file form;
    /// absent when the route is stateless.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<mockplane_shared::model::state::RawStateRule>,
    pub status: u32,
    pub headers: Vec<[String; 2]>,
    /// The body as text when it is UTF-8, else `base64:` and its encoding.
    pub body: String,
    pub etag: String,
}

impl From<&v1::Route> for RouteView {
    fn from(r: &v1::Route) -> Self {
        let response = r.response.clone().unwrap_or_default();
        let body = match String::from_utf8(response.body) {
            Ok(text) => text,
            Err(bytes) => {
                use base64::Engine as _;
                format!(
                    "base64:{}",
                    base64::engine::general_purpose::STANDARD.encode(bytes.into_bytes())
                )
            }
        };
        Self {
            id: r.id.clone(),
            name: r.name.clone(),
            method: r.method.clone(),
            path: r.path.clone(),
            scenario: r.scenario.clone(),
            matcher: mockplane_proto::convert::parse_request_match(r.request_match.as_ref())
                .ok()
                .filter(|m| !m.is_empty()),
            priority: r.priority,
            realism: mockplane_proto::convert::parse_realism(r.latency.as_ref(), r.chaos.as_ref())
                .unwrap_or_default(),
            state: mockplane_proto::convert::raw_state(r.state.as_ref()),
            status: response.status,
            headers: response
                .headers
                .into_iter()
                .map(|h| [h.name, h.value])
                .collect(),
            body,
            etag: r.etag.clone(),
        }
    }
}

/// A scenario: what it holds, and what each environment after the first
/// serves of it (`deployed` in short for tables, `deployments` in full).
#[derive(Serialize)]
pub struct ScenarioView {
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    /// Every pillar the tags name.
    pub pillars: Vec<String>,
    /// Routes in the working copy.
    pub routes: u32,
    /// The newest version's number; null (`-`) when there is none.
    pub version: Option<u32>,
    /// What environments serve, in short: `test v1, prod v1`.
    pub deployed: String,
    pub deployments: Vec<DeploymentView>,
    pub etag: String,
    pub created: String,
    pub updated: String,
}

impl From<&v1::Scenario> for ScenarioView {
    fn from(s: &v1::Scenario) -> Self {
        Self {
            name: s.name.clone(),
            description: s.description.clone(),
            tags: s.tags.clone(),
            pillars: s.pillars.clone(),
            routes: s.route_count,
            version: (s.latest_version > 0).then_some(s.latest_version),
            deployed: s
                .deployments
                .iter()
                .map(|d| format!("{} v{}", d.environment, d.version))
                .collect::<Vec<_>>()
                .join(", "),
            deployments: s.deployments.iter().map(DeploymentView::from).collect(),
            etag: s.etag.clone(),
            created: time(s.create_time.as_ref()),
            updated: time(s.update_time.as_ref()),
        }
    }
}

/// A version of a scenario serving in an environment.
#[derive(Serialize)]
pub struct DeploymentView {
    pub environment: String,
    pub scenario: String,
    pub version: u32,
    pub deployed: String,
}

impl From<&v1::Deployment> for DeploymentView {
    fn from(d: &v1::Deployment) -> Self {
        Self {
            environment: d.environment.clone(),
            scenario: d.scenario.clone(),
            version: d.version,
            deployed: time(d.deploy_time.as_ref()),
        }
    }
}

/// A frozen version of a scenario (its routes are not shown; `scenario
/// export --version` writes them).
#[derive(Serialize)]
pub struct VersionView {
    pub scenario: String,
    pub version: u32,
    pub routes: u32,
    pub note: String,
    pub created: String,
    /// sha256 of the routes' content, ids left out.
    pub hash: String,
}

impl From<&v1::ScenarioVersion> for VersionView {
    fn from(v: &v1::ScenarioVersion) -> Self {
        Self {
            scenario: v.scenario.clone(),
            version: v.number,
            routes: v.route_count,
            note: v.note.clone(),
            created: time(v.create_time.as_ref()),
            hash: v.content_hash.clone(),
        }
    }
}

/// A persona: its JSON object (as JSON, not as text).
#[derive(Serialize)]
pub struct PersonaView {
    pub name: String,
    pub version: u32,
    /// What the environments after the first serve: `test: v1`.
    pub served: Vec<String>,
    pub data: Value,
    pub etag: String,
    pub created: String,
    pub updated: String,
}

impl From<&v1::Persona> for PersonaView {
    fn from(p: &v1::Persona) -> Self {
        Self {
            name: p.name.clone(),
            version: p.version,
            served: p
                .deployments
                .iter()
                .map(|d| format!("{}: v{}", d.environment, d.version))
                .collect(),
            data: serde_json::from_str(&p.data).unwrap_or_else(|_| Value::from(p.data.clone())),
            etag: p.etag.clone(),
            created: time(p.create_time.as_ref()),
            updated: time(p.update_time.as_ref()),
        }
    }
}

/// A request a node answered: what came in, what answered, and for a miss
/// the node's error (with its near misses) as JSON.
#[derive(Serialize)]
pub struct JournalView {
    /// When the node received it, to the millisecond.
    pub time: String,
    pub env: String,
    pub method: String,
    /// The whole path, /w/{slug}/... included.
    pub path: String,
    pub query: String,
    pub status: u32,
    /// matched, chaos, no_route, method_not_allowed…
    pub outcome: String,
    /// The route that answered (its name, else its id), or for a miss the
    /// error code the node answered with.
    pub route: String,
    pub route_id: String,
    pub route_name: String,
    pub headers: String,
    pub body: String,
    /// For requests no route answered: code, message, hint, near_misses.
    pub miss: Option<Value>,
    pub node: String,
}

impl From<&v1::JournalEntry> for JournalView {
    fn from(e: &v1::JournalEntry) -> Self {
        let miss = (!e.miss.is_empty())
            .then(|| serde_json::from_str(&e.miss).unwrap_or_else(|_| Value::from(e.miss.clone())));
        let code = miss
            .as_ref()
            .and_then(|m| m["code"].as_str())
            .map(str::to_owned);
        let route = if !e.route_name.is_empty() {
            e.route_name.clone()
        } else if !e.route_id.is_empty() {
            e.route_id.clone()
        } else {
            code.unwrap_or_default()
        };
        Self {
            time: e
                .time
                .as_ref()
                .and_then(|t| {
                    chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
                })
                .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string())
                .unwrap_or_default(),
            env: e.environment.clone(),
            method: e.method.clone(),
            path: e.path.clone(),
            query: e.query.clone(),
            status: e.status,
            outcome: e.outcome.clone(),
            route,
            route_id: e.route_id.clone(),
            route_name: e.route_name.clone(),
            headers: e.headers.clone(),
            body: e.body.clone(),
            miss,
            node: e.node_id.clone(),
        }
    }
}

/// An environment: where it stands, and its settings in force summarised
/// for tables, with `settings` (as set) and `effective` (in force) in full
/// for scripts.
#[derive(Serialize)]
pub struct EnvironmentView {
    pub name: String,
    /// Place on the promotion chain, 1 first; null (`-`) off the chain.
    pub chain: Option<u32>,
    /// Answers requests that name no environment.
    pub active: bool,
    /// Serves the working copies: the first environment of the chain.
    pub working_copies: bool,
    /// The reality level in force.
    pub reality: u8,
    /// The latency in force, in short: `normal 80±25ms`.
    pub latency: Option<String>,
    /// The chaos in force, in short: `1% 500,503`.
    pub chaos: Option<String>,
    /// The drift budget in force: a number, or `"unlimited"`.
    pub drift_budget: Value,
    /// The validation mode in force.
    pub validation: String,
    /// Whether acting on the environment needs a stated reason.
    pub reason: bool,
    /// What each node admits, in short: `100/s burst 200, 50 at once`;
    /// null (`-`) when nothing is limited.
    pub limits: Option<String>,
    /// The overrides set on the environment, in settings-file form; what
    /// is left out inherits.
    pub settings: EnvSettings,
    /// The settings in force, in settings-file form (a drift budget left
    /// out is unlimited).
    pub effective: EnvSettings,
    pub etag: String,
    pub created: String,
    pub updated: String,
}

impl From<&v1::Environment> for EnvironmentView {
    fn from(e: &v1::Environment) -> Self {
        let effective = settings(e.effective.as_ref());
        Self {
            name: e.name.clone(),
            chain: (e.chain_position > 0).then_some(e.chain_position),
            active: e.active,
            working_copies: e.working_copies,
            reality: effective
                .reality
                .unwrap_or(mockplane_shared::model::environment::DEFAULT_REALITY),
            latency: effective.latency.as_ref().map(latency_summary),
            chaos: effective.chaos.as_ref().map(chaos_summary),
            drift_budget: effective
                .drift_budget
                .map_or_else(|| Value::from("unlimited"), Value::from),
            validation: effective
                .validation
                .unwrap_or(ValidationMode::Warn)
                .as_str()
                .to_owned(),
            reason: effective.reason_required.unwrap_or(false),
            limits: effective
                .limits
                .filter(|l| !l.is_unlimited())
                .as_ref()
                .map(limits_summary),
            settings: settings(e.settings.as_ref()),
            effective,
            etag: e.etag.clone(),
            created: time(e.create_time.as_ref()),
            updated: time(e.update_time.as_ref()),
        }
    }
}

/// A user or service account.
#[derive(Serialize)]
pub struct PrincipalView {
    pub id: String,
    /// `user` or `service`.
    pub kind: String,
    /// Users only.
    pub email: String,
    pub name: String,
    /// `owner`, `admin` or `member`.
    pub org_role: String,
    pub disabled: bool,
    pub etag: String,
    pub created: String,
    pub updated: String,
}

impl From<&v1::Principal> for PrincipalView {
    fn from(p: &v1::Principal) -> Self {
        Self {
            id: p.id.clone(),
            kind: p.kind.clone(),
            email: p.email.clone(),
            name: p.name.clone(),
            org_role: p.org_role.clone(),
            disabled: p.disabled,
            etag: p.etag.clone(),
            created: time(p.create_time.as_ref()),
            updated: time(p.update_time.as_ref()),
        }
    }
}

/// A new user, with the one-time password when the control plane made one
/// (shown only this once).
#[derive(Serialize)]
pub struct NewUserView {
    #[serde(flatten)]
    pub user: PrincipalView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_time_password: Option<String>,
}

/// Who the caller is, and how they authenticated.
#[derive(Serialize)]
pub struct WhoAmIView {
    pub id: String,
    pub kind: String,
    pub email: String,
    pub name: String,
    pub org_role: String,
    pub org: String,
    /// `access_token`, `api_token`, `environment_token` or `external`.
    pub credential: String,
    /// For an environment token: the workspace (its id) and environment it
    /// is limited to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
}

impl From<&v1::WhoAmIResponse> for WhoAmIView {
    fn from(w: &v1::WhoAmIResponse) -> Self {
        let p = w.principal.clone().unwrap_or_default();
        let set = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Self {
            id: p.id,
            kind: p.kind,
            email: p.email,
            name: p.name,
            org_role: p.org_role,
            org: w.org_id.clone(),
            credential: w.credential.clone(),
            workspace: set(&w.workspace),
            environment: set(&w.environment),
        }
    }
}

/// A saved login session (never its tokens).
#[derive(Serialize)]
pub struct SessionView {
    pub server: String,
    pub email: String,
    /// The file the session is saved in.
    pub session_file: String,
    /// When the access token expires; the CLI renews it by itself.
    pub access_token_expires: String,
    /// When the session ends unless used: log in again after it.
    pub refresh_token_expires: String,
}

/// An API token (never its secret, but for `secret` right after creation).
#[derive(Serialize)]
pub struct ApiTokenView {
    pub id: String,
    pub name: String,
    pub principal_id: String,
    pub created: String,
    /// Null (`-`) when it never expires.
    pub expires: Option<String>,
    /// To the minute; null (`-`) when never used.
    pub last_used: Option<String>,
    /// Only in the answer to `api-token create`: shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl From<&v1::ApiToken> for ApiTokenView {
    fn from(t: &v1::ApiToken) -> Self {
        let when = |t: Option<&prost_types::Timestamp>| Some(time(t)).filter(|s| !s.is_empty());
        Self {
            id: t.id.clone(),
            name: t.name.clone(),
            principal_id: t.principal_id.clone(),
            created: time(t.create_time.as_ref()),
            expires: when(t.expire_time.as_ref()),
            last_used: when(t.last_use_time.as_ref()),
            secret: None,
        }
    }
}

/// A role: built-in or the org's own.
#[derive(Serialize)]
pub struct RoleView {
    pub name: String,
    pub builtin: bool,
    pub permissions: Vec<String>,
    pub description: String,
    /// Empty for built-in roles, which cannot change.
    pub etag: String,
}

impl From<&v1::Role> for RoleView {
    fn from(r: &v1::Role) -> Self {
        Self {
            name: r.name.clone(),
            builtin: r.builtin,
            permissions: r.permissions.clone(),
            description: r.description.clone(),
            etag: r.etag.clone(),
        }
    }
}

/// A permission and what it allows.
#[derive(Serialize)]
pub struct PermissionView {
    pub name: String,
    /// `org`, `workspace`, `all_environments` or `environment`.
    pub reach: String,
    pub description: String,
}

impl From<&v1::PermissionInfo> for PermissionView {
    fn from(p: &v1::PermissionInfo) -> Self {
        Self {
            name: p.name.clone(),
            reach: p.reach.clone(),
            description: p.description.clone(),
        }
    }
}

/// A principal's role in one environment of a workspace.
#[derive(Serialize)]
pub struct MemberView {
    pub environment: String,
    /// The principal's name.
    pub principal: String,
    pub principal_id: String,
    pub role: String,
    pub created: String,
}

impl From<&v1::Member> for MemberView {
    fn from(m: &v1::Member) -> Self {
        Self {
            environment: m.environment.clone(),
            principal: m.principal_name.clone(),
            principal_id: m.principal_id.clone(),
            role: m.role.clone(),
            created: time(m.create_time.as_ref()),
        }
    }
}

/// An environment policy: who may use one permission in one environment.
#[derive(Serialize)]
pub struct PolicyView {
    pub environment: String,
    pub permission: String,
    /// The roles allowed.
    pub roles: Vec<String>,
    pub created: String,
}

impl From<&v1::Policy> for PolicyView {
    fn from(p: &v1::Policy) -> Self {
        Self {
            environment: p.environment.clone(),
            permission: p.permission.clone(),
            roles: p.roles.clone(),
            created: time(p.create_time.as_ref()),
        }
    }
}

/// A token for one environment of one workspace.
#[derive(Serialize)]
pub struct EnvTokenView {
    pub workspace: String,
    pub environment: String,
    pub token: String,
    pub expires: String,
}

/// A grant of the environment access log.
#[derive(Serialize)]
pub struct AccessView {
    pub granted: String,
    pub expires: String,
    pub environment: String,
    /// Who asked: their e-mail or name where it is known, else their id.
    pub principal: String,
    pub principal_id: String,
    pub reason: String,
}

impl From<&v1::EnvironmentAccess> for AccessView {
    fn from(a: &v1::EnvironmentAccess) -> Self {
        Self {
            granted: time(a.grant_time.as_ref()),
            expires: time(a.expire_time.as_ref()),
            environment: a.environment.clone(),
            principal: a.principal_id.clone(),
            principal_id: a.principal_id.clone(),
            reason: a.reason.clone(),
        }
    }
}

/// An event of the audit trail, every field of it.
#[derive(Serialize)]
pub struct AuditEventView {
    /// 1, 2, 3… per org, in commit order.
    pub seq: i64,
    pub id: String,
    pub time: String,
    /// `user:<id>`, `service:<id>` or `system`.
    pub actor_id: String,
    /// The actor's e-mail or service name.
    pub actor: String,
    /// How the actor authenticated.
    pub credential: String,
    /// `<resource kind>.<verb>`: `workspace.update`, `api_key.create`, …
    pub action: String,
    pub resource: String,
    pub workspace_id: String,
    pub environment: String,
    pub reason: String,
    /// Before and after of what changed, as JSON (as text when it is not
    /// JSON); null when pruned.
    pub summary: Value,
    pub request_id: String,
    /// Its content was emptied by retention; its hashes remain.
    pub pruned: bool,
    pub hash: String,
    pub prev_hash: String,
}

impl From<&v1::AuditEvent> for AuditEventView {
    fn from(e: &v1::AuditEvent) -> Self {
        let summary = if e.summary.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&e.summary).unwrap_or_else(|_| Value::String(e.summary.clone()))
        };
        Self {
            seq: e.seq,
            id: e.id.clone(),
            time: time(e.time.as_ref()),
            actor_id: e.actor_id.clone(),
            actor: e.actor.clone(),
            credential: e.credential.clone(),
            action: e.action.clone(),
            resource: e.resource.clone(),
            workspace_id: e.workspace_id.clone(),
            environment: e.environment.clone(),
            reason: e.reason.clone(),
            summary,
            request_id: e.request_id.clone(),
            pruned: e.pruned,
            hash: e.hash.clone(),
            prev_hash: e.prev_hash.clone(),
        }
    }
}

/// What verifying the audit chain found.
#[derive(Serialize)]
pub struct AuditVerifyView {
    pub ok: bool,
    /// How many events were checked.
    pub events: u64,
    /// The newest event: keep its seq and hash elsewhere to compare later.
    pub head_seq: i64,
    pub head_hash: String,
    /// When not ok: the first event that does not verify, and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken_seq: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl From<&v1::VerifyAuditChainResponse> for AuditVerifyView {
    fn from(v: &v1::VerifyAuditChainResponse) -> Self {
        Self {
            ok: v.ok,
            events: v.events,
            head_seq: v.head_seq,
            head_hash: v.head_hash.clone(),
            broken_seq: (!v.ok).then_some(v.broken_seq),
            problem: (!v.ok).then(|| v.problem.clone()),
        }
    }
}

/// How many events of one environment a prune emptied (or would empty).
#[derive(Serialize)]
pub struct PrunedView {
    pub environment: String,
    pub events: u64,
}

/// What a prune did, or would do with `--dry-run`.
#[derive(Serialize)]
pub struct AuditPruneView {
    pub dry_run: bool,
    pub pruned: Vec<PrunedView>,
    /// Environments never pruned, whatever their retention says.
    pub protected: Vec<String>,
}

impl From<&v1::PruneAuditEventsResponse> for AuditPruneView {
    fn from(p: &v1::PruneAuditEventsResponse) -> Self {
        Self {
            dry_run: p.dry_run,
            pruned: p
                .pruned
                .iter()
                .map(|e| PrunedView {
                    environment: e.environment.clone(),
                    events: e.events,
                })
                .collect(),
            protected: p.protected.clone(),
        }
    }
}

/// A data-plane API key (never its secret, but for `secret` right after
/// creation).
#[derive(Serialize)]
pub struct ApiKeyView {
    pub id: String,
    pub workspace_id: String,
    /// The one environment the key opens.
    pub environment: String,
    pub name: String,
    /// The start of the secret, to recognize it by.
    pub hint: String,
    /// A temporary test key: its requests are not usage.
    pub test: bool,
    /// Why the test key was made; empty for normal keys.
    pub reason: String,
    /// The principal who made it.
    pub created_by: String,
    pub created: String,
    /// Null (`-`) when it never expires.
    pub expires: Option<String>,
    /// Nodes refuse it from its expiry on.
    pub expired: bool,
    /// When a node last saw it used (to about the usage report interval);
    /// null (`-`) when never.
    pub last_used: Option<String>,
    /// Only in the answer to `api-key create`: shown this once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl From<&v1::ApiKey> for ApiKeyView {
    fn from(k: &v1::ApiKey) -> Self {
        let when = |t: Option<&prost_types::Timestamp>| Some(time(t)).filter(|s| !s.is_empty());
        Self {
            id: k.id.clone(),
            workspace_id: k.workspace_id.clone(),
            environment: k.environment.clone(),
            name: k.name.clone(),
            hint: k.hint.clone(),
            test: k.test,
            reason: k.reason.clone(),
            created_by: k.created_by.clone(),
            created: time(k.create_time.as_ref()),
            expires: when(k.expire_time.as_ref()),
            expired: k.expired,
            last_used: when(k.last_used_time.as_ref()),
            secret: None,
        }
    }
}

/// The requests one environment answered in a window.
#[derive(Serialize)]
pub struct EnvironmentUsageView {
    pub environment: String,
    /// Requests made with test keys left out.
    pub requests: u64,
    /// Requests made with test keys.
    pub test_requests: u64,
    /// Requests refused (429) by the environment's limits.
    pub limited_requests: u64,
}

/// A workspace's usage over a window of whole minutes.
#[derive(Serialize)]
pub struct UsageView {
    pub workspace: String,
    /// The window the totals cover: from `since`, up to `until` excluded.
    pub since: String,
    pub until: String,
    pub environments: Vec<EnvironmentUsageView>,
}

impl UsageView {
    pub fn new(workspace: &str, usage: &v1::GetUsageResponse) -> Self {
        Self {
            workspace: workspace.to_owned(),
            since: time(usage.since.as_ref()),
            until: time(usage.until.as_ref()),
            environments: usage
                .environments
                .iter()
                .map(|e| EnvironmentUsageView {
                    environment: e.environment.clone(),
                    requests: e.requests,
                    test_requests: e.test_requests,
                    limited_requests: e.limited_requests,
                })
                .collect(),
        }
    }
}

/// Settings from the wire in file form; what cannot be read is left out.
fn settings(wire: Option<&v1::EnvironmentSettings>) -> EnvSettings {
    mockplane_proto::convert::parse_env_settings(wire).unwrap_or_default()
}

pub fn time(timestamp: Option<&prost_types::Timestamp>) -> String {
    timestamp
        .and_then(|t| {
            chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
        })
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// Prints rows as a table with the given columns (keys of the JSON view),
/// or the rows as a JSON array.
pub fn list<T: Serialize>(format: Format, rows: &[T], columns: &[&str]) {
    match format {
        Format::Json => json(&rows),
        Format::Table => {
            let values: Vec<Value> = rows
                .iter()
                .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
                .collect();
            out!("{}", table(&values, columns));
        }
    }
}

/// Prints one object: `field  value` lines, or JSON.
pub fn one<T: Serialize>(format: Format, item: &T) {
    match format {
        Format::Json => json(item),
        Format::Table => {
            let value = serde_json::to_value(item).unwrap_or(Value::Null);
            if let Value::Object(map) = value {
                let width = map.keys().map(String::len).max().unwrap_or(0);
                for (key, value) in map {
                    let text = match value {
                        Value::Bool(false) => "no".to_owned(),
                        value => cell(&value),
                    };
                    outln!("{key:width$}  {text}");
                }
            }
        }
    }
}

pub fn json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => outln!("{text}"),
        Err(error) => eprintln!("error: cannot print JSON: {error}"),
    }
}

/// A value as a table shows it: `yes` or blank for a flag, `-` for
/// nothing, a list of words as `a, b`, other objects and lists as one line
/// of JSON.
fn cell(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        Value::Null => "-".to_owned(),
        Value::Bool(true) => "yes".to_owned(),
        Value::Bool(false) => String::new(),
        other => other.to_string(),
    };
    // Keep each row on one line.
    text.replace(['\n', '\r'], " ")
}

pub fn table(rows: &[Value], columns: &[&str]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| cell(&row[*c])).collect())
        .collect();
    let headers: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
                .min(60)
        })
        .collect();
    let mut out = String::new();
    for line in std::iter::once(&headers).chain(cells.iter()) {
        let parts: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(text, width)| {
                let clipped: String = if text.chars().count() > *width {
                    text.chars()
                        .take(width.saturating_sub(1))
                        .chain(['…'])
                        .collect()
                } else {
                    text.clone()
                };
                format!("{clipped:width$}")
            })
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    }
    out
}

mod summary;
pub use summary::{chaos_summary, latency_summary, limits_summary};

#[cfg(test)]
mod tests;
