//! Response templates: text with `{{ … }}` expressions over the request and
//! a few helpers, parsed once when a route is validated and rendered per
//! request without parsing, allocation beyond the output, file access or
//! unbounded output.
//!
//! ```text
//! {{request.method}} {{request.path}} {{request.params.id}} {{request.query.page default="1"}}
//! {{request.headers.x-tenant}} {{request.body}} {{request.json.items.0.sku}}
//! {{now}} {{timestamp}} {{uuid}} {{randomInt 1 100}} {{faker.name seed=request.params.id}}
//! {{persona.user.name}} {{persona.accounts.0.iban default="-"}}
//! ```
//!
//! `persona.*` reads the JSON of the persona the request is served with
//! (see the data plane: a header or the environment picks it).

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::model::matcher::RequestParts;
use crate::model::realism::Rng;

/// Largest rendered output of one template; beyond it rendering fails.
pub const MAX_RENDERED: usize = 2 * 1024 * 1024;
/// Most expressions in one template.
pub const MAX_EXPRESSIONS: usize = 512;

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Expr(Expr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Expr {
    value: Value,
    /// Written when the request has no such value.
    default: Option<String>,
    /// Makes a random helper a function of this value.
    seed: Option<Seed>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seed {
    Number(u64),
    Request(Value),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Method,
    Path,
    Param(String),
    Query(String),
    Header(String),
    Body,
    Json(Vec<String>),
    /// A field of the persona, by path; empty: the whole document.
    Persona(Vec<String>),
    Now,
    Timestamp,
    Uuid,
    RandomInt(i64, i64),
    Faker(Faker),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Faker {
    Name,
    FirstName,
    LastName,
    Email,
    City,
    Company,
}

impl Value {
    fn is_random(&self) -> bool {
        matches!(self, Value::Uuid | Value::RandomInt(..) | Value::Faker(_))
    }

    /// Values that can be missing (and so take `default=`) and that can
    /// seed a random helper: those of the request and the persona.
    fn reads_request(&self) -> bool {
        matches!(
            self,
            Value::Method
                | Value::Path
                | Value::Param(_)
                | Value::Query(_)
                | Value::Header(_)
                | Value::Body
                | Value::Json(_)
                | Value::Persona(_)
        )
    }
}

/// How inserted values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As they are.
    None,
    /// As the inside of a JSON string: for JSON bodies, whose templates put
    /// values between quotes.
    Json,
}

/// What a template reads of a request.
pub struct RenderContext<'a, 'r> {
    pub method: &'a str,
    /// The path inside the workspace, without the query.
    pub path: &'a str,
    /// Path parameters by name.
    pub params: &'a [(&'a str, &'a str)],
    pub request: &'a RequestParts<'r>,
    pub now: SystemTime,
    /// Seeds the random helpers that have no `seed=`.
    pub entropy: u64,
    /// The persona the request is served with, if any.
    pub persona: Option<&'a serde_json::Value>,
}

impl Template {
    /// Parses a template; `params` are the route's path parameter names, so
    /// a misspelt one is refused here rather than rendered empty.
    pub fn parse(source: &str, params: &[&str]) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = source;
        let mut expressions = 0;
        while let Some(open) = rest.find("{{") {
            let (text, after) = rest.split_at(open);
            if !text.is_empty() {
                parts.push(Part::Text(text.to_owned()));
            }
            let after = &after[2..];
            let close = after.find("}}").ok_or_else(|| {
                let at = source.len() - rest.len() + open;
                format!("template: '{{{{' at byte {at} is not closed with '}}}}'")
            })?;
            let inner = &after[..close];
            let at = source.len() - rest.len() + open;
            expressions += 1;
            if expressions > MAX_EXPRESSIONS {
                return Err(format!("template: at most {MAX_EXPRESSIONS} expressions"));
            }
            let expr = parse_expr(inner, params)
                .map_err(|e| format!("template: {{{{{}}}}} at byte {at}: {e}", inner.trim()))?;
            parts.push(Part::Expr(expr));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// Whether rendering reads the request body.
    pub fn uses_body(&self) -> bool {
        self.parts.iter().any(|part| {
            matches!(
                part,
                Part::Expr(Expr {
                    value: Value::Body | Value::Json(_),
                    ..
                }) | Part::Expr(Expr {
                    seed: Some(Seed::Request(Value::Body | Value::Json(_))),
                    ..
                })
            )
        })
    }

    /// Whether the template has no expression at all.
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|part| matches!(part, Part::Text(_)))
    }

    /// Renders for one request. Fails only when the output would pass
    /// [`MAX_RENDERED`].
    pub fn render(
        &self,
        context: &RenderContext<'_, '_>,
        escape: Escape,
    ) -> Result<String, String> {
        let mut out = String::new();
        let mut random = Rng::new(context.entropy);
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Expr(expr) => {
                    let value = expr.evaluate(context, &mut random);
                    let value = match value {
                        Some(value) => value,
                        None => expr.default.clone().unwrap_or_default(),
                    };
                    match escape {
                        Escape::None => out.push_str(&value),
                        Escape::Json => json_escape_into(&mut out, &value),
                    }
                }
            }
            if out.len() > MAX_RENDERED {
                return Err(format!("the rendered template passes {MAX_RENDERED} bytes"));
            }
        }
        Ok(out)
    }
}

