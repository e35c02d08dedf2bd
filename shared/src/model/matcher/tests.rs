use serde_json::json;

use super::*;

fn parse(value: Value) -> Result<RequestMatch, String> {
    serde_json::from_value::<RequestMatch>(value)
        .map_err(|e| e.to_string())
        .and_then(|m| m.normalized().map_err(|e| e.to_string()))
}

fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

#[test]
fn query_matchers() {
    let m = parse(json!({ "query": [
        { "name": "status", "equals": "active" },
        { "name": "q", "contains": "rust", "ignoreCase": true },
        { "name": "page", "regex": "^[0-9]+$" },
        { "name": "debug", "present": false },
    ]}))
    .unwrap();
    let empty = http::HeaderMap::new();
    let pass = RequestParts::new(Some("status=active&q=Learn+RUST&page=2"), &empty, b"");
    assert!(m.matches(&pass));
    assert!(m.explain(&pass).is_empty());
    for (query, reason) in [
        (
            "status=gone&q=rust&page=2",
            "\"status\" must equal \"active\"",
        ),
        ("status=active&q=go&page=2", "\"q\" must contain \"rust\""),
        ("status=active&q=rust&page=x", "must match /^[0-9]+$/"),
        (
            "status=active&q=rust&page=1&debug",
            "\"debug\" must be absent",
        ),
        ("q=rust&page=1", "\"status\" must equal"),
    ] {
        let request = RequestParts::new(Some(query), &empty, b"");
        assert!(!m.matches(&request), "{query}");
        let reasons = m.explain(&request);
        assert!(
            reasons.iter().any(|r| r.contains(reason)),
            "{query}: {reasons:?}"
        );
    }
    // Percent-decoding, and any of several values.
    let m = parse(json!({ "query": [{ "name": "tag", "equals": "a b" }] })).unwrap();
    assert!(m.matches(&RequestParts::new(Some("tag=x&tag=a%20b"), &empty, b"")));
}

#[test]
fn header_matchers_ignore_name_case() {
    let m = parse(json!({ "headers": [
        { "name": "X-Tenant", "regex": "^t-[0-9]+$" },
        { "name": "authorization", "present": true },
        { "name": "accept", "equals": "APPLICATION/JSON", "ignoreCase": true },
    ]}))
    .unwrap();
    assert_eq!(m.headers[0].name, "x-tenant");
    let ok = headers(&[
        ("x-tenant", "t-42"),
        ("authorization", "Bearer x"),
        ("accept", "application/json"),
    ]);
    assert!(m.matches(&RequestParts::new(None, &ok, b"")));
    let bad = headers(&[("x-tenant", "t-x"), ("accept", "text/html")]);
    let reasons = m.explain(&RequestParts::new(None, &bad, b""));
    assert_eq!(reasons.len(), 3, "{reasons:?}");
}

