//! Identity and access services: signing in (`AuthService`), the org's
//! users, service accounts and API tokens (`UserService`), custom roles
//! (`RoleService`), and roles per environment with environment policies
//! (`MemberService`). Authorization goes through [`ApiState::authorize`]
//! like every other service.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use mockplane_proto::convert::parse_uuid;
use mockplane_proto::v1;
use mockplane_proto::v1::auth_service_server::AuthService;
use mockplane_proto::v1::member_service_server::MemberService;
use mockplane_proto::v1::role_service_server::RoleService;
use mockplane_proto::v1::user_service_server::UserService;
use mockplane_shared::FieldError;
use mockplane_shared::access::{
    self, BUILTIN_ROLES, OrgRole, Permission, Reach, builtin_permissions, check_custom_role,
};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::authz::{Credential, Target, caller};
use super::error::{ApiError, missing};
use super::{
    ApiState, decode_page_token, encode_page_token, etag, page_size, parse_etag, timestamp,
};
use crate::identity::jwt::EnvScope;
use crate::identity::{password, token};
use crate::store::{
    AccessGrant, NewPrincipal, PrincipalKind, PrincipalPatch, PrincipalRecord, RefreshOutcome,
    RoleRecord, StoreError, WorkspaceRef,
};

/// How long an access token from Login or Refresh lives.
pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a refresh token lives unused.
pub const REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
pub const ENV_TOKEN_DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
pub const ENV_TOKEN_MAX_TTL: Duration = Duration::from_secs(3600);

pub struct Auth(pub ApiState);
pub struct Users(pub ApiState);
pub struct Roles(pub ApiState);
pub struct Members(pub ApiState);

fn invalid(field: &str, message: impl Into<String>) -> Status {
    ApiError::from(FieldError::new(field, message)).into()
}

fn store(error: StoreError) -> Status {
    ApiError::from(error).into()
}

fn subject(kind: PrincipalKind, id: Uuid) -> String {
    format!("{}:{id}", kind.as_str())
}

/// A new refresh token: the secret for the caller, its hash for the store,
/// and when it expires.
fn new_refresh_token() -> (String, String, chrono::DateTime<Utc>) {
    let secret = token::generate();
    let hash = token::hash(&secret);
    let expires = Utc::now()
        + chrono::Duration::from_std(REFRESH_TOKEN_TTL).unwrap_or(chrono::Duration::days(30));
    (secret, hash, expires)
}

impl ApiState {
    /// The answer to a login or refresh: a fresh access token for
    /// `principal`, with the refresh token the store now keeps.
    fn session(
        &self,
        principal: &crate::store::Principal,
        refresh_token: String,
        refresh_expires: chrono::DateTime<Utc>,
    ) -> v1::Session {
        let (access_token, claims) = self.signer.issue(
            subject(principal.kind, principal.id),
            principal.org_id,
            None,
            ACCESS_TOKEN_TTL,
        );
        v1::Session {
            access_token,
            access_token_expire_time: Some(prost_types::Timestamp {
                seconds: claims.exp,
                nanos: 0,
            }),
            refresh_token,
            refresh_token_expire_time: Some(timestamp(refresh_expires)),
            must_change_password: principal.must_change_password,
        }
    }
}

#[tonic::async_trait]
impl AuthService for Auth {
    async fn login(
        &self,
        request: Request<v1::LoginRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        let request = request.into_inner();
        if request.email.trim().is_empty() {
            return Err(invalid("email", "is required"));
        }
        if request.password.is_empty() {
            return Err(invalid("password", "is required"));
        }
        let found = self
            .0
            .store
            .find_login(request.email.trim())
            .await
            .map_err(store)?;
        // One answer for every failure, so the answer does not tell which
        // e-mails exist.
        let refused = || Status::unauthenticated("wrong e-mail or password");
        let (principal, hash) = found.ok_or_else(refused)?;
        let hash = hash.ok_or_else(refused)?;
        let password = request.password.clone();
        let ok = tokio::task::spawn_blocking(move || password::verify(&password, &hash))
            .await
            .unwrap_or(false);
        if !ok {
            return Err(refused());
        }
        let (secret, hash, expires) = new_refresh_token();
        self.0
            .store
            .start_session(&principal, &hash, expires)
            .await
            .map_err(store)?;
        Ok(Response::new(self.0.session(&principal, secret, expires)))
    }

    async fn refresh(
        &self,
        request: Request<v1::RefreshRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        let raw = request.into_inner().refresh_token;
        if raw.is_empty() {
            return Err(invalid("refresh_token", "is required"));
        }
        let (secret, hash, expires) = new_refresh_token();
        let principal = match self
            .0
            .store
            .use_refresh_token(&token::hash(&raw), (&hash, expires))
            .await
            .map_err(store)?
        {
            RefreshOutcome::Used { principal, .. } => principal,
            RefreshOutcome::Unknown => {
                return Err(Status::unauthenticated(
                    "the refresh token is not valid; log in again",
                ));
            }
            RefreshOutcome::Expired => {
                return Err(Status::unauthenticated(
                    "the refresh token has expired; log in again",
                ));
            }
            RefreshOutcome::Revoked => {
                return Err(Status::unauthenticated(
                    "this session was ended (a logout, a password change, or a reused refresh token); log in again",
                ));
            }
            RefreshOutcome::Reused => {
                return Err(Status::unauthenticated(
                    "this refresh token was already used, so every token of its session is now revoked; log in again",
                ));
            }
        };
        Ok(Response::new(self.0.session(&principal, secret, expires)))
    }

