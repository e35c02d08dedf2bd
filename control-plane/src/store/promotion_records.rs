//! What the store keeps of a promotion and what a workflow step works
//! with: the records, the row, what one transaction gathered for the gates,
//! what an environment is to serve, and [`PromotionTx`], the narrow
//! transactional interface through which the workflow (`crate::promotions`)
//! requests, decides, executes and rolls back promotions.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use mockplane_shared::governance::drift::Diff;
use mockplane_shared::governance::promotion::{
    CheckState, EntityKind, Evaluation, Gate, PillarRules, Requirement, Status,
};
use mockplane_shared::model::checks::ContractCheck;
use mockplane_shared::model::environment::EnvSettings;
use mockplane_shared::model::persona::PersonaConfig;
use mockplane_shared::model::scenario::Tag;
use mockplane_shared::{ConfigRoute, FieldError, Slug};
use serde_json::json;
use sqlx::FromRow;
use uuid::Uuid;

use super::audit::Change;
use super::tx::{corrupt, now};
use super::{EnvironmentRecord, StoreError, StoreResult, WorkspaceRecord, WorkspaceRef};

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

/// One step of the promotion workflow: a database transaction confined to
/// one org, and the only reads and writes a step makes. Dropping it
/// without [`finish`](Self::finish) or [`commit`](Self::commit) rolls
/// everything back.
#[async_trait]
pub trait PromotionTx: Send {
    /// The workspace, with the transaction confined to it.
    async fn workspace(&mut self, key: &WorkspaceRef) -> StoreResult<WorkspaceRecord>;
    /// The promotion's row; `lock`: held against other writers until the
    /// transaction ends.
    async fn promotion(&mut self, id: Uuid, lock: bool) -> StoreResult<PromotionRow>;
    /// What the gates read. `from_rules`: check the chain and that the
    /// version is what `from` serves (a new request); an execution gathers
    /// for the version it was approved for (environment settings: the ones
    /// `frozen` at the request).
    async fn gather(
        &mut self,
        ws: &WorkspaceRecord,
        workspace: &WorkspaceRef,
        new: &NewPromotion,
        from_rules: bool,
        frozen: Option<EnvSettings>,
    ) -> StoreResult<Gathered>;
    /// The external checks reported on a promotion.
    async fn reported(&mut self, id: Uuid) -> StoreResult<Vec<(String, CheckState)>>;
    /// The number of an open (pending or approved) promotion of the same
    /// thing into the same target.
    async fn open_promotion(
        &mut self,
        workspace: Uuid,
        new: &NewPromotion,
    ) -> StoreResult<Option<i64>>;
    /// Records a new request, `pending`, with its gates' results.
    async fn insert(
        &mut self,
        ws: &WorkspaceRecord,
        new: &NewPromotion,
        gathered: &Gathered,
        evaluation: &Evaluation,
        expire_after: TimeDelta,
    ) -> StoreResult<PromotionRow>;
    /// Records an approver's decision (`AlreadyExists` for a second one);
    /// returns the approvals given so far.
    async fn decide(&mut self, row: &PromotionRow, decision: &Decision) -> StoreResult<i64>;
    /// The approvals given so far.
    async fn approvals(&mut self, id: Uuid) -> StoreResult<i64>;
    /// Moves a promotion to `to`, recording who and why, and queues the
    /// notification of the new status; refuses a move the status machine
    /// does not allow, and one from a status other than `from`.
    async fn transition(
        &mut self,
        row: &PromotionRow,
        from: Option<Status>,
        to: Status,
        actor: (Option<Uuid>, &str),
        reason: &str,
    ) -> StoreResult<()>;
    /// Queues a notification about a promotion.
    async fn notify(
        &mut self,
        row: &PromotionRow,
        event: &'static str,
        status: Status,
        actor: &str,
        reason: &str,
    ) -> StoreResult<()>;
    /// Keeps the gates' results and the diff of an evaluation.
    async fn record_gates(&mut self, id: Uuid, evaluation: &Evaluation) -> StoreResult<()>;
    /// Keeps what an execution found: its evaluation, what the target
    /// served before (`(version id, number)`), the settings before.
    async fn record_execution(
        &mut self,
        id: Uuid,
        evaluation: &Evaluation,
        previous: Option<(Option<Uuid>, u32)>,
        previous_settings: Option<EnvSettings>,
    ) -> StoreResult<()>;
    /// The version of a scenario an environment serves: `(id, number)`.
    async fn served_version(
        &mut self,
        environment: Uuid,
        scenario: Uuid,
    ) -> StoreResult<Option<(Uuid, u32)>>;
    /// The version number and document of a persona an environment serves.
    async fn served_persona(
        &mut self,
        environment: Uuid,
        persona: Uuid,
    ) -> StoreResult<Option<(u32, serde_json::Value)>>;
    /// The routes of `version` of a scenario with every other scenario's
    /// routes the environment serves.
    async fn routes_beside(
        &mut self,
        environment: Uuid,
        scenario: Uuid,
        version: Uuid,
    ) -> StoreResult<Vec<ConfigRoute>>;
    /// Makes `environment` serve `target` of the promotion's entity (a
    /// version, none, or settings) and records the release (`kind`:
    /// promotion or rollback).
    #[allow(clippy::too_many_arguments)]
    async fn serve(
        &mut self,
        ws: &WorkspaceRecord,
        environment: &EnvironmentRecord,
        row: &PromotionRow,
        target: Served,
        kind: &str,
        actor: &str,
    ) -> StoreResult<()>;
    /// Records (or replaces) an external check's result.
    async fn record_check(&mut self, row: &PromotionRow, report: &CheckReport) -> StoreResult<()>;
    /// Appends to the audit trail.
    async fn audit(&mut self, change: Change) -> StoreResult<()>;
    /// Bumps the config revision for the workspace (nodes will serve what
    /// this transaction changed); with `promotion`, records the revision
    /// on it.
    async fn bump(&mut self, workspace: Uuid, promotion: Option<Uuid>) -> StoreResult<u64>;
    /// The promotion as this transaction leaves it; then commits.
    async fn finish(self: Box<Self>, id: Uuid) -> StoreResult<PromotionRecord>;
    /// Commits.
    async fn commit(self: Box<Self>) -> StoreResult<()>;
}

