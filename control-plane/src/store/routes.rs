//! Routes in the database: their rows (whole, or what serving needs), the
//! JSON columns of their matchers, realism and state, inserting a batch into
//! a scenario's working copy, and the limits a workspace keeps.

use bytes::Bytes;
use mockplane_shared::model::config::{MAX_ROUTES_PER_WORKSPACE, MAX_WORKSPACE_BODY_BYTES};
use mockplane_shared::model::realism::Realism;
use mockplane_shared::model::route::first_duplicate;
use mockplane_shared::model::state::RawStateRule;
use mockplane_shared::{RequestMatch, ResponseSpec};

macro_rules! select_route {
    () => {
        "SELECT id, workspace_id, name, method, path, matchers, priority, template, realism, state, status, headers, \
         body, version, created_at, updated_at, \
         COALESCE((SELECT s.name FROM scenarios s WHERE s.id = routes.scenario_id), 'default') AS scenario \
         FROM routes "
    };
}

/// Only what serving needs: no timestamps to decode, which at a few hundred
/// thousand routes is most of the cost of loading them.
macro_rules! select_serving_route {
    () => {
        "SELECT id, workspace_id, name, method, path, matchers, priority, template, realism, state, status, headers, \
         body FROM routes "
    };
}

pub(super) use select_serving_route;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mockplane_shared::{FieldError, RoutePatch, RouteSpec, Slug};
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::audit::Change;
use super::tx::{
    CONFLICT_RETRIES, Scope, SqlStore, check_version, contended, corrupt, db_error, now,
    page_limit, to_u64,
};
use super::workspaces::default_scenario;
use super::{Dialect, Page, RouteRecord, StoreError, StoreResult, WorkspaceRef};
use serde_json::json;

#[derive(FromRow)]
pub(super) struct ServingRouteRow {
    pub(super) id: Uuid,
    pub(super) workspace_id: Uuid,
    pub(super) name: String,
    pub(super) method: String,
    pub(super) path: String,
    pub(super) matchers: String,
    pub(super) priority: i32,
    /// 0 or 1: the two backends share no boolean type sqlx can be generic over.
    pub(super) template: i32,
    pub(super) realism: String,
    pub(super) state: String,
    pub(super) status: i32,
    pub(super) headers: String,
    pub(super) body: Vec<u8>,
}

impl ServingRouteRow {
    /// Stored routes were valid when written; parsing them again guards the
    /// nodes against a row changed behind the API's back.
    pub(super) fn spec(self) -> Result<RouteSpec, FieldError> {
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
        })?
        .with_state(
            if self.state.is_empty() {
                None
            } else {
                Some(
                    serde_json::from_str::<RawStateRule>(&self.state).map_err(|e| {
                        FieldError::new("state", format!("stored state rule is invalid: {e}"))
                    })?,
                )
            }
            .as_ref(),
        )
    }
}

/// A route with its bookkeeping, for the API.
#[derive(FromRow)]
pub(super) struct RouteRow {
    #[sqlx(flatten)]
    pub(super) serving: ServingRouteRow,
    pub(super) version: i64,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
    pub(super) scenario: String,
}

