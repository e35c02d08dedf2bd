//! Persona files: the JSON object a persona holds, written in JSON or YAML
//! (sent as JSON text). Checked before anything is sent, with errors that
//! name the file and the place in it.
//!
//! ```yaml
//! user: { id: 7, name: Ada Lovelace, email: ada@example.com }
//! accounts:
//!   - { iban: GB33BUKB20201555555555, balance: 120.5 }
//! ```

use std::path::Path;

use anyhow::{Context as _, anyhow};
use mockplane_shared::model::persona::parse_persona_data;

use crate::mockfile;

/// Parses persona file text into the JSON text the API takes. `json`
/// picks the JSON parser; otherwise YAML (a superset of JSON) reads it.
pub fn parse(text: &str, json: bool) -> anyhow::Result<String> {
    mockplane_shared::model::nesting::check(text).map_err(|e| anyhow!("the file {e}"))?;
    let data: serde_json::Value = if json {
        serde_json::from_str(text).map_err(|e| anyhow!("not valid JSON: {e}"))?
    } else {
        // Syntax first, so that only what JSON cannot hold is named by place.
        serde_yaml::from_str::<serde_yaml::Value>(text)
            .map_err(|e| anyhow!("not valid YAML: {e}"))?;
        serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text)).map_err(|e| {
            match mockfile::segment_path(e.path()).strip_prefix('.') {
                Some(place) => anyhow!("data.{place}: {}", e.inner()),
                None => anyhow!("not valid YAML: {}", e.inner()),
            }
        })?
    };
    let text = data.to_string();
    parse_persona_data(&text)?;
    Ok(text)
}

/// Reads and checks a persona file (`-` is standard input); the JSON text.
pub fn load(path: &Path) -> anyhow::Result<String> {
    let (text, json) = mockfile::read(path, "the persona")?;
    parse(&text, json).with_context(|| format!("{} is not a valid persona", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_become_json_text() {
        let yaml = "user:\n  name: Ada\n  tags: [a, b]\nactive: true\n";
        assert_eq!(
            parse(yaml, false).unwrap(),
            r#"{"user":{"name":"Ada","tags":["a","b"]},"active":true}"#
        );
        assert_eq!(
            parse(r#"{"user": {"name": "Ada"}}"#, true).unwrap(),
            r#"{"user":{"name":"Ada"}}"#
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("- a\n- b\n", false, "data: must be a JSON object"),
            ("just text\n", false, "data: must be a JSON object"),
            ("user:\n  ? [a, b]\n  : 1\n", false, "data.user"),
            ("user: [\n", false, "YAML"),
            ("{\"user\": }", true, "not valid JSON"),
        ];
        for (text, json, expected) in cases {
            let message = format!("{:#}", parse(text, json).unwrap_err());
            assert!(message.contains(expected), "{text:?} gave {message:?}");
        }
    }
}
