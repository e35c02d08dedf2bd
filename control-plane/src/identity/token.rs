//! API tokens: random secrets shown once; only their SHA-256 is stored.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;

/// Every token starts with this, so leaked tokens are easy to scan for.
pub const TOKEN_PREFIX: &str = "mpt_";
/// Node tokens (the config stream's credentials) start with this.
pub use mockplane_proto::NODE_TOKEN_PREFIX;

/// A new token: the prefix and 256 random bits.
pub fn generate() -> String {
    generate_with(TOKEN_PREFIX)
}

/// A new secret: `prefix` and 256 random bits, base64url. API tokens and
/// data-plane keys are made this way, with their own prefixes.
pub fn generate_with(prefix: &str) -> String {
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut secret);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(secret))
}

/// What the store keeps of a token. A fast hash is right here: the secret
/// has 256 bits of entropy, so there is nothing to brute-force. The same
/// hash as data-plane keys (`mockplane_shared::model::keys::hash_hex`).
pub fn hash(token: &str) -> String {
    mockplane_shared::model::keys::hash_hex(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hashed_stably() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a).len(), 64);
    }
}
