//! Loading workspaces: their rows and environments, by id or slug, with the
//! transaction confined to the workspace found. Every entity module that
//! acts on a workspace starts here.

use chrono::{DateTime, Utc};
use mockplane_shared::{EnvSettings, FieldError, Slug};
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::tx::{confine, corrupt};
use super::{Dialect, EnvironmentRecord, StoreError, StoreResult, WorkspaceRecord, WorkspaceRef};

macro_rules! select_workspace {
    () => {
        "SELECT w.id, w.org_id, w.slug, w.name, w.description, w.version, w.created_at, w.updated_at, \
         w.active_env, w.env_defaults, w.allow_skips, w.require_keys, \
         (SELECT COUNT(*) FROM routes r WHERE r.workspace_id = w.id) AS route_count \
         FROM workspaces w "
    };
}

macro_rules! select_environment {
    () => {
        "SELECT id, workspace_id, name, position, settings, version, created_at, updated_at \
         FROM environments "
    };
}

/// Chain order, then the environments off the chain by name.
macro_rules! environment_order {
    () => {
        " ORDER BY CASE WHEN position = 0 THEN 1 ELSE 0 END, position, name"
    };
}

pub(super) use {environment_order, select_environment, select_workspace};

#[derive(FromRow)]
pub(super) struct WorkspaceRow {
    pub(super) id: Uuid,
    pub(super) org_id: Uuid,
    pub(super) slug: String,
    pub(super) name: String,
    pub(super) description: String,
    pub(super) version: i64,
    pub(super) route_count: i64,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
    pub(super) active_env: String,
    pub(super) env_defaults: String,
    pub(super) allow_skips: i32,
    pub(super) require_keys: i32,
}

impl WorkspaceRow {
    pub(super) fn into_record(
        self,
        environments: Vec<EnvironmentRecord>,
    ) -> StoreResult<WorkspaceRecord> {
        let bad = |field: &str, message: String| {
            corrupt("workspace", self.id, &FieldError::new(field, message))
        };
        Ok(WorkspaceRecord {
            slug: Slug::parse(&self.slug).map_err(|e| bad("slug", e.to_string()))?,
            active_environment: Slug::parse(&self.active_env)
                .map_err(|e| bad("active_env", e.to_string()))?,
            environment_defaults: parse_settings(&self.env_defaults)
                .map_err(|e| bad("env_defaults", e))?,
            allow_promotion_skips: self.allow_skips != 0,
            require_api_keys: self.require_keys != 0,
            environments,
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

#[derive(FromRow)]
pub(super) struct EnvironmentRow {
    pub(super) id: Uuid,
    pub(super) workspace_id: Uuid,
    pub(super) name: String,
    pub(super) position: i32,
    pub(super) settings: String,
    pub(super) version: i64,
    pub(super) created_at: DateTime<Utc>,
    pub(super) updated_at: DateTime<Utc>,
}

impl EnvironmentRow {
    pub(super) fn into_record(self) -> StoreResult<EnvironmentRecord> {
        let bad = |field: &str, message: String| {
            corrupt("environment", self.id, &FieldError::new(field, message))
        };
        Ok(EnvironmentRecord {
            id: self.id,
            name: Slug::parse(&self.name).map_err(|e| bad("name", e.to_string()))?,
            position: u32::try_from(self.position).unwrap_or(0),
            settings: parse_settings(&self.settings).map_err(|e| bad("settings", e))?,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

pub(super) fn parse_settings(raw: &str) -> Result<EnvSettings, String> {
    if raw.is_empty() {
        return Ok(EnvSettings::default());
    }
    let settings: EnvSettings =
        serde_json::from_str(raw).map_err(|e| format!("stored settings are invalid: {e}"))?;
    settings.check().map_err(|e| e.to_string())?;
    Ok(settings)
}

pub(super) fn settings_json(settings: &EnvSettings) -> String {
    if settings.is_empty() {
        return String::new();
    }
    serde_json::to_string(settings).unwrap_or_default()
}

pub(super) async fn fetch_workspace<DB>(
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
    for<'q> i32: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
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
    let row = query
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
    // From here on the transaction acts on this workspace alone.
    confine::<DB>(&mut *conn, row.id).await?;
    Ok(row)
}

pub(super) fn names(environments: &[EnvironmentRecord]) -> String {
    environments
        .iter()
        .map(|e| e.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn find_environment<'a>(
    ws: &'a WorkspaceRecord,
    name: &Slug,
    key: &WorkspaceRef,
) -> StoreResult<&'a EnvironmentRecord> {
    ws.environment(name.as_str()).ok_or_else(|| {
        StoreError::NotFound(format!(
            "environment '{name}' of {key} (it has {})",
            names(&ws.environments)
        ))
    })
}

/// A workspace with its environments.
pub(super) async fn load_workspace<DB>(
    conn: &mut DB::Connection,
    org: Uuid,
    key: &WorkspaceRef,
) -> StoreResult<WorkspaceRecord>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
{
    let row = fetch_workspace(&mut *conn, org, key).await?;
    let envs: Vec<EnvironmentRow> = sqlx::query_as(concat!(
        select_environment!(),
        "WHERE workspace_id = $1",
        environment_order!()
    ))
    .bind(row.id)
    .fetch_all(&mut *conn)
    .await?;
    let envs = envs
        .into_iter()
        .map(EnvironmentRow::into_record)
        .collect::<StoreResult<Vec<_>>>()?;
    row.into_record(envs)
}
