//! `mockplane.v1.WorkspaceService`.

use mockplane_proto::convert::{env_settings, parse_env_settings};
use mockplane_proto::v1;
use mockplane_proto::v1::workspace_service_server::WorkspaceService;
use mockplane_shared::model::environment::parse_env_name;
use mockplane_shared::model::workspace::{
    check_chain, parse_description, parse_slug, parse_workspace_name,
};
use mockplane_shared::{FieldError, NewWorkspace, WorkspacePatch};
use tonic::{Request, Response, Status};

use super::authz::Target;
use super::environments::{settings_mask_paths, settings_patch};
use super::error::{ApiError, missing};
use super::{
    ApiState, decode_page_token, encode_page_token, etag, mask_paths, page_size, parse_etag,
    timestamp,
};
use crate::store::{WorkspaceRecord, WorkspaceRef};
use mockplane_shared::governance::access;

const PAGE_KIND: &str = "workspaces";

pub struct Workspaces(pub ApiState);

pub fn to_proto(record: &WorkspaceRecord) -> v1::Workspace {
    v1::Workspace {
        id: record.id.to_string(),
        slug: record.slug.to_string(),
        name: record.name.clone(),
        description: record.description.clone(),
        etag: etag(record.version),
        route_count: u32::try_from(record.route_count).unwrap_or(u32::MAX),
        create_time: Some(timestamp(record.created_at)),
        update_time: Some(timestamp(record.updated_at)),
        active_environment: record.active_environment.to_string(),
        promotion_chain: record.chain().steps().to_vec(),
        allow_promotion_skips: record.allow_promotion_skips,
        environment_defaults: Some(env_settings(&record.environment_defaults)),
        environments: record
            .environments
            .iter()
            .map(|e| e.name.to_string())
            .collect(),
        require_api_keys: record.require_api_keys,
    }
}

#[tonic::async_trait]
impl WorkspaceService for Workspaces {
    async fn create_workspace(
        &self,
        request: Request<v1::CreateWorkspaceRequest>,
    ) -> Result<Response<v1::Workspace>, Status> {
        let grant = self.0.authorize(&request, Target::Org).await?;
        if !grant.caller.principal.org_role.is_admin() {
            let org = grant
                .store()
                .get_org(grant.org_id())
                .await
                .map_err(ApiError::from)?;
            if !org.settings.members_create_workspaces() {
                return Err(Status::permission_denied(format!(
                    "org '{}' lets only its owners and admins create workspaces (settings.members_create_workspaces is false)",
                    org.name
                )));
            }
        }
        let workspace = request
            .into_inner()
            .workspace
            .ok_or_else(|| missing("workspace"))?;
        let new = parse_new(&workspace)
            .map_err(|e| e.within("workspace"))
            .map_err(ApiError::from)?;
        let record = grant
            .store()
            .create_workspace(grant.org_id(), new, grant.caller.member_id())
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(to_proto(&record)))
    }

    async fn get_workspace(
        &self,
        request: Request<v1::GetWorkspaceRequest>,
    ) -> Result<Response<v1::Workspace>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        let record = grant
            .workspace
            .ok_or_else(|| Status::internal("no workspace"))?;
        Ok(Response::new(to_proto(&record)))
    }

    async fn list_workspaces(
        &self,
        request: Request<v1::ListWorkspacesRequest>,
    ) -> Result<Response<v1::ListWorkspacesResponse>, Status> {
        let grant = self.0.authenticated(&request)?;
        let caller = &grant.caller;
        // Org admins see every workspace; others those they have a role in.
        let visible_to = (!caller.principal.org_role.is_admin()).then_some(caller.principal.id);
        let request = request.into_inner();
        let after = decode_page_token(PAGE_KIND, &request.page_token).map_err(ApiError::from)?;
        let page = grant
            .store()
            .list_workspaces(
                caller.org_id(),
                visible_to,
                after.as_deref(),
                page_size(request.page_size, 50, 1000),
            )
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(v1::ListWorkspacesResponse {
            workspaces: page.items.iter().map(to_proto).collect(),
            next_page_token: page
                .next
                .map(|slug| encode_page_token(PAGE_KIND, &slug))
                .unwrap_or_default(),
        }))
    }

    async fn update_workspace(
        &self,
        request: Request<v1::UpdateWorkspaceRequest>,
    ) -> Result<Response<v1::Workspace>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let patch = parse_patch(request.get_ref()).map_err(ApiError::from)?;
        let expected = parse_etag(&request.get_ref().etag).map_err(ApiError::from)?;
        let needed = access::workspace_update_permissions(access::WorkspaceChange {
            defaults: patch.environment_defaults.as_ref(),
            serving: patch.slug.is_some()
                || patch.active_environment.is_some()
                || patch.promotion_chain.is_some()
                || patch.allow_promotion_skips.is_some(),
            api_keys: patch.require_api_keys.is_some(),
        });
        let grant = self
            .0
            .authorize_only(&request, Target::Workspace(&key), &needed)
            .await?;
        let record = grant
            .store()
            .update_workspace(grant.org_id(), &key, &patch, expected)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(to_proto(&record)))
    }

    async fn reset_state(
        &self,
        request: Request<v1::ResetStateRequest>,
    ) -> Result<Response<v1::ResetStateResponse>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        // State lives in every environment's routes.
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        let state_epoch = grant
            .store()
            .reset_state(grant.org_id(), &key)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(v1::ResetStateResponse { state_epoch }))
    }

    async fn delete_workspace(
        &self,
        request: Request<v1::DeleteWorkspaceRequest>,
    ) -> Result<Response<()>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let expected = parse_etag(&request.get_ref().etag).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        grant
            .store()
            .delete_workspace(grant.org_id(), &key, expected)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(()))
    }
}

