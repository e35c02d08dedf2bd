//! The transaction base every part of the store is built on: the store and
//! its pool, [`SqlStore::begin`] with the transaction's [`Scope`] (and
//! [`confine`] to one workspace), database errors translated for people,
//! version checks, paging, time, and the revision bump that tells nodes a
//! workspace changed. It imports nothing from the entity modules, so none
//! of them has to import another's base.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SubsecRound as _, Utc};
use sqlx::error::ErrorKind;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Type};
use uuid::Uuid;

use mockplane_shared::FieldError;

use super::{Dialect, Page, StoreError, StoreResult};

pub struct SqlStore<DB: Database> {
    pub(super) pool: Pool<DB>,
    /// Told after every commit that bumped the revision.
    pub(super) committed: Arc<Listeners>,
    /// Seals the secrets the store keeps (notification channels').
    pub(super) secrets: Arc<crate::secrets::Secrets>,
}

/// Who wants to hear of this replica's config commits (the snapshot
/// cache, through [`super::Store::watch_config_changes`]).
#[derive(Default)]
pub(super) struct Listeners(Mutex<Vec<(u64, Wake)>>, AtomicU64);

type Wake = Arc<dyn Fn() + Send + Sync>;

impl Listeners {
    /// Adds `wake`; the number takes it off again.
    pub(super) fn add(&self, wake: Wake) -> u64 {
        let id = self.1.fetch_add(1, Ordering::Relaxed);
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, wake));
        id
    }

    pub(super) fn remove(&self, id: u64) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(i, _)| *i != id);
    }

    fn wake(&self) {
        let listeners: Vec<Wake> = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(_, wake)| wake.clone())
            .collect();
        for wake in listeners {
            wake();
        }
    }
}

/// A transaction of the store: sqlx's, which it derefs to a connection
/// of, plus whether it bumped the config revision, so that its commit
/// wakes whoever publishes config ([`Tx::commit`]) and no caller has to.
pub(super) struct Tx<DB: Database> {
    inner: sqlx::Transaction<'static, DB>,
    bumped: bool,
    committed: Arc<Listeners>,
}

impl<DB: Database> std::ops::Deref for Tx<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.inner
    }
}

impl<DB: Database> std::ops::DerefMut for Tx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.inner
    }
}

impl<DB: Database> Tx<DB> {
    /// Commits; after a revision bump, then tells the listeners.
    pub(super) async fn commit(self) -> Result<(), sqlx::Error> {
        self.inner.commit().await?;
        if self.bumped {
            self.committed.wake();
        }
        Ok(())
    }

    /// Rolls back: what it wrote is undone, and nobody is told.
    pub(super) async fn rollback(self) -> Result<(), sqlx::Error> {
        self.inner.rollback().await
    }
}

impl<DB: Dialect> SqlStore<DB> {
    pub fn new(pool: Pool<DB>) -> Self {
        Self {
            pool,
            committed: Arc::default(),
            secrets: Arc::default(),
        }
    }

    /// Seals the secrets it keeps with `secrets` (without: stored as given).
    #[must_use]
    pub fn with_secrets(mut self, secrets: crate::secrets::Secrets) -> Self {
        self.secrets = Arc::new(secrets);
        self
    }

