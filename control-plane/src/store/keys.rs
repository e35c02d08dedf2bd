//! Data-plane API keys and usage statistics in the store.
//!
//! A key belongs to one environment of one workspace (deleting the
//! environment deletes its keys); only the SHA-256 of its secret is kept.
//! Creating and revoking a key change what nodes serve, so both bump the
//! config revision in their transaction. Usage is what nodes report:
//! request counts per workspace, environment and minute, added up.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mockplane_shared::FieldError;
use mockplane_shared::model::keys::{ApiKeyConfig, MAX_KEYS_PER_ENVIRONMENT, parse_sha256_hex};
use mockplane_shared::model::org::Quota;
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::audit::Change;
use super::tx::{Scope, db_error, now, to_i64};
use super::{Dialect, SqlStore, StoreError, StoreResult, WorkspaceRecord, WorkspaceRef};

/// A key as the API shows it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: Uuid,
    pub workspace_id: Uuid,
    /// The environment the key opens, by its current name.
    pub environment: String,
    pub name: String,
    /// The start of the secret, to recognize the key by.
    pub hint: String,
    pub test: bool,
    /// Why a test key was made; empty for normal keys.
    pub reason: String,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ApiKeyRecord {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// A key to store. The caller made the secret and checked the fields; the
/// store checks what needs the database (the environment, the limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    pub environment: String,
    pub name: String,
    /// SHA-256 of the secret, hex.
    pub key_hash: String,
    pub hint: String,
    /// `None`: until revoked. The API only ever asks for a future time; the
    /// store takes any (tests make expired keys this way).
    pub expires_at: Option<DateTime<Utc>>,
    pub created_by: Option<Uuid>,
    /// Set for a temporary test key.
    pub test: Option<NewTestKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTestKey {
    pub reason: String,
    /// Most active test keys `created_by` may hold in the workspace,
    /// this one included.
    pub max_active: usize,
}

/// Requests one environment of a workspace answered, as a node counted
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCount {
    pub workspace_id: Uuid,
    pub environment: String,
    pub requests: u64,
    pub test_requests: u64,
    /// Requests the environment's limits refused.
    pub limited_requests: u64,
}

/// A node's usage report, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageReport {
    /// Unix seconds of the minute the counts are kept under.
    pub minute: i64,
    pub counts: Vec<UsageCount>,
    /// When keys were last presented.
    pub key_uses: Vec<(Uuid, DateTime<Utc>)>,
}

/// An environment's requests over a time window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageTotal {
    pub environment: String,
    pub requests: u64,
    pub test_requests: u64,
    pub limited_requests: u64,
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores a key of one environment of the workspace and bumps the
    /// config revision. A test key is refused in the chain's first
    /// environment (`FailedPrecondition`) and past its creator's limit of
    /// active test keys (`LimitExceeded`).
    async fn create_api_key(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        new: NewApiKey,
    ) -> StoreResult<ApiKeyRecord>;
    /// Newest first; `environment`: only that one's.
    async fn list_api_keys(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        environment: Option<&str>,
    ) -> StoreResult<Vec<ApiKeyRecord>>;
    async fn get_api_key(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        id: Uuid,
    ) -> StoreResult<ApiKeyRecord>;
    /// Deletes the key and bumps the config revision.
    async fn revoke_api_key(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        id: Uuid,
    ) -> StoreResult<()>;
    /// Deletes every key (of every org) that expired before `before`,
    /// bumping the revision of each workspace that had one. Returns how
    /// many were deleted.
    async fn delete_expired_api_keys(&self, before: DateTime<Utc>) -> StoreResult<u64>;

    /// Adds a node's counts to their minutes and notes when keys were
    /// last used. Counts of workspaces that no longer exist are dropped;
    /// each count is kept against its workspace's own org.
    async fn record_usage(&self, report: &UsageReport) -> StoreResult<()>;
    /// Totals per environment over minutes `since..until` (Unix seconds of
    /// minute starts, `until` excluded): the workspace's environments in
    /// chain order, then other names usage was recorded under.
    async fn usage(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        environment: Option<&str>,
        since: i64,
        until: i64,
    ) -> StoreResult<Vec<UsageTotal>>;
}

