//! Routes (mocks): what they match and what they answer, validated.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;

use crate::model::error::FieldError;
use crate::model::matcher::RequestMatch;
use crate::model::pattern::Pattern;
use crate::model::realism::Realism;
use crate::model::state::{RawStateRule, StateRule};
use crate::model::template::Template;

/// Longest path template accepted.
pub const MAX_PATH_LEN: usize = 2048;
/// Largest response body of one route.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Most response headers on one route.
pub const MAX_HEADERS: usize = 64;
/// Longest route or workspace name.
pub const MAX_NAME_LEN: usize = 200;

/// The HTTP method a route answers. `Any` answers every method that has no
/// route of its own at the same path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Any,
}

impl Method {
    pub const ALL: [Method; 8] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Patch,
        Method::Delete,
        Method::Options,
        Method::Any,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Any => "ANY",
        }
    }

    /// The method of a request; `None` for methods no route can name (they
    /// are answered only by `Any` routes).
    pub fn of_request(method: &http::Method) -> Option<Method> {
        Some(match *method {
            http::Method::GET => Method::Get,
            http::Method::HEAD => Method::Head,
            http::Method::POST => Method::Post,
            http::Method::PUT => Method::Put,
            http::Method::PATCH => Method::Patch,
            http::Method::DELETE => Method::Delete,
            http::Method::OPTIONS => Method::Options,
            _ => return None,
        })
    }

    /// Dense index for per-node method tables.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first pair of routes in `routes` that match the same requests, as
/// (earlier index, later index): one batch must not hold both.
pub fn first_duplicate(routes: &[RouteSpec]) -> Option<(usize, usize)> {
    let mut seen = std::collections::HashMap::with_capacity(routes.len());
    routes.iter().enumerate().find_map(|(index, spec)| {
        seen.insert(spec.match_key(), index)
            .map(|first| (first, index))
    })
}

/// Most routes one CreateRoutes call takes (the CLI sends larger files in
/// batches of this size).
pub const MAX_ROUTES_PER_CALL: usize = 1000;

/// The status of a response that names none.
pub const DEFAULT_STATUS: u16 = 200;

impl Method {
    /// A route's method as users give it: empty (unset) means GET, as in
    /// mock files.
    pub fn parse_or_get(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            Ok(Method::Get)
        } else {
            raw.parse()
        }
    }
}

impl FromStr for Method {
    type Err = String;

    /// Case-insensitive; the canonical form is upper case.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Method::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(raw))
            .ok_or_else(|| {
                format!(
                    "unknown method {raw:?}; use one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS or ANY"
                )
            })
    }
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// Matches exactly this text (compared with the raw request segment).
    Literal(String),
    /// Matches one non-empty segment that fits `kind`; the name is for
    /// templates.
    Param { name: String, kind: ParamKind },
}

/// What a path parameter accepts: `{id}` anything, `{id:int}` an integer,
/// `{id:uuid}` a UUID, `{id:<regex>}` what the regex matches in full.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ParamKind {
    Any,
    Int,
    Uuid,
    Pattern(Pattern),
}

impl ParamKind {
    /// Whether a raw request segment fits. Empty segments never do.
    pub fn accepts(&self, segment: &str) -> bool {
        if segment.is_empty() {
            return false;
        }
        match self {
            ParamKind::Any => true,
            ParamKind::Int => {
                let digits = segment.strip_prefix('-').unwrap_or(segment);
                !digits.is_empty()
                    && digits.len() <= 19
                    && digits.bytes().all(|b| b.is_ascii_digit())
            }
            ParamKind::Uuid => is_uuid(segment),
            ParamKind::Pattern(pattern) => pattern.is_match(segment),
        }
    }

    /// Order among the parameters of one trie node: the narrower first, a
    /// plain `{name}` last.
    pub fn rank(&self) -> u8 {
        match self {
            ParamKind::Uuid => 0,
            ParamKind::Int => 1,
            ParamKind::Pattern(_) => 2,
            ParamKind::Any => 3,
        }
    }

    fn shape(&self) -> String {
        match self {
            ParamKind::Any => "{}".into(),
            ParamKind::Int => "{:int}".into(),
            ParamKind::Uuid => "{:uuid}".into(),
            ParamKind::Pattern(pattern) => format!("{{:{}}}", pattern.as_str()),
        }
    }
}

