//! The control plane's source of truth, behind one interface with two
//! backends: PostgreSQL (production, several replicas) and SQLite (the
//! embedded default for one machine). Both run the same SQL through one
//! generic implementation ([`tx::SqlStore`]); what differs between them is
//! in [`dialect`].
//!
//! Every method is scoped by org, and every change that affects what
//! data-plane nodes serve bumps the config revision in its own transaction.
//!
//! Concurrency: updates are optimistic (`WHERE version = $n`), which needs no
//! row locks and so reads the same on both backends. The config revision row
//! is the one serialization point: every transaction that changes serving
//! bumps it last, just before commit.
//!
//! [`Store`] is the sum of one trait per entity area, each implemented in
//! its own module on top of [`tx`] (transactions, errors, paging, the
//! revision bump) and [`audit`].

mod access;
pub mod audit;
mod dialect;
mod environments;
pub mod guard;
mod keys;
mod node_tokens;
mod nodes;
mod notifications;
mod orgs;
mod personas;
mod principals;
mod promotion_gather;
mod promotion_records;
mod promotion_tx;
mod promotions;
mod retention;
mod routes;
mod scenarios;
mod serving;
mod sessions;
mod tx;
mod workspaces;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mockplane_shared::model::environment::SettingsPatch;
use mockplane_shared::model::scenario::Tag;
use mockplane_shared::{
    Chain, ConfigRoute, EnvSettings, FieldError, RouteSpec, Slug, WorkspaceConfig,
};
use uuid::Uuid;

pub use access::*;
pub use dialect::{Dialect, JobLock};
pub use environments::EnvironmentStore;
pub use keys::*;
pub use node_tokens::*;
pub use nodes::*;
pub use notifications::*;
pub use orgs::{DeletedOrg, OrgPatch, OrgRecord, OrgStore, OrgUsage};
pub use personas::PersonaStore;
pub use principals::*;
pub use promotion_records::*;
pub use promotions::*;
pub use retention::RetentionStore;
pub use routes::RouteStore;
pub use scenarios::ScenarioStore;
pub use serving::ServingStore;
pub use sessions::*;
pub use tx::SqlStore;
pub use workspaces::WorkspaceStore;

/// What a first run created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrapped {
    pub org_id: Uuid,
    pub org_name: String,
    pub admin_id: Uuid,
}

/// Names a workspace: by id or by slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkspaceRef {
    Id(Uuid),
    Slug(Slug),
}

impl WorkspaceRef {
    /// A UUID is an id; anything else must be a valid slug (slugs are never
    /// UUID-shaped, so the two cannot be confused).
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        if raw.is_empty() {
            return Err(FieldError::new(
                "workspace",
                "is required: give the workspace's id or slug",
            ));
        }
        if let Ok(id) = Uuid::try_parse(raw) {
            return Ok(Self::Id(id));
        }
        Slug::parse(raw).map(Self::Slug).map_err(|e| {
            FieldError::new(
                "workspace",
                format!("{raw:?} is neither a UUID nor a valid slug: {e}"),
            )
        })
    }
}

impl std::fmt::Display for WorkspaceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkspaceRef::Id(id) => write!(f, "workspace {id}"),
            WorkspaceRef::Slug(slug) => write!(f, "workspace '{slug}'"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceRecord {
    pub id: Uuid,
    pub org_id: Uuid,
    pub slug: Slug,
    pub name: String,
    pub description: String,
    pub version: i64,
    pub route_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub active_environment: Slug,
    /// What every environment inherits.
    pub environment_defaults: EnvSettings,
    pub allow_promotion_skips: bool,
    /// Requests to the workspace's mocks must present an API key.
    pub require_api_keys: bool,
    /// The promotion chain in order, then the environments off it by name.
    pub environments: Vec<EnvironmentRecord>,
}

impl WorkspaceRecord {
    pub fn chain(&self) -> Chain {
        Chain::new(
            self.environments
                .iter()
                .filter(|e| e.position > 0)
                .map(|e| e.name.to_string())
                .collect(),
            self.allow_promotion_skips,
        )
    }

    pub fn environment(&self, name: &str) -> Option<&EnvironmentRecord> {
        self.environments.iter().find(|e| e.name.as_str() == name)
    }
}

/// One environment of a workspace, with the overrides set on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentRecord {
    pub id: Uuid,
    pub name: Slug,
    /// 1-based place on the promotion chain; 0 when off it.
    pub position: u32,
    pub settings: EnvSettings,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An environment to add to a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEnvironment {
    pub name: Slug,
    pub settings: EnvSettings,
    /// 0: off the chain; n: at place n of the chain, later steps move down
    /// one (at most one past the last step).
    pub position: u32,
}

/// Changes to an environment; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvironmentPatch {
    pub name: Option<Slug>,
    pub settings: Option<SettingsPatch>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRecord {
    pub id: Uuid,
    pub workspace_id: Uuid,
    /// The scenario whose working copy holds the route.
    pub scenario: Slug,
    pub spec: RouteSpec,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A scenario of a workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioRecord {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub name: Slug,
    pub description: String,
    pub tags: Vec<Tag>,
    /// Example requests and the answers they must get; frozen into each
    /// version and run by promotions.
    pub checks: Vec<mockplane_shared::model::checks::ContractCheck>,
    /// Routes in the working copy.
    pub route_count: i64,
    /// The newest version's number; 0 when there is none.
    pub latest_version: u32,
    /// What environments serve of it, by environment name.
    pub deployments: Vec<DeploymentRecord>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A version of a scenario served by an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRecord {
    pub environment: Slug,
    pub scenario: Slug,
    pub version: u32,
    pub deployed_at: DateTime<Utc>,
}

/// An immutable version of a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRecord {
    pub id: Uuid,
    pub scenario: Slug,
    pub number: u32,
    pub content_hash: String,
    pub route_count: u32,
    pub note: String,
    pub created_at: DateTime<Utc>,
    /// The routes, when asked for (`get_version`); empty otherwise.
    pub routes: Vec<ConfigRoute>,
    /// The contract checks frozen into the version.
    pub checks: Vec<mockplane_shared::model::checks::ContractCheck>,
}

/// A persona at one of its versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonaRecord {
    pub id: Uuid,
    pub name: Slug,
    pub data: serde_json::Value,
    /// 1, 2, 3…: the version `data` is.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The environments after the first of the chain that serve a
    /// promoted version of it: `(environment, version)`, in chain order.
    pub served: Vec<(String, i64)>,
}

/// A page of results and where the next one starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, K> {
    pub items: Vec<T>,
    /// The key to pass as `after` for the next page; `None` on the last page.
    pub next: Option<K>,
}

