//! The audit trail's API: list, verify, prune. The events themselves are
//! written by the store, in the transaction of each change.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use mockplane_proto::v1;
use mockplane_proto::v1::audit_service_server::AuditService;
use mockplane_shared::FieldError;
use tonic::{Request, Response, Status};

use super::authz::Target;
use super::error::ApiError;
use super::{ApiState, decode_page_token, encode_page_token, page_size, timestamp};
use crate::store::audit::{AuditFilter, AuditRecord};
use crate::store::{Store, StoreError, WorkspaceRef};

pub struct Audit(pub ApiState);

fn time(
    field: &str,
    value: Option<&prost_types::Timestamp>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|t| {
            DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
                .ok_or_else(|| ApiError::from(FieldError::new(field, "is not a valid time")))
        })
        .transpose()
}

fn to_proto(event: AuditRecord) -> v1::AuditEvent {
    v1::AuditEvent {
        seq: event.seq,
        id: event.id.to_string(),
        time: Some(timestamp(event.at)),
        actor_id: event.actor_id,
        actor: event.actor,
        credential: event.credential,
        action: event.action,
        resource: event.resource,
        workspace_id: event.workspace_id,
        environment: event.environment,
        reason: event.reason,
        summary: event.summary,
        request_id: event.request_id,
        pruned: event.pruned != 0,
        hash: event.hash,
        prev_hash: event.prev_hash,
    }
}

/// Environments whose events are never pruned: those that require a reason
/// in any workspace of the org, and those that do by default (prod), even
/// after the workspaces that had them are gone.
pub async fn protected_environments(
    store: &dyn Store,
    org: uuid::Uuid,
) -> Result<Vec<String>, StoreError> {
    let mut protected: BTreeSet<String> =
        mockplane_shared::model::environment::default_environments()
            .into_iter()
            .filter(|(_, settings)| settings.effective().reason_required)
            .map(|(name, _)| name.to_string())
            .collect();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_workspaces(org, None, after.as_deref(), 500)
            .await?;
        for ws in &page.items {
            for env in &ws.environments {
                if env
                    .settings
                    .over(&ws.environment_defaults)
                    .effective()
                    .reason_required
                {
                    protected.insert(env.name.to_string());
                }
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(protected.into_iter().collect())
}

#[tonic::async_trait]
impl AuditService for Audit {
    async fn list_audit_events(
        &self,
        request: Request<v1::ListAuditEventsRequest>,
    ) -> Result<Response<v1::ListAuditEventsResponse>, Status> {
        let grant = self.0.authorize(&request, Target::Org).await?;
        let request = request.into_inner();
        let workspace = if request.workspace.is_empty() {
            None
        } else {
            let key = WorkspaceRef::parse(&request.workspace).map_err(ApiError::from)?;
            let record = grant
                .store()
                .get_workspace(grant.org_id(), &key)
                .await
                .map_err(ApiError::from)?;
            Some(record.id)
        };
        let filter = AuditFilter {
            workspace,
            environment: request.environment,
            actor_id: request.actor_id,
            action_prefix: request.action,
            since: time("since", request.since.as_ref())?,
            until: time("until", request.until.as_ref())?,
        };
        let before = decode_page_token("audit", &request.page_token)
            .and_then(|raw| {
                raw.map(|raw| {
                    raw.parse::<i64>()
                        .map_err(|_| FieldError::new("page_token", "is not valid"))
                })
                .transpose()
            })
            .map_err(ApiError::from)?;
        let page = grant
            .store()
            .list_audit(
                grant.org_id(),
                &filter,
                before,
                page_size(request.page_size, 100, 1000),
            )
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(v1::ListAuditEventsResponse {
            events: page.items.into_iter().map(to_proto).collect(),
            next_page_token: page
                .next
                .map(|seq| encode_page_token("audit", &seq.to_string()))
                .unwrap_or_default(),
        }))
    }

    async fn verify_audit_chain(
        &self,
        request: Request<v1::VerifyAuditChainRequest>,
    ) -> Result<Response<v1::VerifyAuditChainResponse>, Status> {
        let grant = self.0.authorize(&request, Target::Org).await?;
        let verified = grant
            .store()
            .verify_audit(grant.org_id())
            .await
            .map_err(ApiError::from)?;
        let (broken_seq, problem) = verified.broken.clone().unwrap_or((0, String::new()));
        Ok(Response::new(v1::VerifyAuditChainResponse {
            ok: verified.broken.is_none(),
            events: verified.events,
            head_seq: verified.head_seq,
            head_hash: verified.head_hash,
            broken_seq,
            problem,
        }))
    }

    async fn prune_audit_events(
        &self,
        request: Request<v1::PruneAuditEventsRequest>,
    ) -> Result<Response<v1::PruneAuditEventsResponse>, Status> {
        let grant = self.0.authorize(&request, Target::Org).await?;
        let request = request.into_inner();
        let retention: Vec<(String, u32)> = if request.retention_days.is_empty() {
            self.0.audit_retention.as_ref().clone()
        } else {
            let mut pairs: Vec<(String, u32)> = request.retention_days.into_iter().collect();
            pairs.sort();
            if let Some((env, _)) = pairs.iter().find(|(_, days)| *days == 0) {
                return Err(ApiError::from(FieldError::new(
                    "retention_days",
                    format!("`{env}`: keep events at least 1 day"),
                ))
                .into());
            }
            pairs
        };
        let protected = protected_environments(grant.store(), grant.org_id())
            .await
            .map_err(ApiError::from)?;
        let outcome = grant
            .store()
            .prune_audit(grant.org_id(), &retention, &protected, request.dry_run)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(v1::PruneAuditEventsResponse {
            pruned: outcome
                .by_environment
                .into_iter()
                .map(
                    |(environment, events)| v1::prune_audit_events_response::Pruned {
                        environment,
                        events,
                    },
                )
                .collect(),
            protected: outcome.protected,
            dry_run: request.dry_run,
        }))
    }
}

/// Parses `--audit-retention`: `dev=30,test=90`.
pub fn parse_retention(raw: &str) -> Result<Vec<(String, u32)>, String> {
    let mut pairs = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (env, days) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not <environment>=<days>"))?;
        let days: u32 = days
            .trim()
            .parse()
            .ok()
            .filter(|d| *d > 0)
            .ok_or_else(|| format!("`{part}`: days must be a whole number of at least 1"))?;
        pairs.push((env.trim().to_owned(), days));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_flags_parse_and_say_what_is_wrong() {
        assert_eq!(
            parse_retention("dev=30, test=90").unwrap(),
            [("dev".to_owned(), 30), ("test".to_owned(), 90)]
        );
        assert!(parse_retention("").unwrap().is_empty());
        assert!(
            parse_retention("dev")
                .unwrap_err()
                .contains("<environment>=<days>")
        );
        assert!(parse_retention("dev=0").unwrap_err().contains("at least 1"));
        assert!(
            parse_retention("dev=x")
                .unwrap_err()
                .contains("whole number")
        );
    }
}
