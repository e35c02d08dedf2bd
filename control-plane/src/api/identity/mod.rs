//! Identity and access services: signing in (`AuthService`), the org's
//! users, service accounts and API tokens (`UserService`), custom roles
//! (`RoleService`), and roles per environment with environment policies
//! (`MemberService`). Authorization goes through [`ApiState::authorize`]
//! like every other service.

use std::time::Duration;

use chrono::Utc;
use mockplane_shared::FieldError;
use tonic::Status;
use uuid::Uuid;

use crate::api::ApiState;
use crate::api::error::ApiError;
use crate::identity::token;
use crate::store::{PrincipalKind, StoreError};

/// How long an access token from Login or Refresh lives.
pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a refresh token lives unused.
pub const REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
pub const ENV_TOKEN_DEFAULT_TTL: Duration = Duration::from_secs(15 * 60);
pub const ENV_TOKEN_MAX_TTL: Duration = Duration::from_secs(3600);

mod auth;
mod members;
mod roles;
mod users;

pub use users::{check_email, principal_proto};

pub struct Auth(pub ApiState);
pub struct Users(pub ApiState);
pub struct Roles(pub ApiState);
pub struct Members(pub ApiState);

pub(super) fn invalid(field: &str, message: impl Into<String>) -> Status {
    ApiError::from(FieldError::new(field, message)).into()
}

pub(super) fn store(error: StoreError) -> Status {
    ApiError::from(error).into()
}

pub(super) fn subject(kind: PrincipalKind, id: Uuid) -> String {
    format!("{}:{id}", kind.as_str())
}

/// A new refresh token: the secret for the caller, its hash for the store,
/// and when it expires.
pub(super) fn new_refresh_token() -> (String, String, chrono::DateTime<Utc>) {
    let secret = token::generate();
    let hash = token::hash(&secret);
    let expires = Utc::now()
        + chrono::Duration::from_std(REFRESH_TOKEN_TTL).unwrap_or(chrono::Duration::days(30));
    (secret, hash, expires)
}