/// Every input field of a new workspace (the codec has refused the
/// output-only ones): the slug, name and description, and what
/// UpdateWorkspace could change right after, so that a workspace is born
/// protected instead of open for a moment.
fn parse_new(workspace: &v1::Workspace) -> Result<NewWorkspace, FieldError> {
    let mut new = NewWorkspace::parse(&workspace.slug, &workspace.name, &workspace.description)?;
    if !workspace.active_environment.is_empty() {
        new.active_environment = Some(
            parse_env_name(&workspace.active_environment)
                .map_err(|e| FieldError::new("active_environment", e.message))?,
        );
    }
    if !workspace.promotion_chain.is_empty() {
        let chain = workspace
            .promotion_chain
            .iter()
            .enumerate()
            .map(|(index, name)| {
                parse_env_name(name)
                    .map_err(|e| FieldError::new(format!("promotion_chain[{index}]"), e.message))
            })
            .collect::<Result<Vec<_>, _>>()?;
        check_chain(&chain)?;
        new.promotion_chain = Some(chain);
    }
    new.allow_promotion_skips = workspace.allow_promotion_skips;
    new.require_api_keys = workspace.require_api_keys;
    new.environment_defaults = parse_env_settings(workspace.environment_defaults.as_ref())
        .map_err(|e| e.within("environment_defaults"))?;
    new.check()?;
    Ok(new)
}

fn parse_patch(request: &v1::UpdateWorkspaceRequest) -> Result<WorkspacePatch, FieldError> {
    let mut allowed: Vec<String> = [
        "slug",
        "name",
        "description",
        "active_environment",
        "promotion_chain",
        "allow_promotion_skips",
        "require_api_keys",
    ]
    .map(str::to_owned)
    .to_vec();
    allowed.extend(settings_mask_paths("environment_defaults"));
    let allowed: Vec<&str> = allowed.iter().map(String::as_str).collect();
    let paths = mask_paths(request.update_mask.as_ref(), &allowed)?;
    let values = request
        .patch
        .as_ref()
        .ok_or_else(|| FieldError::new("patch", "is required"))?;
    let mut patch = WorkspacePatch {
        environment_defaults: settings_patch(
            &paths,
            "environment_defaults",
            values.environment_defaults.as_ref(),
        )?,
        ..Default::default()
    };
    for path in paths {
        match path {
            "slug" => patch.slug = Some(parse_slug(&values.slug).map_err(|e| e.within("patch"))?),
            "name" => {
                let name = parse_workspace_name(&values.name).map_err(|e| e.within("patch"))?;
                if name.is_empty() {
                    return Err(FieldError::new("patch.name", "must not be empty"));
                }
                patch.name = Some(name);
            }
            "description" => {
                patch.description =
                    Some(parse_description(&values.description).map_err(|e| e.within("patch"))?);
            }
            "active_environment" => {
                patch.active_environment = Some(
                    parse_env_name(&values.active_environment)
                        .map_err(|e| FieldError::new("patch.active_environment", e.message))?,
                );
            }
            "promotion_chain" => {
                let chain = values
                    .promotion_chain
                    .iter()
                    .enumerate()
                    .map(|(index, raw)| {
                        parse_env_name(raw).map_err(|e| {
                            FieldError::new(format!("patch.promotion_chain[{index}]"), e.message)
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                check_chain(&chain).map_err(|e| e.within("patch"))?;
                patch.promotion_chain = Some(chain);
            }
            "allow_promotion_skips" => {
                patch.allow_promotion_skips = Some(values.allow_promotion_skips);
            }
            "require_api_keys" => patch.require_api_keys = Some(values.require_api_keys),
            // mask_paths admits only the fields above and the settings,
            // parsed before the loop.
            _ => {}
        }
    }
    Ok(patch)
}