/// The whole serving config at one revision, read in one consistent snapshot.
#[derive(Debug, Clone)]
pub struct FullConfig {
    pub revision: u64,
    /// Workspaces whose stored config no longer validates are reported here
    /// instead of in `workspaces`, so one bad row cannot block the rest.
    pub workspaces: Vec<WorkspaceConfig>,
    pub invalid: Vec<(Uuid, FieldError)>,
}

/// What changed after a revision, read in one consistent snapshot.
#[derive(Debug, Clone)]
pub struct ConfigChanges {
    pub revision: u64,
    /// Changed workspaces with their config now; `None` when deleted.
    pub changed: Vec<(Uuid, Option<Result<WorkspaceConfig, FieldError>>)>,
    /// When the oldest of these changes committed (its change-log row);
    /// `None` when nothing changed.
    pub committed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// `false` when the change log no longer reaches back to the revision
    /// asked about (retention pruned it): `changed` then holds every
    /// workspace there is, and any other is gone.
    pub complete: bool,
}

/// The change log since some revision, for delta computation.
#[derive(Debug, Clone)]
pub struct ChangeHistory {
    /// Every change after this revision is in `entries`.
    pub complete_after: u64,
    /// `(revision, workspace)` in revision order.
    pub entries: Vec<(u64, Uuid)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error(
        "{what} was changed by someone else (its etag is now {current:?}); read it again and retry"
    )]
    EtagMismatch { what: String, current: String },
    #[error("{0}")]
    Conflict(String),
    /// The system is not in the state the operation needs (e.g. an edit of
    /// an environment that serves versions only).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    LimitExceeded(String),
    /// The caller may not do this here, whatever their permissions (an
    /// approval of one's own promotion).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("internal store error: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl From<sqlx::Error> for StoreError {
    /// A database error no caller described: connection trouble becomes
    /// `Unavailable`, anything else `Internal` (its text is logged, never
    /// shown). Errors a caller expects (a unique violation meaning "already
    /// exists") go through `db_error` instead.
    fn from(error: sqlx::Error) -> Self {
        tx::internal(error)
    }
}

/// The control plane's persistence interface. Implementations must be safe to
/// share between tasks and replicas.
#[async_trait]
pub trait Store:
    WorkspaceStore
    + EnvironmentStore
    + ScenarioStore
    + PersonaStore
    + RouteStore
    + ServingStore
    + PrincipalStore
    + SessionStore
    + AccessStore
    + audit::AuditStore
    + KeyStore
    + NodeTokenStore
    + NodeRegistryStore
    + PromotionStore
    + NotificationStore
    + RetentionStore
    + OrgStore
    + Send
    + Sync
    + 'static
{
    /// Which backend this is, for logs: "postgres" or "sqlite".
    fn backend(&self) -> &'static str;
    /// Calls `wake` whenever a replica commits a config change — this one
    /// after each commit that bumped the revision, others through
    /// PostgreSQL `LISTEN` — until `shutdown`.
    async fn watch_config_changes(
        &self,
        wake: std::sync::Arc<dyn Fn() + Send + Sync>,
        shutdown: tokio_util::sync::CancellationToken,
    );
    /// The lock of periodic job `job` while no other replica holds it
    /// (PostgreSQL advisory lock); `None` when another replica runs it now.
    /// Held until dropped.
    async fn job_lock(&self, job: &str) -> StoreResult<Option<JobLock>>;
    /// Closes every connection, waiting for them (and SQLite's checkpoint of
    /// its write-ahead log) to finish. Calls after this fail.
    async fn close(&self);
    /// On a store with no org yet, creates `org_name`, its first owner
    /// (`admin`) and an API token of that owner with the given hash;
    /// otherwise does nothing and returns `None`.
    async fn bootstrap(
        &self,
        org_name: &str,
        admin: &NewPrincipal,
        token_hash: &str,
    ) -> StoreResult<Option<Bootstrapped>>;
    /// Creates an org; its name must be unique.
    async fn create_org(&self, name: &str) -> StoreResult<Uuid>;
    /// Adds a service account named `token_name` that owns the org, with
    /// an API token (e.g. to replace a lost admin token).
    async fn add_token(
        &self,
        org_name: &str,
        token_name: &str,
        token_hash: &str,
    ) -> StoreResult<Uuid>;
}

/// Opens the store a URL names and brings its schema up to date:
/// `postgres://…` or `sqlite://path` (created when missing).
pub async fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    dialect::open(url, crate::secrets::Secrets::default()).await
}

/// [`open`], sealing the secrets the store keeps with `secrets`.
pub async fn open_sealed(
    url: &str,
    secrets: crate::secrets::Secrets,
) -> anyhow::Result<Arc<dyn Store>> {
    dialect::open(url, secrets).await
}