    pub fn pool(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Applies pending migrations. Safe to run from several replicas at once:
    /// sqlx takes a database lock for it.
    pub async fn migrate(&self) -> anyhow::Result<()>
    where
        <DB as Database>::Connection: sqlx::migrate::Migrate,
    {
        DB::migrator()
            .run(&self.pool)
            .await
            .map_err(|e| anyhow::anyhow!("applying {} migrations: {e}", DB::BACKEND))
    }
}

/// Whose rows a transaction may touch. On PostgreSQL row-level security
/// holds every transaction to it (migration 0012), so a query that forgets
/// its org filter still cannot reach another tenant; on SQLite the queries'
/// own filters are the wall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// One org's rows (narrowed to one workspace by [`confine`]).
    Org(Uuid),
    /// Every org's rows: only for look-ups that serve the whole fleet or find
    /// the caller before its org is known.
    System,
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
    /// Opens the transaction's scope; the first statement of every transaction.
    pub(super) async fn enter(conn: &mut DB::Connection, scope: Scope) -> StoreResult<()> {
        let Some(sql) = DB::ENTER else {
            return Ok(());
        };
        let (org, system) = match scope {
            Scope::Org(org) => (org.to_string(), "off"),
            Scope::System => (String::new(), "on"),
        };
        sqlx::query::<DB>(sql)
            .bind(org)
            .bind(system.to_owned())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Narrows the transaction to the one workspace it has found: the org's
    /// other workspaces' rows are out of its reach from here on.
    pub(super) async fn confine(conn: &mut DB::Connection, workspace: Uuid) -> StoreResult<()> {
        let Some(sql) = DB::CONFINE else {
            return Ok(());
        };
        sqlx::query::<DB>(sql)
            .bind(workspace.to_string())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Records that a workspace's serving config changed, under a new revision.
    /// Called last in a transaction: the revision row stays locked until commit,
    /// and the commit wakes this replica's snapshot cache.
    pub(super) async fn bump_revision(tx: &mut Tx<DB>, workspace_id: Uuid) -> StoreResult<u64> {
        tx.bumped = true;
        let conn: &mut DB::Connection = tx;
        let revision: i64 = sqlx::query_scalar(
            "UPDATE config_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision",
        )
        .fetch_one(&mut *conn)
        .await?;
        sqlx::query(
            "INSERT INTO change_log (revision, workspace_id, changed_at) VALUES ($1, $2, $3)",
        )
        .bind(revision)
        .bind(workspace_id)
        .bind(now())
        .execute(&mut *conn)
        .await?;
        // Other replicas hear of it when this transaction commits.
        if let Some(notify) = DB::NOTIFY {
            sqlx::query(notify)
                .bind(revision)
                .execute(&mut *conn)
                .await?;
        }
        Ok(to_u64(revision))
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
    /// A transaction (`mode`: [`Dialect::BEGIN_WRITE`] or
    /// [`Dialect::BEGIN_SNAPSHOT`]) held to `scope`. Every query of the store
    /// runs in one: a bare pooled connection has no scope and, on
    /// PostgreSQL, sees no tenant row.
    pub(super) async fn begin(&self, mode: &'static str, scope: Scope) -> StoreResult<Tx<DB>> {
        super::guard::check()?;
        let mut inner = self.pool.begin_with(mode).await?;
        SqlStore::<DB>::enter(&mut inner, scope).await?;
        Ok(Tx {
            inner,
            bumped: false,
            committed: self.committed.clone(),
        })
    }
}

pub(super) fn corrupt(what: &str, id: Uuid, error: &FieldError) -> StoreError {
    StoreError::Internal(format!("stored {what} {id} is invalid ({error})"))
}

/// Translates a database error. Constraint violations become the error the
/// caller describes (the database's own text never reaches a client);
/// connection trouble becomes `Unavailable`.
pub(super) fn db_error(error: sqlx::Error, on_unique: impl FnOnce() -> StoreError) -> StoreError {
    match &error {
        sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation => on_unique(),
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_) => StoreError::Unavailable(error.to_string()),
        _ => StoreError::Internal(error.to_string()),
    }
}

pub(super) fn internal(error: sqlx::Error) -> StoreError {
    db_error(error, || {
        StoreError::Internal("unexpected uniqueness conflict".into())
    })
}

/// How often an update re-reads a row that another transaction changed
/// between our read and our write (PostgreSQL, READ COMMITTED) before giving up.
pub(super) const CONFLICT_RETRIES: usize = 5;

pub(super) fn contended(what: String) -> StoreError {
    StoreError::Conflict(format!(
        "{what} is being changed by others right now; try again"
    ))
}

pub(super) fn check_version(what: String, current: i64, expected: Option<i64>) -> StoreResult<()> {
    match expected {
        Some(expected) if expected != current => Err(StoreError::EtagMismatch {
            what,
            current: current.to_string(),
        }),
        _ => Ok(()),
    }
}

/// The time to store, at the precision both backends keep (microseconds),
/// so a record returned by a write equals the same record read back.
pub(super) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A database integer as a revision or count; a negative one (never
/// written) as 0.
pub(super) fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A revision or count as a database integer, saturating.
pub(super) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(super) fn page_limit(limit: u32) -> i64 {
    i64::from(limit.max(1))
}

impl<T, K> Page<T, K> {
    /// A page from a query that fetched `page_limit(limit) + 1` rows: the
    /// extra row, when there is one, says another page follows, and `key`
    /// of the page's last item is where it starts.
    pub(super) fn from_overfetch(mut items: Vec<T>, limit: u32, key: impl Fn(&T) -> K) -> Self {
        let size = limit.max(1) as usize;
        let next = if items.len() > size {
            items.truncate(size);
            items.last().map(key)
        } else {
            None
        };
        Page { items, next }
    }
}
