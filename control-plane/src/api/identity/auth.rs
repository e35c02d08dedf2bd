//! `AuthService`: signing in, refreshing and ending sessions, changing a
//! password, and environment tokens.

use std::time::Duration;

use chrono::Utc;
use mockplane_proto::v1;
use mockplane_proto::v1::auth_service_server::AuthService;
use mockplane_shared::model::error::parse_reason;
use tonic::{Request, Response, Status};

use super::{
    ACCESS_TOKEN_TTL, Auth, ENV_TOKEN_DEFAULT_TTL, ENV_TOKEN_MAX_TTL, invalid, new_refresh_token,
    principal_proto, store, subject,
};
use crate::api::authz::{Credential, Target, caller};
use crate::api::error::ApiError;
use crate::api::{ApiState, timestamp};
use crate::identity::jwt::EnvScope;
use crate::identity::{password, token};
use crate::store::{AccessGrant, PrincipalKind, RefreshOutcome, WorkspaceRef};

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
        let grant = self.0.public(&request)?;
        let request = request.into_inner();
        if request.email.trim().is_empty() {
            return Err(invalid("email", "is required"));
        }
        if request.password.is_empty() {
            return Err(invalid("password", "is required"));
        }
        let found = grant
            .store()
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
        grant
            .store()
            .start_session(&principal, &hash, expires)
            .await
            .map_err(store)?;
        Ok(Response::new(self.0.session(&principal, secret, expires)))
    }

    async fn refresh(
        &self,
        request: Request<v1::RefreshRequest>,
    ) -> Result<Response<v1::Session>, Status> {
        let grant = self.0.public(&request)?;
        let raw = request.into_inner().refresh_token;
        if raw.is_empty() {
            return Err(invalid("refresh_token", "is required"));
        }
        let (secret, hash, expires) = new_refresh_token();
        let principal = match grant
            .store()
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
        let grant = self.0.public(&request)?;
        let raw = request.into_inner().refresh_token;
        if raw.is_empty() {
            return Err(invalid("refresh_token", "is required"));
        }
        if grant
            .store()
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
        let grant = self.0.authenticated(&request)?;
        let caller = &grant.caller;
        // Who they are lives in their own org; where they act may be
        // another (a platform admin's --org).
        let record = grant
            .store()
            .get_principal(caller.home_org(), caller.principal.id)
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
        let grant = self.0.authenticated(&request)?;
        let caller = &grant.caller;
        let request = request.into_inner();
        if caller.principal.kind != PrincipalKind::User {
            return Err(Status::failed_precondition(
                "service accounts have no password; they use API tokens",
            ));
        }
        password::check_policy(&request.new_password)
            .map_err(|message| invalid("new_password", message))?;
        let record = grant
            .store()
            .get_principal(caller.home_org(), caller.principal.id)
            .await
            .map_err(store)?;
        let email = record.email.unwrap_or_default();
        let current = grant.store().find_login(&email).await.map_err(store)?;
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
        grant
            .store()
            .set_password(caller.home_org(), caller.principal.id, &hash)
            .await
            .map_err(store)?;
        Ok(Response::new(()))
    }

    async fn issue_environment_token(
        &self,
        request: Request<v1::IssueEnvironmentTokenRequest>,
    ) -> Result<Response<v1::EnvironmentToken>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        if caller(&request)?.acting_from.is_some() {
            // The token would name a principal the org acted in does not
            // hold; changes that need one are for the org's own people.
            return Err(Status::permission_denied(
                "environment tokens are issued in your own org only: a platform admin acting with --org cannot take one; ask an owner of the org",
            ));
        }
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
        let reason = parse_reason(
            &request.reason,
            "say why you need access (e.g. \"debugging issue #123\")",
        )
        .map_err(ApiError::from)?;
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
            .clone()
            .ok_or_else(|| Status::internal("no workspace"))?;
        let principal = grant.caller.principal.clone();
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
        grant
            .store()
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
        let grants = grant
            .store()
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