#[test]
fn json_body_equality_with_relaxations() {
    let exact = json!({ "a": 1, "items": [1, 2] });
    let request = |body: &str| body.as_bytes().to_vec();
    let empty = http::HeaderMap::new();
    let check = |m: &RequestMatch, body: &str| {
        let bytes = request(body);
        m.matches(&RequestParts::new(None, &empty, &bytes))
    };
    let strict = parse(json!({ "body": [{ "json": exact }] })).unwrap();
    assert!(check(&strict, r#"{"items":[1,2],"a":1.0}"#));
    assert!(!check(&strict, r#"{"a":1,"items":[2,1]}"#));
    assert!(!check(&strict, r#"{"a":1,"items":[1,2],"b":0}"#));
    assert!(!check(&strict, "not json"));
    let relaxed = parse(json!({ "body": [{
        "json": exact, "ignoreExtraFields": true, "ignoreArrayOrder": true
    }]}))
    .unwrap();
    assert!(check(&relaxed, r#"{"a":1,"items":[2,1],"b":0}"#));
    assert!(!check(&relaxed, r#"{"a":2,"items":[2,1]}"#));
    // Unordered pairing needs a real matching, not first fit.
    let tricky = parse(json!({ "body": [{
        "json": [{ "k": 1 }, { "k": 1, "x": 2 }],
        "ignoreExtraFields": true, "ignoreArrayOrder": true
    }]}))
    .unwrap();
    assert!(check(&tricky, r#"[{"k":1,"x":2},{"k":1}]"#));
}

#[test]
fn json_path_and_text_body_matchers() {
    let m = parse(json!({ "body": [
        { "jsonPath": "$.items[0].sku", "equals": "A-1" },
        { "jsonPath": "$.customer" },
        { "jsonPath": "$.total", "regex": "^[0-9]+$" },
    ]}))
    .unwrap();
    let empty = http::HeaderMap::new();
    let body = br#"{"items":[{"sku":"A-1"}],"customer":{"id":3},"total":12}"#;
    assert!(m.matches(&RequestParts::new(None, &empty, body)));
    let body = br#"{"items":[{"sku":"B"}],"total":12}"#;
    let reasons = m.explain(&RequestParts::new(None, &empty, body));
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[1].contains("$.customer selects something"));

    let text = parse(json!({ "body": [{ "contains": "hello" }] })).unwrap();
    assert!(text.matches(&RequestParts::new(None, &empty, b"say hello")));
    assert!(!text.matches(&RequestParts::new(None, &empty, b"")));
    let none = parse(json!({ "body": [{ "present": false }] })).unwrap();
    assert!(none.matches(&RequestParts::new(None, &empty, b"")));
}

#[test]
fn bad_matchers_say_what_is_wrong() {
    for (value, expect) in [
        (json!({ "query": [{ "name": "a" }] }), "needs a test"),
        (
            json!({ "query": [{ "name": "a", "equals": "x", "regex": "y" }] }),
            "only one of",
        ),
        (
            json!({ "headers": [{ "name": "a", "regex": "(" }] }),
            "invalid regex",
        ),
        (
            json!({ "headers": [{ "name": "bad name", "present": true }] }),
            "not a valid header name",
        ),
        (
            json!({ "body": [{ "jsonPath": "$[" }] }),
            "invalid JSONPath",
        ),
        (
            json!({ "body": [{ "json": {}, "jsonPath": "$.a" }] }),
            "either json or jsonPath",
        ),
        (
            json!({ "body": [{ "ignoreExtraFields": true }] }),
            "go with json",
        ),
        (json!({ "body": [{}] }), "needs json, jsonPath"),
        (json!({ "cookies": [] }), "unknown field"),
        (
            json!({ "query": [{ "name": "a", "present": true, "ignoreCase": true }] }),
            "not present",
        ),
    ] {
        let err = parse(value.clone()).unwrap_err();
        assert!(err.contains(expect), "{value}: {err}");
    }
    let many: Vec<Value> = (0..=MAX_MATCHERS)
        .map(|i| json!({ "name": format!("h{i}"), "present": true }))
        .collect();
    assert!(
        parse(json!({ "headers": many }))
            .unwrap_err()
            .contains("at most")
    );
}

#[test]
fn file_form_round_trips_and_fingerprints_ignore_order() {
    let value = json!({
        "query": [{ "name": "a", "regex": "x+", "ignoreCase": true }],
        "headers": [{ "name": "h", "present": false }, { "name": "g", "equals": "1" }],
        "body": [
            { "json": { "k": [1] }, "ignoreArrayOrder": true },
            { "jsonPath": "$.a", "contains": "z" },
            { "equals": "raw" },
        ],
    });
    let parsed = parse(value.clone()).unwrap();
    assert_eq!(serde_json::to_value(&parsed).unwrap(), value);
    let mut reordered = parsed.clone();
    reordered.headers.reverse();
    assert_eq!(parsed.fingerprint(), reordered.fingerprint());
    let other = parse(json!({ "headers": [{ "name": "h", "present": true }] })).unwrap();
    assert_ne!(parsed.fingerprint(), other.fingerprint());
}
