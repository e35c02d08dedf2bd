//! Promotions in the store: requests, decisions, execution, rollback and
//! the release history of each environment.
//!
//! Every method is one transaction. The gates run inside the transaction
//! that acts on their result, on what it read: an execution re-runs them
//! against what the target serves at that moment, so a target that changed
//! since the request is judged as it is. A promotion's row is read with
//! `FOR UPDATE` on PostgreSQL before any decision on its status, so two
//! approvers or executors racing are serialized and the second sees what
//! the first did (SQLite's write transactions are serialized already).

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Duration, TimeDelta, Utc};
use mockplane_shared::contract::ContractCheck;
use mockplane_shared::drift::Diff;
use mockplane_shared::promotion::{
    CheckState, EntityKind, Evaluation, Gate, Inputs, PillarRules, Requirement, Status, evaluate,
};
use mockplane_shared::scenario::{Tag, parse_tags};
use mockplane_shared::{ConfigRoute, FieldError, Slug};
use serde_json::json;
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::audit::{Change, append};
use super::notifications::enqueue;
use super::sql::{
    Scope, bump_revision, corrupt, decode_content, fetch_version, internal, load_workspace, now,
    scenario_id,
};
use super::{Dialect, SqlStore, StoreError, StoreResult, WorkspaceRecord, WorkspaceRef};

/// Who acts, as promotions record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub id: Uuid,
    pub name: String,
}

/// A promotion to request (or preview).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPromotion {
    pub kind: EntityKind,
    pub scenario: Slug,
    /// `None`: what `from` serves (the newest version when `from` is the
    /// first environment of the chain).
    pub version: Option<u32>,
    pub from: Slug,
    pub to: Slug,
    pub comment: String,
    pub metadata: BTreeMap<String, String>,
    pub requested_by: Actor,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// `None`: the request itself.
    pub from: Option<Status>,
    pub to: Status,
    pub actor_id: Option<Uuid>,
    pub actor: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionRecord {
    pub approver_id: Uuid,
    pub approver: String,
    /// The approver's role in the target when they decided.
    pub role: String,
    pub approve: bool,
    pub comment: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckRecord {
    pub name: String,
    pub state: CheckState,
    pub url: String,
    pub detail: String,
    pub reported_by: String,
    pub at: DateTime<Utc>,
}

/// An external check's result to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub name: String,
    pub state: CheckState,
    pub url: String,
    pub detail: String,
    pub reported_by: String,
}

/// An approver's decision to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub approver: Actor,
    /// The approver's role in the target environment (`admin` for org
    /// admins).
    pub role: String,
    pub approve: bool,
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionRecord {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub workspace: String,
    /// 1, 2, 3… per workspace.
    pub number: i64,
    pub kind: EntityKind,
    pub scenario: String,
    pub version: u32,
    pub from_environment: String,
    pub to_environment: String,
    pub status: Status,
    /// Why it is in its status.
    pub status_reason: String,
    pub requested_by: Option<Uuid>,
    pub requested_by_name: String,
    pub comment: String,
    pub metadata: BTreeMap<String, String>,
    /// The scenario's tags when it was requested.
    pub tags: Vec<String>,
    pub requirement: Requirement,
    pub diff: Diff,
    pub gates: Vec<Gate>,
    /// Rollback data: what the target served of the scenario before the
    /// execution (`None`: nothing).
    pub previous_version: Option<u32>,
    /// The config revision that made the target serve it.
    pub revision: Option<u64>,
    pub pr_url: Option<String>,
    pub gitops_error: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub reminded_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub transitions: Vec<Transition>,
    pub decisions: Vec<DecisionRecord>,
    pub checks: Vec<CheckRecord>,
}

impl PromotionRecord {
    pub fn approvals(&self) -> usize {
        self.decisions.iter().filter(|d| d.approve).count()
    }
}

/// What a promotion would do, computed without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    pub scenario: String,
    pub version: u32,
    pub from_environment: String,
    pub to_environment: String,
    /// What the target serves of the scenario now.
    pub current_version: Option<u32>,
    pub evaluation: Evaluation,
}

/// One change of what an environment serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRecord {
    pub environment: String,
    pub scenario: String,
    /// 0: the environment stopped serving the scenario.
    pub version: u32,
    pub previous_version: u32,
    /// `promotion`, `rollback` or `deploy`.
    pub kind: String,
    pub promotion: Option<Uuid>,
    pub actor: String,
    pub at: DateTime<Utc>,
}

/// Which promotions to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromotionFilter {
    pub workspace: Option<WorkspaceRef>,
    pub status: Option<Status>,
    /// Ids below this one (newest first): the next page.
    pub before: Option<Uuid>,
    pub limit: u32,
}

/// Where a workspace's pillar rules come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RulesSource {
    BuiltIn,
    Org,
    Workspace,
}

impl RulesSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RulesSource::BuiltIn => "built-in",
            RulesSource::Org => "org",
            RulesSource::Workspace => "workspace",
        }
    }
}

