//! `mockplane.v1.WorkspaceService`.

use mockplane_proto::v1;
use mockplane_proto::v1::workspace_service_server::WorkspaceService;
use mockplane_shared::workspace::{parse_description, parse_slug, parse_workspace_name};
use mockplane_shared::{FieldError, NewWorkspace, WorkspacePatch};
use tonic::{Request, Response, Status};

use super::auth::principal;
use super::error::{ApiError, missing};
use super::{
    ApiState, decode_page_token, encode_page_token, etag, mask_paths, page_size, parse_etag,
    timestamp,
};
use crate::store::{WorkspaceRecord, WorkspaceRef};

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
    }
}

#[tonic::async_trait]
impl WorkspaceService for Workspaces {
    async fn create_workspace(
        &self,
        request: Request<v1::CreateWorkspaceRequest>,
    ) -> Result<Response<v1::Workspace>, Status> {
        let caller = principal(&request)?;
        let workspace = request
            .into_inner()
            .workspace
            .ok_or_else(|| missing("workspace"))?;
        let new = NewWorkspace::parse(&workspace.slug, &workspace.name, &workspace.description)
            .map_err(|e| e.within("workspace"))
            .map_err(ApiError::from)?;
        let record = self
            .0
            .store
            .create_workspace(caller.org_id, new)
            .await
            .map_err(ApiError::from)?;
        self.0.committed();
        Ok(Response::new(to_proto(&record)))
    }

    async fn get_workspace(
        &self,
        request: Request<v1::GetWorkspaceRequest>,
    ) -> Result<Response<v1::Workspace>, Status> {
        let caller = principal(&request)?;
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let record = self
            .0
            .store
            .get_workspace(caller.org_id, &key)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(to_proto(&record)))
    }

    async fn list_workspaces(
        &self,
        request: Request<v1::ListWorkspacesRequest>,
    ) -> Result<Response<v1::ListWorkspacesResponse>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let after = decode_page_token(PAGE_KIND, &request.page_token).map_err(ApiError::from)?;
        let page = self
            .0
            .store
            .list_workspaces(
                caller.org_id,
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
        let caller = principal(&request)?;
        let request = request.into_inner();
        let key = WorkspaceRef::parse(&request.workspace).map_err(ApiError::from)?;
        let patch = parse_patch(&request).map_err(ApiError::from)?;
        let expected = parse_etag(&request.etag).map_err(ApiError::from)?;
        let record = self
            .0
            .store
            .update_workspace(caller.org_id, &key, &patch, expected)
            .await
            .map_err(ApiError::from)?;
        self.0.committed();
        Ok(Response::new(to_proto(&record)))
    }

    async fn delete_workspace(
        &self,
        request: Request<v1::DeleteWorkspaceRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = principal(&request)?;
        let request = request.into_inner();
        let key = WorkspaceRef::parse(&request.workspace).map_err(ApiError::from)?;
        let expected = parse_etag(&request.etag).map_err(ApiError::from)?;
        self.0
            .store
            .delete_workspace(caller.org_id, &key, expected)
            .await
            .map_err(ApiError::from)?;
        self.0.committed();
        Ok(Response::new(()))
    }
}

fn parse_patch(request: &v1::UpdateWorkspaceRequest) -> Result<WorkspacePatch, FieldError> {
    let paths = mask_paths(
        request.update_mask.as_ref(),
        &["slug", "name", "description"],
    )?;
    let values = request
        .patch
        .as_ref()
        .ok_or_else(|| FieldError::new("patch", "is required"))?;
    let mut patch = WorkspacePatch::default();
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
            // mask_paths admits only the fields above.
            _ => {}
        }
    }
    Ok(patch)
}
