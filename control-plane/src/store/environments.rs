//! A workspace's environments: adding, renaming or changing settings, removing.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mockplane_shared::model::environment::MAX_ENVIRONMENTS;
use mockplane_shared::{FieldError, Slug};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::audit::Change;
use super::tx::{Scope, SqlStore, check_version, contended, db_error, now};
use super::workspaces::{find_environment, settings_json};
use super::{
    Dialect, EnvironmentPatch, EnvironmentRecord, NewEnvironment, StoreError, StoreResult,
    WorkspaceRecord, WorkspaceRef,
};
use serde_json::json;

/// A workspace's environments: adding, renaming or changing settings, removing.
#[async_trait]
pub trait EnvironmentStore: Send + Sync {
    /// Adds an environment; returns the workspace as it is afterwards.
    /// `creator` becomes admin in the new environment.
    async fn create_environment(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        new: NewEnvironment,
        creator: Option<Uuid>,
    ) -> StoreResult<WorkspaceRecord>;
    /// Renames an environment or changes its settings.
    async fn update_environment(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        patch: &EnvironmentPatch,
        expected_version: Option<i64>,
    ) -> StoreResult<WorkspaceRecord>;
    /// Removes an environment and what is deployed to it. Refused for the
    /// active environment and the last one on the chain.
    async fn delete_environment(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        expected_version: Option<i64>,
    ) -> StoreResult<WorkspaceRecord>;
}

