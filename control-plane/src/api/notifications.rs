//! `mockplane.v1.NotificationService`: where a workspace's promotion events
//! go, and the delivery log.

use mockplane_proto::v1;
use mockplane_proto::v1::notification_service_server::NotificationService;
use mockplane_shared::FieldError;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::authz::Target;
use super::error::{ApiError, missing};
use super::{ApiState, page_size, timestamp};
use crate::store::{
    ChannelKind, ChannelRecord, DeliveryRecord, EVENTS, GitOpsConfig, NewChannel, WorkspaceRef,
};

pub struct Notifications(pub ApiState);

/// Prefix of webhook signing secrets.
pub const WEBHOOK_SECRET_PREFIX: &str = "whsec_";

fn channel_proto(record: &ChannelRecord) -> v1::NotificationChannel {
    v1::NotificationChannel {
        id: record.id.to_string(),
        kind: record.kind.as_str().to_owned(),
        target: record.target.clone(),
        events: record.events.clone(),
        gitops: record.gitops.as_ref().map(|g| v1::GitOpsSettings {
            provider: g.provider.clone(),
            api_url: g.api_url.clone(),
            repository: g.repository.clone(),
            base_branch: g.base_branch.clone(),
            path: g.path.clone(),
            token: String::new(),
        }),
        created_by: record.created_by.clone(),
        create_time: Some(timestamp(record.created_at)),
    }
}

fn delivery_proto(record: &DeliveryRecord) -> v1::Delivery {
    v1::Delivery {
        id: record.id.to_string(),
        channel: record.channel_id.to_string(),
        kind: record.kind.as_str().to_owned(),
        target: record.target.clone(),
        promotion: record
            .promotion_id
            .map(|p| p.to_string())
            .unwrap_or_default(),
        event: record.event.clone(),
        status: record.status.clone(),
        attempts: record
            .attempts
            .iter()
            .map(|a| v1::DeliveryAttempt {
                attempt: a.attempt,
                time: Some(timestamp(a.at)),
                outcome: a.outcome.clone(),
                detail: a.detail.clone(),
            })
            .collect(),
        last_error: record.last_error.clone(),
        create_time: Some(timestamp(record.created_at)),
        deliver_time: record.delivered_at.map(timestamp),
    }
}

fn http_url(field: &str, raw: &str) -> Result<(), FieldError> {
    let uri: http::Uri = raw
        .parse()
        .map_err(|_| FieldError::new(field, format!("{raw:?} is not a URL")))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(()),
        _ => Err(FieldError::new(
            field,
            format!("{raw:?} must be an http:// or https:// URL"),
        )),
    }
}

/// Checks a channel as a client sent it.
fn new_channel(wire: &v1::NotificationChannel, created_by: &str) -> Result<NewChannel, FieldError> {
    let kind = ChannelKind::parse(&wire.kind).map_err(|e| e.within("channel"))?;
    let target = wire.target.trim().to_owned();
    if target.is_empty() || target.len() > 2000 {
        return Err(FieldError::new(
            "channel.target",
            "is required, at most 2000 characters",
        ));
    }
    for (i, event) in wire.events.iter().enumerate() {
        if !EVENTS.contains(&event.as_str()) {
            return Err(FieldError::new(
                format!("channel.events[{i}]"),
                format!("`{event}` is not an event; one of: {}", EVENTS.join(", ")),
            ));
        }
    }
    let mut events = wire.events.clone();
    let mut gitops = None;
    let mut secret = String::new();
    if kind != ChannelKind::GitOps && wire.gitops.is_some() {
        return Err(FieldError::new(
            "channel.gitops",
            format!(
                "only a gitops channel takes it; this one is {}: leave it out",
                wire.kind
            ),
        ));
    }
    match kind {
        ChannelKind::Webhook => {
            http_url("channel.target", &target)?;
            secret = crate::identity::token::generate_with(WEBHOOK_SECRET_PREFIX);
        }
        ChannelKind::Email => {
            let valid = target.len() <= 254
                && target.split_once('@').is_some_and(|(user, host)| {
                    !user.is_empty() && (host.contains('.') || host == "localhost")
                })
                && !target.contains(|c: char| c.is_whitespace() || c == '<' || c == '>');
            if !valid {
                return Err(FieldError::new(
                    "channel.target",
                    format!("{target:?} is not an e-mail address"),
                ));
            }
        }
        ChannelKind::GitOps => {
            let settings = wire.gitops.as_ref().ok_or_else(|| {
                FieldError::new("channel.gitops", "is required for a gitops channel")
            })?;
            if !matches!(settings.provider.as_str(), "github" | "gitlab") {
                return Err(FieldError::new(
                    "channel.gitops.provider",
                    format!(
                        "`{}` is not a provider; github or gitlab",
                        settings.provider
                    ),
                ));
            }
            http_url("channel.gitops.api_url", &settings.api_url)?;
            if settings.repository.trim().is_empty() {
                return Err(FieldError::new(
                    "channel.gitops.repository",
                    "is required: owner/name (GitHub) or the project's id or path (GitLab)",
                ));
            }
            if settings.path.contains("..") || settings.path.starts_with('/') {
                return Err(FieldError::new(
                    "channel.gitops.path",
                    "must be a relative path inside the repository",
                ));
            }
            if events.is_empty() {
                events = vec!["completed".into()];
            }
            secret = settings.token.clone();
            gitops = Some(GitOpsConfig {
                provider: settings.provider.clone(),
                api_url: settings.api_url.clone(),
                repository: settings.repository.trim().to_owned(),
                base_branch: settings.base_branch.trim().to_owned(),
                path: settings.path.trim().to_owned(),
            });
        }
    }
    Ok(NewChannel {
        kind,
        target,
        secret,
        events,
        gitops,
        created_by: created_by.to_owned(),
    })
}

