//! Scenario files: a scenario's name, description and tags, and its routes
//! in mock-file form, in YAML or JSON. `mockplane scenario export` writes
//! them and `mockplane scenario import` reads them, checked before anything
//! is sent, with errors that name the file and the field.
//!
//! ```yaml
//! scenario:
//!   name: checkout                 # a slug; `import --name` gives another
//!   description: The checkout flow
//!   tags: [payments, "[Reality]"]
//!   checks:                        # contract checks (optional)
//!     - name: empty cart
//!       request: { path: /cart }
//!       expect: { status: 200 }
//! routes:                          # exactly the routes of a mock file
//!   - name: cart
//!     method: GET
//!     path: /cart
//!     response: { status: 200, json: [] }
//! ```

use std::path::Path;

use anyhow::{Context as _, anyhow};
use mockplane_proto::v1;
use mockplane_shared::model::checks::{ContractCheck, check_all};
use mockplane_shared::model::scenario::{parse_scenario_name, parse_tags, parse_text};
use serde::{Deserialize, Serialize};

use crate::mockfile::{self, MockRoute};

/// The `scenario:` part.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Contract checks: example requests and the answers they must get.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<ContractCheck>,
}

/// A whole scenario file as export writes it.
#[derive(Serialize)]
pub struct ScenarioFile {
    pub scenario: ScenarioMeta,
    pub routes: Vec<MockRoute>,
}

/// Parses scenario file text. `json` picks the JSON parser; otherwise YAML
/// (a superset of JSON) reads it. `name`, when given, replaces the file's
/// scenario name. Returns the scenario and its routes as the API takes them.
pub fn parse(
    text: &str,
    json: bool,
    name: Option<&str>,
) -> anyhow::Result<(v1::Scenario, Vec<v1::Route>)> {
    let document = crate::mockfile::document(text, json)?;
    let serde_json::Value::Object(mut map) = document else {
        anyhow::bail!(
            "a scenario file is a map with `scenario:` (name, description, tags) and `routes:`"
        );
    };
    let meta = map
        .remove("scenario")
        .ok_or_else(|| anyhow!("the file has no `scenario:` (name, description, tags)"))?;
    let routes = map
        .remove("routes")
        .ok_or_else(|| anyhow!("the file has no `routes:` list"))?;
    if let Some(unknown) = map.keys().next() {
        anyhow::bail!(
            "unknown top-level field `{unknown}`; a scenario file has only `scenario:` and `routes:`"
        );
    }
    let meta: ScenarioMeta = serde_path_to_error::deserialize(meta).map_err(|e| {
        anyhow!(
            "scenario{}: {}",
            mockfile::segment_path(e.path()),
            e.inner()
        )
    })?;
    let name = match name {
        Some(name) => {
            parse_scenario_name(name).map_err(|e| anyhow!("--name: {}", e.message))?;
            name.to_owned()
        }
        None if meta.name.is_empty() => {
            anyhow::bail!("scenario.name: is missing; name the scenario here or with --name")
        }
        None => {
            parse_scenario_name(&meta.name).map_err(|e| e.within("scenario"))?;
            meta.name
        }
    };
    parse_text("scenario.description", &meta.description)?;
    parse_tags(&meta.tags).map_err(|e| e.within("scenario"))?;
    check_all(&meta.checks).map_err(|e| e.within("scenario"))?;
    let routes = mockfile::parse_routes(routes)?;
    Ok((
        v1::Scenario {
            name,
            description: meta.description,
            tags: meta.tags,
            checks: meta
                .checks
                .iter()
                .map(mockplane_proto::convert::contract_check)
                .collect(),
            ..Default::default()
        },
        routes,
    ))
}

/// Reads and parses a scenario file; `-` is standard input.
pub fn load(path: &Path, name: Option<&str>) -> anyhow::Result<(v1::Scenario, Vec<v1::Route>)> {
    let (text, json) = mockfile::read(path, "the scenario")?;
    parse(&text, json, name)
        .with_context(|| format!("{} is not a valid scenario file", path.display()))
}

