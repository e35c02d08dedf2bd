//! The one implementation of [`Store`], generic over the sqlx backend.
//!
//! Concurrency: updates are optimistic (`WHERE version = $n`), which needs no
//! row locks and so reads the same on both backends. The config revision row
//! is the one serialization point: every transaction that changes serving
//! bumps it last, just before commit.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mockplane_proto::convert::parse_config_routes;
use mockplane_proto::v1;
use mockplane_shared::access::OrgRole;
use mockplane_shared::contract::ContractCheck;
use mockplane_shared::environment::{MAX_ENVIRONMENTS, default_environments};
use mockplane_shared::persona::{MAX_PERSONAS, PersonaConfig, parse_persona_data};
use mockplane_shared::scenario::{
    DEFAULT_SCENARIO, NewScenario, ScenarioPatch, Tag, content_hash, parse_tags, version_hash,
};
use mockplane_shared::{
    ConfigRoute, EnvironmentConfig, FieldError, NewWorkspace, RoutePatch, RouteSpec, Slug,
    WorkspaceConfig, WorkspacePatch,
};
use prost::Message as _;
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::access::{insert_principal, insert_token};
use super::audit::{Change, append};
use super::keys::{ServingKeyRow, serving_keys};
use super::routes::{
    RouteRow, ServingRouteRow, check_workspace_limits, fetch_route, headers_json, insert_routes,
    matchers_json, realism_json, route_clash, select_route, select_serving_route, state_json,
};
use super::tx::{
    CONFLICT_RETRIES, Scope, SqlStore, bump_revision, check_version, contended, corrupt, db_error,
    internal, now, page_limit, to_u64,
};
use super::workspaces::{
    EnvironmentRow, WorkspaceRow, environment_order, fetch_workspace, find_environment,
    load_workspace, names, parse_settings, select_environment, select_workspace, settings_json,
};
use super::{
    Bootstrapped, ChangeHistory, ConfigChanges, DeploymentRecord, Dialect, EnvironmentPatch,
    EnvironmentRecord, FullConfig, NewEnvironment, NewPrincipal, Page, PersonaRecord,
    PrincipalKind, RouteRecord, ScenarioRecord, Store, StoreError, StoreResult, VersionRecord,
    WorkspaceRecord, WorkspaceRef,
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

macro_rules! select_serving_deployment {
    () => {
        "SELECT d.workspace_id, e.name AS environment, v.content FROM deployments d \
         JOIN environments e ON e.id = d.environment_id \
         JOIN scenario_versions v ON v.id = d.version_id "
    };
}

macro_rules! select_persona {
    () => {
        "SELECT id, name, data, version, created_at, updated_at FROM personas "
    };
}

/// Most scenarios one workspace may have.
const MAX_SCENARIOS: usize = 200;

fn default_scenario() -> Slug {
    Slug::parse(DEFAULT_SCENARIO).expect("the default scenario's name is a valid slug")
}

pub(super) fn checks_json(checks: &[ContractCheck]) -> String {
    serde_json::to_string(checks).unwrap_or_else(|_| "[]".to_owned())
}

fn tags_json(tags: &[Tag]) -> String {
    let raw: Vec<String> = tags.iter().map(Tag::to_string).collect();
    serde_json::to_string(&raw).unwrap_or_else(|_| "[]".into())
}

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

#[derive(FromRow)]
struct PersonaRow {
    id: Uuid,
    name: String,
    data: String,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl PersonaRow {
    fn into_record(self) -> StoreResult<PersonaRecord> {
        Ok(PersonaRecord {
            name: Slug::parse(&self.name).map_err(|e| {
                corrupt("persona", self.id, &FieldError::new("name", e.to_string()))
            })?,
            data: parse_persona_data(&self.data).map_err(|e| corrupt("persona", self.id, &e))?,
            id: self.id,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
            served: Vec::new(),
        })
    }
}

/// What serving needs of a persona: a working copy (`environment: None`,
/// served by the first environment of the chain) or a version promoted
/// into an environment.
#[derive(FromRow)]
struct ServingPersonaRow {
    workspace_id: Uuid,
    environment: Option<String>,
    name: String,
    data: String,
}

/// Serving personas: working copies, then deployed versions, each list
/// filtered by the given clause.
macro_rules! serving_personas {
    ($working:literal, $deployed:literal) => {
        concat!(
            "SELECT workspace_id, CAST(NULL AS TEXT) AS environment, name, data FROM personas p ",
            $working,
            " UNION ALL SELECT d.workspace_id, e.name AS environment, p.name, v.data FROM persona_deployments d \
             JOIN environments e ON e.id = d.environment_id JOIN personas p ON p.id = d.persona_id \
             JOIN persona_versions v ON v.persona_id = d.persona_id AND v.number = d.number ",
            $deployed
        )
    };
}
const SERVING_PERSONAS: &str = serving_personas!("", "");
const SERVING_PERSONAS_OF: &str =
    serving_personas!("WHERE p.workspace_id = $1", "WHERE d.workspace_id = $1");

/// What serving needs of a deployment: where, and the version's routes.
#[derive(FromRow)]
struct ServingDeploymentRow {
    workspace_id: Uuid,
    environment: String,
    content: Vec<u8>,
}

/// What serving needs of an environment.
#[derive(FromRow)]
struct ServingEnvironmentRow {
    workspace_id: Uuid,
    name: String,
    position: i32,
    settings: String,
}

/// What serving needs of a workspace.
#[derive(FromRow)]
struct ServingWorkspaceRow {
    id: Uuid,
    slug: String,
    active_env: String,
    env_defaults: String,
    state_epoch: i64,
    require_keys: i32,
}

/// What serving needs of a route: the columns the config is built from.
#[async_trait]
impl<DB> Store for SqlStore<DB>
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
    for<'q> Option<DateTime<Utc>>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<Uuid>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<i32>: Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    fn backend(&self) -> &'static str {
        DB::BACKEND
    }

    async fn watch_config_changes(
        &self,
        wake: std::sync::Arc<dyn Fn() + Send + Sync>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        DB::watch_changes(self.pool.clone(), wake, shutdown).await;
    }

    async fn job_lock(&self, job: &str) -> StoreResult<Option<super::JobLock>> {
        DB::try_job_lock(self.pool.clone(), super::dialect::job_key(job))
            .await
            .map_err(internal)
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    async fn bootstrap(
        &self,
        org_name: &str,
        admin: &NewPrincipal,
        token_hash: &str,
    ) -> StoreResult<Option<Bootstrapped>> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let orgs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orgs")
            .fetch_one(&mut *tx)
            .await?;
        if orgs > 0 {
            return Ok(None);
        }
        let now = now();
        let org_id = match insert_org(&mut tx, org_name, now).await {
            Ok(id) => id,
            // Another replica bootstrapped between our count and our insert.
            Err(StoreError::AlreadyExists(_)) => return Ok(None),
            Err(other) => return Err(other),
        };
        let owner = insert_principal::<DB>(&mut tx, org_id, admin, now).await?;
        insert_token::<DB>(&mut tx, org_id, owner.id, "admin", token_hash, now, None).await?;
        append::<DB>(
            &mut tx,
            Change::new(org_id, "org.bootstrap", format!("org/{org_name}"))
                .summary(json!({"owner": owner.id.to_string()})),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(Bootstrapped {
            org_id,
            org_name: org_name.to_owned(),
            admin_id: owner.id,
        }))
    }

    async fn create_org(&self, name: &str) -> StoreResult<Uuid> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let id = insert_org(&mut tx, name, now()).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn add_token(
        &self,
        org_name: &str,
        token_name: &str,
        token_hash: &str,
    ) -> StoreResult<Uuid> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::System).await?;
        let org_id: Option<Uuid> = sqlx::query_scalar("SELECT id FROM orgs WHERE name = $1")
            .bind(org_name.to_owned())
            .fetch_optional(&mut *tx)
            .await?;
        let org_id = org_id.ok_or_else(|| StoreError::NotFound(format!("org '{org_name}'")))?;
        let now = now();
        let owner = insert_principal::<DB>(
            &mut tx,
            org_id,
            &NewPrincipal {
                kind: PrincipalKind::Service,
                email: None,
                name: token_name.to_owned(),
                org_role: OrgRole::Owner,
                password_hash: None,
                must_change_password: false,
            },
            now,
        )
        .await?;
        let id = insert_token::<DB>(&mut tx, org_id, owner.id, token_name, token_hash, now, None)
            .await?;
        append::<DB>(
            &mut tx,
            Change::new(
                org_id,
                "service_account.create",
                format!("principal/{}", owner.id),
            )
            .summary(json!({"name": token_name, "org_role": "owner", "token": id.to_string()})),
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn create_workspace(
        &self,
        org: Uuid,
        new: NewWorkspace,
        creator: Option<Uuid>,
    ) -> StoreResult<WorkspaceRecord> {
        new.check()?;
        let (chain, active) = (new.chain(), new.active());
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let id = Uuid::now_v7();
        let now = now();
        sqlx::query(
            "INSERT INTO workspaces (id, org_id, slug, name, description, version, created_at, updated_at, \
             active_env, env_defaults, allow_skips, require_keys) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $6, $7, $8, $9, $10)",
        )
        .bind(id)
        .bind(org)
        .bind(new.slug.to_string())
        .bind(new.name.clone())
        .bind(new.description.clone())
        .bind(now)
        .bind(active.to_string())
        .bind(settings_json(&new.environment_defaults))
        .bind(i32::from(new.allow_promotion_skips))
        .bind(i32::from(new.require_api_keys))
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            db_error(e, || {
                StoreError::AlreadyExists(format!("a workspace with slug '{}' already exists", new.slug))
            })
        })?;
        for (name, settings) in default_environments() {
            // Off the chain (0) unless the chain names it.
            let position = chain
                .iter()
                .position(|step| *step == name)
                .map_or(0, |i| i + 1);
            let env = EnvironmentRecord {
                id: Uuid::now_v7(),
                name,
                position: u32::try_from(position).unwrap_or(u32::MAX),
                settings,
                version: 1,
                created_at: now,
                updated_at: now,
            };
            insert_environment(&mut tx, org, id, &env).await?;
            if let Some(creator) = creator {
                insert_admin_membership::<DB>(&mut tx, org, id, creator, env.name.as_str(), now)
                    .await?;
            }
        }
        insert_scenario(
            &mut tx,
            org,
            id,
            &NewScenario {
                name: default_scenario(),
                description: String::new(),
                tags: Vec::new(),
                checks: Vec::new(),
            },
            now,
        )
        .await?;
        append::<DB>(
            &mut tx,
            Change::new(org, "workspace.create", format!("workspace/{}", new.slug))
                .workspace(id)
                .summary(json!({"after": {
                    "slug": new.slug.to_string(),
                    "name": new.name.clone(),
                    "active_environment": active.to_string(),
                    "promotion_chain": chain.iter().map(Slug::to_string).collect::<Vec<_>>(),
                    "allow_promotion_skips": new.allow_promotion_skips,
                    "require_api_keys": new.require_api_keys,
                    "environment_defaults": serde_json::to_value(&new.environment_defaults).unwrap_or_default(),
                }})),
        )
        .await?;
        bump_revision(&mut tx, id).await?;
        let record = load_workspace(&mut tx, org, &WorkspaceRef::Id(id)).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn get_workspace(&self, org: Uuid, key: &WorkspaceRef) -> StoreResult<WorkspaceRecord> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        load_workspace(&mut conn, org, key).await
    }

    async fn list_workspaces(
        &self,
        org: Uuid,
        visible_to: Option<Uuid>,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Page<WorkspaceRecord, String>> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let rows: Vec<WorkspaceRow> = sqlx::query_as(concat!(
            select_workspace!(),
            "WHERE w.org_id = $1 AND w.slug > $2 AND ($4 = $5 OR EXISTS \
             (SELECT 1 FROM memberships m WHERE m.workspace_id = w.id AND m.principal_id = $4)) \
             ORDER BY w.slug LIMIT $3"
        ))
        .bind(org)
        .bind(after.unwrap_or("").to_owned())
        .bind(page_limit(limit) + 1)
        .bind(visible_to.unwrap_or(Uuid::nil()))
        .bind(Uuid::nil())
        .fetch_all(&mut *tx)
        .await?;
        let envs: Vec<EnvironmentRow> = sqlx::query_as(concat!(
            select_environment!(),
            "WHERE workspace_id IN (SELECT w.id FROM workspaces w WHERE w.org_id = $1 AND w.slug > $2 \
             AND ($4 = $5 OR EXISTS (SELECT 1 FROM memberships m WHERE m.workspace_id = w.id AND m.principal_id = $4)) \
             ORDER BY w.slug LIMIT $3)",
            environment_order!()
        ))
        .bind(org)
        .bind(after.unwrap_or("").to_owned())
        .bind(page_limit(limit) + 1)
        .bind(visible_to.unwrap_or(Uuid::nil()))
        .bind(Uuid::nil())
        .fetch_all(&mut *tx)
        .await?;
        let mut by_workspace: HashMap<Uuid, Vec<EnvironmentRecord>> = HashMap::new();
        for env in envs {
            let workspace_id = env.workspace_id;
            by_workspace
                .entry(workspace_id)
                .or_default()
                .push(env.into_record()?);
        }
        let items = rows
            .into_iter()
            .map(|row| {
                let envs = by_workspace.remove(&row.id).unwrap_or_default();
                row.into_record(envs)
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |w| w.slug.to_string()))
    }

    async fn update_workspace(
        &self,
        org: Uuid,
        key: &WorkspaceRef,
        patch: &WorkspacePatch,
        expected_version: Option<i64>,
    ) -> StoreResult<WorkspaceRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        for _ in 0..CONFLICT_RETRIES {
            let current = load_workspace(&mut tx, org, key).await?;
            check_version(key.to_string(), current.version, expected_version)?;
            let slug = patch.slug.clone().unwrap_or(current.slug.clone());
            let name = patch.name.clone().unwrap_or(current.name.clone());
            let description = patch
                .description
                .clone()
                .unwrap_or(current.description.clone());
            let active = patch
                .active_environment
                .clone()
                .unwrap_or(current.active_environment.clone());
            if current.environment(active.as_str()).is_none() {
                return Err(FieldError::new(
                    "active_environment",
                    format!(
                        "'{active}' is not an environment of {key}; it has {}",
                        names(&current.environments)
                    ),
                )
                .into());
            }
            let defaults = match &patch.environment_defaults {
                Some(change) => {
                    let next = change.apply(&current.environment_defaults);
                    next.check().map_err(|e| e.within("environment_defaults"))?;
                    next
                }
                None => current.environment_defaults.clone(),
            };
            let skips = patch
                .allow_promotion_skips
                .unwrap_or(current.allow_promotion_skips);
            let require_keys = patch.require_api_keys.unwrap_or(current.require_api_keys);
            let now = now();
            let updated = sqlx::query(
                "UPDATE workspaces SET slug = $1, name = $2, description = $3, version = version + 1, \
                 updated_at = $4, active_env = $7, env_defaults = $8, allow_skips = $9, require_keys = $10 \
                 WHERE id = $5 AND version = $6",
            )
            .bind(slug.to_string())
            .bind(name.clone())
            .bind(description.clone())
            .bind(now)
            .bind(current.id)
            .bind(current.version)
            .bind(active.to_string())
            .bind(settings_json(&defaults))
            .bind(i32::from(skips))
            .bind(i32::from(require_keys))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                db_error(e, || StoreError::AlreadyExists(format!("a workspace with slug '{slug}' already exists")))
            })?;
            if DB::rows_affected(&updated) == 0 {
                continue;
            }
            if let Some(chain) = &patch.promotion_chain {
                mockplane_shared::workspace::check_chain(chain)?;
                for (index, step) in chain.iter().enumerate() {
                    if current.environment(step.as_str()).is_none() {
                        return Err(FieldError::new(
                            format!("promotion_chain[{index}]"),
                            format!(
                                "'{step}' is not an environment of {key}; it has {}",
                                names(&current.environments)
                            ),
                        )
                        .into());
                    }
                }
                for env in &current.environments {
                    let position = chain
                        .iter()
                        .position(|step| *step == env.name)
                        .map_or(0, |i| i + 1);
                    sqlx::query("UPDATE environments SET position = $1 WHERE id = $2")
                        .bind(i32::try_from(position).unwrap_or(0))
                        .bind(env.id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            append::<DB>(
                &mut tx,
                Change::new(org, "workspace.update", format!("workspace/{}", current.slug)).workspace(current.id).summary(json!({"before": {"slug": current.slug.to_string(), "name": current.name.clone(), "active_environment": current.active_environment.to_string()}, "patch": format!("{patch:?}")})),
            )
            .await?;
            bump_revision(&mut tx, current.id).await?;
            let record = load_workspace(&mut tx, org, &WorkspaceRef::Id(current.id)).await?;
            tx.commit().await?;
            return Ok(record);
        }
        Err(contended(key.to_string()))
    }

    async fn delete_workspace(
        &self,
        org: Uuid,
        key: &WorkspaceRef,
        expected_version: Option<i64>,
    ) -> StoreResult<()> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        for _ in 0..CONFLICT_RETRIES {
            let current = fetch_workspace(&mut tx, org, key).await?;
            check_version(key.to_string(), current.version, expected_version)?;
            let deleted = sqlx::query("DELETE FROM workspaces WHERE id = $1 AND version = $2")
                .bind(current.id)
                .bind(current.version)
                .execute(&mut *tx)
                .await?;
            if DB::rows_affected(&deleted) == 0 {
                continue;
            }
            append::<DB>(
                &mut tx,
                Change::new(org, "workspace.delete", format!("workspace/{}", current.slug)).workspace(current.id).summary(json!({"before": {"slug": current.slug.to_string(), "name": current.name.clone(), "routes": current.route_count}})),
            )
            .await?;
            bump_revision(&mut tx, current.id).await?;
            return tx.commit().await.map_err(internal);
        }
        Err(contended(key.to_string()))
    }

    async fn create_environment(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        new: NewEnvironment,
        creator: Option<Uuid>,
    ) -> StoreResult<WorkspaceRecord> {
        new.settings.check().map_err(|e| e.within("settings"))?;
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = load_workspace(&mut tx, org, workspace).await?;
        if ws.environment(new.name.as_str()).is_some() {
            return Err(StoreError::AlreadyExists(format!(
                "{workspace} already has an environment '{}'",
                new.name
            )));
        }
        if ws.environments.len() >= MAX_ENVIRONMENTS {
            return Err(StoreError::LimitExceeded(format!(
                "a workspace has at most {MAX_ENVIRONMENTS} environments"
            )));
        }
        let steps = u32::try_from(ws.chain().steps().len()).unwrap_or(u32::MAX);
        if new.position > steps + 1 {
            return Err(FieldError::new(
                "chain_position",
                format!(
                    "the chain has {steps} steps ({}): place the environment at 1 to {}, or 0 for off the chain",
                    ws.chain().describe(),
                    steps + 1
                ),
            )
            .into());
        }
        if new.position > 0 {
            sqlx::query(
                "UPDATE environments SET position = position + 1 WHERE workspace_id = $1 AND position >= $2",
            )
            .bind(ws.id)
            .bind(i32::try_from(new.position).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await?;
        }
        let now = now();
        let env = EnvironmentRecord {
            id: Uuid::now_v7(),
            name: new.name,
            position: new.position,
            settings: new.settings,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        insert_environment(&mut tx, org, ws.id, &env).await?;
        if let Some(creator) = creator {
            insert_admin_membership::<DB>(
                &mut tx,
                org,
                ws.id,
                creator,
                env.name.as_str(),
                env.created_at,
            )
            .await?;
        }
        append::<DB>(
            &mut tx,
            Change::new(org, "environment.create", format!("workspace/{}/environment/{}", ws.slug, env.name)).workspace(ws.id).environment(env.name.to_string()).summary(json!({"after": {"position": env.position, "settings": format!("{:?}", env.settings)}})),
        )
        .await?;
        bump_revision(&mut tx, ws.id).await?;
        let record = load_workspace(&mut tx, org, &WorkspaceRef::Id(ws.id)).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn update_environment(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        patch: &EnvironmentPatch,
        expected_version: Option<i64>,
    ) -> StoreResult<WorkspaceRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = load_workspace(&mut tx, org, workspace).await?;
        let env = find_environment(&ws, name, workspace)?;
        check_version(
            format!("environment '{name}'"),
            env.version,
            expected_version,
        )?;
        let settings = match &patch.settings {
            Some(change) => {
                let next = change.apply(&env.settings);
                next.check().map_err(|e| e.within("settings"))?;
                next
            }
            None => env.settings.clone(),
        };
        let new_name = patch.name.clone().unwrap_or(env.name.clone());
        if new_name != env.name && ws.environment(new_name.as_str()).is_some() {
            return Err(StoreError::AlreadyExists(format!(
                "{workspace} already has an environment '{new_name}'"
            )));
        }
        let updated = sqlx::query(
            "UPDATE environments SET name = $1, settings = $2, version = version + 1, updated_at = $3 \
             WHERE id = $4 AND version = $5",
        )
        .bind(new_name.to_string())
        .bind(settings_json(&settings))
        .bind(now())
        .bind(env.id)
        .bind(env.version)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            db_error(e, || {
                StoreError::AlreadyExists(format!(
                    "{workspace} already has an environment '{new_name}'"
                ))
            })
        })?;
        if DB::rows_affected(&updated) == 0 {
            return Err(contended(format!("environment '{name}'")));
        }
        if new_name != env.name {
            // Roles and policies follow the environment to its new name.
            for table in ["memberships", "env_policies"] {
                sqlx::query(&format!(
                    "UPDATE {table} SET environment = $1 WHERE workspace_id = $2 AND environment = $3"
                ))
                .bind(new_name.to_string())
                .bind(ws.id)
                .bind(env.name.to_string())
                .execute(&mut *tx)
                .await?;
            }
        }
        if ws.active_environment == env.name && new_name != env.name {
            sqlx::query("UPDATE workspaces SET active_env = $1 WHERE id = $2")
                .bind(new_name.to_string())
                .bind(ws.id)
                .execute(&mut *tx)
                .await?;
        }
        append::<DB>(
            &mut tx,
            Change::new(
                org,
                "environment.update",
                format!("workspace/{}/environment/{}", ws.slug, env.name),
            )
            .workspace(ws.id)
            .environment(env.name.to_string())
            .summary(
                json!({"before": format!("{:?}", env.settings), "patch": format!("{patch:?}")}),
            ),
        )
        .await?;
        bump_revision(&mut tx, ws.id).await?;
        let record = load_workspace(&mut tx, org, &WorkspaceRef::Id(ws.id)).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn delete_environment(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        expected_version: Option<i64>,
    ) -> StoreResult<WorkspaceRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = load_workspace(&mut tx, org, workspace).await?;
        let env = find_environment(&ws, name, workspace)?;
        check_version(
            format!("environment '{name}'"),
            env.version,
            expected_version,
        )?;
        if ws.active_environment == env.name {
            return Err(StoreError::FailedPrecondition(format!(
                "'{name}' is the active environment of {workspace}; make another one active first"
            )));
        }
        let chain = ws.chain();
        if env.position > 0 && chain.steps().len() == 1 {
            return Err(StoreError::FailedPrecondition(format!(
                "'{name}' is the only environment on the promotion chain of {workspace}; put another on the chain first"
            )));
        }
        sqlx::query("DELETE FROM environments WHERE id = $1")
            .bind(env.id)
            .execute(&mut *tx)
            .await?;
        // Roles and policies name environments; a later environment of the
        // same name starts with none.
        for table in ["memberships", "env_policies"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE workspace_id = $1 AND environment = $2"
            ))
            .bind(ws.id)
            .bind(env.name.to_string())
            .execute(&mut *tx)
            .await?;
        }
        if env.position > 0 {
            sqlx::query(
                "UPDATE environments SET position = position - 1 WHERE workspace_id = $1 AND position > $2",
            )
            .bind(ws.id)
            .bind(i32::try_from(env.position).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await?;
        }
        append::<DB>(
            &mut tx,
            Change::new(org, "environment.delete", format!("workspace/{}/environment/{}", ws.slug, env.name)).workspace(ws.id).environment(env.name.to_string()).summary(json!({"before": {"position": env.position, "settings": format!("{:?}", env.settings)}})),
        )
        .await?;
        bump_revision(&mut tx, ws.id).await?;
        let record = load_workspace(&mut tx, org, &WorkspaceRef::Id(ws.id)).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn create_scenario(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        new: NewScenario,
    ) -> StoreResult<ScenarioRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = fetch_workspace(&mut tx, org, workspace).await?;
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
        insert_scenario(&mut tx, org, ws.id, &new, now()).await?;
        append::<DB>(
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
        let record = load_scenario(&mut tx, ws.id, &new.name, workspace).await?;
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
        let ws = fetch_workspace(&mut conn, org, workspace).await?;
        load_scenario(&mut conn, ws.id, name, workspace).await
    }

    async fn list_scenarios(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
    ) -> StoreResult<Vec<ScenarioRecord>> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = fetch_workspace(&mut conn, org, workspace).await?;
        let rows: Vec<ScenarioRow> = sqlx::query_as(concat!(
            select_scenario!(),
            "WHERE sc.workspace_id = $1 ORDER BY sc.name"
        ))
        .bind(ws.id)
        .fetch_all(&mut *conn)
        .await?;
        let mut deployments = fetch_deployments(&mut conn, ws.id).await?;
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
        let ws = fetch_workspace(&mut tx, org, workspace).await?;
        let current = load_scenario(&mut tx, ws.id, name, workspace).await?;
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
        append::<DB>(
            &mut tx,
            Change::new(org, "scenario.update", format!("workspace/{}/scenario/{}", ws.slug, current.name)).workspace(ws.id).summary(json!({"before": {"name": current.name.to_string(), "description": current.description.clone()}, "patch": format!("{patch:?}")})),
        )
        .await?;
        let record = load_scenario(&mut tx, ws.id, &new_name, workspace).await?;
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
        let ws = fetch_workspace(&mut tx, org, workspace).await?;
        let current = load_scenario(&mut tx, ws.id, name, workspace).await?;
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
        append::<DB>(
            &mut tx,
            Change::new(
                org,
                "scenario.delete",
                format!("workspace/{}/scenario/{}", ws.slug, current.name),
            )
            .workspace(ws.id),
        )
        .await?;
        bump_revision(&mut tx, ws.id).await?;
        tx.commit().await.map_err(internal)
    }

    async fn create_version(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        scenario: &Slug,
        note: &str,
    ) -> StoreResult<VersionRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = fetch_workspace(&mut tx, org, workspace).await?;
        let record = load_scenario(&mut tx, ws.id, scenario, workspace).await?;
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
        append::<DB>(
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
        let ws = fetch_workspace(&mut conn, org, workspace).await?;
        let id = scenario_id(&mut conn, ws.id, scenario, workspace).await?;
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
        let ws = fetch_workspace(&mut conn, org, workspace).await?;
        let id = scenario_id(&mut conn, ws.id, scenario, workspace).await?;
        let (row, content) = fetch_version(&mut conn, id, scenario, number).await?;
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
        let ws = load_workspace(&mut tx, org, workspace).await?;
        let env = find_environment(&ws, environment, workspace)?;
        let chain = ws.chain();
        if chain.first() == Some(environment.as_str()) {
            return Err(StoreError::FailedPrecondition(format!(
                "{environment} serves the working copies of {workspace}; versions are deployed to the environments after it ({})",
                chain.describe()
            )));
        }
        let scenario_id = scenario_id(&mut tx, ws.id, scenario, workspace).await?;
        let (row, content) = fetch_version(&mut tx, scenario_id, scenario, number).await?;
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
        append::<DB>(
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
        bump_revision(&mut tx, ws.id).await?;
        tx.commit().await?;
        Ok(DeploymentRecord {
            environment: environment.clone(),
            scenario: scenario.clone(),
            version: u32::try_from(row.number).unwrap_or(0),
            deployed_at: now,
        })
    }

    async fn create_persona(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        data: &serde_json::Value,
    ) -> StoreResult<PersonaRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = fetch_workspace(&mut tx, org, workspace).await?;
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM personas WHERE workspace_id = $1")
                .bind(ws.id)
                .fetch_one(&mut *tx)
                .await?;
        if to_u64(count) >= MAX_PERSONAS as u64 {
            return Err(StoreError::LimitExceeded(format!(
                "a workspace has at most {MAX_PERSONAS} personas"
            )));
        }
        let id = Uuid::now_v7();
        let now = now();
        let text = data.to_string();
        sqlx::query(
            "INSERT INTO personas (id, workspace_id, org_id, name, data, version, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $6)",
        )
        .bind(id)
        .bind(ws.id)
        .bind(org)
        .bind(name.to_string())
        .bind(text.clone())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            db_error(e, || {
                StoreError::AlreadyExists(format!("{workspace} already has a persona '{name}'"))
            })
        })?;
        insert_persona_version(&mut tx, id, 1, &text, now).await?;
        append::<DB>(
            &mut tx,
            Change::new(
                org,
                "persona.create",
                format!("workspace/{}/persona/{name}", ws.slug),
            )
            .workspace(ws.id)
            .summary(json!({"after": {"version": 1}})),
        )
        .await?;
        bump_revision(&mut tx, ws.id).await?;
        tx.commit().await?;
        Ok(PersonaRecord {
            id,
            name: name.clone(),
            data: data.clone(),
            version: 1,
            created_at: now,
            updated_at: now,
            served: Vec::new(),
        })
    }

    async fn get_persona(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        number: Option<u32>,
    ) -> StoreResult<PersonaRecord> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = fetch_workspace(&mut conn, org, workspace).await?;
        let mut record = fetch_persona(&mut conn, ws.id, name, workspace).await?;
        if let Some(number) = number
            && i64::from(number) != record.version
        {
            let old: Option<(String, DateTime<Utc>)> = sqlx::query_as(
                "SELECT data, created_at FROM persona_versions WHERE persona_id = $1 AND number = $2",
            )
            .bind(record.id)
            .bind(i64::from(number))
            .fetch_optional(&mut *conn)
            .await?;
            let (data, created) = old.ok_or_else(|| {
                StoreError::NotFound(format!(
                    "version {number} of persona '{name}' (its versions are 1 to {})",
                    record.version
                ))
            })?;
            record.data =
                parse_persona_data(&data).map_err(|e| corrupt("persona", record.id, &e))?;
            record.version = i64::from(number);
            record.updated_at = created;
        }
        Ok(record)
    }

    async fn list_personas(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
    ) -> StoreResult<Vec<PersonaRecord>> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = fetch_workspace(&mut conn, org, workspace).await?;
        let rows: Vec<PersonaRow> = sqlx::query_as(concat!(
            select_persona!(),
            "WHERE workspace_id = $1 ORDER BY name"
        ))
        .bind(ws.id)
        .fetch_all(&mut *conn)
        .await?;
        let mut served = persona_deployments::<DB>(&mut conn, ws.id).await?;
        rows.into_iter()
            .map(|row| {
                let id = row.id;
                let mut record = row.into_record()?;
                record.served = served.remove(&id).unwrap_or_default();
                Ok(record)
            })
            .collect()
    }

    async fn update_persona(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        data: &serde_json::Value,
        expected_version: Option<i64>,
    ) -> StoreResult<PersonaRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = fetch_workspace(&mut tx, org, workspace).await?;
        let current = fetch_persona(&mut tx, ws.id, name, workspace).await?;
        check_version(
            format!("persona '{name}'"),
            current.version,
            expected_version,
        )?;
        let now = now();
        let text = data.to_string();
        let updated = sqlx::query(
            "UPDATE personas SET data = $1, version = version + 1, updated_at = $2 WHERE id = $3 AND version = $4",
        )
        .bind(text.clone())
        .bind(now)
        .bind(current.id)
        .bind(current.version)
        .execute(&mut *tx)
        .await?;
        if DB::rows_affected(&updated) == 0 {
            return Err(contended(format!("persona '{name}'")));
        }
        insert_persona_version(&mut tx, current.id, current.version + 1, &text, now).await?;
        append::<DB>(
            &mut tx,
            Change::new(org, "persona.update", format!("workspace/{}/persona/{name}", ws.slug)).workspace(ws.id).summary(json!({"before": {"version": current.version}, "after": {"version": current.version + 1}})),
        )
        .await?;
        bump_revision(&mut tx, ws.id).await?;
        tx.commit().await?;
        Ok(PersonaRecord {
            data: data.clone(),
            version: current.version + 1,
            updated_at: now,
            ..current
        })
    }

    async fn delete_persona(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        name: &Slug,
        expected_version: Option<i64>,
    ) -> StoreResult<()> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = fetch_workspace(&mut tx, org, workspace).await?;
        let current = fetch_persona(&mut tx, ws.id, name, workspace).await?;
        check_version(
            format!("persona '{name}'"),
            current.version,
            expected_version,
        )?;
        if !current.served.is_empty() {
            let serving: Vec<String> = current
                .served
                .iter()
                .map(|(env, n)| format!("{env} (version {n})"))
                .collect();
            return Err(StoreError::FailedPrecondition(format!(
                "persona '{name}' is served by {}; it can be deleted once no environment after the first serves it (roll back the promotions that put it there)",
                serving.join(", ")
            )));
        }
        sqlx::query("DELETE FROM personas WHERE id = $1")
            .bind(current.id)
            .execute(&mut *tx)
            .await?;
        append::<DB>(
            &mut tx,
            Change::new(
                org,
                "persona.delete",
                format!("workspace/{}/persona/{name}", ws.slug),
            )
            .workspace(ws.id)
            .summary(json!({"before": {"version": current.version}})),
        )
        .await?;
        bump_revision(&mut tx, ws.id).await?;
        tx.commit().await.map_err(internal)
    }

    async fn import_scenario(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        new: NewScenario,
        routes: Vec<RouteSpec>,
    ) -> StoreResult<(ScenarioRecord, Vec<RouteRecord>)> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = fetch_workspace(&mut tx, org, workspace).await?;
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
        let scenario_id = insert_scenario(&mut tx, org, ws.id, &new, now()).await?;
        let records = insert_routes(&mut tx, org, ws.id, scenario_id, &new.name, routes).await?;
        check_workspace_limits(&mut tx, ws.id).await?;
        append::<DB>(
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
        bump_revision(&mut tx, ws.id).await?;
        let scenario = load_scenario(&mut tx, ws.id, &new.name, workspace).await?;
        tx.commit().await?;
        Ok((scenario, records))
    }

    async fn reset_state(&self, org: Uuid, workspace: &WorkspaceRef) -> StoreResult<u64> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = fetch_workspace(&mut tx, org, workspace).await?;
        let epoch: i64 = sqlx::query_scalar(
            "UPDATE workspaces SET state_epoch = state_epoch + 1 WHERE id = $1 RETURNING state_epoch",
        )
        .bind(ws.id)
        .fetch_one(&mut *tx)
        .await?;
        append::<DB>(
            &mut tx,
            Change::new(
                org,
                "workspace.reset_state",
                format!("workspace/{}", ws.slug),
            )
            .workspace(ws.id)
            .summary(json!({"after": {"state_epoch": epoch}})),
        )
        .await?;
        bump_revision(&mut tx, ws.id).await?;
        tx.commit().await?;
        Ok(to_u64(epoch))
    }

    async fn create_scenario_routes(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        scenario: Option<&Slug>,
        routes: Vec<RouteSpec>,
    ) -> StoreResult<Vec<RouteRecord>> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = fetch_workspace(&mut tx, org, workspace).await?;
        let scenario = match scenario {
            Some(name) => name.clone(),
            None => default_scenario(),
        };
        let scenario_id = scenario_id(&mut tx, ws.id, &scenario, workspace).await?;
        let records = insert_routes(&mut tx, org, ws.id, scenario_id, &scenario, routes).await?;
        check_workspace_limits(&mut tx, ws.id).await?;
        append::<DB>(
            &mut tx,
            Change::new(org, "route.create", format!("workspace/{}/scenario/{scenario}", ws.slug)).workspace(ws.id).summary(json!({"after": records.iter().map(|r| format!("{} {} {}", r.spec.method, r.spec.path, r.id)).collect::<Vec<_>>()})),
        )
        .await?;
        bump_revision(&mut tx, ws.id).await?;
        tx.commit().await?;
        Ok(records)
    }

    async fn get_route(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        id: Uuid,
    ) -> StoreResult<RouteRecord> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = fetch_workspace(&mut conn, org, workspace).await?;
        fetch_route(&mut conn, ws.id, id).await?.into_record()
    }

    async fn list_scenario_routes(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        scenario: Option<&Slug>,
        after: Option<Uuid>,
        limit: u32,
    ) -> StoreResult<Page<RouteRecord, Uuid>> {
        let mut conn = self.begin(DB::BEGIN_SNAPSHOT, Scope::Org(org)).await?;
        let ws = fetch_workspace(&mut conn, org, workspace).await?;
        let rows: Vec<RouteRow> = match scenario {
            None => {
                sqlx::query_as(concat!(
                    select_route!(),
                    "WHERE workspace_id = $1 AND id > $2 ORDER BY id LIMIT $3"
                ))
                .bind(ws.id)
                .bind(after.unwrap_or(Uuid::nil()))
                .bind(page_limit(limit) + 1)
                .fetch_all(&mut *conn)
                .await?
            }
            Some(name) => {
                let scenario_id = scenario_id(&mut conn, ws.id, name, workspace).await?;
                sqlx::query_as(concat!(
                    select_route!(),
                    "WHERE workspace_id = $1 AND id > $2 AND scenario_id = $4 ORDER BY id LIMIT $3"
                ))
                .bind(ws.id)
                .bind(after.unwrap_or(Uuid::nil()))
                .bind(page_limit(limit) + 1)
                .bind(scenario_id)
                .fetch_all(&mut *conn)
                .await?
            }
        };
        let items = rows
            .into_iter()
            .map(RouteRow::into_record)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(items, limit, |r| r.id))
    }

    async fn update_route(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        id: Uuid,
        patch: &RoutePatch,
        expected_version: Option<i64>,
    ) -> StoreResult<RouteRecord> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = fetch_workspace(&mut tx, org, workspace).await?;
        for _ in 0..CONFLICT_RETRIES {
            let current = fetch_route(&mut tx, ws.id, id).await?.into_record()?;
            check_version(format!("route {id}"), current.version, expected_version)?;
            let spec = patch.apply(&current.spec)?;
            let now = now();
            let updated = sqlx::query(
                "UPDATE routes SET name = $1, method = $2, path = $3, match_key = $4, status = $5, headers = $6, \
                 body = $7, version = version + 1, updated_at = $8, matchers = $11, priority = $12, \
                 template = $13, realism = $14, state = $15 WHERE id = $9 AND version = $10",
            )
            .bind(spec.name.clone())
            .bind(spec.method.as_str().to_owned())
            .bind(spec.path.as_str().to_owned())
            .bind(spec.match_key())
            .bind(i32::from(spec.response.status))
            .bind(headers_json(&spec))
            .bind(spec.response.body.to_vec())
            .bind(now)
            .bind(id)
            .bind(current.version)
            .bind(matchers_json(&spec))
            .bind(i32::from(spec.priority))
            .bind(i32::from(spec.response.template))
            .bind(realism_json(&spec))
            .bind(state_json(&spec))
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error(e, || route_clash(0, &spec)))?;
            if DB::rows_affected(&updated) == 0 {
                continue;
            }
            check_workspace_limits(&mut tx, ws.id).await?;
            append::<DB>(
                &mut tx,
                Change::new(org, "route.update", format!("workspace/{}/route/{id}", ws.slug)).workspace(ws.id).summary(json!({"before": format!("{} {} -> {}", current.spec.method, current.spec.path, current.spec.response.status), "after": format!("{} {} -> {}", spec.method, spec.path, spec.response.status)})),
            )
            .await?;
            bump_revision(&mut tx, ws.id).await?;
            tx.commit().await?;
            return Ok(RouteRecord {
                spec,
                version: current.version + 1,
                updated_at: now,
                ..current
            });
        }
        Err(contended(format!("route {id}")))
    }

    async fn delete_routes(
        &self,
        org: Uuid,
        workspace: &WorkspaceRef,
        ids: &[Uuid],
    ) -> StoreResult<u64> {
        let mut tx = self.begin(DB::BEGIN_WRITE, Scope::Org(org)).await?;
        let ws = fetch_workspace(&mut tx, org, workspace).await?;
        let mut deleted = 0;
        for id in ids {
            let done = sqlx::query("DELETE FROM routes WHERE workspace_id = $1 AND id = $2")
                .bind(ws.id)
                .bind(*id)
                .execute(&mut *tx)
                .await?;
            if DB::rows_affected(&done) == 0 {
                // Dropping the transaction rolls back the routes deleted so far.
                return Err(StoreError::NotFound(format!(
                    "route {id} in workspace '{}'",
                    ws.slug
                )));
            }
            deleted += DB::rows_affected(&done);
        }
        if deleted > 0 {
            append::<DB>(
                &mut tx,
                Change::new(org, "route.delete", format!("workspace/{}", ws.slug))
                    .workspace(ws.id)
                    .summary(
                        json!({"before": ids.iter().map(Uuid::to_string).collect::<Vec<_>>()}),
                    ),
            )
            .await?;
            bump_revision(&mut tx, ws.id).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn current_revision(&self) -> StoreResult<u64> {
        let revision: i64 = sqlx::query_scalar("SELECT revision FROM config_revision WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(to_u64(revision))
    }

    async fn load_config(&self) -> StoreResult<FullConfig> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::System).await?;
        let revision: i64 = sqlx::query_scalar("SELECT revision FROM config_revision WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let workspaces: Vec<ServingWorkspaceRow> = sqlx::query_as(
            "SELECT id, slug, active_env, env_defaults, state_epoch, require_keys FROM workspaces ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let environments: Vec<ServingEnvironmentRow> =
            sqlx::query_as("SELECT workspace_id, name, position, settings FROM environments")
                .fetch_all(&mut *tx)
                .await?;
        let deployments: Vec<ServingDeploymentRow> = sqlx::query_as(concat!(
            select_serving_deployment!(),
            "ORDER BY d.workspace_id, e.name, d.scenario_id"
        ))
        .fetch_all(&mut *tx)
        .await?;
        let personas: Vec<ServingPersonaRow> =
            sqlx::query_as(SERVING_PERSONAS).fetch_all(&mut *tx).await?;
        let mut keys_by_workspace = serving_keys::<DB>(&mut tx, None).await?;
        let routes: Vec<ServingRouteRow> = sqlx::query_as(concat!(
            select_serving_route!(),
            "ORDER BY workspace_id, id"
        ))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;

        let mut by_workspace: HashMap<Uuid, Vec<ServingRouteRow>> =
            HashMap::with_capacity(workspaces.len());
        for route in routes {
            by_workspace
                .entry(route.workspace_id)
                .or_default()
                .push(route);
        }
        let mut envs_by_workspace: HashMap<Uuid, Vec<ServingEnvironmentRow>> =
            HashMap::with_capacity(workspaces.len());
        for env in environments {
            envs_by_workspace
                .entry(env.workspace_id)
                .or_default()
                .push(env);
        }
        let mut deployed_by_workspace: HashMap<Uuid, Vec<ServingDeploymentRow>> = HashMap::new();
        for deployment in deployments {
            deployed_by_workspace
                .entry(deployment.workspace_id)
                .or_default()
                .push(deployment);
        }
        let mut personas_by_workspace: HashMap<Uuid, Vec<ServingPersonaRow>> = HashMap::new();
        for persona in personas {
            personas_by_workspace
                .entry(persona.workspace_id)
                .or_default()
                .push(persona);
        }
        let mut config = FullConfig {
            revision: to_u64(revision),
            workspaces: Vec::with_capacity(workspaces.len()),
            invalid: Vec::new(),
        };
        for ws in workspaces {
            let routes = by_workspace.remove(&ws.id).unwrap_or_default();
            let envs = envs_by_workspace.remove(&ws.id).unwrap_or_default();
            let deployed = deployed_by_workspace.remove(&ws.id).unwrap_or_default();
            let personas = personas_by_workspace.remove(&ws.id).unwrap_or_default();
            let keys = keys_by_workspace.remove(&ws.id).unwrap_or_default();
            let id = ws.id;
            match workspace_config(ws, envs, routes, deployed, personas, keys) {
                Ok(built) => config.workspaces.push(built),
                Err(error) => config.invalid.push((id, error)),
            }
        }
        Ok(config)
    }

    async fn config_changes_since(&self, revision: u64) -> StoreResult<ConfigChanges> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::System).await?;
        let current: i64 = sqlx::query_scalar("SELECT revision FROM config_revision WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let since = i64::try_from(revision).unwrap_or(i64::MAX);
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT DISTINCT workspace_id FROM change_log WHERE revision > $1 AND revision <= $2",
        )
        .bind(since)
        .bind(current)
        .fetch_all(&mut *tx)
        .await?;
        let committed_at: Option<DateTime<Utc>> = if ids.is_empty() {
            None
        } else {
            sqlx::query_scalar(
                "SELECT MIN(changed_at) FROM change_log WHERE revision > $1 AND revision <= $2",
            )
            .bind(since)
            .bind(current)
            .fetch_one(&mut *tx)
            .await?
        };
        let mut changed = Vec::with_capacity(ids.len());
        for id in ids {
            let ws: Option<ServingWorkspaceRow> = sqlx::query_as(
                "SELECT id, slug, active_env, env_defaults, state_epoch, require_keys FROM workspaces WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let config = match ws {
                None => None,
                Some(ws) => {
                    let envs: Vec<ServingEnvironmentRow> = sqlx::query_as(
                        "SELECT workspace_id, name, position, settings FROM environments WHERE workspace_id = $1",
                    )
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
                    let routes: Vec<ServingRouteRow> = sqlx::query_as(concat!(
                        select_serving_route!(),
                        "WHERE workspace_id = $1 ORDER BY id"
                    ))
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
                    let deployed: Vec<ServingDeploymentRow> = sqlx::query_as(concat!(
                        select_serving_deployment!(),
                        "WHERE d.workspace_id = $1 ORDER BY e.name, d.scenario_id"
                    ))
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
                    let personas: Vec<ServingPersonaRow> = sqlx::query_as(SERVING_PERSONAS_OF)
                        .bind(id)
                        .fetch_all(&mut *tx)
                        .await?;
                    let keys = serving_keys::<DB>(&mut tx, Some(id))
                        .await?
                        .remove(&id)
                        .unwrap_or_default();
                    Some(workspace_config(ws, envs, routes, deployed, personas, keys))
                }
            };
            changed.push((id, config));
        }
        tx.commit().await?;
        Ok(ConfigChanges {
            revision: to_u64(current),
            changed,
            committed_at,
        })
    }

    async fn change_history(&self, after: u64) -> StoreResult<ChangeHistory> {
        let mut tx = self.begin(DB::BEGIN_SNAPSHOT, Scope::System).await?;
        let pruned: i64 =
            sqlx::query_scalar("SELECT pruned_through FROM config_revision WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
        let from = to_u64(pruned).max(after);
        let entries: Vec<(i64, Uuid)> = sqlx::query_as(
            "SELECT revision, workspace_id FROM change_log WHERE revision > $1 ORDER BY revision, workspace_id",
        )
        .bind(i64::try_from(from).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(ChangeHistory {
            complete_after: from,
            entries: entries
                .into_iter()
                .map(|(rev, id)| (to_u64(rev), id))
                .collect(),
        })
    }
}

/// A workspace's serving config: each environment with its effective
/// realism. The first environment of the chain serves the working copies;
/// the others serve the versions deployed to them.
fn workspace_config(
    ws: ServingWorkspaceRow,
    mut envs: Vec<ServingEnvironmentRow>,
    rows: Vec<ServingRouteRow>,
    deployed: Vec<ServingDeploymentRow>,
    personas: Vec<ServingPersonaRow>,
    keys: Vec<ServingKeyRow>,
) -> Result<WorkspaceConfig, FieldError> {
    let mut keys_by_env: HashMap<String, Vec<mockplane_shared::keys::ApiKeyConfig>> =
        HashMap::new();
    for key in keys {
        let config = key
            .config()
            .map_err(|e| e.within(&format!("environments.{}", key.environment)))?;
        keys_by_env.entry(key.environment).or_default().push(config);
    }
    // Working copies under "", promoted versions under their environment.
    let mut personas_by_env: HashMap<String, Vec<PersonaConfig>> = HashMap::new();
    for row in personas {
        let env = row.environment.unwrap_or_default();
        let field = if env.is_empty() {
            format!("personas.{}", row.name)
        } else {
            format!("environments.{env}.personas.{}", row.name)
        };
        let persona = PersonaConfig {
            name: Slug::parse(&row.name).map_err(|e| FieldError::new(&field, e.to_string()))?,
            data: parse_persona_data(&row.data).map_err(|e| e.within(&field))?,
        };
        personas_by_env.entry(env).or_default().push(persona);
    }
    for list in personas_by_env.values_mut() {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }
    let mut working_personas = personas_by_env.remove("");
    let mut deployed_routes: HashMap<String, Vec<ConfigRoute>> = HashMap::new();
    for deployment in deployed {
        let routes = decode_content(&deployment.content).map_err(|e| {
            e.within(&format!(
                "environments.{}.deployments",
                deployment.environment
            ))
        })?;
        deployed_routes
            .entry(deployment.environment)
            .or_default()
            .extend(routes);
    }
    let slug = Slug::parse(&ws.slug).map_err(|e| FieldError::new("slug", e.to_string()))?;
    let active = Slug::parse(&ws.active_env)
        .map_err(|e| FieldError::new("active_environment", e.to_string()))?;
    let defaults =
        parse_settings(&ws.env_defaults).map_err(|e| FieldError::new("environment_defaults", e))?;
    envs.sort_by(|a, b| {
        (a.position == 0, a.position, &a.name).cmp(&(b.position == 0, b.position, &b.name))
    });
    let first = envs.iter().find(|e| e.position > 0).map(|e| e.name.clone());
    let routes = rows
        .into_iter()
        .enumerate()
        .map(|(index, row)| {
            let route_id = row.id;
            row.spec()
                .map(|spec| ConfigRoute { id: route_id, spec })
                .map_err(|e| e.within(&format!("routes[{index}]")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut routes = Some(routes);
    let environments = envs
        .into_iter()
        .map(|env| {
            let field = format!("environments.{}", env.name);
            let name =
                Slug::parse(&env.name).map_err(|e| FieldError::new(&field, e.to_string()))?;
            let settings = parse_settings(&env.settings)
                .map_err(|e| FieldError::new(format!("{field}.settings"), e))?;
            let (served, personas) = if first.as_deref() == Some(name.as_str()) {
                (
                    routes.take().unwrap_or_default(),
                    working_personas.take().unwrap_or_default(),
                )
            } else {
                (
                    deployed_routes.remove(name.as_str()).unwrap_or_default(),
                    personas_by_env.remove(name.as_str()).unwrap_or_default(),
                )
            };
            Ok(EnvironmentConfig {
                name,
                realism: settings.over(&defaults).effective().realism,
                routes: served,
                keys: keys_by_env.remove(env.name.as_str()).unwrap_or_default(),
                personas,
            })
        })
        .collect::<Result<Vec<_>, FieldError>>()?;
    let config = WorkspaceConfig {
        id: ws.id,
        slug,
        active,
        environments,
        state_epoch: to_u64(ws.state_epoch),
        require_api_keys: ws.require_keys != 0,
    };
    config.validate()?;
    Ok(config)
}

async fn insert_environment<DB>(
    conn: &mut DB::Connection,
    org: Uuid,
    workspace_id: Uuid,
    env: &EnvironmentRecord,
) -> StoreResult<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
{
    sqlx::query(
        "INSERT INTO environments (id, workspace_id, org_id, name, position, settings, version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7)",
    )
    .bind(env.id)
    .bind(workspace_id)
    .bind(org)
    .bind(env.name.to_string())
    .bind(i32::try_from(env.position).unwrap_or(i32::MAX))
    .bind(settings_json(&env.settings))
    .bind(env.created_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        db_error(e, || {
            StoreError::AlreadyExists(format!("the workspace already has an environment '{}'", env.name))
        })
    })?;
    Ok(())
}

pub(super) async fn scenario_id<DB>(
    conn: &mut DB::Connection,
    workspace_id: Uuid,
    name: &Slug,
    key: &WorkspaceRef,
) -> StoreResult<Uuid>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    sqlx::query_scalar("SELECT id FROM scenarios WHERE workspace_id = $1 AND name = $2")
        .bind(workspace_id)
        .bind(name.to_string())
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("scenario '{name}' of {key}")))
}

async fn insert_scenario<DB>(
    conn: &mut DB::Connection,
    org: Uuid,
    workspace_id: Uuid,
    new: &NewScenario,
    now: DateTime<Utc>,
) -> StoreResult<Uuid>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
{
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO scenarios (id, workspace_id, org_id, name, description, tags, version, created_at, updated_at, checks) \
         VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7, $8)",
    )
    .bind(id)
    .bind(workspace_id)
    .bind(org)
    .bind(new.name.to_string())
    .bind(new.description.clone())
    .bind(tags_json(&new.tags))
    .bind(now)
    .bind(serde_json::to_string(&new.checks).unwrap_or_else(|_| "[]".to_owned()))
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        db_error(e, || {
            StoreError::AlreadyExists(format!("the workspace already has a scenario '{}'", new.name))
        })
    })?;
    Ok(id)
}