#[derive(FromRow)]
struct ApiKeyRow {
    id: Uuid,
    workspace_id: Uuid,
    environment: String,
    name: String,
    hint: String,
    test: i32,
    reason: String,
    created_by: Option<Uuid>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyRow> for ApiKeyRecord {
    fn from(row: ApiKeyRow) -> Self {
        ApiKeyRecord {
            id: row.id,
            workspace_id: row.workspace_id,
            environment: row.environment,
            name: row.name,
            hint: row.hint,
            test: row.test != 0,
            reason: row.reason,
            created_by: row.created_by,
            created_at: row.created_at,
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
        }
    }
}

const SELECT_KEY: &str = "SELECT k.id, k.workspace_id, e.name AS environment, k.name, k.hint, k.test, k.reason, \
     k.created_by, k.created_at, k.expires_at, k.last_used_at \
     FROM api_keys k JOIN environments e ON e.id = k.environment_id ";

/// What serving needs of a key.
#[derive(FromRow)]
pub(super) struct ServingKeyRow {
    pub workspace_id: Uuid,
    pub environment: String,
    id: Uuid,
    key_hash: String,
    test: i32,
    expires_at: Option<DateTime<Utc>>,
}

impl ServingKeyRow {
    /// The key as nodes receive it. A stored hash that does not parse
    /// fails the workspace's config, not the node.
    pub fn config(&self) -> Result<ApiKeyConfig, FieldError> {
        Ok(ApiKeyConfig {
            id: self.id,
            sha256: parse_sha256_hex(&self.key_hash)
                .map_err(|e| e.within(&format!("keys.{}", self.id)))?,
            test: self.test != 0,
            // An expiry at or before the epoch is still an expiry, not
            // "never" (0).
            expires_at_unix: self
                .expires_at
                .map_or(0, |at| u64::try_from(at.timestamp().max(1)).unwrap_or(1)),
        })
    }
}

const SELECT_SERVING_KEY: &str = "SELECT k.workspace_id, e.name AS environment, k.id, k.key_hash, k.test, k.expires_at \
     FROM api_keys k JOIN environments e ON e.id = k.environment_id ";

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
    /// The keys nodes serve, by workspace: every workspace's, or one's.
    pub(super) async fn serving_keys(
        conn: &mut DB::Connection,
        workspace: Option<Uuid>,
    ) -> StoreResult<HashMap<Uuid, Vec<ServingKeyRow>>> {
        let rows: Vec<ServingKeyRow> = match workspace {
            Some(id) => {
                sqlx::query_as(&format!(
                    "{SELECT_SERVING_KEY}WHERE k.workspace_id = $1 ORDER BY e.name, k.id"
                ))
                .bind(id)
                .fetch_all(&mut *conn)
                .await?
            }
            None => {
                sqlx::query_as(&format!(
                    "{SELECT_SERVING_KEY}ORDER BY k.workspace_id, e.name, k.id"
                ))
                .fetch_all(&mut *conn)
                .await?
            }
        };
        let mut by_workspace: HashMap<Uuid, Vec<ServingKeyRow>> = HashMap::new();
        for row in rows {
            by_workspace.entry(row.workspace_id).or_default().push(row);
        }
        Ok(by_workspace)
    }
}

fn key_not_found(id: Uuid, workspace: &WorkspaceRecord) -> StoreError {
    StoreError::NotFound(format!("API key {id} of workspace '{}'", workspace.slug))
}

