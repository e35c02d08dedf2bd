//! What differs between the two backends: how transactions begin, the
//! migrations, and connection set-up. The SQL itself is shared (both accept
//! `$N` parameters, `RETURNING` and `ON CONFLICT`).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Database, Pool, Postgres, Sqlite};
use tokio_util::sync::CancellationToken;

use super::{SqlStore, Store};

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");

/// How long a request waits for a pooled connection before the store
/// reports itself unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

pub trait Dialect: Database {
    const BACKEND: &'static str;
    /// Opens a transaction that will write. SQLite takes the write lock up
    /// front: a deferred transaction that upgrades from read to write can
    /// fail with SQLITE_BUSY instead of waiting.
    const BEGIN_WRITE: &'static str;
    /// Opens a read-only transaction that sees one consistent snapshot
    /// across all its statements.
    const BEGIN_SNAPSHOT: &'static str;
    /// Names whose rows the transaction may touch (`$1` org, `$2` 'on' for
    /// the whole fleet), for row-level security. `None`: the backend has none.
    const ENTER: Option<&'static str>;
    /// Narrows the transaction to one workspace (`$1`).
    const CONFINE: Option<&'static str>;

    /// Appended to a SELECT that reads a row the transaction will change
    /// on what it read: PostgreSQL locks it (`FOR UPDATE`); SQLite's write
    /// transactions hold the database's write lock from the start.
    const FOR_UPDATE: &'static str;
    /// Appended to a SELECT that claims rows for one replica: PostgreSQL
    /// skips rows another transaction holds (`FOR UPDATE SKIP LOCKED`).
    const SKIP_LOCKED: &'static str;

    /// Run by the transaction that bumps the config revision (`$1`, the
    /// new revision): tells every replica listening, at commit. `None`:
    /// the backend has no such signal (one machine: the local wake-up and
    /// the poll suffice).
    const NOTIFY: Option<&'static str>;

    fn migrator() -> &'static Migrator;

    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// Calls `wake` whenever another replica commits a config change, until
    /// `shutdown`; reconnects after errors. Backends without a signal
    /// return at once.
    fn watch_changes(
        pool: Pool<Self>,
        wake: Arc<dyn Fn() + Send + Sync>,
        shutdown: CancellationToken,
    ) -> futures::future::BoxFuture<'static, ()>;

    /// Takes the lock of periodic job `key` when no other replica holds
    /// it; `None` when one does.
    fn try_job_lock(
        pool: Pool<Self>,
        key: i64,
    ) -> futures::future::BoxFuture<'static, Result<Option<JobLock>, sqlx::Error>>;
}

/// Held while a periodic job runs on this replica (see
/// `Store::job_lock`); dropping it lets another replica run the job.
pub struct JobLock {
    _held: Option<Box<dyn std::any::Any + Send>>,
}

impl JobLock {
    /// A lock that holds nothing: backends with one machine.
    pub fn local() -> Self {
        Self { _held: None }
    }
}

