//! Request matchers beyond method and path: query parameters, headers and the
//! body. Parsed and compiled once (regexes, JSONPath expressions, lower-cased
//! needles) when a route is validated, so matching a request compiles
//! nothing.
//!
//! The file form (mock files, the database) is camelCase JSON/YAML:
//!
//! ```yaml
//! query:   [{ name: status, equals: active }]
//! headers: [{ name: x-tenant, regex: "^t-[0-9]+$" }, { name: authorization, present: true }]
//! body:    [{ json: { kind: order }, ignoreExtraFields: true }, { jsonPath: "$.items[0].sku", equals: A-1 }]
//! ```

use std::borrow::Cow;
use std::cell::OnceCell;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::model::error::FieldError;
use crate::model::pattern::Pattern;

/// Most matchers (query + headers + body) on one route.
pub const MAX_MATCHERS: usize = 32;
/// Longest text an `equals` or `contains` may compare with.
pub const MAX_MATCH_TEXT: usize = 4096;
/// Largest JSON document a `json` body matcher may hold, encoded.
pub const MAX_MATCH_JSON: usize = 64 * 1024;
/// Arrays up to this length are compared order-insensitively by a full
/// matching; longer ones greedily.
const EXACT_UNORDERED: usize = 64;

/// A test on one text value (a query parameter, a header, the body or what a
/// JSONPath selects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextTest {
    Equals(String),
    Contains(String),
    Regex(Pattern),
    /// The value exists (with any text).
    Present,
    /// The value does not exist.
    Absent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringMatch {
    pub test: TextTest,
    pub ignore_case: bool,
    /// `Equals`/`Contains` text, lower-cased when `ignore_case`.
    needle: String,
}

impl StringMatch {
    pub fn new(test: TextTest, ignore_case: bool) -> Result<Self, String> {
        let needle = match &test {
            TextTest::Equals(text) | TextTest::Contains(text) => {
                if text.len() > MAX_MATCH_TEXT {
                    return Err(format!(
                        "text to compare must be at most {MAX_MATCH_TEXT} bytes, got {}",
                        text.len()
                    ));
                }
                if ignore_case {
                    text.to_lowercase()
                } else {
                    text.clone()
                }
            }
            _ => String::new(),
        };
        let test = match test {
            TextTest::Regex(pattern) if ignore_case && !pattern.as_str().starts_with("(?i)") => {
                TextTest::Regex(Pattern::anywhere(&format!("(?i){}", pattern.as_str()))?)
            }
            other => other,
        };
        Ok(Self {
            test,
            ignore_case,
            needle,
        })
    }

    /// Whether the values a request has for this key pass: `Present` needs
    /// one, `Absent` none, every other test one value that matches.
    pub fn matches_any<'v>(&self, mut values: impl Iterator<Item = &'v str>) -> bool {
        match self.test {
            TextTest::Present => values.next().is_some(),
            TextTest::Absent => values.next().is_none(),
            _ => values.any(|value| self.matches(value)),
        }
    }

    /// Whether one existing value passes.
    pub fn matches(&self, value: &str) -> bool {
        let value: Cow<'_, str> = if self.ignore_case && !matches!(self.test, TextTest::Regex(_)) {
            Cow::Owned(value.to_lowercase())
        } else {
            Cow::Borrowed(value)
        };
        match &self.test {
            TextTest::Equals(_) => *value == *self.needle,
            TextTest::Contains(_) => value.contains(self.needle.as_str()),
            TextTest::Regex(pattern) => pattern.is_match(&value),
            TextTest::Present => true,
            TextTest::Absent => false,
        }
    }

    fn describe(&self) -> String {
        let case = if self.ignore_case {
            " (ignoring case)"
        } else {
            ""
        };
        match &self.test {
            TextTest::Equals(text) => format!("equal {text:?}{case}"),
            TextTest::Contains(text) => format!("contain {text:?}{case}"),
            TextTest::Regex(pattern) => format!("match /{}/", user_regex(pattern)),
            TextTest::Present => "be present".into(),
            TextTest::Absent => "be absent".into(),
        }
    }
}

fn user_regex(pattern: &Pattern) -> &str {
    pattern
        .as_str()
        .strip_prefix("(?i)")
        .unwrap_or(pattern.as_str())
}

/// A query parameter or header and the test its values must pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawFieldMatch", into = "RawFieldMatch")]
pub struct FieldMatch {
    pub name: String,
    pub test: StringMatch,
}

