//! Node tokens: the credentials data-plane nodes present on the config
//! stream. They belong to the fleet, not to an org, so every transaction
//! here runs in `Scope::System`. Only a token's SHA-256 is stored; several
//! can be valid at once, which is how they are rotated (create the new
//! one, move the nodes over, revoke the old one).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::tx::{Scope, db_error, now};
use super::{Dialect, SqlStore, StoreError, StoreResult};

/// Longest node token name.
pub const MAX_NODE_TOKEN_NAME: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct NodeTokenRecord {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A node token name: 1 to 63 letters, digits, `-`, `_` or `.`.
pub fn check_node_token_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > MAX_NODE_TOKEN_NAME
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "a node token name is 1 to {MAX_NODE_TOKEN_NAME} letters, digits, '-', '_' or '.', got {name:?}"
        ));
    }
    Ok(())
}

#[async_trait]
pub trait NodeTokenStore: Send + Sync {
    /// Stores a new token (its hash) under a unique name.
    async fn create_node_token(&self, name: &str, hash: &str) -> StoreResult<NodeTokenRecord>;
    /// The valid (not revoked) token with this hash, marking it used.
    async fn use_node_token(&self, hash: &str) -> StoreResult<Option<NodeTokenRecord>>;
    /// Every token, revoked ones too, by name.
    async fn list_node_tokens(&self) -> StoreResult<Vec<NodeTokenRecord>>;
    /// Revokes a token: streams opened with it afterwards are refused (and
    /// replicas end the open ones when they next check).
    async fn revoke_node_token(&self, name: &str) -> StoreResult<NodeTokenRecord>;
}

const SELECT: &str = "SELECT id, name, created_at, revoked_at, last_used_at FROM node_tokens ";

#[async_trait]
impl<DB> NodeTokenStore for SqlStore<DB>
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
    async fn create_node_token(&self, name: &str, hash: &str) -> StoreResult<NodeTokenRecord> {
        check_node_token_name(name)
            .map_err(|m| StoreError::Invalid(mockplane_shared::FieldError::new("name", m)))?;
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let record = NodeTokenRecord {
            id: Uuid::now_v7(),
            name: name.to_owned(),
            created_at: now(),
            revoked_at: None,
            last_used_at: None,
        };
        sqlx::query(
            "INSERT INTO node_tokens (id, name, token_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(record.id)
        .bind(name.to_owned())
        .bind(hash.to_owned())
        .bind(record.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            db_error(e, || {
                StoreError::AlreadyExists(format!(
                    "a node token named '{name}' exists; pick another name, or revoke and name the new one differently"
                ))
            })
        })?;
        tx.commit().await?;
        Ok(record)
    }

    async fn use_node_token(&self, hash: &str) -> StoreResult<Option<NodeTokenRecord>> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let found: Option<NodeTokenRecord> = sqlx::query_as(&format!(
            "{SELECT}WHERE token_hash = $1 AND revoked_at IS NULL"
        ))
        .bind(hash.to_owned())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(record) = &found {
            sqlx::query("UPDATE node_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now())
                .bind(record.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(found)
    }

    async fn list_node_tokens(&self) -> StoreResult<Vec<NodeTokenRecord>> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::System).await?;
        let rows = sqlx::query_as(&format!("{SELECT}ORDER BY name"))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(rows)
    }

    async fn revoke_node_token(&self, name: &str) -> StoreResult<NodeTokenRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let found: Option<NodeTokenRecord> = sqlx::query_as(&format!("{SELECT}WHERE name = $1"))
            .bind(name.to_owned())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(mut record) = found else {
            return Err(StoreError::NotFound(format!("node token '{name}'")));
        };
        if record.revoked_at.is_none() {
            let at = now();
            sqlx::query("UPDATE node_tokens SET revoked_at = $1 WHERE id = $2")
                .bind(at)
                .bind(record.id)
                .execute(&mut *tx)
                .await?;
            record.revoked_at = Some(at);
        }
        tx.commit().await?;
        Ok(record)
    }
}