async fn load_scenario<DB>(
    conn: &mut DB::Connection,
    workspace_id: Uuid,
    name: &Slug,
    key: &WorkspaceRef,
) -> StoreResult<ScenarioRecord>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
    let row: ScenarioRow = sqlx::query_as(concat!(
        select_scenario!(),
        "WHERE sc.workspace_id = $1 AND sc.name = $2"
    ))
    .bind(workspace_id)
    .bind(name.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("scenario '{name}' of {key}")))?;
    let mut deployments = fetch_deployments(&mut *conn, workspace_id).await?;
    let mine = deployments.remove(&row.id).unwrap_or_default();
    row.into_record(mine)
}

/// A workspace's deployments by scenario id, in chain order.
async fn fetch_deployments<DB>(
    conn: &mut DB::Connection,
    workspace_id: Uuid,
) -> StoreResult<HashMap<Uuid, Vec<DeploymentRecord>>>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    for<'q> i32: Decode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Decode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
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
pub(super) async fn fetch_version<DB>(
    conn: &mut DB::Connection,
    scenario_id: Uuid,
    scenario: &Slug,
    number: Option<u32>,
) -> StoreResult<(VersionRow, Vec<u8>)>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i32: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Decode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
{
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

async fn fetch_persona<DB>(
    conn: &mut DB::Connection,
    workspace_id: Uuid,
    name: &Slug,
    key: &WorkspaceRef,
) -> StoreResult<PersonaRecord>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Decode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Decode<'q, DB> + Type<DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
{
    let row: PersonaRow = sqlx::query_as(concat!(
        select_persona!(),
        "WHERE workspace_id = $1 AND name = $2"
    ))
    .bind(workspace_id)
    .bind(name.to_string())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("persona '{name}' of {key}")))?;
    let id = row.id;
    let mut record = row.into_record()?;
    record.served = persona_deployments::<DB>(&mut *conn, workspace_id)
        .await?
        .remove(&id)
        .unwrap_or_default();
    Ok(record)
}

