//! `UserService`: the org's users, service accounts and their API tokens.

use chrono::Utc;
use mockplane_proto::convert::parse_uuid;
use mockplane_proto::v1;
use mockplane_proto::v1::user_service_server::UserService;
use mockplane_shared::governance::access::{self, OrgRole};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::{Users, invalid, store};
use crate::api::authz::{Grant, Target};
use crate::api::error::ApiError;
use crate::api::{decode_page_token, encode_page_token, etag, page_size, parse_etag, timestamp};
use crate::identity::{password, token};
use crate::store::{NewPrincipal, PrincipalKind, PrincipalPatch, PrincipalRecord, StoreError};

pub fn principal_proto(record: &PrincipalRecord) -> v1::Principal {
    v1::Principal {
        id: record.id.to_string(),
        kind: record.kind.as_str().to_owned(),
        email: record.email.clone().unwrap_or_default(),
        name: record.name.clone(),
        org_role: record.org_role.as_str().to_owned(),
        disabled: record.disabled,
        etag: etag(record.version),
        create_time: Some(timestamp(record.created_at)),
        update_time: Some(timestamp(record.updated_at)),
        must_change_password: record.must_change_password,
    }
}

fn org_role(raw: &str, field: &str) -> Result<OrgRole, Status> {
    if raw.is_empty() {
        return Ok(OrgRole::Member);
    }
    OrgRole::parse(raw).map_err(|e| invalid(field, e.message))
}

fn display_name(raw: &str, field: &str) -> Result<String, Status> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(invalid(
            field,
            "give 1 to 100 characters, without control characters",
        ));
    }
    Ok(name.to_owned())
}

pub fn check_email(raw: &str) -> Result<String, Status> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && (domain == "localhost"
                    || domain.split('.').filter(|label| !label.is_empty()).count() >= 2
                        && !domain.starts_with('.')
                        && !domain.ends_with('.'))
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid {
        return Err(invalid(
            "email",
            format!("{raw:?} is not an e-mail address"),
        ));
    }
    Ok(email)
}

