//! The one implementation of [`Store`], generic over the sqlx backend.
//!
//! Concurrency: updates are optimistic (`WHERE version = $n`), which needs no
//! row locks and so reads the same on both backends. The config revision row
//! is the one serialization point: every transaction that changes serving
//! bumps it last, just before commit.

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, SubsecRound as _, Utc};
use mockplane_shared::config::{MAX_ROUTES_PER_WORKSPACE, MAX_WORKSPACE_BODY_BYTES};
use mockplane_shared::realism::Realism;
use mockplane_shared::{
    ConfigRoute, FieldError, NewWorkspace, RequestMatch, ResponseSpec, RoutePatch, RouteSpec, Slug,
    WorkspaceConfig, WorkspacePatch,
};
use sqlx::error::ErrorKind;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Type};
use uuid::Uuid;

use super::{
    Bootstrapped, ChangeHistory, ConfigChanges, Dialect, FullConfig, Page, Principal, RouteRecord,
    Store, StoreError, StoreResult, WorkspaceRecord, WorkspaceRef,
};

pub struct SqlStore<DB: Database> {
    pool: Pool<DB>,
}

impl<DB: Dialect> SqlStore<DB> {
    pub fn new(pool: Pool<DB>) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Applies pending migrations. Safe to run from several replicas at once:
    /// sqlx takes a database lock for it.
    pub async fn migrate(&self) -> anyhow::Result<()>
    where
        <DB as Database>::Connection: sqlx::migrate::Migrate,
    {
        DB::migrator()
            .run(&self.pool)
            .await
            .map_err(|e| anyhow::anyhow!("applying {} migrations: {e}", DB::BACKEND))
    }
}

macro_rules! select_workspace {
    () => {
        "SELECT w.id, w.org_id, w.slug, w.name, w.description, w.version, w.created_at, w.updated_at, \
         (SELECT COUNT(*) FROM routes r WHERE r.workspace_id = w.id) AS route_count \
         FROM workspaces w "
    };
}

macro_rules! select_route {
    () => {
        "SELECT id, workspace_id, name, method, path, matchers, priority, template, realism, status, headers, \
         body, version, created_at, updated_at FROM routes "
    };
}

/// Only what serving needs: no timestamps to decode, which at a few hundred
/// thousand routes is most of the cost of loading them.
macro_rules! select_serving_route {
    () => {
        "SELECT id, workspace_id, name, method, path, matchers, priority, template, realism, status, headers, \
         body FROM routes "
    };
}

