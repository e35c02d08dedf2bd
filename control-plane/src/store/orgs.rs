//! The store as a whole (its backend, job locks, closing) and orgs: the
//! first run's bootstrap, creating one, adding an owner token.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mockplane_shared::governance::access::OrgRole;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::audit::Change;
use super::tx::{Scope, SqlStore, db_error, now};
use super::{Bootstrapped, Dialect, NewPrincipal, PrincipalKind, Store, StoreError, StoreResult};
use serde_json::json;

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
    for<'q> Option<String>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<Uuid>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<i32>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB> + Decode<'q, DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    fn backend(&self) -> &'static str {
        DB::BACKEND
    }

    async fn watch_config_changes(
        &self,
        wake: std::sync::Arc<dyn Fn() + Send + Sync>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        // This replica's commits, told by the transactions themselves.
        let local = self.committed.add(wake.clone());
        DB::watch_changes(self.pool.clone(), wake, shutdown.clone()).await;
        shutdown.cancelled().await;
        self.committed.remove(local);
    }

    async fn job_lock(&self, job: &str) -> StoreResult<Option<super::JobLock>> {
        Ok(DB::try_job_lock(self.pool.clone(), super::dialect::job_key(job)).await?)
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn bootstrap(
        &self,
        org_name: &str,
        admin: &NewPrincipal,
        token_hash: &str,
    ) -> StoreResult<Option<Bootstrapped>> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let orgs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orgs")
            .fetch_one(&mut *tx)
            .await?;
        if orgs > 0 {
            return Ok(None);
        }
        let now = now();
        let org_id = match SqlStore::<DB>::insert_org(&mut tx, org_name, now).await {
            Ok(id) => id,
            // Another replica bootstrapped between our count and our insert.
            Err(StoreError::AlreadyExists(_)) => return Ok(None),
            Err(other) => return Err(other),
        };
        let owner = SqlStore::<DB>::insert_principal(&mut tx, org_id, admin, now).await?;
        SqlStore::<DB>::insert_token(&mut tx, org_id, owner.id, "admin", token_hash, now, None)
            .await?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(org_id, "org.bootstrap", format!("org/{org_name}"))
                .summary(json!({"owner": owner.id.to_string()})),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(Bootstrapped {
            org_id,
            org_name: org_name.to_owned(),
            admin_id: owner.id,
        }))
    }

    async fn create_org(&self, name: &str) -> StoreResult<Uuid> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let id = SqlStore::<DB>::insert_org(&mut tx, name, now()).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn add_token(
        &self,
        org_name: &str,
        token_name: &str,
        token_hash: &str,
    ) -> StoreResult<Uuid> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let org_id: Option<Uuid> = sqlx::query_scalar("SELECT id FROM orgs WHERE name = $1")
            .bind(org_name.to_owned())
            .fetch_optional(&mut *tx)
            .await?;
        let org_id = org_id.ok_or_else(|| StoreError::NotFound(format!("org '{org_name}'")))?;
        let now = now();
        let owner = SqlStore::<DB>::insert_principal(
            &mut tx,
            org_id,
            &NewPrincipal {
                kind: PrincipalKind::Service,
                email: None,
                name: token_name.to_owned(),
                org_role: OrgRole::Owner,
                password_hash: None,
                must_change_password: false,
            },
            now,
        )
        .await?;
        let id = SqlStore::<DB>::insert_token(
            &mut tx, org_id, owner.id, token_name, token_hash, now, None,
        )
        .await?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(
                org_id,
                "service_account.create",
                format!("principal/{}", owner.id),
            )
            .summary(json!({"name": token_name, "org_role": "owner", "token": id.to_string()})),
        )
        .await?;
        tx.commit().await?;
        Ok(id)
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
    async fn insert_org(
        conn: &mut DB::Connection,
        name: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Uuid> {
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
}
