//! Mock files: routes written in YAML or JSON, checked before anything is
//! sent, with errors that name the file, the route and the field.
//!
//! ```yaml
//! routes:
//!   - name: one user
//!     method: GET              # default GET; ANY answers every method
//!     path: /users/{id}       # {id:int}, {id:uuid}, {id:<regex>} narrow a parameter
//!     match:                   # optional; every matcher must pass
//!       query:   [{ name: expand, equals: orders }]
//!       headers: [{ name: x-tenant, regex: "^t-[0-9]+$" }]
//!       body:    [{ jsonPath: "$.kind", equals: order }]
//!     priority: 1              # optional; 1 first, default 5
//!     latency: { fixed: 50 }   # optional; or uniform, normal, lognormal, pareto (ms)
//!     chaos: { rate: 0.1, statuses: { 503: 1 }, faults: { reset: 1 } }
//!     state: { machine: cart, when: started, set: full, key: "header:x-run" }  # optional
//!     response:
//!       status: 200            # default 200
//!       headers:               # a map, or a list of {name, value}
//!         content-type: application/json
//!       json: {"id": 1}        # or `body:` with text
//!       template: true         # optional; the body and header values are templates
//! ```
//!
//! The top level may also be the list of routes itself. [`MockRoute`] also
//! writes routes back in this form (`mockplane scenario export`), so that
//! what it writes reads back as the same routes.

use std::fmt;
use std::path::Path;

use anyhow::{Context as _, anyhow};
use mockplane_proto::convert::parse_route;
use mockplane_proto::v1;
use mockplane_shared::RequestMatch;
use mockplane_shared::model::realism::{Chaos, Latency};
use mockplane_shared::model::route::DEFAULT_PRIORITY;
use mockplane_shared::model::state::RawStateRule;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap as _, SerializeSeq as _};
use serde::{Deserialize, Serialize};