    async fn logout(&self, request: Request<v1::LogoutRequest>) -> Result<Response<()>, Status> {
        let raw = request.into_inner().refresh_token;
        if raw.is_empty() {
            return Err(invalid("refresh_token", "is required"));
        }
        if self
            .0
            .store
            .end_session(&token::hash(&raw))
            .await
            .map_err(store)?
        {
            Ok(Response::new(()))
        } else {
            Err(Status::unauthenticated(
                "the refresh token is not valid, so there is no session to end",
            ))
        }
    }

    async fn who_am_i(
        &self,
        request: Request<v1::WhoAmIRequest>,
    ) -> Result<Response<v1::WhoAmIResponse>, Status> {
        let caller = caller(&request)?;
        let record = self
            .0
            .store
            .get_principal(caller.org_id(), caller.principal.id)
            .await
            .map_err(store)?;
        let (workspace, environment) = match &caller.credential {
            Credential::EnvironmentToken {
                workspace,
                environment,
                ..
            } => (workspace.to_string(), environment.clone()),
            _ => (String::new(), String::new()),
        };
        Ok(Response::new(v1::WhoAmIResponse {
            principal: Some(principal_proto(&record)),
            org_id: caller.org_id().to_string(),
            credential: caller.credential.as_str().to_owned(),
            workspace,
            environment,
        }))
    }

    async fn change_password(
        &self,
        request: Request<v1::ChangePasswordRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        if caller.principal.kind != PrincipalKind::User {
            return Err(Status::failed_precondition(
                "service accounts have no password; they use API tokens",
            ));
        }
        password::check_policy(&request.new_password)
            .map_err(|message| invalid("new_password", message))?;
        let record = self
            .0
            .store
            .get_principal(caller.org_id(), caller.principal.id)
            .await
            .map_err(store)?;
        let email = record.email.unwrap_or_default();
        let current = self.0.store.find_login(&email).await.map_err(store)?;
        if let Some((_, Some(hash))) = current {
            let given = request.current_password.clone();
            let ok = tokio::task::spawn_blocking(move || password::verify(&given, &hash))
                .await
                .unwrap_or(false);
            if !ok {
                return Err(Status::permission_denied("the current password is wrong"));
            }
        }
        let new = request.new_password;
        let hash = tokio::task::spawn_blocking(move || password::hash(&new))
            .await
            .map_err(|_| Status::internal("hashing failed"))?
            .map_err(|e| Status::internal(e.to_string()))?;
        self.0
            .store
            .set_password(caller.org_id(), caller.principal.id, &hash)
            .await
            .map_err(store)?;
        Ok(Response::new(()))
    }

    async fn issue_environment_token(
        &self,
        request: Request<v1::IssueEnvironmentTokenRequest>,
    ) -> Result<Response<v1::EnvironmentToken>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        if matches!(
            caller(&request)?.credential,
            Credential::EnvironmentToken { .. }
        ) {
            return Err(Status::permission_denied(
                "an environment token cannot issue another; use your own credentials",
            ));
        }
        let grant = self
            .0
            .authorize(
                &request,
                Target::Environment(&key, &request.get_ref().environment),
            )
            .await?;
        let request = request.into_inner();
        let reason = request.reason.trim().to_owned();
        let length = reason.chars().count();
        if !(8..=500).contains(&length) {
            return Err(invalid(
                "reason",
                "say why you need access, in 8 to 500 characters (e.g. \"debugging issue #123\")",
            ));
        }
        let ttl = match request.ttl_seconds {
            0 => ENV_TOKEN_DEFAULT_TTL,
            s if u64::from(s) > ENV_TOKEN_MAX_TTL.as_secs() => {
                return Err(invalid(
                    "ttl_seconds",
                    format!(
                        "at most {} seconds; ask for a new token when it runs out",
                        ENV_TOKEN_MAX_TTL.as_secs()
                    ),
                ));
            }
            s => Duration::from_secs(u64::from(s)),
        };
        let workspace = grant
            .workspace
            .ok_or_else(|| Status::internal("no workspace"))?;
        let principal = grant.caller.principal;
        let (token, claims) = self.0.signer.issue(
            subject(principal.kind, principal.id),
            principal.org_id,
            Some(EnvScope {
                workspace: workspace.id,
                environment: request.environment.clone(),
                reason: reason.clone(),
            }),
            ttl,
        );
        let expires_at = chrono::DateTime::from_timestamp(claims.exp, 0).unwrap_or_else(Utc::now);
        self.0
            .store
            .record_access(
                principal.org_id,
                workspace.id,
                &AccessGrant {
                    principal_id: principal.id,
                    environment: request.environment,
                    reason,
                    token_id: claims.jti,
                    granted_at: Utc::now(),
                    expires_at,
                },
            )
            .await
            .map_err(store)?;
        Ok(Response::new(v1::EnvironmentToken {
            token,
            expire_time: Some(timestamp(expires_at)),
        }))
    }

    async fn list_environment_access(
        &self,
        request: Request<v1::ListEnvironmentAccessRequest>,
    ) -> Result<Response<v1::ListEnvironmentAccessResponse>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        let grants = self
            .0
            .store
            .list_access(grant.org_id(), &key, 500)
            .await
            .map_err(store)?;
        Ok(Response::new(v1::ListEnvironmentAccessResponse {
            grants: grants
                .into_iter()
                .map(|g| v1::EnvironmentAccess {
                    principal_id: g.principal_id.to_string(),
                    environment: g.environment,
                    reason: g.reason,
                    grant_time: Some(timestamp(g.granted_at)),
                    expire_time: Some(timestamp(g.expires_at)),
                })
                .collect(),
        }))
    }
}

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

