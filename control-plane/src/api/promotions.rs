//! `mockplane.v1.PromotionService`: requests, previews, decisions,
//! execution, rollback, external checks and release history.
//!
//! Every promotion is authorized in its target environment: the handler
//! reads the promotion (its org only), then asks [`ApiState::authorize`]
//! about its workspace and target, so a caller with no role there gets
//! `NotFound` as for anything else they cannot see.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use mockplane_proto::convert::env_settings;
use mockplane_proto::v1;
use mockplane_proto::v1::promotion_service_server::PromotionService;
use mockplane_shared::governance::access::Permission;
use mockplane_shared::governance::drift::Diff;
use mockplane_shared::governance::promotion::{
    CheckState, EntityKind, Gate, PillarRules, Requirement, Status, check_name, parse_comment,
};
use mockplane_shared::model::environment::parse_env_name;
use mockplane_shared::model::persona::parse_persona_name;
use mockplane_shared::model::scenario::parse_scenario_name;
use mockplane_shared::{FieldError, Slug};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status as GrpcStatus};
use uuid::Uuid;

use super::authz::{Grant, Target};
use super::error::{ApiError, missing};
use super::{ApiState, decode_page_token, encode_page_token, page_size, timestamp};
use crate::fleet::nodes::FleetNode;
use crate::promotions as workflow;
use crate::store::{
    Actor, CheckReport, Decision, NewPromotion, PromotionFilter, PromotionRecord, ReleaseRecord,
    RulesSource, Store, WorkspaceRef,
};

pub struct Promotions(pub ApiState);

/// How often expiries and reminders are looked for.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

fn status_proto(status: Status) -> v1::PromotionStatus {
    match status {
        Status::Pending => v1::PromotionStatus::Pending,
        Status::Approved => v1::PromotionStatus::Approved,
        Status::Completed => v1::PromotionStatus::Completed,
        Status::Rejected => v1::PromotionStatus::Rejected,
        Status::Failed => v1::PromotionStatus::Failed,
        Status::Expired => v1::PromotionStatus::Expired,
        Status::RolledBack => v1::PromotionStatus::RolledBack,
    }
}

fn diff_proto(diff: &Diff) -> v1::PromotionDiff {
    v1::PromotionDiff {
        added: diff.added.clone(),
        removed: diff.removed.clone(),
        changed: diff.changed.clone(),
        breaking_count: u32::try_from(diff.breaking_count).unwrap_or(u32::MAX),
        breaking: diff
            .breaking
            .iter()
            .map(|b| v1::BreakingChange {
                route: b.route.clone(),
                kind: b.kind.clone(),
                detail: b.detail.clone(),
            })
            .collect(),
    }
}

fn gates_proto(gates: &[Gate]) -> Vec<v1::Gate> {
    gates
        .iter()
        .map(|g| v1::Gate {
            name: g.name.clone(),
            status: g.status.as_str().to_owned(),
            detail: g.detail.clone(),
        })
        .collect()
}

fn requirement_proto(requirement: &Requirement, given: usize) -> v1::ApprovalRequirement {
    v1::ApprovalRequirement {
        approvals: requirement.approvals,
        roles: requirement.roles.clone(),
        reasons: requirement.reasons.clone(),
        given: u32::try_from(given).unwrap_or(u32::MAX),
    }
}