/// A JSONPath expression (RFC 9535), parsed once. Equal when the sources
/// are equal.
#[derive(Clone)]
pub struct JsonPathExpr {
    source: String,
    path: serde_json_path::JsonPath,
}

impl JsonPathExpr {
    pub fn parse(source: &str) -> Result<Self, String> {
        if source.len() > MAX_MATCH_TEXT {
            return Err(format!(
                "a JSONPath must be at most {MAX_MATCH_TEXT} characters"
            ));
        }
        let path = serde_json_path::JsonPath::parse(source)
            .map_err(|e| format!("invalid JSONPath {source:?}: {e}"))?;
        Ok(Self {
            source: source.to_owned(),
            path,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The nodes the path selects in a document.
    pub fn select<'v>(&self, document: &'v Value) -> Vec<&'v Value> {
        self.path.query(document).all()
    }
}

impl fmt::Debug for JsonPathExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonPath({:?})", self.source)
    }
}

impl PartialEq for JsonPathExpr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for JsonPathExpr {}

/// A test on the request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawBodyMatch", into = "RawBodyMatch")]
pub enum BodyMatch {
    /// The body is JSON equal to `value`; objects may carry more fields when
    /// `ignore_extra_fields`, arrays may be in any order when
    /// `ignore_array_order`. Numbers compare by value (1 equals 1.0).
    Json {
        value: Value,
        ignore_extra_fields: bool,
        ignore_array_order: bool,
    },
    /// The body is JSON and what `path` selects passes `test` (any selected
    /// node; strings by their text, other values as JSON). Without a test,
    /// the path must select something.
    JsonPath {
        path: JsonPathExpr,
        test: Option<StringMatch>,
    },
    /// The body as text (UTF-8, invalid bytes replaced).
    Text(StringMatch),
}

/// What a route requires of a request beyond method and path. Every matcher
/// must pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<FieldMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<FieldMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body: Vec<BodyMatch>,
}

impl RequestMatch {
    pub fn is_empty(&self) -> bool {
        self.query.is_empty() && self.headers.is_empty() && self.body.is_empty()
    }

    /// How many matchers: the route with more is the more specific.
    pub fn len(&self) -> usize {
        self.query.len() + self.headers.len() + self.body.len()
    }

    pub fn needs_body(&self) -> bool {
        !self.body.is_empty()
    }

    /// Checks what no single matcher can and lower-cases header names.
    pub fn normalized(mut self) -> Result<Self, FieldError> {
        if self.len() > MAX_MATCHERS {
            return Err(FieldError::new(
                "match",
                format!(
                    "at most {MAX_MATCHERS} matchers per route, got {}",
                    self.len()
                ),
            ));
        }
        for (index, header) in self.headers.iter_mut().enumerate() {
            let name = http::HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| {
                FieldError::new(
                    format!("match.headers[{index}].name"),
                    format!("{:?} is not a valid header name", header.name),
                )
            })?;
            header.name = name.as_str().to_owned();
        }
        Ok(self)
    }

    /// A short digest identifying what this matches: routes with the same
    /// method, path shape, priority and fingerprint match the same requests.
    /// Independent of the order matchers are listed in.
    pub fn fingerprint(&self) -> String {
        let mut parts: Vec<String> = Vec::with_capacity(self.len());
        let json = |v: &dyn erased::Json| v.to_json();
        parts.extend(self.query.iter().map(|m| format!("q{}", json(m))));
        parts.extend(self.headers.iter().map(|m| format!("h{}", json(m))));
        parts.extend(self.body.iter().map(|m| format!("b{}", json(m))));
        parts.sort_unstable();
        let digest = Sha256::digest(parts.join("\n").as_bytes());
        hex::encode(&digest[..12])
    }

    /// Whether a request passes every matcher.
    pub fn matches(&self, request: &RequestParts<'_>) -> bool {
        self.query
            .iter()
            .all(|m| m.test.matches_any(request.query_values(&m.name)))
            && self
                .headers
                .iter()
                .all(|m| m.test.matches_any(request.header_values(&m.name)))
            && self.body.iter().all(|m| m.matches(request))
    }

    /// Why a request does not pass, one line per failing matcher, for
    /// near-miss reports. Empty when it passes.
    pub fn explain(&self, request: &RequestParts<'_>) -> Vec<String> {
        let mut reasons = Vec::new();
        for m in &self.query {
            if !m.test.matches_any(request.query_values(&m.name)) {
                reasons.push(format!(
                    "query parameter {:?} must {}",
                    m.name,
                    m.test.describe()
                ));
            }
        }
        for m in &self.headers {
            if !m.test.matches_any(request.header_values(&m.name)) {
                reasons.push(format!("header {:?} must {}", m.name, m.test.describe()));
            }
        }
        for m in &self.body {
            if !m.matches(request) {
                reasons.push(m.describe());
            }
        }
        reasons
    }
}