fn check_email(raw: &str) -> Result<String, Status> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') || domain == "localhost"
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
        let record = self
            .0
            .store
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
        let record = self
            .0
            .store
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
        let caller = caller(&request)?;
        let id = parse_uuid("id", &request.get_ref().id).map_err(ApiError::from)?;
        let record = self
            .0
            .store
            .get_principal(caller.org_id(), id)
            .await
            .map_err(store)?;
        Ok(Response::new(principal_proto(&record)))
    }

    async fn list_principals(
        &self,
        request: Request<v1::ListPrincipalsRequest>,
    ) -> Result<Response<v1::ListPrincipalsResponse>, Status> {
        let caller = caller(&request)?;
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
        let page = self
            .0
            .store
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
        let target = self
            .0
            .store
            .get_principal(grant.org_id(), id)
            .await
            .map_err(store)?;
        check_grants_org_role(grant.caller.principal.org_role, target.org_role)?;
        let expected = parse_etag(&request.etag).map_err(ApiError::from)?;
        let record = self
            .0
            .store
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
        let target = self
            .0
            .store
            .get_principal(grant.org_id(), id)
            .await
            .map_err(store)?;
        check_grants_org_role(grant.caller.principal.org_role, target.org_role)?;
        self.0
            .store
            .delete_principal(grant.org_id(), id)
            .await
            .map_err(store)?;
        Ok(Response::new(()))
    }

    async fn create_api_token(
        &self,
        request: Request<v1::CreateApiTokenRequest>,
    ) -> Result<Response<v1::CreateApiTokenResponse>, Status> {
        let principal = self
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
        let record = self
            .0
            .store
            .create_api_token(
                principal.0,
                principal.1,
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
        let (org, principal) = self
            .token_owner(&request, &request.get_ref().principal_id)
            .await?;
        let tokens = self
            .0
            .store
            .list_api_tokens(org, principal)
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
        let caller = caller(&request)?;
        let id = parse_uuid("id", &request.get_ref().id).map_err(ApiError::from)?;
        let record = match self.0.store.get_api_token(caller.org_id(), id).await {
            Ok(record) => record,
            // Whether another's token exists is for those who may manage it.
            Err(StoreError::NotFound(what)) => {
                self.0.authorize(&request, Target::Org).await?;
                return Err(store(StoreError::NotFound(what)));
            }
            Err(other) => return Err(store(other)),
        };
        let (org, _) = self
            .token_owner(&request, &record.principal_id.to_string())
            .await?;
        self.0
            .store
            .revoke_api_token(org, id)
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
    ) -> Result<(Uuid, Uuid), Status> {
        let caller = caller(request)?;
        if matches!(caller.credential, Credential::EnvironmentToken { .. }) {
            return Err(Status::permission_denied(
                "an environment token cannot manage API tokens; use your own credentials",
            ));
        }
        let target = if raw.is_empty() {
            caller.principal.id
        } else {
            parse_uuid("principal_id", raw).map_err(ApiError::from)?
        };
        if target == caller.principal.id {
            return Ok((caller.org_id(), target));
        }
        let grant = self.0.authorize(request, Target::Org).await?;
        // Exists in the caller's org, or NotFound.
        self.0
            .store
            .get_principal(grant.org_id(), target)
            .await
            .map_err(store)?;
        Ok((grant.org_id(), target))
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
        let record = self
            .0
            .store
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
        let caller = caller(&request)?;
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
        let custom = self
            .0
            .store
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
                let paths = super::mask_paths(
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
        let record = self
            .0
            .store
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
        self.0
            .store
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
        let record = self
            .0
            .store
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
        self.0
            .store
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
        let members = self
            .0
            .store
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
        let custom = self
            .0
            .store
            .list_roles(grant.org_id())
            .await
            .map_err(store)?;
        let catalog = access::RoleCatalog::new(custom.into_iter().map(|r| (r.name, r.permissions)));
        access::check_policy(permission, &roles, &catalog)
            .map_err(|e| ApiError::from(e.within("policy")))?;
        let record = self
            .0
            .store
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
        self.0
            .store
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
        let policies = self
            .0
            .store
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