fn is_uuid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            8 | 13 | 18 | 23 => *byte == b'-',
            _ => byte.is_ascii_hexdigit(),
        })
}

/// A parsed path template such as `/users/{id}/orders`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathTemplate {
    raw: String,
    segments: Vec<Segment>,
}

impl PathTemplate {
    /// Parses and checks a template. Rules: starts with `/`; at most
    /// [`MAX_PATH_LEN`] characters; no query (`?`), fragment (`#`), spaces or
    /// control characters; no empty segment except a trailing `/`; a
    /// parameter is a whole segment `{name}` with `name` of letters, digits
    /// and `_` (not starting with a digit), each name used once.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("path must not be empty; start it with '/'".into());
        }
        if !raw.starts_with('/') {
            return Err(format!("path must start with '/', got {raw:?}"));
        }
        if raw.len() > MAX_PATH_LEN {
            return Err(format!(
                "path must be at most {MAX_PATH_LEN} characters, got {}",
                raw.len()
            ));
        }
        // `?` and `#` may appear in a parameter's regex, nowhere else.
        let mut depth = 0usize;
        let outside_braces = raw.chars().filter(move |c| {
            match c {
                '{' => depth += 1,
                '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            depth == 0
        });
        let mut suspects = raw
            .chars()
            .filter(|c| c.is_whitespace() || c.is_control())
            .chain(outside_braces.filter(|c| matches!(c, '?' | '#')));
        if let Some(bad) = suspects.next() {
            let why = match bad {
                '?' => "a query string is not part of the path",
                '#' => "a fragment is not part of the path",
                _ => "spaces and control characters must be percent-encoded",
            };
            return Err(format!("path must not contain {bad:?}: {why}"));
        }

        let body = &raw[1..];
        let mut segments = Vec::new();
        if !body.is_empty() {
            let parts: Vec<&str> = body.split('/').collect();
            let last = parts.len() - 1;
            for (index, part) in parts.iter().enumerate() {
                if part.is_empty() {
                    if index == last {
                        // A trailing slash is significant: `/users/` differs from `/users`.
                        segments.push(Segment::Literal(String::new()));
                        continue;
                    }
                    return Err("path must not contain an empty segment ('//')".into());
                }
                segments.push(parse_segment(part, &segments)?);
            }
        }
        Ok(Self {
            raw: raw.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The template with parameter names erased (`/users/{}`): two routes
    /// with the same method and shape would match exactly the same requests.
    pub fn shape(&self) -> String {
        let mut shape = String::with_capacity(self.raw.len());
        for segment in &self.segments {
            shape.push('/');
            match segment {
                Segment::Literal(text) => shape.push_str(text),
                Segment::Param { kind, .. } => shape.push_str(&kind.shape()),
            }
        }
        if shape.is_empty() {
            shape.push('/');
        }
        shape
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn parse_segment(part: &str, earlier: &[Segment]) -> Result<Segment, String> {
    if let Some(inner) = part.strip_prefix('{') {
        let Some(inner) = inner.strip_suffix('}') else {
            return Err(format!(
                "segment {part:?} opens a parameter but does not close it with '}}'"
            ));
        };
        let (name, constraint) = match inner.split_once(':') {
            Some((name, constraint)) => (name, Some(constraint)),
            None => (inner, None),
        };
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && name.len() <= 64;
        if !valid {
            return Err(format!(
                "parameter {part:?} needs a name of letters, digits and '_' that does not start with a digit"
            ));
        }
        if earlier
            .iter()
            .any(|s| matches!(s, Segment::Param { name: other, .. } if other == name))
        {
            return Err(format!("parameter {{{name}}} is used twice"));
        }
        let kind = match constraint {
            None => ParamKind::Any,
            Some("") => {
                return Err(format!(
                    "parameter {part:?} has an empty type; use {{{name}:int}}, {{{name}:uuid}} or {{{name}:<regex>}}"
                ));
            }
            Some("int") => ParamKind::Int,
            Some("uuid") => ParamKind::Uuid,
            Some(regex) => ParamKind::Pattern(
                Pattern::whole(regex).map_err(|e| format!("parameter {{{name}}}: {e}"))?,
            ),
        };
        return Ok(Segment::Param {
            name: name.to_owned(),
            kind,
        });
    }
    if part.contains(['{', '}']) {
        return Err(format!(
            "segment {part:?} mixes text and a parameter; a parameter must be a whole segment such as {{id}}"
        ));
    }
    if let Some(bad) = part.chars().find(|c| !is_path_char(*c)) {
        return Err(format!(
            "segment {part:?} contains {bad:?}, which must be percent-encoded"
        ));
    }
    Ok(Segment::Literal(part.to_owned()))
}

/// RFC 3986 `pchar`: unreserved, sub-delims, ':', '@' and '%' (for
/// percent-encoded octets).
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.'
                | '_'
                | '~'
                | '!'
                | '$'
                | '&'
                | '\''
                | '('
                | ')'
                | '*'
                | '+'
                | ','
                | ';'
                | '='
                | ':'
                | '@'
                | '%'
        )
}

/// What a route answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseSpec {
    pub status: u16,
    /// Lower-case names, in the order they are sent.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The body and header values are templates (see `template.rs`).
    pub template: bool,
}

impl ResponseSpec {
    /// Checks the response and normalizes header names to lower case.
    /// Status 0 (unset) means 200, as in mock files.
    pub fn parse(
        status: u32,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> Result<Self, FieldError> {
        let status = match u16::try_from(status) {
            Ok(0) => DEFAULT_STATUS,
            Ok(s @ 200..=599) => s,
            _ => {
                return Err(FieldError::new(
                    "status",
                    format!("must be an HTTP status from 200 to 599, got {status}"),
                ));
            }
        };
        if headers.len() > MAX_HEADERS {
            return Err(FieldError::new(
                "headers",
                format!("at most {MAX_HEADERS} headers, got {}", headers.len()),
            ));
        }
        let mut normalized = Vec::with_capacity(headers.len());
        for (index, (name, value)) in headers.into_iter().enumerate() {
            let field = format!("headers[{index}]");
            let parsed = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                FieldError::new(
                    format!("{field}.name"),
                    format!("{name:?} is not a valid header name"),
                )
            })?;
            if matches!(
                parsed.as_str(),
                "content-length" | "transfer-encoding" | "connection" | "keep-alive" | "upgrade"
            ) {
                return Err(FieldError::new(
                    format!("{field}.name"),
                    format!("{parsed} is set by the server and may not be mocked"),
                ));
            }
            if http::HeaderValue::from_str(&value).is_err() {
                return Err(FieldError::new(
                    format!("{field}.value"),
                    "header values must be visible ASCII or spaces, without line breaks",
                ));
            }
            normalized.push((parsed.as_str().to_owned(), value));
        }
        if body.len() > MAX_BODY_BYTES {
            return Err(FieldError::new(
                "body",
                format!("at most {MAX_BODY_BYTES} bytes, got {}", body.len()),
            ));
        }
        if matches!(status, 204 | 304) && !body.is_empty() {
            return Err(FieldError::new(
                "body",
                format!("a {status} response has no body"),
            ));
        }
        Ok(Self {
            status,
            headers: normalized,
            body,
            template: false,
        })
    }
}

