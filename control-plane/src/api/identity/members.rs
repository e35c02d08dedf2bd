//! `MemberService`: roles per environment (memberships) and environment
//! policies.

use std::collections::BTreeSet;

use mockplane_proto::convert::parse_uuid;
use mockplane_proto::v1;
use mockplane_proto::v1::member_service_server::MemberService;
use mockplane_shared::governance::access::{self, Permission};
use tonic::{Request, Response, Status};

use super::{Members, invalid, store};
use crate::api::authz::Target;
use crate::api::error::{ApiError, missing};
use crate::api::timestamp;
use crate::store::WorkspaceRef;

#[tonic::async_trait]
impl MemberService for Members {
    async fn set_member(
        &self,
        request: Request<v1::SetMemberRequest>,
    ) -> Result<Response<v1::Member>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self
            .0
            .authorize(
                &request,
                Target::Environment(&key, &request.get_ref().environment),
            )
            .await?;
        let request = request.into_inner();
        let principal =
            parse_uuid("principal_id", &request.principal_id).map_err(ApiError::from)?;
        access::check_role_name(&request.role).map_err(ApiError::from)?;
        let record = grant
            .store()
            .set_membership(
                grant.org_id(),
                &key,
                principal,
                &request.environment,
                &request.role,
            )
            .await
            .map_err(store)?;
        Ok(Response::new(member_proto(&record)))
    }

    async fn remove_member(
        &self,
        request: Request<v1::RemoveMemberRequest>,
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
        let principal =
            parse_uuid("principal_id", &request.principal_id).map_err(ApiError::from)?;
        grant
            .store()
            .remove_membership(grant.org_id(), &key, principal, &request.environment)
            .await
            .map_err(store)?;
        Ok(Response::new(()))
    }

    async fn list_members(
        &self,
        request: Request<v1::ListMembersRequest>,
    ) -> Result<Response<v1::ListMembersResponse>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        let members = grant
            .store()
            .list_memberships(grant.org_id(), &key)
            .await
            .map_err(store)?;
        Ok(Response::new(v1::ListMembersResponse {
            members: members.iter().map(member_proto).collect(),
        }))
    }

    async fn set_policy(
        &self,
        request: Request<v1::SetPolicyRequest>,
    ) -> Result<Response<v1::Policy>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let environment = request
            .get_ref()
            .policy
            .as_ref()
            .map(|p| p.environment.clone())
            .ok_or_else(|| missing("policy"))?;
        let grant = self
            .0
            .authorize(&request, Target::Environment(&key, &environment))
            .await?;
        let policy = request
            .into_inner()
            .policy
            .ok_or_else(|| missing("policy"))?;
        let permission = Permission::parse(&policy.permission)
            .map_err(|e| invalid("policy.permission", e.message))?;
        let roles: BTreeSet<String> = policy.roles.iter().cloned().collect();
        let custom = grant
            .store()
            .list_roles(grant.org_id())
            .await
            .map_err(store)?;
        let catalog = access::RoleCatalog::new(custom.into_iter().map(|r| (r.name, r.permissions)));
        access::check_policy(permission, &roles, &catalog)
            .map_err(|e| ApiError::from(e.within("policy")))?;
        let record = grant
            .store()
            .set_policy(grant.org_id(), &key, &environment, permission, &roles)
            .await
            .map_err(store)?;
        Ok(Response::new(policy_proto(&record)))
    }

    async fn delete_policy(
        &self,
        request: Request<v1::DeletePolicyRequest>,
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
        let permission =
            Permission::parse(&request.permission).map_err(|e| invalid("permission", e.message))?;
        grant
            .store()
            .delete_policy(grant.org_id(), &key, &request.environment, permission)
            .await
            .map_err(store)?;
        Ok(Response::new(()))
    }

    async fn list_policies(
        &self,
        request: Request<v1::ListPoliciesRequest>,
    ) -> Result<Response<v1::ListPoliciesResponse>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        let policies = grant
            .store()
            .list_policies(grant.org_id(), &key)
            .await
            .map_err(store)?;
        Ok(Response::new(v1::ListPoliciesResponse {
            policies: policies.iter().map(policy_proto).collect(),
        }))
    }
}

fn member_proto(record: &crate::store::MembershipRecord) -> v1::Member {
    v1::Member {
        principal_id: record.principal_id.to_string(),
        principal_name: record.principal_name.clone(),
        environment: record.environment.clone(),
        role: record.role.clone(),
        create_time: Some(timestamp(record.created_at)),
    }
}

fn policy_proto(record: &crate::store::PolicyRecord) -> v1::Policy {
    v1::Policy {
        environment: record.environment.clone(),
        permission: record.permission.as_str().to_owned(),
        roles: record.roles.iter().cloned().collect(),
        create_time: Some(timestamp(record.created_at)),
    }
}