/// `fleet`: the nodes, to count how many serve a completed promotion.
pub fn to_proto(record: &PromotionRecord, fleet: &[FleetNode]) -> v1::Promotion {
    let propagation = record.revision.map(|revision| {
        let counted = crate::fleet::nodes::count(fleet, revision, Some(record.workspace_id));
        crate::api::nodes::propagation(revision, counted)
    });
    v1::Promotion {
        id: record.id.to_string(),
        workspace: record.workspace.clone(),
        number: u64::try_from(record.number).unwrap_or(0),
        entity_kind: record.kind.as_str().to_owned(),
        scenario: scenario_field(record.kind, &record.name),
        name: record.name.clone(),
        settings: record.settings.as_ref().map(env_settings),
        previous_settings: record.previous_settings.as_ref().map(env_settings),
        version: record.version,
        from_environment: record.from_environment.clone(),
        to_environment: record.to_environment.clone(),
        status: status_proto(record.status) as i32,
        status_reason: record.status_reason.clone(),
        requested_by: record.requested_by_name.clone(),
        comment: record.comment.clone(),
        metadata: record.metadata.clone().into_iter().collect(),
        tags: record.tags.clone(),
        requirement: Some(requirement_proto(&record.requirement, record.approvals())),
        decisions: record
            .decisions
            .iter()
            .map(|d| v1::Decision {
                approver: d.approver.clone(),
                role: d.role.clone(),
                approve: d.approve,
                comment: d.comment.clone(),
                time: Some(timestamp(d.at)),
            })
            .collect(),
        diff: Some(diff_proto(&record.diff)),
        gates: gates_proto(&record.gates),
        checks: record
            .checks
            .iter()
            .map(|c| v1::ExternalCheck {
                name: c.name.clone(),
                status: c.state.as_str().to_owned(),
                url: c.url.clone(),
                detail: c.detail.clone(),
                reported_by: c.reported_by.clone(),
                time: Some(timestamp(c.at)),
            })
            .collect(),
        transitions: record
            .transitions
            .iter()
            .map(|t| v1::StatusTransition {
                from: t.from.map(|s| s.as_str().to_owned()).unwrap_or_default(),
                to: t.to.as_str().to_owned(),
                actor: t.actor.clone(),
                reason: t.reason.clone(),
                time: Some(timestamp(t.at)),
            })
            .collect(),
        previous_version: record.previous_version.unwrap_or(0),
        revision: record.revision.unwrap_or(0),
        propagation,
        pr_url: record.pr_url.clone().unwrap_or_default(),
        gitops_error: record.gitops_error.clone().unwrap_or_default(),
        expire_time: Some(timestamp(record.expires_at)),
        create_time: Some(timestamp(record.created_at)),
        update_time: Some(timestamp(record.updated_at)),
        complete_time: record.completed_at.map(timestamp),
    }
}

/// The wire's `scenario` field: the name when a scenario is promoted,
/// empty otherwise (`name` always holds it).
fn scenario_field(kind: EntityKind, name: &str) -> String {
    if kind == EntityKind::Scenario {
        name.to_owned()
    } else {
        String::new()
    }
}

fn release_proto(record: &ReleaseRecord) -> v1::Release {
    v1::Release {
        environment: record.environment.clone(),
        scenario: scenario_field(record.entity, &record.name),
        entity_kind: record.entity.as_str().to_owned(),
        name: record.name.clone(),
        version: record.version,
        previous_version: record.previous_version,
        kind: record.kind.clone(),
        promotion: record
            .promotion
            .map(|id| id.to_string())
            .unwrap_or_default(),
        actor: record.actor.clone(),
        time: Some(timestamp(record.at)),
    }
}

fn rules_proto(rules: &PillarRules, source: RulesSource) -> v1::ApprovalRules {
    v1::ApprovalRules {
        patterns: rules
            .patterns
            .iter()
            .map(mockplane_shared::governance::promotion::show)
            .collect(),
        pillars: rules
            .pillars
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        source: source.as_str().to_owned(),
    }
}

fn parse_rules(wire: Option<&v1::ApprovalRules>) -> Result<PillarRules, FieldError> {
    let wire = wire.ok_or_else(|| FieldError::new("rules", "is required (or set clear)"))?;
    let rules: PillarRules = serde_json::from_value(serde_json::json!({
        "patterns": wire.patterns,
        "pillars": wire.pillars,
    }))
    .map_err(|e| FieldError::new("rules", e.to_string()))?;
    rules.check().map_err(|e| e.within("rules"))?;
    Ok(rules)
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    if raw.is_empty() {
        return Err(missing("id"));
    }
    Uuid::try_parse(raw).map_err(|_| {
        FieldError::new("id", format!("{raw:?} is not a promotion id (a UUID)")).into()
    })
}

fn env_name(raw: &str, field: &str) -> Result<Slug, ApiError> {
    if raw.is_empty() {
        return Err(missing(field));
    }
    parse_env_name(raw).map_err(|e| FieldError::new(field, e.message).into())
}

fn actor(grant: &Grant) -> Actor {
    Actor {
        id: grant.caller.principal.id,
        name: grant.caller.principal.display.clone(),
    }
}

