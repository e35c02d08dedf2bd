//! The data policy gate: an environment that forbids personal data (PII)
//! or test data refuses promoted responses that carry it, naming the route
//! and the field.
//!
//! What counts:
//! - PII: e-mail addresses (outside the reserved example domains), card
//!   numbers (13–19 digits passing the Luhn check, not a published test
//!   card), national IDs (US social security numbers, UK national
//!   insurance numbers).
//! - Test data: addresses at reserved example domains (`example.com`,
//!   `*.test`, …), published test card numbers, the well-known test SSN
//!   `123-45-6789`, and placeholder text (lorem ipsum, John/Jane Doe).
//!
//! Template expressions (`{{faker.email}}`) are left out: they are made up
//! per request, not data stored in the mock.

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::environment::DataPolicy;
use crate::model::route::RouteSpec;

/// Most findings reported; the gate fails on the first anyway.
pub const MAX_FINDINGS: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    Email,
    CardNumber,
    NationalId,
    TestEmail,
    TestCardNumber,
    TestNationalId,
    Placeholder,
}

impl Finding {
    pub fn is_pii(self) -> bool {
        matches!(
            self,
            Finding::Email | Finding::CardNumber | Finding::NationalId
        )
    }

    pub fn describe(self) -> &'static str {
        match self {
            Finding::Email => "an e-mail address (PII)",
            Finding::CardNumber => "a payment card number (PII)",
            Finding::NationalId => "a national ID number (PII)",
            Finding::TestEmail => "an e-mail address at a test domain (test data)",
            Finding::TestCardNumber => "a test card number (test data)",
            Finding::TestNationalId => "a well-known test ID number (test data)",
            Finding::Placeholder => "placeholder text (test data)",
        }
    }
}

/// One offending value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// `GET /users/{id}`.
    pub route: String,
    /// `response.body $.user.email`, `response.headers.x-contact`.
    pub field: String,
    pub finding: Finding,
    /// The value with most of it masked: `j***@corp.io`.
    pub sample: String,
}

impl Violation {
    pub fn message(&self) -> String {
        format!(
            "{} {}: {} ({})",
            self.route,
            self.field,
            self.finding.describe(),
            self.sample
        )
    }
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+-]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})")
        .expect("valid regex")
});
static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d(?:[ -]?\d){12,18}\b").expect("valid regex"));
static SSN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(\d{3})-(\d{2})-(\d{4})\b").expect("valid regex"));
static NINO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
        .expect("valid regex")
});
static PLACEHOLDER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(lorem ipsum|dolor sit amet|john doe|jane doe)\b").expect("valid regex")
});

const TEST_CARDS: &[&str] = &[
    "4242424242424242",
    "4111111111111111",
    "4000056655665556",
    "5555555555554444",
    "5105105105105100",
    "2223003122003222",
    "378282246310005",
    "371449635398431",
    "6011111111111117",
    "3056930009020004",
    "4012888888881881",
];

fn test_domain(domain: &str) -> bool {
    let domain = domain.to_ascii_lowercase();
    ["example.com", "example.org", "example.net", "test.com"]
        .iter()
        .any(|d| domain == *d || domain.ends_with(&format!(".{d}")))
        || [".test", ".example", ".invalid", ".localhost", ".local"]
            .iter()
            .any(|tld| domain.ends_with(tld))
}

fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(*d);
        if i % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    sum.is_multiple_of(10)
}

fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() <= 4 {
        return "*".repeat(chars.len());
    }
    let keep = 2.min(chars.len() / 4);
    let mut out: String = chars[..keep].iter().collect();
    out.push_str("***");
    out.extend(&chars[chars.len() - keep.max(2)..]);
    out
}