/// One promotion step's open transaction, confined to its org.
pub(super) struct SqlPromotionTx<DB: sqlx::Database> {
    pub(super) tx: super::tx::Tx<DB>,
    pub(super) org: Uuid,
}

#[derive(FromRow)]
pub struct PromotionRow {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub workspace: String,
    pub number: i64,
    pub entity_kind: String,
    pub scenario_id: Option<Uuid>,
    pub persona_id: Option<Uuid>,
    /// The name of what is promoted (see the migration).
    pub scenario: String,
    pub version_id: Option<Uuid>,
    pub version: i32,
    pub settings: Option<String>,
    pub previous_settings: Option<String>,
    pub to_environment_id: Option<Uuid>,
    pub from_environment: String,
    pub to_environment: String,
    pub status: String,
    pub status_reason: String,
    pub requested_by: Option<Uuid>,
    pub requested_by_name: String,
    pub comment: String,
    pub metadata: String,
    pub tags: String,
    pub approvals_required: i32,
    pub approver_roles: String,
    pub approval_reasons: String,
    pub diff: String,
    pub gates: String,
    pub previous_version_id: Option<Uuid>,
    pub previous_version: Option<i32>,
    pub revision: Option<i64>,
    pub pr_url: Option<String>,
    pub gitops_error: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub reminded_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

pub(super) const SELECT_PROMOTION: &str = "SELECT p.id, p.workspace_id, w.slug AS workspace, p.number, p.entity_kind, \
     p.scenario_id, p.persona_id, p.scenario, p.version_id, p.version, p.settings, p.previous_settings, p.to_environment_id, p.from_environment, \
     p.to_environment, p.status, p.status_reason, p.requested_by, p.requested_by_name, p.comment, \
     p.metadata, p.tags, p.approvals_required, p.approver_roles, p.approval_reasons, p.diff, p.gates, \
     p.previous_version_id, p.previous_version, p.revision, p.pr_url, p.gitops_error, p.expires_at, \
     p.reminded_at, p.created_at, p.updated_at, p.completed_at \
     FROM promotions p JOIN workspaces w ON w.id = p.workspace_id ";

impl PromotionRow {
    pub fn status(&self) -> StoreResult<Status> {
        Status::parse(&self.status).map_err(|e| corrupt("promotion", self.id, &e))
    }

