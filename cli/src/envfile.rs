//! Environment settings files: an environment's overrides, or the defaults
//! a workspace gives all its environments, in YAML or JSON. Checked before
//! anything is sent, with errors that name the file and the field.
//!
//! ```yaml
//! reality: 4                      # 1 (instant, perfect) to 5 (production-like)
//! latency: { normal: { mean: 120, stddev: 40 }, max: 800 }   # replaces the level's latency
//! chaos: { rate: 0.02, statuses: { 503: 1 } }                 # replaces the level's chaos
//! drift_budget: 0                 # breaking changes a promotion into it may carry
//! validation: enforce             # off | warn | enforce
//! reason_required: true           # acting on it needs a stated reason
//! limits: { requests_per_second: 100, burst: 200, max_concurrent: 50 }   # per node
//! ```
//!
//! A field left out inherits; an empty file sets nothing.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use mockplane_proto::v1;
use mockplane_shared::EnvSettings;

use crate::mockfile;

/// Parses settings file text. `json` picks the JSON parser; otherwise YAML
/// (a superset of JSON) reads it.
pub fn parse(text: &str, json: bool) -> anyhow::Result<EnvSettings> {
    let document = crate::mockfile::document(text, json)?;
    match document {
        serde_json::Value::Null => return Ok(EnvSettings::default()),
        serde_json::Value::Object(_) => {}
        // serde would read a list as the fields in order.
        _ => anyhow::bail!(
            "a settings file is a map of settings: reality, latency, chaos, drift_budget, validation, reason_required, approvals, data_policy, required_checks, limits"
        ),
    }
    let settings: EnvSettings = serde_path_to_error::deserialize(document).map_err(|e| {
        let path = mockfile::segment_path(e.path());
        match path.strip_prefix('.').unwrap_or(&path) {
            "" => anyhow!("{}", e.inner()),
            field => anyhow!("{field}: {}", e.inner()),
        }
    })?;
    settings.check().map_err(|e| anyhow!("{e}"))?;
    Ok(settings)
}

/// Reads, parses and checks a settings file (`-` is standard input); the
/// settings as the API takes them.
pub fn load(path: &Path) -> anyhow::Result<v1::EnvironmentSettings> {
    let (text, json) = mockfile::read(path, "settings")?;
    let settings = parse(&text, json)
        .with_context(|| format!("{} is not a valid settings file", path.display()))?;
    Ok(mockplane_proto::convert::env_settings(&settings))
}

#[cfg(test)]
mod tests {
    use mockplane_shared::model::environment::ValidationMode;

    use super::*;

    #[test]
    fn reads_the_file_form() {
        let yaml = "reality: 4\nlatency: { fixed: 30 }\nchaos: { rate: 0.1, statuses: { 503: 1 } }\ndrift_budget: 0\nvalidation: enforce\nreason_required: true\n";
        let settings = parse(yaml, false).unwrap();
        assert_eq!(settings.reality, Some(4));
        assert_eq!(settings.latency.unwrap().fixed, Some(30));
        assert_eq!(settings.drift_budget, Some(0));
        assert_eq!(settings.validation, Some(ValidationMode::Enforce));
        let json = parse(r#"{"validation": "off"}"#, true).unwrap();
        assert_eq!(json.validation, Some(ValidationMode::Off));
        assert_eq!(json.reality, None, "left out: inherits");
        assert!(parse("", false).unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("realty: 3\n", "realty"),
            ("reality: 9\n", "reality: must be a level from 1 to 5"),
            ("reality: high\n", "reality: invalid type"),
            (
                "validation: strict\n",
                "validation: unknown variant `strict`",
            ),
            (
                "latency: { normal: { meen: 1 } }\n",
                "latency.normal.meen: unknown field `meen`",
            ),
            ("chaos: { rate: 3 }\n", "chaos"),
            ("- 1\n", "a map of settings"),
            ("4\n", "a map of settings"),
            (": : :", "YAML"),
        ];
        for (text, expected) in cases {
            let message = format!("{:#}", parse(text, false).unwrap_err());
            assert!(message.contains(expected), "{text:?} gave {message:?}");
        }
    }
}