/// The file form of a scenario and its routes and contract checks
/// (the working copy's, or a version's).
pub fn export(
    scenario: &v1::Scenario,
    routes: &[v1::Route],
    checks: &[v1::ContractCheck],
) -> anyhow::Result<ScenarioFile> {
    Ok(ScenarioFile {
        scenario: ScenarioMeta {
            name: scenario.name.clone(),
            description: scenario.description.clone(),
            tags: scenario.tags.clone(),
            checks: mockplane_proto::convert::parse_contract_checks(checks)
                .map_err(|e| anyhow!("{}", e.within("scenario")))?,
        },
        routes: mockfile::to_file_form(routes)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
scenario:
  name: checkout
  description: The checkout flow
  tags: [payments, "[reality]"]
  checks:
    - name: cart is empty
      request: { path: /cart }
      expect: { status: 200, body: [] }
routes:
  - name: empty cart
    path: /cart
    state: { machine: cart, when: started }
    response: { json: [] }
  - method: POST
    path: /cart
    priority: 2
    latency: { normal: { mean: 80, stddev: 20 }, max: 500 }
    chaos: { rate: 0.5, statuses: { 503: 1 }, faults: { reset: 2 }, seed: 7 }
    state: { machine: cart, set: full, key: "header:x-run" }
    match:
      headers: [{ name: x-tenant, regex: "^t-[0-9]+$" }]
      body: [{ jsonPath: "$.sku", equals: lamp }]
    response:
      status: 201
      headers:
        - { name: set-cookie, value: a=1 }
        - { name: set-cookie, value: b=2 }
      body: '{"ok": true}'
  - path: /me
    response:
      template: true
      headers: { content-type: application/json, x-mock: "yes" }
      json: { name: "{{persona.user.name}}" }
"#;

    #[test]
    fn reads_the_file_and_names_it() {
        let (scenario, routes) = parse(FILE, false, None).unwrap();
        assert_eq!(scenario.name, "checkout");
        assert_eq!(scenario.tags, ["payments", "[reality]"]);
        assert_eq!(routes.len(), 3);
        let state = routes[1].state.as_ref().unwrap();
        assert_eq!(
            (
                state.machine.as_str(),
                state.set.as_str(),
                state.key.as_str()
            ),
            ("cart", "full", "header:x-run")
        );
        let (renamed, _) = parse(FILE, false, Some("copy")).unwrap();
        assert_eq!(renamed.name, "copy");
        let (empty, routes) = parse("scenario: {name: empty}\nroutes: []\n", false, None).unwrap();
        assert_eq!((empty.name.as_str(), routes.len()), ("empty", 0));
    }

    /// What export writes reads back as the same routes, and writes the
    /// same file again.
    #[test]
    fn exports_read_back_as_the_same_routes() {
        let (scenario, routes) = parse(FILE, false, None).unwrap();
        assert_eq!(scenario.checks.len(), 1);
        let file = export(&scenario, &routes, &scenario.checks).unwrap();
        let yaml = serde_yaml::to_string(&file).unwrap();
        let (again, reread) = parse(&yaml, false, None).unwrap();
        assert_eq!(reread, routes, "{yaml}");
        assert_eq!(again.tags, scenario.tags);
        assert_eq!(again.checks, scenario.checks, "{yaml}");
        assert_eq!(
            serde_yaml::to_string(&export(&again, &reread, &again.checks).unwrap()).unwrap(),
            yaml
        );
        let json = serde_json::to_string_pretty(&file).unwrap();
        let (_, from_json) = parse(&json, true, None).unwrap();
        assert_eq!(from_json, routes, "{json}");
        // Defaults stay out; `json:` stays `json:` without the content type
        // it implies; a body that is not exactly its JSON stays text.
        assert!(!yaml.contains("priority: 5"), "{yaml}");
        assert!(yaml.contains("json: []"), "{yaml}");
        assert!(yaml.contains(r#"body: '{"ok": true}'"#), "{yaml}");
        assert!(yaml.contains("- name: set-cookie"), "{yaml}");
        assert!(yaml.contains("template: true"), "{yaml}");
        assert_eq!(yaml.matches("content-type").count(), 1, "{yaml}");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("scenario: {name: Bad}\nroutes: []\n", "scenario.name"),
            ("scenario: {}\nroutes: []\n", "scenario.name: is missing"),
            (
                "scenario: {name: a, tags: [\"[Weather]\"]}\nroutes: []\n",
                "scenario.tags[0]",
            ),
            ("scenario: {name: a, nme: b}\nroutes: []\n", "nme"),
            (
                "scenario: {name: a}\nroutes:\n  - path: /a\n  - path: /b\n    state: {machine: m, when: x, key: \"cookie:x\"}\n",
                "routes[1].state.key",
            ),
            (
                "scenario: {name: a}\nroutes:\n  - path: /a\n    state: {machine: m, whenn: x}\n",
                "whenn",
            ),
            ("routes: []\n", "no `scenario:`"),
            ("scenario: {name: a}\n", "no `routes:`"),
            ("scenario: {name: a}\nroutes: []\nextra: 1\n", "extra"),
            ("- path: /a\n", "a map with"),
        ];
        for (text, expected) in cases {
            let message = format!("{:#}", parse(text, false, None).unwrap_err());
            assert!(message.contains(expected), "{text:?} gave {message:?}");
        }
        let message = format!(
            "{:#}",
            parse("scenario: {name: a}\nroutes: []\n", false, Some("No")).unwrap_err()
        );
        assert!(message.contains("--name"), "{message}");
    }
}
