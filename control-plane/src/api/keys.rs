//! `mockplane.v1.ApiKeyService`: the data-plane API keys of a workspace.
//!
//! Every key is checked where it acts: in the one environment it opens.
//! Normal keys need `api_key.manage` there, test keys `test_key.create`;
//! environments that require a reason (prod by default) take both only
//! from an environment token for them.

use chrono::Utc;
use mockplane_proto::v1;
use mockplane_proto::v1::api_key_service_server::ApiKeyService;
use mockplane_shared::governance::access::Permission;
use mockplane_shared::model::environment::parse_env_name;
use mockplane_shared::model::keys::{TestKeyLimits, check_key_life, hash_hex, parse_key_name};
use mockplane_shared::{FieldError, Slug};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::authz::Target;
use super::error::{ApiError, missing};
use super::{ApiState, timestamp};
use crate::store::{ApiKeyRecord, NewApiKey, NewTestKey, StoreError, WorkspaceRef};

pub struct ApiKeys(pub ApiState);

/// The limits test keys are made under: the documented defaults.
pub const TEST_KEY_LIMITS: TestKeyLimits = TestKeyLimits::DEFAULT;

pub fn to_proto(record: &ApiKeyRecord, now: chrono::DateTime<Utc>) -> v1::ApiKey {
    v1::ApiKey {
        id: record.id.to_string(),
        workspace_id: record.workspace_id.to_string(),
        environment: record.environment.clone(),
        name: record.name.clone(),
        hint: record.hint.clone(),
        test: record.test,
        reason: record.reason.clone(),
        created_by: record
            .created_by
            .map(|id| id.to_string())
            .unwrap_or_default(),
        create_time: Some(timestamp(record.created_at)),
        expire_time: record.expires_at.map(timestamp),
        last_used_time: record.last_used_at.map(timestamp),
        expired: record.is_expired(now),
    }
}

fn environment_name(raw: &str) -> Result<Slug, ApiError> {
    if raw.is_empty() {
        return Err(missing("environment"));
    }
    parse_env_name(raw)
        .map_err(|e| FieldError::new("environment", e.message))
        .map_err(ApiError::from)
}

fn key_id(raw: &str) -> Result<Uuid, ApiError> {
    if raw.is_empty() {
        return Err(missing("id"));
    }
    Uuid::try_parse(raw)
        .map_err(|_| FieldError::new("id", format!("{raw:?} is not a key id (a UUID)")).into())
}

#[tonic::async_trait]
impl ApiKeyService for ApiKeys {
    async fn create_api_key(
        &self,
        request: Request<v1::CreateApiKeyRequest>,
    ) -> Result<Response<v1::CreateApiKeyResponse>, Status> {
        let body = request.get_ref();
        let key = WorkspaceRef::parse(&body.workspace).map_err(ApiError::from)?;
        let environment = environment_name(&body.environment)?;
        let name = parse_key_name(&body.name).map_err(ApiError::from)?;
        let ttl = check_key_life(body.ttl_seconds, body.test, &body.reason, &TEST_KEY_LIMITS)
            .map_err(ApiError::from)?;
        let needed = if body.test {
            Permission::TestKeyCreate
        } else {
            Permission::ApiKeyManage
        };
        let grant = self
            .0
            .authorize_only(
                &request,
                Target::Environment(&key, environment.as_str()),
                &[needed],
            )
            .await?;
        let body = request.into_inner();
        let secret = crate::keys::generate();
        let now = Utc::now();
        let expires_at =
            ttl.map(|seconds| now + chrono::Duration::seconds(i64::try_from(seconds).unwrap_or(0)));
        let record = grant
            .store()
            .create_api_key(
                grant.org_id(),
                &key,
                NewApiKey {
                    environment: environment.to_string(),
                    name,
                    key_hash: hash_hex(&secret),
                    hint: crate::keys::hint(&secret),
                    expires_at,
                    created_by: Some(grant.caller.principal.id),
                    test: body.test.then(|| NewTestKey {
                        reason: body.reason.trim().to_owned(),
                        max_active: TEST_KEY_LIMITS.max_active,
                    }),
                },
            )
            .await
            .map_err(ApiError::from)?;
        tracing::info!(
            key = %record.id,
            workspace = %record.workspace_id,
            environment = %record.environment,
            test = record.test,
            principal = %grant.caller.principal.id,
            "API key created"
        );
        Ok(Response::new(v1::CreateApiKeyResponse {
            key: Some(to_proto(&record, now)),
            secret,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<v1::ListApiKeysRequest>,
    ) -> Result<Response<v1::ListApiKeysResponse>, Status> {
        let body = request.get_ref();
        let key = WorkspaceRef::parse(&body.workspace).map_err(ApiError::from)?;
        let environment = if body.environment.is_empty() {
            None
        } else {
            Some(environment_name(&body.environment)?)
        };
        let grant = match &environment {
            Some(env) => {
                self.0
                    .authorize(&request, Target::Environment(&key, env.as_str()))
                    .await?
            }
            None => self.0.authorize(&request, Target::Workspace(&key)).await?,
        };
        let mut keys = grant
            .store()
            .list_api_keys(grant.org_id(), &key, environment.as_ref().map(Slug::as_str))
            .await
            .map_err(ApiError::from)?;
        // A workspace-wide list shows the environments whose keys the
        // caller may read.
        if environment.is_none() {
            keys.retain(|k| grant.environments.contains(&k.environment));
        }
        let now = Utc::now();
        Ok(Response::new(v1::ListApiKeysResponse {
            keys: keys.iter().map(|k| to_proto(k, now)).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<v1::RevokeApiKeyRequest>,
    ) -> Result<Response<()>, Status> {
        let body = request.get_ref();
        let key = WorkspaceRef::parse(&body.workspace).map_err(ApiError::from)?;
        let id = key_id(&body.id)?;
        let found = match self.0.locate(&request)?.api_key(&key, id).await {
            Ok(found) => found,
            Err(StoreError::NotFound(what)) => {
                // Say the key does not exist only to who may see the
                // workspace; others learn that the workspace does not.
                self.0
                    .authorize_only(&request, Target::Workspace(&key), &[])
                    .await?;
                return Err(ApiError::from(StoreError::NotFound(what)).into());
            }
            Err(other) => return Err(ApiError::from(other).into()),
        };
        let needed = if found.test {
            Permission::TestKeyCreate
        } else {
            Permission::ApiKeyManage
        };
        let grant = self
            .0
            .authorize_only(
                &request,
                Target::Environment(&key, &found.environment),
                &[needed],
            )
            .await?;
        grant
            .store()
            .revoke_api_key(grant.org_id(), &key, id)
            .await
            .map_err(ApiError::from)?;
        tracing::info!(
            key = %id,
            workspace = %found.workspace_id,
            environment = %found.environment,
            principal = %grant.caller.principal.id,
            "API key revoked"
        );
        Ok(Response::new(()))
    }
}