    pub fn kind(&self) -> StoreResult<EntityKind> {
        EntityKind::parse(&self.entity_kind).map_err(|e| corrupt("promotion", self.id, &e))
    }

    /// The settings an environment promotion froze at its request.
    pub fn frozen_settings(&self) -> StoreResult<Option<EnvSettings>> {
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

    /// The settings a target had before an executed environment
    /// promotion.
    pub fn settings_before(&self) -> StoreResult<Option<EnvSettings>> {
        self.previous_settings
            .as_deref()
            .map(serde_json::from_str::<EnvSettings>)
            .transpose()
            .map_err(|e| {
                corrupt(
                    "promotion",
                    self.id,
                    &FieldError::new("previous_settings", e.to_string()),
                )
            })
    }

    /// What an executed environment promotion changed: the settings it
    /// promoted and the target's from before.
    pub fn settings_promoted_and_before(&self) -> StoreResult<(EnvSettings, EnvSettings)> {
        match (self.frozen_settings()?, self.settings_before()?) {
            (Some(promoted), Some(before)) => Ok((promoted, before)),
            _ => Err(corrupt(
                "promotion",
                self.id,
                &FieldError::new(
                    "settings",
                    "an executed settings promotion keeps both settings",
                ),
            )),
        }
    }

    /// The roles that may decide it (empty: any role with the permission).
    pub fn approver_roles(&self) -> Vec<String> {
        serde_json::from_str(&self.approver_roles).unwrap_or_default()
    }

    /// "promotion #3 of workspace 'shop'".
    pub fn label(&self) -> String {
        format!(
            "promotion #{} of workspace '{}'",
            self.number, self.workspace
        )
    }

    pub(super) fn into_record(
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
pub(super) fn event_payload(
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

pub(super) fn event_of(status: Status) -> Option<&'static str> {
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
pub enum Served {
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

pub(super) fn deleted(row: &PromotionRow) -> StoreError {
    StoreError::FailedPrecondition(format!(
        "promotion #{} of workspace '{}': its {} was deleted",
        row.number, row.workspace, row.entity_kind
    ))
}

pub(super) fn promotion_not_found(id: Uuid) -> StoreError {
    StoreError::NotFound(format!("promotion {id}"))
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".to_owned())
}

pub(super) fn version_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// What is promoted and what the target serves of it, as one transaction
/// read them.
pub enum Entity {
    Scenario {
        scenario_id: Uuid,
        version_id: Uuid,
        checks: Vec<ContractCheck>,
        promoted: Vec<ConfigRoute>,
        /// `(version id, number)` the target serves now.
        current: Option<(Uuid, u32)>,
        served: Vec<ConfigRoute>,
        others: Vec<ConfigRoute>,
        /// The personas the target serves, which the contract checks'
        /// templates read.
        personas: Vec<PersonaConfig>,
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
pub struct Gathered {
    pub name: String,
    /// The version promoted (see [`PromotionRecord::version`]).
    pub version: u32,
    pub tags: Vec<Tag>,
    pub rules: PillarRules,
    pub entity: Entity,
}

impl Gathered {
    /// What the target serves of it now, as a version number.
    pub fn current(&self) -> Option<u32> {
        match &self.entity {
            Entity::Scenario { current, .. } => current.map(|(_, n)| n),
            Entity::Persona { current, .. } => current.as_ref().map(|(n, _)| *n),
            Entity::Environment { target_version, .. } => u32::try_from(*target_version).ok(),
        }
    }

    /// Whether the target serves exactly what is promoted already.
    pub fn served_already(&self) -> bool {
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
    pub fn describe(&self, kind: EntityKind, name: &str) -> String {
        match kind {
            EntityKind::Environment => format!("the settings of {name}"),
            _ => format!("version {} of {kind} '{name}'", self.version),
        }
    }
}