/// Priority of a route that sets none. Lower numbers win.
pub const DEFAULT_PRIORITY: u16 = 5;
/// The lowest priority a route may have.
pub const MAX_PRIORITY: u16 = 1000;

/// A validated route as users define it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub name: String,
    pub method: Method,
    pub path: PathTemplate,
    /// What a request needs beyond method and path (empty: nothing).
    pub matcher: RequestMatch,
    /// 1 (first) to [`MAX_PRIORITY`]; among the routes a request matches,
    /// the lowest number wins, then the most specific path, then the most
    /// matchers.
    pub priority: u16,
    /// Latency and chaos of this route's answers.
    pub realism: Realism,
    /// The state machine the route needs or moves; `None`: stateless.
    pub state: Option<StateRule>,
    pub response: ResponseSpec,
}

impl RouteSpec {
    /// Parses every part of a route, naming the field that is wrong.
    pub fn parse(
        name: &str,
        method: &str,
        path: &str,
        response: impl FnOnce() -> Result<ResponseSpec, FieldError>,
    ) -> Result<Self, FieldError> {
        Ok(Self {
            name: parse_name(name).map_err(|m| FieldError::new("name", m))?,
            method: Method::parse_or_get(method).map_err(|m| FieldError::new("method", m))?,
            path: PathTemplate::parse(path).map_err(|m| FieldError::new("path", m))?,
            matcher: RequestMatch::default(),
            priority: DEFAULT_PRIORITY,
            realism: Realism::default(),
            state: None,
            response: response().map_err(|e| e.within("response"))?,
        })
    }

