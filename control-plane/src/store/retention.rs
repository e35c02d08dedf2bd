//! Retention: deleting rows of the tables that grow with use once they are
//! older than their setting (the jobs and their settings are in
//! `crate::retention`). Each prune is one transaction in `Scope::System`
//! (the jobs serve every org); a dry run runs the same statements and rolls
//! them back, so the count it reports is exactly what a real run deletes.
//!
//! What is never deleted here: a pending delivery, a refresh token that
//! could still be used (or whose reuse must still revoke its session), the
//! access log of an environment that requires a reason, each existing
//! workspace's newest change-log row (what `nodes propagation` compares
//! against), and the change log of the revisions the config stream still
//! computes deltas from.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::tx::{Scope, Tx, to_i64};
use super::{Dialect, SqlStore, StoreResult};

#[async_trait]
pub trait RetentionStore: Send + Sync {
    /// Deletes change-log rows committed before `before` and more than
    /// `keep_revisions` behind the current revision, except each existing
    /// workspace's newest; the log is then complete only after the newest
    /// revision deleted, which the config stream reads (a node or cache
    /// behind it gets everything again instead of a delta).
    async fn prune_change_log(
        &self,
        before: DateTime<Utc>,
        keep_revisions: u64,
        dry_run: bool,
    ) -> StoreResult<u64>;
    /// Deletes usage counts of minutes before `before`.
    async fn prune_usage(&self, before: DateTime<Utc>, dry_run: bool) -> StoreResult<u64>;
    /// Deletes notifications (with their attempts) made before `before`
    /// that were delivered or gave up; pending ones stay.
    async fn prune_deliveries(&self, before: DateTime<Utc>, dry_run: bool) -> StoreResult<u64>;
    /// Deletes the org's environment-access records that expired before
    /// `before`, except those of the `protected` environments.
    async fn prune_access_log(
        &self,
        org: Uuid,
        before: DateTime<Utc>,
        protected: &[String],
        dry_run: bool,
    ) -> StoreResult<u64>;
    /// Deletes refresh tokens that expired, or were revoked, before
    /// `before`. A used token that has not expired stays: presenting it
    /// again must still revoke its session.
    async fn prune_refresh_tokens(&self, before: DateTime<Utc>, dry_run: bool) -> StoreResult<u64>;
}

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// Commits a prune, or undoes it for a dry run.
    async fn finish(tx: Tx<DB>, dry_run: bool) -> StoreResult<()> {
        if dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(())
    }
}

#[async_trait]
impl<DB> RetentionStore for SqlStore<DB>
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
    async fn prune_change_log(
        &self,
        before: DateTime<Utc>,
        keep_revisions: u64,
        dry_run: bool,
    ) -> StoreResult<u64> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let current: i64 = sqlx::query_scalar("SELECT revision FROM config_revision WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let old_enough: Option<i64> =
            sqlx::query_scalar("SELECT MAX(revision) FROM change_log WHERE changed_at < $1")
                .bind(before)
                .fetch_one(&mut *tx)
                .await?;
        let through = old_enough
            .unwrap_or(0)
            .min(current.saturating_sub(to_i64(keep_revisions)));
        if through <= 0 {
            tx.rollback().await?;
            return Ok(0);
        }
        let deleted = sqlx::query(
            "DELETE FROM change_log WHERE revision <= $1 AND (\
                 workspace_id NOT IN (SELECT id FROM workspaces) \
                 OR revision < (SELECT MAX(newest.revision) FROM change_log newest \
                                WHERE newest.workspace_id = change_log.workspace_id))",
        )
        .bind(through)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE config_revision SET pruned_through = $1 WHERE id = 1 AND pruned_through < $1",
        )
        .bind(through)
        .execute(&mut *tx)
        .await?;
        Self::finish(tx, dry_run).await?;
        Ok(DB::rows_affected(&deleted))
    }

    async fn prune_usage(&self, before: DateTime<Utc>, dry_run: bool) -> StoreResult<u64> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let deleted = sqlx::query("DELETE FROM usage WHERE minute < $1")
            .bind(before.timestamp())
            .execute(&mut *tx)
            .await?;
        Self::finish(tx, dry_run).await?;
        Ok(DB::rows_affected(&deleted))
    }

    async fn prune_deliveries(&self, before: DateTime<Utc>, dry_run: bool) -> StoreResult<u64> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        sqlx::query(
            "DELETE FROM notification_attempts WHERE notification_id IN \
             (SELECT id FROM notifications WHERE status <> 'pending' AND created_at < $1)",
        )
        .bind(before)
        .execute(&mut *tx)
        .await?;
        let deleted =
            sqlx::query("DELETE FROM notifications WHERE status <> 'pending' AND created_at < $1")
                .bind(before)
                .execute(&mut *tx)
                .await?;
        Self::finish(tx, dry_run).await?;
        Ok(DB::rows_affected(&deleted))
    }

    async fn prune_access_log(
        &self,
        org: Uuid,
        before: DateTime<Utc>,
        protected: &[String],
        dry_run: bool,
    ) -> StoreResult<u64> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let due: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT id, environment FROM environment_access WHERE org_id = $1 AND expires_at < $2",
        )
        .bind(org)
        .bind(before)
        .fetch_all(&mut *tx)
        .await?;
        let mut deleted = 0;
        for (id, environment) in due {
            if protected.contains(&environment) {
                continue;
            }
            let result = sqlx::query("DELETE FROM environment_access WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            deleted += DB::rows_affected(&result);
        }
        Self::finish(tx, dry_run).await?;
        Ok(deleted)
    }

    async fn prune_refresh_tokens(&self, before: DateTime<Utc>, dry_run: bool) -> StoreResult<u64> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let deleted =
            sqlx::query("DELETE FROM refresh_tokens WHERE expires_at < $1 OR revoked_at < $1")
                .bind(before)
                .execute(&mut *tx)
                .await?;
        Self::finish(tx, dry_run).await?;
        Ok(DB::rows_affected(&deleted))
    }
}
