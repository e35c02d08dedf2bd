//! What a promotion step reads besides its row: the promoted scenario
//! version or persona with what the target serves of it (for the gates),
//! the pillar rules in force, and a promotion's transitions, decisions and
//! checks.

use chrono::{DateTime, Utc};
use mockplane_shared::FieldError;
use mockplane_shared::governance::promotion::{CheckState, PillarRules, Status};
use mockplane_shared::model::checks::ContractCheck;
use mockplane_shared::model::persona::{PersonaConfig, parse_persona_data, parse_persona_name};
use mockplane_shared::model::scenario::{Tag, parse_tags};
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Type};
use uuid::Uuid;

use super::promotion_records::*;
use super::scenarios::decode_content;
use super::tx::SqlStore;
use super::tx::corrupt;
use super::{Dialect, StoreError, StoreResult, WorkspaceRecord, WorkspaceRef};

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

impl<DB> SqlPromotionTx<DB>
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
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn gather_scenario(
        &mut self,
        ws: &WorkspaceRecord,
        workspace: &WorkspaceRef,
        new: &NewPromotion,
        from_first: bool,
        from: Uuid,
        to: Uuid,
    ) -> StoreResult<(u32, Vec<Tag>, Entity)> {
        let scenario_id =
            SqlStore::<DB>::scenario_id(&mut self.tx, ws.id, &new.name, workspace).await?;
        let number = if from_first {
            new.version
        } else {
            let serves = self.served_version(from, scenario_id).await?;
            Some(moves_on(serves.map(|(_, n)| n), new, "scenario")?)
        };
        let (row, content) =
            SqlStore::<DB>::fetch_version(&mut self.tx, scenario_id, &new.name, number).await?;
        let promoted = decode_content(&content).map_err(|e| corrupt("version", row.id, &e))?;
        let checks_text: String =
            sqlx::query_scalar("SELECT checks FROM scenario_versions WHERE id = $1")
                .bind(row.id)
                .fetch_one(&mut *self.tx)
                .await?;
        let checks: Vec<ContractCheck> = serde_json::from_str(&checks_text)
            .map_err(|e| corrupt("version", row.id, &FieldError::new("checks", e.to_string())))?;
        let tags_text: String = sqlx::query_scalar("SELECT tags FROM scenarios WHERE id = $1")
            .bind(scenario_id)
            .fetch_one(&mut *self.tx)
            .await?;
        let raw: Vec<String> = serde_json::from_str(&tags_text).map_err(|e| {
            corrupt(
                "scenario",
                scenario_id,
                &FieldError::new("tags", e.to_string()),
            )
        })?;
        let tags = parse_tags(&raw).map_err(|e| corrupt("scenario", scenario_id, &e))?;
        let current = self.served_version(to, scenario_id).await?;
        let mut served = Vec::new();
        let mut others = Vec::new();
        let rows: Vec<(Uuid, Uuid, Vec<u8>)> = sqlx::query_as(
            "SELECT d.scenario_id, v.id, v.content FROM deployments d \
             JOIN scenario_versions v ON v.id = d.version_id WHERE d.environment_id = $1",
        )
        .bind(to)
        .fetch_all(&mut *self.tx)
        .await?;
        for (scenario, version, bytes) in rows {
            let routes = decode_content(&bytes).map_err(|e| corrupt("version", version, &e))?;
            if scenario == scenario_id {
                served = routes;
            } else {
                others.extend(routes);
            }
        }
        let personas = self.served_personas(to).await?;
        let entity = Entity::Scenario {
            personas,
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

    /// The personas an environment after the first serves: their
    /// promoted versions.
    async fn served_personas(&mut self, environment: Uuid) -> StoreResult<Vec<PersonaConfig>> {
        let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
            "SELECT p.id, p.name, v.data FROM persona_deployments d \
             JOIN personas p ON p.id = d.persona_id \
             JOIN persona_versions v ON v.persona_id = d.persona_id AND v.number = d.number \
             WHERE d.environment_id = $1",
        )
        .bind(environment)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.into_iter()
            .map(|(id, name, data)| {
                Ok(PersonaConfig {
                    name: parse_persona_name(&name).map_err(|e| corrupt("persona", id, &e))?,
                    data: parse_persona_data(&data).map_err(|e| corrupt("persona", id, &e))?,
                })
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn gather_persona(
        &mut self,
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
        .fetch_optional(&mut *self.tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("persona '{}' of {workspace}", new.name)))?;
        let number = if from_first {
            new.version
                .unwrap_or_else(|| u32::try_from(latest).unwrap_or(0))
        } else {
            let serves = self.served_persona(from, persona_id).await?;
            moves_on(serves.map(|(n, _)| n), new, "persona")?
        };
        let data: String = sqlx::query_scalar(
            "SELECT data FROM persona_versions WHERE persona_id = $1 AND number = $2",
        )
        .bind(persona_id)
        .bind(i64::from(number))
        .fetch_optional(&mut *self.tx)
        .await?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "version {number} of persona '{}' (its versions are 1 to {latest})",
                new.name
            ))
        })?;
        let promoted = parse_persona_data(&data).map_err(|e| corrupt("persona", persona_id, &e))?;
        let current = self.served_persona(to, persona_id).await?;
        Ok((
            number,
            Entity::Persona {
                persona_id,
                promoted,
                current,
            },
        ))
    }

    pub(super) async fn rules_in(
        &mut self,
        workspace: Option<Uuid>,
    ) -> StoreResult<(PillarRules, RulesSource)> {
        let org = self.org;
        let parse = |text: &str, id: Uuid| {
            serde_json::from_str::<PillarRules>(text).map_err(|e| {
                corrupt(
                    "approval rules",
                    id,
                    &FieldError::new("approval_rules", e.to_string()),
                )
            })
        };
        if let Some(ws) = workspace {
            let own: Option<String> =
                sqlx::query_scalar("SELECT approval_rules FROM workspaces WHERE id = $1")
                    .bind(ws)
                    .fetch_one(&mut *self.tx)
                    .await?;
            if let Some(text) = own {
                return Ok((parse(&text, ws)?, RulesSource::Workspace));
            }
        }
        let org_rules: Option<String> =
            sqlx::query_scalar("SELECT approval_rules FROM orgs WHERE id = $1")
                .bind(org)
                .fetch_optional(&mut *self.tx)
                .await?
                .flatten();
        match org_rules {
            Some(text) => Ok((parse(&text, org)?, RulesSource::Org)),
            None => Ok((PillarRules::default(), RulesSource::BuiltIn)),
        }
    }

    #[allow(clippy::type_complexity)]
    pub(super) async fn full_record(&mut self, row: PromotionRow) -> StoreResult<PromotionRecord> {
        let transitions: Vec<(
            Option<String>,
            String,
            Option<Uuid>,
            String,
            String,
            DateTime<Utc>,
        )> = sqlx::query_as(
            "SELECT from_status, to_status, actor_id, actor, reason, at FROM promotion_transitions \
                 WHERE promotion_id = $1 ORDER BY seq",
        )
        .bind(row.id)
        .fetch_all(&mut *self.tx)
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
        .fetch_all(&mut *self.tx)
        .await?;
        let decisions = decisions
            .into_iter()
            .map(
                |(approver_id, approver, role, decision, comment, at)| DecisionRecord {
                    approver_id,
                    approver,
                    role,
                    approve: decision == "approve",
                    comment,
                    at,
                },
            )
            .collect();
        let checks: Vec<(String, String, String, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT name, status, url, detail, reported_by, at FROM promotion_checks \
             WHERE promotion_id = $1 ORDER BY name",
        )
        .bind(row.id)
        .fetch_all(&mut *self.tx)
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
}