impl RouteRow {
    pub(super) fn into_record(self) -> StoreResult<RouteRecord> {
        let (id, workspace_id) = (self.serving.id, self.serving.workspace_id);
        let spec = self.serving.spec().map_err(|e| corrupt("route", id, &e))?;
        let scenario = Slug::parse(&self.scenario)
            .map_err(|e| corrupt("route", id, &FieldError::new("scenario", e.to_string())))?;
        Ok(RouteRecord {
            id,
            workspace_id,
            scenario,
            spec,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

pub(super) fn realism_json(spec: &RouteSpec) -> String {
    if spec.realism.is_empty() {
        return String::new();
    }
    serde_json::to_string(&spec.realism).unwrap_or_default()
}

pub(super) fn state_json(spec: &RouteSpec) -> String {
    spec.state
        .as_ref()
        .map(|rule| serde_json::to_string(&rule.raw()).unwrap_or_default())
        .unwrap_or_default()
}

pub(super) fn matchers_json(spec: &RouteSpec) -> String {
    if spec.matcher.is_empty() {
        return String::new();
    }
    serde_json::to_string(&spec.matcher).unwrap_or_default()
}

pub(super) fn headers_json(spec: &RouteSpec) -> String {
    // Serializing a Vec of string pairs cannot fail.
    serde_json::to_string(&spec.response.headers).unwrap_or_else(|_| "[]".into())
}

pub(super) fn route_clash(index: usize, spec: &RouteSpec) -> StoreError {
    StoreError::AlreadyExists(format!(
        "routes[{index}]: {} {} matches the same requests as a route the workspace already has",
        spec.method, spec.path
    ))
}

impl<DB> SqlStore<DB>
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
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<Uuid>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<i32>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB> + Decode<'q, DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    /// Inserts routes into a scenario's working copy; a clash with a route the
    /// workspace has fails the whole call (the caller's transaction).
    pub(super) async fn insert_routes(
        conn: &mut DB::Connection,
        org: Uuid,
        workspace_id: Uuid,
        scenario_id: Uuid,
        scenario: &Slug,
        routes: Vec<RouteSpec>,
    ) -> StoreResult<Vec<RouteRecord>> {
        // Two routes of one call that match the same requests are named as
        // such, not as a clash with the workspace.
        if let Some((first, index)) = first_duplicate(&routes) {
            let spec = &routes[index];
            return Err(FieldError::new(
                format!("routes[{index}]"),
                format!(
                    "{} {} matches the same requests as routes[{first}] of this request",
                    spec.method, spec.path
                ),
            )
            .into());
        }
        let now = now();
        let mut records = Vec::with_capacity(routes.len());
        for (index, spec) in routes.into_iter().enumerate() {
            let id = Uuid::now_v7();
            let key = spec.match_key();
            sqlx::query(
                    "INSERT INTO routes (id, workspace_id, org_id, name, method, path, match_key, status, headers, body, \
                     version, created_at, updated_at, matchers, priority, template, realism, scenario_id, state) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1, $11, $11, $12, $13, $14, $15, $16, $17)",
                )
                .bind(id)
                .bind(workspace_id)
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
                .bind(scenario_id)
                .bind(state_json(&spec))
                .execute(&mut *conn)
                .await
                .map_err(|e| db_error(e, || route_clash(index, &spec)))?;
            records.push(RouteRecord {
                id,
                workspace_id,
                scenario: scenario.clone(),
                spec,
                version: 1,
                created_at: now,
                updated_at: now,
            });
        }
        Ok(records)
    }

    pub(super) async fn fetch_route(
        conn: &mut DB::Connection,
        workspace_id: Uuid,
        id: Uuid,
    ) -> StoreResult<RouteRow> {
        sqlx::query_as::<DB, RouteRow>(concat!(
            select_route!(),
            "WHERE workspace_id = $1 AND id = $2"
        ))
        .bind(workspace_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("route {id}")))
    }

    /// Refuses a change that leaves a workspace over its limits; the caller's
    /// transaction then rolls back.
    pub(super) async fn check_workspace_limits(
        conn: &mut DB::Connection,
        workspace_id: Uuid,
    ) -> StoreResult<()> {
        let (routes, body_bytes): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM routes WHERE workspace_id = $1",
        )
        .bind(workspace_id)
        .fetch_one(&mut *conn)
        .await?;
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
        SqlStore::<DB>::enforce_route_quota(conn, workspace_id, to_u64(routes)).await?;
        Ok(())
    }

    pub(super) async fn scenario_id(
        conn: &mut DB::Connection,
        workspace_id: Uuid,
        name: &Slug,
        key: &WorkspaceRef,
    ) -> StoreResult<Uuid> {
        sqlx::query_scalar("SELECT id FROM scenarios WHERE workspace_id = $1 AND name = $2")
            .bind(workspace_id)
            .bind(name.to_string())
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("scenario '{name}' of {key}")))
    }
}

