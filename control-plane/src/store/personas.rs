//! Personas: the data templates read as `{{persona.…}}`.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mockplane_shared::model::persona::{MAX_PERSONAS, parse_persona_data};
use mockplane_shared::{FieldError, Slug};
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::audit::Change;
use super::tx::{Scope, SqlStore, check_version, contended, corrupt, db_error, now, to_u64};
use super::{Dialect, PersonaRecord, StoreError, StoreResult, WorkspaceRef};
use serde_json::json;

macro_rules! select_persona {
    () => {
        "SELECT id, name, data, version, created_at, updated_at FROM personas "
    };
}

#[derive(FromRow)]
struct PersonaRow {
    id: Uuid,
    name: String,
    data: String,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl PersonaRow {
    fn into_record(self) -> StoreResult<PersonaRecord> {
        Ok(PersonaRecord {
            name: Slug::parse(&self.name).map_err(|e| {
                corrupt("persona", self.id, &FieldError::new("name", e.to_string()))
            })?,
            data: parse_persona_data(&self.data).map_err(|e| corrupt("persona", self.id, &e))?,
            id: self.id,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            served: Vec::new(),
        })
    }
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
    async fn fetch_persona(
        conn: &mut DB::Connection,
        workspace_id: Uuid,
        name: &Slug,
        key: &WorkspaceRef,
    ) -> StoreResult<PersonaRecord> {
        let row: PersonaRow = sqlx::query_as(concat!(
            select_persona!(),
            "WHERE workspace_id = $1 AND name = $2"
        ))
        .bind(workspace_id)
        .bind(name.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("persona '{name}' of {key}")))?;
        let id = row.id;
        let mut record = row.into_record()?;
        record.served = SqlStore::<DB>::persona_deployments(&mut *conn, workspace_id)
            .await?
            .remove(&id)
            .unwrap_or_default();
        Ok(record)
    }

