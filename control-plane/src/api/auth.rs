//! Authentication for the gRPC API: one tower layer in front of every
//! service. It looks up what the method declares ([`super::authz`]),
//! refuses a method that declares nothing, resolves the bearer token to a
//! [`Caller`] and puts both in the request's extensions, where the handler's
//! authorization call reads them. A request without a valid token never
//! reaches a handler.
//!
//! Tokens: `mpt_…` API tokens (hashed in the store), access and
//! environment tokens this control plane signed (JWT, HS256), and JWTs from
//! configured identity providers (OIDC).

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::Status;
use tower::{Layer, Service};

use super::authz::{Caller, Credential, Declared, Rule, rule_for};
use crate::identity::jwt::{self, Signer};
use crate::identity::oidc::{OidcError, OidcVerifier};
use crate::identity::token;
use crate::store::audit::{AUDIT_CONTEXT, AuditContext};
use crate::store::{Store, guard};
use mockplane_shared::governance::access::OrgRole;

/// Services outside the API's rules: health checks and reflection, for
/// probes and tools, and the config stream, which nodes open with node
/// tokens that the stream checks itself (`api/discovery.rs`).
const INFRASTRUCTURE_PREFIXES: [&str; 4] = [
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/mockplane.v1.ConfigDiscovery/",
];

/// Metadata a caller states a reason in.
pub const REASON_HEADER: &str = "x-mockplane-reason";
/// Metadata naming the org a platform admin acts in (`--org`), by name or
/// id; the caller's own org when absent.
pub const ORG_HEADER: &str = "x-mockplane-org";
/// Metadata naming the request; made up when the caller sends none, and
/// returned in the response. Audit events carry it.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

fn audit_context(caller: &Caller, request_id: &str) -> AuditContext {
    let reason = caller
        .reason
        .clone()
        .unwrap_or_else(|| match &caller.credential {
            Credential::EnvironmentToken { reason, .. } => reason.clone(),
            _ => String::new(),
        });
    let actor_id = format!("{}:{}", caller.principal.kind.as_str(), caller.principal.id);
    let actor = match caller.acting_from {
        Some(home) => format!(
            "{} (platform admin, of org {home})",
            caller.principal.display
        ),
        None => caller.principal.display.clone(),
    };
    AuditContext {
        actor,
        actor_id,
        credential: match &caller.credential {
            Credential::External { issuer } => format!("external ({issuer})"),
            other => other.as_str().to_owned(),
        },
        reason,
        request_id: request_id.to_owned(),
    }
}

/// What authentication needs.
pub struct Authenticator {
    pub store: Arc<dyn Store>,
    pub signer: Arc<Signer>,
    pub oidc: Option<Arc<OidcVerifier>>,
}

#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Authenticate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticate {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Authenticate<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S, B> Service<http::Request<B>> for Authenticate<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        if INFRASTRUCTURE_PREFIXES
            .iter()
            .any(|prefix| path.starts_with(prefix))
        {
            return Box::pin(self.inner.call(request));
        }
        let rule = rule_for(path);
        // The service that was polled ready is the one to call; leave a
        // fresh clone in its place for the next request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            let Some(rule) = rule else {
                return Ok(Status::permission_denied(
                    "this method declares no permission, so it is refused",
                )
                .into_http());
            };
            request.extensions_mut().insert(Declared(rule));
            let request_id = request_id(request.headers());
            if rule == Rule::Public {
                // No caller yet: what such a request writes (a login, a
                // logout) names its actor itself.
                let context = AuditContext {
                    actor_id: "anonymous".into(),
                    actor: "anonymous".into(),
                    credential: "none".into(),
                    reason: String::new(),
                    request_id: request_id.clone(),
                };
                let mut response = AUDIT_CONTEXT
                    .scope(context, guard::scope(inner.call(request)))
                    .await?;
                if let Ok(value) = request_id.parse() {
                    response.headers_mut().insert(REQUEST_ID_HEADER, value);
                }
                return Ok(response);
            }
            match auth.authenticate(request.headers()).await {
                Ok(caller) if awaits_new_password(&caller, request.uri().path()) => {
                    Ok(Status::failed_precondition(
                        "you signed in with a one-time password: change it first \
                         (`mockplane user passwd`, or AuthService/ChangePassword), then log in again",
                    )
                    .into_http())
                }
                Ok(caller) => {
                    let context = audit_context(&caller, &request_id);
                    request.extensions_mut().insert(caller);
                    // The store's writes in this request record this caller.
                    let mut response = AUDIT_CONTEXT
                        .scope(context, guard::scope(inner.call(request)))
                        .await?;
                    if let Ok(value) = request_id.parse() {
                        response.headers_mut().insert(REQUEST_ID_HEADER, value);
                    }
                    Ok(response)
                }
                Err(status) => Ok(status.into_http()),
            }
        })
    }
}

/// What a session opened with a one-time password may still do.
const WHILE_PASSWORD_EXPIRED: [&str; 3] = [
    "/mockplane.v1.AuthService/ChangePassword",
    "/mockplane.v1.AuthService/WhoAmI",
    "/mockplane.v1.AuthService/Logout",
];

/// A password session (not an API token, nor an identity provider's token)
/// of someone whose password is a one-time one, calling anything else than
/// changing it. Such a session cannot get an environment token either.
fn awaits_new_password(caller: &Caller, path: &str) -> bool {
    caller.principal.must_change_password
        && matches!(caller.credential, Credential::AccessToken)
        && !WHILE_PASSWORD_EXPIRED.contains(&path)
}