    /// Makes the route stateful (or not), checking the rule against the
    /// route's path parameters.
    pub fn with_state(mut self, state: Option<&RawStateRule>) -> Result<Self, FieldError> {
        self.state = match state {
            None => None,
            Some(raw) => {
                let params = self.param_names();
                Some(StateRule::parse(raw, &params).map_err(|e| e.within("state"))?)
            }
        };
        Ok(self)
    }

    /// The names of the path's parameters, in order.
    pub fn param_names(&self) -> Vec<&str> {
        self.path
            .segments()
            .iter()
            .filter_map(|segment| match segment {
                Segment::Param { name, .. } => Some(name.as_str()),
                Segment::Literal(_) => None,
            })
            .collect()
    }

    /// Sets latency and chaos, checking both.
    pub fn with_realism(mut self, realism: Realism) -> Result<Self, FieldError> {
        realism.check()?;
        self.realism = realism;
        Ok(self)
    }

    /// Makes the response a template (or not), checking the body and every
    /// header value as one.
    pub fn templated(mut self, on: bool) -> Result<Self, FieldError> {
        self.response.template = on;
        if on {
            self.templates()?;
        }
        Ok(self)
    }

    /// The parsed templates of the body and of each header value; `None`
    /// when the response is not a template.
    #[allow(clippy::type_complexity)]
    pub fn templates(&self) -> Result<Option<(Template, Vec<Template>)>, FieldError> {
        if !self.response.template {
            return Ok(None);
        }
        let params = self.param_names();
        let body = std::str::from_utf8(&self.response.body)
            .map_err(|_| FieldError::new("response.body", "a template body must be UTF-8 text"))?;
        let body =
            Template::parse(body, &params).map_err(|e| FieldError::new("response.body", e))?;
        let headers = self
            .response
            .headers
            .iter()
            .enumerate()
            .map(|(index, (_, value))| {
                Template::parse(value, &params)
                    .map_err(|e| FieldError::new(format!("response.headers[{index}].value"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some((body, headers)))
    }

    /// Sets the matchers and the priority (`0`: the default), checking both.
    pub fn matching(mut self, matcher: RequestMatch, priority: u32) -> Result<Self, FieldError> {
        self.matcher = matcher.normalized()?;
        self.priority = parse_priority(priority)?;
        Ok(self)
    }

    /// Routes with equal keys match the same requests; a workspace holds at
    /// most one route per key. Routes without matchers at the default
    /// priority keep the plain `METHOD shape` key.
    pub fn match_key(&self) -> String {
        let state = self.state.as_ref().and_then(StateRule::fingerprint);
        if self.matcher.is_empty() && self.priority == DEFAULT_PRIORITY && state.is_none() {
            format!("{} {}", self.method, self.path.shape())
        } else {
            let mut key = format!(
                "{} {} p{} m{}",
                self.method,
                self.path.shape(),
                self.priority,
                self.matcher.fingerprint()
            );
            if let Some(state) = state {
                key.push_str(" s");
                key.push_str(&state);
            }
            key
        }
    }
}

/// Changes to a route as a client sent them, unvalidated: `None` leaves a
/// part as it is. [`RoutePatch::apply`] validates the route that results, so
/// rules that span parts (a 204 has no body) hold after every update.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePatch {
    pub name: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
    pub matcher: Option<RequestMatch>,
    pub priority: Option<u32>,
    pub template: Option<bool>,
    /// `Some(None)` removes the latency.
    pub latency: Option<Option<crate::model::realism::Latency>>,
    /// `Some(None)` removes the chaos.
    pub chaos: Option<Option<crate::model::realism::Chaos>>,
    /// `Some(None)` makes the route stateless.
    pub state: Option<Option<RawStateRule>>,
    pub status: Option<u32>,
    pub headers: Option<Vec<(String, String)>>,
    pub body: Option<Bytes>,
}

impl RoutePatch {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    pub fn apply(&self, current: &RouteSpec) -> Result<RouteSpec, FieldError> {
        let response = &current.response;
        let current_state = current.state.as_ref().map(StateRule::raw);
        RouteSpec::parse(
            self.name.as_deref().unwrap_or(&current.name),
            self.method.as_deref().unwrap_or(current.method.as_str()),
            self.path.as_deref().unwrap_or(current.path.as_str()),
            || {
                ResponseSpec::parse(
                    self.status.unwrap_or(u32::from(response.status)),
                    self.headers
                        .clone()
                        .unwrap_or_else(|| response.headers.clone()),
                    self.body.clone().unwrap_or_else(|| response.body.clone()),
                )
            },
        )?
        .matching(
            self.matcher
                .clone()
                .unwrap_or_else(|| current.matcher.clone()),
            self.priority.unwrap_or(u32::from(current.priority)),
        )?
        .templated(self.template.unwrap_or(response.template))?
        .with_realism(Realism {
            latency: self.latency.unwrap_or(current.realism.latency),
            chaos: self
                .chaos
                .clone()
                .unwrap_or_else(|| current.realism.chaos.clone()),
        })?
        .with_state(match &self.state {
            Some(state) => state.as_ref(),
            None => current_state.as_ref(),
        })
    }
}

/// `0` means the default.
pub fn parse_priority(raw: u32) -> Result<u16, FieldError> {
    match raw {
        0 => Ok(DEFAULT_PRIORITY),
        1..=1000 => Ok(raw as u16),
        _ => Err(FieldError::new(
            "priority",
            format!("must be from 1 (first) to {MAX_PRIORITY}, got {raw}"),
        )),
    }
}

/// Names are optional labels: trimmed, at most [`MAX_NAME_LEN`] characters,
/// no control characters.
pub fn parse_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.chars().count() > MAX_NAME_LEN {
        return Err(format!("must be at most {MAX_NAME_LEN} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_templates() {
        let t = PathTemplate::parse("/users/{id}/orders").unwrap();
        assert_eq!(
            t.segments(),
            &[
                Segment::Literal("users".into()),
                Segment::Param {
                    name: "id".into(),
                    kind: ParamKind::Any
                },
                Segment::Literal("orders".into())
            ]
        );
        assert_eq!(t.shape(), "/users/{}/orders");
        assert!(PathTemplate::parse("/").unwrap().segments().is_empty());
        assert_eq!(PathTemplate::parse("/").unwrap().shape(), "/");
        assert_eq!(
            PathTemplate::parse("/a/").unwrap().segments(),
            &[
                Segment::Literal("a".into()),
                Segment::Literal(String::new())
            ]
        );
    }

    #[test]
    fn rejects_bad_templates_with_reasons() {
        for (raw, expect) in [
            ("", "must not be empty"),
            ("users", "must start with '/'"),
            ("/a?b=1", "query string"),
            ("/a#x", "fragment"),
            ("/a b", "percent-encoded"),
            ("/a//b", "empty segment"),
            ("/{id", "does not close"),
            ("/{1x}", "needs a name"),
            ("/{}", "needs a name"),
            ("/u{id}", "whole segment"),
            ("/{id}/{id}", "used twice"),
            ("/a\"b", "percent-encoded"),
            ("/{id:}", "empty type"),
            ("/{id:[a-}", "invalid regex"),
            ("/x?{id:a?}", "query string"),
        ] {
            let err = PathTemplate::parse(raw).unwrap_err();
            assert!(err.contains(expect), "{raw:?}: {err}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert!(PathTemplate::parse(&long).unwrap_err().contains("at most"));
    }

    #[test]
    fn typed_and_regex_parameters() {
        let t = PathTemplate::parse("/items/{id:int}/{code:[A-Z]{2}-[0-9]+?}/{u:uuid}").unwrap();
        assert_eq!(t.shape(), "/items/{:int}/{:[A-Z]{2}-[0-9]+?}/{:uuid}");
        let kinds: Vec<&ParamKind> = t
            .segments()
            .iter()
            .filter_map(|s| match s {
                Segment::Param { kind, .. } => Some(kind),
                Segment::Literal(_) => None,
            })
            .collect();
        assert!(kinds[0].accepts("12") && kinds[0].accepts("-3"));
        assert!(!kinds[0].accepts("1.5") && !kinds[0].accepts("") && !kinds[0].accepts("-"));
        assert!(kinds[1].accepts("AB-12") && !kinds[1].accepts("xAB-1"));
        assert!(kinds[2].accepts("6F1C0A8E-3b1d-4f3a-9a51-0c9e2b7d4e11"));
        assert!(!kinds[2].accepts("6f1c0a8e3b1d4f3a9a510c9e2b7d4e11"));
        // The type is part of the shape, the name is not.
        assert_ne!(
            PathTemplate::parse("/a/{id:int}").unwrap().shape(),
            PathTemplate::parse("/a/{id}").unwrap().shape()
        );
    }

    #[test]
    fn priorities_are_bounded() {
        let route = RouteSpec::parse("", "GET", "/a", || {
            ResponseSpec::parse(200, vec![], Bytes::new())
        })
        .unwrap();
        assert_eq!(route.priority, DEFAULT_PRIORITY);
        let first = route.clone().matching(RequestMatch::default(), 1).unwrap();
        assert_eq!(first.priority, 1);
        assert_ne!(first.match_key(), route.match_key());
        let err = route.matching(RequestMatch::default(), 1001).unwrap_err();
        assert_eq!(err.field, "priority");
    }

    #[test]
    fn methods_parse_case_insensitively() {
        assert_eq!("get".parse::<Method>().unwrap(), Method::Get);
        assert_eq!("ANY".parse::<Method>().unwrap(), Method::Any);
        assert!(
            "FETCH"
                .parse::<Method>()
                .unwrap_err()
                .contains("unknown method")
        );
    }

    #[test]
    fn checks_responses() {
        let ok = ResponseSpec::parse(
            201,
            vec![("Content-Type".into(), "application/json".into())],
            Bytes::from_static(b"{}"),
        )
        .unwrap();
        assert_eq!(ok.headers[0].0, "content-type");

        let cases = [
            (99, vec![], "", "status"),
            (600, vec![], "", "status"),
            (
                200,
                vec![("bad name".into(), "x".into())],
                "",
                "headers[0].name",
            ),
            (
                200,
                vec![("content-length".into(), "3".into())],
                "",
                "headers[0].name",
            ),
            (
                200,
                vec![("x".into(), "a\nb".into())],
                "",
                "headers[0].value",
            ),
            (204, vec![], "x", "body"),
        ];
        for (status, headers, body, field) in cases {
            let err = ResponseSpec::parse(status, headers, Bytes::from(body)).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
        let big = Bytes::from(vec![b'x'; MAX_BODY_BYTES + 1]);
        assert_eq!(
            ResponseSpec::parse(200, vec![], big).unwrap_err().field,
            "body"
        );
    }

    #[test]
    fn route_errors_name_the_field() {
        let err = RouteSpec::parse("r", "GET", "/x", || {
            ResponseSpec::parse(700, vec![], Bytes::new())
        })
        .unwrap_err();
        assert_eq!(err.field, "response.status");
        let err = RouteSpec::parse("r", "FETCH", "/x", || {
            ResponseSpec::parse(200, vec![], Bytes::new())
        })
        .unwrap_err();
        assert_eq!(err.field, "method");
    }

    #[test]
    fn patches_are_validated_as_a_whole() {
        let route = RouteSpec::parse("r", "GET", "/a", || {
            ResponseSpec::parse(200, vec![], Bytes::from_static(b"hi"))
        })
        .unwrap();
        let patch = RoutePatch {
            path: Some("/b/{id}".into()),
            ..Default::default()
        };
        let updated = patch.apply(&route).unwrap();
        assert_eq!(updated.path.as_str(), "/b/{id}");
        assert_eq!(updated.response.body, route.response.body);
        // A 204 may not keep the old body.
        let patch = RoutePatch {
            status: Some(204),
            ..Default::default()
        };
        assert_eq!(patch.apply(&route).unwrap_err().field, "response.body");
    }

    #[test]
    fn match_keys_ignore_parameter_names() {
        let make = |path: &str| {
            RouteSpec::parse("", "get", path, || {
                ResponseSpec::parse(200, vec![], Bytes::new())
            })
            .unwrap()
        };
        assert_eq!(make("/u/{id}").match_key(), make("/u/{uid}").match_key());
        assert_ne!(make("/u/{id}").match_key(), make("/u/me").match_key());
    }
}
