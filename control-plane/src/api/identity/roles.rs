//! `RoleService`: the built-in roles and the org's custom roles.

use std::collections::BTreeSet;

use mockplane_proto::v1;
use mockplane_proto::v1::role_service_server::RoleService;
use mockplane_shared::governance::access::{
    BUILTIN_ROLES, Permission, Reach, builtin_permissions, check_custom_role,
};
use tonic::{Request, Response, Status};

use super::{Roles, invalid, store};
use crate::api::authz::Target;
use crate::api::error::{ApiError, missing};
use crate::api::{etag, parse_etag};
use crate::store::RoleRecord;

fn parse_permissions(raw: &[String]) -> Result<BTreeSet<Permission>, Status> {
    raw.iter()
        .enumerate()
        .map(|(index, name)| {
            Permission::parse(name)
                .map_err(|e| invalid(&format!("permissions[{index}]"), e.message))
        })
        .collect()
}

fn role_proto(record: &RoleRecord, builtin: bool) -> v1::Role {
    v1::Role {
        name: record.name.clone(),
        description: record.description.clone(),
        permissions: record
            .permissions
            .iter()
            .map(|p| p.as_str().to_owned())
            .collect(),
        builtin,
        etag: if builtin {
            String::new()
        } else {
            etag(record.version)
        },
    }
}

fn check_description(raw: &str) -> Result<String, Status> {
    if raw.chars().count() > 500 {
        return Err(invalid("description", "at most 500 characters"));
    }
    Ok(raw.trim().to_owned())
}

#[tonic::async_trait]
impl RoleService for Roles {
    async fn create_role(
        &self,
        request: Request<v1::CreateRoleRequest>,
    ) -> Result<Response<v1::Role>, Status> {
        let grant = self.0.authorize(&request, Target::Org).await?;
        let role = request.into_inner().role.ok_or_else(|| missing("role"))?;
        let permissions = parse_permissions(&role.permissions)?;
        check_custom_role(&role.name, &permissions).map_err(ApiError::from)?;
        let record = grant
            .store()
            .create_role(
                grant.org_id(),
                &RoleRecord {
                    name: role.name,
                    description: check_description(&role.description)?,
                    permissions,
                    version: 1,
                },
            )
            .await
            .map_err(store)?;
        Ok(Response::new(role_proto(&record, false)))
    }

    async fn list_roles(
        &self,
        request: Request<v1::ListRolesRequest>,
    ) -> Result<Response<v1::ListRolesResponse>, Status> {
        let grant = self.0.authenticated(&request)?;
        let caller = &grant.caller;
        let mut roles: Vec<v1::Role> = BUILTIN_ROLES
            .iter()
            .map(|name| {
                role_proto(
                    &RoleRecord {
                        name: (*name).to_owned(),
                        description: format!("built-in {name} role"),
                        permissions: builtin_permissions(name).unwrap_or_default(),
                        version: 0,
                    },
                    true,
                )
            })
            .collect();
        let custom = grant
            .store()
            .list_roles(caller.org_id())
            .await
            .map_err(store)?;
        roles.extend(custom.iter().map(|r| role_proto(r, false)));
        Ok(Response::new(v1::ListRolesResponse { roles }))
    }

    async fn update_role(
        &self,
        request: Request<v1::UpdateRoleRequest>,
    ) -> Result<Response<v1::Role>, Status> {
        let grant = self.0.authorize(&request, Target::Org).await?;
        let request = request.into_inner();
        // With a mask, exactly the fields it names change (so a
        // description can be cleared and permissions kept); without one,
        // the permissions are replaced and a non-empty description set.
        let (change_permissions, change_description) = match &request.update_mask {
            Some(_) => {
                let paths = crate::api::mask_paths(
                    request.update_mask.as_ref(),
                    &["permissions", "description"],
                )
                .map_err(ApiError::from)?;
                (
                    paths.contains(&"permissions"),
                    paths.contains(&"description"),
                )
            }
            None => (true, !request.description.is_empty()),
        };
        let permissions = parse_permissions(&request.permissions)?;
        check_custom_role(&request.name, &permissions).map_err(ApiError::from)?;
        let description = if change_description {
            Some(check_description(&request.description)?)
        } else {
            None
        };
        let expected = parse_etag(&request.etag).map_err(ApiError::from)?;
        let record = grant
            .store()
            .update_role(
                grant.org_id(),
                &request.name,
                description.as_deref(),
                change_permissions.then_some(&permissions),
                expected,
            )
            .await
            .map_err(store)?;
        Ok(Response::new(role_proto(&record, false)))
    }

    async fn delete_role(
        &self,
        request: Request<v1::DeleteRoleRequest>,
    ) -> Result<Response<()>, Status> {
        let grant = self.0.authorize(&request, Target::Org).await?;
        let name = request.into_inner().name;
        if BUILTIN_ROLES.contains(&name.as_str()) {
            return Err(Status::failed_precondition(format!(
                "`{name}` is a built-in role and cannot be deleted"
            )));
        }
        grant
            .store()
            .delete_role(grant.org_id(), &name)
            .await
            .map_err(store)?;
        Ok(Response::new(()))
    }

    async fn list_permissions(
        &self,
        _request: Request<v1::ListPermissionsRequest>,
    ) -> Result<Response<v1::ListPermissionsResponse>, Status> {
        Ok(Response::new(v1::ListPermissionsResponse {
            permissions: Permission::ALL
                .iter()
                .map(|p| v1::PermissionInfo {
                    name: p.as_str().to_owned(),
                    reach: match p.reach() {
                        Reach::Org => "org",
                        Reach::Workspace => "workspace",
                        Reach::AllEnvironments => "all_environments",
                        Reach::Environment => "environment",
                    }
                    .to_owned(),
                    description: p.describe().to_owned(),
                })
                .collect(),
        }))
    }
}
