//! The gRPC API: services, their shared state, and the helpers every
//! handler uses (page tokens, etags, field masks, timestamps). Handlers
//! validate at the edge, call the store, and map errors in one place
//! ([`error`]).

pub mod audit;
pub mod auth;
pub mod authz;
pub mod blocking;
pub mod environments;
pub mod error;
pub mod identity;
pub mod journal;
pub mod keys;
pub mod nodes;
pub mod notifications;
pub mod orgs;
pub mod personas;
pub mod promotions;
pub mod routes;
pub mod scenarios;
pub mod usage;
pub mod workspaces;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use mockplane_shared::FieldError;

pub use authz::ApiState;

/// Page sizes: 0 means the default; larger than `max` is lowered to `max`.
pub fn page_size(requested: u32, default: u32, max: u32) -> u32 {
    match requested {
        0 => default,
        n => n.min(max),
    }
}

/// Page tokens are opaque to clients: a kind tag and the last key seen,
/// base64url-encoded. The tag stops a token of one list being used for
/// another.
pub fn encode_page_token(kind: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{key}"))
}

pub fn decode_page_token(kind: &str, token: &str) -> Result<Option<String>, FieldError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        FieldError::new(
            "page_token",
            "is not valid; pass the next_page_token of the previous response unchanged",
        )
    };
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let raw = String::from_utf8(raw).map_err(|_| invalid())?;
    let key = raw
        .strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix(':'))
        .ok_or_else(invalid)?;
    Ok(Some(key.to_owned()))
}

/// Etags are the resource version as a string. Empty means "any version".
pub fn etag(version: i64) -> String {
    version.to_string()
}

pub fn parse_etag(raw: &str) -> Result<Option<i64>, FieldError> {
    if raw.is_empty() {
        return Ok(None);
    }
    raw.parse::<i64>()
        .map(Some)
        .map_err(|_| FieldError::new("etag", format!("{raw:?} is not an etag this server issued")))
}

/// The field names of an update mask, checked against those a resource
/// allows.
pub fn mask_paths<'a>(
    mask: Option<&'a prost_types::FieldMask>,
    allowed: &[&str],
) -> Result<Vec<&'a str>, FieldError> {
    let paths: Vec<&str> = mask
        .map(|m| m.paths.iter().map(String::as_str).collect())
        .unwrap_or_default();
    if paths.is_empty() {
        return Err(FieldError::new(
            "update_mask",
            format!(
                "must name at least one field to change: {}",
                allowed.join(", ")
            ),
        ));
    }
    if let Some(unknown) = paths.iter().find(|p| !allowed.contains(p)) {
        return Err(FieldError::new(
            "update_mask",
            format!("{unknown:?} cannot be updated; use {}", allowed.join(", ")),
        ));
    }
    Ok(paths)
}

pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let token = encode_page_token("ws", "demo");
        assert_eq!(
            decode_page_token("ws", &token).unwrap().as_deref(),
            Some("demo")
        );
        assert_eq!(decode_page_token("ws", "").unwrap(), None);
        for bad in [
            "!!!",
            &encode_page_token("routes", "x"),
            &URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
        ] {
            assert_eq!(
                decode_page_token("ws", bad).unwrap_err().field,
                "page_token"
            );
        }
    }

    #[test]
    fn masks_name_known_fields() {
        let mask = prost_types::FieldMask {
            paths: vec!["name".into()],
        };
        assert_eq!(
            mask_paths(Some(&mask), &["name", "slug"]).unwrap(),
            ["name"]
        );
        assert!(
            mask_paths(None, &["name"])
                .unwrap_err()
                .message
                .contains("at least one")
        );
        let bad = prost_types::FieldMask {
            paths: vec!["id".into()],
        };
        assert!(
            mask_paths(Some(&bad), &["name"])
                .unwrap_err()
                .message
                .contains("\"id\"")
        );
    }

    #[test]
    fn etags_and_page_sizes() {
        assert_eq!(parse_etag(&etag(7)).unwrap(), Some(7));
        assert_eq!(parse_etag("").unwrap(), None);
        assert_eq!(parse_etag("W/abc").unwrap_err().field, "etag");
        assert_eq!(page_size(0, 50, 1000), 50);
        assert_eq!(page_size(5000, 50, 1000), 1000);
    }
}