/// One route in file form. Reads what people write; written by
/// [`MockRoute::from_route`], it leaves out what has its default.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockRoute {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(default = "default_method")]
    method: String,
    path: String,
    #[serde(
        default,
        rename = "match",
        skip_serializing_if = "RequestMatch::is_empty"
    )]
    matcher: RequestMatch,
    #[serde(default, skip_serializing_if = "is_zero")]
    priority: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency: Option<Latency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chaos: Option<Chaos>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<RawStateRule>,
    #[serde(default)]
    response: MockResponse,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MockResponse {
    #[serde(default = "default_status")]
    status: u32,
    #[serde(default, skip_serializing_if = "Headers::is_empty")]
    headers: Headers,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    json: Option<serde_json::Value>,
    /// The body and header values are templates.
    #[serde(default, skip_serializing_if = "is_false")]
    template: bool,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// Headers as a map (`name: value`, in file order) or as a list of
/// `{name, value}` (which allows a name twice, as `set-cookie` needs).
#[derive(Default)]
struct Headers(Vec<(String, String)>);

impl Headers {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Written as a map unless a name repeats (case-insensitively), which
/// only the list form can hold.
impl Serialize for Headers {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let repeats = self.0.iter().enumerate().any(|(index, (name, _))| {
            self.0[..index]
                .iter()
                .any(|(earlier, _)| earlier.eq_ignore_ascii_case(name))
        });
        if repeats {
            let mut list = serializer.serialize_seq(Some(self.0.len()))?;
            for (name, value) in &self.0 {
                list.serialize_element(&HeaderEntry {
                    name: name.clone(),
                    value: value.clone(),
                })?;
            }
            list.end()
        } else {
            let mut map = serializer.serialize_map(Some(self.0.len()))?;
            for (name, value) in &self.0 {
                map.serialize_entry(name, value)?;
            }
            map.end()
        }
    }
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = Headers;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of header names to values, or a list of {name, value}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Headers, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, String>()? {
                    entries.push(entry);
                }
                Ok(Headers(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Headers, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = seq.next_element::<HeaderEntry>()? {
                    entries.push((entry.name, entry.value));
                }
                Ok(Headers(entries))
            }
        }
        deserializer.deserialize_any(Entries)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderEntry {
    name: String,
    value: String,
}

impl Default for MockResponse {
    /// An omitted response is an empty `200 OK`, as an omitted status is.
    fn default() -> Self {
        Self {
            status: default_status(),
            headers: Headers::default(),
            body: None,
            json: None,
            template: false,
        }
    }
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_status() -> u32 {
    200
}

impl MockRoute {
    /// The wire route, or the first rule it breaks.
    fn into_route(self) -> Result<v1::Route, String> {
        let response = self.response;
        let mut headers = response.headers.0;
        let body = match (response.body, response.json) {
            (Some(_), Some(_)) => return Err("response: give `body` or `json`, not both".into()),
            (Some(text), None) => text.into_bytes(),
            (None, Some(json)) => {
                if !headers
                    .iter()
                    .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
                {
                    headers.push(("content-type".into(), "application/json".into()));
                }
                json.to_string().into_bytes()
            }
            (None, None) => Vec::new(),
        };
        let route = v1::Route {
            name: self.name,
            method: self.method,
            path: self.path,
            request_match: mockplane_proto::convert::request_match(&self.matcher),
            priority: self.priority,
            latency: self.latency.as_ref().map(mockplane_proto::convert::latency),
            chaos: self.chaos.as_ref().map(mockplane_proto::convert::chaos),
            state: self.state.map(|rule| v1::RouteState {
                machine: rule.machine,
                when: rule.when.unwrap_or_default(),
                set: rule.set.unwrap_or_default(),
                key: rule.key.unwrap_or_default(),
            }),
            response: Some(v1::MockResponse {
                status: response.status,
                headers: headers
                    .into_iter()
                    .map(|(name, value)| v1::Header { name, value })
                    .collect(),
                body,
                template: response.template,
            }),
            ..Default::default()
        };
        parse_route(&route).map_err(|e| e.to_string())?;
        Ok(route)
    }

    /// A route in file form, which reads back as the same route. The body
    /// is written as `json:` when that gives back the very same bytes (and
    /// a content type is there to keep), else as `body:` text; a body that
    /// is not UTF-8 text has no file form.
    pub fn from_route(route: &v1::Route) -> Result<Self, String> {
        let realism =
            mockplane_proto::convert::parse_realism(route.latency.as_ref(), route.chaos.as_ref())
                .map_err(|e| e.to_string())?;
        let matcher = mockplane_proto::convert::parse_request_match(route.request_match.as_ref())
            .map_err(|e| e.to_string())?;
        let wire = route.response.clone().unwrap_or_default();
        let mut headers: Vec<(String, String)> = wire
            .headers
            .into_iter()
            .map(|h| (h.name, h.value))
            .collect();
        let text = String::from_utf8(wire.body)
            .map_err(|_| "response.body: is not UTF-8 text, which a file cannot hold".to_owned())?;
        let content_types: Vec<usize> = headers
            .iter()
            .enumerate()
            .filter(|(_, (name, _))| name.eq_ignore_ascii_case("content-type"))
            .map(|(index, _)| index)
            .collect();
        let json = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .filter(|value| {
                // Only when `json:` gives back the very same bytes.
                !content_types.is_empty()
                    && serde_json::to_string(value).is_ok_and(|compact| compact == text)
            });
        let (body, json) = match json {
            Some(value) => {
                // Reading `json:` adds `content-type: application/json` at
                // the end when there is none: leave out the one that adds.
                if let [index] = content_types[..]
                    && index + 1 == headers.len()
                    && headers[index].0 == "content-type"
                    && headers[index].1 == "application/json"
                {
                    headers.pop();
                }
                (None, Some(value))
            }
            None => ((!text.is_empty()).then_some(text), None),
        };
        Ok(Self {
            name: route.name.clone(),
            method: route.method.clone(),
            path: route.path.clone(),
            matcher,
            priority: if route.priority == u32::from(DEFAULT_PRIORITY) {
                0
            } else {
                route.priority
            },
            latency: realism.latency,
            chaos: realism.chaos,
            state: mockplane_proto::convert::raw_state(route.state.as_ref()),
            response: MockResponse {
                status: wire.status,
                headers: Headers(headers),
                body,
                json,
                template: wire.template,
            },
        })
    }
}

/// Routes in file form, in order; the error names the route at fault.
pub fn to_file_form(routes: &[v1::Route]) -> anyhow::Result<Vec<MockRoute>> {
    routes
        .iter()
        .enumerate()
        .map(|(index, route)| {
            MockRoute::from_route(route).map_err(|message| {
                anyhow!(
                    "routes[{index}] ({} {}): {message}",
                    route.method,
                    route.path
                )
            })
        })
        .collect()
}

/// Reads a file's text as a document: its nesting is checked first, in one
/// pass, so a hostile file is refused at once instead of keeping the YAML
/// parser busy; then `json` picks the JSON parser, otherwise YAML (a
/// superset of JSON) reads it.
pub fn document(text: &str, json: bool) -> anyhow::Result<serde_json::Value> {
    mockplane_shared::model::nesting::check(text).map_err(|e| anyhow!("the file {e}"))?;
    Ok(if json {
        serde_json::from_str(text).map_err(|e| anyhow!("not valid JSON: {e}"))?
    } else {
        serde_yaml::from_str(text).map_err(|e| anyhow!("not valid YAML: {e}"))?
    })
}

/// Refuses two routes of one file that match the same requests, naming
/// both (the server would see the second only as a clash).
pub fn check_distinct(routes: &[v1::Route]) -> anyhow::Result<()> {
    let specs = routes
        .iter()
        .enumerate()
        .map(|(index, route)| {
            mockplane_proto::convert::parse_route(route)
                .map_err(|e| anyhow!("routes[{index}]: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Some((first, index)) = mockplane_shared::model::route::first_duplicate(&specs) {
        anyhow::bail!(
            "routes[{index}] ({} {}) matches the same requests as routes[{first}]; change one's method, path, matchers or priority",
            specs[index].method,
            specs[index].path
        );
    }
    Ok(())
}

/// Parses mock file text. `json` picks the JSON parser; otherwise YAML (a
/// superset of JSON) reads it.
pub fn parse(text: &str, json: bool) -> anyhow::Result<Vec<v1::Route>> {
    let document = document(text, json)?;
    let routes = match document {
        list @ serde_json::Value::Array(_) => list,
        serde_json::Value::Object(mut map) => {
            let routes = map
                .remove("routes")
                .ok_or_else(|| anyhow!("the file has no `routes:` list"))?;
            if let Some(unknown) = map.keys().next() {
                anyhow::bail!(
                    "unknown top-level field `{unknown}`; a mock file has only `routes:`"
                );
            }
            routes
        }
        _ => anyhow::bail!("a mock file is a list of routes, or a map with a `routes:` list"),
    };
    let routes = parse_routes(routes)?;
    if routes.is_empty() {
        anyhow::bail!("the file has no routes");
    }
    Ok(routes)
}

/// Parses and checks a list of routes in file form (the `routes:` of a
/// mock or scenario file); errors name the route and the field.
pub fn parse_routes(routes: serde_json::Value) -> anyhow::Result<Vec<v1::Route>> {
    let routes: Vec<MockRoute> = serde_path_to_error::deserialize(routes)
        .map_err(|e| anyhow!("routes{}: {}", segment_path(e.path()), e.inner()))?;
    routes
        .into_iter()
        .enumerate()
        .map(|(index, route)| {
            route
                .into_route()
                .map_err(|message| anyhow!("routes[{index}].{message}"))
        })
        .collect()
}

/// `[1].response.status` for a path inside the routes list.
pub fn segment_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    path.iter()
        .map(|segment| match segment {
            Segment::Seq { index } => format!("[{index}]"),
            Segment::Map { key } => format!(".{key}"),
            Segment::Enum { variant } => format!(".{variant}"),
            Segment::Unknown => ".?".to_owned(),
        })
        .collect()
}

/// Reads a YAML or JSON file holding `what`; `-` is standard input. Also
/// says whether the file is JSON (by its extension).
pub fn read(path: &Path, what: &str) -> anyhow::Result<(String, bool)> {
    if path == Path::new("-") {
        let text = std::io::read_to_string(std::io::stdin())
            .with_context(|| format!("reading {what} from standard input"))?;
        Ok((text, false))
    } else {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        Ok((text, json))
    }
}

/// Reads and parses a mock file; `-` is standard input.
pub fn load(path: &Path) -> anyhow::Result<Vec<v1::Route>> {
    let (text, json) = read(path, "routes")?;
    parse(&text, json).with_context(|| format!("{} is not a valid mock file", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str, json: bool) -> String {
        format!("{:#}", parse(text, json).unwrap_err())
    }

    #[test]
    fn reads_yaml_and_json_forms() {
        let yaml = r#"
routes:
  - name: one user
    path: /users/{id}
    response:
      headers:
        x-b: "2"
        x-a: "1"
      json: {"id": 1}
  - method: post
    path: /users
    response: {status: 201, body: created}
"#;
        let routes = parse(yaml, false).unwrap();
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[0].method, "GET");
        let response = routes[0].response.as_ref().unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, br#"{"id":1}"#);
        let names: Vec<&str> = response.headers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["x-b", "x-a", "content-type"]);
        assert_eq!(routes[1].response.as_ref().unwrap().status, 201);

        let json = r#"[{"path": "/a", "response": {"headers": [{"name": "set-cookie", "value": "a=1"}, {"name": "set-cookie", "value": "b=2"}]}}]"#;
        let routes = parse(json, true).unwrap();
        assert_eq!(routes[0].response.as_ref().unwrap().headers.len(), 2);

        // Everything but the path has a default.
        let routes = parse("- path: /minimal\n", false).unwrap();
        assert_eq!(routes[0].method, "GET");
        assert_eq!(routes[0].response.as_ref().unwrap().status, 200);
    }

    #[test]
    fn reads_state() {
        let yaml = "- path: /cart\n  state: { machine: cart, when: started, set: full, key: \"header:x-run\" }\n";
        let routes = parse(yaml, false).unwrap();
        assert_eq!(
            routes[0].state,
            Some(v1::RouteState {
                machine: "cart".into(),
                when: "started".into(),
                set: "full".into(),
                key: "header:x-run".into(),
            })
        );
        assert_eq!(parse("- path: /a\n", false).unwrap()[0].state, None);
    }

    #[test]
    fn the_example_file_is_valid() {
        let routes = parse(include_str!("../../examples/mocks.yaml"), false).unwrap();
        assert_eq!(routes.len(), 4);
    }

    #[test]
    fn errors_name_the_route_and_field() {
        let cases = [
            (
                "routes:\n  - path: /a\n  - path: /b\n    response: {status: 700}\n",
                "routes[1].response.status",
            ),
            (
                "routes:\n  - path: /a\n    method: FETCH\n",
                "routes[0].method",
            ),
            ("routes:\n  - path: a\n", "routes[0].path"),
            ("routes:\n  - path: /a\n    reponse: {}\n", "reponse"),
            (
                "routes:\n  - path: /a\n    response: {status: abc}\n",
                "routes[0].response.status",
            ),
            (
                "routes:\n  - path: /a\n    response: {body: x, json: 1}\n",
                "not both",
            ),
            ("routes: []\n", "no routes"),
            ("routes:\n  - method: GET\n", "path"),
            (": : :", "YAML"),
            ("just text", "list of routes"),
            ("routs: []", "no `routes:`"),
            ("routes: []\nextra: 1\n", "unknown top-level field"),
            (
                "routes:\n  - path: /a\n    response: {headers: 5}\n",
                "routes[0].response.headers",
            ),
            (
                "routes:\n  - path: /a\n  - path: /b\n    state: {machine: cart, when: full, key: \"cookie:x\"}\n",
                "routes[1].state.key",
            ),
            (
                "routes:\n  - path: /users/{id}\n    state: {machine: m, set: s, key: \"param:uid\"}\n",
                "routes[0].state.key: the path has no parameter \"uid\"",
            ),
            (
                "routes:\n  - path: /a\n    state: {machine: cart}\n",
                "routes[0].state: give `when`",
            ),
            (
                "routes:\n  - path: /a\n    state: {machine: cart, when: full, sett: x}\n",
                "routes[0].state.sett: unknown field `sett`",
            ),
        ];
        for (text, expected) in cases {
            let message = error(text, false);
            assert!(message.contains(expected), "{text:?} gave {message:?}");
        }
        let message = error(
            r#"{"routes": [{"path": "/a", "response": {"status": "x"}}]}"#,
            true,
        );
        assert!(message.contains("routes[0].response.status"), "{message}");
    }
}