fn new_promotion(request: &v1::CreatePromotionRequest) -> Result<NewPromotion, ApiError> {
    let kind = EntityKind::parse(&request.entity_kind)?;
    let from = env_name(&request.from_environment, "from_environment")?;
    let unexpected = |field: &str| -> ApiError {
        FieldError::new(
            field,
            format!("a {kind} promotion names no {field}; leave it empty"),
        )
        .into()
    };
    let name = match kind {
        EntityKind::Scenario => {
            if !request.persona.is_empty() {
                return Err(unexpected("persona"));
            }
            if request.scenario.is_empty() {
                return Err(missing("scenario"));
            }
            parse_scenario_name(&request.scenario)
                .map_err(|e| FieldError::new("scenario", e.message))?
        }
        EntityKind::Persona => {
            if !request.scenario.is_empty() {
                return Err(unexpected("scenario"));
            }
            if request.persona.is_empty() {
                return Err(missing("persona"));
            }
            parse_persona_name(&request.persona)
                .map_err(|e| FieldError::new("persona", e.message))?
        }
        EntityKind::Environment => {
            if !request.scenario.is_empty() {
                return Err(unexpected("scenario"));
            }
            if !request.persona.is_empty() {
                return Err(unexpected("persona"));
            }
            from.clone()
        }
    };
    let to = env_name(&request.to_environment, "to_environment")?;
    if request.metadata.len() > mockplane_shared::governance::promotion::MAX_METADATA {
        return Err(FieldError::new(
            "metadata",
            format!(
                "at most {} entries",
                mockplane_shared::governance::promotion::MAX_METADATA
            ),
        )
        .into());
    }
    for (key, value) in &request.metadata {
        if key.is_empty() || key.len() > 100 || value.len() > 1000 {
            return Err(FieldError::new(
                format!("metadata[{key:?}]"),
                "keys are 1 to 100 characters, values at most 1000",
            )
            .into());
        }
    }
    Ok(NewPromotion {
        kind,
        name,
        version: (request.version > 0).then_some(request.version),
        from,
        to,
        comment: parse_comment("comment", &request.comment)?,
        metadata: request
            .metadata
            .clone()
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        requested_by: Actor {
            id: Uuid::nil(),
            name: String::new(),
        },
    })
}

impl Promotions {
    /// Reads a promotion and authorizes `permission` in its target.
    async fn authorized<T>(
        &self,
        request: &Request<T>,
        id: Uuid,
        permission: Permission,
    ) -> Result<(Grant, PromotionRecord), GrpcStatus> {
        let record = self
            .0
            .locate(request)?
            .promotion(id)
            .await
            .map_err(ApiError::from)?;
        let key = WorkspaceRef::Id(record.workspace_id);
        let grant = self
            .0
            .authorize_only(
                request,
                Target::Environment(&key, &record.to_environment),
                &[permission],
            )
            .await?;
        Ok((grant, record))
    }

    async fn answer(&self, record: &PromotionRecord) -> Response<v1::Promotion> {
        let fleet = match record.revision {
            Some(_) => self.0.nodes.fleet_or_local().await,
            None => Vec::new(),
        };
        Response::new(to_proto(record, &fleet))
    }

    async fn decide(
        &self,
        request: Request<v1::DecidePromotionRequest>,
        approve: bool,
    ) -> Result<Response<v1::Promotion>, GrpcStatus> {
        let id = parse_id(&request.get_ref().id)?;
        let comment =
            parse_comment("comment", &request.get_ref().comment).map_err(ApiError::from)?;
        let (grant, _) = self
            .authorized(&request, id, Permission::PromotionApprove)
            .await?;
        let record = workflow::decide(
            grant.store(),
            grant.org_id(),
            id,
            Decision {
                approver: actor(&grant),
                role: grant.role.clone().unwrap_or_default(),
                approve,
                comment,
            },
        )
        .await
        .map_err(ApiError::from)?;
        Ok(self.answer(&record).await)
    }
}