/// What one text holds, each finding once.
pub fn classify(text: &str) -> Vec<(Finding, String)> {
    let mut found = Vec::new();
    for m in EMAIL.captures_iter(text) {
        let whole = m.get(0).map_or("", |m| m.as_str());
        let domain = m.get(1).map_or("", |m| m.as_str());
        let finding = if test_domain(domain) {
            Finding::TestEmail
        } else {
            Finding::Email
        };
        found.push((finding, mask(whole)));
    }
    for m in CARD.find_iter(text) {
        let digits: Vec<u8> = m
            .as_str()
            .bytes()
            .filter(u8::is_ascii_digit)
            .map(|b| b - b'0')
            .collect();
        if !(13..=19).contains(&digits.len()) || !luhn(&digits) {
            continue;
        }
        let plain: String = digits.iter().map(|d| char::from(b'0' + d)).collect();
        let finding = if TEST_CARDS.contains(&plain.as_str()) {
            Finding::TestCardNumber
        } else {
            Finding::CardNumber
        };
        found.push((finding, mask(&plain)));
    }
    for m in SSN.captures_iter(text) {
        let whole = m.get(0).map_or("", |m| m.as_str());
        let area = m.get(1).map_or("", |m| m.as_str());
        let group = m.get(2).map_or("", |m| m.as_str());
        let serial = m.get(3).map_or("", |m| m.as_str());
        if whole == "123-45-6789" {
            found.push((Finding::TestNationalId, mask(whole)));
        } else if area != "000"
            && area != "666"
            && !area.starts_with('9')
            && group != "00"
            && serial != "0000"
        {
            found.push((Finding::NationalId, mask(whole)));
        }
    }
    for m in NINO.find_iter(text) {
        found.push((Finding::NationalId, mask(m.as_str())));
    }
    for m in PLACEHOLDER.find_iter(text) {
        found.push((Finding::Placeholder, m.as_str().to_owned()));
    }
    found.sort_by_key(|(f, s)| (*f as u8, s.clone()));
    found.dedup();
    found
}

