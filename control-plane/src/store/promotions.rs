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
use mockplane_shared::environment::EnvSettings;
use mockplane_shared::persona::parse_persona_data;
use mockplane_shared::promotion::{
    CheckState, EntityKind, Evaluation, Gate, Inputs, PillarRules, Requirement, Status, Subject,
    evaluate,
};
use mockplane_shared::scenario::{Tag, parse_tags};
use mockplane_shared::{ConfigRoute, FieldError, Slug};
use serde_json::json;
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::audit::{Change, append};
use super::notifications::enqueue;
use super::routes::scenario_id;
use super::scenarios::{decode_content, fetch_version};
use super::tx::{Scope, bump_revision, corrupt, now};
use super::workspaces::load_workspace;
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
    /// The scenario's or persona's name; for environment settings, the
    /// source environment's.
    pub name: Slug,
    /// `None`: what `from` serves (the newest version when `from` is the
    /// first environment of the chain). Environment settings: the source's
    /// settings version, which must be the current one.
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
    /// The scenario's or persona's name; for environment settings, the
    /// source environment's.
    pub name: String,
    /// The scenario's or persona's version; for environment settings, the
    /// source's settings version when requested.
    pub version: u32,
    /// Environment settings: what is promoted (the source's served part,
    /// frozen at the request) and, once executed, what the target had.
    pub settings: Option<EnvSettings>,
    pub previous_settings: Option<EnvSettings>,
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
    pub kind: EntityKind,
    pub name: String,
    pub version: u32,
    pub from_environment: String,
    pub to_environment: String,
    /// What the target serves of it now (environment settings: the
    /// target's settings version).
    pub current_version: Option<u32>,
    pub evaluation: Evaluation,
}

/// One change of what an environment serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRecord {
    pub environment: String,
    pub entity: EntityKind,
    /// The scenario's or persona's name (environment settings: the
    /// environment's own).
    pub name: String,
    /// 0: the environment stopped serving the scenario or persona.
    /// Environment settings: the target's settings version after.
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
    persona_id: Option<Uuid>,
    /// The name of what is promoted (see the migration).
    scenario: String,
    version_id: Option<Uuid>,
    version: i32,
    settings: Option<String>,
    previous_settings: Option<String>,
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
     p.scenario_id, p.persona_id, p.scenario, p.version_id, p.version, p.settings, p.previous_settings, p.to_environment_id, p.from_environment, \
     p.to_environment, p.status, p.status_reason, p.requested_by, p.requested_by_name, p.comment, \
     p.metadata, p.tags, p.approvals_required, p.approver_roles, p.approval_reasons, p.diff, p.gates, \
     p.previous_version_id, p.previous_version, p.revision, p.pr_url, p.gitops_error, p.expires_at, \
     p.reminded_at, p.created_at, p.updated_at, p.completed_at \
     FROM promotions p JOIN workspaces w ON w.id = p.workspace_id ";

impl PromotionRow {
    fn status(&self) -> StoreResult<Status> {
        Status::parse(&self.status).map_err(|e| corrupt("promotion", self.id, &e))
    }

    fn kind(&self) -> StoreResult<EntityKind> {
        EntityKind::parse(&self.entity_kind).map_err(|e| corrupt("promotion", self.id, &e))
    }

