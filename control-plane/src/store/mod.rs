//! The control plane's source of truth, behind one interface with two
//! backends: PostgreSQL (production, several replicas) and SQLite (the
//! embedded default for one machine). Both run the same SQL through one
//! generic implementation ([`sql::SqlStore`]); what differs between them is
//! in [`dialect`].
//!
//! Every method is scoped by org, and every change that affects what
//! data-plane nodes serve bumps the config revision in its own transaction.

mod dialect;
mod sql;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mockplane_shared::{
    FieldError, NewWorkspace, RoutePatch, RouteSpec, Slug, WorkspaceConfig, WorkspacePatch,
};
use uuid::Uuid;

pub use dialect::Dialect;
pub use sql::SqlStore;

/// The authenticated caller of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub org_id: Uuid,
    pub token_id: Uuid,
}

/// What a first run created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrapped {
    pub org_id: Uuid,
    pub org_name: String,
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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRecord {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub spec: RouteSpec,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
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
    #[error("{0}")]
    LimitExceeded(String),
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("internal store error: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The control plane's persistence interface. Implementations must be safe to
/// share between tasks and replicas.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is, for logs: "postgres" or "sqlite".
    fn backend(&self) -> &'static str;

    /// Closes every connection, waiting for them (and SQLite's checkpoint of
    /// its write-ahead log) to finish. Calls after this fail.
    async fn close(&self);

    /// On a store with no org yet, creates `org_name` and an admin API token
    /// with the given hash; otherwise does nothing and returns `None`.
    async fn bootstrap(
        &self,
        org_name: &str,
        token_hash: &str,
    ) -> StoreResult<Option<Bootstrapped>>;

    /// Creates an org; its name must be unique.
    async fn create_org(&self, name: &str) -> StoreResult<Uuid>;

    /// Adds an API token to an org (e.g. to replace a lost admin token).
    async fn add_token(
        &self,
        org_name: &str,
        token_name: &str,
        token_hash: &str,
    ) -> StoreResult<Uuid>;

    /// The principal a token hash belongs to.
    async fn find_token(&self, token_hash: &str) -> StoreResult<Option<Principal>>;

    async fn create_workspace(&self, org: Uuid, new: NewWorkspace) -> StoreResult<WorkspaceRecord>;
    async fn get_workspace(&self, org: Uuid, key: &WorkspaceRef) -> StoreResult<WorkspaceRecord>;
    /// Ordered by slug, starting after `after`.
    async fn list_workspaces(
        &self,
        org: Uuid,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<WorkspaceRecord, String>>;
    /// `expected_version`: fail with `EtagMismatch` unless it matches.
    async fn update_workspace(
        &self,
        org: Uuid,
        key: &WorkspaceRef,
        patch: &WorkspacePatch,
        expected_version: Option<i64>,
    ) -> StoreResult<WorkspaceRecord>;
    async fn delete_workspace(
        &self,
        org: Uuid,
        key: &WorkspaceRef,
        expected_version: Option<i64>,
    ) -> StoreResult<()>;

    /// Adds routes atomically: all or none.
    async fn create_routes(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        routes: Vec<RouteSpec>,
    ) -> StoreResult<Vec<RouteRecord>>;
    async fn get_route(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        id: Uuid,
    ) -> StoreResult<RouteRecord>;
    /// In creation order, starting after route `after`.
    async fn list_routes(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<RouteRecord, Uuid>>;
    async fn update_route(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        id: Uuid,
        patch: &RoutePatch,
        expected_version: Option<i64>,
    ) -> StoreResult<RouteRecord>;
    /// Removes routes atomically; an unknown id removes nothing.
    async fn delete_routes(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        ids: &[Uuid],
    ) -> StoreResult<u64>;

    /// The latest committed config revision.
    async fn current_revision(&self) -> StoreResult<u64>;
    /// Everything nodes serve, at one revision.
    async fn load_config(&self) -> StoreResult<FullConfig>;
    /// What changed after `revision`, at one later revision.
    async fn config_changes_since(&self, revision: u64) -> StoreResult<ConfigChanges>;
    /// The change log after `revision` (or as far back as it is kept).
    async fn change_history(&self, after: u64) -> StoreResult<ChangeHistory>;
}

/// Opens the store a URL names and brings its schema up to date:
/// `postgres://…` or `sqlite://path` (created when missing).
pub async fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    dialect::open(url).await
}
