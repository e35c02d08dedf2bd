//! Scenarios, their immutable versions, and deploying a version to an environment.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mockplane_proto::convert::parse_config_routes;
use mockplane_proto::v1;
use mockplane_shared::model::scenario::{
    DEFAULT_SCENARIO, NewScenario, ScenarioPatch, content_hash, parse_tags, version_hash,
};
use mockplane_shared::{ConfigRoute, EnvironmentConfig, FieldError, RouteSpec, Slug};
use prost::Message as _;
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::audit::Change;
use super::routes::{ServingRouteRow, select_serving_route};
use super::tx::{Scope, SqlStore, check_version, contended, corrupt, db_error, now, to_u64};
use super::workspaces::find_environment;
use super::workspaces::{checks_json, tags_json};
use super::{
    DeploymentRecord, Dialect, RouteRecord, ScenarioRecord, StoreError, StoreResult, VersionRecord,
    WorkspaceRef,
};
use serde_json::json;

macro_rules! select_scenario {
    () => {
        "SELECT sc.id, sc.workspace_id, sc.name, sc.description, sc.tags, sc.checks, sc.version, sc.created_at, sc.updated_at, \
         (SELECT COUNT(*) FROM routes r WHERE r.scenario_id = sc.id) AS route_count, \
         COALESCE((SELECT MAX(v.number) FROM scenario_versions v WHERE v.scenario_id = sc.id), 0) AS latest_version \
         FROM scenarios sc "
    };
}

macro_rules! select_version {
    () => {
        "SELECT v.id, v.number, v.content_hash, v.route_count, v.note, v.created_at, sc.name AS scenario, v.checks \
         FROM scenario_versions v JOIN scenarios sc ON sc.id = v.scenario_id "
    };
}

/// Most scenarios one workspace may have.
const MAX_SCENARIOS: usize = 200;

#[derive(FromRow)]
struct ScenarioRow {
    id: Uuid,
    workspace_id: Uuid,
    name: String,
    description: String,
    tags: String,
    checks: String,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    route_count: i64,
    latest_version: i32,
}