    /// The settings an environment promotion froze at its request.
    fn frozen_settings(&self) -> StoreResult<Option<EnvSettings>> {
        self.settings
            .as_deref()
            .map(|text| {
                serde_json::from_str(text).map_err(|e| {
                    corrupt(
                        "promotion",
                        self.id,
                        &FieldError::new("settings", e.to_string()),
                    )
                })
            })
            .transpose()
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
        let settings = |field: &str, text: &Option<String>| -> StoreResult<Option<EnvSettings>> {
            text.as_deref()
                .map(|t| parse(field, json(field, t)?, id))
                .transpose()
        };
        Ok(PromotionRecord {
            id,
            workspace_id: self.workspace_id,
            workspace: self.workspace.clone(),
            number: self.number,
            kind: self.kind()?,
            name: self.scenario.clone(),
            version: u32::try_from(self.version).unwrap_or(0),
            settings: settings("settings", &self.settings)?,
            previous_settings: settings("previous_settings", &self.previous_settings)?,
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
            "entity_kind": row.entity_kind,
            "name": row.scenario,
            "scenario": (row.entity_kind == "scenario").then_some(&row.scenario),
            "version": row.version,
            "settings": row.settings.as_deref().and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok()),
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

/// What an environment is to serve after an execution or a rollback.
enum Served {
    Scenario {
        version: Option<(Uuid, u32)>,
        previous: Option<u32>,
    },
    Persona {
        version: Option<u32>,
        previous: Option<u32>,
    },
    /// The served part of the settings to take.
    Environment { settings: Box<EnvSettings> },
}

fn deleted(row: &PromotionRow) -> StoreError {
    StoreError::FailedPrecondition(format!(
        "promotion #{} of workspace '{}': its {} was deleted",
        row.number, row.workspace, row.entity_kind
    ))
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

/// What is promoted and what the target serves of it, as one transaction
/// read them.
enum Entity {
    Scenario {
        scenario_id: Uuid,
        version_id: Uuid,
        checks: Vec<ContractCheck>,
        promoted: Vec<ConfigRoute>,
        /// `(version id, number)` the target serves now.
        current: Option<(Uuid, u32)>,
        served: Vec<ConfigRoute>,
        others: Vec<ConfigRoute>,
    },
    Persona {
        persona_id: Uuid,
        promoted: serde_json::Value,
        /// The version number and document the target serves now.
        current: Option<(u32, serde_json::Value)>,
    },
    Environment {
        /// The source's served settings.
        promoted: Box<EnvSettings>,
        /// The target's own settings and their version, and the workspace
        /// defaults they inherit from.
        target: Box<EnvSettings>,
        target_version: i64,
        defaults: Box<EnvSettings>,
    },
}

/// What the gates of one promotion read, gathered in one transaction.
struct Gathered {
    name: String,
    /// The version promoted (see [`PromotionRecord::version`]).
    version: u32,
    tags: Vec<Tag>,
    rules: PillarRules,
    entity: Entity,
}

impl Gathered {
    /// What the target serves of it now, as a version number.
    fn current(&self) -> Option<u32> {
        match &self.entity {
            Entity::Scenario { current, .. } => current.map(|(_, n)| n),
            Entity::Persona { current, .. } => current.as_ref().map(|(n, _)| *n),
            Entity::Environment { target_version, .. } => u32::try_from(*target_version).ok(),
        }
    }

    /// Whether the target serves exactly what is promoted already.
    fn served_already(&self) -> bool {
        match &self.entity {
            Entity::Scenario {
                version_id,
                current,
                ..
            } => current.map(|(id, _)| id) == Some(*version_id),
            Entity::Persona { current, .. } => {
                current.as_ref().map(|(n, _)| *n) == Some(self.version)
            }
            Entity::Environment {
                promoted, target, ..
            } => target.served_part() == promoted.served_part(),
        }
    }

    /// "version 3 of scenario 'checkout'", "the settings of dev".
    fn describe(&self, kind: EntityKind, name: &str) -> String {
        match kind {
            EntityKind::Environment => format!("the settings of {name}"),
            _ => format!("version {} of {kind} '{name}'", self.version),
        }
    }

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
        let subject = match &self.entity {
            Entity::Scenario {
                checks,
                promoted,
                served,
                others,
                ..
            } => Subject::Scenario {
                promoted,
                served,
                others,
                checks,
            },
            Entity::Persona {
                promoted, current, ..
            } => Subject::Persona {
                name: &self.name,
                promoted,
                served: current.as_ref().map(|(_, data)| data),
            },
            Entity::Environment {
                promoted,
                target,
                defaults,
                ..
            } => Subject::Environment {
                promoted,
                served: target,
                defaults,
            },
        };
        Ok(evaluate(&Inputs {
            target,
            settings: &settings,
            rules: &self.rules,
            tags: &self.tags,
            subject,
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
        .await?;
        Ok(row.map(|(id, n)| (id, u32::try_from(n).unwrap_or(0))))
    }

    /// Gathers what the gates read. `from_rules`: check the chain and that
    /// the version is what `from` serves (a new request); an execution
    /// gathers for the version it was approved for (environment settings:
    /// the ones `frozen` at the request).
    async fn gather(
        conn: &mut DB::Connection,
        org: Uuid,
        ws: &WorkspaceRecord,
        workspace: &WorkspaceRef,
        new: &NewPromotion,
        from_rules: bool,
        frozen: Option<EnvSettings>,
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
        // From an environment after the first, what it serves moves on.
        let from_first = !from_rules || chain.first() == Some(new.from.as_str());
        let rules = Self::rules_in(&mut *conn, org, Some(ws.id)).await?.0;
        let (version, tags, entity) = match new.kind {
            EntityKind::Scenario => {
                Self::gather_scenario(&mut *conn, ws, workspace, new, from_first, from.id, to.id)
                    .await?
            }
            EntityKind::Persona => {
                let (version, entity) =
                    Self::gather_persona(&mut *conn, ws, workspace, new, from_first, from.id, to.id)
                        .await?;
                (version, Vec::new(), entity)
            }
            EntityKind::Environment => {
                let promoted = match frozen {
                    Some(settings) => settings,
                    None => {
                        if let Some(asked) = new.version
                            && i64::from(asked) != from.version
                        {
                            return Err(StoreError::FailedPrecondition(format!(
                                "the settings of {} are at version {}, not {asked}: promote what it has now",
                                new.from, from.version
                            )));
                        }
                        from.settings.served_part()
                    }
                };
                let version = match new.version {
                    Some(v) if !from_rules => v,
                    _ => u32::try_from(from.version).unwrap_or(0),
                };
                let entity = Entity::Environment {
                    promoted: Box::new(promoted),
                    target: Box::new(to.settings.clone()),
                    target_version: to.version,
                    defaults: Box::new(ws.environment_defaults.clone()),
                };
                (version, Vec::new(), entity)
            }
        };
        Ok(Gathered {
            name: new.name.to_string(),
            version,
            tags,
            rules,
            entity,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn gather_scenario(
        conn: &mut DB::Connection,
        ws: &WorkspaceRecord,
        workspace: &WorkspaceRef,
        new: &NewPromotion,
        from_first: bool,
        from: Uuid,
        to: Uuid,
    ) -> StoreResult<(u32, Vec<Tag>, Entity)> {
        let scenario_id = scenario_id::<DB>(&mut *conn, ws.id, &new.name, workspace).await?;
        let number = if from_first {
            new.version
        } else {
            let serves = Self::served_version(&mut *conn, from, scenario_id).await?;
            Some(Self::moves_on(serves.map(|(_, n)| n), new, "scenario")?)
        };
        let (row, content) = fetch_version::<DB>(&mut *conn, scenario_id, &new.name, number).await?;
        let promoted = decode_content(&content).map_err(|e| corrupt("version", row.id, &e))?;
        let checks_text: String =
            sqlx::query_scalar("SELECT checks FROM scenario_versions WHERE id = $1")
                .bind(row.id)
                .fetch_one(&mut *conn)
                .await?;
        let checks: Vec<ContractCheck> = serde_json::from_str(&checks_text).map_err(|e| {
            corrupt("version", row.id, &FieldError::new("checks", e.to_string()))
        })?;
        let tags_text: String = sqlx::query_scalar("SELECT tags FROM scenarios WHERE id = $1")
            .bind(scenario_id)
            .fetch_one(&mut *conn)
            .await?;
        let raw: Vec<String> = serde_json::from_str(&tags_text).map_err(|e| {
            corrupt("scenario", scenario_id, &FieldError::new("tags", e.to_string()))
        })?;
        let tags = parse_tags(&raw).map_err(|e| corrupt("scenario", scenario_id, &e))?;
        let current = Self::served_version(&mut *conn, to, scenario_id).await?;
        let mut served = Vec::new();
        let mut others = Vec::new();
        let rows: Vec<(Uuid, Uuid, Vec<u8>)> = sqlx::query_as(
            "SELECT d.scenario_id, v.id, v.content FROM deployments d \
             JOIN scenario_versions v ON v.id = d.version_id WHERE d.environment_id = $1",
        )
        .bind(to)
        .fetch_all(&mut *conn)
        .await?;
        for (scenario, version, bytes) in rows {
            let routes = decode_content(&bytes).map_err(|e| corrupt("version", version, &e))?;
            if scenario == scenario_id {
                served = routes;
            } else {
                others.extend(routes);
            }
        }
        let entity = Entity::Scenario {
            scenario_id,
            version_id: row.id,
            checks,
            promoted,
            current,
            served,
            others,
        };
        Ok((u32::try_from(row.number).unwrap_or(0), tags, entity))
    }

    /// The version a promotion from an environment after the first moves
    /// on: the one that environment serves (`serves`), which a version
    /// asked for must be.
    fn moves_on(serves: Option<u32>, new: &NewPromotion, kind: &str) -> StoreResult<u32> {
        match (serves, new.version) {
            (None, _) => Err(StoreError::FailedPrecondition(format!(
                "{} serves no version of {kind} '{}': promote one into it first",
                new.from, new.name
            ))),
            (Some(n), Some(asked)) if n != asked => Err(StoreError::FailedPrecondition(format!(
                "{} serves version {n} of {kind} '{}', not {asked}: promotions from {} move what it serves",
                new.from, new.name, new.from
            ))),
            (Some(n), _) => Ok(n),
        }
    }

    /// The version number a persona is served at in an environment, with
    /// its document.
    async fn served_persona(
        conn: &mut DB::Connection,
        environment: Uuid,
        persona: Uuid,
    ) -> StoreResult<Option<(u32, serde_json::Value)>> {
        let row: Option<(i64, String)> = sqlx::query_as(
            "SELECT d.number, v.data FROM persona_deployments d \
             JOIN persona_versions v ON v.persona_id = d.persona_id AND v.number = d.number \
             WHERE d.environment_id = $1 AND d.persona_id = $2",
        )
        .bind(environment)
        .bind(persona)
        .fetch_optional(&mut *conn)
        .await?;
        row.map(|(n, data)| {
            let data = parse_persona_data(&data).map_err(|e| corrupt("persona", persona, &e))?;
            Ok((u32::try_from(n).unwrap_or(0), data))
        })
        .transpose()
    }

    #[allow(clippy::too_many_arguments)]
    async fn gather_persona(
        conn: &mut DB::Connection,
        ws: &WorkspaceRecord,
        workspace: &WorkspaceRef,
        new: &NewPromotion,
        from_first: bool,
        from: Uuid,
        to: Uuid,
    ) -> StoreResult<(u32, Entity)> {
        let (persona_id, latest): (Uuid, i64) = sqlx::query_as(
            "SELECT id, version FROM personas WHERE workspace_id = $1 AND name = $2",
        )
        .bind(ws.id)
        .bind(new.name.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("persona '{}' of {workspace}", new.name)))?;
        let number = if from_first {
            new.version
                .unwrap_or_else(|| u32::try_from(latest).unwrap_or(0))
        } else {
            let serves = Self::served_persona(&mut *conn, from, persona_id).await?;
            Self::moves_on(serves.map(|(n, _)| n), new, "persona")?
        };
        let data: String = sqlx::query_scalar(
            "SELECT data FROM persona_versions WHERE persona_id = $1 AND number = $2",
        )
        .bind(persona_id)
        .bind(i64::from(number))
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "version {number} of persona '{}' (its versions are 1 to {latest})",
                new.name
            ))
        })?;
        let promoted = parse_persona_data(&data).map_err(|e| corrupt("persona", persona_id, &e))?;
        let current = Self::served_persona(&mut *conn, to, persona_id).await?;
        Ok((
            number,
            Entity::Persona {
                persona_id,
                promoted,
                current,
            },
        ))
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
                    .await?;
            if let Some(text) = own {
                return Ok((parse(&text, ws)?, RulesSource::Workspace));
            }
        }
        let org_rules: Option<String> =
            sqlx::query_scalar("SELECT approval_rules FROM orgs WHERE id = $1")
                .bind(org)
                .fetch_optional(&mut *conn)
                .await?
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
            .await?
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
            .await?;
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
        .await?;
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
        .await?;
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
                .await?;
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
        .await?;
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
        .await?;
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
        .await?;
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

    /// Makes `environment` serve `version` of the promotion's entity (or,
    /// with `None`, none of it: a rollback to nothing), and records the
    /// release. Environment settings take `settings` (their served part).
    #[allow(clippy::too_many_arguments)]
    async fn serve(
        conn: &mut DB::Connection,
        org: Uuid,
        ws: &WorkspaceRecord,
        environment: &super::EnvironmentRecord,
        row: &PromotionRow,
        target: Served,
        kind: &str,
        actor: &str,
    ) -> StoreResult<()> {
        let at = now();
        let entity = row.kind()?;
        let (version, previous) = match (&target, entity) {
            (Served::Scenario { version, previous }, EntityKind::Scenario) => {
                let scenario = row.scenario_id.ok_or_else(|| deleted(row))?;
                match version {
                    Some((version_id, _)) => {
                        sqlx::query(
                            "INSERT INTO deployments (environment_id, scenario_id, version_id, workspace_id, deployed_at) \
                             VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (environment_id, scenario_id) DO UPDATE SET version_id = $3, deployed_at = $5",
                        )
                        .bind(environment.id)
                        .bind(scenario)
                        .bind(*version_id)
                        .bind(ws.id)
                        .bind(at)
                        .execute(&mut *conn)
                        .await?;
                    }
                    None => {
                        sqlx::query("DELETE FROM deployments WHERE environment_id = $1 AND scenario_id = $2")
                            .bind(environment.id)
                            .bind(scenario)
                            .execute(&mut *conn)
                            .await?;
                    }
                }
                (version.map_or(0, |(_, n)| n), previous.unwrap_or(0))
            }
            (Served::Persona { version, previous }, EntityKind::Persona) => {
                let persona = row.persona_id.ok_or_else(|| deleted(row))?;
                match version {
                    Some(number) => {
                        sqlx::query(
                            "INSERT INTO persona_deployments (environment_id, persona_id, number, org_id, workspace_id, deployed_at) \
                             VALUES ($1, $2, $3, $4, $5, $6) \
                             ON CONFLICT (environment_id, persona_id) DO UPDATE SET number = $3, deployed_at = $6",
                        )
                        .bind(environment.id)
                        .bind(persona)
                        .bind(i64::from(*number))
                        .bind(org)
                        .bind(ws.id)
                        .bind(at)
                        .execute(&mut *conn)
                        .await?;
                    }
                    None => {
                        sqlx::query("DELETE FROM persona_deployments WHERE environment_id = $1 AND persona_id = $2")
                            .bind(environment.id)
                            .bind(persona)
                            .execute(&mut *conn)
                            .await?;
                    }
                }
                (version.unwrap_or(0), previous.unwrap_or(0))
            }
            (Served::Environment { settings }, EntityKind::Environment) => {
                let next = environment.settings.with_served_of(settings);
                let updated = sqlx::query(
                    "UPDATE environments SET settings = $1, version = version + 1, updated_at = $2 \
                     WHERE id = $3 AND version = $4",
                )
                .bind(to_json(&next))
                .bind(at)
                .bind(environment.id)
                .bind(environment.version)
                .execute(&mut *conn)
                .await?;
                if DB::rows_affected(&updated) != 1 {
                    return Err(StoreError::Conflict(format!(
                        "the settings of {} changed while this request acted on them; try again",
                        environment.name
                    )));
                }
                let before = u32::try_from(environment.version).unwrap_or(0);
                (before + 1, before)
            }
            _ => {
                return Err(corrupt(
                    "promotion",
                    row.id,
                    &FieldError::new("entity_kind", "does not match what it serves"),
                ));
            }
        };
        sqlx::query(
            "INSERT INTO releases (id, org_id, workspace_id, environment_id, entity_kind, scenario_id, persona_id, scenario, \
             version, previous_version, kind, promotion_id, actor, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(Uuid::now_v7())
        .bind(org)
        .bind(ws.id)
        .bind(environment.id)
        .bind(entity.as_str().to_owned())
        .bind(row.scenario_id.filter(|_| entity == EntityKind::Scenario))
        .bind(row.persona_id.filter(|_| entity == EntityKind::Persona))
        .bind(if entity == EntityKind::Environment {
            environment.name.to_string()
        } else {
            row.scenario.clone()
        })
        .bind(version_i32(version))
        .bind(version_i32(previous))
        .bind(kind.to_owned())
        .bind(Some(row.id))
        .bind(actor.to_owned())
        .bind(at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// A rollback refused because the target serves something else now.
    fn replaced(label: &str, env: &str, serves: Option<u32>, row: &PromotionRow) -> StoreError {
        StoreError::FailedPrecondition(format!(
            "cannot roll back {label}: {env} serves {} of {} '{}' now, not the version {} it promoted; roll back the later change first",
            serves.map_or("no version".to_owned(), |n| format!("version {n}")),
            row.entity_kind,
            row.scenario,
            row.version
        ))
    }

    /// The promotion as this transaction leaves it; then commits.
    async fn finish(
        mut tx: sqlx::Transaction<'static, DB>,
        org: Uuid,
        id: Uuid,
    ) -> StoreResult<PromotionRecord> {
        let row = Self::promotion_row(&mut tx, org, id, false).await?;
        let record = Self::full_record(&mut tx, row).await?;
        tx.commit().await?;
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
        let gathered = Self::gather(&mut tx, org, &ws, workspace, new, true, None).await?;
        let evaluation = gathered.evaluate(&ws, new.to.as_str(), &[])?;
        tx.commit().await?;
        Ok(Preview {
            kind: new.kind,
            name: new.name.to_string(),
            version: gathered.version,
            from_environment: new.from.to_string(),
            to_environment: new.to.to_string(),
            current_version: gathered.current(),
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
        let gathered = Self::gather(&mut tx, org, &ws, workspace, &new, true, None).await?;
        let what = gathered.describe(new.kind, new.name.as_str());
        if gathered.served_already() {
            return Err(StoreError::FailedPrecondition(format!(
                "{} already serves {what}",
                new.to
            )));
        }
        // One open promotion per thing and target (settings: per target).
        let open: Option<i64> = sqlx::query_scalar(
            "SELECT number FROM promotions WHERE workspace_id = $1 AND entity_kind = $2 \
             AND ($2 = 'environment' OR scenario = $3) \
             AND to_environment = $4 AND status IN ('pending', 'approved') ORDER BY number LIMIT 1",
        )
        .bind(ws.id)
        .bind(new.kind.as_str().to_owned())
        .bind(new.name.to_string())
        .bind(new.to.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(number) = open {
            let what = match new.kind {
                EntityKind::Environment => "settings".to_owned(),
                kind => format!("{kind} '{}'", new.name),
            };
            return Err(StoreError::AlreadyExists(format!(
                "promotion #{number} of {what} into {} is still open: decide, execute or let it expire first",
                new.to
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
        .await?;
        let at = now();
        let id = Uuid::now_v7();
        let tags: Vec<String> = gathered.tags.iter().map(ToString::to_string).collect();
        sqlx::query(
            "INSERT INTO promotions (id, org_id, workspace_id, number, entity_kind, scenario_id, scenario, version_id, version, \
             from_environment_id, to_environment_id, from_environment, to_environment, status, status_reason, requested_by, \
             requested_by_name, comment, metadata, tags, approvals_required, approver_roles, approval_reasons, diff, gates, \
             previous_version_id, previous_version, expires_at, created_at, updated_at, persona_id, settings) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'pending', $14, $15, $16, $17, $18, $19, $20, \
             $21, $22, $23, $24, $25, $26, $27, $28, $28, $29, $30)",
        )
        .bind(id)
        .bind(org)
        .bind(ws.id)
        .bind(number)
        .bind(new.kind.as_str().to_owned())
        .bind(match &gathered.entity {
            Entity::Scenario { scenario_id, .. } => Some(*scenario_id),
            _ => None,
        })
        .bind(new.name.to_string())
        .bind(match &gathered.entity {
            Entity::Scenario { version_id, .. } => Some(*version_id),
            _ => None,
        })
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
        .bind(match &gathered.entity {
            Entity::Scenario { current, .. } => current.map(|(v, _)| v),
            _ => None,
        })
        .bind(gathered.current().map(version_i32))
        .bind(at + Duration::seconds(i64::from(expire_after)))
        .bind(at)
        .bind(match &gathered.entity {
            Entity::Persona { persona_id, .. } => Some(*persona_id),
            _ => None,
        })
        .bind(match &gathered.entity {
            Entity::Environment { promoted, .. } => Some(to_json(promoted)),
            _ => None,
        })
        .execute(&mut *tx)
        .await?;
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
                "entity_kind": new.kind.as_str(),
                "name": new.name.to_string(),
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
        .await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            records.push(Self::full_record(&mut tx, row).await?);
        }
        tx.commit().await?;
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
            super::tx::db_error(e, || {
                StoreError::AlreadyExists(format!("you have already decided on {label}; one decision per approver"))
            })
        })?;
        let actor = (Some(decision.approver.id), decision.approver.name.as_str());
        let approvals: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM promotion_decisions WHERE promotion_id = $1 AND decision = 'approve'",
        )
        .bind(row.id)
        .fetch_one(&mut *tx)
        .await?;
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
                .await?;
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
        let kind = row.kind()?;
        let present = match kind {
            EntityKind::Scenario => row.scenario_id.is_some(),
            EntityKind::Persona => row.persona_id.is_some(),
            EntityKind::Environment => true,
        };
        let (Some(name), Some(to_env), true) = (
            Slug::parse(&row.scenario).ok(),
            row.to_environment_id
                .and_then(|id| ws.environments.iter().find(|e| e.id == id)),
            present,
        ) else {
            let reason = format!("its {kind} or target environment was deleted");
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
        let to_env = to_env.clone();
        let to_name = to_env.name.clone();
        // The version this promotion was approved for, whatever `from`
        // serves by now (its own environment may be gone: the target is
        // what matters).
        let new = NewPromotion {
            kind,
            name: name.clone(),
            version: Some(u32::try_from(row.version).unwrap_or(0)),
            from: to_name.clone(),
            to: to_name.clone(),
            comment: String::new(),
            metadata: BTreeMap::new(),
            requested_by: actor.clone(),
        };
        let gathered = Self::gather(
            &mut tx,
            org,
            &ws,
            &WorkspaceRef::Id(ws.id),
            &new,
            false,
            row.frozen_settings()?,
        )
        .await?;
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
                .await?;
            Self::fail(&mut tx, org, &row, status, actor_ref, &reason).await?;
            return Self::finish(tx, org, id).await;
        }
        if let Some(gate) = evaluation.waiting() {
            return Err(StoreError::FailedPrecondition(format!(
                "{label} waits for external checks: {}",
                gate.detail
            )));
        }
        let what = gathered.describe(kind, name.as_str());
        if gathered.served_already() {
            return Err(StoreError::FailedPrecondition(format!(
                "{to_name} already serves {what}"
            )));
        }
        let current = gathered.current();
        let (served, previous_id, previous_settings) = match &gathered.entity {
            Entity::Scenario {
                version_id,
                current,
                ..
            } => (
                Served::Scenario {
                    version: Some((*version_id, gathered.version)),
                    previous: current.map(|(_, n)| n),
                },
                current.map(|(v, _)| v),
                None,
            ),
            Entity::Persona { current, .. } => (
                Served::Persona {
                    version: Some(gathered.version),
                    previous: current.as_ref().map(|(n, _)| *n),
                },
                None,
                None,
            ),
            Entity::Environment {
                promoted, target, ..
            } => (
                Served::Environment {
                    settings: promoted.clone(),
                },
                None,
                Some(to_json(&target.served_part())),
            ),
        };
        Self::serve(
            &mut tx,
            org,
            &ws,
            &to_env,
            &row,
            served,
            "promotion",
            &actor.name,
        )
        .await?;
        let at = now();
        sqlx::query(
            "UPDATE promotions SET gates = $1, diff = $2, previous_version_id = $3, previous_version = $4, completed_at = $5, \
             previous_settings = $6 WHERE id = $7",
        )
        .bind(to_json(&evaluation.gates))
        .bind(to_json(&evaluation.diff))
        .bind(previous_id)
        .bind(current.map(version_i32))
        .bind(at)
        .bind(previous_settings)
        .bind(row.id)
        .execute(&mut *tx)
        .await?;
        Self::transition(
            &mut tx,
            org,
            &row,
            Some(Status::Approved),
            Status::Completed,
            actor_ref,
            &format!("{to_name} serves {what}"),
        )
        .await?;
        append::<DB>(
            &mut tx,
            Change::new(org, "promotion.execute", format!("workspace/{}/promotion/{}", row.workspace, row.number))
                .workspace(row.workspace_id)
                .environment(to_name.to_string())
                .summary(json!({
                    "before": {"version": current},
                    "after": {"entity_kind": kind.as_str(), "name": name.to_string(), "version": gathered.version, "status": "completed"},
                })),
        )
        .await?;
        let revision = bump_revision::<DB>(&mut tx, ws.id).await?;
        sqlx::query("UPDATE promotions SET revision = $1 WHERE id = $2")
            .bind(i64::try_from(revision).unwrap_or(i64::MAX))
            .bind(row.id)
            .execute(&mut *tx)
            .await?;
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
        let kind = row.kind()?;
        let Some(env) = row
            .to_environment_id
            .and_then(|id| ws.environments.iter().find(|e| e.id == id))
            .cloned()
        else {
            return Err(StoreError::FailedPrecondition(format!(
                "cannot roll back {label}: its target environment was deleted"
            )));
        };
        let previous = row.previous_version.and_then(|n| u32::try_from(n).ok());
        let (served, back_to) = match kind {
            EntityKind::Scenario => {
                let Some(scenario_id) = row.scenario_id else {
                    return Err(StoreError::FailedPrecondition(format!(
                        "cannot roll back {label}: its scenario was deleted"
                    )));
                };
                let serves = Self::served_version(&mut tx, env.id, scenario_id).await?;
                if serves.map(|(v, _)| v) != row.version_id {
                    return Err(Self::replaced(
                        &label,
                        env.name.as_str(),
                        serves.map(|(_, n)| n),
                        &row,
                    ));
                }
                let previous = match (row.previous_version_id, previous) {
                    (Some(v), Some(n)) => Some((v, n)),
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
                    .await?;
                    let mut routes = Vec::new();
                    for (version, bytes) in &others {
                        routes.extend(
                            decode_content(bytes).map_err(|e| corrupt("version", *version, &e))?,
                        );
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
                (
                    Served::Scenario {
                        version: previous,
                        previous: u32::try_from(row.version).ok(),
                    },
                    previous.map_or("no version".to_owned(), |(_, n)| format!("version {n}")),
                )
            }
            EntityKind::Persona => {
                let Some(persona_id) = row.persona_id else {
                    return Err(StoreError::FailedPrecondition(format!(
                        "cannot roll back {label}: its persona was deleted"
                    )));
                };
                let serves = Self::served_persona(&mut tx, env.id, persona_id).await?;
                let serves = serves.map(|(n, _)| n);
                if serves != u32::try_from(row.version).ok() {
                    return Err(Self::replaced(&label, env.name.as_str(), serves, &row));
                }
                (
                    Served::Persona {
                        version: previous,
                        previous: serves,
                    },
                    previous.map_or("no version".to_owned(), |n| format!("version {n}")),
                )
            }
            EntityKind::Environment => {
                let (Some(promoted), Some(before)) = (
                    row.frozen_settings()?,
                    row.previous_settings
                        .as_deref()
                        .map(serde_json::from_str::<EnvSettings>)
                        .transpose()
                        .map_err(|e| {
                            corrupt(
                                "promotion",
                                row.id,
                                &FieldError::new("previous_settings", e.to_string()),
                            )
                        })?,
                ) else {
                    return Err(corrupt(
                        "promotion",
                        row.id,
                        &FieldError::new(
                            "settings",
                            "an executed settings promotion keeps both settings",
                        ),
                    ));
                };
                if env.settings.served_part() != promoted.served_part() {
                    return Err(StoreError::FailedPrecondition(format!(
                        "cannot roll back {label}: the settings of {} changed after it (now at version {}); change them back or promote again",
                        env.name, env.version
                    )));
                }
                (
                    Served::Environment {
                        settings: Box::new(before),
                    },
                    "its settings from before".to_owned(),
                )
            }
        };
        let env_name = env.name.to_string();
        Self::serve(
            &mut tx,
            org,
            &ws,
            &env,
            &row,
            served,
            "rollback",
            &actor.name,
        )
        .await?;
        let why = if reason.is_empty() {
            format!("rolled back: {env_name} serves {back_to} again")
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
                    "after": {"entity_kind": kind.as_str(), "version": previous, "status": "rolled_back", "reason": reason},
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
        .await?;
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
        .await?;
        tx.commit().await?;
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
                .execute(&mut *tx)
                .await?;
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
        tx.commit().await?;
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
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
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
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = match workspace {
            Some(key) => Some(load_workspace::<DB>(&mut tx, org, key).await?.id),
            None => None,
        };
        let rules = Self::rules_in(&mut tx, org, ws).await?;
        tx.commit().await?;
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
                    .await?;
                (Some(ws.id), format!("workspace/{}/approval_rules", ws.slug))
            }
            None => {
                sqlx::query("UPDATE orgs SET approval_rules = $1 WHERE id = $2")
                    .bind(text.clone())
                    .bind(org)
                    .execute(&mut *tx)
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
        append::<DB>(&mut tx, change).await?;
        let now_in_force = Self::rules_in(&mut tx, org, ws).await?;
        tx.commit().await?;
        Ok(now_in_force)
    }
}