#[tonic::async_trait]
impl PromotionService for Promotions {
    async fn create_promotion(
        &self,
        request: Request<v1::CreatePromotionRequest>,
    ) -> Result<Response<v1::Promotion>, GrpcStatus> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let mut new = new_promotion(request.get_ref())?;
        let grant = self
            .0
            .authorize(&request, Target::Environment(&key, new.to.as_str()))
            .await?;
        new.requested_by = actor(&grant);
        let record = workflow::request(grant.store(), grant.org_id(), &key, new)
            .await
            .map_err(ApiError::from)?;
        Ok(self.answer(&record).await)
    }

    async fn preview_promotion(
        &self,
        request: Request<v1::CreatePromotionRequest>,
    ) -> Result<Response<v1::PromotionPreview>, GrpcStatus> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let mut new = new_promotion(request.get_ref())?;
        let grant = self
            .0
            .authorize(&request, Target::Environment(&key, new.to.as_str()))
            .await?;
        new.requested_by = actor(&grant);
        let preview = workflow::preview(grant.store(), grant.org_id(), &key, &new)
            .await
            .map_err(ApiError::from)?;
        let evaluation = &preview.evaluation;
        Ok(Response::new(v1::PromotionPreview {
            scenario: scenario_field(preview.kind, &preview.name),
            entity_kind: preview.kind.as_str().to_owned(),
            name: preview.name,
            version: preview.version,
            from_environment: preview.from_environment,
            to_environment: preview.to_environment,
            current_version: preview.current_version.unwrap_or(0),
            diff: Some(diff_proto(&evaluation.diff)),
            gates: gates_proto(&evaluation.gates),
            requirement: Some(requirement_proto(&evaluation.requirement, 0)),
            blocked: evaluation.blocked().is_some(),
        }))
    }

    async fn get_promotion(
        &self,
        request: Request<v1::GetPromotionRequest>,
    ) -> Result<Response<v1::Promotion>, GrpcStatus> {
        let id = parse_id(&request.get_ref().id)?;
        let (_, record) = self
            .authorized(&request, id, Permission::ScenarioRead)
            .await?;
        Ok(self.answer(&record).await)
    }

    async fn list_promotions(
        &self,
        request: Request<v1::ListPromotionsRequest>,
    ) -> Result<Response<v1::ListPromotionsResponse>, GrpcStatus> {
        let body = request.get_ref().clone();
        let status = match body.status.as_str() {
            "" => None,
            raw => Some(Status::parse(raw).map_err(ApiError::from)?),
        };
        let before = decode_page_token("promotions", &body.page_token)
            .map_err(ApiError::from)?
            .map(|raw| Uuid::try_parse(&raw))
            .transpose()
            .map_err(|_| {
                ApiError::from(FieldError::new(
                    "page_token",
                    "is not valid; pass the next_page_token of the previous response unchanged",
                ))
            })?;
        let limit = page_size(body.page_size, 50, 200);
        let listing = self.0.listing(&request)?;
        let caller = listing.caller.clone();
        let (records, more) = if body.pending_for_me {
            let grant = &listing;
            if status.is_some_and(|s| s != Status::Pending) {
                return Err(ApiError::from(FieldError::new(
                    "status",
                    "pending_for_me lists pending promotions only; leave status empty",
                ))
                .into());
            }
            // The org's pending promotions, kept where the caller may
            // decide: not their own, and promotion.approve in the target.
            let mut kept = Vec::new();
            let mut cursor = before;
            let mut allowed: HashMap<(Uuid, String), bool> = HashMap::new();
            let mut more = false;
            'pages: loop {
                let page = grant
                    .store()
                    .list_promotions(
                        caller.org_id(),
                        &PromotionFilter {
                            workspace: None,
                            status: Some(Status::Pending),
                            before: cursor,
                            limit: 200,
                        },
                    )
                    .await
                    .map_err(ApiError::from)?;
                let exhausted = page.len() < 200;
                for record in page {
                    cursor = Some(record.id);
                    if record.requested_by == Some(caller.principal.id) {
                        continue;
                    }
                    let place = (record.workspace_id, record.to_environment.clone());
                    let may = match allowed.get(&place) {
                        Some(may) => *may,
                        None => {
                            let key = WorkspaceRef::Id(record.workspace_id);
                            let may = self
                                .0
                                .authorize_only(
                                    &request,
                                    Target::Environment(&key, &record.to_environment),
                                    &[Permission::PromotionApprove],
                                )
                                .await
                                .is_ok();
                            allowed.insert(place, may);
                            may
                        }
                    };
                    let decided = record
                        .decisions
                        .iter()
                        .any(|d| d.approver_id == caller.principal.id);
                    if may && !decided {
                        if kept.len() == limit as usize {
                            more = true;
                            break 'pages;
                        }
                        kept.push(record);
                    }
                }
                if exhausted {
                    break;
                }
            }
            (kept, more)
        } else {
            if body.workspace.is_empty() {
                return Err(ApiError::from(FieldError::new(
                    "workspace",
                    "is required (or set pending_for_me for your approval queue)",
                ))
                .into());
            }
            let key = WorkspaceRef::parse(&body.workspace).map_err(ApiError::from)?;
            let grant = self
                .0
                .authorize_only(
                    &request,
                    Target::Workspace(&key),
                    &[Permission::WorkspaceRead],
                )
                .await?;
            let mut records = grant
                .store()
                .list_promotions(
                    grant.org_id(),
                    &PromotionFilter {
                        workspace: Some(key),
                        status,
                        before,
                        limit: limit + 1,
                    },
                )
                .await
                .map_err(ApiError::from)?;
            let more = records.len() > limit as usize;
            records.truncate(limit as usize);
            (records, more)
        };
        let next_page_token = if more {
            records
                .last()
                .map(|r| encode_page_token("promotions", &r.id.to_string()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        let fleet = if records.iter().any(|r| r.revision.is_some()) {
            self.0.nodes.fleet_or_local().await
        } else {
            Vec::new()
        };
        Ok(Response::new(v1::ListPromotionsResponse {
            promotions: records.iter().map(|r| to_proto(r, &fleet)).collect(),
            next_page_token,
        }))
    }

    async fn approve_promotion(
        &self,
        request: Request<v1::DecidePromotionRequest>,
    ) -> Result<Response<v1::Promotion>, GrpcStatus> {
        self.decide(request, true).await
    }

    async fn reject_promotion(
        &self,
        request: Request<v1::DecidePromotionRequest>,
    ) -> Result<Response<v1::Promotion>, GrpcStatus> {
        self.decide(request, false).await
    }

    async fn execute_promotion(
        &self,
        request: Request<v1::ExecutePromotionRequest>,
    ) -> Result<Response<v1::Promotion>, GrpcStatus> {
        let id = parse_id(&request.get_ref().id)?;
        let (grant, _) = self
            .authorized(&request, id, Permission::PromotionExecute)
            .await?;
        let record = workflow::execute(grant.store(), grant.org_id(), id, actor(&grant))
            .await
            .map_err(ApiError::from)?;
        Ok(self.answer(&record).await)
    }

    async fn rollback_promotion(
        &self,
        request: Request<v1::RollbackPromotionRequest>,
    ) -> Result<Response<v1::Promotion>, GrpcStatus> {
        let id = parse_id(&request.get_ref().id)?;
        let reason = parse_comment("reason", &request.get_ref().reason).map_err(ApiError::from)?;
        let (grant, _) = self
            .authorized(&request, id, Permission::PromotionRollback)
            .await?;
        let record = workflow::roll_back(grant.store(), grant.org_id(), id, actor(&grant), &reason)
            .await
            .map_err(ApiError::from)?;
        Ok(self.answer(&record).await)
    }

    async fn report_check(
        &self,
        request: Request<v1::ReportCheckRequest>,
    ) -> Result<Response<v1::Promotion>, GrpcStatus> {
        let body = request.get_ref().clone();
        let id = parse_id(&body.id)?;
        check_name(&body.name).map_err(|m| ApiError::from(FieldError::new("name", m)))?;
        let state = CheckState::parse(&body.status).map_err(ApiError::from)?;
        if body.url.len() > 2000 {
            return Err(ApiError::from(FieldError::new("url", "at most 2000 characters")).into());
        }
        let detail = parse_comment("detail", &body.detail).map_err(ApiError::from)?;
        let (grant, _) = self
            .authorized(&request, id, Permission::PromotionCheck)
            .await?;
        let record = workflow::report_check(
            grant.store(),
            grant.org_id(),
            id,
            CheckReport {
                name: body.name,
                state,
                url: body.url,
                detail,
                reported_by: grant.caller.principal.display.clone(),
            },
        )
        .await
        .map_err(ApiError::from)?;
        Ok(self.answer(&record).await)
    }

    async fn list_releases(
        &self,
        request: Request<v1::ListReleasesRequest>,
    ) -> Result<Response<v1::ListReleasesResponse>, GrpcStatus> {
        let body = request.get_ref().clone();
        let key = WorkspaceRef::parse(&body.workspace).map_err(ApiError::from)?;
        let environment = match body.environment.as_str() {
            "" => None,
            raw => Some(env_name(raw, "environment")?),
        };
        let grant = match &environment {
            Some(env) => {
                self.0
                    .authorize(&request, Target::Environment(&key, env.as_str()))
                    .await?
            }
            None => self.0.authorize(&request, Target::Workspace(&key)).await?,
        };
        let mut releases = grant
            .store()
            .list_releases(
                grant.org_id(),
                &key,
                environment.as_ref().map(Slug::as_str),
                page_size(body.page_size, 100, 1000),
            )
            .await
            .map_err(ApiError::from)?;
        if environment.is_none() {
            // Only the environments where the caller may read scenarios.
            releases.retain(|r| grant.environments.contains(&r.environment));
        }
        Ok(Response::new(v1::ListReleasesResponse {
            releases: releases.iter().map(release_proto).collect(),
        }))
    }

    async fn get_approval_rules(
        &self,
        request: Request<v1::GetApprovalRulesRequest>,
    ) -> Result<Response<v1::ApprovalRules>, GrpcStatus> {
        let raw = request.get_ref().workspace.clone();
        let (grant, key) = if raw.is_empty() {
            (self.0.authenticated(&request)?, None)
        } else {
            let key = WorkspaceRef::parse(&raw).map_err(ApiError::from)?;
            let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
            (grant, Some(key))
        };
        let org = grant.org_id();
        let (rules, source) = grant
            .store()
            .approval_rules(org, key.as_ref())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(rules_proto(&rules, source)))
    }

    async fn set_approval_rules(
        &self,
        request: Request<v1::SetApprovalRulesRequest>,
    ) -> Result<Response<v1::ApprovalRules>, GrpcStatus> {
        let body = request.get_ref().clone();
        let rules = if body.clear {
            if body.rules.is_some() {
                return Err(ApiError::from(FieldError::new(
                    "rules",
                    "give rules or clear, not both",
                ))
                .into());
            }
            None
        } else {
            Some(parse_rules(body.rules.as_ref()).map_err(ApiError::from)?)
        };
        let (grant, key) = if body.workspace.is_empty() {
            let grant = self
                .0
                .authorize_only(&request, Target::Org, &[Permission::TemplateManage])
                .await?;
            (grant, None)
        } else {
            let key = WorkspaceRef::parse(&body.workspace).map_err(ApiError::from)?;
            let grant = self
                .0
                .authorize_only(
                    &request,
                    Target::Workspace(&key),
                    &[Permission::WorkspaceUpdate],
                )
                .await?;
            (grant, Some(key))
        };
        let org = grant.org_id();
        let (rules, source) = grant
            .store()
            .set_approval_rules(org, key.as_ref(), rules)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(rules_proto(&rules, source)))
    }
}

/// Expires pending promotions whose time ran out and notes reminders, every
/// [`SWEEP_INTERVAL`], until `shutdown`.
pub async fn sweep(store: Arc<dyn Store>, interval: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Some(_lock) = crate::jobs::lead(&*store, "promotions.sweep").await else {
            continue;
        };
        let now = chrono::Utc::now();
        match workflow::expire_due(&*store, now).await {
            Ok(expired) => {
                for p in expired {
                    tracing::info!(promotion = %p.id, workspace = %p.workspace, number = p.number, "promotion expired");
                }
            }
            Err(error) => tracing::warn!(%error, "could not expire promotions; will retry"),
        }
        // Reminded once, when a quarter of its own wait is left.
        match store.remind_promotions(now).await {
            Ok(reminded) => {
                for p in reminded {
                    tracing::info!(promotion = %p.id, workspace = %p.workspace, number = p.number, expires = %p.expires_at, "promotion expires soon");
                }
            }
            Err(error) => tracing::warn!(%error, "could not look for promotions to remind of"),
        }
    }
}