mod erased {
    pub trait Json {
        fn to_json(&self) -> String;
    }

    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string(self).unwrap_or_default()
        }
    }
}

impl BodyMatch {
    pub fn matches(&self, request: &RequestParts<'_>) -> bool {
        match self {
            BodyMatch::Json {
                value,
                ignore_extra_fields,
                ignore_array_order,
            } => request.json().is_some_and(|actual| {
                json_matches(value, actual, *ignore_extra_fields, *ignore_array_order)
            }),
            BodyMatch::JsonPath { path, test } => {
                let Some(document) = request.json() else {
                    return false;
                };
                let selected = path.select(document);
                match test {
                    None => !selected.is_empty(),
                    Some(test) => {
                        let texts: Vec<Cow<'_, str>> = selected
                            .iter()
                            .map(|node| match node {
                                Value::String(text) => Cow::Borrowed(text.as_str()),
                                other => Cow::Owned(other.to_string()),
                            })
                            .collect();
                        test.matches_any(texts.iter().map(|t| t.as_ref()))
                    }
                }
            }
            BodyMatch::Text(test) => {
                let body = request.body_text();
                test.matches_any((!body.is_empty()).then_some(body.as_ref()).into_iter())
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            BodyMatch::Json {
                value,
                ignore_extra_fields,
                ignore_array_order,
            } => {
                let mut text = value.to_string();
                if text.len() > 80 {
                    let cut = (0..=80)
                        .rev()
                        .find(|i| text.is_char_boundary(*i))
                        .unwrap_or(0);
                    text.truncate(cut);
                    text.push('…');
                }
                let mut how = Vec::new();
                if *ignore_extra_fields {
                    how.push("ignoring extra fields");
                }
                if *ignore_array_order {
                    how.push("ignoring array order");
                }
                let how = if how.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", how.join(", "))
                };
                format!("body must be JSON equal to {text}{how}")
            }
            BodyMatch::JsonPath { path, test: None } => {
                format!(
                    "body must be JSON where {} selects something",
                    path.as_str()
                )
            }
            BodyMatch::JsonPath {
                path,
                test: Some(test),
            } => format!("body JSON at {} must {}", path.as_str(), test.describe()),
            BodyMatch::Text(test) => format!("body must {}", test.describe()),
        }
    }
}

/// JSON equality with the two relaxations of [`BodyMatch::Json`].
pub fn json_matches(expected: &Value, actual: &Value, extra: bool, any_order: bool) -> bool {
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => {
            (extra || want.len() == got.len())
                && want.iter().all(|(key, value)| {
                    got.get(key)
                        .is_some_and(|other| json_matches(value, other, extra, any_order))
                })
        }
        (Value::Array(want), Value::Array(got)) => {
            if want.len() != got.len() {
                return false;
            }
            if !any_order {
                return want
                    .iter()
                    .zip(got)
                    .all(|(w, g)| json_matches(w, g, extra, any_order));
            }
            unordered_matches(want, got, extra)
        }
        (Value::Number(want), Value::Number(got)) => match (want.as_f64(), got.as_f64()) {
            (Some(w), Some(g)) => w == g,
            _ => want == got,
        },
        (want, got) => want == got,
    }
}

/// Whether every expected element can be paired with its own actual element.
/// A full bipartite matching (augmenting paths) for short arrays, greedy for
/// long ones.
fn unordered_matches(want: &[Value], got: &[Value], extra: bool) -> bool {
    let fits = |w: &Value, g: &Value| json_matches(w, g, extra, true);
    if want.len() > EXACT_UNORDERED {
        let mut used = vec![false; got.len()];
        return want.iter().all(|w| {
            let found = (0..got.len()).find(|&j| !used[j] && fits(w, &got[j]));
            if let Some(j) = found {
                used[j] = true;
            }
            found.is_some()
        });
    }
    let edges: Vec<Vec<usize>> = want
        .iter()
        .map(|w| (0..got.len()).filter(|&j| fits(w, &got[j])).collect())
        .collect();
    let mut owner: Vec<Option<usize>> = vec![None; got.len()];
    fn augment(
        i: usize,
        edges: &[Vec<usize>],
        owner: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        for &j in &edges[i] {
            if seen[j] {
                continue;
            }
            seen[j] = true;
            if owner[j].is_none_or(|other| augment(other, edges, owner, seen)) {
                owner[j] = Some(i);
                return true;
            }
        }
        false
    }
    (0..want.len()).all(|i| {
        let mut seen = vec![false; got.len()];
        augment(i, &edges, &mut owner, &mut seen)
    })
}