#[async_trait]
pub trait PromotionStore: Send + Sync {
    /// What the promotion would change and what its gates say; nothing is
    /// written.
    async fn preview_promotion(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        new: &NewPromotion,
    ) -> StoreResult<Preview>;
    /// Records a request with its gates' results: `failed` when a gate
    /// failed, `approved` when nobody needs to approve, else `pending`.
    async fn create_promotion(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        new: NewPromotion,
    ) -> StoreResult<PromotionRecord>;
    async fn get_promotion(&self, org: Uuid, id: Uuid) -> StoreResult<PromotionRecord>;
    /// Newest first.
    async fn list_promotions(
        &self,
        org: Uuid,
        filter: &PromotionFilter,
    ) -> StoreResult<Vec<PromotionRecord>>;
    /// An approval or a rejection. Refused for the requester
    /// (`Refused`), a second decision of the same approver
    /// (`AlreadyExists`), a role the target does not accept (`Refused`),
    /// and a promotion that is not pending or has expired
    /// (`FailedPrecondition`; an expired one is marked expired first).
    async fn decide_promotion(
        &self,
        org: Uuid,
        id: Uuid,
        decision: Decision,
    ) -> StoreResult<PromotionRecord>;
    /// Executes an approved promotion in one transaction: the gates again,
    /// the deployment, the release history, the status, the audit event
    /// and the revision. A gate that fails now makes it `failed` (returned,
    /// not an error); external checks not yet green are
    /// `FailedPrecondition` and change nothing.
    async fn execute_promotion(
        &self,
        org: Uuid,
        id: Uuid,
        actor: Actor,
    ) -> StoreResult<PromotionRecord>;
    /// Restores what the target served before a completed promotion.
    /// Refused when a later change replaced its version there.
    async fn rollback_promotion(
        &self,
        org: Uuid,
        id: Uuid,
        actor: Actor,
        reason: &str,
    ) -> StoreResult<PromotionRecord>;
    /// Records an external check's result on a pending or approved
    /// promotion.
    async fn report_check(
        &self,
        org: Uuid,
        id: Uuid,
        report: CheckReport,
    ) -> StoreResult<PromotionRecord>;
    /// Marks every pending promotion (of every org) whose time ran out
    /// expired; returns them.
    async fn expire_promotions(&self, at: DateTime<Utc>) -> StoreResult<Vec<PromotionRecord>>;
    /// Pending promotions (of every org) not reminded of yet with at most a
    /// quarter of their own wait left at `at`; marks them reminded, queues
    /// the `expiring` event and returns them.
    async fn remind_promotions(&self, at: DateTime<Utc>) -> StoreResult<Vec<PromotionRecord>>;
    /// What environments served when, newest first.
    #[allow(clippy::type_complexity)]
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

#[derive(FromRow)]
struct PromotionRow {
    id: Uuid,
    workspace_id: Uuid,
    workspace: String,
    number: i64,
    entity_kind: String,
    scenario_id: Option<Uuid>,
    scenario: String,
    version_id: Option<Uuid>,
    version: i32,
    to_environment_id: Option<Uuid>,
    from_environment: String,
    to_environment: String,
    status: String,
    status_reason: String,
    requested_by: Option<Uuid>,
    requested_by_name: String,
    comment: String,
    metadata: String,
    tags: String,
    approvals_required: i32,
    approver_roles: String,
    approval_reasons: String,
    diff: String,
    gates: String,
    previous_version_id: Option<Uuid>,
    previous_version: Option<i32>,
    revision: Option<i64>,
    pr_url: Option<String>,
    gitops_error: Option<String>,
    expires_at: DateTime<Utc>,
    reminded_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
}

const SELECT_PROMOTION: &str = "SELECT p.id, p.workspace_id, w.slug AS workspace, p.number, p.entity_kind, \
     p.scenario_id, p.scenario, p.version_id, p.version, p.to_environment_id, p.from_environment, \
     p.to_environment, p.status, p.status_reason, p.requested_by, p.requested_by_name, p.comment, \
     p.metadata, p.tags, p.approvals_required, p.approver_roles, p.approval_reasons, p.diff, p.gates, \
     p.previous_version_id, p.previous_version, p.revision, p.pr_url, p.gitops_error, p.expires_at, \
     p.reminded_at, p.created_at, p.updated_at, p.completed_at \
     FROM promotions p JOIN workspaces w ON w.id = p.workspace_id ";

impl PromotionRow {
    fn status(&self) -> StoreResult<Status> {
        Status::parse(&self.status).map_err(|e| corrupt("promotion", self.id, &e))
    }

    fn into_record(
        self,
        transitions: Vec<Transition>,
        decisions: Vec<DecisionRecord>,
        checks: Vec<CheckRecord>,
    ) -> StoreResult<PromotionRecord> {
        let id = self.id;
        let bad = |field: &str, e: String| corrupt("promotion", id, &FieldError::new(field, e));
        let json = |field: &str, text: &str| -> StoreResult<serde_json::Value> {
            serde_json::from_str(text).map_err(|e| bad(field, e.to_string()))
        };
        fn parse<T: serde::de::DeserializeOwned>(
            field: &str,
            value: serde_json::Value,
            id: Uuid,
        ) -> StoreResult<T> {
            serde_json::from_value(value)
                .map_err(|e| corrupt("promotion", id, &FieldError::new(field, e.to_string())))
        }
        Ok(PromotionRecord {
            id,
            workspace_id: self.workspace_id,
            workspace: self.workspace.clone(),
            number: self.number,
            kind: EntityKind::parse(&self.entity_kind).map_err(|e| corrupt("promotion", id, &e))?,
            scenario: self.scenario.clone(),
            version: u32::try_from(self.version).unwrap_or(0),
            from_environment: self.from_environment.clone(),
            to_environment: self.to_environment.clone(),
            status: self.status()?,
            status_reason: self.status_reason.clone(),
            requested_by: self.requested_by,
            requested_by_name: self.requested_by_name.clone(),
            comment: self.comment.clone(),
            metadata: parse("metadata", json("metadata", &self.metadata)?, id)?,
            tags: parse("tags", json("tags", &self.tags)?, id)?,
            requirement: Requirement {
                approvals: u32::try_from(self.approvals_required).unwrap_or(0),
                roles: parse(
                    "approver_roles",
                    json("approver_roles", &self.approver_roles)?,
                    id,
                )?,
                reasons: parse(
                    "approval_reasons",
                    json("approval_reasons", &self.approval_reasons)?,
                    id,
                )?,
            },
            diff: parse("diff", json("diff", &self.diff)?, id)?,
            gates: parse("gates", json("gates", &self.gates)?, id)?,
            previous_version: self.previous_version.and_then(|v| u32::try_from(v).ok()),
            revision: self.revision.and_then(|r| u64::try_from(r).ok()),
            pr_url: self.pr_url,
            gitops_error: self.gitops_error,
            expires_at: self.expires_at,
            reminded_at: self.reminded_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            completed_at: self.completed_at,
            transitions,
            decisions,
            checks,
        })
    }
}

/// What a notification says of a promotion.
fn event_payload(
    row: &PromotionRow,
    event: &str,
    status: Status,
    actor: &str,
    reason: &str,
) -> serde_json::Value {
    json!({
        "event": event,
        "promotion": {
            "id": row.id.to_string(),
            "number": row.number,
            "workspace": row.workspace,
            "scenario": row.scenario,
            "version": row.version,
            "from": row.from_environment,
            "to": row.to_environment,
            "status": status.as_str(),
            "reason": reason,
            "requested_by": row.requested_by_name,
            "comment": row.comment,
            "approvals_required": row.approvals_required,
            "approval_reasons": serde_json::from_str::<serde_json::Value>(&row.approval_reasons).unwrap_or_default(),
        },
        "actor": actor,
        "time": now().to_rfc3339(),
    })
}

fn event_of(status: Status) -> Option<&'static str> {
    match status {
        Status::Pending => None,
        Status::Approved => Some("approved"),
        Status::Rejected => Some("rejected"),
        Status::Completed => Some("completed"),
        Status::Failed => Some("failed"),
        Status::Expired => Some("expired"),
        Status::RolledBack => Some("rolled_back"),
    }
}

fn promotion_not_found(id: Uuid) -> StoreError {
    StoreError::NotFound(format!("promotion {id}"))
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

fn version_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// What the gates of one promotion read, gathered in one transaction.
struct Gathered {
    scenario_id: Uuid,
    version_id: Uuid,
    version: u32,
    tags: Vec<Tag>,
    checks: Vec<ContractCheck>,
    promoted: Vec<ConfigRoute>,
    /// `(version id, number)` the target serves of the scenario now.
    current: Option<(Uuid, u32)>,
    served: Vec<ConfigRoute>,
    others: Vec<ConfigRoute>,
    rules: PillarRules,
}

impl Gathered {
    fn evaluate(
        &self,
        ws: &WorkspaceRecord,
        target: &str,
        reported: &[(String, CheckState)],
    ) -> StoreResult<Evaluation> {
        let env = ws.environment(target).ok_or_else(|| {
            StoreError::FailedPrecondition(format!(
                "environment '{target}' of workspace '{}' no longer exists",
                ws.slug
            ))
        })?;
        let settings = env.settings.over(&ws.environment_defaults).effective();
        Ok(evaluate(&Inputs {
            target,
            settings: &settings,
            rules: &self.rules,
            tags: &self.tags,
            promoted: &self.promoted,
            served: &self.served,
            others: &self.others,
            checks: &self.checks,
            reported,
        }))
    }
}

/// The bounds every helper here needs of a backend.
macro_rules! backend {
    ($($item:item)*) => {
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
            $($item)*
        }
    };
}

