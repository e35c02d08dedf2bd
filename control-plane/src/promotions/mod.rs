//! The promotion workflow: request, decide, execute, roll back, report a
//! check, expire. Each step is one database transaction opened through
//! [`PromotionStore::begin_promotion`]; the store answers what a step asks
//! ([`PromotionTx`]: lock, gather, deploy, record the release, transition,
//! audit, bump) and this module makes every decision in between.
//!
//! The gates run inside the transaction that acts on their result, on what
//! it read: an execution re-runs them against what the target serves at
//! that moment, so a target that changed since the request is judged as it
//! is. A step that returns an error commits nothing (its transaction is
//! dropped); a step that ends a promotion as failed commits the failure.

mod gates;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use mockplane_shared::EnvironmentConfig;
use mockplane_shared::Slug;
use mockplane_shared::governance::promotion::{EntityKind, Status};
use mockplane_shared::model::environment::DEFAULT_APPROVAL_TIMEOUT_SECS;
use serde_json::json;
use uuid::Uuid;

use crate::store::audit::Change;
use crate::store::{
    Actor, CheckReport, Decision, Entity, NewPromotion, Preview, PromotionRecord, PromotionRow,
    PromotionStore, PromotionTx, Served, StoreError, StoreResult, TxMode, WorkspaceRef,
};