/// The parts of a request matchers look at, decoded lazily and at most once
/// per request however many routes are tried.
pub struct RequestParts<'a> {
    query: Option<&'a str>,
    headers: &'a http::HeaderMap,
    body: &'a [u8],
    decoded_query: OnceCell<Vec<(Cow<'a, str>, Cow<'a, str>)>>,
    json: OnceCell<Option<Value>>,
}

impl<'a> RequestParts<'a> {
    pub fn new(query: Option<&'a str>, headers: &'a http::HeaderMap, body: &'a [u8]) -> Self {
        Self {
            query,
            headers,
            body,
            decoded_query: OnceCell::new(),
            json: OnceCell::new(),
        }
    }

    /// The raw query string, without `?`.
    pub fn raw_query(&self) -> Option<&'a str> {
        self.query
    }

    pub fn headers(&self) -> &'a http::HeaderMap {
        self.headers
    }

    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// Query pairs, percent- and `+`-decoded.
    pub fn query_pairs(&self) -> &[(Cow<'a, str>, Cow<'a, str>)] {
        self.decoded_query.get_or_init(|| {
            self.query
                .map(|q| form_urlencoded::parse(q.as_bytes()).collect())
                .unwrap_or_default()
        })
    }

    /// Every value of a query parameter, in order.
    pub fn query_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.query_pairs()
            .iter()
            .filter(move |(key, _)| key == name)
            .map(|(_, value)| value.as_ref())
    }

    /// Every value of a header (name in lower case) that is valid text.
    pub fn header_values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|value| value.to_str().ok())
    }

    /// The body parsed as JSON, or `None` when it is not JSON.
    pub fn json(&self) -> Option<&Value> {
        self.json
            .get_or_init(|| serde_json::from_slice(self.body).ok())
            .as_ref()
    }

    pub fn body_text(&self) -> Cow<'a, str> {
        String::from_utf8_lossy(self.body)
    }
}

// ---- The file form -------------------------------------------------------

/// A text test as files spell it: exactly one of `equals`, `contains`,
/// `regex`, `present`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawTextTest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// `true`: the value must exist; `false`: it must not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_case: bool,
}

impl RawTextTest {
    fn is_empty(&self) -> bool {
        self.equals.is_none()
            && self.contains.is_none()
            && self.regex.is_none()
            && self.present.is_none()
    }

