//! `mockplane.v1.UsageService`: the requests nodes answered, per
//! environment, from their usage reports.

use chrono::Utc;
use mockplane_proto::v1;
use mockplane_proto::v1::usage_service_server::UsageService;
use mockplane_shared::FieldError;
use mockplane_shared::model::environment::parse_env_name;
use tonic::{Request, Response, Status};

use super::ApiState;
use super::authz::Target;
use super::error::ApiError;
use crate::store::WorkspaceRef;

pub struct Usage(pub ApiState);

/// The start of the minute a time falls in, in Unix seconds.
fn minute_of(seconds: i64) -> i64 {
    seconds.div_euclid(60) * 60
}

fn timestamp_at(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

/// The window a request asks for, in whole minutes: `since` rounded down,
/// `until` rounded down and excluded (unset: this minute included).
pub fn window(
    since: Option<&prost_types::Timestamp>,
    until: Option<&prost_types::Timestamp>,
    now: i64,
) -> Result<(i64, i64), FieldError> {
    let since = since.map_or(0, |t| minute_of(t.seconds).max(0));
    let until = until.map_or(minute_of(now) + 60, |t| minute_of(t.seconds));
    if until < since {
        return Err(FieldError::new(
            "until",
            "must not be before since: the window runs from since to until",
        ));
    }
    Ok((since, until))
}

#[tonic::async_trait]
impl UsageService for Usage {
    async fn get_usage(
        &self,
        request: Request<v1::GetUsageRequest>,
    ) -> Result<Response<v1::GetUsageResponse>, Status> {
        let body = request.get_ref();
        let key = WorkspaceRef::parse(&body.workspace).map_err(ApiError::from)?;
        let environment = if body.environment.is_empty() {
            None
        } else {
            Some(
                parse_env_name(&body.environment)
                    .map_err(|e| FieldError::new("environment", e.message))
                    .map_err(ApiError::from)?,
            )
        };
        let (since, until) = window(
            body.since.as_ref(),
            body.until.as_ref(),
            Utc::now().timestamp(),
        )
        .map_err(ApiError::from)?;
        let grant = self.0.authorize(&request, Target::Workspace(&key)).await?;
        let totals = grant
            .store()
            .usage(
                grant.org_id(),
                &key,
                environment.as_ref().map(|e| e.as_str()),
                since,
                until,
            )
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(v1::GetUsageResponse {
            environments: totals
                .into_iter()
                .map(|t| v1::EnvironmentUsage {
                    environment: t.environment,
                    requests: t.requests,
                    test_requests: t.test_requests,
                    limited_requests: t.limited_requests,
                })
                .collect(),
            since: Some(timestamp_at(since)),
            until: Some(timestamp_at(until)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_whole_minutes() {
        let at = |seconds| prost_types::Timestamp { seconds, nanos: 0 };
        assert_eq!(window(None, None, 125).unwrap(), (0, 180));
        assert_eq!(
            window(Some(&at(61)), Some(&at(179)), 1000).unwrap(),
            (60, 120)
        );
        assert_eq!(window(Some(&at(-5)), None, 0).unwrap(), (0, 60));
        assert_eq!(
            window(Some(&at(600)), Some(&at(0)), 1000)
                .unwrap_err()
                .field,
            "until"
        );
    }
}