impl Authenticator {
    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Caller, Status> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(Status::unauthenticated(
                "missing credentials: send `authorization: Bearer <token>` (the CLI reads MOCKPLANE_TOKEN or the session of `mockplane login`)",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("the authorization header must be `Bearer <token>`")
            })?;
        let reason = reason(headers)?;
        let (principal, credential) = if token.starts_with(token::TOKEN_PREFIX) {
            match self.store.find_token(&token::hash(token)).await {
                Ok(Some(principal)) => (principal, Credential::ApiToken),
                Ok(None) => {
                    return Err(Status::unauthenticated(
                        "the API token is not valid: it is unknown, revoked or expired, or its owner is disabled",
                    ));
                }
                Err(error) => return Err(store_trouble(error)),
            }
        } else if !jwt::looks_like_jwt(token) {
            return Err(Status::unauthenticated(
                "the token is neither an API token (mpt_…) nor a JWT",
            ));
        } else if let Some(oidc) = self.oidc.as_ref().filter(|o| o.is_external_issuer(token)) {
            let identity = oidc.verify(token).await.map_err(|error| match error {
                OidcError::Unavailable { .. } => Status::unavailable(error.to_string()),
                _ => Status::unauthenticated(error.to_string()),
            })?;
            let email = identity.email.clone().ok_or_else(|| {
                Status::unauthenticated(format!(
                    "the token from {} carries no e-mail, so it cannot be matched to a user",
                    identity.issuer
                ))
            })?;
            match self.store.find_login(&email).await {
                Ok(Some((principal, _))) => (
                    principal,
                    Credential::External {
                        issuer: identity.issuer,
                    },
                ),
                Ok(None) => {
                    return Err(Status::unauthenticated(format!(
                        "no active user has the e-mail {email}; an org admin must invite you first"
                    )));
                }
                Err(error) => return Err(store_trouble(error)),
            }
        } else {
            let claims = self
                .signer
                .verify(token)
                .map_err(|e| Status::unauthenticated(e.to_string()))?;
            let id = claims
                .sub
                .strip_prefix("user:")
                .or_else(|| claims.sub.strip_prefix("service:"))
                .and_then(|id| uuid::Uuid::try_parse(id).ok())
                .ok_or_else(|| Status::unauthenticated("the token's subject is not valid"))?;
            let principal = match self.store.find_principal(claims.org, id).await {
                Ok(Some(principal)) => principal,
                Ok(None) => {
                    return Err(Status::unauthenticated(
                        "the token's user no longer exists or is disabled",
                    ));
                }
                Err(error) => return Err(store_trouble(error)),
            };
            let credential = match claims.env {
                Some(scope) => Credential::EnvironmentToken {
                    workspace: scope.workspace,
                    environment: scope.environment,
                    reason: scope.reason,
                },
                None => Credential::AccessToken,
            };
            (principal, credential)
        };
        let mut caller = Caller {
            principal,
            credential,
            reason,
            acting_from: None,
        };
        self.act_in_named_org(headers, &mut caller).await?;
        Ok(caller)
    }

    /// Moves a platform admin into the org `x-mockplane-org` names, with
    /// an owner's role there; anyone else may name only their own org.
    async fn act_in_named_org(
        &self,
        headers: &http::HeaderMap,
        caller: &mut Caller,
    ) -> Result<(), Status> {
        let Some(value) = headers.get(ORG_HEADER) else {
            return Ok(());
        };
        let named = value
            .to_str()
            .map_err(|_| Status::invalid_argument(format!("{ORG_HEADER} must be text (ASCII)")))?
            .trim();
        if named.is_empty() {
            return Ok(());
        }
        let found = self.store.find_org(named).await.map_err(store_trouble)?;
        let own = caller.principal.org_id;
        if found == Some(own) {
            return Ok(());
        }
        if !caller.principal.platform_admin {
            // Whether the org exists is not theirs to learn.
            return Err(Status::permission_denied(format!(
                "only a platform admin acts in another org ({ORG_HEADER} / --org names '{named}')"
            )));
        }
        if matches!(caller.credential, Credential::EnvironmentToken { .. }) {
            return Err(Status::permission_denied(
                "an environment token acts in its own workspace only; drop --org",
            ));
        }
        let target = found.ok_or_else(|| Status::not_found(format!("org '{named}' not found")))?;
        caller.acting_from = Some(own);
        caller.principal.org_id = target;
        caller.principal.org_role = OrgRole::Owner;
        Ok(())
    }
}

fn store_trouble(error: crate::store::StoreError) -> Status {
    tracing::warn!(%error, "could not check credentials");
    Status::unavailable("could not check credentials right now; try again shortly")
}

/// The reason a caller stated, if any: 8 to 500 characters of text.
fn reason(headers: &http::HeaderMap) -> Result<Option<String>, Status> {
    let Some(value) = headers.get(REASON_HEADER) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Status::invalid_argument(format!("{REASON_HEADER} must be text (ASCII)")))?
        .trim();
    if text.chars().count() < 8 || text.chars().count() > 500 {
        return Err(Status::invalid_argument(format!(
            "{REASON_HEADER} must be 8 to 500 characters saying why, e.g. \"debugging issue #123\""
        )));
    }
    Ok(Some(text.to_owned()))
}