#[tonic::async_trait]
impl NotificationService for Notifications {
    async fn create_notification_channel(
        &self,
        request: Request<v1::CreateNotificationChannelRequest>,
    ) -> Result<Response<v1::CreateNotificationChannelResponse>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        let wire = request
            .get_ref()
            .channel
            .as_ref()
            .ok_or_else(|| missing("channel"))?;
        let new = new_channel(wire, &grant.caller.principal.display).map_err(ApiError::from)?;
        // Where it points, after name resolution (again at every delivery).
        let outbound = &self.0.outbound;
        let reachable = match new.kind {
            ChannelKind::Webhook => outbound
                .check_url(&new.target)
                .await
                .map_err(|why| FieldError::new("channel.target", why)),
            ChannelKind::Email => Ok(()),
            ChannelKind::GitOps => match &new.gitops {
                Some(gitops) => match outbound.check_url(&gitops.api_url).await {
                    Err(why) => Err(FieldError::new("channel.gitops.api_url", why)),
                    Ok(()) => outbound
                        .check_git(&new.target)
                        .await
                        .map_err(|why| FieldError::new("channel.target", why)),
                },
                None => Ok(()),
            },
        };
        reachable.map_err(ApiError::from)?;
        let created = grant
            .store()
            .create_channel(grant.org_id(), &key, new)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(v1::CreateNotificationChannelResponse {
            channel: Some(channel_proto(&created)),
            secret: if created.kind == ChannelKind::Webhook {
                created.secret.clone()
            } else {
                String::new()
            },
        }))
    }

    async fn list_notification_channels(
        &self,
        request: Request<v1::ListNotificationChannelsRequest>,
    ) -> Result<Response<v1::ListNotificationChannelsResponse>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        let channels = grant
            .store()
            .list_channels(grant.org_id(), &key)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(v1::ListNotificationChannelsResponse {
            channels: channels.iter().map(channel_proto).collect(),
        }))
    }

    async fn delete_notification_channel(
        &self,
        request: Request<v1::DeleteNotificationChannelRequest>,
    ) -> Result<Response<()>, Status> {
        let key = WorkspaceRef::parse(&request.get_ref().workspace).map_err(ApiError::from)?;
        let id = Uuid::try_parse(&request.get_ref().id)
            .map_err(|_| ApiError::from(FieldError::new("id", "is not a channel id (a UUID)")))?;
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        grant
            .store()
            .delete_channel(grant.org_id(), &key, id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(()))
    }

    async fn list_deliveries(
        &self,
        request: Request<v1::ListDeliveriesRequest>,
    ) -> Result<Response<v1::ListDeliveriesResponse>, Status> {
        let body = request.get_ref().clone();
        let key = WorkspaceRef::parse(&body.workspace).map_err(ApiError::from)?;
        let promotion = match body.promotion.as_str() {
            "" => None,
            raw => Some(Uuid::try_parse(raw).map_err(|_| {
                ApiError::from(FieldError::new(
                    "promotion",
                    "is not a promotion id (a UUID)",
                ))
            })?),
        };
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        let deliveries = grant
            .store()
            .list_deliveries(
                grant.org_id(),
                &key,
                promotion,
                page_size(body.page_size, 100, 500),
            )
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(v1::ListDeliveriesResponse {
            deliveries: deliveries.iter().map(delivery_proto).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(kind: &str, target: &str) -> v1::NotificationChannel {
        v1::NotificationChannel {
            kind: kind.into(),
            target: target.into(),
            ..Default::default()
        }
    }

    #[test]
    fn channels_are_checked_per_kind() {
        for good in ["qa@acme.io", "ops@localhost"] {
            assert!(new_channel(&channel("email", good), "a").is_ok(), "{good}");
        }
        for bad in [
            "@localhost",
            "@acme.io",
            "qa@acme",
            "qa acme@x.io",
            "<qa@x.io>",
        ] {
            let error = new_channel(&channel("email", bad), "a").unwrap_err();
            assert_eq!(error.field, "channel.target", "{bad}");
        }
        let hook = new_channel(&channel("webhook", "https://hooks.acme.io/in"), "a").unwrap();
        assert!(hook.secret.starts_with(WEBHOOK_SECRET_PREFIX));
        assert!(new_channel(&channel("webhook", "ftp://x"), "a").is_err());
        let error = new_channel(&channel("gitops", "/repo.git"), "a").unwrap_err();
        assert_eq!(error.field, "channel.gitops");
        let error = new_channel(&channel("pager", "x"), "a").unwrap_err();
        assert_eq!(error.field, "channel.kind");
    }
}
