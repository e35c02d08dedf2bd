//! Promotions in the store: reading them, the release history, the pillar
//! rules, the reminders, and opening a workflow step's transaction
//! ([`PromotionTx`](super::PromotionTx), implemented in `promotion_tx`).
//!
//! A promotion's row is read with `FOR UPDATE` on PostgreSQL before any
//! decision on its status, so two approvers or executors racing are
//! serialized and the second sees what the first did (SQLite's write
//! transactions are serialized already).

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use mockplane_shared::governance::promotion::{EntityKind, PillarRules, Status};
use serde_json::json;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::audit::Change;
use super::promotion_records::*;
use super::tx::{Scope, corrupt, now};
use super::{Dialect, SqlStore, StoreError, StoreResult, WorkspaceRef};

/// How a promotion step's transaction reads: a snapshot, or writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxMode {
    Read,
    Write,
}

#[async_trait]
pub trait PromotionStore: Send + Sync {
    /// Opens one step of the promotion workflow: a transaction confined
    /// to `org` (see [`PromotionTx`]).
    async fn begin_promotion(&self, org: Uuid, mode: TxMode) -> StoreResult<Box<dyn PromotionTx>>;
    /// Pending promotions (of every org) whose time ran out at `at`, as
    /// `(org, id)`, the first 500 by expiry.
    async fn due_promotions(&self, at: DateTime<Utc>) -> StoreResult<Vec<(Uuid, Uuid)>>;
    async fn get_promotion(&self, org: Uuid, id: Uuid) -> StoreResult<PromotionRecord>;
    /// Newest first.
    async fn list_promotions(
        &self,
        org: Uuid,
        filter: &PromotionFilter,
    ) -> StoreResult<Vec<PromotionRecord>>;
    /// Pending promotions (of every org) not reminded of yet with at most a
    /// quarter of their own wait left at `at`; marks them reminded, queues
    /// the `expiring` event and returns them.
    async fn remind_promotions(&self, at: DateTime<Utc>) -> StoreResult<Vec<PromotionRecord>>;
    /// What environments served when, newest first.
    async fn list_releases(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        environment: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<ReleaseRecord>>;
    /// The pillar rules in force: the workspace's, else the org's, else the
    /// built-in one. `workspace: None`: the org's.
    async fn approval_rules(
        &self,
        org: Uuid,
        workspace: Option<&WorkspaceRef>,
    ) -> StoreResult<(PillarRules, RulesSource)>;
    /// Sets (or with `None` clears) the workspace's or the org's rules.
    async fn set_approval_rules(
        &self,
        org: Uuid,
        workspace: Option<&WorkspaceRef>,
        rules: Option<PillarRules>,
    ) -> StoreResult<(PillarRules, RulesSource)>;
}

#[async_trait]
impl<DB> PromotionStore for SqlStore<DB>
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
    async fn begin_promotion(&self, org: Uuid, mode: TxMode) -> StoreResult<Box<dyn PromotionTx>> {
        let opener = match mode {
            TxMode::Read => DB::BEGIN_SNAPSHOT,
            TxMode::Write => DB::BEGIN_WRITE,
        };
        let tx = self.begin(opener, Scope::Org(org)).await?;
        Ok(Box::new(SqlPromotionTx { tx, org }))
    }

