//! Error answers: a JSON body with a stable `code` for programs and a
//! `message` and a `hint` for people.

use bytes::Bytes;
use serde_json::json;

/// A JSON error answer.
pub fn problem(
    status: u16,
    code: &str,
    message: String,
    hint: Option<String>,
) -> (http::response::Parts, Bytes) {
    json_head(
        status,
        &json!({ "error": { "code": code, "message": message, "hint": hint } }),
    )
}

/// A JSON answer. A status outside 100..=999 (which no caller passes)
/// becomes a 500.
pub fn json_head(status: u16, body: &serde_json::Value) -> (http::response::Parts, Bytes) {
    let body = Bytes::from(body.to_string());
    let (mut head, ()) = http::Response::new(()).into_parts();
    head.status =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    head.headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    head.headers
        .insert(http::header::CONTENT_LENGTH, body.len().into());
    (head, body)
}