/// What a persona of a workspace is served as after the first
/// environment of the chain.
#[derive(FromRow)]
struct PersonaDeploymentRow {
    persona_id: Uuid,
    name: String,
    number: i64,
}

/// What the environments after the first of the chain serve of a
/// workspace's personas: `(environment, version)` per persona, in chain
/// order.
async fn persona_deployments<DB>(
    conn: &mut DB::Connection,
    workspace_id: Uuid,
) -> StoreResult<HashMap<Uuid, Vec<(String, i64)>>>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Decode<'q, DB> + Type<DB>,
    for<'q> i64: Decode<'q, DB> + Type<DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
{
    let rows: Vec<PersonaDeploymentRow> = sqlx::query_as(
        "SELECT d.persona_id, e.name, d.number FROM persona_deployments d \
         JOIN environments e ON e.id = d.environment_id \
         WHERE d.workspace_id = $1 \
         AND NOT (e.position > 0 AND e.position = (SELECT MIN(f.position) FROM environments f \
                  WHERE f.workspace_id = e.workspace_id AND f.position > 0)) \
         ORDER BY e.position = 0, e.position, e.name",
    )
    .bind(workspace_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: HashMap<Uuid, Vec<(String, i64)>> = HashMap::new();
    for row in rows {
        out.entry(row.persona_id)
            .or_default()
            .push((row.name, row.number));
    }
    Ok(out)
}

async fn insert_persona_version<DB>(
    conn: &mut DB::Connection,
    persona_id: Uuid,
    number: i64,
    data: &str,
    now: DateTime<Utc>,
) -> StoreResult<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
{
    sqlx::query("INSERT INTO persona_versions (persona_id, number, data, created_at) VALUES ($1, $2, $3, $4)")
        .bind(persona_id)
        .bind(number)
        .bind(data.to_owned())
        .bind(now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn insert_org<DB>(
    conn: &mut DB::Connection,
    name: &str,
    now: DateTime<Utc>,
) -> StoreResult<Uuid>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
{
    let id = Uuid::now_v7();
    sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(id)
        .bind(name.to_owned())
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(|e| {
            db_error(e, || {
                StoreError::AlreadyExists(format!("an org named '{name}' already exists"))
            })
        })?;
    Ok(id)
}

async fn insert_admin_membership<DB>(
    conn: &mut DB::Connection,
    org: Uuid,
    workspace: Uuid,
    principal: Uuid,
    environment: &str,
    now: DateTime<Utc>,
) -> StoreResult<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> Uuid: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> DateTime<Utc>: Encode<'q, DB> + Type<DB>,
{
    sqlx::query(
        "INSERT INTO memberships (workspace_id, org_id, principal_id, environment, role, created_at) \
         VALUES ($1, $2, $3, $4, 'admin', $5) \
         ON CONFLICT (workspace_id, principal_id, environment) DO UPDATE SET role = 'admin'",
    )
    .bind(workspace)
    .bind(org)
    .bind(principal)
    .bind(environment.to_owned())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