    async fn due_promotions(&self, at: DateTime<Utc>) -> StoreResult<Vec<(Uuid, Uuid)>> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::System).await?;
        let due: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT org_id, id FROM promotions WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at LIMIT 500",
        )
        .bind(at)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(due)
    }

    async fn get_promotion(&self, org: Uuid, id: Uuid) -> StoreResult<PromotionRecord> {
        self.begin_promotion(org, TxMode::Read)
            .await?
            .finish(id)
            .await
    }

    async fn list_promotions(
        &self,
        org: Uuid,
        filter: &PromotionFilter,
    ) -> StoreResult<Vec<PromotionRecord>> {
        let mut tx = SqlPromotionTx {
            tx: self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?,
            org,
        };
        let workspace = match &filter.workspace {
            Some(key) => Some(
                SqlStore::<DB>::load_workspace(&mut tx.tx, org, key)
                    .await?
                    .id,
            ),
            None => None,
        };
        let limit = i64::from(filter.limit.clamp(1, 500));
        let rows: Vec<PromotionRow> = sqlx::query_as(&format!(
            "{SELECT_PROMOTION}WHERE p.org_id = $1 AND ($2 IS NULL OR p.workspace_id = $2) \
             AND ($3 IS NULL OR p.status = $3) AND ($4 IS NULL OR p.id < $4) ORDER BY p.id DESC LIMIT $5"
        ))
        .bind(org)
        .bind(workspace)
        .bind(filter.status.map(|s| s.as_str().to_owned()))
        .bind(filter.before)
        .bind(limit)
        .fetch_all(&mut *tx.tx)
        .await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            records.push(tx.full_record(row).await?);
        }
        tx.tx.commit().await?;
        Ok(records)
    }

    async fn remind_promotions(&self, at: DateTime<Utc>) -> StoreResult<Vec<PromotionRecord>> {
        let mut tx = SqlPromotionTx {
            tx: self.begin(DB::BEGIN_WRITE, Scope::System).await?,
            org: Uuid::nil(),
        };
        // The longest wait is 90 days; a quarter of any wait is left from
        // `expires_at - wait / 4` on, worked out here rather than in SQL
        // (the backends' time arithmetic differs).
        let horizon = at
            + TimeDelta::seconds(i64::from(
                mockplane_shared::model::environment::MAX_APPROVAL_TIMEOUT_SECS,
            ));
        let candidates: Vec<(Uuid, Uuid, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT org_id, id, created_at, expires_at FROM promotions WHERE status = 'pending' \
             AND reminded_at IS NULL AND expires_at <= $1 ORDER BY expires_at LIMIT 2000",
        )
        .bind(horizon)
        .fetch_all(&mut *tx.tx)
        .await?;
        let due = candidates
            .into_iter()
            .filter(|(_, _, created, expires)| at >= *expires - (*expires - *created) / 4)
            .map(|(org, id, _, _)| (org, id))
            .take(500);
        let at = now();
        let mut reminded = Vec::new();
        for (org, id) in due {
            sqlx::query("UPDATE promotions SET reminded_at = $1 WHERE id = $2")
                .bind(at)
                .bind(id)
                .execute(&mut *tx.tx)
                .await?;
            tx.org = org;
            let row = tx.promotion(id, false).await?;
            let reason = format!("expires at {}", row.expires_at.to_rfc3339());
            let payload = event_payload(&row, "expiring", Status::Pending, "system", &reason);
            SqlStore::<DB>::enqueue(
                &mut tx.tx,
                org,
                row.workspace_id,
                Some(id),
                "expiring",
                &payload,
            )
            .await?;
            reminded.push(tx.full_record(row).await?);
        }
        tx.tx.commit().await?;
        Ok(reminded)
    }

    #[allow(clippy::type_complexity)]
    async fn list_releases(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        environment: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<ReleaseRecord>> {
        let mut tx = SqlPromotionTx {
            tx: self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?,
            org,
        };
        let ws = SqlStore::<DB>::load_workspace(&mut tx.tx, org, workspace).await?;
        let env = match environment {
            Some(name) => Some(
                ws.environment(name)
                    .ok_or_else(|| {
                        StoreError::NotFound(format!("environment '{name}' of {workspace}"))
                    })?
                    .id,
            ),
            None => None,
        };
        let rows: Vec<(String, String, String, i32, i32, String, Option<Uuid>, String, DateTime<Utc>)> =
            sqlx::query_as(
                "SELECT e.name, r.entity_kind, r.scenario, r.version, r.previous_version, r.kind, r.promotion_id, r.actor, r.at \
                 FROM releases r JOIN environments e ON e.id = r.environment_id \
                 WHERE r.workspace_id = $1 AND ($2 IS NULL OR r.environment_id = $2) \
                 ORDER BY r.at DESC, r.id DESC LIMIT $3",
            )
            .bind(ws.id)
            .bind(env)
            .bind(i64::from(limit.clamp(1, 1000)))
            .fetch_all(&mut *tx.tx)
            .await?;
        tx.tx.commit().await?;
        rows.into_iter()
            .map(
                |(environment, entity, name, version, previous, kind, promotion, actor, at)| {
                    Ok(ReleaseRecord {
                        environment,
                        entity: EntityKind::parse(&entity)
                            .map_err(|e| corrupt("release", ws.id, &e))?,
                        name,
                        version: u32::try_from(version).unwrap_or(0),
                        previous_version: u32::try_from(previous).unwrap_or(0),
                        kind,
                        promotion,
                        actor,
                        at,
                    })
                },
            )
            .collect()
    }

    async fn approval_rules(
        &self,
        org: Uuid,
        workspace: Option<&WorkspaceRef>,
    ) -> StoreResult<(PillarRules, RulesSource)> {
        let mut tx = SqlPromotionTx {
            tx: self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?,
            org,
        };
        let ws = match workspace {
            Some(key) => Some(
                SqlStore::<DB>::load_workspace(&mut tx.tx, org, key)
                    .await?
                    .id,
            ),
            None => None,
        };
        let rules = tx.rules_in(ws).await?;
        tx.tx.commit().await?;
        Ok(rules)
    }

    async fn set_approval_rules(
        &self,
        org: Uuid,
        workspace: Option<&WorkspaceRef>,
        rules: Option<PillarRules>,
    ) -> StoreResult<(PillarRules, RulesSource)> {
        let mut tx = SqlPromotionTx {
            tx: self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?,
            org,
        };
        let text = rules.as_ref().map(to_json);
        let (ws, resource) = match workspace {
            Some(key) => {
                let ws = SqlStore::<DB>::load_workspace(&mut tx.tx, org, key).await?;
                sqlx::query("UPDATE workspaces SET approval_rules = $1 WHERE id = $2")
                    .bind(text.clone())
                    .bind(ws.id)
                    .execute(&mut *tx.tx)
                    .await?;
                (Some(ws.id), format!("workspace/{}/approval_rules", ws.slug))
            }
            None => {
                sqlx::query("UPDATE orgs SET approval_rules = $1 WHERE id = $2")
                    .bind(text.clone())
                    .bind(org)
                    .execute(&mut *tx.tx)
                    .await?;
                (None, "org/approval_rules".to_owned())
            }
        };
        let mut change = Change::new(org, "approval_rules.set", resource).summary(
            json!({"after": rules.as_ref().map(|r| serde_json::to_value(r).unwrap_or_default())}),
        );
        if let Some(ws) = ws {
            change = change.workspace(ws);
        }
        SqlStore::<DB>::append(&mut tx.tx, change).await?;
        let now_in_force = tx.rules_in(ws).await?;
        tx.tx.commit().await?;
        Ok(now_in_force)
    }
}
