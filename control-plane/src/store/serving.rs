//! What nodes serve: the config at one revision, and what changed since.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mockplane_shared::model::persona::{PersonaConfig, parse_persona_data};
use mockplane_shared::{ConfigRoute, EnvironmentConfig, FieldError, Slug, WorkspaceConfig};
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Type};
use uuid::Uuid;

use super::keys::ServingKeyRow;
use super::routes::{ServingRouteRow, select_serving_route};
use super::scenarios::decode_content;
use super::tx::{Scope, SqlStore, to_u64};
use super::workspaces::parse_settings;
use super::{ChangeHistory, ConfigChanges, Dialect, FullConfig, StoreResult};

macro_rules! select_serving_deployment {
    () => {
        "SELECT d.workspace_id, e.name AS environment, v.content FROM deployments d \
         JOIN environments e ON e.id = d.environment_id \
         JOIN scenario_versions v ON v.id = d.version_id "
    };
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
    let mut keys_by_env: HashMap<String, Vec<mockplane_shared::model::keys::ApiKeyConfig>> =
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
            let effective = settings.over(&defaults).effective();
            Ok(EnvironmentConfig {
                name,
                realism: effective.realism,
                routes: served,
                keys: keys_by_env.remove(env.name.as_str()).unwrap_or_default(),
                personas,
                limits: effective.limits,
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

/// What nodes serve: the config at one revision, and what changed since.
#[async_trait]
pub trait ServingStore: Send + Sync {
    /// The latest committed config revision.
    async fn current_revision(&self) -> StoreResult<u64>;
    /// Everything nodes serve, at one revision.
    async fn load_config(&self) -> StoreResult<FullConfig>;
    /// What changed after `revision`, at one later revision.
    async fn config_changes_since(&self, revision: u64) -> StoreResult<ConfigChanges>;
    /// The change log after `revision` (or as far back as it is kept).
    async fn change_history(&self, after: u64) -> StoreResult<ChangeHistory>;
}

#[async_trait]
impl<DB> ServingStore for SqlStore<DB>
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
        let mut keys_by_workspace = SqlStore::<DB>::serving_keys(&mut tx, None).await?;
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
        let pruned: i64 =
            sqlx::query_scalar("SELECT pruned_through FROM config_revision WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?;
        let since = i64::try_from(revision).unwrap_or(i64::MAX);
        // Behind what the change log still holds (retention deleted the
        // rows in between): every workspace, and the caller starts over.
        let complete = since >= pruned;
        let ids: Vec<Uuid> = if complete {
            sqlx::query_scalar(
                "SELECT DISTINCT workspace_id FROM change_log WHERE revision > $1 AND revision <= $2",
            )
            .bind(since)
            .bind(current)
            .fetch_all(&mut *tx)
            .await?
        } else {
            sqlx::query_scalar("SELECT id FROM workspaces ORDER BY id")
                .fetch_all(&mut *tx)
                .await?
        };
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
                    let keys = SqlStore::<DB>::serving_keys(&mut tx, Some(id))
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
            complete,
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
