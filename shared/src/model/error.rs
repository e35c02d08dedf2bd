//! The one validation error: which field is wrong and why.

use std::fmt;

/// A field that breaks a rule. `field` is a path such as
/// `routes[2].response.status`, so a person can find it in their file or
/// request; `message` says what is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Places this error inside `parent`: `status` within `response` becomes
    /// `response.status`; an indexed parent such as `routes[2]` works too.
    #[must_use]
    pub fn within(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_owned()
        } else if self.field.starts_with('[') {
            format!("{parent}{}", self.field)
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

/// Shortest and longest reason a caller states for an act that needs one
/// (a test key, an org's deletion).
pub const REASON_CHARS: (usize, usize) = (8, 500);

/// A stated reason: trimmed, [`REASON_CHARS`] characters of text without
/// control characters. `needs` says who needs it and what for, and starts
/// the message when it is missing or of the wrong length.
pub fn parse_reason(raw: &str, needs: &str) -> Result<String, FieldError> {
    let reason = raw.trim();
    let (min, max) = REASON_CHARS;
    let chars = reason.chars().count();
    if chars < min || chars > max {
        return Err(FieldError::new(
            "reason",
            format!("{needs}, in {min} to {max} characters, got {chars}"),
        ));
    }
    if reason.chars().any(char::is_control) {
        return Err(FieldError::new(
            "reason",
            "must not contain control characters",
        ));
    }
    Ok(reason.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nests_field_paths() {
        let error = FieldError::new("status", "must be 200-599")
            .within("response")
            .within("routes[2]");
        assert_eq!(
            error.to_string(),
            "routes[2].response.status: must be 200-599"
        );
        let indexed = FieldError::new("[1].name", "bad").within("headers");
        assert_eq!(indexed.field, "headers[1].name");
    }
}