impl Expr {
    fn evaluate(&self, context: &RenderContext<'_, '_>, random: &mut Rng) -> Option<String> {
        if self.value.is_random()
            && let Some(seed) = &self.seed
        {
            let seed = match seed {
                Seed::Number(n) => *n,
                Seed::Request(value) => {
                    fnv(read(value, context, random).unwrap_or_default().as_bytes())
                }
            };
            return read(&self.value, context, &mut Rng::new(seed));
        }
        read(&self.value, context, random)
    }
}

fn read(value: &Value, context: &RenderContext<'_, '_>, random: &mut Rng) -> Option<String> {
    let request = context.request;
    Some(match value {
        Value::Method => context.method.to_owned(),
        Value::Path => context.path.to_owned(),
        Value::Param(name) => context
            .params
            .iter()
            .find(|(param, _)| param == name)
            .map(|(_, value)| percent_decode(value))?,
        Value::Query(name) => request.query_values(name).next()?.to_owned(),
        Value::Header(name) => request.header_values(name).next()?.to_owned(),
        Value::Body => request.body_text().into_owned(),
        Value::Json(path) => walk(request.json()?, path)?,
        Value::Persona(path) => walk(context.persona?, path)?,
        Value::Now => rfc3339(context.now),
        Value::Timestamp => context
            .now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string(),
        Value::Uuid => {
            let bytes = (u128::from(random.next_u64()) << 64) | u128::from(random.next_u64());
            uuid::Builder::from_random_bytes(bytes.to_be_bytes())
                .into_uuid()
                .to_string()
        }
        Value::RandomInt(min, max) => {
            let span = (i128::from(*max) - i128::from(*min) + 1) as u128;
            let pick = u128::from(random.next_u64()) % span;
            (i128::from(*min) + pick as i128).to_string()
        }
        Value::Faker(kind) => fake(*kind, random),
    })
}

