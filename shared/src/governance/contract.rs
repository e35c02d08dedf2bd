//! Running a scenario's contract checks (`model::checks`): a promotion
//! runs them against the version it promotes, served by the mock engine a
//! node answers with (`crate::engine`: same router, matchers, templates and
//! the target's personas), before the target serves it.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{self, Effects, Interned, Place, Table};
use crate::model::checks::ContractCheck;
use crate::model::config::ConfigRoute;
use crate::model::matcher::{RequestParts, json_matches};
use crate::model::persona::PersonaConfig;
use crate::model::realism::Realism;
use crate::model::route::Method;
use crate::model::state::INITIAL_STATE;
/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOutcome {
    pub name: String,
    pub passed: bool,
    /// Why it failed; empty when it passed.
    pub detail: String,
}

/// The version a promotion checks, served as the target would serve it:
/// compiled by the mock engine a node uses, with the target's personas.
/// `Err` says why the target could not serve it.
pub fn serve(
    workspace: &str,
    target: &str,
    routes: &[ConfigRoute],
    personas: &[PersonaConfig],
) -> Result<Table, String> {
    let place = Place {
        workspace: workspace.into(),
        environment: target.into(),
        first: false,
    };
    engine::compile(
        place,
        routes.to_vec(),
        &Realism::default(),
        personas.to_vec(),
        &mut Interned::default(),
    )
}

/// A response as the contract run sees it.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

/// What a contract check asks of the engine: every state machine in its
/// first state, no latency or chaos, the clock of the run.
struct FirstRequest {
    now: SystemTime,
}

impl Effects for FirstRequest {
    fn realism(&self) -> bool {
        false
    }

    fn now(&self) -> SystemTime {
        self.now
    }

    fn entropy(&self) -> u64 {
        0
    }

    fn state(&self, _machine: &str, _key: &str) -> String {
        INITIAL_STATE.to_owned()
    }

    fn is_in(&self, _machine: &str, _key: &str, state: &str) -> bool {
        state == INITIAL_STATE
    }

    fn set_state(&self, _machine: &str, _key: &str, _state: &str) {}
}

/// Runs every check against `served` (see [`serve`]): each gets the
/// answer a node serving it would give to its first request.
pub fn run(checks: &[ContractCheck], served: &Result<Table, String>) -> Vec<CheckOutcome> {
    let effects = FirstRequest {
        now: SystemTime::now(),
    };
    checks
        .iter()
        .map(|check| {
            let result = match served {
                Ok(table) => respond(table, &effects, check).and_then(|r| compare(check, &r)),
                Err(e) => Err(format!("the routes do not compile: {e}")),
            };
            CheckOutcome {
                name: check.name.clone(),
                passed: result.is_ok(),
                detail: result.err().unwrap_or_default(),
            }
        })
        .collect()
}

fn respond(
    table: &Table,
    effects: &FirstRequest,
    check: &ContractCheck,
) -> Result<Response, String> {
    let (path, query) = match check.request.path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (check.request.path.as_str(), None),
    };
    let method: Method = check.request.method.parse()?;
    let method = http::Method::from_bytes(method.as_str().as_bytes()).map_err(|e| e.to_string())?;
    let mut headers = http::HeaderMap::new();
    for (name, value) in &check.request.headers {
        let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let value = http::HeaderValue::from_str(value).map_err(|e| e.to_string())?;
        headers.append(name, value);
    }
    let parts = RequestParts::new(query, &headers, check.request.body.as_bytes());
    let answered = engine::answer(
        table,
        effects,
        engine::Request {
            method: &method,
            path,
            parts: &parts,
        },
    );
    Ok(Response {
        status: answered.head.status.as_u16(),
        headers: answered
            .head
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&answered.body).into_owned(),
    })
}

