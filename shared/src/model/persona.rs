//! Personas: named JSON documents that response templates read
//! (`{{persona.user.name}}`), so one set of mocks can answer as different
//! users, tenants or accounts.

use crate::model::error::FieldError;
use crate::model::slug::Slug;

/// Largest persona document, as JSON text.
pub const MAX_PERSONA_BYTES: usize = 64 * 1024;
/// Most personas one workspace may have.
pub const MAX_PERSONAS: usize = 50;
/// The persona a request gets when its header names none.
pub const DEFAULT_PERSONA: &str = "default";

/// A persona as a node serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonaConfig {
    pub name: Slug,
    pub data: serde_json::Value,
}

pub fn parse_persona_name(raw: &str) -> Result<Slug, FieldError> {
    Slug::parse(raw).map_err(|e| FieldError::new("name", format!("persona name {raw:?}: {e}")))
}

/// Parses a persona document: a JSON object of at most
/// [`MAX_PERSONA_BYTES`].
pub fn parse_persona_data(raw: &str) -> Result<serde_json::Value, FieldError> {
    if raw.len() > MAX_PERSONA_BYTES {
        return Err(FieldError::new(
            "data",
            format!(
                "a persona is at most {MAX_PERSONA_BYTES} bytes of JSON, got {}",
                raw.len()
            ),
        ));
    }
    crate::model::nesting::check(raw).map_err(|e| FieldError::new("data", e.to_string()))?;
    let value: serde_json::Value = serde_json::from_str(raw).map_err(|e| {
        FieldError::new(
            "data",
            format!(
                "not valid JSON: {e} (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    if !value.is_object() {
        return Err(FieldError::new(
            "data",
            "must be a JSON object, such as {\"user\": {\"name\": \"Ada\"}}",
        ));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persona_data_is_a_bounded_json_object() {
        assert!(parse_persona_data(r#"{"user":{"name":"Ada"}}"#).is_ok());
        let not_json = parse_persona_data("{user: 1}").unwrap_err();
        assert!(not_json.message.contains("line 1, column 2"), "{not_json}");
        assert!(
            parse_persona_data("[1]")
                .unwrap_err()
                .message
                .contains("object")
        );
        let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(MAX_PERSONA_BYTES));
        assert!(
            parse_persona_data(&big)
                .unwrap_err()
                .message
                .contains("at most")
        );
        assert_eq!(parse_persona_name("Ada").unwrap_err().field, "name");
    }
}