/// A job name as an advisory-lock key (FNV-1a, stable across builds).
pub fn job_key(job: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in job.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

/// The channel config changes are announced on (PostgreSQL NOTIFY).
pub const CONFIG_CHANNEL: &str = "mockplane_config";

impl Dialect for Postgres {
    const BACKEND: &'static str = "postgres";
    const BEGIN_WRITE: &'static str = "BEGIN";
    const BEGIN_SNAPSHOT: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    const ENTER: Option<&'static str> = Some(
        "SELECT set_config('mockplane.org', $1, true), set_config('mockplane.system', $2, true), \
         set_config('mockplane.workspace', '', true)",
    );
    const CONFINE: Option<&'static str> =
        Some("SELECT set_config('mockplane.workspace', $1, true)");
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const NOTIFY: Option<&'static str> =
        Some("SELECT pg_notify('mockplane_config', CAST($1 AS TEXT))");

    fn watch_changes(
        pool: Pool<Self>,
        wake: Arc<dyn Fn() + Send + Sync>,
        shutdown: CancellationToken,
    ) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                let listening = async {
                    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
                    listener.listen(CONFIG_CHANNEL).await?;
                    tracing::info!("listening for config changes of other replicas");
                    // Whatever was missed while not listening.
                    wake();
                    loop {
                        let notification = listener.recv().await?;
                        tracing::debug!(
                            revision = notification.payload(),
                            "config change announced"
                        );
                        wake();
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), sqlx::Error>(())
                };
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    result = listening => {
                        if let Err(error) = result {
                            tracing::warn!(%error, "lost the config change channel; the poll covers until it is back");
                        }
                    }
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        })
    }

    fn try_job_lock(
        pool: Pool<Self>,
        key: i64,
    ) -> futures::future::BoxFuture<'static, Result<Option<JobLock>, sqlx::Error>> {
        Box::pin(async move {
            // A transaction-level advisory lock: held until the transaction
            // ends, which dropping the lock does (a rollback), as does a
            // replica dying (its connection closes).
            let mut tx = pool.begin().await?;
            let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
            Ok(taken.then(|| JobLock {
                _held: Some(Box::new(tx)),
            }))
        })
    }

    fn migrator() -> &'static Migrator {
        &POSTGRES_MIGRATIONS
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

impl Dialect for Sqlite {
    const BACKEND: &'static str = "sqlite";
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    // In WAL mode a read transaction reads one snapshot from its first read.
    const BEGIN_SNAPSHOT: &'static str = "BEGIN";
    // One machine, one tenant's process: the queries' own org filters are
    // the only wall.
    const ENTER: Option<&'static str> = None;
    const CONFINE: Option<&'static str> = None;
    const FOR_UPDATE: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
    const NOTIFY: Option<&'static str> = None;

    fn watch_changes(
        _pool: Pool<Self>,
        _wake: Arc<dyn Fn() + Send + Sync>,
        _shutdown: CancellationToken,
    ) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async {})
    }

    fn try_job_lock(
        _pool: Pool<Self>,
        _key: i64,
    ) -> futures::future::BoxFuture<'static, Result<Option<JobLock>, sqlx::Error>> {
        // One machine: its write transactions are serialized anyway.
        Box::pin(async { Ok(Some(JobLock::local())) })
    }

    fn migrator() -> &'static Migrator {
        &SQLITE_MIGRATIONS
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Row-level security is the second wall between tenants (migration 0012);
/// it does not hold for a superuser or a BYPASSRLS role, so the service
/// refuses to run as one.
async fn refuse_bypassing_role(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let (role, bypasses): (String, bool) = sqlx::query_as(
        "SELECT rolname::text, rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(pool)
    .await
    .context("reading the PostgreSQL role's attributes")?;
    if bypasses {
        anyhow::bail!(
            "PostgreSQL role {role:?} is a superuser or has BYPASSRLS, so row-level security \
             between tenants would not hold for it; connect as an ordinary role that owns the \
             database, e.g. CREATE ROLE mockplane LOGIN PASSWORD '...'; \
             CREATE DATABASE mockplane OWNER mockplane;"
        );
    }
    Ok(())
}

pub(super) async fn open(
    url: &str,
    secrets: crate::secrets::Secrets,
) -> anyhow::Result<Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .context("connecting to PostgreSQL")?;
        refuse_bypassing_role(&pool).await?;
        let store = SqlStore::<Postgres>::new(pool).with_secrets(secrets);
        store.migrate().await?;
        Ok(Arc::new(store))
    } else if url.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("invalid SQLite URL {url:?}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .with_context(|| format!("opening SQLite database {url:?}"))?;
        let store = SqlStore::<Sqlite>::new(pool).with_secrets(secrets);
        store.migrate().await?;
        Ok(Arc::new(store))
    } else {
        anyhow::bail!(
            "unsupported database URL {url:?}: use postgres://user:password@host/db or sqlite://path/to/file.db"
        )
    }
}