/// Only an owner makes or unmakes owners.
fn check_grants_org_role(caller: OrgRole, role: OrgRole) -> Result<(), Status> {
    if role == OrgRole::Owner && caller != OrgRole::Owner {
        return Err(Status::permission_denied(
            "only an owner can make another principal owner",
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl UserService for Users {
    async fn create_user(
        &self,
        request: Request<v1::CreateUserRequest>,
    ) -> Result<Response<v1::CreateUserResponse>, Status> {
        let grant = self.0.authorize(&request, Target::Org).await?;
        let request = request.into_inner();
        let email = check_email(&request.email)?;
        let name = if request.name.trim().is_empty() {
            email.clone()
        } else {
            display_name(&request.name, "name")?
        };
        let role = org_role(&request.org_role, "org_role")?;
        check_grants_org_role(grant.caller.principal.org_role, role)?;
        let (password, one_time) = if request.password.is_empty() {
            let generated = password::generate();
            (generated.clone(), generated)
        } else {
            password::check_policy(&request.password)
                .map_err(|message| invalid("password", message))?;
            (request.password, String::new())
        };
        let hash = tokio::task::spawn_blocking(move || password::hash(&password))
            .await
            .map_err(|_| Status::internal("hashing failed"))?
            .map_err(|e| Status::internal(e.to_string()))?;
        let record = grant
            .store()
            .create_principal(
                grant.org_id(),
                NewPrincipal {
                    kind: PrincipalKind::User,
                    email: Some(email),
                    name,
                    org_role: role,
                    password_hash: Some(hash),
                    must_change_password: !one_time.is_empty(),
                },
            )
            .await
            .map_err(store)?;
        Ok(Response::new(v1::CreateUserResponse {
            user: Some(principal_proto(&record)),
            one_time_password: one_time,
        }))
    }

    async fn create_service_account(
        &self,
        request: Request<v1::CreateServiceAccountRequest>,
    ) -> Result<Response<v1::Principal>, Status> {
        let grant = self.0.authorize(&request, Target::Org).await?;
        let request = request.into_inner();
        access::check_role_name(&request.name).map_err(|e| {
            invalid(
                "name",
                e.message.replace("role name", "service account name"),
            )
        })?;
        let role = org_role(&request.org_role, "org_role")?;
        check_grants_org_role(grant.caller.principal.org_role, role)?;
        let record = grant
            .store()
            .create_principal(
                grant.org_id(),
                NewPrincipal {
                    kind: PrincipalKind::Service,
                    email: None,
                    name: request.name,
                    org_role: role,
                    password_hash: None,
                    must_change_password: false,
                },
            )
            .await
            .map_err(store)?;
        Ok(Response::new(principal_proto(&record)))
    }

    async fn get_principal(
        &self,
        request: Request<v1::GetPrincipalRequest>,
    ) -> Result<Response<v1::Principal>, Status> {
        let grant = self.0.authenticated(&request)?;
        let caller = &grant.caller;
        let id = parse_uuid("id", &request.get_ref().id).map_err(ApiError::from)?;
        let record = grant
            .store()
            .get_principal(caller.org_id(), id)
            .await
            .map_err(store)?;
        Ok(Response::new(principal_proto(&record)))
    }

    async fn list_principals(
        &self,
        request: Request<v1::ListPrincipalsRequest>,
    ) -> Result<Response<v1::ListPrincipalsResponse>, Status> {
        let grant = self.0.authenticated(&request)?;
        let caller = &grant.caller;
        let request = request.into_inner();
        let kind = match request.kind.as_str() {
            "" => None,
            "user" => Some(PrincipalKind::User),
            "service" => Some(PrincipalKind::Service),
            other => {
                return Err(invalid(
                    "kind",
                    format!("{other:?} is not a kind; use user, service or leave it empty"),
                ));
            }
        };
        let after = decode_page_token("principals", &request.page_token)
            .and_then(|after| after.map(|raw| parse_uuid("page_token", &raw)).transpose())
            .map_err(ApiError::from)?;
        let page = grant
            .store()
            .list_principals(
                caller.org_id(),
                kind,
                after,
                page_size(request.page_size, 100, 1000),
            )
            .await
            .map_err(store)?;
        Ok(Response::new(v1::ListPrincipalsResponse {
            principals: page.items.iter().map(principal_proto).collect(),
            next_page_token: page
                .next
                .map(|id| encode_page_token("principals", &id.to_string()))
                .unwrap_or_default(),
        }))
    }

    async fn update_principal(
        &self,
        request: Request<v1::UpdatePrincipalRequest>,
    ) -> Result<Response<v1::Principal>, Status> {
        let grant = self.0.authorize(&request, Target::Org).await?;
        let request = request.into_inner();
        let id = parse_uuid("id", &request.id).map_err(ApiError::from)?;
        let mut patch = PrincipalPatch {
            disabled: request.disabled,
            ..Default::default()
        };
        if !request.org_role.is_empty() {
            let role = org_role(&request.org_role, "org_role")?;
            check_grants_org_role(grant.caller.principal.org_role, role)?;
            patch.org_role = Some(role);
        }
        if !request.name.is_empty() {
            patch.name = Some(display_name(&request.name, "name")?);
        }
        let target = grant
            .store()
            .get_principal(grant.org_id(), id)
            .await
            .map_err(store)?;
        check_grants_org_role(grant.caller.principal.org_role, target.org_role)?;
        let expected = parse_etag(&request.etag).map_err(ApiError::from)?;
        let record = grant
            .store()
            .update_principal(grant.org_id(), id, &patch, expected)
            .await
            .map_err(store)?;
        Ok(Response::new(principal_proto(&record)))
    }

    async fn delete_principal(
        &self,
        request: Request<v1::DeletePrincipalRequest>,
    ) -> Result<Response<()>, Status> {
        let grant = self.0.authorize(&request, Target::Org).await?;
        let id = parse_uuid("id", &request.get_ref().id).map_err(ApiError::from)?;
        let target = grant
            .store()
            .get_principal(grant.org_id(), id)
            .await
            .map_err(store)?;
        check_grants_org_role(grant.caller.principal.org_role, target.org_role)?;
        grant
            .store()
            .delete_principal(grant.org_id(), id)
            .await
            .map_err(store)?;
        Ok(Response::new(()))
    }

    async fn create_api_token(
        &self,
        request: Request<v1::CreateApiTokenRequest>,
    ) -> Result<Response<v1::CreateApiTokenResponse>, Status> {
        let (grant, principal) = self
            .token_owner(&request, &request.get_ref().principal_id)
            .await?;
        let request = request.into_inner();
        let name = if request.name.is_empty() {
            "token".to_owned()
        } else {
            display_name(&request.name, "name")?
        };
        if request.ttl_days > 3650 {
            return Err(invalid("ttl_days", "at most 3650 days; 0 for no expiry"));
        }
        let expires_at = (request.ttl_days > 0)
            .then(|| Utc::now() + chrono::Duration::days(i64::from(request.ttl_days)));
        let secret = token::generate();
        let record = grant
            .store()
            .create_api_token(
                grant.org_id(),
                principal,
                &name,
                &token::hash(&secret),
                expires_at,
            )
            .await
            .map_err(store)?;
        Ok(Response::new(v1::CreateApiTokenResponse {
            token: Some(token_proto(&record)),
            secret,
        }))
    }

    async fn list_api_tokens(
        &self,
        request: Request<v1::ListApiTokensRequest>,
    ) -> Result<Response<v1::ListApiTokensResponse>, Status> {
        let (grant, principal) = self
            .token_owner(&request, &request.get_ref().principal_id)
            .await?;
        let tokens = grant
            .store()
            .list_api_tokens(grant.org_id(), principal)
            .await
            .map_err(store)?;
        Ok(Response::new(v1::ListApiTokensResponse {
            tokens: tokens.iter().map(token_proto).collect(),
        }))
    }

    async fn revoke_api_token(
        &self,
        request: Request<v1::RevokeApiTokenRequest>,
    ) -> Result<Response<()>, Status> {
        let id = parse_uuid("id", &request.get_ref().id).map_err(ApiError::from)?;
        let record = match self.0.locate(&request)?.api_token(id).await {
            Ok(record) => record,
            // Whether another's token exists is for those who may manage it.
            Err(StoreError::NotFound(what)) => {
                self.0.authorize(&request, Target::Org).await?;
                return Err(store(StoreError::NotFound(what)));
            }
            Err(other) => return Err(store(other)),
        };
        let (grant, _) = self
            .token_owner(&request, &record.principal_id.to_string())
            .await?;
        grant
            .store()
            .revoke_api_token(grant.org_id(), id)
            .await
            .map_err(store)?;
        Ok(Response::new(()))
    }
}

impl Users {
    /// Whose tokens a request may touch: the caller's own with any
    /// credential but an environment token, another principal's with
    /// `user.manage`.
    async fn token_owner<T>(
        &self,
        request: &Request<T>,
        raw: &str,
    ) -> Result<(Grant, Uuid), Status> {
        let target = if raw.is_empty() {
            None
        } else {
            Some(parse_uuid("principal_id", raw).map_err(ApiError::from)?)
        };
        let grant = self.0.authorize(request, Target::TokensOf(target)).await?;
        let target = target.unwrap_or(grant.caller.principal.id);
        if target != grant.caller.principal.id {
            // Exists in the caller's org, or NotFound.
            grant
                .store()
                .get_principal(grant.org_id(), target)
                .await
                .map_err(store)?;
        }
        Ok((grant, target))
    }
}

fn token_proto(record: &crate::store::TokenRecord) -> v1::ApiToken {
    v1::ApiToken {
        id: record.id.to_string(),
        principal_id: record.principal_id.to_string(),
        name: record.name.clone(),
        create_time: Some(timestamp(record.created_at)),
        expire_time: record.expires_at.map(timestamp),
        last_use_time: record.last_used_at.map(timestamp),
    }
}

#[cfg(test)]
mod tests {
    use super::check_email;

    #[test]
    fn emails_need_a_local_part_and_a_domain() {
        assert_eq!(check_email(" Ann@Acme.IO ").unwrap(), "ann@acme.io");
        assert_eq!(check_email("admin@localhost").unwrap(), "admin@localhost");
        for bad in [
            "@localhost",
            "@acme.io",
            "a@.",
            "a@acme.",
            "a@.acme",
            "a@acme",
            "a b@acme.io",
            "no-at-sign",
        ] {
            assert!(check_email(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