/// Routes of a workspace's working copies.
#[async_trait]
pub trait RouteStore: Send + Sync {
    /// Adds routes to the working copy of a scenario (`None`: "default")
    /// atomically: all or none.
    async fn create_scenario_routes(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        scenario: Option<&Slug>,
        routes: Vec<RouteSpec>,
    ) -> StoreResult<Vec<RouteRecord>>;
    /// Adds routes to the "default" scenario atomically: all or none.
    async fn create_routes(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        routes: Vec<RouteSpec>,
    ) -> StoreResult<Vec<RouteRecord>> {
        self.create_scenario_routes(org, workspace, None, routes)
            .await
    }
    async fn get_route(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        id: Uuid,
    ) -> StoreResult<RouteRecord>;
    /// One scenario's routes (`None`: every scenario's), in creation order,
    /// starting after route `after`.
    async fn list_scenario_routes(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        scenario: Option<&Slug>,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<RouteRecord, Uuid>>;
    /// Every scenario's routes, in creation order, starting after `after`.
    async fn list_routes(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<RouteRecord, Uuid>> {
        self.list_scenario_routes(org, workspace, None, after, limit)
            .await
    }
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
}

#[async_trait]
impl<DB> RouteStore for SqlStore<DB>
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
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<Uuid>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<i32>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB> + Decode<'q, DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    async fn create_scenario_routes(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        scenario: Option<&Slug>,
        routes: Vec<RouteSpec>,
    ) -> StoreResult<Vec<RouteRecord>> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::fetch_workspace(&mut tx, org, workspace).await?;
        let scenario = match scenario {
            Some(name) => name.clone(),
            None => default_scenario(),
        };
        let scenario_id = SqlStore::<DB>::scenario_id(&mut tx, ws.id, &scenario, workspace).await?;
        let records =
            SqlStore::<DB>::insert_routes(&mut tx, org, ws.id, scenario_id, &scenario, routes)
                .await?;
        SqlStore::<DB>::check_workspace_limits(&mut tx, ws.id).await?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(org, "route.create", format!("workspace/{}/scenario/{scenario}", ws.slug)).workspace(ws.id).summary(json!({"after": records.iter().map(|r| format!("{} {} {}", r.spec.method, r.spec.path, r.id)).collect::<Vec<_>>()})),
        )
        .await?;
        SqlStore::<DB>::bump_revision(&mut tx, ws.id).await?;
        tx.commit().await?;
        Ok(records)
    }

    async fn get_route(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        id: Uuid,
    ) -> StoreResult<RouteRecord> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::fetch_workspace(&mut conn, org, workspace).await?;
        SqlStore::<DB>::fetch_route(&mut conn, ws.id, id)
            .await?
            .into_record()
    }

    async fn list_scenario_routes(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        scenario: Option<&Slug>,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<RouteRecord, Uuid>> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::fetch_workspace(&mut conn, org, workspace).await?;
        let rows: Vec<RouteRow> = match scenario {
            None => {
                sqlx::query_as(concat!(
                    select_route!(),
                    "WHERE workspace_id = $1 AND id > $2 ORDER BY id LIMIT $3"
                ))
                .bind(ws.id)
                .bind(after.unwrap_or(Uuid::nil()))
                .bind(page_limit(limit) + 1)
                .fetch_all(&mut *conn)
                .await?
            }
            Some(name) => {
                let scenario_id =
                    SqlStore::<DB>::scenario_id(&mut conn, ws.id, name, workspace).await?;
                sqlx::query_as(concat!(
                    select_route!(),
                    "WHERE workspace_id = $1 AND id > $2 AND scenario_id = $4 ORDER BY id LIMIT $3"
                ))
                .bind(ws.id)
                .bind(after.unwrap_or(Uuid::nil()))
                .bind(page_limit(limit) + 1)
                .bind(scenario_id)
                .fetch_all(&mut *conn)
                .await?
            }
        };
        let items = rows
            .into_iter()
            .map(RouteRow::into_record)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |r| r.id))
    }

    async fn update_route(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        id: Uuid,
        patch: &RoutePatch,
        expected_version: Option<i64>,
    ) -> StoreResult<RouteRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::fetch_workspace(&mut tx, org, workspace).await?;
        for _ in 0..CONFLICT_RETRIES {
            let current = SqlStore::<DB>::fetch_route(&mut tx, ws.id, id)
                .await?
                .into_record()?;
            check_version(format!("route {id}"), current.version, expected_version)?;
            let spec = patch.apply(&current.spec)?;
            let now = now();
            let updated = sqlx::query(
                "UPDATE routes SET name = $1, method = $2, path = $3, match_key = $4, status = $5, headers = $6, \
                 body = $7, version = version + 1, updated_at = $8, matchers = $11, priority = $12, \
                 template = $13, realism = $14, state = $15 WHERE id = $9 AND version = $10",
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
            .bind(state_json(&spec))
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(e, || route_clash(0, &spec)))?;
            if DB::rows_affected(&updated) == 0 {
                continue;
            }
            SqlStore::<DB>::check_workspace_limits(&mut tx, ws.id).await?;
            SqlStore::<DB>::append(
                &mut tx,
                Change::new(org, "route.update", format!("workspace/{}/route/{id}", ws.slug)).workspace(ws.id).summary(json!({"before": format!("{} {} -> {}", current.spec.method, current.spec.path, current.spec.response.status), "after": format!("{} {} -> {}", spec.method, spec.path, spec.response.status)})),
            )
            .await?;
            SqlStore::<DB>::bump_revision(&mut tx, ws.id).await?;
            tx.commit().await?;
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
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::fetch_workspace(&mut tx, org, workspace).await?;
        let mut deleted = 0;
        for id in ids {
            let done = sqlx::query("DELETE FROM routes WHERE workspace_id = $1 AND id = $2")
                .bind(ws.id)
                .bind(*id)
                .execute(&mut *tx)
                .await?;
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
            SqlStore::<DB>::append(
                &mut tx,
                Change::new(org, "route.delete", format!("workspace/{}", ws.slug))
                    .workspace(ws.id)
                    .summary(
                        json!({"before": ids.iter().map(Uuid::to_string).collect::<Vec<_>>()}),
                    ),
            )
            .await?;
            SqlStore::<DB>::bump_revision(&mut tx, ws.id).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }
}
