//! Workspaces: their rows and environments, loaded by id or slug with the
//! transaction confined to the workspace found (every entity module that
//! acts on a workspace starts here), and creating, changing and deleting
//! them, with what a new workspace starts with (its environments, the
//! default scenario, its creator's memberships).

use mockplane_shared::EnvSettings;

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

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mockplane_shared::model::checks::ContractCheck;
use mockplane_shared::model::environment::default_environments;
use mockplane_shared::model::org::Quota;
use mockplane_shared::model::scenario::{DEFAULT_SCENARIO, NewScenario, Tag};
use mockplane_shared::{FieldError, NewWorkspace, Slug, WorkspacePatch};
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::audit::Change;
use super::tx::{
    CONFLICT_RETRIES, Scope, SqlStore, check_version, contended, corrupt, db_error, now,
    page_limit, to_u64,
};
use super::{
    Dialect, EnvironmentRecord, Page, StoreError, StoreResult, WorkspaceRecord, WorkspaceRef,
};
use serde_json::json;

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
    pub(super) async fn fetch_workspace(
        conn: &mut DB::Connection,
        org: Uuid,
        key: &WorkspaceRef,
    ) -> StoreResult<WorkspaceRow> {
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
        SqlStore::<DB>::confine(&mut *conn, row.id).await?;
        Ok(row)
    }

    /// A workspace with its environments.
    pub(super) async fn load_workspace(
        conn: &mut DB::Connection,
        org: Uuid,
        key: &WorkspaceRef,
    ) -> StoreResult<WorkspaceRecord> {
        let row = SqlStore::<DB>::fetch_workspace(&mut *conn, org, key).await?;
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

    pub(super) async fn insert_environment(
        conn: &mut DB::Connection,
        org: Uuid,
        workspace_id: Uuid,
        env: &EnvironmentRecord,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO environments (id, workspace_id, org_id, name, position, settings, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7)",
        )
        .bind(env.id)
        .bind(workspace_id)
        .bind(org)
        .bind(env.name.to_string())
        .bind(i32::try_from(env.position).unwrap_or(i32::MAX))
        .bind(settings_json(&env.settings))
        .bind(env.created_at)
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            db_error(e, || {
                StoreError::AlreadyExists(format!("the workspace already has an environment '{}'", env.name))
            })
        })?;
        Ok(())
    }

    pub(super) async fn insert_scenario(
        conn: &mut DB::Connection,
        org: Uuid,
        workspace_id: Uuid,
        new: &NewScenario,
        now: DateTime<Utc>,
    ) -> StoreResult<Uuid> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO scenarios (id, workspace_id, org_id, name, description, tags, version, created_at, updated_at, checks) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7, $8)",
        )
        .bind(id)
        .bind(workspace_id)
        .bind(org)
        .bind(new.name.to_string())
        .bind(new.description.clone())
        .bind(tags_json(&new.tags))
        .bind(now)
        .bind(serde_json::to_string(&new.checks).unwrap_or_else(|_| "[]".to_owned()))
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            db_error(e, || {
                StoreError::AlreadyExists(format!("the workspace already has a scenario '{}'", new.name))
            })
        })?;
        Ok(id)
    }

    pub(super) async fn insert_admin_membership(
        conn: &mut DB::Connection,
        org: Uuid,
        workspace: Uuid,
        principal: Uuid,
        environment: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO memberships (workspace_id, org_id, principal_id, environment, role, created_at) \
             VALUES ($1, $2, $3, $4, 'admin', $5) \
             ON CONFLICT (workspace_id, principal_id, environment) DO UPDATE SET role = 'admin'",
        )
        .bind(workspace)
        .bind(org)
        .bind(principal)
        .bind(environment.to_owned())
        .bind(now)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
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

pub(super) fn default_scenario() -> Slug {
    Slug::parse(DEFAULT_SCENARIO).expect("the default scenario's name is a valid slug")
}

pub(super) fn checks_json(checks: &[ContractCheck]) -> String {
    serde_json::to_string(checks).unwrap_or_else(|_| "[]".to_owned())
}

