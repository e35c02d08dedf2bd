//! The one mapping from errors to gRPC statuses. Database text never reaches
//! a client: store errors carry messages written for people, and the rare
//! internal or unavailable ones are logged here and answered generically.

use mockplane_shared::FieldError;
use tonic::{Code, Status};

use crate::store::StoreError;

/// An error a handler returns; converted to a `Status` in one place.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request field is wrong. The path names the field in the request,
    /// e.g. `workspace.slug` or `routes[2].response.status`.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Unauthenticated(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Status {
        match error {
            ApiError::Invalid(field) => Status::invalid_argument(field.to_string()),
            ApiError::Unauthenticated(message) => Status::unauthenticated(message),
            ApiError::Store(store) => store_status(store),
        }
    }
}

fn store_status(error: StoreError) -> Status {
    let code = match &error {
        StoreError::NotFound(_) => Code::NotFound,
        StoreError::AlreadyExists(_) => Code::AlreadyExists,
        StoreError::EtagMismatch { .. } | StoreError::Conflict(_) => Code::Aborted,
        StoreError::LimitExceeded(_) => Code::ResourceExhausted,
        StoreError::Refused(_) => Code::PermissionDenied,
        StoreError::FailedPrecondition(_) => Code::FailedPrecondition,
        StoreError::Invalid(_) => Code::InvalidArgument,
        StoreError::Unavailable(detail) => {
            tracing::warn!(%detail, "store unavailable");
            return Status::unavailable(
                "the control plane's database is unavailable; try again shortly",
            );
        }
        StoreError::Internal(detail) => {
            tracing::error!(%detail, "internal store error");
            return Status::internal("internal error; the control plane's log has the details");
        }
    };
    Status::new(code, error.to_string())
}

/// A required message field that is missing.
pub fn missing(field: &str) -> ApiError {
    ApiError::Invalid(FieldError::new(field, "is required"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_every_store_error_to_its_code() {
        let cases = [
            (StoreError::NotFound("workspace 'x'".into()), Code::NotFound),
            (StoreError::Refused("own".into()), Code::PermissionDenied),
            (
                StoreError::AlreadyExists("taken".into()),
                Code::AlreadyExists,
            ),
            (
                StoreError::EtagMismatch {
                    what: "w".into(),
                    current: "2".into(),
                },
                Code::Aborted,
            ),
            (StoreError::Conflict("busy".into()), Code::Aborted),
            (
                StoreError::FailedPrecondition("prod serves versions only".into()),
                Code::FailedPrecondition,
            ),
            (
                StoreError::LimitExceeded("too many".into()),
                Code::ResourceExhausted,
            ),
            (
                StoreError::Invalid(FieldError::new("a", "b")),
                Code::InvalidArgument,
            ),
            (
                StoreError::Unavailable("pool timed out".into()),
                Code::Unavailable,
            ),
            (
                StoreError::Internal("syntax error at or near".into()),
                Code::Internal,
            ),
        ];
        for (error, code) in cases {
            let status = Status::from(ApiError::Store(error));
            assert_eq!(status.code(), code);
        }
    }

    #[test]
    fn database_detail_never_reaches_the_client() {
        let status = Status::from(ApiError::Store(StoreError::Internal(
            "duplicate key value violates unique constraint \"workspaces_slug_key\"".into(),
        )));
        assert!(
            !status.message().contains("constraint"),
            "{}",
            status.message()
        );
        let status = Status::from(ApiError::Store(StoreError::Unavailable(
            "connection refused 10.0.0.3:5432".into(),
        )));
        assert!(!status.message().contains("10.0.0.3"));
    }

    #[test]
    fn invalid_fields_are_named() {
        let status = Status::from(ApiError::Invalid(
            FieldError::new("slug", "must not be empty").within("workspace"),
        ));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "workspace.slug: must not be empty");
    }
}