#[derive(FromRow)]
struct WorkspaceRow {
    id: Uuid,
    org_id: Uuid,
    slug: String,
    name: String,
    description: String,
    version: i64,
    route_count: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl WorkspaceRow {
    fn into_record(self) -> StoreResult<WorkspaceRecord> {
        Ok(WorkspaceRecord {
            slug: Slug::parse(&self.slug).map_err(|e| {
                corrupt(
                    "workspace",
                    self.id,
                    &FieldError::new("slug", e.to_string()),
                )
            })?,
            id: self.id,
            org_id: self.org_id,
            name: self.name,
            description: self.description,
            version: self.version,
            route_count: self.route_count,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// What serving needs of a route: the columns the config is built from.
#[derive(FromRow)]
struct ServingRouteRow {
    id: Uuid,
    workspace_id: Uuid,
    name: String,
    method: String,
    path: String,
    matchers: String,
    priority: i32,
    /// 0 or 1: the two backends share no boolean type sqlx can be generic over.
    template: i32,
    realism: String,
    status: i32,
    headers: String,
    body: Vec<u8>,
}

impl ServingRouteRow {
    /// Stored routes were valid when written; parsing them again guards the
    /// nodes against a row changed behind the API's back.
    fn spec(self) -> Result<RouteSpec, FieldError> {
        RouteSpec::parse(&self.name, &self.method, &self.path, || {
            let headers: Vec<(String, String)> =
                serde_json::from_str(&self.headers).map_err(|e| {
                    FieldError::new("headers", format!("stored headers are not valid JSON: {e}"))
                })?;
            ResponseSpec::parse(
                u32::try_from(self.status).unwrap_or(0),
                headers,
                Bytes::from(self.body),
            )
        })?
        .matching(
            if self.matchers.is_empty() {
                RequestMatch::default()
            } else {
                serde_json::from_str(&self.matchers).map_err(|e| {
                    FieldError::new("matchers", format!("stored matchers are invalid: {e}"))
                })?
            },
            u32::try_from(self.priority).unwrap_or(u32::MAX),
        )?
        .templated(self.template != 0)?
        .with_realism(if self.realism.is_empty() {
            Realism::default()
        } else {
            serde_json::from_str(&self.realism).map_err(|e| {
                FieldError::new(
                    "realism",
                    format!("stored latency and chaos are invalid: {e}"),
                )
            })?
        })
    }
}

/// A route with its bookkeeping, for the API.
#[derive(FromRow)]
struct RouteRow {
    #[sqlx(flatten)]
    serving: ServingRouteRow,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl RouteRow {
    fn into_record(self) -> StoreResult<RouteRecord> {
        let (id, workspace_id) = (self.serving.id, self.serving.workspace_id);
        let spec = self.serving.spec().map_err(|e| corrupt("route", id, &e))?;
        Ok(RouteRecord {
            id,
            workspace_id,
            spec,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(FromRow)]
struct SlugRow {
    id: Uuid,
    slug: String,
}

fn corrupt(what: &str, id: Uuid, error: &FieldError) -> StoreError {
    StoreError::Internal(format!("stored {what} {id} is invalid ({error})"))
}

fn realism_json(spec: &RouteSpec) -> String {
    if spec.realism.is_empty() {
        return String::new();
    }
    serde_json::to_string(&spec.realism).unwrap_or_default()
}

fn matchers_json(spec: &RouteSpec) -> String {
    if spec.matcher.is_empty() {
        return String::new();
    }
    serde_json::to_string(&spec.matcher).unwrap_or_default()
}

fn headers_json(spec: &RouteSpec) -> String {
    // Serializing a Vec of string pairs cannot fail.
    serde_json::to_string(&spec.response.headers).unwrap_or_else(|_| "[]".into())
}

/// Translates a database error. Constraint violations become the error the
/// caller describes (the database's own text never reaches a client);
/// connection trouble becomes `Unavailable`.
fn db_error(error: sqlx::Error, on_unique: impl FnOnce() -> StoreError) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation => on_unique(),
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => StoreError::Unavailable(error.to_string()),
        _ => StoreError::Internal(error.to_string()),
    }
}

fn internal(error: sqlx::Error) -> StoreError {
    db_error(error, || {
        StoreError::Internal("unexpected uniqueness conflict".into())
    })
}

/// How often an update re-reads a row that another transaction changed
/// between our read and our write (PostgreSQL, READ COMMITTED) before giving up.
const CONFLICT_RETRIES: usize = 5;

fn contended(what: String) -> StoreError {
    StoreError::Conflict(format!(
        "{what} is being changed by others right now; try again"
    ))
}

fn check_version(what: String, current: i64, expected: Option<i64>) -> StoreResult<()> {
    match expected {
        Some(expected) if expected != current => Err(StoreError::EtagMismatch {
            what,
            current: current.to_string(),
        }),
        _ => Ok(()),
    }
}

/// The time to store, at the precision both backends keep (microseconds),
/// so a record returned by a write equals the same record read back.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn page_limit(limit: u32) -> i64 {
    i64::from(limit.max(1))
}

#[async_trait]
impl<DB> Store for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    fn backend(&self) -> &'static str {
        DB::BACKEND
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn bootstrap(
        &self,
        org_name: &str,
        token_hash: &str,
    ) -> StoreResult<Option<Bootstrapped>> {
        let mut tx = self
            .pool
            .begin_with(DB::BEGIN_WRITE)
            .await
            .map_err(internal)?;
        let orgs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orgs")
            .fetch_one(&mut *tx)
            .await
            .map_err(internal)?;
        if orgs > 0 {
            return Ok(None);
        }
        let now = now();
        let org_id = match insert_org(&mut tx, org_name, now).await {
            Ok(id) => id,
            // Another replica bootstrapped between our count and our insert.
            Err(StoreError::AlreadyExists(_)) => return Ok(None),
            Err(other) => return Err(other),
        };
        insert_token(&mut tx, org_id, "admin", token_hash, now).await?;
        tx.commit().await.map_err(internal)?;
        Ok(Some(Bootstrapped {
            org_id,
            org_name: org_name.to_owned(),
        }))
    }

    async fn create_org(&self, name: &str) -> StoreResult<Uuid> {
        let mut conn = self.pool.acquire().await.map_err(internal)?;
        insert_org(&mut conn, name, now()).await
    }

    async fn add_token(
        &self,
        org_name: &str,
        token_name: &str,
        token_hash: &str,
    ) -> StoreResult<Uuid> {
        let mut tx = self
            .pool
            .begin_with(DB::BEGIN_WRITE)
            .await
            .map_err(internal)?;
        let org_id: Option<Uuid> = sqlx::query_scalar("SELECT id FROM orgs WHERE name = $1")
            .bind(org_name.to_owned())
            .fetch_optional(&mut *tx)
            .await
            .map_err(internal)?;
        let org_id = org_id.ok_or_else(|| StoreError::NotFound(format!("org '{org_name}'")))?;
        let id = insert_token(&mut tx, org_id, token_name, token_hash, now()).await?;
        tx.commit().await.map_err(internal)?;
        Ok(id)
    }

    async fn find_token(&self, token_hash: &str) -> StoreResult<Option<Principal>> {
        let row: Option<(Uuid, Uuid)> =
            sqlx::query_as("SELECT id, org_id FROM api_tokens WHERE token_hash = $1")
                .bind(token_hash.to_owned())
                .fetch_optional(&self.pool)
                .await
                .map_err(internal)?;
        Ok(row.map(|(token_id, org_id)| Principal { org_id, token_id }))
    }

    async fn create_workspace(&self, org: Uuid, new: NewWorkspace) -> StoreResult<WorkspaceRecord> {
        let mut tx = self
            .pool
            .begin_with(DB::BEGIN_WRITE)
            .await
            .map_err(internal)?;
        let id = Uuid::now_v7();
        let now = now();
        sqlx::query(
            "INSERT INTO workspaces (id, org_id, slug, name, description, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $6)",
        )
        .bind(id)
        .bind(org)
        .bind(new.slug.to_string())
        .bind(new.name.clone())
        .bind(new.description.clone())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            db_error(e, || {
                StoreError::AlreadyExists(format!("a workspace with slug '{}' already exists", new.slug))
            })
        })?;
        bump_revision(&mut tx, id).await?;
        tx.commit().await.map_err(internal)?;
        Ok(WorkspaceRecord {
            id,
            org_id: org,
            slug: new.slug,
            name: new.name,
            description: new.description,
            version: 1,
            route_count: 0,
            created_at: now,
            updated_at: now,
        })
    }

    async fn get_workspace(&self, org: Uuid, key: &WorkspaceRef) -> StoreResult<WorkspaceRecord> {
        let mut conn = self.pool.acquire().await.map_err(internal)?;
        fetch_workspace(&mut conn, org, key).await?.into_record()
    }

    async fn list_workspaces(
        &self,
        org: Uuid,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<WorkspaceRecord, String>> {
        let rows: Vec<WorkspaceRow> = sqlx::query_as(concat!(
            select_workspace!(),
            "WHERE w.org_id = $1 AND w.slug > $2 ORDER BY w.slug LIMIT $3"
        ))
        .bind(org)
        .bind(after.unwrap_or("").to_owned())
        .bind(page_limit(limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(internal)?;
        let mut items = rows
            .into_iter()
            .map(WorkspaceRow::into_record)
            .collect::<StoreResult<Vec<_>>>()?;
        let next = if items.len() > limit.max(1) as usize {
            items.truncate(limit.max(1) as usize);
            items.last().map(|w| w.slug.to_string())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn update_workspace(
        &self,
        org: Uuid,
        key: &WorkspaceRef,
        patch: &WorkspacePatch,
        expected_version: Option<i64>,
    ) -> StoreResult<WorkspaceRecord> {
        let mut tx = self
            .pool
            .begin_with(DB::BEGIN_WRITE)
            .await
            .map_err(internal)?;
        for _ in 0..CONFLICT_RETRIES {
            let current = fetch_workspace(&mut tx, org, key).await?.into_record()?;
            check_version(key.to_string(), current.version, expected_version)?;
            let slug = patch.slug.clone().unwrap_or(current.slug.clone());
            let name = patch.name.clone().unwrap_or(current.name.clone());
            let description = patch
                .description
                .clone()
                .unwrap_or(current.description.clone());
            let now = now();
            let updated = sqlx::query(
                "UPDATE workspaces SET slug = $1, name = $2, description = $3, version = version + 1, \
                 updated_at = $4 WHERE id = $5 AND version = $6",
            )
            .bind(slug.to_string())
            .bind(name.clone())
            .bind(description.clone())
            .bind(now)
            .bind(current.id)
            .bind(current.version)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                db_error(e, || StoreError::AlreadyExists(format!("a workspace with slug '{slug}' already exists")))
            })?;
            if DB::rows_affected(&updated) == 0 {
                continue;
            }
            bump_revision(&mut tx, current.id).await?;
            tx.commit().await.map_err(internal)?;
            return Ok(WorkspaceRecord {
                slug,
                name,
                description,
                version: current.version + 1,
                updated_at: now,
                ..current
            });
        }
        Err(contended(key.to_string()))
    }

    async fn delete_workspace(
        &self,
        org: Uuid,
        key: &WorkspaceRef,
        expected_version: Option<i64>,
    ) -> StoreResult<()> {
        let mut tx = self
            .pool
            .begin_with(DB::BEGIN_WRITE)
            .await
            .map_err(internal)?;
        for _ in 0..CONFLICT_RETRIES {
            let current = fetch_workspace(&mut tx, org, key).await?;
            check_version(key.to_string(), current.version, expected_version)?;
            let deleted = sqlx::query("DELETE FROM workspaces WHERE id = $1 AND version = $2")
                .bind(current.id)
                .bind(current.version)
                .execute(&mut *tx)
                .await
                .map_err(internal)?;
            if DB::rows_affected(&deleted) == 0 {
                continue;
            }
            bump_revision(&mut tx, current.id).await?;
            return tx.commit().await.map_err(internal);
        }
        Err(contended(key.to_string()))
    }

    async fn create_routes(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        routes: Vec<RouteSpec>,
    ) -> StoreResult<Vec<RouteRecord>> {
        let mut tx = self
            .pool
            .begin_with(DB::BEGIN_WRITE)
            .await
            .map_err(internal)?;
        let ws = fetch_workspace(&mut tx, org, workspace).await?;
        let now = now();
        let mut records = Vec::with_capacity(routes.len());
        for (index, spec) in routes.into_iter().enumerate() {
            let id = Uuid::now_v7();
            let key = spec.match_key();
            sqlx::query(
                "INSERT INTO routes (id, workspace_id, org_id, name, method, path, match_key, status, headers, body, \
                 version, created_at, updated_at, matchers, priority, template, realism) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1, $11, $11, $12, $13, $14, $15)",
            )
            .bind(id)
            .bind(ws.id)
            .bind(org)
            .bind(spec.name.clone())
            .bind(spec.method.as_str().to_owned())
            .bind(spec.path.as_str().to_owned())
            .bind(key)
            .bind(i32::from(spec.response.status))
            .bind(headers_json(&spec))
            .bind(spec.response.body.to_vec())
            .bind(now)
            .bind(matchers_json(&spec))
            .bind(i32::from(spec.priority))
            .bind(i32::from(spec.response.template))
            .bind(realism_json(&spec))
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(e, || route_clash(index, &spec)))?;
            records.push(RouteRecord {
                id,
                workspace_id: ws.id,
                spec,
                version: 1,
                created_at: now,
                updated_at: now,
            });
        }
        check_workspace_limits(&mut tx, ws.id).await?;
        bump_revision(&mut tx, ws.id).await?;
        tx.commit().await.map_err(internal)?;
        Ok(records)
    }

    async fn get_route(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        id: Uuid,
    ) -> StoreResult<RouteRecord> {
        let mut conn = self.pool.acquire().await.map_err(internal)?;
        let ws = fetch_workspace(&mut conn, org, workspace).await?;
        fetch_route(&mut conn, ws.id, id).await?.into_record()
    }

    async fn list_routes(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<RouteRecord, Uuid>> {
        let mut conn = self.pool.acquire().await.map_err(internal)?;
        let ws = fetch_workspace(&mut conn, org, workspace).await?;
        let rows: Vec<RouteRow> = sqlx::query_as(concat!(
            select_route!(),
            "WHERE workspace_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(ws.id)
        .bind(after.unwrap_or(Uuid::nil()))
        .bind(page_limit(limit) + 1)
        .fetch_all(&mut *conn)
        .await
        .map_err(internal)?;
        let mut items = rows
            .into_iter()
            .map(RouteRow::into_record)
            .collect::<StoreResult<Vec<_>>>()?;
        let next = if items.len() > limit.max(1) as usize {
            items.truncate(limit.max(1) as usize);
            items.last().map(|r| r.id)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn update_route(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        id: Uuid,
        patch: &RoutePatch,
        expected_version: Option<i64>,
    ) -> StoreResult<RouteRecord> {
        let mut tx = self
            .pool
            .begin_with(DB::BEGIN_WRITE)
            .await
            .map_err(internal)?;
        let ws = fetch_workspace(&mut tx, org, workspace).await?;
        for _ in 0..CONFLICT_RETRIES {
            let current = fetch_route(&mut tx, ws.id, id).await?.into_record()?;
            check_version(format!("route {id}"), current.version, expected_version)?;
            let spec = patch.apply(&current.spec)?;
            let now = now();
            let updated = sqlx::query(
                "UPDATE routes SET name = $1, method = $2, path = $3, match_key = $4, status = $5, headers = $6, \
                 body = $7, version = version + 1, updated_at = $8, matchers = $11, priority = $12, \
                 template = $13, realism = $14 WHERE id = $9 AND version = $10",
            )
            .bind(spec.name.clone())
            .bind(spec.method.as_str().to_owned())
            .bind(spec.path.as_str().to_owned())
            .bind(spec.match_key())
            .bind(i32::from(spec.response.status))
            .bind(headers_json(&spec))
            .bind(spec.response.body.to_vec())
            .bind(now)
            .bind(id)
            .bind(current.version)
            .bind(matchers_json(&spec))
            .bind(i32::from(spec.priority))
            .bind(i32::from(spec.response.template))
            .bind(realism_json(&spec))
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(e, || route_clash(0, &spec)))?;
            if DB::rows_affected(&updated) == 0 {
                continue;
            }
            check_workspace_limits(&mut tx, ws.id).await?;
            bump_revision(&mut tx, ws.id).await?;
            tx.commit().await.map_err(internal)?;
            return Ok(RouteRecord {
                spec,
                version: current.version + 1,
                updated_at: now,
                ..current
            });
        }
        Err(contended(format!("route {id}")))
    }

    async fn delete_routes(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        ids: &[Uuid],
    ) -> StoreResult<u64> {
        let mut tx = self
            .pool
            .begin_with(DB::BEGIN_WRITE)
            .await
            .map_err(internal)?;
        let ws = fetch_workspace(&mut tx, org, workspace).await?;
        let mut deleted = 0;
        for id in ids {
            let done = sqlx::query("DELETE FROM routes WHERE workspace_id = $1 AND id = $2")
                .bind(ws.id)
                .bind(*id)
                .execute(&mut *tx)
                .await
                .map_err(internal)?;
            if DB::rows_affected(&done) == 0 {
                // Dropping the transaction rolls back the routes deleted so far.
                return Err(StoreError::NotFound(format!(
                    "route {id} in workspace '{}'",
                    ws.slug
                )));
            }
            deleted += DB::rows_affected(&done);
        }
        if deleted > 0 {
            bump_revision(&mut tx, ws.id).await?;
        }
        tx.commit().await.map_err(internal)?;
        Ok(deleted)
    }

    async fn current_revision(&self) -> StoreResult<u64> {
        let revision: i64 = sqlx::query_scalar("SELECT revision FROM config_revision WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(internal)?;
        Ok(to_u64(revision))
    }

    async fn load_config(&self) -> StoreResult<FullConfig> {
        let mut tx = self
            .pool
            .begin_with(DB::BEGIN_SNAPSHOT)
            .await
            .map_err(internal)?;
        let revision: i64 = sqlx::query_scalar("SELECT revision FROM config_revision WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(internal)?;
        let workspaces: Vec<SlugRow> =
            sqlx::query_as("SELECT id, slug FROM workspaces ORDER BY id")
                .fetch_all(&mut *tx)
                .await
                .map_err(internal)?;
        let routes: Vec<ServingRouteRow> = sqlx::query_as(concat!(
            select_serving_route!(),
            "ORDER BY workspace_id, id"
        ))
        .fetch_all(&mut *tx)
        .await
        .map_err(internal)?;
        tx.commit().await.map_err(internal)?;

        let mut by_workspace: HashMap<Uuid, Vec<ServingRouteRow>> =
            HashMap::with_capacity(workspaces.len());
        for route in routes {
            by_workspace
                .entry(route.workspace_id)
                .or_default()
                .push(route);
        }
        let mut config = FullConfig {
            revision: to_u64(revision),
            workspaces: Vec::with_capacity(workspaces.len()),
            invalid: Vec::new(),
        };
        for ws in workspaces {
            let routes = by_workspace.remove(&ws.id).unwrap_or_default();
            match workspace_config(ws.id, &ws.slug, routes) {
                Ok(built) => config.workspaces.push(built),
                Err(error) => config.invalid.push((ws.id, error)),
            }
        }
        Ok(config)
    }

    async fn config_changes_since(&self, revision: u64) -> StoreResult<ConfigChanges> {
        let mut tx = self
            .pool
            .begin_with(DB::BEGIN_SNAPSHOT)
            .await
            .map_err(internal)?;
        let current: i64 = sqlx::query_scalar("SELECT revision FROM config_revision WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(internal)?;
        let since = i64::try_from(revision).unwrap_or(i64::MAX);
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT DISTINCT workspace_id FROM change_log WHERE revision > $1 AND revision <= $2",
        )
        .bind(since)
        .bind(current)
        .fetch_all(&mut *tx)
        .await
        .map_err(internal)?;
        let mut changed = Vec::with_capacity(ids.len());
        for id in ids {
            let slug: Option<String> =
                sqlx::query_scalar("SELECT slug FROM workspaces WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(internal)?;
            let config = match slug {
                None => None,
                Some(slug) => {
                    let routes: Vec<ServingRouteRow> = sqlx::query_as(concat!(
                        select_serving_route!(),
                        "WHERE workspace_id = $1 ORDER BY id"
                    ))
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(internal)?;
                    Some(workspace_config(id, &slug, routes))
                }
            };
            changed.push((id, config));
        }
        tx.commit().await.map_err(internal)?;
        Ok(ConfigChanges {
            revision: to_u64(current),
            changed,
        })
    }

    async fn change_history(&self, after: u64) -> StoreResult<ChangeHistory> {
        let mut tx = self
            .pool
            .begin_with(DB::BEGIN_SNAPSHOT)
            .await
            .map_err(internal)?;
        let pruned: i64 =
            sqlx::query_scalar("SELECT pruned_through FROM config_revision WHERE id = 1")
                .fetch_one(&mut *tx)
                .await
                .map_err(internal)?;
        let from = to_u64(pruned).max(after);
        let entries: Vec<(i64, Uuid)> = sqlx::query_as(
            "SELECT revision, workspace_id FROM change_log WHERE revision > $1 ORDER BY revision, workspace_id",
        )
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(ChangeHistory {
            complete_after: from,
            entries: entries
                .into_iter()
                .map(|(rev, id)| (to_u64(rev), id))
                .collect(),
        })
    }
}

fn route_clash(index: usize, spec: &RouteSpec) -> StoreError {
    StoreError::AlreadyExists(format!(
        "routes[{index}]: {} {} matches the same requests as a route the workspace already has",
        spec.method, spec.path
    ))
}

fn workspace_config(
    id: Uuid,
    slug: &str,
    rows: Vec<ServingRouteRow>,
) -> Result<WorkspaceConfig, FieldError> {
    let slug = Slug::parse(slug).map_err(|e| FieldError::new("slug", e.to_string()))?;
    let routes = rows
        .into_iter()
        .enumerate()
        .map(|(index, row)| {
            let route_id = row.id;
            row.spec()
                .map(|spec| ConfigRoute { id: route_id, spec })
                .map_err(|e| e.within(&format!("routes[{index}]")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let config = WorkspaceConfig { id, slug, routes };
    config.validate()?;
    Ok(config)
}

async fn fetch_workspace<DB>(
    conn: &mut DB::Connection,
    org: Uuid,
    key: &WorkspaceRef,
) -> StoreResult<WorkspaceRow>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
{
    let query = match key {
        WorkspaceRef::Id(id) => sqlx::query_as::<DB, WorkspaceRow>(concat!(
            select_workspace!(),
            "WHERE w.org_id = $1 AND w.id = $2"
        ))
        .bind(org)
        .bind(*id),
        WorkspaceRef::Slug(slug) => sqlx::query_as::<DB, WorkspaceRow>(concat!(
            select_workspace!(),
            "WHERE w.org_id = $1 AND w.slug = $2"
        ))
        .bind(org)
        .bind(slug.to_string()),
    };
    query
        .fetch_optional(&mut *conn)
        .await
        .map_err(internal)?
        .ok_or_else(|| StoreError::NotFound(key.to_string()))
}

async fn fetch_route<DB>(
    conn: &mut DB::Connection,
    workspace_id: Uuid,
    id: Uuid,
) -> StoreResult<RouteRow>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
{
    sqlx::query_as::<DB, RouteRow>(concat!(
        select_route!(),
        "WHERE workspace_id = $1 AND id = $2"
    ))
    .bind(workspace_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(internal)?
    .ok_or_else(|| StoreError::NotFound(format!("route {id}")))
}

async fn insert_org<DB>(
    conn: &mut DB::Connection,
    name: &str,
    now: DateTime<Utc>,
) -> StoreResult<Uuid>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
{
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(name.to_owned())
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            db_error(e, || {
                StoreError::AlreadyExists(format!("an org named '{name}' already exists"))
            })
        })?;
    Ok(id)
}

async fn insert_token<DB>(
    conn: &mut DB::Connection,
    org_id: Uuid,
    name: &str,
    token_hash: &str,
    now: DateTime<Utc>,
) -> StoreResult<Uuid>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
{
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO api_tokens (id, org_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(id)
        .bind(org_id)
        .bind(name.to_owned())
        .bind(token_hash.to_owned())
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error(e, || StoreError::AlreadyExists("that token already exists".into())))?;
    Ok(id)
}

/// Refuses a change that leaves a workspace over its limits; the caller's
/// transaction then rolls back.
async fn check_workspace_limits<DB>(
    conn: &mut DB::Connection,
    workspace_id: Uuid,
) -> StoreResult<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let (routes, body_bytes): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM routes WHERE workspace_id = $1",
    )
    .bind(workspace_id)
    .fetch_one(&mut *conn)
    .await
    .map_err(internal)?;
    if to_u64(routes) > MAX_ROUTES_PER_WORKSPACE as u64 {
        return Err(StoreError::LimitExceeded(format!(
            "a workspace holds at most {MAX_ROUTES_PER_WORKSPACE} routes; this change would make it {routes}"
        )));
    }
    if to_u64(body_bytes) > MAX_WORKSPACE_BODY_BYTES {
        return Err(StoreError::LimitExceeded(format!(
            "a workspace holds at most {MAX_WORKSPACE_BODY_BYTES} bytes of response bodies; this change would make it {body_bytes}"
        )));
    }
    Ok(())
}

/// Records that a workspace's serving config changed, under a new revision.
/// Called last in a transaction: the revision row stays locked until commit.
async fn bump_revision<DB>(conn: &mut DB::Connection, workspace_id: Uuid) -> StoreResult<u64>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let revision: i64 = sqlx::query_scalar(
        "UPDATE config_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(internal)?;
    sqlx::query("INSERT INTO change_log (revision, workspace_id, changed_at) VALUES ($1, $2, $3)")
        .bind(revision)
        .bind(workspace_id)
        .bind(now())
        .execute(&mut *conn)
        .await
        .map_err(internal)?;
    Ok(to_u64(revision))
}