/// What the promotion would change and what its gates say; nothing is
/// written.
pub async fn preview(
    store: &dyn PromotionStore,
    org: Uuid,
    workspace: &WorkspaceRef,
    new: &NewPromotion,
) -> StoreResult<Preview> {
    let mut tx = store.begin_promotion(org, TxMode::Read).await?;
    let ws = tx.workspace(workspace).await?;
    let gathered = tx.gather(&ws, workspace, new, true, None).await?;
    let evaluation = gates::evaluate(&gathered, &ws, new.to.as_str(), &[])?;
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

/// Records a request with its gates' results: `failed` when a gate
/// failed, `approved` when nobody needs to approve, else `pending`.
pub async fn request(
    store: &dyn PromotionStore,
    org: Uuid,
    workspace: &WorkspaceRef,
    new: NewPromotion,
) -> StoreResult<PromotionRecord> {
    let mut tx = store.begin_promotion(org, TxMode::Write).await?;
    let ws = tx.workspace(workspace).await?;
    let gathered = tx.gather(&ws, workspace, &new, true, None).await?;
    let what = gathered.describe(new.kind, new.name.as_str());
    if gathered.served_already() {
        return Err(StoreError::FailedPrecondition(format!(
            "{} already serves {what}",
            new.to
        )));
    }
    // One open promotion per thing and target (settings: per target).
    if let Some(number) = tx.open_promotion(ws.id, &new).await? {
        let what = match new.kind {
            EntityKind::Environment => "settings".to_owned(),
            kind => format!("{kind} '{}'", new.name),
        };
        return Err(StoreError::AlreadyExists(format!(
            "promotion #{number} of {what} into {} is still open: decide, execute or let it expire first",
            new.to
        )));
    }
    let evaluation = gates::evaluate(&gathered, &ws, new.to.as_str(), &[])?;
    let expire_after = ws
        .environment(new.to.as_str())
        .map(|e| e.settings.over(&ws.environment_defaults).effective())
        .map_or(DEFAULT_APPROVAL_TIMEOUT_SECS, |s| {
            s.approvals.expire_after_secs()
        });
    let row = tx
        .insert(
            &ws,
            &new,
            &gathered,
            &evaluation,
            Duration::seconds(i64::from(expire_after)),
        )
        .await?;
    let actor = (Some(new.requested_by.id), new.requested_by.name.as_str());
    tx.transition(&row, None, Status::Pending, actor, &new.comment)
        .await?;
    tx.notify(&row, "requested", Status::Pending, actor.1, &new.comment)
        .await?;
    let outcome = if let Some(gate) = evaluation.blocked() {
        let reason = format!("gate {} failed: {}", gate.name, gate.detail);
        tx.transition(&row, Some(Status::Pending), Status::Failed, actor, &reason)
            .await?;
        "failed"
    } else if evaluation.requirement.approvals == 0 {
        let reason = format!("{} requires no approval", new.to);
        tx.transition(
            &row,
            Some(Status::Pending),
            Status::Approved,
            actor,
            &reason,
        )
        .await?;
        "approved"
    } else {
        let reason = evaluation.requirement.reasons.join("; ");
        tx.notify(&row, "approval_needed", Status::Pending, actor.1, &reason)
            .await?;
        "pending"
    };
    tx.audit(
        Change::new(
            org,
            "promotion.request",
            format!("workspace/{}/promotion/{}", ws.slug, row.number),
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
    tx.finish(row.id).await
}

/// An approval or a rejection. Refused for the requester (`Refused`), a
/// second decision of the same approver (`AlreadyExists`), a role the
/// target does not accept (`Refused`), and a promotion that is not pending
/// or has expired (`FailedPrecondition`; an expired one is marked expired
/// first).
pub async fn decide(
    store: &dyn PromotionStore,
    org: Uuid,
    id: Uuid,
    decision: Decision,
) -> StoreResult<PromotionRecord> {
    let mut tx = store.begin_promotion(org, TxMode::Write).await?;
    let row = tx.promotion(id, true).await?;
    let status = row.status()?;
    let (verb, next) = if decision.approve {
        ("approve", Status::Approved)
    } else {
        ("reject", Status::Rejected)
    };
    let label = row.label();
    if status != Status::Pending {
        return Err(StoreError::FailedPrecondition(format!(
            "cannot {verb} {label}: {}",
            status.refuse(next)
        )));
    }
    let at = Utc::now();
    if row.expires_at <= at {
        drop(tx);
        expire(store, org, id, at).await?;
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
    let roles = row.approver_roles();
    if !roles.is_empty() && !roles.contains(&decision.role) {
        return Err(StoreError::Refused(format!(
            "promotions into {} are decided by {}; your role there is {}",
            row.to_environment,
            roles.join(" or "),
            decision.role
        )));
    }
    let approvals = tx.decide(&row, &decision).await?;
    let actor = (Some(decision.approver.id), decision.approver.name.as_str());
    let needed = i64::from(row.approvals_required);
    if !decision.approve {
        let reason = if decision.comment.is_empty() {
            format!("rejected by {}", decision.approver.name)
        } else {
            decision.comment.clone()
        };
        tx.transition(
            &row,
            Some(Status::Pending),
            Status::Rejected,
            actor,
            &reason,
        )
        .await?;
    } else if approvals >= needed {
        let reason = format!("{approvals} of {needed} approval(s) given");
        tx.transition(
            &row,
            Some(Status::Pending),
            Status::Approved,
            actor,
            &reason,
        )
        .await?;
    }
    tx.audit(
        Change::new(
            org,
            if decision.approve {
                "promotion.approve"
            } else {
                "promotion.reject"
            },
            format!("workspace/{}/promotion/{}", row.workspace, row.number),
        )
        .workspace(row.workspace_id)
        .environment(row.to_environment.clone())
        .summary(json!({"after": {
            "approvals": approvals,
            "required": needed,
            "role": decision.role,
            "comment": decision.comment,
        }})),
    )
    .await?;
    tx.finish(id).await
}

/// Executes an approved promotion in one transaction: the gates again, the
/// deployment, the release history, the status, the audit event and the
/// revision. A gate that fails now makes it `failed` (returned, not an
/// error); external checks not yet green are `FailedPrecondition` and
/// change nothing.
pub async fn execute(
    store: &dyn PromotionStore,
    org: Uuid,
    id: Uuid,
    actor: Actor,
) -> StoreResult<PromotionRecord> {
    let mut tx = store.begin_promotion(org, TxMode::Write).await?;
    let row = tx.promotion(id, true).await?;
    let status = row.status()?;
    let label = row.label();
    match status {
        Status::Approved => {}
        Status::Pending => {
            let given = tx.approvals(row.id).await?;
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
    let ws = tx.workspace(&WorkspaceRef::Id(row.workspace_id)).await?;
    let kind = row.kind()?;
    let present = match kind {
        EntityKind::Scenario => row.scenario_id.is_some(),
        EntityKind::Persona => row.persona_id.is_some(),
        EntityKind::Environment => true,
    };
    let actor_ref = (Some(actor.id), actor.name.as_str());
    let (Some(name), Some(to_env), true) = (
        Slug::parse(&row.scenario).ok(),
        row.to_environment_id
            .and_then(|id| ws.environments.iter().find(|e| e.id == id)),
        present,
    ) else {
        let reason = format!("its {kind} or target environment was deleted");
        fail(&mut *tx, org, &row, status, actor_ref, &reason).await?;
        return tx.finish(id).await;
    };
    let to_env = to_env.clone();
    let to_name = to_env.name.clone();
    // The version this promotion was approved for, whatever `from` serves
    // by now (its own environment may be gone: the target is what
    // matters).
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
    let gathered = tx
        .gather(
            &ws,
            &WorkspaceRef::Id(ws.id),
            &new,
            false,
            row.frozen_settings()?,
        )
        .await?;
    let reported = tx.reported(row.id).await?;
    let evaluation = gates::evaluate(&gathered, &ws, to_name.as_str(), &reported)?;
    if let Some(gate) = evaluation.blocked() {
        let reason = format!("gate {} failed at execution: {}", gate.name, gate.detail);
        tx.record_gates(row.id, &evaluation).await?;
        fail(&mut *tx, org, &row, status, actor_ref, &reason).await?;
        return tx.finish(id).await;
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
            Some(target.served_part()),
        ),
    };
    tx.serve(&ws, &to_env, &row, served, "promotion", &actor.name)
        .await?;
    tx.record_execution(
        row.id,
        &evaluation,
        current.map(|n| (previous_id, n)),
        previous_settings,
    )
    .await?;
    tx.transition(
        &row,
        Some(Status::Approved),
        Status::Completed,
        actor_ref,
        &format!("{to_name} serves {what}"),
    )
    .await?;
    tx.audit(
        Change::new(
            org,
            "promotion.execute",
            format!("workspace/{}/promotion/{}", row.workspace, row.number),
        )
        .workspace(row.workspace_id)
        .environment(to_name.to_string())
        .summary(json!({
            "before": {"version": current},
            "after": {
                "entity_kind": kind.as_str(),
                "name": name.to_string(),
                "version": gathered.version,
                "status": "completed",
            },
        })),
    )
    .await?;
    tx.bump(ws.id, Some(row.id)).await?;
    tx.finish(id).await
}

/// Restores what the target served before a completed promotion. Refused
/// when a later change replaced its version there.
pub async fn roll_back(
    store: &dyn PromotionStore,
    org: Uuid,
    id: Uuid,
    actor: Actor,
    reason: &str,
) -> StoreResult<PromotionRecord> {
    let mut tx = store.begin_promotion(org, TxMode::Write).await?;
    let row = tx.promotion(id, true).await?;
    let status = row.status()?;
    let label = row.label();
    if status != Status::Completed {
        return Err(StoreError::FailedPrecondition(format!(
            "cannot roll back {label}: {}",
            status.refuse(Status::RolledBack)
        )));
    }
    let ws = tx.workspace(&WorkspaceRef::Id(row.workspace_id)).await?;
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
            let serves = tx.served_version(env.id, scenario_id).await?;
            if serves.map(|(v, _)| v) != row.version_id {
                return Err(replaced(
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
                let routes = tx.routes_beside(env.id, scenario_id, version_id).await?;
                EnvironmentConfig::plain(env.name.clone(), routes)
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
            let serves = tx.served_persona(env.id, persona_id).await?.map(|(n, _)| n);
            if serves != u32::try_from(row.version).ok() {
                return Err(replaced(&label, env.name.as_str(), serves, &row));
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
            let (promoted, before) = row.settings_promoted_and_before()?;
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
    tx.serve(&ws, &env, &row, served, "rollback", &actor.name)
        .await?;
    let why = if reason.is_empty() {
        format!("rolled back: {env_name} serves {back_to} again")
    } else {
        reason.to_owned()
    };
    tx.transition(
        &row,
        Some(Status::Completed),
        Status::RolledBack,
        (Some(actor.id), &actor.name),
        &why,
    )
    .await?;
    tx.audit(
        Change::new(
            org,
            "promotion.rollback",
            format!("workspace/{}/promotion/{}", row.workspace, row.number),
        )
        .workspace(row.workspace_id)
        .environment(env_name)
        .summary(json!({
            "before": {"version": row.version},
            "after": {
                "entity_kind": kind.as_str(),
                "version": previous,
                "status": "rolled_back",
                "reason": reason,
            },
        })),
    )
    .await?;
    tx.bump(ws.id, None).await?;
    tx.finish(id).await
}

/// Records an external check's result on a pending or approved promotion.
pub async fn report_check(
    store: &dyn PromotionStore,
    org: Uuid,
    id: Uuid,
    report: CheckReport,
) -> StoreResult<PromotionRecord> {
    let mut tx = store.begin_promotion(org, TxMode::Write).await?;
    let row = tx.promotion(id, true).await?;
    let status = row.status()?;
    if !matches!(status, Status::Pending | Status::Approved) {
        return Err(StoreError::FailedPrecondition(format!(
            "{} is {status}; checks are reported on pending or approved promotions",
            row.label()
        )));
    }
    tx.record_check(&row, &report).await?;
    tx.audit(
        Change::new(
            org,
            "promotion.check",
            format!("workspace/{}/promotion/{}", row.workspace, row.number),
        )
        .workspace(row.workspace_id)
        .environment(row.to_environment.clone())
        .summary(json!({"after": {
            "check": report.name,
            "status": report.state.as_str(),
            "url": report.url,
        }})),
    )
    .await?;
    tx.finish(id).await
}

/// Marks every pending promotion (of every org) whose time ran out
/// expired, each in its own transaction; returns them.
pub async fn expire_due(
    store: &dyn PromotionStore,
    at: DateTime<Utc>,
) -> StoreResult<Vec<PromotionRecord>> {
    let mut expired = Vec::new();
    for (org, id) in store.due_promotions(at).await? {
        if let Some(record) = expire(store, org, id, at).await? {
            expired.push(record);
        }
    }
    Ok(expired)
}

/// Expires one promotion if it is still pending and its time ran out.
async fn expire(
    store: &dyn PromotionStore,
    org: Uuid,
    id: Uuid,
    at: DateTime<Utc>,
) -> StoreResult<Option<PromotionRecord>> {
    let mut tx = store.begin_promotion(org, TxMode::Write).await?;
    let row = tx.promotion(id, true).await?;
    if row.status()? != Status::Pending || row.expires_at > at {
        return Ok(None);
    }
    let reason = format!("no decision before {}", row.expires_at.to_rfc3339());
    tx.transition(
        &row,
        Some(Status::Pending),
        Status::Expired,
        (None, "system"),
        &reason,
    )
    .await?;
    tx.audit(
        Change::new(
            org,
            "promotion.expire",
            format!("workspace/{}/promotion/{}", row.workspace, row.number),
        )
        .workspace(row.workspace_id)
        .environment(row.to_environment.clone())
        .summary(json!({
            "before": {"status": "pending"},
            "after": {"status": "expired"},
        })),
    )
    .await?;
    tx.finish(id).await.map(Some)
}

/// Ends an execution as failed: the transition, then its audit event.
async fn fail(
    tx: &mut dyn PromotionTx,
    org: Uuid,
    row: &PromotionRow,
    from: Status,
    actor: (Option<Uuid>, &str),
    reason: &str,
) -> StoreResult<()> {
    tx.transition(row, Some(from), Status::Failed, actor, reason)
        .await?;
    tx.audit(
        Change::new(
            org,
            "promotion.fail",
            format!("workspace/{}/promotion/{}", row.workspace, row.number),
        )
        .workspace(row.workspace_id)
        .environment(row.to_environment.clone())
        .summary(json!({"after": {"status": "failed", "reason": reason}})),
    )
    .await
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