backend! {
    async fn served_version(
        conn: &mut DB::Connection,
        environment: Uuid,
        scenario: Uuid,
    ) -> StoreResult<Option<(Uuid, u32)>> {
        let row: Option<(Uuid, i32)> = sqlx::query_as(
            "SELECT v.id, v.number FROM deployments d JOIN scenario_versions v ON v.id = d.version_id \
             WHERE d.environment_id = $1 AND d.scenario_id = $2",
        )
        .bind(environment)
        .bind(scenario)
        .fetch_optional(&mut *conn)
        .await
        .map_err(internal)?;
        Ok(row.map(|(id, n)| (id, u32::try_from(n).unwrap_or(0))))
    }

    /// Gathers what the gates read. `from_rules`: check the chain and that
    /// the version is what `from` serves (a new request); an execution
    /// gathers for the version it was approved for.
    async fn gather(
        conn: &mut DB::Connection,
        org: Uuid,
        ws: &WorkspaceRecord,
        workspace: &WorkspaceRef,
        new: &NewPromotion,
        from_rules: bool,
    ) -> StoreResult<Gathered> {
        let chain = ws.chain();
        if from_rules {
            chain
                .allows(new.from.as_str(), new.to.as_str())
                .map_err(|why| StoreError::FailedPrecondition(format!("cannot promote: {why}")))?;
        }
        let from = ws.environment(new.from.as_str()).ok_or_else(|| {
            StoreError::NotFound(format!("environment '{}' of {workspace}", new.from))
        })?;
        let to = ws.environment(new.to.as_str()).ok_or_else(|| {
            StoreError::NotFound(format!("environment '{}' of {workspace}", new.to))
        })?;
        let scenario_id = scenario_id::<DB>(&mut *conn, ws.id, &new.scenario, workspace).await?;
        // From an environment after the first, what it serves moves on.
        let number = if !from_rules || chain.first() == Some(new.from.as_str()) {
            new.version
        } else {
            let serves = Self::served_version(&mut *conn, from.id, scenario_id).await?;
            match (serves, new.version) {
                (None, _) => {
                    return Err(StoreError::FailedPrecondition(format!(
                        "{} serves no version of scenario '{}': promote one into it first",
                        new.from, new.scenario
                    )));
                }
                (Some((_, n)), Some(asked)) if n != asked => {
                    return Err(StoreError::FailedPrecondition(format!(
                        "{} serves version {n} of scenario '{}', not {asked}: promotions from {} move what it serves",
                        new.from, new.scenario, new.from
                    )));
                }
                (Some((_, n)), _) => Some(n),
            }
        };
        let (row, content) = fetch_version::<DB>(&mut *conn, scenario_id, &new.scenario, number).await?;
        let promoted = decode_content(&content).map_err(|e| corrupt("version", row.id, &e))?;
        let checks_text: String =
            sqlx::query_scalar("SELECT checks FROM scenario_versions WHERE id = $1")
                .bind(row.id)
                .fetch_one(&mut *conn)
                .await
                .map_err(internal)?;
        let checks: Vec<ContractCheck> = serde_json::from_str(&checks_text).map_err(|e| {
            corrupt("version", row.id, &FieldError::new("checks", e.to_string()))
        })?;
        let tags_text: String = sqlx::query_scalar("SELECT tags FROM scenarios WHERE id = $1")
            .bind(scenario_id)
            .fetch_one(&mut *conn)
            .await
            .map_err(internal)?;
        let raw: Vec<String> = serde_json::from_str(&tags_text).map_err(|e| {
            corrupt("scenario", scenario_id, &FieldError::new("tags", e.to_string()))
        })?;
        let tags = parse_tags(&raw).map_err(|e| corrupt("scenario", scenario_id, &e))?;
        let current = Self::served_version(&mut *conn, to.id, scenario_id).await?;
        let mut served = Vec::new();
        let mut others = Vec::new();
        let rows: Vec<(Uuid, Uuid, Vec<u8>)> = sqlx::query_as(
            "SELECT d.scenario_id, v.id, v.content FROM deployments d \
             JOIN scenario_versions v ON v.id = d.version_id WHERE d.environment_id = $1",
        )
        .bind(to.id)
        .fetch_all(&mut *conn)
        .await
        .map_err(internal)?;
        for (scenario, version, bytes) in rows {
            let routes = decode_content(&bytes).map_err(|e| corrupt("version", version, &e))?;
            if scenario == scenario_id {
                served = routes;
            } else {
                others.extend(routes);
            }
        }
        let rules = Self::rules_in(&mut *conn, org, Some(ws.id)).await?.0;
        Ok(Gathered {
            scenario_id,
            version_id: row.id,
            version: u32::try_from(row.number).unwrap_or(0),
            tags,
            checks,
            promoted,
            current,
            served,
            others,
            rules,
        })
    }

    async fn rules_in(
        conn: &mut DB::Connection,
        org: Uuid,
        workspace: Option<Uuid>,
    ) -> StoreResult<(PillarRules, RulesSource)> {
        let parse = |text: &str, id: Uuid| {
            serde_json::from_str::<PillarRules>(text).map_err(|e| {
                corrupt("approval rules", id, &FieldError::new("approval_rules", e.to_string()))
            })
        };
        if let Some(ws) = workspace {
            let own: Option<String> =
                sqlx::query_scalar("SELECT approval_rules FROM workspaces WHERE id = $1")
                    .bind(ws)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(internal)?;
            if let Some(text) = own {
                return Ok((parse(&text, ws)?, RulesSource::Workspace));
            }
        }
        let org_rules: Option<String> =
            sqlx::query_scalar("SELECT approval_rules FROM orgs WHERE id = $1")
                .bind(org)
                .fetch_optional(&mut *conn)
                .await
                .map_err(internal)?
                .flatten();
        match org_rules {
            Some(text) => Ok((parse(&text, org)?, RulesSource::Org)),
            None => Ok((PillarRules::default(), RulesSource::BuiltIn)),
        }
    }

    async fn promotion_row(
        conn: &mut DB::Connection,
        org: Uuid,
        id: Uuid,
        lock: bool,
    ) -> StoreResult<PromotionRow> {
        // Lock only the promotion's own row (PostgreSQL refuses FOR UPDATE
        // of a join's nullable side; the workspace is not changed here).
        let sql = if lock && !DB::FOR_UPDATE.is_empty() {
            format!("{SELECT_PROMOTION}WHERE p.org_id = $1 AND p.id = $2 FOR UPDATE OF p")
        } else {
            format!("{SELECT_PROMOTION}WHERE p.org_id = $1 AND p.id = $2")
        };
        sqlx::query_as(&sql)
            .bind(org)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(internal)?
            .ok_or_else(|| promotion_not_found(id))
    }

    #[allow(clippy::type_complexity)]
    async fn full_record(
        conn: &mut DB::Connection,
        row: PromotionRow,
    ) -> StoreResult<PromotionRecord> {
        let transitions: Vec<(Option<String>, String, Option<Uuid>, String, String, DateTime<Utc>)> =
            sqlx::query_as(
                "SELECT from_status, to_status, actor_id, actor, reason, at FROM promotion_transitions \
                 WHERE promotion_id = $1 ORDER BY seq",
            )
            .bind(row.id)
            .fetch_all(&mut *conn)
            .await
            .map_err(internal)?;
        let id = row.id;
        let status = |raw: &str| Status::parse(raw).map_err(|e| corrupt("promotion", id, &e));
        let transitions = transitions
            .into_iter()
            .map(|(from, to, actor_id, actor, reason, at)| {
                Ok(Transition {
                    from: from.as_deref().map(status).transpose()?,
                    to: status(&to)?,
                    actor_id,
                    actor,
                    reason,
                    at,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let decisions: Vec<(Uuid, String, String, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT approver_id, approver, role, decision, comment, at FROM promotion_decisions \
             WHERE promotion_id = $1 ORDER BY at, approver_id",
        )
        .bind(row.id)
        .fetch_all(&mut *conn)
        .await
        .map_err(internal)?;
        let decisions = decisions
            .into_iter()
            .map(|(approver_id, approver, role, decision, comment, at)| DecisionRecord {
                approver_id,
                approver,
                role,
                approve: decision == "approve",
                comment,
                at,
            })
            .collect();
        let checks: Vec<(String, String, String, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT name, status, url, detail, reported_by, at FROM promotion_checks \
             WHERE promotion_id = $1 ORDER BY name",
        )
        .bind(row.id)
        .fetch_all(&mut *conn)
        .await
        .map_err(internal)?;
        let checks = checks
            .into_iter()
            .map(|(name, state, url, detail, reported_by, at)| {
                Ok(CheckRecord {
                    name,
                    state: CheckState::parse(&state).map_err(|e| corrupt("promotion", id, &e))?,
                    url,
                    detail,
                    reported_by,
                    at,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        row.into_record(transitions, decisions, checks)
    }

    async fn reported(conn: &mut DB::Connection, id: Uuid) -> StoreResult<Vec<(String, CheckState)>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT name, status FROM promotion_checks WHERE promotion_id = $1")
                .bind(id)
                .fetch_all(&mut *conn)
                .await
                .map_err(internal)?;
        rows.into_iter()
            .map(|(name, state)| {
                Ok((name, CheckState::parse(&state).map_err(|e| corrupt("promotion", id, &e))?))
            })
            .collect()
    }

    /// Moves a promotion to `to`, recording who and why; refuses a move
    /// the status machine does not allow.
    async fn transition(
        conn: &mut DB::Connection,
        org: Uuid,
        row: &PromotionRow,
        from: Option<Status>,
        to: Status,
        actor: (Option<Uuid>, &str),
        reason: &str,
    ) -> StoreResult<()> {
        if let Some(from) = from
            && !from.can_become(to)
        {
            return Err(StoreError::FailedPrecondition(from.refuse(to)));
        }
        let at = now();
        let seq: i32 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM promotion_transitions WHERE promotion_id = $1",
        )
        .bind(row.id)
        .fetch_one(&mut *conn)
        .await
        .map_err(internal)?;
        sqlx::query(
            "INSERT INTO promotion_transitions (promotion_id, org_id, workspace_id, seq, from_status, to_status, actor_id, actor, reason, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(row.id)
        .bind(org)
        .bind(row.workspace_id)
        .bind(seq)
        .bind(from.map(|s| s.as_str().to_owned()))
        .bind(to.as_str().to_owned())
        .bind(actor.0)
        .bind(actor.1.to_owned())
        .bind(reason.to_owned())
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(internal)?;
        // The status moves only from the one this transaction read.
        let updated = sqlx::query(
            "UPDATE promotions SET status = $1, status_reason = $2, updated_at = $3 \
             WHERE id = $4 AND status = $5",
        )
        .bind(to.as_str().to_owned())
        .bind(reason.to_owned())
        .bind(at)
        .bind(row.id)
        .bind(from.unwrap_or(Status::Pending).as_str().to_owned())
        .execute(&mut *conn)
        .await
        .map_err(internal)?;
        if DB::rows_affected(&updated) != 1 {
            return Err(StoreError::Conflict(format!(
                "promotion #{} of workspace '{}' changed while this request acted on it; read it again",
                row.number, row.workspace
            )));
        }
        if let Some(event) = event_of(to) {
            let payload = event_payload(row, event, to, actor.1, reason);
            enqueue::<DB>(&mut *conn, org, row.workspace_id, Some(row.id), event, &payload).await?;
        }
        Ok(())
    }

    /// Serves `version` (or nothing) of a scenario in an environment and
    /// records the release.
    #[allow(clippy::too_many_arguments)]
    async fn release(
        conn: &mut DB::Connection,
        org: Uuid,
        ws: &WorkspaceRecord,
        environment_id: Uuid,
        scenario: (Uuid, &str),
        version: Option<(Uuid, u32)>,
        previous: Option<u32>,
        kind: &str,
        promotion: Option<Uuid>,
        actor: &str,
    ) -> StoreResult<()> {
        let at = now();
        match version {
            Some((version_id, _)) => {
                sqlx::query(
                    "INSERT INTO deployments (environment_id, scenario_id, version_id, workspace_id, deployed_at) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (environment_id, scenario_id) DO UPDATE SET version_id = $3, deployed_at = $5",
                )
                .bind(environment_id)
                .bind(scenario.0)
                .bind(version_id)
                .bind(ws.id)
                .bind(at)
                .execute(&mut *conn)
                .await
                .map_err(internal)?;
            }
            None => {
                sqlx::query("DELETE FROM deployments WHERE environment_id = $1 AND scenario_id = $2")
                    .bind(environment_id)
                    .bind(scenario.0)
                    .execute(&mut *conn)
                    .await
                    .map_err(internal)?;
            }
        }
        sqlx::query(
            "INSERT INTO releases (id, org_id, workspace_id, environment_id, scenario_id, scenario, version, previous_version, kind, promotion_id, actor, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(Uuid::now_v7())
        .bind(org)
        .bind(ws.id)
        .bind(environment_id)
        .bind(scenario.0)
        .bind(scenario.1.to_owned())
        .bind(version_i32(version.map_or(0, |(_, n)| n)))
        .bind(version_i32(previous.unwrap_or(0)))
        .bind(kind.to_owned())
        .bind(promotion)
        .bind(actor.to_owned())
        .bind(at)
        .execute(&mut *conn)
        .await
        .map_err(internal)?;
        Ok(())
    }

    /// The promotion as this transaction leaves it; then commits.
    async fn finish(
        mut tx: sqlx::Transaction<'static, DB>,
        org: Uuid,
        id: Uuid,
    ) -> StoreResult<PromotionRecord> {
        let row = Self::promotion_row(&mut tx, org, id, false).await?;
        let record = Self::full_record(&mut tx, row).await?;
        tx.commit().await.map_err(internal)?;
        Ok(record)
    }

    /// Ends an execution as failed: the transition, then its audit event.
    async fn fail(
        conn: &mut DB::Connection,
        org: Uuid,
        row: &PromotionRow,
        from: Status,
        actor: (Option<Uuid>, &str),
        reason: &str,
    ) -> StoreResult<()> {
        Self::transition(&mut *conn, org, row, Some(from), Status::Failed, actor, reason).await?;
        append::<DB>(
            &mut *conn,
            Change::new(org, "promotion.fail", format!("workspace/{}/promotion/{}", row.workspace, row.number))
                .workspace(row.workspace_id)
                .environment(row.to_environment.clone())
                .summary(json!({"after": {"status": "failed", "reason": reason}})),
        )
        .await
    }

    async fn expire_one(&self, org: Uuid, id: Uuid, at: DateTime<Utc>) -> StoreResult<Option<PromotionRecord>> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let row = Self::promotion_row(&mut tx, org, id, true).await?;
        if row.status()? != Status::Pending || row.expires_at > at {
            return Ok(None);
        }
        let reason = format!("no decision before {}", row.expires_at.to_rfc3339());
        Self::transition(&mut tx, org, &row, Some(Status::Pending), Status::Expired, (None, "system"), &reason).await?;
        append::<DB>(
            &mut tx,
            Change::new(org, "promotion.expire", format!("workspace/{}/promotion/{}", row.workspace, row.number))
                .workspace(row.workspace_id)
                .environment(row.to_environment.clone())
                .summary(json!({"before": {"status": "pending"}, "after": {"status": "expired"}})),
        )
        .await?;
        Self::finish(tx, org, id).await.map(Some)
    }
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
    async fn preview_promotion(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        new: &NewPromotion,
    ) -> StoreResult<Preview> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = load_workspace::<DB>(&mut tx, org, workspace).await?;
        let gathered = Self::gather(&mut tx, org, &ws, workspace, new, true).await?;
        let evaluation = gathered.evaluate(&ws, new.to.as_str(), &[])?;
        tx.commit().await.map_err(internal)?;
        Ok(Preview {
            scenario: new.scenario.to_string(),
            version: gathered.version,
            from_environment: new.from.to_string(),
            to_environment: new.to.to_string(),
            current_version: gathered.current.map(|(_, n)| n),
            evaluation,
        })
    }

    async fn create_promotion(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        new: NewPromotion,
    ) -> StoreResult<PromotionRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = load_workspace::<DB>(&mut tx, org, workspace).await?;
        let gathered = Self::gather(&mut tx, org, &ws, workspace, &new, true).await?;
        if gathered.current.map(|(id, _)| id) == Some(gathered.version_id) {
            return Err(StoreError::FailedPrecondition(format!(
                "{} already serves version {} of scenario '{}'",
                new.to, gathered.version, new.scenario
            )));
        }
        let open: Option<i64> = sqlx::query_scalar(
            "SELECT number FROM promotions WHERE workspace_id = $1 AND scenario_id = $2 \
             AND to_environment = $3 AND status IN ('pending', 'approved') ORDER BY number LIMIT 1",
        )
        .bind(ws.id)
        .bind(gathered.scenario_id)
        .bind(new.to.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(internal)?;
        if let Some(number) = open {
            return Err(StoreError::AlreadyExists(format!(
                "promotion #{number} of scenario '{}' into {} is still open: decide, execute or let it expire first",
                new.scenario, new.to
            )));
        }
        let evaluation = gathered.evaluate(&ws, new.to.as_str(), &[])?;
        let to_env = ws.environment(new.to.as_str()).map(|e| e.id);
        let from_env = ws.environment(new.from.as_str()).map(|e| e.id);
        let settings = ws
            .environment(new.to.as_str())
            .map(|e| e.settings.over(&ws.environment_defaults).effective());
        let expire_after = settings.as_ref().map_or(
            mockplane_shared::environment::DEFAULT_APPROVAL_TIMEOUT_SECS,
            |s| s.approvals.expire_after_secs(),
        );
        let number: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM promotions WHERE workspace_id = $1",
        )
        .bind(ws.id)
        .fetch_one(&mut *tx)
        .await
        .map_err(internal)?;
        let at = now();
        let id = Uuid::now_v7();
        let tags: Vec<String> = gathered.tags.iter().map(ToString::to_string).collect();
        sqlx::query(
            "INSERT INTO promotions (id, org_id, workspace_id, number, entity_kind, scenario_id, scenario, version_id, version, \
             from_environment_id, to_environment_id, from_environment, to_environment, status, status_reason, requested_by, \
             requested_by_name, comment, metadata, tags, approvals_required, approver_roles, approval_reasons, diff, gates, \
             previous_version_id, previous_version, expires_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'pending', $14, $15, $16, $17, $18, $19, $20, \
             $21, $22, $23, $24, $25, $26, $27, $28, $28)",
        )
        .bind(id)
        .bind(org)
        .bind(ws.id)
        .bind(number)
        .bind(new.kind.as_str().to_owned())
        .bind(gathered.scenario_id)
        .bind(new.scenario.to_string())
        .bind(gathered.version_id)
        .bind(version_i32(gathered.version))
        .bind(from_env)
        .bind(to_env)
        .bind(new.from.to_string())
        .bind(new.to.to_string())
        .bind(new.comment.clone())
        .bind(new.requested_by.id)
        .bind(new.requested_by.name.clone())
        .bind(new.comment.clone())
        .bind(to_json(&new.metadata))
        .bind(to_json(&tags))
        .bind(i32::try_from(evaluation.requirement.approvals).unwrap_or(i32::MAX))
        .bind(to_json(&evaluation.requirement.roles))
        .bind(to_json(&evaluation.requirement.reasons))
        .bind(to_json(&evaluation.diff))
        .bind(to_json(&evaluation.gates))
        .bind(gathered.current.map(|(v, _)| v))
        .bind(gathered.current.map(|(_, n)| version_i32(n)))
        .bind(at + Duration::seconds(i64::from(expire_after)))
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        let row = Self::promotion_row(&mut tx, org, id, false).await?;
        let actor = (Some(new.requested_by.id), new.requested_by.name.as_str());
        Self::transition(
            &mut tx,
            org,
            &row,
            None,
            Status::Pending,
            actor,
            &new.comment,
        )
        .await?;
        let requested = event_payload(&row, "requested", Status::Pending, actor.1, &new.comment);
        enqueue::<DB>(&mut tx, org, ws.id, Some(id), "requested", &requested).await?;
        let outcome = if let Some(gate) = evaluation.blocked() {
            let reason = format!("gate {} failed: {}", gate.name, gate.detail);
            Self::transition(
                &mut tx,
                org,
                &row,
                Some(Status::Pending),
                Status::Failed,
                actor,
                &reason,
            )
            .await?;
            "failed"
        } else if evaluation.requirement.approvals == 0 {
            Self::transition(
                &mut tx,
                org,
                &row,
                Some(Status::Pending),
                Status::Approved,
                actor,
                &format!("{} requires no approval", new.to),
            )
            .await?;
            "approved"
        } else {
            let reason = evaluation.requirement.reasons.join("; ");
            let needed = event_payload(&row, "approval_needed", Status::Pending, actor.1, &reason);
            enqueue::<DB>(&mut tx, org, ws.id, Some(id), "approval_needed", &needed).await?;
            "pending"
        };
        append::<DB>(
            &mut tx,
            Change::new(
                org,
                "promotion.request",
                format!("workspace/{}/promotion/{number}", ws.slug),
            )
            .workspace(ws.id)
            .environment(new.to.to_string())
            .summary(json!({"after": {
                "scenario": new.scenario.to_string(),
                "version": gathered.version,
                "from": new.from.to_string(),
                "to": new.to.to_string(),
                "status": outcome,
                "approvals_required": evaluation.requirement.approvals,
                "breaking_changes": evaluation.diff.breaking_count,
            }})),
        )
        .await?;
        Self::finish(tx, org, id).await
    }

    async fn get_promotion(&self, org: Uuid, id: Uuid) -> StoreResult<PromotionRecord> {
        let tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        Self::finish(tx, org, id).await
    }

    async fn list_promotions(
        &self,
        org: Uuid,
        filter: &PromotionFilter,
    ) -> StoreResult<Vec<PromotionRecord>> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let workspace = match &filter.workspace {
            Some(key) => Some(load_workspace::<DB>(&mut tx, org, key).await?.id),
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
        .fetch_all(&mut *tx)
        .await
        .map_err(internal)?;
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            records.push(Self::full_record(&mut tx, row).await?);
        }
        tx.commit().await.map_err(internal)?;
        Ok(records)
    }

    async fn decide_promotion(
        &self,
        org: Uuid,
        id: Uuid,
        decision: Decision,
    ) -> StoreResult<PromotionRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let row = Self::promotion_row(&mut tx, org, id, true).await?;
        let status = row.status()?;
        let verb = if decision.approve {
            "approve"
        } else {
            "reject"
        };
        let next = if decision.approve {
            Status::Approved
        } else {
            Status::Rejected
        };
        let label = format!("promotion #{} of workspace '{}'", row.number, row.workspace);
        if status != Status::Pending {
            return Err(StoreError::FailedPrecondition(format!(
                "cannot {verb} {label}: {}",
                status.refuse(next)
            )));
        }
        let at = now();
        if row.expires_at <= at {
            drop(tx);
            self.expire_one(org, id, at).await?;
            return Err(StoreError::FailedPrecondition(format!(
                "cannot {verb} {label}: it expired at {} without enough approvals",
                row.expires_at.to_rfc3339()
            )));
        }
        if row.requested_by == Some(decision.approver.id) {
            return Err(StoreError::Refused(format!(
                "you requested {label}, so you cannot {verb} it: someone else must decide"
            )));
        }
        let roles: Vec<String> = serde_json::from_str(&row.approver_roles).unwrap_or_default();
        if !roles.is_empty() && !roles.contains(&decision.role) {
            return Err(StoreError::Refused(format!(
                "promotions into {} are decided by {}; your role there is {}",
                row.to_environment,
                roles.join(" or "),
                decision.role
            )));
        }
        sqlx::query(
            "INSERT INTO promotion_decisions (promotion_id, org_id, workspace_id, approver_id, approver, role, decision, comment, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(row.id)
        .bind(org)
        .bind(row.workspace_id)
        .bind(decision.approver.id)
        .bind(decision.approver.name.clone())
        .bind(decision.role.clone())
        .bind(verb.to_owned())
        .bind(decision.comment.clone())
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            super::sql::db_error(e, || {
                StoreError::AlreadyExists(format!("you have already decided on {label}; one decision per approver"))
            })
        })?;
        let actor = (Some(decision.approver.id), decision.approver.name.as_str());
        let approvals: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM promotion_decisions WHERE promotion_id = $1 AND decision = 'approve'",
        )
        .bind(row.id)
        .fetch_one(&mut *tx)
        .await
        .map_err(internal)?;
        let needed = i64::from(row.approvals_required);
        if !decision.approve {
            let reason = if decision.comment.is_empty() {
                format!("rejected by {}", decision.approver.name)
            } else {
                decision.comment.clone()
            };
            Self::transition(
                &mut tx,
                org,
                &row,
                Some(Status::Pending),
                Status::Rejected,
                actor,
                &reason,
            )
            .await?;
        } else if approvals >= needed {
            Self::transition(
                &mut tx,
                org,
                &row,
                Some(Status::Pending),
                Status::Approved,
                actor,
                &format!("{approvals} of {needed} approval(s) given"),
            )
            .await?;
        }
        append::<DB>(
            &mut tx,
            Change::new(
                org,
                if decision.approve { "promotion.approve" } else { "promotion.reject" },
                format!("workspace/{}/promotion/{}", row.workspace, row.number),
            )
            .workspace(row.workspace_id)
            .environment(row.to_environment.clone())
            .summary(json!({"after": {"approvals": approvals, "required": needed, "role": decision.role, "comment": decision.comment}})),
        )
        .await?;
        Self::finish(tx, org, id).await
    }

    async fn execute_promotion(
        &self,
        org: Uuid,
        id: Uuid,
        actor: Actor,
    ) -> StoreResult<PromotionRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let row = Self::promotion_row(&mut tx, org, id, true).await?;
        let status = row.status()?;
        let label = format!("promotion #{} of workspace '{}'", row.number, row.workspace);
        match status {
            Status::Approved => {}
            Status::Pending => {
                let given: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM promotion_decisions WHERE promotion_id = $1 AND decision = 'approve'",
                )
                .bind(row.id)
                .fetch_one(&mut *tx)
                .await
                .map_err(internal)?;
                return Err(StoreError::FailedPrecondition(format!(
                    "{label} is pending: it has {given} of {} approval(s) it needs",
                    row.approvals_required
                )));
            }
            other => {
                return Err(StoreError::FailedPrecondition(format!(
                    "cannot execute {label}: {}",
                    other.refuse(Status::Completed)
                )));
            }
        }
        let ws = load_workspace::<DB>(&mut tx, org, &WorkspaceRef::Id(row.workspace_id)).await?;
        let (Some(scenario), Some(to_env)) = (
            Slug::parse(&row.scenario)
                .ok()
                .filter(|_| row.scenario_id.is_some()),
            row.to_environment_id
                .and_then(|id| ws.environments.iter().find(|e| e.id == id)),
        ) else {
            let reason = "its scenario or target environment was deleted".to_owned();
            Self::fail(
                &mut tx,
                org,
                &row,
                status,
                (Some(actor.id), &actor.name),
                &reason,
            )
            .await?;
            return Self::finish(tx, org, id).await;
        };
        let to_name = to_env.name.clone();
        let to_env_id = to_env.id;
        // The version this promotion was approved for, whatever `from`
        // serves by now (its own environment may be gone: the target is
        // what matters).
        let new = NewPromotion {
            kind: EntityKind::Scenario,
            scenario: scenario.clone(),
            version: Some(u32::try_from(row.version).unwrap_or(0)),
            from: to_name.clone(),
            to: to_name.clone(),
            comment: String::new(),
            metadata: BTreeMap::new(),
            requested_by: actor.clone(),
        };
        let gathered =
            Self::gather(&mut tx, org, &ws, &WorkspaceRef::Id(ws.id), &new, false).await?;
        let reported = Self::reported(&mut tx, row.id).await?;
        let evaluation = gathered.evaluate(&ws, to_name.as_str(), &reported)?;
        let actor_ref = (Some(actor.id), actor.name.as_str());
        if let Some(gate) = evaluation.blocked() {
            let reason = format!("gate {} failed at execution: {}", gate.name, gate.detail);
            sqlx::query("UPDATE promotions SET gates = $1, diff = $2 WHERE id = $3")
                .bind(to_json(&evaluation.gates))
                .bind(to_json(&evaluation.diff))
                .bind(row.id)
                .execute(&mut *tx)
                .await
                .map_err(internal)?;
            Self::fail(&mut tx, org, &row, status, actor_ref, &reason).await?;
            return Self::finish(tx, org, id).await;
        }
        if let Some(gate) = evaluation.waiting() {
            return Err(StoreError::FailedPrecondition(format!(
                "{label} waits for external checks: {}",
                gate.detail
            )));
        }
        if gathered.current.map(|(v, _)| v) == Some(gathered.version_id) {
            return Err(StoreError::FailedPrecondition(format!(
                "{to_name} already serves version {} of scenario '{scenario}'",
                gathered.version
            )));
        }
        Self::release(
            &mut tx,
            org,
            &ws,
            to_env_id,
            (gathered.scenario_id, scenario.as_str()),
            Some((gathered.version_id, gathered.version)),
            gathered.current.map(|(_, n)| n),
            "promotion",
            Some(row.id),
            &actor.name,
        )
        .await?;
        let at = now();
        sqlx::query(
            "UPDATE promotions SET gates = $1, diff = $2, previous_version_id = $3, previous_version = $4, completed_at = $5 \
             WHERE id = $6",
        )
        .bind(to_json(&evaluation.gates))
        .bind(to_json(&evaluation.diff))
        .bind(gathered.current.map(|(v, _)| v))
        .bind(gathered.current.map(|(_, n)| version_i32(n)))
        .bind(at)
        .bind(row.id)
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        Self::transition(
            &mut tx,
            org,
            &row,
            Some(Status::Approved),
            Status::Completed,
            actor_ref,
            &format!(
                "{to_name} serves version {} of '{scenario}'",
                gathered.version
            ),
        )
        .await?;
        append::<DB>(
            &mut tx,
            Change::new(org, "promotion.execute", format!("workspace/{}/promotion/{}", row.workspace, row.number))
                .workspace(row.workspace_id)
                .environment(to_name.to_string())
                .summary(json!({
                    "before": {"version": gathered.current.map(|(_, n)| n)},
                    "after": {"scenario": scenario.to_string(), "version": gathered.version, "status": "completed"},
                })),
        )
        .await?;
        let revision = bump_revision::<DB>(&mut tx, ws.id).await?;
        sqlx::query("UPDATE promotions SET revision = $1 WHERE id = $2")
            .bind(i64::try_from(revision).unwrap_or(i64::MAX))
            .bind(row.id)
            .execute(&mut *tx)
            .await
            .map_err(internal)?;
        Self::finish(tx, org, id).await
    }

    async fn rollback_promotion(
        &self,
        org: Uuid,
        id: Uuid,
        actor: Actor,
        reason: &str,
    ) -> StoreResult<PromotionRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let row = Self::promotion_row(&mut tx, org, id, true).await?;
        let status = row.status()?;
        let label = format!("promotion #{} of workspace '{}'", row.number, row.workspace);
        if status != Status::Completed {
            return Err(StoreError::FailedPrecondition(format!(
                "cannot roll back {label}: {}",
                status.refuse(Status::RolledBack)
            )));
        }
        let ws = load_workspace::<DB>(&mut tx, org, &WorkspaceRef::Id(row.workspace_id)).await?;
        let (Some(scenario_id), Some(env)) = (
            row.scenario_id,
            row.to_environment_id
                .and_then(|id| ws.environments.iter().find(|e| e.id == id)),
        ) else {
            return Err(StoreError::FailedPrecondition(format!(
                "cannot roll back {label}: its scenario or target environment was deleted"
            )));
        };
        let serves = Self::served_version(&mut tx, env.id, scenario_id).await?;
        if serves.map(|(v, _)| v) != row.version_id {
            return Err(StoreError::FailedPrecondition(format!(
                "cannot roll back {label}: {} serves {} of scenario '{}' now, not the version {} it promoted; roll back the later change first",
                env.name,
                serves.map_or("no version".to_owned(), |(_, n)| format!("version {n}")),
                row.scenario,
                row.version
            )));
        }
        let previous = match (row.previous_version_id, row.previous_version) {
            (Some(v), Some(n)) => Some((v, u32::try_from(n).unwrap_or(0))),
            (None, None) => None,
            _ => {
                return Err(StoreError::FailedPrecondition(format!(
                    "cannot roll back {label}: the version {} served before was deleted",
                    env.name
                )));
            }
        };
        // What it goes back to must still be servable next to the rest.
        if let Some((version_id, _)) = previous {
            let others: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
                "SELECT v.id, v.content FROM deployments d JOIN scenario_versions v ON v.id = d.version_id \
                 WHERE d.environment_id = $1 AND d.scenario_id <> $2 \
                 UNION ALL SELECT id, content FROM scenario_versions WHERE id = $3",
            )
            .bind(env.id)
            .bind(scenario_id)
            .bind(version_id)
            .fetch_all(&mut *tx)
            .await
            .map_err(internal)?;
            let mut routes = Vec::new();
            for (version, bytes) in &others {
                routes.extend(decode_content(bytes).map_err(|e| corrupt("version", *version, &e))?);
            }
            mockplane_shared::EnvironmentConfig::plain(env.name.clone(), routes)
                .validate()
                .map_err(|e| {
                    StoreError::FailedPrecondition(format!(
                        "cannot roll back {label}: the version before no longer fits next to what {} serves: {e}",
                        env.name
                    ))
                })?;
        }
        let env_id = env.id;
        let env_name = env.name.to_string();
        Self::release(
            &mut tx,
            org,
            &ws,
            env_id,
            (scenario_id, row.scenario.as_str()),
            previous,
            Some(u32::try_from(row.version).unwrap_or(0)),
            "rollback",
            Some(row.id),
            &actor.name,
        )
        .await?;
        let why = if reason.is_empty() {
            format!(
                "rolled back: {env_name} serves {} again",
                previous.map_or("no version".to_owned(), |(_, n)| format!("version {n}"))
            )
        } else {
            reason.to_owned()
        };
        Self::transition(
            &mut tx,
            org,
            &row,
            Some(Status::Completed),
            Status::RolledBack,
            (Some(actor.id), &actor.name),
            &why,
        )
        .await?;
        append::<DB>(
            &mut tx,
            Change::new(org, "promotion.rollback", format!("workspace/{}/promotion/{}", row.workspace, row.number))
                .workspace(row.workspace_id)
                .environment(env_name)
                .summary(json!({
                    "before": {"version": row.version},
                    "after": {"version": previous.map(|(_, n)| n), "status": "rolled_back", "reason": reason},
                })),
        )
        .await?;
        bump_revision::<DB>(&mut tx, ws.id).await?;
        Self::finish(tx, org, id).await
    }

    async fn report_check(
        &self,
        org: Uuid,
        id: Uuid,
        report: CheckReport,
    ) -> StoreResult<PromotionRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let row = Self::promotion_row(&mut tx, org, id, true).await?;
        let status = row.status()?;
        if !matches!(status, Status::Pending | Status::Approved) {
            return Err(StoreError::FailedPrecondition(format!(
                "promotion #{} of workspace '{}' is {status}; checks are reported on pending or approved promotions",
                row.number, row.workspace
            )));
        }
        sqlx::query(
            "INSERT INTO promotion_checks (promotion_id, org_id, workspace_id, name, status, url, detail, reported_by, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (promotion_id, name) DO UPDATE SET status = $5, url = $6, detail = $7, reported_by = $8, at = $9",
        )
        .bind(row.id)
        .bind(org)
        .bind(row.workspace_id)
        .bind(report.name.clone())
        .bind(report.state.as_str().to_owned())
        .bind(report.url.clone())
        .bind(report.detail.clone())
        .bind(report.reported_by.clone())
        .bind(now())
        .execute(&mut *tx)
        .await
        .map_err(internal)?;
        append::<DB>(
            &mut tx,
            Change::new(org, "promotion.check", format!("workspace/{}/promotion/{}", row.workspace, row.number))
                .workspace(row.workspace_id)
                .environment(row.to_environment.clone())
                .summary(json!({"after": {"check": report.name, "status": report.state.as_str(), "url": report.url}})),
        )
        .await?;
        Self::finish(tx, org, id).await
    }

    async fn expire_promotions(&self, at: DateTime<Utc>) -> StoreResult<Vec<PromotionRecord>> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::System).await?;
        let due: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT org_id, id FROM promotions WHERE status = 'pending' AND expires_at <= $1 ORDER BY expires_at LIMIT 500",
        )
        .bind(at)
        .fetch_all(&mut *tx)
        .await
        .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        let mut expired = Vec::new();
        for (org, id) in due {
            if let Some(record) = self.expire_one(org, id, at).await? {
                expired.push(record);
            }
        }
        Ok(expired)
    }

    async fn remind_promotions(&self, at: DateTime<Utc>) -> StoreResult<Vec<PromotionRecord>> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        // The longest wait is 90 days; a quarter of any wait is left from
        // `expires_at - wait / 4` on, worked out here rather than in SQL
        // (the backends' time arithmetic differs).
        let horizon = at
            + TimeDelta::seconds(i64::from(
                mockplane_shared::environment::MAX_APPROVAL_TIMEOUT_SECS,
            ));
        let candidates: Vec<(Uuid, Uuid, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
            "SELECT org_id, id, created_at, expires_at FROM promotions WHERE status = 'pending' \
             AND reminded_at IS NULL AND expires_at <= $1 ORDER BY expires_at LIMIT 2000",
        )
        .bind(horizon)
        .fetch_all(&mut *tx)
        .await
        .map_err(internal)?;
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
                .execute(&mut *tx)
                .await
                .map_err(internal)?;
            let row = Self::promotion_row(&mut tx, org, id, false).await?;
            let reason = format!("expires at {}", row.expires_at.to_rfc3339());
            let payload = event_payload(&row, "expiring", Status::Pending, "system", &reason);
            enqueue::<DB>(
                &mut tx,
                org,
                row.workspace_id,
                Some(id),
                "expiring",
                &payload,
            )
            .await?;
            reminded.push(Self::full_record(&mut tx, row).await?);
        }
        tx.commit().await.map_err(internal)?;
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
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = load_workspace::<DB>(&mut tx, org, workspace).await?;
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
        let rows: Vec<(String, String, i32, i32, String, Option<Uuid>, String, DateTime<Utc>)> =
            sqlx::query_as(
                "SELECT e.name, r.scenario, r.version, r.previous_version, r.kind, r.promotion_id, r.actor, r.at \
                 FROM releases r JOIN environments e ON e.id = r.environment_id \
                 WHERE r.workspace_id = $1 AND ($2 IS NULL OR r.environment_id = $2) \
                 ORDER BY r.at DESC, r.id DESC LIMIT $3",
            )
            .bind(ws.id)
            .bind(env)
            .bind(i64::from(limit.clamp(1, 1000)))
            .fetch_all(&mut *tx)
            .await
            .map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(rows
            .into_iter()
            .map(
                |(environment, scenario, version, previous, kind, promotion, actor, at)| {
                    ReleaseRecord {
                        environment,
                        scenario,
                        version: u32::try_from(version).unwrap_or(0),
                        previous_version: u32::try_from(previous).unwrap_or(0),
                        kind,
                        promotion,
                        actor,
                        at,
                    }
                },
            )
            .collect())
    }

    async fn approval_rules(
        &self,
        org: Uuid,
        workspace: Option<&WorkspaceRef>,
    ) -> StoreResult<(PillarRules, RulesSource)> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = match workspace {
            Some(key) => Some(load_workspace::<DB>(&mut tx, org, key).await?.id),
            None => None,
        };
        let rules = Self::rules_in(&mut tx, org, ws).await?;
        tx.commit().await.map_err(internal)?;
        Ok(rules)
    }

    async fn set_approval_rules(
        &self,
        org: Uuid,
        workspace: Option<&WorkspaceRef>,
        rules: Option<PillarRules>,
    ) -> StoreResult<(PillarRules, RulesSource)> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let text = rules.as_ref().map(to_json);
        let (ws, resource) = match workspace {
            Some(key) => {
                let ws = load_workspace::<DB>(&mut tx, org, key).await?;
                sqlx::query("UPDATE workspaces SET approval_rules = $1 WHERE id = $2")
                    .bind(text.clone())
                    .bind(ws.id)
                    .execute(&mut *tx)
                    .await
                    .map_err(internal)?;
                (Some(ws.id), format!("workspace/{}/approval_rules", ws.slug))
            }
            None => {
                sqlx::query("UPDATE orgs SET approval_rules = $1 WHERE id = $2")
                    .bind(text.clone())
                    .bind(org)
                    .execute(&mut *tx)
                    .await
                    .map_err(internal)?;
                (None, "org/approval_rules".to_owned())
            }
        };
        let mut change = Change::new(org, "approval_rules.set", resource).summary(
            json!({"after": rules.as_ref().map(|r| serde_json::to_value(r).unwrap_or_default())}),
        );
        if let Some(ws) = ws {
            change = change.workspace(ws);
        }
        append::<DB>(&mut tx, change).await?;
        let now_in_force = Self::rules_in(&mut tx, org, ws).await?;
        tx.commit().await.map_err(internal)?;
        Ok(now_in_force)
    }
}
