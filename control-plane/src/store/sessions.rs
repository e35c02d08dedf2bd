//! Sessions: refresh tokens in families, used once each (a reuse revokes the
//! family), each event audited as the session's owner.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::audit::Change;
use super::principals::{Principal, PrincipalRow, SELECT_PRINCIPAL};
use super::tx::{Scope, db_error, now};
use super::{Dialect, SqlStore, StoreError, StoreResult};
use serde_json::json;

/// Why a refresh token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The token was valid and is now used up.
    Used {
        principal: Principal,
        family: Uuid,
    },
    Unknown,
    Expired,
    /// Used before: the whole family is revoked now.
    Reused,
    /// Revoked (its session was ended) without being used.
    Revoked,
}

/// A refresh token row, found by its hash.
struct RefreshRow {
    id: Uuid,
    org: Uuid,
    principal_id: Uuid,
    family: Uuid,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
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
    async fn find_refresh_token(
        conn: &mut DB::Connection,
        token_hash: &str,
    ) -> StoreResult<Option<RefreshRow>> {
        type Row = (
            Uuid,
            Uuid,
            Uuid,
            Uuid,
            DateTime<Utc>,
            Option<DateTime<Utc>>,
            Option<DateTime<Utc>>,
        );
        let row: Option<Row> = sqlx::query_as(
            "SELECT id, org_id, principal_id, family, expires_at, used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(token_hash.to_owned())
        .fetch_optional(&mut *conn)
        .await?;
        Ok(row.map(
            |(id, org, principal_id, family, expires_at, used_at, revoked_at)| RefreshRow {
                id,
                org,
                principal_id,
                family,
                expires_at,
                used_at,
                revoked_at,
            },
        ))
    }

    async fn insert_refresh_token(
        conn: &mut DB::Connection,
        principal: &Principal,
        family: Uuid,
        token_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, org_id, principal_id, family, token_hash, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(Uuid::now_v7())
        .bind(principal.org_id)
        .bind(principal.id)
        .bind(family)
        .bind(token_hash.to_owned())
        .bind(expires_at)
        .bind(now())
        .execute(&mut *conn)
        .await
        .map_err(|e| db_error(e, || StoreError::Conflict("refresh token collision; try again".into())))?;
        Ok(())
    }

    /// Revokes what is left of a session; how many tokens that was.
    async fn revoke_family(
        conn: &mut DB::Connection,
        family: Uuid,
        at: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let done = sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = $1 WHERE family = $2 AND revoked_at IS NULL AND used_at IS NULL",
        )
        .bind(at)
        .bind(family)
        .execute(&mut *conn)
        .await?;
        Ok(DB::rows_affected(&done))
    }
}

/// A session event, on the record as the person whose session it is (the
/// requests that start, refresh and end sessions carry no other caller).
fn session_change(
    principal: &Principal,
    action: &'static str,
    credential: &'static str,
    family: Uuid,
) -> Change {
    Change::new(principal.org_id, action, format!("session/{family}")).by(
        format!("{}:{}", principal.kind.as_str(), principal.id),
        principal.display.clone(),
        credential,
    )
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    /// A login: the session's first refresh token (a new family), and its
    /// audit event. Returns the family.
    async fn start_session(
        &self,
        principal: &Principal,
        token_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<Uuid>;
    /// Uses a refresh token up and, when it was valid, stores the session's
    /// next one (`next`: hash and expiry) in the same transaction. A token
    /// used twice revokes its whole session.
    async fn use_refresh_token(
        &self,
        token_hash: &str,
        next: (&str, DateTime<Utc>),
    ) -> StoreResult<RefreshOutcome>;
    /// A logout: revokes every refresh token of the session `token_hash`
    /// belongs to. `false` when the token is unknown.
    async fn end_session(&self, token_hash: &str) -> StoreResult<bool>;
}

#[async_trait]
impl<DB> SessionStore for SqlStore<DB>
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
    async fn start_session(
        &self,
        principal: &Principal,
        token_hash: &str,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<Uuid> {
        let mut tx = self
            .begin(DB::BEGIN_WRITE, Scope::Org(principal.org_id))
            .await?;
        let family = Uuid::now_v7();
        SqlStore::<DB>::insert_refresh_token(&mut tx, principal, family, token_hash, expires_at)
            .await?;
        SqlStore::<DB>::append(
            &mut tx,
            session_change(principal, "session.start", "password", family),
        )
        .await?;
        tx.commit().await?;
        Ok(family)
    }

    async fn use_refresh_token(
        &self,
        token_hash: &str,
        next: (&str, DateTime<Utc>),
    ) -> StoreResult<RefreshOutcome> {
        // Only the look-up by secret spans orgs; the rest is the token's org.
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let Some(token) = SqlStore::<DB>::find_refresh_token(&mut tx, token_hash).await? else {
            return Ok(RefreshOutcome::Unknown);
        };
        SqlStore::<DB>::enter(&mut tx, Scope::Org(token.org)).await?;
        let now = now();
        if token.used_at.is_none() && token.revoked_at.is_some() {
            return Ok(RefreshOutcome::Revoked);
        }
        let record = sqlx::query_as::<DB, PrincipalRow>(&format!(
            "{SELECT_PRINCIPAL}WHERE org_id = $1 AND id = $2"
        ))
        .bind(token.org)
        .bind(token.principal_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(PrincipalRow::into_record)
        .transpose()?;
        if token.used_at.is_some() {
            SqlStore::<DB>::revoke_family(&mut tx, token.family, now).await?;
            if let Some(record) = &record {
                SqlStore::<DB>::append(
                    &mut tx,
                    session_change(
                        &record.principal(),
                        "session.revoke",
                        "refresh_token",
                        token.family,
                    )
                    .summary(json!({"why": "a refresh token of the session was used twice"})),
                )
                .await?;
            }
            tx.commit().await?;
            return Ok(RefreshOutcome::Reused);
        }
        if token.expires_at <= now {
            return Ok(RefreshOutcome::Expired);
        }
        let Some(principal) = record.filter(|r| !r.disabled).map(|r| r.principal()) else {
            return Ok(RefreshOutcome::Unknown);
        };
        sqlx::query("UPDATE refresh_tokens SET used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(token.id)
            .execute(&mut *tx)
            .await?;
        SqlStore::<DB>::insert_refresh_token(&mut tx, &principal, token.family, next.0, next.1)
            .await?;
        SqlStore::<DB>::append(
            &mut tx,
            session_change(&principal, "session.refresh", "refresh_token", token.family),
        )
        .await?;
        tx.commit().await?;
        Ok(RefreshOutcome::Used {
            principal,
            family: token.family,
        })
    }

    async fn end_session(&self, token_hash: &str) -> StoreResult<bool> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let Some(token) = SqlStore::<DB>::find_refresh_token(&mut tx, token_hash).await? else {
            return Ok(false);
        };
        SqlStore::<DB>::enter(&mut tx, Scope::Org(token.org)).await?;
        let revoked = SqlStore::<DB>::revoke_family(&mut tx, token.family, now()).await?;
        let record = sqlx::query_as::<DB, PrincipalRow>(&format!(
            "{SELECT_PRINCIPAL}WHERE org_id = $1 AND id = $2"
        ))
        .bind(token.org)
        .bind(token.principal_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(PrincipalRow::into_record)
        .transpose()?;
        // Ending a session that had already ended changes nothing.
        if let Some(record) = record.filter(|_| revoked > 0) {
            SqlStore::<DB>::append(
                &mut tx,
                session_change(
                    &record.principal(),
                    "session.end",
                    "refresh_token",
                    token.family,
                ),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }
}
