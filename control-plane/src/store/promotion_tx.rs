//! The promotion workflow's transaction on SQL: [`PromotionTx`] for
//! [`SqlStore`]. Each method is one or a few statements in the step's one
//! transaction; the decisions between them are the workflow's
//! (`crate::promotions`).

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use mockplane_shared::governance::promotion::{CheckState, EntityKind, Evaluation, Status};
use mockplane_shared::model::environment::EnvSettings;
use mockplane_shared::model::persona::parse_persona_data;
use mockplane_shared::{ConfigRoute, FieldError};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::audit::Change;
use super::promotion_records::*;
use super::scenarios::decode_content;
use super::tx::SqlStore;
use super::tx::{corrupt, db_error, now};
use super::{Dialect, EnvironmentRecord, StoreError, StoreResult, WorkspaceRecord, WorkspaceRef};

#[async_trait]
impl<DB> PromotionTx for SqlPromotionTx<DB>
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
    async fn workspace(&mut self, key: &WorkspaceRef) -> StoreResult<WorkspaceRecord> {
        SqlStore::<DB>::load_workspace(&mut self.tx, self.org, key).await
    }

    async fn promotion(&mut self, id: Uuid, lock: bool) -> StoreResult<PromotionRow> {
        let org = self.org;
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
            .fetch_optional(&mut *self.tx)
            .await?
            .ok_or_else(|| promotion_not_found(id))
    }

    /// Gathers what the gates read. `from_rules`: check the chain and that
    /// the version is what `from` serves (a new request); an execution
    /// gathers for the version it was approved for (environment settings:
    /// the ones `frozen` at the request).
    async fn gather(
        &mut self,
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
        let rules = self.rules_in(Some(ws.id)).await?.0;
        let (version, tags, entity) = match new.kind {
            EntityKind::Scenario => {
                self.gather_scenario(ws, workspace, new, from_first, from.id, to.id)
                    .await?
            }
            EntityKind::Persona => {
                let (version, entity) = self
                    .gather_persona(ws, workspace, new, from_first, from.id, to.id)
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

    async fn reported(&mut self, id: Uuid) -> StoreResult<Vec<(String, CheckState)>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT name, status FROM promotion_checks WHERE promotion_id = $1")
                .bind(id)
                .fetch_all(&mut *self.tx)
                .await?;
        rows.into_iter()
            .map(|(name, state)| {
                Ok((
                    name,
                    CheckState::parse(&state).map_err(|e| corrupt("promotion", id, &e))?,
                ))
            })
            .collect()
    }

    async fn open_promotion(
        &mut self,
        workspace: Uuid,
        new: &NewPromotion,
    ) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT number FROM promotions WHERE workspace_id = $1 AND entity_kind = $2 \
             AND ($2 = 'environment' OR scenario = $3) \
             AND to_environment = $4 AND status IN ('pending', 'approved') ORDER BY number LIMIT 1",
        )
        .bind(workspace)
        .bind(new.kind.as_str().to_owned())
        .bind(new.name.to_string())
        .bind(new.to.to_string())
        .fetch_optional(&mut *self.tx)
        .await?)
    }

    async fn insert(
        &mut self,
        ws: &WorkspaceRecord,
        new: &NewPromotion,
        gathered: &Gathered,
        evaluation: &Evaluation,
        expire_after: TimeDelta,
    ) -> StoreResult<PromotionRow> {
        let org = self.org;
        let to_env = ws.environment(new.to.as_str()).map(|e| e.id);
        let from_env = ws.environment(new.from.as_str()).map(|e| e.id);
        let number: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM promotions WHERE workspace_id = $1",
        )
        .bind(ws.id)
        .fetch_one(&mut *self.tx)
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
        .bind(at + expire_after)
        .bind(at)
        .bind(match &gathered.entity {
            Entity::Persona { persona_id, .. } => Some(*persona_id),
            _ => None,
        })
        .bind(match &gathered.entity {
            Entity::Environment { promoted, .. } => Some(to_json(promoted)),
            _ => None,
        })
        .execute(&mut *self.tx)
        .await?;
        self.promotion(id, false).await
    }

    async fn decide(&mut self, row: &PromotionRow, decision: &Decision) -> StoreResult<i64> {
        let verb = if decision.approve {
            "approve"
        } else {
            "reject"
        };
        sqlx::query(
            "INSERT INTO promotion_decisions (promotion_id, org_id, workspace_id, approver_id, approver, role, decision, comment, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(row.id)
        .bind(self.org)
        .bind(row.workspace_id)
        .bind(decision.approver.id)
        .bind(decision.approver.name.clone())
        .bind(decision.role.clone())
        .bind(verb.to_owned())
        .bind(decision.comment.clone())
        .bind(now())
        .execute(&mut *self.tx)
        .await
        .map_err(|e| {
            db_error(e, || {
                StoreError::AlreadyExists(format!(
                    "you have already decided on {}; one decision per approver",
                    row.label()
                ))
            })
        })?;
        self.approvals(row.id).await
    }

    async fn approvals(&mut self, id: Uuid) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM promotion_decisions WHERE promotion_id = $1 AND decision = 'approve'",
        )
        .bind(id)
        .fetch_one(&mut *self.tx)
        .await?)
    }

    /// Moves a promotion to `to`, recording who and why; refuses a move
    /// the status machine does not allow.
    async fn transition(
        &mut self,
        row: &PromotionRow,
        from: Option<Status>,
        to: Status,
        actor: (Option<Uuid>, &str),
        reason: &str,
    ) -> StoreResult<()> {
        let org = self.org;
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
        .fetch_one(&mut *self.tx)
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
        .execute(&mut *self.tx)
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
        .execute(&mut *self.tx)
        .await?;
        if DB::rows_affected(&updated) != 1 {
            return Err(StoreError::Conflict(format!(
                "promotion #{} of workspace '{}' changed while this request acted on it; read it again",
                row.number, row.workspace
            )));
        }
        if let Some(event) = event_of(to) {
            let payload = event_payload(row, event, to, actor.1, reason);
            SqlStore::<DB>::enqueue(
                &mut self.tx,
                org,
                row.workspace_id,
                Some(row.id),
                event,
                &payload,
            )
            .await?;
        }
        Ok(())
    }

    async fn notify(
        &mut self,
        row: &PromotionRow,
        event: &'static str,
        status: Status,
        actor: &str,
        reason: &str,
    ) -> StoreResult<()> {
        let payload = event_payload(row, event, status, actor, reason);
        SqlStore::<DB>::enqueue(
            &mut self.tx,
            self.org,
            row.workspace_id,
            Some(row.id),
            event,
            &payload,
        )
        .await
    }

    async fn record_gates(&mut self, id: Uuid, evaluation: &Evaluation) -> StoreResult<()> {
        sqlx::query("UPDATE promotions SET gates = $1, diff = $2 WHERE id = $3")
            .bind(to_json(&evaluation.gates))
            .bind(to_json(&evaluation.diff))
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn record_execution(
        &mut self,
        id: Uuid,
        evaluation: &Evaluation,
        previous: Option<(Option<Uuid>, u32)>,
        previous_settings: Option<EnvSettings>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE promotions SET gates = $1, diff = $2, previous_version_id = $3, previous_version = $4, completed_at = $5, \
             previous_settings = $6 WHERE id = $7",
        )
        .bind(to_json(&evaluation.gates))
        .bind(to_json(&evaluation.diff))
        .bind(previous.and_then(|(id, _)| id))
        .bind(previous.map(|(_, n)| version_i32(n)))
        .bind(now())
        .bind(previous_settings.map(|s| to_json(&s)))
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn served_version(
        &mut self,
        environment: Uuid,
        scenario: Uuid,
    ) -> StoreResult<Option<(Uuid, u32)>> {
        let row: Option<(Uuid, i32)> = sqlx::query_as(
            "SELECT v.id, v.number FROM deployments d JOIN scenario_versions v ON v.id = d.version_id \
             WHERE d.environment_id = $1 AND d.scenario_id = $2",
        )
        .bind(environment)
        .bind(scenario)
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(row.map(|(id, n)| (id, u32::try_from(n).unwrap_or(0))))
    }

    /// The version number a persona is served at in an environment, with
    /// its document.
    async fn served_persona(
        &mut self,
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
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|(n, data)| {
            let data = parse_persona_data(&data).map_err(|e| corrupt("persona", persona, &e))?;
            Ok((u32::try_from(n).unwrap_or(0), data))
        })
        .transpose()
    }

    async fn routes_beside(
        &mut self,
        environment: Uuid,
        scenario: Uuid,
        version: Uuid,
    ) -> StoreResult<Vec<ConfigRoute>> {
        let rows: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
            "SELECT v.id, v.content FROM deployments d JOIN scenario_versions v ON v.id = d.version_id \
             WHERE d.environment_id = $1 AND d.scenario_id <> $2 \
             UNION ALL SELECT id, content FROM scenario_versions WHERE id = $3",
        )
        .bind(environment)
        .bind(scenario)
        .bind(version)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut routes = Vec::new();
        for (version, bytes) in &rows {
            routes.extend(decode_content(bytes).map_err(|e| corrupt("version", *version, &e))?);
        }
        Ok(routes)
    }

    /// Makes `environment` serve `version` of the promotion's entity (or,
    /// with `None`, none of it: a rollback to nothing), and records the
    /// release. Environment settings take `settings` (their served part).
    #[allow(clippy::too_many_arguments)]
    async fn serve(
        &mut self,
        ws: &WorkspaceRecord,
        environment: &EnvironmentRecord,
        row: &PromotionRow,
        target: Served,
        kind: &str,
        actor: &str,
    ) -> StoreResult<()> {
        let org = self.org;
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
                        .execute(&mut *self.tx)
                        .await?;
                    }
                    None => {
                        sqlx::query("DELETE FROM deployments WHERE environment_id = $1 AND scenario_id = $2")
                            .bind(environment.id)
                            .bind(scenario)
                            .execute(&mut *self.tx)
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
                        .execute(&mut *self.tx)
                        .await?;
                    }
                    None => {
                        sqlx::query("DELETE FROM persona_deployments WHERE environment_id = $1 AND persona_id = $2")
                            .bind(environment.id)
                            .bind(persona)
                            .execute(&mut *self.tx)
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
                .execute(&mut *self.tx)
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
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn record_check(&mut self, row: &PromotionRow, report: &CheckReport) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO promotion_checks (promotion_id, org_id, workspace_id, name, status, url, detail, reported_by, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (promotion_id, name) DO UPDATE SET status = $5, url = $6, detail = $7, reported_by = $8, at = $9",
        )
        .bind(row.id)
        .bind(self.org)
        .bind(row.workspace_id)
        .bind(report.name.clone())
        .bind(report.state.as_str().to_owned())
        .bind(report.url.clone())
        .bind(report.detail.clone())
        .bind(report.reported_by.clone())
        .bind(now())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn audit(&mut self, change: Change) -> StoreResult<()> {
        SqlStore::<DB>::append(&mut self.tx, change).await
    }

    async fn bump(&mut self, workspace: Uuid, promotion: Option<Uuid>) -> StoreResult<u64> {
        let revision = SqlStore::<DB>::bump_revision(&mut self.tx, workspace).await?;
        if let Some(id) = promotion {
            sqlx::query("UPDATE promotions SET revision = $1 WHERE id = $2")
                .bind(i64::try_from(revision).unwrap_or(i64::MAX))
                .bind(id)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok(revision)
    }

    async fn finish(mut self: Box<Self>, id: Uuid) -> StoreResult<PromotionRecord> {
        let row = self.promotion(id, false).await?;
        let record = self.full_record(row).await?;
        self.tx.commit().await?;
        Ok(record)
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        Ok(self.tx.commit().await?)
    }
}
