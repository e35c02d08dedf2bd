//! Notification channels and the outbox of deliveries.
//!
//! A promotion's transitions write one `notifications` row per channel that
//! wants the event, in the transition's own transaction: a committed event
//! is never lost, and a rolled-back one never sent. Any replica then claims
//! due rows (`FOR UPDATE SKIP LOCKED` on PostgreSQL, with a lease), delivers
//! them and records each attempt.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mockplane_shared::EnvSettings;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::audit::Change;
use super::scenarios::decode_content;
use super::tx::{Scope, corrupt, now};
use super::{Dialect, SqlStore, StoreError, StoreResult, WorkspaceRef};
use mockplane_shared::FieldError;

/// The events a channel can subscribe to.
pub const EVENTS: [&str; 9] = [
    "requested",
    "approval_needed",
    "approved",
    "rejected",
    "completed",
    "failed",
    "expiring",
    "expired",
    "rolled_back",
];

/// Most channels one workspace may have.
pub const MAX_CHANNELS: i64 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelKind {
    Webhook,
    Email,
    GitOps,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Webhook => "webhook",
            ChannelKind::Email => "email",
            ChannelKind::GitOps => "gitops",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        match raw {
            "webhook" => Ok(Self::Webhook),
            "email" => Ok(Self::Email),
            "gitops" => Ok(Self::GitOps),
            other => Err(FieldError::new(
                "kind",
                format!("`{other}` is not a channel kind; one of: webhook, email, gitops"),
            )),
        }
    }
}

/// Where a GitOps channel writes and how it opens pull requests.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitOpsConfig {
    /// `github` or `gitlab`.
    pub provider: String,
    /// The provider's API root: `https://api.github.com`,
    /// `https://gitlab.com/api/v4`.
    pub api_url: String,
    /// `owner/name` (GitHub) or the project's id or path (GitLab).
    pub repository: String,
    /// The branch pull requests go into.
    pub base_branch: String,
    /// Where the environment's file goes; `{workspace}` and `{environment}`
    /// are replaced.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub kind: ChannelKind,
    pub target: String,
    /// Only given to the deliverer; the API never shows it.
    pub secret: String,
    pub events: Vec<String>,
    pub gitops: Option<GitOpsConfig>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChannel {
    pub kind: ChannelKind,
    pub target: String,
    pub secret: String,
    pub events: Vec<String>,
    pub gitops: Option<GitOpsConfig>,
    pub created_by: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub at: DateTime<Utc>,
    /// `delivered`, `retry` or `failed`.
    pub outcome: String,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: Uuid,
    pub channel_id: Uuid,
    pub kind: ChannelKind,
    pub target: String,
    pub promotion_id: Option<Uuid>,
    pub event: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: Vec<AttemptRecord>,
    pub last_error: String,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A delivery claimed by this replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: Uuid,
    pub org_id: Uuid,
    pub workspace_id: Uuid,
    pub promotion_id: Option<Uuid>,
    pub event: String,
    pub payload: serde_json::Value,
    /// Attempts before this one.
    pub attempts: u32,
    pub channel: ChannelRecord,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered { detail: String },
    Retry { at: DateTime<Utc>, error: String },
    Failed { error: String },
}

/// What a GitOps delivery leaves on its promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullRequest {
    Opened(String),
    Error(String),
}