/// The text of the JSON value at `path` (object keys and array indexes).
fn walk(mut node: &serde_json::Value, path: &[String]) -> Option<String> {
    for step in path {
        node = match node {
            serde_json::Value::Object(map) => map.get(step)?,
            serde_json::Value::Array(items) => items.get(step.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(match node {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    })
}

fn parse_expr(inner: &str, params: &[&str]) -> Result<Expr, String> {
    let words = split_words(inner)?;
    let Some((head, args)) = words.split_first() else {
        return Err("empty expression".into());
    };
    let mut positional = Vec::new();
    let mut default = None;
    let mut seed = None;
    for arg in args {
        if let Some(value) = arg.strip_prefix("default=") {
            default = Some(unquote(value)?);
        } else if let Some(value) = arg.strip_prefix("seed=") {
            seed = Some(match value.parse::<u64>() {
                Ok(n) => Seed::Number(n),
                Err(_) => {
                    let value = parse_value(value, &[], params)?;
                    if !value.reads_request() {
                        return Err(format!(
                            "seed={value:?} must be a number or a request value"
                        ));
                    }
                    Seed::Request(value)
                }
            });
        } else {
            positional.push(arg.as_str());
        }
    }
    let value = parse_value(head, &positional, params)?;
    if seed.is_some() && !value.is_random() {
        return Err("seed= goes with uuid, randomInt and faker.* only".into());
    }
    if default.is_some() && !value.reads_request() {
        return Err("default= goes with request values only".into());
    }
    Ok(Expr {
        value,
        default,
        seed,
    })
}

fn parse_value(head: &str, args: &[&str], params: &[&str]) -> Result<Value, String> {
    let no_args = |value: Value| {
        if args.is_empty() {
            Ok(value)
        } else {
            Err(format!("{head} takes no arguments"))
        }
    };
    if head == "persona" || head.starts_with("persona.") {
        let path: Vec<String> = head
            .strip_prefix("persona.")
            .map(|rest| rest.split('.').map(str::to_owned).collect())
            .unwrap_or_default();
        if path.iter().any(String::is_empty) {
            return Err(format!("{head:?}: empty field name in the persona path"));
        }
        return no_args(Value::Persona(path));
    }
    if let Some(field) = head.strip_prefix("request.") {
        let (kind, name) = field.split_once('.').unwrap_or((field, ""));
        let need_name = |what: &str| {
            if name.is_empty() {
                Err(format!(
                    "request.{kind} needs a {what}: request.{kind}.<{what}>"
                ))
            } else {
                Ok(name.to_owned())
            }
        };
        return no_args(match kind {
            "method" if name.is_empty() => Value::Method,
            "path" if name.is_empty() => Value::Path,
            "body" if name.is_empty() => Value::Body,
            "params" => {
                let name = need_name("name")?;
                if !params.contains(&name.as_str()) {
                    return Err(format!(
                        "the route's path has no parameter {{{name}}}{}",
                        if params.is_empty() {
                            String::new()
                        } else {
                            format!("; it has {}", params.join(", "))
                        }
                    ));
                }
                Value::Param(name)
            }
            "query" => Value::Query(need_name("name")?),
            "headers" => Value::Header(need_name("name")?.to_ascii_lowercase()),
            "json" => Value::Json(need_name("field")?.split('.').map(str::to_owned).collect()),
            _ => {
                return Err(format!(
                    "unknown request value {head:?}; use request.method, .path, .params.<name>, .query.<name>, .headers.<name>, .body or .json.<field>"
                ));
            }
        });
    }
    match head {
        "now" => no_args(Value::Now),
        "timestamp" => no_args(Value::Timestamp),
        "uuid" => no_args(Value::Uuid),
        "randomInt" => {
            let [min, max] = args else {
                return Err("randomInt takes two numbers: randomInt <min> <max>".into());
            };
            let parse = |raw: &str| {
                raw.parse::<i64>()
                    .map_err(|_| format!("randomInt: {raw:?} is not an integer"))
            };
            let (min, max) = (parse(min)?, parse(max)?);
            if min > max {
                return Err(format!("randomInt: {min} is greater than {max}"));
            }
            Ok(Value::RandomInt(min, max))
        }
        "faker.name" => no_args(Value::Faker(Faker::Name)),
        "faker.firstName" => no_args(Value::Faker(Faker::FirstName)),
        "faker.lastName" => no_args(Value::Faker(Faker::LastName)),
        "faker.email" => no_args(Value::Faker(Faker::Email)),
        "faker.city" => no_args(Value::Faker(Faker::City)),
        "faker.company" => no_args(Value::Faker(Faker::Company)),
        _ => Err(format!(
            "unknown helper {head:?}; use request.*, persona.*, now, timestamp, uuid, randomInt, faker.name, faker.firstName, faker.lastName, faker.email, faker.city or faker.company"
        )),
    }
}

/// Words separated by spaces; `"…"` keeps spaces (and `\"`).
fn split_words(inner: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = inner.trim().chars();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                quoted = !quoted;
                word.push(c);
            }
            '\\' if quoted => {
                word.push(c);
                if let Some(next) = chars.next() {
                    word.push(next);
                }
            }
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if quoted {
        return Err("a quote is not closed".into());
    }
    if !word.is_empty() {
        words.push(word);
    }
    Ok(words)
}

fn unquote(raw: &str) -> Result<String, String> {
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => Ok(inner.replace("\\\"", "\"").replace("\\\\", "\\")),
        None if !raw.contains('"') => Ok(raw.to_owned()),
        None => Err(format!("{raw:?} is not a quoted text")),
    }
}

fn json_escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

fn percent_decode(raw: &str) -> String {
    if !raw.contains('%') {
        return raw.to_owned();
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

/// RFC 3339 in UTC with seconds, from the civil-from-days algorithm.
fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// FNV-1a: a stable hash for seeds (the same text, the same seed, on every
/// node and version).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

const FIRST_NAMES: [&str; 24] = [
    "Ada", "Alan", "Amara", "Bruno", "Chen", "Dalia", "Elif", "Farah", "Grace", "Hugo", "Ines",
    "Jonas", "Kenji", "Lena", "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq",
    "Uma", "Yara",
];
const LAST_NAMES: [&str; 24] = [
    "Abe", "Bauer", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ivanova",
    "Jensen", "Kowalski", "Lopez", "Moreau", "Nakamura", "Okafor", "Petrov", "Quispe", "Rossi",
    "Silva", "Tanaka", "Urban", "Varga", "Weber", "Zhang",
];
const CITIES: [&str; 16] = [
    "Lisbon",
    "Osaka",
    "Nairobi",
    "Montreal",
    "Krakow",
    "Porto Alegre",
    "Tallinn",
    "Auckland",
    "Lyon",
    "Pune",
    "Valparaiso",
    "Bergen",
    "Accra",
    "Da Nang",
    "Graz",
    "Tucson",
];
const COMPANIES: [&str; 12] = [
    "Northwind",
    "Blue Heron",
    "Copperleaf",
    "Lumen Works",
    "Quarry & Co",
    "Tidewater",
    "Kestrel Labs",
    "Orchard Systems",
    "Basalt",
    "Meridian Freight",
    "Foxglove",
    "Ironbark",
];
const DOMAINS: [&str; 4] = ["example.com", "example.org", "example.net", "mail.example"];

fn fake(kind: Faker, random: &mut Rng) -> String {
    match kind {
        Faker::FirstName => random.pick(&FIRST_NAMES).to_owned(),
        Faker::LastName => random.pick(&LAST_NAMES).to_owned(),
        Faker::Name => format!("{} {}", random.pick(&FIRST_NAMES), random.pick(&LAST_NAMES)),
        Faker::Email => format!(
            "{}.{}@{}",
            random.pick(&FIRST_NAMES).to_lowercase(),
            random.pick(&LAST_NAMES).to_lowercase(),
            random.pick(&DOMAINS)
        ),
        Faker::City => random.pick(&CITIES).to_owned(),
        Faker::Company => random.pick(&COMPANIES).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn render(source: &str, params: &[(&str, &str)], query: Option<&str>, body: &[u8]) -> String {
        let names: Vec<&str> = params.iter().map(|(name, _)| *name).collect();
        let template = Template::parse(source, &names).unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert("x-tenant", http::HeaderValue::from_static("acme"));
        let request = RequestParts::new(query, &headers, body);
        let context = RenderContext {
            method: "POST",
            path: "/users/7",
            params,
            request: &request,
            now: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            entropy: 42,
            persona: None,
        };
        template.render(&context, Escape::None).unwrap()
    }

    #[test]
    fn request_values() {
        let out = render(
            "{{request.method}} {{request.path}} id={{ request.params.id }} q={{request.query.q}} \
             t={{request.headers.X-Tenant}} sku={{request.json.items.1.sku}} n={{request.json.n}} \
             missing={{request.query.nope default=\"none here\"}}",
            &[("id", "a%20b")],
            Some("q=x+y"),
            br#"{"items":[{"sku":"A"},{"sku":"B"}],"n":3}"#,
        );
        assert_eq!(
            out,
            "POST /users/7 id=a b q=x y t=acme sku=B n=3 missing=none here"
        );
        assert_eq!(render("{{request.body}}", &[], None, b"raw"), "raw");
    }

    #[test]
    fn helpers() {
        assert_eq!(render("{{now}}", &[], None, b""), "2023-11-14T22:13:20Z");
        assert_eq!(render("{{timestamp}}", &[], None, b""), "1700000000");
        let id = render("{{uuid}}", &[], None, b"");
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 4);
        for _ in 0..50 {
            let n: i64 = render("{{randomInt -3 3}}", &[], None, b"")
                .parse()
                .unwrap();
            assert!((-3..=3).contains(&n));
        }
        let email = render("{{faker.email}}", &[], None, b"");
        assert!(email.contains('@') && email.contains('.'), "{email}");
        assert!(render("{{faker.name}}", &[], None, b"").contains(' '));
    }

    #[test]
    fn seeds_make_random_values_reproducible() {
        let seeded = |id: &str| {
            render(
                "{{faker.name seed=request.params.id}}|{{randomInt 1 1000000 seed=7}}",
                &[("id", id)],
                None,
                b"",
            )
        };
        assert_eq!(seeded("1"), seeded("1"));
        assert_ne!(seeded("1"), seeded("2"));
        assert_eq!(seeded("1").split('|').nth(1), seeded("2").split('|').nth(1));
    }

    #[test]
    fn json_escaping_keeps_json_valid() {
        let template = Template::parse(r#"{"q":"{{request.query.q}}"}"#, &[]).unwrap();
        let headers = http::HeaderMap::new();
        let request = RequestParts::new(Some("q=%22hi%22%0A%5C"), &headers, b"");
        let context = RenderContext {
            method: "GET",
            path: "/",
            params: &[],
            request: &request,
            now: SystemTime::now(),
            entropy: 1,
            persona: None,
        };
        let out = template.render(&context, Escape::Json).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed["q"], "\"hi\"\n\\");
    }

    #[test]
    fn output_is_bounded() {
        let source = "{{request.body}}".repeat(3);
        let template = Template::parse(&source, &[]).unwrap();
        let body = vec![b'x'; MAX_RENDERED / 2];
        let headers = http::HeaderMap::new();
        let request = RequestParts::new(None, &headers, &body);
        let context = RenderContext {
            method: "GET",
            path: "/",
            params: &[],
            request: &request,
            now: SystemTime::now(),
            entropy: 1,
            persona: None,
        };
        assert!(
            template
                .render(&context, Escape::None)
                .unwrap_err()
                .contains("passes")
        );
        assert!(template.uses_body());
    }

    #[test]
    fn bad_templates_say_what_and_where() {
        for (source, expect) in [
            ("a {{request.path", "not closed"),
            ("{{}}", "empty expression"),
            ("{{request.params.idd}}", "no parameter {idd}; it has id"),
            ("{{request.cookies.a}}", "unknown request value"),
            ("{{request.query}}", "needs a name"),
            ("{{randomInt 5 1}}", "greater than"),
            ("{{randomInt 1}}", "two numbers"),
            ("{{now seed=1}}", "seed= goes with"),
            ("{{uuid default=x}}", "default= goes with"),
            ("{{fs.read /etc/passwd}}", "unknown helper"),
            ("{{request.query.q default=\"x}}", "quote is not closed"),
        ] {
            let err = Template::parse(source, &["id"]).unwrap_err();
            assert!(err.contains(expect), "{source}: {err}");
        }
        let err = Template::parse("ok {{nope}}", &[]).unwrap_err();
        assert!(err.contains("at byte 3"), "{err}");
        assert!(Template::parse("plain", &[]).unwrap().is_constant());
    }

    #[test]
    fn persona_fields_render_and_missing_ones_take_the_default() {
        let persona = serde_json::json!({
            "user": { "name": "Ada Lovelace", "id": 7 },
            "accounts": [{ "iban": "GB00" }],
        });
        let template = Template::parse(
            r#"{{persona.user.name}}|{{persona.accounts.0.iban}}|{{persona.user.id}}|{{persona.nope default="n/a"}}|{{faker.name seed=persona.user.id}}"#,
            &[],
        )
        .unwrap();
        let headers = http::HeaderMap::new();
        let request = RequestParts::new(None, &headers, b"");
        let render = |persona| {
            let context = RenderContext {
                method: "GET",
                path: "/",
                params: &[],
                request: &request,
                now: SystemTime::now(),
                entropy: 1,
                persona,
            };
            template.render(&context, Escape::None).unwrap()
        };
        let out = render(Some(&persona));
        let parts: Vec<&str> = out.split('|').collect();
        assert_eq!(parts[..4], ["Ada Lovelace", "GB00", "7", "n/a"]);
        assert_eq!(out, render(Some(&persona)), "seeded by the persona: stable");
        assert!(render(None).starts_with("||"), "no persona: empty values");
        for bad in ["{{persona..x}}", "{{persona.a 1}}"] {
            assert!(Template::parse(bad, &[]).is_err(), "{bad}");
        }
    }
}