fn compare(check: &ContractCheck, got: &Response) -> Result<(), String> {
    let expect = &check.expect;
    if got.status != expect.status {
        return Err(format!(
            "{} {} answered {}, expected {}{}",
            check.request.method,
            check.request.path,
            got.status,
            expect.status,
            if got.status == 404 {
                " (no route of the version matches the request)"
            } else {
                ""
            }
        ));
    }
    for (name, value) in &expect.headers {
        let lower = name.to_ascii_lowercase();
        match got.headers.iter().find(|(n, _)| *n == lower) {
            Some((_, actual)) if actual.contains(value.as_str()) => {}
            Some((_, actual)) => {
                return Err(format!(
                    "header {lower} is {actual:?}, expected it to contain {value:?}"
                ));
            }
            None => return Err(format!("header {lower} is missing")),
        }
    }
    if let Some(expected) = &expect.body {
        let actual: Value = serde_json::from_str(&got.body).map_err(|_| {
            "the body is not JSON, expected JSON containing the given fields".to_owned()
        })?;
        if !json_matches(expected, &actual, true, false) {
            return Err(format!(
                "the body {} does not contain {}",
                truncate(&got.body),
                expected
            ));
        }
    }
    if let Some(needle) = &expect.body_contains
        && !got.body.contains(needle.as_str())
    {
        return Err(format!(
            "the body {} does not contain {needle:?}",
            truncate(&got.body)
        ));
    }
    Ok(())
}

fn truncate(text: &str) -> String {
    if text.chars().count() <= 200 {
        format!("{text:?}")
    } else {
        format!("{:?}…", text.chars().take(200).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::checks::check_all;
    use crate::model::route::{ResponseSpec, RouteSpec};
    use bytes::Bytes;

    fn route(method: &str, path: &str, status: u32, body: &str, template: bool) -> RouteSpec {
        RouteSpec::parse("r", method, path, || {
            ResponseSpec::parse(
                status,
                vec![("content-type".into(), "application/json".into())],
                Bytes::from(body.to_owned()),
            )
        })
        .unwrap()
        .templated(template)
        .unwrap()
    }

    fn configured(routes: Vec<RouteSpec>) -> Vec<ConfigRoute> {
        routes
            .into_iter()
            .map(|spec| ConfigRoute {
                id: uuid::Uuid::new_v4(),
                spec,
            })
            .collect()
    }

    fn checks(yaml: &str) -> Vec<ContractCheck> {
        let checks: Vec<ContractCheck> = serde_yaml::from_str(yaml).unwrap();
        check_all(&checks).unwrap();
        checks
    }

    #[test]
    fn checks_run_against_the_compiled_routes() {
        let routes = vec![
            route(
                "GET",
                "/users/{id:int}",
                200,
                r#"{"id":{{request.params.id}},"name":"Ann"}"#,
                true,
            ),
            route("POST", "/users", 201, r#"{"created":true}"#, false),
        ];
        let outcomes = run(
            &checks(
                r#"
- name: get-user
  request: { path: /users/7 }
  expect: { status: 200, headers: { content-type: json }, body: { id: 7 } }
- name: create
  request: { method: POST, path: /users, body: '{}' }
  expect: { status: 201, body_contains: created }
- name: wrong-status
  request: { path: /users/7 }
  expect: { status: 404 }
- name: missing
  request: { path: /nothing }
  expect: { status: 200 }
- name: wrong-body
  request: { path: /users/8 }
  expect: { status: 200, body: { id: 7 } }
"#,
            ),
            &serve("shop", "prod", &configured(routes), &[]),
        );
        let passed: Vec<(&str, bool)> = outcomes
            .iter()
            .map(|o| (o.name.as_str(), o.passed))
            .collect();
        assert_eq!(
            passed,
            vec![
                ("get-user", true),
                ("create", true),
                ("wrong-status", false),
                ("missing", false),
                ("wrong-body", false)
            ]
        );
        assert_eq!(
            outcomes[2].detail,
            "GET /users/7 answered 200, expected 404"
        );
        assert!(
            outcomes[3]
                .detail
                .contains("no route of the version matches")
        );
        assert!(
            outcomes[4].detail.contains("does not contain {\"id\":7}"),
            "{}",
            outcomes[4].detail
        );
    }

    #[test]
    fn bad_checks_are_refused_with_the_field_named() {
        let bad: Vec<ContractCheck> =
            serde_yaml::from_str("- { name: a, request: { path: x }, expect: { status: 200 } }")
                .unwrap();
        assert_eq!(check_all(&bad).unwrap_err().field, "checks[0].request.path");
        let twice: Vec<ContractCheck> = serde_yaml::from_str(
            "- { name: a, request: { path: /x }, expect: { status: 200 } }\n- { name: a, request: { path: /y }, expect: { status: 200 } }",
        )
        .unwrap();
        assert!(
            check_all(&twice)
                .unwrap_err()
                .message
                .contains("two checks")
        );
        assert!(
            serde_yaml::from_str::<Vec<ContractCheck>>(
                "- { name: a, request: { path: /x }, expect: { status: 200, bodyy: 1 } }"
            )
            .is_err()
        );
    }
}