    /// What the environments after the first of the chain serve of a
    /// workspace's personas: `(environment, version)` per persona, in chain
    /// order.
    async fn persona_deployments(
        conn: &mut DB::Connection,
        workspace_id: Uuid,
    ) -> StoreResult<HashMap<Uuid, Vec<(String, i64)>>> {
        let rows: Vec<PersonaDeploymentRow> = sqlx::query_as(
            "SELECT d.persona_id, e.name, d.number FROM persona_deployments d \
             JOIN environments e ON e.id = d.environment_id \
             WHERE d.workspace_id = $1 \
             AND NOT (e.position > 0 AND e.position = (SELECT MIN(f.position) FROM environments f \
                      WHERE f.workspace_id = e.workspace_id AND f.position > 0)) \
             ORDER BY e.position = 0, e.position, e.name",
        )
        .bind(workspace_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut out: HashMap<Uuid, Vec<(String, i64)>> = HashMap::new();
        for row in rows {
            out.entry(row.persona_id)
                .or_default()
                .push((row.name, row.number));
        }
        Ok(out)
    }

    async fn insert_persona_version(
        conn: &mut DB::Connection,
        persona_id: Uuid,
        number: i64,
        data: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query("INSERT INTO persona_versions (persona_id, number, data, created_at) VALUES ($1, $2, $3, $4)")
            .bind(persona_id)
            .bind(number)
            .bind(data.to_owned())
            .bind(now)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// What a persona of a workspace is served as after the first
/// environment of the chain.
#[derive(FromRow)]
struct PersonaDeploymentRow {
    persona_id: Uuid,
    name: String,
    number: i64,
}

/// Personas: the data templates read as `{{persona.…}}`.
#[async_trait]
pub trait PersonaStore: Send + Sync {
    async fn create_persona(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        data: &serde_json::Value,
    ) -> StoreResult<PersonaRecord>;
    /// The current version, or version `number`.
    async fn get_persona(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        number: Option<u32>,
    ) -> StoreResult<PersonaRecord>;
    /// By name, at their current versions.
    async fn list_personas(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
    ) -> StoreResult<Vec<PersonaRecord>>;
    /// Replaces the data as the next version.
    async fn update_persona(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        data: &serde_json::Value,
        expected_version: Option<i64>,
    ) -> StoreResult<PersonaRecord>;
    async fn delete_persona(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        expected_version: Option<i64>,
    ) -> StoreResult<()>;
}

#[async_trait]
impl<DB> PersonaStore for SqlStore<DB>
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
    async fn create_persona(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        data: &serde_json::Value,
    ) -> StoreResult<PersonaRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::fetch_workspace(&mut tx, org, workspace).await?;
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM personas WHERE workspace_id = $1")
                .bind(ws.id)
                .fetch_one(&mut *tx)
                .await?;
        if to_u64(count) >= MAX_PERSONAS as u64 {
            return Err(StoreError::LimitExceeded(format!(
                "a workspace has at most {MAX_PERSONAS} personas"
            )));
        }
        let id = Uuid::now_v7();
        let now = now();
        let text = data.to_string();
        sqlx::query(
            "INSERT INTO personas (id, workspace_id, org_id, name, data, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $6)",
        )
        .bind(id)
        .bind(ws.id)
        .bind(org)
        .bind(name.to_string())
        .bind(text.clone())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            db_error(e, || {
                StoreError::AlreadyExists(format!("{workspace} already has a persona '{name}'"))
            })
        })?;
        SqlStore::<DB>::insert_persona_version(&mut tx, id, 1, &text, now).await?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(
                org,
                "persona.create",
                format!("workspace/{}/persona/{name}", ws.slug),
            )
            .workspace(ws.id)
            .summary(json!({"after": {"version": 1}})),
        )
        .await?;
        SqlStore::<DB>::bump_revision(&mut tx, ws.id).await?;
        tx.commit().await?;
        Ok(PersonaRecord {
            id,
            name: name.clone(),
            data: data.clone(),
            version: 1,
            created_at: now,
            updated_at: now,
            served: Vec::new(),
        })
    }

    async fn get_persona(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        number: Option<u32>,
    ) -> StoreResult<PersonaRecord> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::fetch_workspace(&mut conn, org, workspace).await?;
        let mut record = SqlStore::<DB>::fetch_persona(&mut conn, ws.id, name, workspace).await?;
        if let Some(number) = number
            && i64::from(number) != record.version
        {
            let old: Option<(String, DateTime<Utc>)> = sqlx::query_as(
                "SELECT data, created_at FROM persona_versions WHERE persona_id = $1 AND number = $2",
            )
            .bind(record.id)
            .bind(i64::from(number))
            .fetch_optional(&mut *conn)
            .await?;
            let (data, created) = old.ok_or_else(|| {
                StoreError::NotFound(format!(
                    "version {number} of persona '{name}' (its versions are 1 to {})",
                    record.version
                ))
            })?;
            record.data =
                parse_persona_data(&data).map_err(|e| corrupt("persona", record.id, &e))?;
            record.version = i64::from(number);
            record.updated_at = created;
        }
        Ok(record)
    }

    async fn list_personas(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
    ) -> StoreResult<Vec<PersonaRecord>> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::fetch_workspace(&mut conn, org, workspace).await?;
        let rows: Vec<PersonaRow> = sqlx::query_as(concat!(
            select_persona!(),
            "WHERE workspace_id = $1 ORDER BY name"
        ))
        .bind(ws.id)
        .fetch_all(&mut *conn)
        .await?;
        let mut served = SqlStore::<DB>::persona_deployments(&mut conn, ws.id).await?;
        rows.into_iter()
            .map(|row| {
                let id = row.id;
                let mut record = row.into_record()?;
                record.served = served.remove(&id).unwrap_or_default();
                Ok(record)
            })
            .collect()
    }

    async fn update_persona(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        data: &serde_json::Value,
        expected_version: Option<i64>,
    ) -> StoreResult<PersonaRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::fetch_workspace(&mut tx, org, workspace).await?;
        let current = SqlStore::<DB>::fetch_persona(&mut tx, ws.id, name, workspace).await?;
        check_version(
            format!("persona '{name}'"),
            current.version,
            expected_version,
        )?;
        let now = now();
        let text = data.to_string();
        let updated = sqlx::query(
            "UPDATE personas SET data = $1, version = version + 1, updated_at = $2 WHERE id = $3 AND version = $4",
        )
        .bind(text.clone())
        .bind(now)
        .bind(current.id)
        .bind(current.version)
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&updated) == 0 {
            return Err(contended(format!("persona '{name}'")));
        }
        SqlStore::<DB>::insert_persona_version(
            &mut tx,
            current.id,
            current.version + 1,
            &text,
            now,
        )
        .await?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(org, "persona.update", format!("workspace/{}/persona/{name}", ws.slug)).workspace(ws.id).summary(json!({"before": {"version": current.version}, "after": {"version": current.version + 1}})),
        )
        .await?;
        SqlStore::<DB>::bump_revision(&mut tx, ws.id).await?;
        tx.commit().await?;
        Ok(PersonaRecord {
            data: data.clone(),
            version: current.version + 1,
            updated_at: now,
            ..current
        })
    }

    async fn delete_persona(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        expected_version: Option<i64>,
    ) -> StoreResult<()> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::fetch_workspace(&mut tx, org, workspace).await?;
        let current = SqlStore::<DB>::fetch_persona(&mut tx, ws.id, name, workspace).await?;
        check_version(
            format!("persona '{name}'"),
            current.version,
            expected_version,
        )?;
        if !current.served.is_empty() {
            let serving: Vec<String> = current
                .served
                .iter()
                .map(|(env, n)| format!("{env} (version {n})"))
                .collect();
            return Err(StoreError::FailedPrecondition(format!(
                "persona '{name}' is served by {}; it can be deleted once no environment after the first serves it (roll back the promotions that put it there)",
                serving.join(", ")
            )));
        }
        sqlx::query("DELETE FROM personas WHERE id = $1")
            .bind(current.id)
            .execute(&mut *tx)
            .await?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(
                org,
                "persona.delete",
                format!("workspace/{}/persona/{name}", ws.slug),
            )
            .workspace(ws.id)
            .summary(json!({"before": {"version": current.version}})),
        )
        .await?;
        SqlStore::<DB>::bump_revision(&mut tx, ws.id).await?;
        Ok(tx.commit().await?)
    }
}
