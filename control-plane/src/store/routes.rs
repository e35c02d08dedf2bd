//! Routes in the database: their rows (whole, or what serving needs), the
//! JSON columns of their matchers, realism and state, inserting a batch into
//! a scenario's working copy, and the limits a workspace keeps.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use mockplane_shared::config::{MAX_ROUTES_PER_WORKSPACE, MAX_WORKSPACE_BODY_BYTES};
use mockplane_shared::realism::Realism;
use mockplane_shared::route::first_duplicate;
use mockplane_shared::state::RawStateRule;
use mockplane_shared::{FieldError, RequestMatch, ResponseSpec, RouteSpec, Slug};
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::tx::{corrupt, db_error, now, to_u64};
use super::{Dialect, RouteRecord, StoreError, StoreResult};

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

pub(super) use {select_route, select_serving_route};

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

/// Inserts routes into a scenario's working copy; a clash with a route the
/// workspace has fails the whole call (the caller's transaction).
pub(super) async fn insert_routes<DB>(
    conn: &mut DB::Connection,
    org: Uuid,
    workspace_id: Uuid,
    scenario_id: Uuid,
    scenario: &Slug,
    routes: Vec<RouteSpec>,
) -> StoreResult<Vec<RouteRecord>>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
{
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

pub(super) async fn fetch_route<DB>(
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
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("route {id}")))
}

/// Refuses a change that leaves a workspace over its limits; the caller's
/// transaction then rolls back.
pub(super) async fn check_workspace_limits<DB>(
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
    Ok(())
}