impl ScenarioRow {
    fn into_record(self, deployments: Vec<DeploymentRecord>) -> StoreResult<ScenarioRecord> {
        let bad = |field: &str, message: String| {
            corrupt("scenario", self.id, &FieldError::new(field, message))
        };
        let raw: Vec<String> =
            serde_json::from_str(&self.tags).map_err(|e| bad("tags", e.to_string()))?;
        Ok(ScenarioRecord {
            id: self.id,
            workspace_id: self.workspace_id,
            name: Slug::parse(&self.name).map_err(|e| bad("name", e.to_string()))?,
            description: self.description,
            tags: parse_tags(&raw).map_err(|e| bad("tags", e.to_string()))?,
            checks: serde_json::from_str(&self.checks).map_err(|e| bad("checks", e.to_string()))?,
            route_count: self.route_count,
            latest_version: u32::try_from(self.latest_version).unwrap_or(0),
            deployments,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

#[derive(FromRow)]
pub(super) struct VersionRow {
    pub(super) id: Uuid,
    pub(super) number: i32,
    content_hash: String,
    route_count: i32,
    note: String,
    created_at: DateTime<Utc>,
    scenario: String,
    checks: String,
}

impl VersionRow {
    fn into_record(self, routes: Vec<ConfigRoute>) -> StoreResult<VersionRecord> {
        Ok(VersionRecord {
            scenario: Slug::parse(&self.scenario).map_err(|e| {
                corrupt(
                    "version",
                    self.id,
                    &FieldError::new("scenario", e.to_string()),
                )
            })?,
            id: self.id,
            number: u32::try_from(self.number).unwrap_or(0),
            content_hash: self.content_hash,
            route_count: u32::try_from(self.route_count).unwrap_or(0),
            note: self.note,
            created_at: self.created_at,
            routes,
            checks: serde_json::from_str(&self.checks).map_err(|e| {
                corrupt(
                    "version",
                    self.id,
                    &FieldError::new("checks", e.to_string()),
                )
            })?,
        })
    }
}

/// A version's stored form (protobuf `ScenarioContent`, the routes as
/// nodes receive them) and its content hash (ids left out).
fn version_content(routes: &[ConfigRoute]) -> (Vec<u8>, String) {
    let content = v1::ScenarioContent {
        routes: routes.iter().map(v1::RouteConfig::from).collect(),
    }
    .encode_to_vec();
    let hash = content_hash(routes, |route| {
        let mut wire = v1::RouteConfig::from(route);
        wire.id.clear();
        wire.encode_to_vec()
    });
    (content, hash)
}

pub(super) fn decode_content(bytes: &[u8]) -> Result<Vec<ConfigRoute>, FieldError> {
    let content = v1::ScenarioContent::decode(bytes)
        .map_err(|e| FieldError::new("content", format!("undecodable: {e}")))?;
    parse_config_routes(content.routes)
}

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
    async fn load_scenario(
        conn: &mut DB::Connection,
        workspace_id: Uuid,
        name: &Slug,
        key: &WorkspaceRef,
    ) -> StoreResult<ScenarioRecord> {
        let row: ScenarioRow = sqlx::query_as(concat!(
            select_scenario!(),
            "WHERE sc.workspace_id = $1 AND sc.name = $2"
        ))
        .bind(workspace_id)
        .bind(name.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("scenario '{name}' of {key}")))?;
        let mut deployments = SqlStore::<DB>::fetch_deployments(&mut *conn, workspace_id).await?;
        let mine = deployments.remove(&row.id).unwrap_or_default();
        row.into_record(mine)
    }

    /// A workspace's deployments by scenario id, in chain order.
    async fn fetch_deployments(
        conn: &mut DB::Connection,
        workspace_id: Uuid,
    ) -> StoreResult<HashMap<Uuid, Vec<DeploymentRecord>>> {
        let rows: Vec<(Uuid, String, String, i32, DateTime<Utc>)> = sqlx::query_as(
            "SELECT d.scenario_id, e.name, sc.name, v.number, d.deployed_at FROM deployments d \
             JOIN environments e ON e.id = d.environment_id \
             JOIN scenarios sc ON sc.id = d.scenario_id \
             JOIN scenario_versions v ON v.id = d.version_id \
             WHERE d.workspace_id = $1 \
             ORDER BY CASE WHEN e.position = 0 THEN 1 ELSE 0 END, e.position, e.name",
        )
        .bind(workspace_id)
        .fetch_all(&mut *conn)
        .await?;
        let mut by_scenario: HashMap<Uuid, Vec<DeploymentRecord>> = HashMap::new();
        for (scenario_id, environment, scenario, number, deployed_at) in rows {
            let environment = Slug::parse(&environment).map_err(|e| {
                corrupt(
                    "deployment",
                    scenario_id,
                    &FieldError::new("environment", e.to_string()),
                )
            })?;
            let scenario = Slug::parse(&scenario).map_err(|e| {
                corrupt(
                    "deployment",
                    scenario_id,
                    &FieldError::new("scenario", e.to_string()),
                )
            })?;
            by_scenario
                .entry(scenario_id)
                .or_default()
                .push(DeploymentRecord {
                    environment,
                    scenario,
                    version: u32::try_from(number).unwrap_or(0),
                    deployed_at,
                });
        }
        Ok(by_scenario)
    }

    /// A version by number (`None`: the newest) and its stored content.
    pub(super) async fn fetch_version(
        conn: &mut DB::Connection,
        scenario_id: Uuid,
        scenario: &Slug,
        number: Option<u32>,
    ) -> StoreResult<(VersionRow, Vec<u8>)> {
        let row: Option<VersionRow> = match number {
            Some(number) => {
                sqlx::query_as(concat!(
                    select_version!(),
                    "WHERE v.scenario_id = $1 AND v.number = $2"
                ))
                .bind(scenario_id)
                .bind(i32::try_from(number).unwrap_or(i32::MAX))
                .fetch_optional(&mut *conn)
                .await?
            }
            None => {
                sqlx::query_as(concat!(
                    select_version!(),
                    "WHERE v.scenario_id = $1 ORDER BY v.number DESC LIMIT 1"
                ))
                .bind(scenario_id)
                .fetch_optional(&mut *conn)
                .await?
            }
        };
        let row = row.ok_or_else(|| {
            StoreError::NotFound(match number {
                Some(number) => format!("version {number} of scenario '{scenario}'"),
                None => format!(
                    "a version of scenario '{scenario}' (it has none yet: create one from its working copy)"
                ),
            })
        })?;
        let content: Vec<u8> =
            sqlx::query_scalar("SELECT content FROM scenario_versions WHERE id = $1")
                .bind(row.id)
                .fetch_one(&mut *conn)
                .await?;
        Ok((row, content))
    }
}

/// Scenarios, their immutable versions, and deploying a version to an environment.
#[async_trait]
pub trait ScenarioStore: Send + Sync {
    async fn create_scenario(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        new: NewScenario,
    ) -> StoreResult<ScenarioRecord>;
    async fn get_scenario(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
    ) -> StoreResult<ScenarioRecord>;
    /// By name.
    async fn list_scenarios(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
    ) -> StoreResult<Vec<ScenarioRecord>>;
    async fn update_scenario(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        patch: &ScenarioPatch,
        expected_version: Option<i64>,
    ) -> StoreResult<ScenarioRecord>;
    /// Deletes a scenario with its working copy and versions; refused while
    /// an environment serves one of its versions, and for "default".
    async fn delete_scenario(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        expected_version: Option<i64>,
    ) -> StoreResult<()>;
    /// Freezes the working copy as the next version, or returns the newest
    /// version when the content is unchanged.
    async fn create_version(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        scenario: &Slug,
        note: &str,
    ) -> StoreResult<VersionRecord>;
    /// Newest first, without routes.
    async fn list_versions(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        scenario: &Slug,
    ) -> StoreResult<Vec<VersionRecord>>;
    /// With routes; `None`: the newest.
    async fn get_version(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        scenario: &Slug,
        number: Option<u32>,
    ) -> StoreResult<VersionRecord>;
    /// Serves a version in an environment after the first, at once (admin
    /// and tests only, until promotions exist).
    async fn deploy_version(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        scenario: &Slug,
        number: Option<u32>,
        environment: &Slug,
    ) -> StoreResult<DeploymentRecord>;
    /// Creates a scenario holding `routes` as its working copy, in one
    /// transaction (an OpenAPI or scenario-file import).
    async fn import_scenario(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        new: NewScenario,
        routes: Vec<RouteSpec>,
    ) -> StoreResult<(ScenarioRecord, Vec<RouteRecord>)>;
}

#[async_trait]
impl<DB> ScenarioStore for SqlStore<DB>
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
    async fn create_scenario(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        new: NewScenario,
    ) -> StoreResult<ScenarioRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::fetch_workspace(&mut tx, org, workspace).await?;
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM scenarios WHERE workspace_id = $1")
                .bind(ws.id)
                .fetch_one(&mut *tx)
                .await?;
        if to_u64(count) >= MAX_SCENARIOS as u64 {
            return Err(StoreError::LimitExceeded(format!(
                "a workspace has at most {MAX_SCENARIOS} scenarios"
            )));
        }
        SqlStore::<DB>::insert_scenario(&mut tx, org, ws.id, &new, now()).await?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(
                org,
                "scenario.create",
                format!("workspace/{}/scenario/{}", ws.slug, new.name),
            )
            .workspace(ws.id)
            .summary(json!({"after": {"description": new.description.clone()}})),
        )
        .await?;
        let record = SqlStore::<DB>::load_scenario(&mut tx, ws.id, &new.name, workspace).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn get_scenario(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
    ) -> StoreResult<ScenarioRecord> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::fetch_workspace(&mut conn, org, workspace).await?;
        SqlStore::<DB>::load_scenario(&mut conn, ws.id, name, workspace).await
    }

    async fn list_scenarios(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
    ) -> StoreResult<Vec<ScenarioRecord>> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::fetch_workspace(&mut conn, org, workspace).await?;
        let rows: Vec<ScenarioRow> = sqlx::query_as(concat!(
            select_scenario!(),
            "WHERE sc.workspace_id = $1 ORDER BY sc.name"
        ))
        .bind(ws.id)
        .fetch_all(&mut *conn)
        .await?;
        let mut deployments = SqlStore::<DB>::fetch_deployments(&mut conn, ws.id).await?;
        rows.into_iter()
            .map(|row| {
                let mine = deployments.remove(&row.id).unwrap_or_default();
                row.into_record(mine)
            })
            .collect()
    }

    async fn update_scenario(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        patch: &ScenarioPatch,
        expected_version: Option<i64>,
    ) -> StoreResult<ScenarioRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::fetch_workspace(&mut tx, org, workspace).await?;
        let current = SqlStore::<DB>::load_scenario(&mut tx, ws.id, name, workspace).await?;
        check_version(
            format!("scenario '{name}'"),
            current.version,
            expected_version,
        )?;
        let new_name = patch.name.clone().unwrap_or(current.name.clone());
        if new_name != current.name && current.name.as_str() == DEFAULT_SCENARIO {
            return Err(StoreError::FailedPrecondition(format!(
                "the scenario '{DEFAULT_SCENARIO}' keeps its name: routes added without naming a scenario go there"
            )));
        }
        let description = patch
            .description
            .clone()
            .unwrap_or(current.description.clone());
        let tags = patch.tags.clone().unwrap_or(current.tags.clone());
        let checks = patch.checks.as_ref().unwrap_or(&current.checks);
        let updated = sqlx::query(
            "UPDATE scenarios SET name = $1, description = $2, tags = $3, checks = $7, version = version + 1, updated_at = $4 \
             WHERE id = $5 AND version = $6",
        )
        .bind(new_name.to_string())
        .bind(description)
        .bind(tags_json(&tags))
        .bind(now())
        .bind(current.id)
        .bind(current.version)
        .bind(checks_json(checks))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            db_error(e, || {
                StoreError::AlreadyExists(format!("{workspace} already has a scenario '{new_name}'"))
            })
        })?;
        if DB::rows_affected(&updated) == 0 {
            return Err(contended(format!("scenario '{name}'")));
        }
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(org, "scenario.update", format!("workspace/{}/scenario/{}", ws.slug, current.name)).workspace(ws.id).summary(json!({"before": {"name": current.name.to_string(), "description": current.description.clone()}, "patch": format!("{patch:?}")})),
        )
        .await?;
        let record = SqlStore::<DB>::load_scenario(&mut tx, ws.id, &new_name, workspace).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn delete_scenario(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        expected_version: Option<i64>,
    ) -> StoreResult<()> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::fetch_workspace(&mut tx, org, workspace).await?;
        let current = SqlStore::<DB>::load_scenario(&mut tx, ws.id, name, workspace).await?;
        check_version(
            format!("scenario '{name}'"),
            current.version,
            expected_version,
        )?;
        if current.name.as_str() == DEFAULT_SCENARIO {
            return Err(StoreError::FailedPrecondition(format!(
                "the scenario '{DEFAULT_SCENARIO}' cannot be deleted: routes added without naming a scenario go there"
            )));
        }
        if !current.deployments.is_empty() {
            let serving: Vec<String> = current
                .deployments
                .iter()
                .map(|d| format!("{} (version {})", d.environment, d.version))
                .collect();
            return Err(StoreError::FailedPrecondition(format!(
                "scenario '{name}' is served by {}; it can be deleted once no environment serves it",
                serving.join(", ")
            )));
        }
        sqlx::query("DELETE FROM scenarios WHERE id = $1")
            .bind(current.id)
            .execute(&mut *tx)
            .await?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(
                org,
                "scenario.delete",
                format!("workspace/{}/scenario/{}", ws.slug, current.name),
            )
            .workspace(ws.id),
        )
        .await?;
        SqlStore::<DB>::bump_revision(&mut tx, ws.id).await?;
        Ok(tx.commit().await?)
    }

    async fn create_version(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        scenario: &Slug,
        note: &str,
    ) -> StoreResult<VersionRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::fetch_workspace(&mut tx, org, workspace).await?;
        let record = SqlStore::<DB>::load_scenario(&mut tx, ws.id, scenario, workspace).await?;
        let rows: Vec<ServingRouteRow> = sqlx::query_as(concat!(
            select_serving_route!(),
            "WHERE scenario_id = $1 ORDER BY id"
        ))
        .bind(record.id)
        .fetch_all(&mut *tx)
        .await?;
        let routes = rows
            .into_iter()
            .map(|row| {
                let id = row.id;
                row.spec()
                    .map(|spec| ConfigRoute { id, spec })
                    .map_err(|e| corrupt("route", id, &e))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let (content, hash) = version_content(&routes);
        let checks = checks_json(&record.checks);
        let hash = version_hash(&hash, &checks);
        let latest: Option<VersionRow> = sqlx::query_as(concat!(
            select_version!(),
            "WHERE v.scenario_id = $1 ORDER BY v.number DESC LIMIT 1"
        ))
        .bind(record.id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(latest) = latest
            && latest.content_hash == hash
        {
            // Unchanged: the newest version already is this content.
            return latest.into_record(Vec::new());
        }
        let number = record.latest_version + 1;
        let now = now();
        let id = Uuid::now_v7();
        let route_count = u32::try_from(routes.len()).unwrap_or(u32::MAX);
        sqlx::query(
            "INSERT INTO scenario_versions (id, scenario_id, workspace_id, number, content_hash, content, route_count, note, created_at, checks) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(id)
        .bind(record.id)
        .bind(ws.id)
        .bind(i32::try_from(number).unwrap_or(i32::MAX))
        .bind(hash.clone())
        .bind(content)
        .bind(i32::try_from(route_count).unwrap_or(i32::MAX))
        .bind(note.to_owned())
        .bind(now)
        .bind(checks)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error(e, || contended(format!("scenario '{scenario}'"))))?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(org, "scenario.version", format!("workspace/{}/scenario/{}/version/{number}", ws.slug, scenario)).workspace(ws.id).summary(json!({"after": {"version": number, "hash": hash.clone(), "routes": routes.len(), "note": note}})),
        )
        .await?;
        tx.commit().await?;
        Ok(VersionRecord {
            id,
            scenario: scenario.clone(),
            number,
            content_hash: hash,
            route_count,
            note: note.to_owned(),
            created_at: now,
            routes: Vec::new(),
            checks: record.checks.clone(),
        })
    }

    async fn list_versions(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        scenario: &Slug,
    ) -> StoreResult<Vec<VersionRecord>> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::fetch_workspace(&mut conn, org, workspace).await?;
        let id = SqlStore::<DB>::scenario_id(&mut conn, ws.id, scenario, workspace).await?;
        let rows: Vec<VersionRow> = sqlx::query_as(concat!(
            select_version!(),
            "WHERE v.scenario_id = $1 ORDER BY v.number DESC"
        ))
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter()
            .map(|row| row.into_record(Vec::new()))
            .collect()
    }

    async fn get_version(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        scenario: &Slug,
        number: Option<u32>,
    ) -> StoreResult<VersionRecord> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::fetch_workspace(&mut conn, org, workspace).await?;
        let id = SqlStore::<DB>::scenario_id(&mut conn, ws.id, scenario, workspace).await?;
        let (row, content) = SqlStore::<DB>::fetch_version(&mut conn, id, scenario, number).await?;
        let routes = decode_content(&content).map_err(|e| corrupt("version", row.id, &e))?;
        row.into_record(routes)
    }

    async fn deploy_version(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        scenario: &Slug,
        number: Option<u32>,
        environment: &Slug,
    ) -> StoreResult<DeploymentRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::load_workspace(&mut tx, org, workspace).await?;
        let env = find_environment(&ws, environment, workspace)?;
        let chain = ws.chain();
        if chain.first() == Some(environment.as_str()) {
            return Err(StoreError::FailedPrecondition(format!(
                "{environment} serves the working copies of {workspace}; versions are deployed to the environments after it ({})",
                chain.describe()
            )));
        }
        let scenario_id = SqlStore::<DB>::scenario_id(&mut tx, ws.id, scenario, workspace).await?;
        let (row, content) =
            SqlStore::<DB>::fetch_version(&mut tx, scenario_id, scenario, number).await?;
        // The environment with this version in place must still be valid:
        // no route of it may match the same requests as another
        // scenario's, and it stays within the limits.
        let others: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
            "SELECT d.scenario_id, v.content FROM deployments d \
             JOIN scenario_versions v ON v.id = d.version_id \
             WHERE d.environment_id = $1 AND d.scenario_id <> $2",
        )
        .bind(env.id)
        .bind(scenario_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut routes = decode_content(&content).map_err(|e| corrupt("version", row.id, &e))?;
        for (other, bytes) in &others {
            routes.extend(decode_content(bytes).map_err(|e| corrupt("version", *other, &e))?);
        }
        EnvironmentConfig::plain(environment.clone(), routes)
            .validate()
            .map_err(|e| {
                StoreError::FailedPrecondition(format!(
                    "version {} of scenario '{scenario}' cannot be served by {environment} next to what it serves: {e}",
                    row.number
                ))
            })?;
        let now = now();
        let previous: Option<i32> = sqlx::query_scalar(
            "SELECT v.number FROM deployments d JOIN scenario_versions v ON v.id = d.version_id \
             WHERE d.environment_id = $1 AND d.scenario_id = $2",
        )
        .bind(env.id)
        .bind(scenario_id)
        .fetch_optional(&mut *tx)
        .await?;
        // The environment's release history shows direct deployments too.
        sqlx::query(
            "INSERT INTO releases (id, org_id, workspace_id, environment_id, scenario_id, scenario, version, previous_version, kind, promotion_id, actor, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'deploy', NULL, $9, $10)",
        )
        .bind(Uuid::now_v7())
        .bind(org)
        .bind(ws.id)
        .bind(env.id)
        .bind(scenario_id)
        .bind(scenario.to_string())
        .bind(row.number)
        .bind(previous.unwrap_or(0))
        .bind(super::audit::current_context().actor)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO deployments (environment_id, scenario_id, version_id, workspace_id, deployed_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (environment_id, scenario_id) DO UPDATE SET version_id = $3, deployed_at = $5",
        )
        .bind(env.id)
        .bind(scenario_id)
        .bind(row.id)
        .bind(ws.id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(
                org,
                "scenario.deploy",
                format!("workspace/{}/scenario/{}", ws.slug, scenario),
            )
            .workspace(ws.id)
            .environment(env.name.to_string())
            .summary(json!({"after": {"version": number}})),
        )
        .await?;
        SqlStore::<DB>::bump_revision(&mut tx, ws.id).await?;
        tx.commit().await?;
        Ok(DeploymentRecord {
            environment: environment.clone(),
            scenario: scenario.clone(),
            version: u32::try_from(row.number).unwrap_or(0),
            deployed_at: now,
        })
    }

    async fn import_scenario(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        new: NewScenario,
        routes: Vec<RouteSpec>,
    ) -> StoreResult<(ScenarioRecord, Vec<RouteRecord>)> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = SqlStore::<DB>::fetch_workspace(&mut tx, org, workspace).await?;
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM scenarios WHERE workspace_id = $1")
                .bind(ws.id)
                .fetch_one(&mut *tx)
                .await?;
        if to_u64(count) >= MAX_SCENARIOS as u64 {
            return Err(StoreError::LimitExceeded(format!(
                "a workspace has at most {MAX_SCENARIOS} scenarios"
            )));
        }
        let scenario_id = SqlStore::<DB>::insert_scenario(&mut tx, org, ws.id, &new, now()).await?;
        let records =
            SqlStore::<DB>::insert_routes(&mut tx, org, ws.id, scenario_id, &new.name, routes)
                .await?;
        SqlStore::<DB>::check_workspace_limits(&mut tx, ws.id).await?;
        SqlStore::<DB>::append(
            &mut tx,
            Change::new(
                org,
                "scenario.import",
                format!("workspace/{}/scenario/{}", ws.slug, new.name),
            )
            .workspace(ws.id)
            .summary(json!({"after": {"routes": records.len()}})),
        )
        .await?;
        SqlStore::<DB>::bump_revision(&mut tx, ws.id).await?;
        let scenario = SqlStore::<DB>::load_scenario(&mut tx, ws.id, &new.name, workspace).await?;
        tx.commit().await?;
        Ok((scenario, records))
    }
}