/// Text with template expressions (`{{…}}`) left out.
fn literal_text(text: &str, template: bool) -> String {
    if !template {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        out.push(' ');
        match rest[open..].find("}}") {
            Some(close) => rest = &rest[open + close + 2..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn walk(value: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) => out.push((path.to_owned(), s.clone())),
        Value::Number(n) => out.push((path.to_owned(), n.to_string())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                walk(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                walk(v, &format!("{path}.{k}"), out);
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

/// Records the forbidden findings among `texts`; true once the list is
/// full.
fn judge(
    subject: &str,
    texts: Vec<(String, String)>,
    policy: DataPolicy,
    out: &mut Vec<Violation>,
) -> bool {
    for (field, text) in texts {
        for (finding, sample) in classify(&text) {
            let forbidden = if finding.is_pii() {
                policy.forbid_pii
            } else {
                policy.forbid_test_data
            };
            if forbidden {
                out.push(Violation {
                    route: subject.to_owned(),
                    field: field.clone(),
                    finding,
                    sample,
                });
                if out.len() >= MAX_FINDINGS {
                    return true;
                }
            }
        }
    }
    false
}

/// The values of a JSON document (a persona) that the policy forbids;
/// `subject` names it in the findings (`persona alice`).
pub fn scan_document(subject: &str, document: &Value, policy: DataPolicy) -> Vec<Violation> {
    let mut out = Vec::new();
    if !policy.forbid_pii && !policy.forbid_test_data {
        return out;
    }
    let mut values = Vec::new();
    walk(document, "$", &mut values);
    judge(subject, values, policy, &mut out);
    out
}

/// The values of a route's response that the policy forbids.
pub fn scan(routes: &[RouteSpec], policy: DataPolicy) -> Vec<Violation> {
    let mut out = Vec::new();
    if !policy.forbid_pii && !policy.forbid_test_data {
        return out;
    }
    for route in routes {
        let label = format!("{} {}", route.method, route.path.as_str());
        let template = route.response.template;
        let mut texts: Vec<(String, String)> = Vec::new();
        for (name, value) in &route.response.headers {
            texts.push((
                format!("response.headers.{name}"),
                literal_text(value, template),
            ));
        }
        let body = String::from_utf8_lossy(&route.response.body);
        let body = literal_text(&body, template);
        match serde_json::from_str::<Value>(&body) {
            Ok(json) => {
                let mut values = Vec::new();
                walk(&json, "$", &mut values);
                texts.extend(
                    values
                        .into_iter()
                        .map(|(path, text)| (format!("response.body {path}"), text)),
                );
            }
            Err(_) => texts.push(("response.body".into(), body)),
        }
        if judge(&label, texts, policy, &mut out) {
            return out;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::route::ResponseSpec;
    use bytes::Bytes;

    fn kinds(text: &str) -> Vec<Finding> {
        classify(text).into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn each_kind_is_recognized() {
        assert_eq!(kinds("mail jane.roe@corp.io now"), vec![Finding::Email]);
        assert_eq!(kinds("qa@example.com"), vec![Finding::TestEmail]);
        assert_eq!(kinds("x@svc.test"), vec![Finding::TestEmail]);
        assert_eq!(kinds("4539 1488 0343 6467"), vec![Finding::CardNumber]);
        assert_eq!(kinds("4242-4242-4242-4242"), vec![Finding::TestCardNumber]);
        // Not Luhn-valid: an order number, not a card.
        assert!(kinds("4539148803436468").is_empty());
        assert_eq!(kinds("ssn 078-05-1120"), vec![Finding::NationalId]);
        assert_eq!(kinds("123-45-6789"), vec![Finding::TestNationalId]);
        assert!(kinds("000-12-3456").is_empty());
        assert_eq!(kinds("NINO AB 12 34 56 C"), vec![Finding::NationalId]);
        assert_eq!(kinds("Lorem ipsum"), vec![Finding::Placeholder]);
        assert!(kinds("order 12345, status shipped, 2024-01-02").is_empty());
    }

    fn route(body: &str, template: bool) -> RouteSpec {
        RouteSpec::parse("r", "GET", "/users/{id}", || {
            ResponseSpec::parse(
                200,
                vec![("x-contact".into(), "ops@corp.io".into())],
                Bytes::from(body.to_owned()),
            )
        })
        .unwrap()
        .templated(template)
        .unwrap()
    }

    #[test]
    fn scan_names_the_route_and_the_field() {
        let routes = [route(
            r#"{"user":{"email":"jane.roe@corp.io","card":"4539148803436467"},"tests":["qa@example.com"]}"#,
            false,
        )];
        let pii = DataPolicy {
            forbid_pii: true,
            forbid_test_data: false,
        };
        let found = scan(&routes, pii);
        let fields: Vec<String> = found.iter().map(|v| v.field.clone()).collect();
        assert_eq!(
            fields,
            vec![
                "response.headers.x-contact",
                "response.body $.user.email",
                "response.body $.user.card",
            ]
        );
        assert!(
            found[0]
                .message()
                .starts_with("GET /users/{id} response.headers.x-contact: an e-mail address")
        );
        assert!(!found.iter().any(|v| v.sample.contains("jane.roe")));

        let test_only = DataPolicy {
            forbid_pii: false,
            forbid_test_data: true,
        };
        let found = scan(&routes, test_only);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].field, "response.body $.tests[0]");
        assert!(scan(&routes, DataPolicy::default()).is_empty());
    }

    #[test]
    fn template_expressions_are_not_data() {
        let routes = [route(
            r#"{"email":"{{faker.email}}","id":"{{request.params.id}}"}"#,
            true,
        )];
        let found = scan(
            &routes,
            DataPolicy {
                forbid_pii: true,
                forbid_test_data: true,
            },
        );
        // The header is literal and is still found.
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].field, "response.headers.x-contact");
    }
}
