//! Contract checks as a scenario carries them: example requests with the
//! responses they must get, in the file form below, validated. They travel
//! with the scenario's versions; `governance::contract` runs them.
//!
//! File form (in a scenario file, under `checks:`):
//!
//! ```yaml
//! - name: get-user
//!   request: { method: GET, path: /users/7?full=1, headers: { accept: application/json } }
//!   expect:
//!     status: 200
//!     headers: { content-type: application/json }   # values must be contained
//!     body: { id: 7 }                               # JSON the body must contain
//!     body_contains: "\"name\""
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::error::FieldError;
use crate::model::route::Method;

/// Most checks one scenario may carry.
pub const MAX_CHECKS: usize = 100;
/// Largest request body of a check.
pub const MAX_CHECK_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractCheck {
    pub name: String,
    pub request: CheckRequest,
    pub expect: Expectation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    #[serde(default = "get")]
    pub method: String,
    /// The path inside the workspace, with its query: `/users/7?full=1`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "pairs")]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body: String,
}

fn get() -> String {
    "GET".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    pub status: u16,
    /// Each value must be contained in the response's header of that name.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "pairs")]
    pub headers: Vec<(String, String)>,
    /// JSON the body must contain (objects may have more fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
}

// Headers as a map in files, kept in order.
mod pairs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(pairs: &[(String, String)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(pairs.iter().map(|(k, v)| (k, v)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
        Ok(BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

impl ContractCheck {
    /// Checks the fields; the error names the one that is wrong.
    pub fn check(&self) -> Result<(), FieldError> {
        crate::model::route::parse_name(&self.name).map_err(|m| FieldError::new("name", m))?;
        self.request
            .method
            .parse::<Method>()
            .map_err(|m| FieldError::new("request.method", m))?;
        if !self.request.path.starts_with('/') {
            return Err(FieldError::new(
                "request.path",
                format!("{:?} must start with '/'", self.request.path),
            ));
        }
        for (i, (name, value)) in self.request.headers.iter().enumerate() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(FieldError::new(
                    format!("request.headers[{i}]"),
                    format!("{name:?} is not a valid header name"),
                ));
            }
            if http::HeaderValue::from_str(value).is_err() {
                return Err(FieldError::new(
                    format!("request.headers[{i}]"),
                    "header values must be visible ASCII or spaces",
                ));
            }
        }
        if self.request.body.len() > MAX_CHECK_BODY {
            return Err(FieldError::new(
                "request.body",
                format!("at most {MAX_CHECK_BODY} bytes"),
            ));
        }
        if !(100..=599).contains(&self.expect.status) {
            return Err(FieldError::new(
                "expect.status",
                format!("must be an HTTP status, got {}", self.expect.status),
            ));
        }
        Ok(())
    }
}

/// Checks a scenario's checks: each valid, names unique.
pub fn check_all(checks: &[ContractCheck]) -> Result<(), FieldError> {
    if checks.len() > MAX_CHECKS {
        return Err(FieldError::new(
            "checks",
            format!("at most {MAX_CHECKS} checks, got {}", checks.len()),
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (i, check) in checks.iter().enumerate() {
        check
            .check()
            .map_err(|e| e.within(&format!("checks[{i}]")))?;
        if !names.insert(check.name.as_str()) {
            return Err(FieldError::new(
                format!("checks[{i}].name"),
                format!("two checks are named {:?}", check.name),
            ));
        }
    }
    Ok(())
}