    /// The test, or `None` when none is given.
    pub fn parse(self) -> Result<Option<StringMatch>, String> {
        let given = [
            self.equals.is_some(),
            self.contains.is_some(),
            self.regex.is_some(),
            self.present.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count();
        if given > 1 {
            return Err("give only one of equals, contains, regex or present".into());
        }
        if self.ignore_case && self.present.is_some() {
            return Err("ignoreCase goes with equals, contains or regex, not present".into());
        }
        let test = if let Some(text) = self.equals {
            TextTest::Equals(text)
        } else if let Some(text) = self.contains {
            TextTest::Contains(text)
        } else if let Some(source) = self.regex {
            TextTest::Regex(Pattern::anywhere(&source)?)
        } else if let Some(present) = self.present {
            if present {
                TextTest::Present
            } else {
                TextTest::Absent
            }
        } else {
            if self.ignore_case {
                return Err("ignoreCase needs equals, contains or regex".into());
            }
            return Ok(None);
        };
        StringMatch::new(test, self.ignore_case).map(Some)
    }

    pub fn from_match(test: &StringMatch) -> Self {
        let mut raw = Self {
            ignore_case: test.ignore_case,
            ..Self::default()
        };
        match &test.test {
            TextTest::Equals(text) => raw.equals = Some(text.clone()),
            TextTest::Contains(text) => raw.contains = Some(text.clone()),
            TextTest::Regex(pattern) => raw.regex = Some(user_regex(pattern).to_owned()),
            TextTest::Present => raw.present = Some(true),
            TextTest::Absent => raw.present = Some(false),
        }
        raw
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawFieldMatch {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_case: bool,
}

/// The text-test fields a raw form carries, moved out.
macro_rules! text_test_of {
    ($raw:expr) => {
        RawTextTest {
            equals: $raw.equals,
            contains: $raw.contains,
            regex: $raw.regex,
            present: $raw.present,
            ignore_case: $raw.ignore_case,
        }
    };
}

/// A raw form with a text test's fields spread into it.
macro_rules! with_text_test {
    ($test:expr, $base:expr) => {{
        let test = $test;
        Self {
            equals: test.equals,
            contains: test.contains,
            regex: test.regex,
            present: test.present,
            ignore_case: test.ignore_case,
            ..$base
        }
    }};
}

impl FieldMatch {
    /// A matcher on the query parameter or header `name`; the test is
    /// required.
    pub fn new(name: String, test: RawTextTest) -> Result<Self, String> {
        if name.is_empty() || name.len() > 256 {
            return Err("name must be 1 to 256 characters".into());
        }
        let test = test
            .parse()?
            .ok_or_else(|| format!("{name:?} needs a test: equals, contains, regex or present"))?;
        Ok(Self { name, test })
    }
}

impl TryFrom<RawFieldMatch> for FieldMatch {
    type Error = String;

    fn try_from(raw: RawFieldMatch) -> Result<Self, String> {
        let name = raw.name.clone();
        FieldMatch::new(name, text_test_of!(raw))
    }
}

impl From<FieldMatch> for RawFieldMatch {
    fn from(m: FieldMatch) -> Self {
        with_text_test!(
            RawTextTest::from_match(&m.test),
            Self {
                name: m.name,
                equals: None,
                contains: None,
                regex: None,
                present: None,
                ignore_case: false,
            }
        )
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawBodyMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_extra_fields: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_array_order: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_case: bool,
}

impl BodyMatch {
    /// A body matcher from its parts as files and the API give them: `json`
    /// (with its two relaxations), or `json_path` with an optional test, or
    /// a text test alone.
    pub fn new(
        json: Option<Value>,
        ignore_extra_fields: bool,
        ignore_array_order: bool,
        json_path: Option<String>,
        test: RawTextTest,
    ) -> Result<Self, String> {
        let relaxed = ignore_extra_fields || ignore_array_order;
        match (json, json_path) {
            (Some(_), Some(_)) => Err("give either json or jsonPath, not both".into()),
            (Some(value), None) => {
                if !test.is_empty() {
                    return Err(
                        "json compares the whole body; equals, contains, regex and present go with jsonPath or alone".into(),
                    );
                }
                let size = value.to_string().len();
                if size > MAX_MATCH_JSON {
                    return Err(format!(
                        "json must be at most {MAX_MATCH_JSON} bytes encoded, got {size}"
                    ));
                }
                Ok(BodyMatch::Json {
                    value,
                    ignore_extra_fields,
                    ignore_array_order,
                })
            }
            (None, json_path) if relaxed => Err(format!(
                "ignoreExtraFields and ignoreArrayOrder go with json{}",
                if json_path.is_some() {
                    ", not jsonPath"
                } else {
                    ""
                }
            )),
            (None, Some(path)) => Ok(BodyMatch::JsonPath {
                path: JsonPathExpr::parse(&path)?,
                test: test.parse()?,
            }),
            (None, None) => Ok(BodyMatch::Text(test.parse()?.ok_or(
                "a body matcher needs json, jsonPath, or one of equals, contains, regex, present",
            )?)),
        }
    }
}

impl TryFrom<RawBodyMatch> for BodyMatch {
    type Error = String;

    fn try_from(mut raw: RawBodyMatch) -> Result<Self, String> {
        let (json, json_path) = (raw.json.take(), raw.json_path.take());
        let (extra, order) = (raw.ignore_extra_fields, raw.ignore_array_order);
        BodyMatch::new(json, extra, order, json_path, text_test_of!(raw))
    }
}

impl From<BodyMatch> for RawBodyMatch {
    fn from(m: BodyMatch) -> Self {
        match m {
            BodyMatch::Json {
                value,
                ignore_extra_fields,
                ignore_array_order,
            } => Self {
                json: Some(value),
                ignore_extra_fields,
                ignore_array_order,
                ..Self::default()
            },
            BodyMatch::JsonPath { path, test } => with_text_test!(
                test.as_ref()
                    .map(RawTextTest::from_match)
                    .unwrap_or_default(),
                Self {
                    json_path: Some(path.source),
                    ..Self::default()
                }
            ),
            BodyMatch::Text(test) => {
                with_text_test!(RawTextTest::from_match(&test), Self::default())
            }
        }
    }
}

#[cfg(test)]
mod tests;
