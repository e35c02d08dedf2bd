//! Data-plane API keys: what a node checks requests against, and the rules
//! for making them.
//!
//! A key is a random secret (`mpk_…`, 256 bits) bound to one environment of
//! one workspace. It is shown once, when it is made; the control plane keeps,
//! and nodes receive, only its SHA-256. A request presents it in the
//! [`KEY_HEADER`] header.
//!
//! **Test keys** are temporary keys for trying things in environments after
//! the first of the chain (stage, prod): they need a reason and an expiry,
//! and their traffic is kept out of usage statistics and flagged in the
//! request journal. [`TestKeyLimits::DEFAULT`] holds their limits.

use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::model::error::{FieldError, parse_reason};
use crate::model::route::parse_name;

/// The request header that carries a key.
pub const KEY_HEADER: &str = "x-mockplane-key";
/// Every key starts with this, so leaked keys are easy to scan for.
pub const KEY_PREFIX: &str = "mpk_";
/// Most keys one environment may have.
pub const MAX_KEYS_PER_ENVIRONMENT: usize = 1000;

/// How far test keys reach. The defaults, [`TestKeyLimits::DEFAULT`], are
/// the documented ones: at most 7 days, at most 5 active (unexpired,
/// unrevoked) per person per workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestKeyLimits {
    /// Longest life of a test key, in seconds.
    pub max_ttl_seconds: u64,
    /// Most active test keys one principal may hold in one workspace.
    pub max_active: usize,
}

impl TestKeyLimits {
    pub const DEFAULT: Self = Self {
        max_ttl_seconds: 7 * 24 * 60 * 60,
        max_active: 5,
    };
}

impl Default for TestKeyLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A key as nodes receive it: never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyConfig {
    pub id: Uuid,
    /// SHA-256 of the secret.
    pub sha256: [u8; 32],
    /// A temporary test key: its traffic is not usage.
    pub test: bool,
    /// Unix seconds from which the key is refused; 0: never.
    pub expires_at_unix: u64,
}

impl ApiKeyConfig {
    pub fn is_expired(&self, now_unix: u64) -> bool {
        self.expires_at_unix != 0 && now_unix >= self.expires_at_unix
    }
}

/// SHA-256 of a presented key, as nodes look it up.
pub fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// SHA-256 of a key in hex, as the control plane stores it.
pub fn hash_hex(secret: &str) -> String {
    hex::encode(digest(secret.as_bytes()))
}

/// A stored or received key hash: 64 hex digits.
pub fn parse_sha256_hex(raw: &str) -> Result<[u8; 32], FieldError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(raw, &mut out).map_err(|_| {
        FieldError::new(
            "sha256",
            format!(
                "must be a SHA-256 in 64 hex digits, got {} characters",
                raw.len()
            ),
        )
    })?;
    Ok(out)
}

/// A key's name: 1 to 200 characters, no control characters.
pub fn parse_key_name(raw: &str) -> Result<String, FieldError> {
    let name = parse_name(raw).map_err(|m| FieldError::new("name", m))?;
    if name.is_empty() {
        return Err(FieldError::new(
            "name",
            "is required: say what the key is for (e.g. \"checkout-service\")",
        ));
    }
    Ok(name)
}

/// Checks how long a new key lives and, for a test key, its reason; returns
/// the life in seconds (`None`: until revoked). `ttl_seconds` 0 means no
/// expiry, which only normal keys may have.
pub fn check_key_life(
    ttl_seconds: u32,
    test: bool,
    reason: &str,
    limits: &TestKeyLimits,
) -> Result<Option<u64>, FieldError> {
    let ttl = u64::from(ttl_seconds);
    if !test {
        if !reason.trim().is_empty() {
            return Err(FieldError::new(
                "reason",
                "is for test keys only; leave it empty or set test",
            ));
        }
        return Ok((ttl > 0).then_some(ttl));
    }
    parse_reason(reason, "a test key needs a reason (who it is for and why)")?;
    let days = limits.max_ttl_seconds as f64 / 86_400.0;
    if ttl == 0 {
        return Err(FieldError::new(
            "ttl_seconds",
            format!(
                "a test key needs an expiry: give ttl_seconds, at most {} ({days} days)",
                limits.max_ttl_seconds
            ),
        ));
    }
    if ttl > limits.max_ttl_seconds {
        return Err(FieldError::new(
            "ttl_seconds",
            format!(
                "a test key lives at most {} seconds ({days} days), got {ttl}",
                limits.max_ttl_seconds
            ),
        ));
    }
    Ok(Some(ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_round_trip_through_hex() {
        let hex = hash_hex("mpk_secret");
        assert_eq!(hex.len(), 64);
        assert_eq!(parse_sha256_hex(&hex).unwrap(), digest(b"mpk_secret"));
        assert_eq!(parse_sha256_hex("abc").unwrap_err().field, "sha256");
        assert!(parse_sha256_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn test_keys_need_a_reason_and_a_bounded_life() {
        let limits = TestKeyLimits::DEFAULT;
        assert_eq!(check_key_life(0, false, "", &limits).unwrap(), None);
        assert_eq!(check_key_life(60, false, "", &limits).unwrap(), Some(60));
        assert_eq!(
            check_key_life(0, false, "why not", &limits)
                .unwrap_err()
                .field,
            "reason"
        );
        let reason = "load test for INC-42";
        assert_eq!(
            check_key_life(3600, true, reason, &limits).unwrap(),
            Some(3600)
        );
        let short = check_key_life(3600, true, "short", &limits).unwrap_err();
        assert_eq!(short.field, "reason");
        assert!(short.message.contains("8 to 500"), "{short}");
        let forever = check_key_life(0, true, reason, &limits).unwrap_err();
        assert_eq!(forever.field, "ttl_seconds");
        let long = check_key_life(8 * 86_400, true, reason, &limits).unwrap_err();
        assert!(long.message.contains("7 days"), "{long}");
        assert!(check_key_life(7 * 86_400, true, reason, &limits).is_ok());
    }

    #[test]
    fn expiry_is_inclusive() {
        let key = ApiKeyConfig {
            id: Uuid::nil(),
            sha256: [0; 32],
            test: false,
            expires_at_unix: 100,
        };
        assert!(!key.is_expired(99));
        assert!(key.is_expired(100));
        let forever = ApiKeyConfig {
            expires_at_unix: 0,
            ..key
        };
        assert!(!forever.is_expired(u64::MAX));
    }

    #[test]
    fn names_are_required() {
        assert_eq!(parse_key_name(" ci ").unwrap(), "ci");
        assert_eq!(parse_key_name("  ").unwrap_err().field, "name");
    }
}
