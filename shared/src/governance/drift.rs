//! What a promotion changes in its target: routes added, removed and
//! changed, and which of the changes break a client written against what
//! the target served before (drift).
//!
//! Breaking: a removed route; a changed status code; a response field that
//! is gone or has another JSON type. A route is identified by what it
//! matches (method, path shape, matchers, priority, state), so a renamed
//! route is a change, not a removal.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::route::RouteSpec;

/// Most breaking changes listed one by one; the count is always exact.
pub const MAX_LISTED: usize = 200;

/// One change that breaks clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaking {
    /// `GET /users/{id}`.
    pub route: String,
    /// `route_removed`, `status_changed`, `field_removed`, `field_retyped`.
    pub kind: String,
    pub detail: String,
}

/// What a promotion would change in its target.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    /// How many breaking changes; `breaking` lists at most [`MAX_LISTED`].
    pub breaking_count: usize,
    pub breaking: Vec<Breaking>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

fn label(route: &RouteSpec) -> String {
    format!("{} {}", route.method, route.path.as_str())
}

/// The difference between what the target serves of a scenario (`before`)
/// and the version promoted (`after`).
pub fn diff(before: &[RouteSpec], after: &[RouteSpec]) -> Diff {
    let old: BTreeMap<String, &RouteSpec> = before.iter().map(|r| (r.match_key(), r)).collect();
    let new: BTreeMap<String, &RouteSpec> = after.iter().map(|r| (r.match_key(), r)).collect();
    let mut out = Diff::default();
    let mut breaking = Vec::new();
    for (key, route) in &new {
        match old.get(key) {
            None => out.added.push(label(route)),
            Some(was) if *was != *route => {
                out.changed.push(label(route));
                response_breaks(was, route, &mut breaking);
            }
            Some(_) => {}
        }
    }
    for (key, route) in &old {
        if !new.contains_key(key) {
            out.removed.push(label(route));
            breaking.push(Breaking {
                route: label(route),
                kind: "route_removed".into(),
                detail: format!("{} is no longer served", label(route)),
            });
        }
    }
    out.breaking_count = breaking.len();
    breaking.truncate(MAX_LISTED);
    out.breaking = breaking;
    out
}

/// The difference between a JSON document the target serves (`before`,
/// `None`: nothing) and the one promoted, for documents that templates
/// read (personas): a removed or retyped field breaks a template reading
/// it. `subject` names the document in the findings (`persona alice`).
pub fn document_diff(subject: &str, before: Option<&Value>, after: &Value) -> Diff {
    let mut out = Diff::default();
    match before {
        None => out.added.push(subject.to_owned()),
        Some(was) if was != after => {
            out.changed.push(subject.to_owned());
            let mut breaking = Vec::new();
            compare("$", was, after, subject, &mut breaking);
            out.breaking_count = breaking.len();
            breaking.truncate(MAX_LISTED);
            out.breaking = breaking;
        }
        Some(_) => {}
    }
    out
}

fn response_breaks(was: &RouteSpec, now: &RouteSpec, out: &mut Vec<Breaking>) {
    let route = label(now);
    if was.response.status != now.response.status {
        out.push(Breaking {
            route: route.clone(),
            kind: "status_changed".into(),
            detail: format!("status {} → {}", was.response.status, now.response.status),
        });
    }
    // Fields are compared when both bodies are JSON as written (a template
    // that is not JSON before rendering is not compared).
    let (Ok(old), Ok(new)) = (
        serde_json::from_slice::<Value>(&was.response.body),
        serde_json::from_slice::<Value>(&now.response.body),
    ) else {
        return;
    };
    compare("$", &old, &new, &route, out);
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn compare(path: &str, old: &Value, new: &Value, route: &str, out: &mut Vec<Breaking>) {
    if out.len() > MAX_LISTED * 4 {
        return;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (name, value) in a {
                let field = format!("{path}.{name}");
                match b.get(name) {
                    None => out.push(Breaking {
                        route: route.to_owned(),
                        kind: "field_removed".into(),
                        detail: format!("field {field} was removed"),
                    }),
                    Some(next) => compare(&field, value, next, route, out),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            // The items' shape: the first item of each.
            if let (Some(x), Some(y)) = (a.first(), b.first()) {
                compare(&format!("{path}[]"), x, y, route, out);
            }
        }
        // null stands for "no value" of any type.
        (Value::Null, _) | (_, Value::Null) => {}
        (a, b) if kind(a) != kind(b) => out.push(Breaking {
            route: route.to_owned(),
            kind: "field_retyped".into(),
            detail: format!("field {path} changed from {} to {}", kind(a), kind(b)),
        }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::route::ResponseSpec;
    use bytes::Bytes;

    fn route(method: &str, path: &str, status: u32, body: &str) -> RouteSpec {
        RouteSpec::parse("r", method, path, || {
            ResponseSpec::parse(status, vec![], Bytes::from(body.to_owned()))
        })
        .unwrap()
    }

    #[test]
    fn an_identical_version_changes_nothing() {
        let a = vec![route("GET", "/users", 200, "[]")];
        let d = diff(&a, &a.clone());
        assert!(d.is_empty());
        assert_eq!(d.breaking_count, 0);
    }

    #[test]
    fn added_routes_do_not_break_and_removed_ones_do() {
        let before = vec![
            route("GET", "/users", 200, "[]"),
            route("GET", "/old", 200, "{}"),
        ];
        let after = vec![
            route("GET", "/users", 200, "[]"),
            route("POST", "/users", 201, "{}"),
        ];
        let d = diff(&before, &after);
        assert_eq!(d.added, vec!["POST /users"]);
        assert_eq!(d.removed, vec!["GET /old"]);
        assert_eq!(d.breaking_count, 1);
        assert_eq!(d.breaking[0].kind, "route_removed");
    }

    #[test]
    fn status_and_field_changes_are_breaking_but_new_fields_are_not() {
        let before = vec![route(
            "GET",
            "/users/{id}",
            200,
            r#"{"id":1,"name":"a","email":"x","tags":[{"k":"v"}],"note":null}"#,
        )];
        let after = vec![route(
            "GET",
            "/users/{id}",
            201,
            r#"{"id":"1","name":"a","tags":[{"k":1}],"note":"set","extra":true}"#,
        )];
        let d = diff(&before, &after);
        assert_eq!(d.changed, vec!["GET /users/{id}"]);
        let details: Vec<&str> = d.breaking.iter().map(|b| b.detail.as_str()).collect();
        assert_eq!(
            details,
            vec![
                "status 200 → 201",
                "field $.id changed from number to string",
                "field $.email was removed",
                "field $.tags[].k changed from string to number",
            ]
        );
        assert_eq!(d.breaking_count, 4);
    }

    #[test]
    fn bodies_that_are_not_json_compare_by_status_only() {
        let before = vec![route("GET", "/t", 200, "hello")];
        let after = vec![route("GET", "/t", 200, "bye")];
        let d = diff(&before, &after);
        assert_eq!(d.changed.len(), 1);
        assert_eq!(d.breaking_count, 0);
    }
}