pub(super) fn tags_json(tags: &[Tag]) -> String {
    let raw: Vec<String> = tags.iter().map(Tag::to_string).collect();
    serde_json::to_string(&raw).unwrap_or_else(|_| "[]".into())
}

/// Workspaces: creating, reading, changing, deleting, and resetting their mock state.
#[async_trait]
pub trait WorkspaceStore: Send + Sync {
    /// `creator` becomes admin in every environment of the new workspace.
    async fn create_workspace(
        &self,
        org: Uuid,
        new: NewWorkspace,
        creator: Option<Uuid>,
    ) -> StoreResult<WorkspaceRecord>;
    async fn get_workspace(&self, org: Uuid, key: &WorkspaceRef) -> StoreResult<WorkspaceRecord>;
    /// Ordered by slug, starting after `after`. With `visible_to`, only the
    /// workspaces where that principal has a role in some environment.
    async fn list_workspaces(
        &self,
        org: Uuid,
        visible_to: Option<Uuid>,
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
    /// Makes every node forget the workspace's state machines: bumps its
    /// state epoch, which travels with its config. Returns the new epoch.
    async fn reset_state(&self, org: Uuid, workspace: &WorkspaceRef) -> StoreResult<u64>;
}

#[async_trait]
impl<DB> WorkspaceStore for SqlStore<DB>
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
    async fn create_workspace(
        &self,
        org: Uuid,
        new: NewWorkspace,
        creator: Option<Uuid>,
    ) -> StoreResult<WorkspaceRecord> {
        new.check()?;
        let (chain, active) = (new.chain(), new.active());
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        SqlStore::<DB>::enforce_quota(&mut tx, org, Quota::Workspaces, 1).await?;
        let id = Uuid::now_v7();
        let now = now();
        sqlx::query(
            "INSERT INTO workspaces (id, org_id, slug, name, description, version, created_at, updated_at, \
             active_env, env_defaults, allow_skips, require_keys) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $6, $7, $8, $9, $10)",
        )
        .bind(id)
        .bind(org)
        .bind(new.slug.to_string())
        .bind(new.name.clone())
        .bind(new.description.clone())
        .bind(now)
        .bind(active.to_string())
        .bind(settings_json(&new.environment_defaults))
        .bind(i32::from(new.allow_promotion_skips))
        .bind(i32::from(new.require_api_keys))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            db_error(e, || {
                StoreError::AlreadyExists(format!("a workspace with slug '{}' already exists", new.slug))
            })
        })?;
        for (name, settings) in default_environments() {
            // Off the chain (0) unless the chain names it.
            let position = chain
                .iter()
                .position(|step| *step == name)
                .map_or(0, |i| i + 1);
            let env = EnvironmentRecord {
                id: Uuid::now_v7(),
                name,
                position: u32::try_from(position).unwrap_or(u32::MAX),
                settings,
                version: 1,
                created_at: now,
                updated_at: now,
            };
            SqlStore::<DB>::insert_environment(&mut tx, org, id, &env).await?;
            if let Some(creator) = creator {
                SqlStore::<DB>::insert_admin_membership(
                    &mut tx,
                    org,
                    id,
                    creator,
                    env.name.as_str(),
                    now,
                )
                .await?;
            }
        }
        SqlStore::<DB>::insert_scenario(
            &mut tx,
            org,
            id,
            &NewScenario {
                name: default_scenario(),
                description: String::new(),
                tags: Vec::new(),
                checks: Vec::new(),
            },
            now,
        )
        .await?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(org, "workspace.create", format!("workspace/{}", new.slug))
                .workspace(id)
                .summary(json!({"after": {
                    "slug": new.slug.to_string(),
                    "name": new.name.clone(),
                    "active_environment": active.to_string(),
                    "promotion_chain": chain.iter().map(Slug::to_string).collect::<Vec<_>>(),
                    "allow_promotion_skips": new.allow_promotion_skips,
                    "require_api_keys": new.require_api_keys,
                    "environment_defaults": serde_json::to_value(&new.environment_defaults).unwrap_or_default(),
                }})),
        )
        .await?;
        SqlStore::<DB>::bump_revision(&mut tx, id).await?;
        let record = SqlStore::<DB>::load_workspace(&mut tx, org, &WorkspaceRef::Id(id)).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn get_workspace(&self, org: Uuid, key: &WorkspaceRef) -> StoreResult<WorkspaceRecord> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        SqlStore::<DB>::load_workspace(&mut conn, org, key).await
    }

    async fn list_workspaces(
        &self,
        org: Uuid,
        visible_to: Option<Uuid>,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<WorkspaceRecord, String>> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let rows: Vec<WorkspaceRow> = sqlx::query_as(concat!(
            select_workspace!(),
            "WHERE w.org_id = $1 AND w.slug > $2 AND ($4 = $5 OR EXISTS \
             (SELECT 1 FROM memberships m WHERE m.workspace_id = w.id AND m.principal_id = $4)) \
             ORDER BY w.slug LIMIT $3"
        ))
        .bind(org)
        .bind(after.unwrap_or("").to_owned())
        .bind(page_limit(limit) + 1)
        .bind(visible_to.unwrap_or(Uuid::nil()))
        .bind(Uuid::nil())
        .fetch_all(&mut *tx)
        .await?;
        let envs: Vec<EnvironmentRow> = sqlx::query_as(concat!(
            select_environment!(),
            "WHERE workspace_id IN (SELECT w.id FROM workspaces w WHERE w.org_id = $1 AND w.slug > $2 \
             AND ($4 = $5 OR EXISTS (SELECT 1 FROM memberships m WHERE m.workspace_id = w.id AND m.principal_id = $4)) \
             ORDER BY w.slug LIMIT $3)",
            environment_order!()
        ))
        .bind(org)
        .bind(after.unwrap_or("").to_owned())
        .bind(page_limit(limit) + 1)
        .bind(visible_to.unwrap_or(Uuid::nil()))
        .bind(Uuid::nil())
        .fetch_all(&mut *tx)
        .await?;
        let mut by_workspace: HashMap<Uuid, Vec<EnvironmentRecord>> = HashMap::new();
        for env in envs {
            let workspace_id = env.workspace_id;
            by_workspace
                .entry(workspace_id)
                .or_default()
                .push(env.into_record()?);
        }
        let items = rows
            .into_iter()
            .map(|row| {
                let envs = by_workspace.remove(&row.id).unwrap_or_default();
                row.into_record(envs)
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |w| w.slug.to_string()))
    }

    async fn update_workspace(
        &self,
        org: Uuid,
        key: &WorkspaceRef,
        patch: &WorkspacePatch,
        expected_version: Option<i64>,
    ) -> StoreResult<WorkspaceRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        for _ in 0..CONFLICT_RETRIES {
            let current = SqlStore::<DB>::load_workspace(&mut tx, org, key).await?;
            check_version(key.to_string(), current.version, expected_version)?;
            let slug = patch.slug.clone().unwrap_or(current.slug.clone());
            let name = patch.name.clone().unwrap_or(current.name.clone());
            let description = patch
                .description
                .clone()
                .unwrap_or(current.description.clone());
            let active = patch
                .active_environment
                .clone()
                .unwrap_or(current.active_environment.clone());
            if current.environment(active.as_str()).is_none() {
                return Err(FieldError::new(
                    "active_environment",
                    format!(
                        "'{active}' is not an environment of {key}; it has {}",
                        names(&current.environments)
                    ),
                )
                .into());
            }
            let defaults = match &patch.environment_defaults {
                Some(change) => {
                    let next = change.apply(&current.environment_defaults);
                    next.check().map_err(|e| e.within("environment_defaults"))?;
                    next
                }
                None => current.environment_defaults.clone(),
            };
            let skips = patch
                .allow_promotion_skips
                .unwrap_or(current.allow_promotion_skips);
            let require_keys = patch.require_api_keys.unwrap_or(current.require_api_keys);
            let now = now();
            let updated = sqlx::query(
                "UPDATE workspaces SET slug = $1, name = $2, description = $3, version = version + 1, \
                 updated_at = $4, active_env = $7, env_defaults = $8, allow_skips = $9, require_keys = $10 \
                 WHERE id = $5 AND version = $6",
            )
            .bind(slug.to_string())
            .bind(name.clone())
            .bind(description.clone())
            .bind(now)
            .bind(current.id)
            .bind(current.version)
            .bind(active.to_string())
            .bind(settings_json(&defaults))
            .bind(i32::from(skips))
            .bind(i32::from(require_keys))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                db_error(e, || StoreError::AlreadyExists(format!("a workspace with slug '{slug}' already exists")))
            })?;
            if DB::rows_affected(&updated) == 0 {
                continue;
            }
            if let Some(chain) = &patch.promotion_chain {
                mockplane_shared::model::workspace::check_chain(chain)?;
                for (index, step) in chain.iter().enumerate() {
                    if current.environment(step.as_str()).is_none() {
                        return Err(FieldError::new(
                            format!("promotion_chain[{index}]"),
                            format!(
                                "'{step}' is not an environment of {key}; it has {}",
                                names(&current.environments)
                            ),
                        )
                        .into());
                    }
                }
                for env in &current.environments {
                    let position = chain
                        .iter()
                        .position(|step| *step == env.name)
                        .map_or(0, |i| i + 1);
                    sqlx::query("UPDATE environments SET position = $1 WHERE id = $2")
                        .bind(i32::try_from(position).unwrap_or(0))
                        .bind(env.id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            SqlStore::<DB>::append(
                &mut tx,
                Change::new(org, "workspace.update", format!("workspace/{}", current.slug)).workspace(current.id).summary(json!({"before": {"slug": current.slug.to_string(), "name": current.name.clone(), "active_environment": current.active_environment.to_string()}, "patch": format!("{patch:?}")})),
            )
            .await?;
            SqlStore::<DB>::bump_revision(&mut tx, current.id).await?;
            let record =
                SqlStore::<DB>::load_workspace(&mut tx, org, &WorkspaceRef::Id(current.id)).await?;
            tx.commit().await?;
            return Ok(record);
        }
        Err(contended(key.to_string()))
    }

    async fn delete_workspace(
        &self,
        org: Uuid,
        key: &WorkspaceRef,
        expected_version: Option<i64>,
    ) -> StoreResult<()> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        for _ in 0..CONFLICT_RETRIES {
            let current = SqlStore::<DB>::fetch_workspace(&mut tx, org, key).await?;
            check_version(key.to_string(), current.version, expected_version)?;
            let deleted = sqlx::query("DELETE FROM workspaces WHERE id = $1 AND version = $2")
                .bind(current.id)
                .bind(current.version)
                .execute(&mut *tx)
                .await?;
            if DB::rows_affected(&deleted) == 0 {
                continue;
            }
            SqlStore::<DB>::append(
                &mut tx,
                Change::new(org, "workspace.delete", format!("workspace/{}", current.slug)).workspace(current.id).summary(json!({"before": {"slug": current.slug.to_string(), "name": current.name.clone(), "routes": current.route_count}})),
            )
            .await?;
            SqlStore::<DB>::bump_revision(&mut tx, current.id).await?;
            return Ok(tx.commit().await?);
        }
        Err(contended(key.to_string()))
    }

    async fn reset_state(&self, org: Uuid, workspace: &WorkspaceRef) -> StoreResult<u64> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::fetch_workspace(&mut tx, org, workspace).await?;
        let epoch: i64 = sqlx::query_scalar(
            "UPDATE workspaces SET state_epoch = state_epoch + 1 WHERE id = $1 RETURNING state_epoch",
        )
        .bind(ws.id)
        .fetch_one(&mut *tx)
        .await?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(
                org,
                "workspace.reset_state",
                format!("workspace/{}", ws.slug),
            )
            .workspace(ws.id)
            .summary(json!({"after": {"state_epoch": epoch}})),
        )
        .await?;
        SqlStore::<DB>::bump_revision(&mut tx, ws.id).await?;
        tx.commit().await?;
        Ok(to_u64(epoch))
    }
}
