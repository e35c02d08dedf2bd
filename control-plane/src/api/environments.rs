//! `mockplane.v1.EnvironmentService`, and the environment parts of a
//! workspace on the wire.

use mockplane_proto::convert::{effective_settings, env_settings, parse_env_settings};
use mockplane_proto::v1;
use mockplane_proto::v1::environment_service_server::EnvironmentService;
use mockplane_shared::model::environment::{SettingKey, SettingsPatch, parse_env_name};
use mockplane_shared::{FieldError, Slug};
use tonic::{Request, Response, Status};

use super::authz::Target;
use super::error::{ApiError, missing};
use super::{ApiState, etag, mask_paths, parse_etag, timestamp};
use crate::store::{
    EnvironmentPatch, EnvironmentRecord, NewEnvironment, StoreError, WorkspaceRecord, WorkspaceRef,
};
use mockplane_shared::governance::access;

pub struct Environments(pub ApiState);

pub fn to_proto(workspace: &WorkspaceRecord, env: &EnvironmentRecord) -> v1::Environment {
    let effective = env
        .settings
        .over(&workspace.environment_defaults)
        .effective();
    v1::Environment {
        name: env.name.to_string(),
        chain_position: env.position,
        working_copies: workspace.chain().first() == Some(env.name.as_str()),
        active: workspace.active_environment == env.name,
        settings: Some(env_settings(&env.settings)),
        effective: Some(effective_settings(&effective)),
        etag: etag(env.version),
        create_time: Some(timestamp(env.created_at)),
        update_time: Some(timestamp(env.updated_at)),
    }
}

/// The update-mask paths of settings under `prefix`: the whole (`prefix`)
/// or one field (`prefix.reality_level`).
pub fn settings_mask_paths(prefix: &str) -> Vec<String> {
    std::iter::once(prefix.to_owned())
        .chain(
            SettingKey::ALL
                .iter()
                .map(|key| format!("{prefix}.{}", key.as_str())),
        )
        .collect()
}

/// The settings change the mask paths under `prefix` ask for, with values
/// from `values`; `None` when the mask names no setting.
pub fn settings_patch(
    paths: &[&str],
    prefix: &str,
    values: Option<&v1::EnvironmentSettings>,
) -> Result<Option<SettingsPatch>, FieldError> {
    let mut keys = Vec::new();
    for path in paths {
        if *path == prefix {
            keys.extend(SettingKey::ALL);
        } else if let Some(key) = path
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(SettingKey::parse)
        {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Ok(None);
    }
    let values = parse_env_settings(values).map_err(|e| e.within(&format!("patch.{prefix}")))?;
    Ok(Some(SettingsPatch { values, keys }))
}

fn parse_name(raw: &str, field: &str) -> Result<Slug, ApiError> {
    if raw.is_empty() {
        return Err(missing(field));
    }
    parse_env_name(raw)
        .map_err(|e| FieldError::new(field, e.message))
        .map_err(ApiError::from)
}

fn pick(record: &WorkspaceRecord, name: &Slug) -> Result<v1::Environment, ApiError> {
    record
        .environment(name.as_str())
        .map(|env| to_proto(record, env))
        .ok_or_else(|| {
            ApiError::Store(StoreError::NotFound(format!(
                "environment '{name}' of workspace '{}'",
                record.slug
            )))
        })
}

#[tonic::async_trait]
impl EnvironmentService for Environments {
    async fn list_environments(
        &self,
        request: Request<v1::ListEnvironmentsRequest>,
    ) -> Result<Response<v1::ListEnvironmentsResponse>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        let record = grant
            .store()
            .get_workspace(grant.org_id(), &key)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(v1::ListEnvironmentsResponse {
            environments: record
                .environments
                .iter()
                .map(|env| to_proto(&record, env))
                .collect(),
        }))
    }

    async fn get_environment(
        &self,
        request: Request<v1::GetEnvironmentRequest>,
    ) -> Result<Response<v1::Environment>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self
            .0
            .authorize(
                &request,
                Target::Environment(&key, &request.get_ref().environment),
            )
            .await?;
        let request = request.into_inner();
        let name = parse_name(&request.environment, "environment")?;
        let record = grant
            .store()
            .get_workspace(grant.org_id(), &key)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pick(&record, &name)?))
    }

    async fn create_environment(
        &self,
        request: Request<v1::CreateEnvironmentRequest>,
    ) -> Result<Response<v1::Environment>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let env = request
            .get_ref()
            .environment
            .clone()
            .ok_or_else(|| missing("environment"))?;
        let name = parse_name(&env.name, "environment.name")?;
        let settings = parse_env_settings(env.settings.as_ref())
            .map_err(|e| e.within("environment.settings"))
            .map_err(ApiError::from)?;
        let needed = access::environment_create_permissions(&settings, env.chain_position > 0);
        let grant = self
            .0
            .authorize_only(&request, Target::NewEnvironment(&key), &needed)
            .await?;
        let record = grant
            .store()
            .create_environment(
                grant.org_id(),
                &key,
                NewEnvironment {
                    name: name.clone(),
                    settings,
                    position: env.chain_position,
                },
                grant.caller.member_id(),
            )
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pick(&record, &name)?))
    }

    async fn update_environment(
        &self,
        request: Request<v1::UpdateEnvironmentRequest>,
    ) -> Result<Response<v1::Environment>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let request_ref = request.get_ref();
        let name = parse_name(&request_ref.environment, "environment")?;
        let mut allowed = vec!["name".to_owned()];
        allowed.extend(settings_mask_paths("settings"));
        let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
        let paths =
            mask_paths(request_ref.update_mask.as_ref(), &allowed).map_err(ApiError::from)?;
        let values = request_ref.patch.as_ref().ok_or_else(|| missing("patch"))?;
        let mut patch = EnvironmentPatch {
            settings: settings_patch(&paths, "settings", values.settings.as_ref())
                .map_err(ApiError::from)?,
            ..Default::default()
        };
        if paths.contains(&"name") {
            patch.name = Some(parse_name(&values.name, "patch.name")?);
        }
        let expected = parse_etag(&request_ref.etag).map_err(ApiError::from)?;
        let needed =
            access::environment_update_permissions(patch.settings.as_ref(), patch.name.is_some());
        let grant = self
            .0
            .authorize_only(
                &request,
                Target::Environment(&key, &request.get_ref().environment),
                &needed,
            )
            .await?;
        let record = grant
            .store()
            .update_environment(grant.org_id(), &key, &name, &patch, expected)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pick(
            &record,
            patch.name.as_ref().unwrap_or(&name),
        )?))
    }

    async fn delete_environment(
        &self,
        request: Request<v1::DeleteEnvironmentRequest>,
    ) -> Result<Response<()>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self
            .0
            .authorize(
                &request,
                Target::Environment(&key, &request.get_ref().environment),
            )
            .await?;
        let request = request.into_inner();
        let name = parse_name(&request.environment, "environment")?;
        let expected = parse_etag(&request.etag).map_err(ApiError::from)?;
        grant
            .store()
            .delete_environment(grant.org_id(), &key, &name, expected)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(()))
    }
}