#[async_trait]
impl<DB> KeyStore for SqlStore<DB>
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
    async fn create_api_key(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        new: NewApiKey,
    ) -> StoreResult<ApiKeyRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::load_workspace(&mut tx, org, workspace).await?;
        let env = ws.environment(&new.environment).ok_or_else(|| {
            StoreError::NotFound(format!(
                "environment '{}' of workspace '{}'",
                new.environment, ws.slug
            ))
        })?;
        SqlStore::<DB>::enforce_quota(&mut tx, org, Quota::ApiKeys, 1).await?;
        let now = now();
        if let Some(test) = &new.test {
            let chain = ws.chain();
            if chain.first() == Some(env.name.as_str()) {
                let later: Vec<String> = ws
                    .environments
                    .iter()
                    .filter(|e| e.name != env.name)
                    .map(|e| format!("'{}'", e.name))
                    .collect();
                return Err(StoreError::FailedPrecondition(format!(
                    "test keys are for the environments after the first of the chain, and '{}' is the first of workspace '{}' (it serves the working copies): make a normal key for it{}",
                    env.name,
                    ws.slug,
                    if later.is_empty() {
                        String::new()
                    } else {
                        format!(", or a test key in {}", later.join(", "))
                    }
                )));
            }
            if let Some(creator) = new.created_by {
                let expiries: Vec<Option<DateTime<Utc>>> = sqlx::query_scalar(
                    "SELECT expires_at FROM api_keys WHERE workspace_id = $1 AND created_by = $2 AND test = 1",
                )
                .bind(ws.id)
                .bind(creator)
                .fetch_all(&mut *tx)
                .await?;
                let mut active: Vec<DateTime<Utc>> = expiries
                    .into_iter()
                    .flatten()
                    .filter(|at| *at > now)
                    .collect();
                if active.len() >= test.max_active {
                    active.sort();
                    return Err(StoreError::LimitExceeded(format!(
                        "you have {} active test keys in workspace '{}', the most one person may have ({}); revoke one (RevokeApiKey) or wait until one expires{}",
                        active.len(),
                        ws.slug,
                        test.max_active,
                        active
                            .first()
                            .map(|at| format!(" (the next at {})", at.to_rfc3339()))
                            .unwrap_or_default()
                    )));
                }
            }
        }
        let in_env: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM api_keys WHERE environment_id = $1")
                .bind(env.id)
                .fetch_one(&mut *tx)
                .await?;
        if usize::try_from(in_env).unwrap_or(usize::MAX) >= MAX_KEYS_PER_ENVIRONMENT {
            return Err(StoreError::LimitExceeded(format!(
                "environment '{}' of workspace '{}' has {in_env} API keys, the most it may have; revoke some first",
                env.name, ws.slug
            )));
        }
        let id = Uuid::now_v7();
        let reason = new
            .test
            .as_ref()
            .map(|t| t.reason.trim().to_owned())
            .unwrap_or_default();
        // `Option<Uuid>` has no encoding generic over the backend: a key
        // without a creator leaves the column out.
        let insert = if new.created_by.is_some() {
            "INSERT INTO api_keys (id, org_id, workspace_id, environment_id, name, key_hash, hint, test, reason, \
             created_at, expires_at, created_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        } else {
            "INSERT INTO api_keys (id, org_id, workspace_id, environment_id, name, key_hash, hint, test, reason, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        };
        let mut query = sqlx::query(insert)
            .bind(id)
            .bind(org)
            .bind(ws.id)
            .bind(env.id)
            .bind(new.name.clone())
            .bind(new.key_hash.clone())
            .bind(new.hint.clone())
            .bind(i32::from(new.test.is_some()))
            .bind(reason.clone())
            .bind(now)
            .bind(new.expires_at);
        if let Some(creator) = new.created_by {
            query = query.bind(creator);
        }
        query.execute(&mut *tx).await.map_err(|e| {
            db_error(e, || {
                StoreError::AlreadyExists("that key already exists".into())
            })
        })?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(
                org,
                "api_key.create",
                format!(
                    "workspace/{}/environment/{}/api_key/{id}",
                    ws.slug, env.name
                ),
            )
            .workspace(ws.id)
            .environment(env.name.to_string())
            .summary(serde_json::json!({"after": {
                "name": new.name.clone(),
                "hint": new.hint.clone(),
                "test": new.test.is_some(),
                "reason": reason.clone(),
                "expires_at": new.expires_at.map(|at| at.to_rfc3339()),
            }})),
        )
        .await?;
        SqlStore::<DB>::bump_revision(&mut tx, ws.id).await?;
        tx.commit().await?;
        Ok(ApiKeyRecord {
            id,
            workspace_id: ws.id,
            environment: env.name.to_string(),
            name: new.name,
            hint: new.hint,
            test: new.test.is_some(),
            reason,
            created_by: new.created_by,
            created_at: now,
            expires_at: new.expires_at,
            last_used_at: None,
        })
    }

    async fn list_api_keys(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        environment: Option<&str>,
    ) -> StoreResult<Vec<ApiKeyRecord>> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::load_workspace(&mut conn, org, workspace).await?;
        if let Some(name) = environment
            && ws.environment(name).is_none()
        {
            return Err(StoreError::NotFound(format!(
                "environment '{name}' of workspace '{}'",
                ws.slug
            )));
        }
        let rows: Vec<ApiKeyRow> = sqlx::query_as(&format!(
            "{SELECT_KEY}WHERE k.workspace_id = $1 AND ($2 = '' OR e.name = $2) \
             ORDER BY k.created_at DESC, k.id DESC"
        ))
        .bind(ws.id)
        .bind(environment.unwrap_or_default().to_owned())
        .fetch_all(&mut *conn)
        .await?;
        Ok(rows.into_iter().map(ApiKeyRecord::from).collect())
    }

    async fn get_api_key(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        id: Uuid,
    ) -> StoreResult<ApiKeyRecord> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::load_workspace(&mut conn, org, workspace).await?;
        sqlx::query_as::<DB, ApiKeyRow>(&format!(
            "{SELECT_KEY}WHERE k.workspace_id = $1 AND k.id = $2"
        ))
        .bind(ws.id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .map(ApiKeyRecord::from)
        .ok_or_else(|| key_not_found(id, &ws))
    }

    async fn revoke_api_key(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        id: Uuid,
    ) -> StoreResult<()> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::load_workspace(&mut tx, org, workspace).await?;
        let found = sqlx::query_as::<DB, ApiKeyRow>(&format!(
            "{SELECT_KEY}WHERE k.workspace_id = $1 AND k.id = $2"
        ))
        .bind(ws.id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| key_not_found(id, &ws))?;
        sqlx::query("DELETE FROM api_keys WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(
                org,
                "api_key.revoke",
                format!(
                    "workspace/{}/environment/{}/api_key/{id}",
                    ws.slug, found.environment
                ),
            )
            .workspace(ws.id)
            .environment(found.environment.clone())
            .summary(serde_json::json!({"before": {
                "name": found.name,
                "hint": found.hint,
                "test": found.test != 0,
            }})),
        )
        .await?;
        SqlStore::<DB>::bump_revision(&mut tx, ws.id).await?;
        Ok(tx.commit().await?)
    }

    async fn delete_expired_api_keys(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        // Compared here rather than in SQL: the two backends store times
        // differently (TIMESTAMPTZ, RFC 3339 text).
        let expiring: Vec<(Uuid, Uuid, Uuid, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT id, org_id, workspace_id, name, expires_at FROM api_keys WHERE expires_at IS NOT NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut workspaces: Vec<Uuid> = Vec::new();
        let mut deleted = 0;
        for (id, org, workspace, name, expires_at) in expiring {
            if expires_at >= before {
                continue;
            }
            let done = sqlx::query("DELETE FROM api_keys WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            deleted += DB::rows_affected(&done);
            // Nobody acts here: the event is the system's.
            SqlStore::<DB>::append(
                &mut tx,
                Change::new(org, "api_key.expire", format!("api_key/{id}"))
                    .workspace(workspace)
                    .summary(serde_json::json!({"before": {
                        "name": name,
                        "expires_at": expires_at.to_rfc3339(),
                    }})),
            )
            .await?;
            if !workspaces.contains(&workspace) {
                workspaces.push(workspace);
            }
        }
        if workspaces.is_empty() {
            return Ok(0);
        }
        for workspace in workspaces {
            SqlStore::<DB>::bump_revision(&mut tx, workspace).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn record_usage(&self, report: &UsageReport) -> StoreResult<()> {
        if report.counts.is_empty() && report.key_uses.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        for count in &report.counts {
            // The org comes from the workspace itself; a workspace deleted
            // since the node counted selects nothing.
            sqlx::query(
                "INSERT INTO usage (workspace_id, org_id, environment, minute, requests, test_requests, limited_requests) \
                 SELECT w.id, w.org_id, $2, $3, $4, $5, $6 FROM workspaces w WHERE w.id = $1 \
                 ON CONFLICT (workspace_id, environment, minute) DO UPDATE SET \
                 requests = usage.requests + excluded.requests, \
                 test_requests = usage.test_requests + excluded.test_requests, \
                 limited_requests = usage.limited_requests + excluded.limited_requests",
            )
            .bind(count.workspace_id)
            .bind(count.environment.clone())
            .bind(report.minute)
            .bind(to_i64(count.requests))
            .bind(to_i64(count.test_requests))
            .bind(to_i64(count.limited_requests))
            .execute(&mut *tx)
            .await?;
        }
        for (id, used_at) in &report.key_uses {
            let last: Option<Option<DateTime<Utc>>> =
                sqlx::query_scalar("SELECT last_used_at FROM api_keys WHERE id = $1")
                    .bind(*id)
                    .fetch_optional(&mut *tx)
                    .await?;
            // Unknown (revoked) keys are skipped; an older report from
            // another node does not move the time back.
            let Some(last) = last else { continue };
            if last.is_some_and(|at| at >= *used_at) {
                continue;
            }
            sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
                .bind(*used_at)
                .bind(*id)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx.commit().await?)
    }

    async fn usage(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        environment: Option<&str>,
        since: i64,
        until: i64,
    ) -> StoreResult<Vec<UsageTotal>> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::load_workspace(&mut conn, org, workspace).await?;
        let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(
            "SELECT environment, CAST(SUM(requests) AS BIGINT), CAST(SUM(test_requests) AS BIGINT), \
             CAST(SUM(limited_requests) AS BIGINT) \
             FROM usage WHERE workspace_id = $1 AND minute >= $2 AND minute < $3 \
             AND ($4 = '' OR environment = $4) GROUP BY environment ORDER BY environment",
        )
        .bind(ws.id)
        .bind(since)
        .bind(until)
        .bind(environment.unwrap_or_default().to_owned())
        .fetch_all(&mut *conn)
        .await?;
        let mut found: HashMap<String, (u64, u64, u64)> = rows
            .into_iter()
            .map(|(env, requests, tests, limited)| {
                let count = |n: i64| u64::try_from(n).unwrap_or(0);
                (env, (count(requests), count(tests), count(limited)))
            })
            .collect();
        let mut totals: Vec<UsageTotal> = ws
            .environments
            .iter()
            .filter(|e| environment.is_none_or(|name| e.name.as_str() == name))
            .map(|e| {
                let (requests, test_requests, limited_requests) =
                    found.remove(e.name.as_str()).unwrap_or_default();
                UsageTotal {
                    environment: e.name.to_string(),
                    requests,
                    test_requests,
                    limited_requests,
                }
            })
            .collect();
        let mut others: Vec<UsageTotal> = found
            .into_iter()
            .map(
                |(environment, (requests, test_requests, limited_requests))| UsageTotal {
                    environment,
                    requests,
                    test_requests,
                    limited_requests,
                },
            )
            .collect();
        others.sort_by(|a, b| a.environment.cmp(&b.environment));
        totals.extend(others);
        Ok(totals)
    }
}