#[async_trait]
pub trait NotificationStore: Send + Sync {
    async fn create_channel(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        new: NewChannel,
    ) -> StoreResult<ChannelRecord>;
    async fn list_channels(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
    ) -> StoreResult<Vec<ChannelRecord>>;
    async fn delete_channel(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        id: Uuid,
    ) -> StoreResult<()>;
    /// Newest first; `promotion`: only that one's.
    async fn list_deliveries(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        promotion: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<DeliveryRecord>>;
    /// Claims up to `limit` due deliveries (of every org) for `lease`: no
    /// other replica takes them until it runs out.
    async fn claim_deliveries(
        &self,
        at: DateTime<Utc>,
        lease: chrono::Duration,
        limit: u32,
    ) -> StoreResult<Vec<Claimed>>;
    /// Records an attempt; a GitOps delivery also leaves its pull request
    /// (or the provider's error) on the promotion.
    async fn record_attempt(
        &self,
        claimed: &Claimed,
        outcome: Outcome,
        pull_request: Option<PullRequest>,
    ) -> StoreResult<()>;
    /// What an environment serves (scenarios, personas, settings), as the
    /// YAML document GitOps commits; with `proposed`, what it would serve
    /// with that change in place (a pull request opened on request).
    async fn environment_document(
        &self,
        org: Uuid,
        workspace: Uuid,
        environment: &str,
        proposed: Option<Proposal<'_>>,
    ) -> StoreResult<String>;
}

#[derive(FromRow)]
struct ChannelRow {
    id: Uuid,
    workspace_id: Uuid,
    kind: String,
    target: String,
    secret: String,
    events: String,
    config: String,
    created_by: String,
    created_at: DateTime<Utc>,
}

impl ChannelRow {
    fn into_record(self, secrets: &crate::secrets::Secrets) -> StoreResult<ChannelRecord> {
        let id = self.id;
        let bad = |field: &str, e: String| corrupt("channel", id, &FieldError::new(field, e));
        let kind = ChannelKind::parse(&self.kind).map_err(|e| corrupt("channel", id, &e))?;
        let gitops = if kind == ChannelKind::GitOps {
            Some(serde_json::from_str(&self.config).map_err(|e| bad("config", e.to_string()))?)
        } else {
            None
        };
        Ok(ChannelRecord {
            id,
            workspace_id: self.workspace_id,
            kind,
            target: self.target,
            secret: secrets.open(&self.secret).map_err(|e| bad("secret", e))?,
            events: serde_json::from_str(&self.events).map_err(|e| bad("events", e.to_string()))?,
            gitops,
            created_by: self.created_by,
            created_at: self.created_at,
        })
    }
}

const SELECT_CHANNEL: &str = "SELECT id, workspace_id, kind, target, secret, events, config, created_by, created_at \
     FROM notification_channels ";

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
    /// Writes one delivery per channel of the workspace that wants `event`.
    pub(super) async fn enqueue(
        conn: &mut DB::Connection,
        org: Uuid,
        workspace: Uuid,
        promotion: Option<Uuid>,
        event: &str,
        payload: &serde_json::Value,
    ) -> StoreResult<()> {
        let channels: Vec<(Uuid, String)> =
            sqlx::query_as("SELECT id, events FROM notification_channels WHERE workspace_id = $1")
                .bind(workspace)
                .fetch_all(&mut *conn)
                .await?;
        let at = now();
        for (channel, events) in channels {
            let events: Vec<String> = serde_json::from_str(&events).unwrap_or_default();
            if !events.is_empty() && !events.iter().any(|e| e == event) {
                continue;
            }
            sqlx::query(
                "INSERT INTO notifications (id, org_id, workspace_id, channel_id, promotion_id, event, payload, status, attempts, next_attempt_at, last_error, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', 0, $8, '', $8)",
            )
            .bind(Uuid::now_v7())
            .bind(org)
            .bind(workspace)
            .bind(channel)
            .bind(promotion)
            .bind(event.to_owned())
            .bind(payload.to_string())
            .bind(at)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

/// A change a pull request proposes (see
/// [`NotificationStore::environment_document`]).
#[derive(Debug, Clone)]
pub enum Proposal<'a> {
    Scenario(&'a str, u32),
    Persona(&'a str, u32),
    /// The served part of the settings (see `EnvSettings::served_part`).
    Settings(Box<EnvSettings>),
}

/// What an environment serves, in the document GitOps commits.
#[derive(Serialize)]
struct EnvironmentDocument {
    workspace: String,
    environment: String,
    /// The environment's own served settings (reality level, latency,
    /// chaos, validation); unset ones come from the workspace's defaults.
    settings: EnvSettings,
    scenarios: Vec<ScenarioDocument>,
    personas: Vec<PersonaDocument>,
}

#[derive(Serialize)]
struct PersonaDocument {
    name: String,
    version: u32,
    data: serde_json::Value,
}

#[derive(Serialize)]
struct ScenarioDocument {
    name: String,
    version: u32,
    content_hash: String,
    routes: Vec<RouteDocument>,
}

#[derive(Serialize)]
struct RouteDocument {
    name: String,
    method: String,
    path: String,
    status: u16,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
    body: String,
}

#[async_trait]
impl<DB> NotificationStore for SqlStore<DB>
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
    async fn create_channel(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        new: NewChannel,
    ) -> StoreResult<ChannelRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::load_workspace(&mut tx, org, workspace).await?;
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM notification_channels WHERE workspace_id = $1",
        )
        .bind(ws.id)
        .fetch_one(&mut *tx)
        .await?;
        if count >= MAX_CHANNELS {
            return Err(StoreError::LimitExceeded(format!(
                "workspace '{}' has {count} notification channels, the most it may have",
                ws.slug
            )));
        }
        let id = Uuid::now_v7();
        let at = now();
        let config = match &new.gitops {
            Some(config) => serde_json::to_string(config).unwrap_or_else(|_| "{}".into()),
            None => "{}".into(),
        };
        sqlx::query(
            "INSERT INTO notification_channels (id, org_id, workspace_id, kind, target, secret, events, config, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(id)
        .bind(org)
        .bind(ws.id)
        .bind(new.kind.as_str().to_owned())
        .bind(new.target.clone())
        .bind(self.secrets.seal(&new.secret))
        .bind(serde_json::to_string(&new.events).unwrap_or_else(|_| "[]".into()))
        .bind(config)
        .bind(new.created_by.clone())
        .bind(at)
        .execute(&mut *tx)
        .await?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(org, "notification_channel.create", format!("workspace/{}/channel/{id}", ws.slug))
                .workspace(ws.id)
                .summary(json!({"after": {"kind": new.kind.as_str(), "target": new.target, "events": new.events}})),
        )
        .await?;
        tx.commit().await?;
        Ok(ChannelRecord {
            id,
            workspace_id: ws.id,
            kind: new.kind,
            target: new.target,
            secret: new.secret,
            events: new.events,
            gitops: new.gitops,
            created_by: new.created_by,
            created_at: at,
        })
    }

    async fn list_channels(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
    ) -> StoreResult<Vec<ChannelRecord>> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::load_workspace(&mut tx, org, workspace).await?;
        let rows: Vec<ChannelRow> = sqlx::query_as(&format!(
            "{SELECT_CHANNEL}WHERE workspace_id = $1 ORDER BY created_at, id"
        ))
        .bind(ws.id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.into_iter()
            .map(|row| row.into_record(&self.secrets))
            .collect()
    }

    async fn delete_channel(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        id: Uuid,
    ) -> StoreResult<()> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::load_workspace(&mut tx, org, workspace).await?;
        let deleted =
            sqlx::query("DELETE FROM notification_channels WHERE id = $1 AND workspace_id = $2")
                .bind(id)
                .bind(ws.id)
                .execute(&mut *tx)
                .await?;
        if DB::rows_affected(&deleted) == 0 {
            return Err(StoreError::NotFound(format!(
                "notification channel {id} of workspace '{}'",
                ws.slug
            )));
        }
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(
                org,
                "notification_channel.delete",
                format!("workspace/{}/channel/{id}", ws.slug),
            )
            .workspace(ws.id),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    #[allow(clippy::type_complexity)]
    async fn list_deliveries(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        promotion: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::load_workspace(&mut tx, org, workspace).await?;
        let rows: Vec<(Uuid, Uuid, String, String, Option<Uuid>, String, String, String, DateTime<Utc>, Option<DateTime<Utc>>)> =
            sqlx::query_as(
                "SELECT n.id, n.channel_id, c.kind, c.target, n.promotion_id, n.event, n.status, n.last_error, n.created_at, n.delivered_at \
                 FROM notifications n JOIN notification_channels c ON c.id = n.channel_id \
                 WHERE n.workspace_id = $1 AND ($2 IS NULL OR n.promotion_id = $2) \
                 ORDER BY n.created_at DESC, n.id DESC LIMIT $3",
            )
            .bind(ws.id)
            .bind(promotion)
            .bind(i64::from(limit.clamp(1, 500)))
            .fetch_all(&mut *tx)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (
            id,
            channel_id,
            kind,
            target,
            promotion_id,
            event,
            status,
            last_error,
            created_at,
            delivered_at,
        ) in rows
        {
            let attempts: Vec<(i32, DateTime<Utc>, String, String)> = sqlx::query_as(
                "SELECT attempt, at, outcome, detail FROM notification_attempts WHERE notification_id = $1 ORDER BY attempt",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            out.push(DeliveryRecord {
                id,
                channel_id,
                kind: ChannelKind::parse(&kind).map_err(|e| corrupt("notification", id, &e))?,
                target,
                promotion_id,
                event,
                status,
                attempts: attempts
                    .into_iter()
                    .map(|(attempt, at, outcome, detail)| AttemptRecord {
                        attempt: u32::try_from(attempt).unwrap_or(0),
                        at,
                        outcome,
                        detail,
                    })
                    .collect(),
                last_error,
                created_at,
                delivered_at,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn claim_deliveries(
        &self,
        at: DateTime<Utc>,
        lease: chrono::Duration,
        limit: u32,
    ) -> StoreResult<Vec<Claimed>> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let due: Vec<(Uuid, Uuid, Uuid, Uuid, Option<Uuid>, String, String, i32)> = sqlx::query_as(&format!(
            "SELECT id, org_id, workspace_id, channel_id, promotion_id, event, payload, attempts FROM notifications \
             WHERE status = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2{}",
            DB::SKIP_LOCKED
        ))
        .bind(at)
        .bind(i64::from(limit.clamp(1, 100)))
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed = Vec::with_capacity(due.len());
        for (id, org_id, workspace_id, channel_id, promotion_id, event, payload, attempts) in due {
            sqlx::query("UPDATE notifications SET next_attempt_at = $1 WHERE id = $2")
                .bind(at + lease)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let channel: ChannelRow = sqlx::query_as(&format!("{SELECT_CHANNEL}WHERE id = $1"))
                .bind(channel_id)
                .fetch_one(&mut *tx)
                .await?;
            claimed.push(Claimed {
                id,
                org_id,
                workspace_id,
                promotion_id,
                event,
                payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
                attempts: u32::try_from(attempts).unwrap_or(0),
                channel: channel.into_record(&self.secrets)?,
            });
        }
        tx.commit().await?;
        Ok(claimed)
    }

    async fn record_attempt(
        &self,
        claimed: &Claimed,
        outcome: Outcome,
        pull_request: Option<PullRequest>,
    ) -> StoreResult<()> {
        let mut tx = self
            .begin(DB::BEGIN_WRITE, Scope::Org(claimed.org_id))
            .await?;
        let attempt = i32::try_from(claimed.attempts + 1).unwrap_or(i32::MAX);
        let at = now();
        let (status, next, error, name, detail) = match &outcome {
            Outcome::Delivered { detail } => {
                ("delivered", at, String::new(), "delivered", detail.clone())
            }
            Outcome::Retry { at: next, error } => {
                ("pending", *next, error.clone(), "retry", error.clone())
            }
            Outcome::Failed { error } => ("failed", at, error.clone(), "failed", error.clone()),
        };
        sqlx::query(
            "UPDATE notifications SET status = $1, attempts = $2, next_attempt_at = $3, last_error = $4, \
             delivered_at = $5 WHERE id = $6",
        )
        .bind(status.to_owned())
        .bind(attempt)
        .bind(next)
        .bind(error)
        .bind((status == "delivered").then_some(at))
        .bind(claimed.id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO notification_attempts (notification_id, org_id, workspace_id, attempt, at, outcome, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(claimed.id)
        .bind(claimed.org_id)
        .bind(claimed.workspace_id)
        .bind(attempt)
        .bind(at)
        .bind(name.to_owned())
        .bind(detail.chars().take(2000).collect::<String>())
        .execute(&mut *tx)
        .await?;
        if let (Some(pr), Some(promotion)) = (pull_request, claimed.promotion_id) {
            let (url, error) = match pr {
                PullRequest::Opened(url) => (Some(url), None::<String>),
                PullRequest::Error(error) => (None, Some(error)),
            };
            sqlx::query(
                "UPDATE promotions SET pr_url = COALESCE($1, pr_url), gitops_error = $2 WHERE id = $3",
            )
            .bind(url)
            .bind(error)
            .bind(promotion)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn environment_document(
        &self,
        org: Uuid,
        workspace: Uuid,
        environment: &str,
        proposed: Option<Proposal<'_>>,
    ) -> StoreResult<String> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::load_workspace(&mut tx, org, &WorkspaceRef::Id(workspace)).await?;
        let env = ws.environment(environment).ok_or_else(|| {
            StoreError::NotFound(format!(
                "environment '{environment}' of workspace '{}'",
                ws.slug
            ))
        })?;
        let rows: Vec<(String, Uuid, i32, String, Vec<u8>)> = sqlx::query_as(
            "SELECT sc.name, v.id, v.number, v.content_hash, v.content FROM deployments d \
             JOIN scenarios sc ON sc.id = d.scenario_id JOIN scenario_versions v ON v.id = d.version_id \
             WHERE d.environment_id = $1 ORDER BY sc.name",
        )
        .bind(env.id)
        .fetch_all(&mut *tx)
        .await?;
        let mut rows = rows;
        if let Some(Proposal::Scenario(scenario, number)) = proposed {
            let version: Option<(Uuid, i32, String, Vec<u8>)> = sqlx::query_as(
                "SELECT v.id, v.number, v.content_hash, v.content FROM scenario_versions v \
                 JOIN scenarios sc ON sc.id = v.scenario_id \
                 WHERE sc.workspace_id = $1 AND sc.name = $2 AND v.number = $3",
            )
            .bind(ws.id)
            .bind(scenario.to_owned())
            .bind(i32::try_from(number).unwrap_or(i32::MAX))
            .fetch_optional(&mut *tx)
            .await?;
            let (id, number, hash, content) = version.ok_or_else(|| {
                StoreError::NotFound(format!("version {number} of scenario '{scenario}'"))
            })?;
            rows.retain(|(name, ..)| name != scenario);
            rows.push((scenario.to_owned(), id, number, hash, content));
            rows.sort_by(|a, b| a.0.cmp(&b.0));
        }
        // The first environment of the chain serves the working copies of
        // personas; the others what was promoted into them.
        let personas: Vec<(String, i64, String)> = if ws.chain().first() == Some(environment) {
            sqlx::query_as(
                "SELECT name, version, data FROM personas WHERE workspace_id = $1 ORDER BY name",
            )
            .bind(ws.id)
            .fetch_all(&mut *tx)
            .await
        } else {
            sqlx::query_as(
                "SELECT p.name, d.number, v.data FROM persona_deployments d \
                 JOIN personas p ON p.id = d.persona_id \
                 JOIN persona_versions v ON v.persona_id = d.persona_id AND v.number = d.number \
                 WHERE d.environment_id = $1 ORDER BY p.name",
            )
            .bind(env.id)
            .fetch_all(&mut *tx)
            .await
        }?;
        let mut personas: Vec<PersonaDocument> = personas
            .into_iter()
            .map(|(name, version, data)| PersonaDocument {
                name,
                version: u32::try_from(version).unwrap_or(0),
                data: serde_json::from_str(&data).unwrap_or(serde_json::Value::String(data)),
            })
            .collect();
        if let Some(Proposal::Persona(name, number)) = proposed {
            let data: Option<String> = sqlx::query_scalar(
                "SELECT v.data FROM persona_versions v JOIN personas p ON p.id = v.persona_id \
                 WHERE p.workspace_id = $1 AND p.name = $2 AND v.number = $3",
            )
            .bind(ws.id)
            .bind(name.to_owned())
            .bind(i64::from(number))
            .fetch_optional(&mut *tx)
            .await?;
            let data = data.ok_or_else(|| {
                StoreError::NotFound(format!("version {number} of persona '{name}'"))
            })?;
            personas.retain(|p| p.name != name);
            personas.push(PersonaDocument {
                name: name.to_owned(),
                version: number,
                data: serde_json::from_str(&data).unwrap_or(serde_json::Value::String(data)),
            });
            personas.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let settings = match &proposed {
            Some(Proposal::Settings(promoted)) => promoted.served_part(),
            _ => env.settings.served_part(),
        };
        tx.commit().await?;
        let mut scenarios = Vec::with_capacity(rows.len());
        for (name, version_id, number, content_hash, content) in rows {
            let routes =
                decode_content(&content).map_err(|e| corrupt("version", version_id, &e))?;
            scenarios.push(ScenarioDocument {
                name,
                version: u32::try_from(number).unwrap_or(0),
                content_hash,
                routes: routes
                    .iter()
                    .map(|r| RouteDocument {
                        name: r.spec.name.clone(),
                        method: r.spec.method.as_str().to_owned(),
                        path: r.spec.path.as_str().to_owned(),
                        status: r.spec.response.status,
                        headers: r.spec.response.headers.iter().cloned().collect(),
                        body: String::from_utf8_lossy(&r.spec.response.body).into_owned(),
                    })
                    .collect(),
            });
        }
        serde_yaml::to_string(&EnvironmentDocument {
            workspace: ws.slug.to_string(),
            environment: environment.to_owned(),
            settings,
            scenarios,
            personas,
        })
        .map_err(|e| StoreError::Internal(format!("writing the environment document: {e}")))
    }
}