#[async_trait]
impl<DB> EnvironmentStore for SqlStore<DB>
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
    async fn create_environment(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        new: NewEnvironment,
        creator: Option<Uuid>,
    ) -> StoreResult<WorkspaceRecord> {
        new.settings.check().map_err(|e| e.within("settings"))?;
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::load_workspace(&mut tx, org, workspace).await?;
        if ws.environment(new.name.as_str()).is_some() {
            return Err(StoreError::AlreadyExists(format!(
                "{workspace} already has an environment '{}'",
                new.name
            )));
        }
        if ws.environments.len() >= MAX_ENVIRONMENTS {
            return Err(StoreError::LimitExceeded(format!(
                "a workspace has at most {MAX_ENVIRONMENTS} environments"
            )));
        }
        let steps = u32::try_from(ws.chain().steps().len()).unwrap_or(u32::MAX);
        if new.position > steps + 1 {
            return Err(FieldError::new(
                "chain_position",
                format!(
                    "the chain has {steps} steps ({}): place the environment at 1 to {}, or 0 for off the chain",
                    ws.chain().describe(),
                    steps + 1
                ),
            )
            .into());
        }
        if new.position > 0 {
            sqlx::query(
                "UPDATE environments SET position = position + 1 WHERE workspace_id = $1 AND position >= $2",
            )
            .bind(ws.id)
            .bind(i32::try_from(new.position).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await?;
        }
        let now = now();
        let env = EnvironmentRecord {
            id: Uuid::now_v7(),
            name: new.name,
            position: new.position,
            settings: new.settings,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        SqlStore::<DB>::insert_environment(&mut tx, org, ws.id, &env).await?;
        if let Some(creator) = creator {
            SqlStore::<DB>::insert_admin_membership(
                &mut tx,
                org,
                ws.id,
                creator,
                env.name.as_str(),
                env.created_at,
            )
            .await?;
        }
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(org, "environment.create", format!("workspace/{}/environment/{}", ws.slug, env.name)).workspace(ws.id).environment(env.name.to_string()).summary(json!({"after": {"position": env.position, "settings": format!("{:?}", env.settings)}})),
        )
        .await?;
        SqlStore::<DB>::bump_revision(&mut tx, ws.id).await?;
        let record = SqlStore::<DB>::load_workspace(&mut tx, org, &WorkspaceRef::Id(ws.id)).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn update_environment(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        patch: &EnvironmentPatch,
        expected_version: Option<i64>,
    ) -> StoreResult<WorkspaceRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::load_workspace(&mut tx, org, workspace).await?;
        let env = find_environment(&ws, name, workspace)?;
        check_version(
            format!("environment '{name}'"),
            env.version,
            expected_version,
        )?;
        let settings = match &patch.settings {
            Some(change) => {
                let next = change.apply(&env.settings);
                next.check().map_err(|e| e.within("settings"))?;
                next
            }
            None => env.settings.clone(),
        };
        let new_name = patch.name.clone().unwrap_or(env.name.clone());
        if new_name != env.name && ws.environment(new_name.as_str()).is_some() {
            return Err(StoreError::AlreadyExists(format!(
                "{workspace} already has an environment '{new_name}'"
            )));
        }
        let updated = sqlx::query(
            "UPDATE environments SET name = $1, settings = $2, version = version + 1, updated_at = $3 \
             WHERE id = $4 AND version = $5",
        )
        .bind(new_name.to_string())
        .bind(settings_json(&settings))
        .bind(now())
        .bind(env.id)
        .bind(env.version)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            db_error(e, || {
                StoreError::AlreadyExists(format!(
                    "{workspace} already has an environment '{new_name}'"
                ))
            })
        })?;
        if DB::rows_affected(&updated) == 0 {
            return Err(contended(format!("environment '{name}'")));
        }
        if new_name != env.name {
            // Roles and policies follow the environment to its new name.
            for table in ["memberships", "env_policies"] {
                sqlx::query(&format!(
                    "UPDATE {table} SET environment = $1 WHERE workspace_id = $2 AND environment = $3"
                ))
                .bind(new_name.to_string())
                .bind(ws.id)
                .bind(env.name.to_string())
                .execute(&mut *tx)
                .await?;
            }
        }
        if ws.active_environment == env.name && new_name != env.name {
            sqlx::query("UPDATE workspaces SET active_env = $1 WHERE id = $2")
                .bind(new_name.to_string())
                .bind(ws.id)
                .execute(&mut *tx)
                .await?;
        }
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(
                org,
                "environment.update",
                format!("workspace/{}/environment/{}", ws.slug, env.name),
            )
            .workspace(ws.id)
            .environment(env.name.to_string())
            .summary(
                json!({"before": format!("{:?}", env.settings), "patch": format!("{patch:?}")}),
            ),
        )
        .await?;
        SqlStore::<DB>::bump_revision(&mut tx, ws.id).await?;
        let record = SqlStore::<DB>::load_workspace(&mut tx, org, &WorkspaceRef::Id(ws.id)).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn delete_environment(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        expected_version: Option<i64>,
    ) -> StoreResult<WorkspaceRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::load_workspace(&mut tx, org, workspace).await?;
        let env = find_environment(&ws, name, workspace)?;
        check_version(
            format!("environment '{name}'"),
            env.version,
            expected_version,
        )?;
        if ws.active_environment == env.name {
            return Err(StoreError::FailedPrecondition(format!(
                "'{name}' is the active environment of {workspace}; make another one active first"
            )));
        }
        let chain = ws.chain();
        if env.position > 0 && chain.steps().len() == 1 {
            return Err(StoreError::FailedPrecondition(format!(
                "'{name}' is the only environment on the promotion chain of {workspace}; put another on the chain first"
            )));
        }
        sqlx::query("DELETE FROM environments WHERE id = $1")
            .bind(env.id)
            .execute(&mut *tx)
            .await?;
        // Roles and policies name environments; a later environment of the
        // same name starts with none.
        for table in ["memberships", "env_policies"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE workspace_id = $1 AND environment = $2"
            ))
            .bind(ws.id)
            .bind(env.name.to_string())
            .execute(&mut *tx)
            .await?;
        }
        if env.position > 0 {
            sqlx::query(
                "UPDATE environments SET position = position - 1 WHERE workspace_id = $1 AND position > $2",
            )
            .bind(ws.id)
            .bind(i32::try_from(env.position).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await?;
        }
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(org, "environment.delete", format!("workspace/{}/environment/{}", ws.slug, env.name)).workspace(ws.id).environment(env.name.to_string()).summary(json!({"before": {"position": env.position, "settings": format!("{:?}", env.settings)}})),
        )
        .await?;
        SqlStore::<DB>::bump_revision(&mut tx, ws.id).await?;
        let record = SqlStore::<DB>::load_workspace(&mut tx, org, &WorkspaceRef::Id(ws.id)).await?;
        tx.commit().await?;
        Ok(record)
    }
}
