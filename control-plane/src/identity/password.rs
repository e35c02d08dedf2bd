//! Passwords: argon2id hashes in PHC string form, the password policy, and
//! random one-time passwords.
//!
//! Unlike API tokens (see [`crate::identity::token`]), passwords are chosen by people
//! and have little entropy, so the store keeps a slow, salted hash: argon2id
//! with the OWASP parameters (19 MiB, 2 passes, 1 lane). The parameters are
//! part of the PHC string, so they can be raised later without invalidating
//! stored hashes.

use argon2::password_hash::SaltString;
use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier as _};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;

/// The shortest password [`check_policy`] accepts, in characters.
pub const MIN_LEN: usize = 12;
/// The longest password [`check_policy`] accepts, in characters.
pub const MAX_LEN: usize = 1024;

/// The most expensive stored hash [`verify`] will compute: memory in KiB,
/// passes and lanes. Hashes from [`hash`] are far below these; a stored hash
/// above them was not written by us, and is refused rather than allowed to
/// allocate gigabytes or spin for minutes.
const MAX_M_COST: u32 = 256 * 1024;
const MAX_T_COST: u32 = 16;
const MAX_P_COST: u32 = 16;

/// Why a password could not be hashed. Hashing only fails on a broken
/// environment, never because of what the password contains.
#[derive(Debug, thiserror::Error)]
#[error("could not hash the password: {0}")]
pub struct PasswordError(String);

/// Hashes `password` with argon2id and a fresh random salt. The result is a
/// PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) for the store.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError(e.to_string()))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordError(e.to_string()))
}

/// Whether `password` matches the stored PHC string `phc`. A stored value
/// that is not an argon2id PHC string, or that asks for more work than this
/// module would ever use, never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    if parsed.algorithm != argon2::ARGON2ID_IDENT {
        return false;
    }
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    if params.m_cost() > MAX_M_COST || params.t_cost() > MAX_T_COST || params.p_cost() > MAX_P_COST
    {
        return false;
    }
    // The parameters and salt come from `parsed`, not from `hasher()`.
    hasher()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Checks a new password against the policy: between [`MIN_LEN`] and
/// [`MAX_LEN`] characters, and not one character repeated. The error is a
/// sentence to show the user.
pub fn check_policy(password: &str) -> Result<(), String> {
    let len = password.chars().count();
    if len < MIN_LEN {
        return Err(format!(
            "the password is too short: it has {len} characters and must have at least {MIN_LEN}"
        ));
    }
    if len > MAX_LEN {
        return Err(format!(
            "the password is too long: it has {len} characters and may have at most {MAX_LEN}"
        ));
    }
    let mut chars = password.chars();
    if let Some(first) = chars.next()
        && chars.all(|c| c == first)
    {
        return Err("the password repeats a single character; choose a less guessable one".into());
    }
    Ok(())
}

/// A random 24-character password from the URL-safe base64 alphabet
/// (`A–Z a–z 0–9 - _`, 144 bits), for one-time credentials. It always
/// passes [`check_policy`].
pub fn generate() -> String {
    loop {
        let mut bytes = [0u8; 18];
        rand::rng().fill_bytes(&mut bytes);
        let password = URL_SAFE_NO_PAD.encode(bytes);
        // A single repeated character has a chance of 2^-138; retry anyway
        // so the promise above holds without exception.
        if check_policy(&password).is_ok() {
            return password;
        }
    }
}

fn hasher() -> Argon2<'static> {
    Argon2::new(
        Algorithm::Argon2id,
        argon2::Version::V0x13,
        Params::default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let password = "correct horse battery staple";
        let a = hash(password).unwrap();
        let b = hash(password).unwrap();
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(verify(password, &a));
        assert!(verify(password, &b));
        assert!(!verify("correct horse battery stapler", &a));
        assert!(!verify("", &a));
    }

    #[test]
    fn malformed_stored_hashes_never_match() {
        let good = hash("a perfectly fine password").unwrap();
        let cheap = {
            let params = Params::new(Params::MIN_M_COST, 1, 1, None).unwrap();
            let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
            Argon2::new(Algorithm::Argon2id, argon2::Version::V0x13, params)
                .hash_password(b"pw", &salt)
                .unwrap()
                .to_string()
        };
        assert!(verify("pw", &cheap), "{cheap}");
        let truncated = &good[..good.len() - 10];
        let bad: [&str; 13] = [
            "",
            "not a hash",
            "$",
            "$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1$",
            truncated,
            // bcrypt and argon2i: not what we store
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
            &good.replace("argon2id", "argon2i"),
            // parameters out of range, or far above what `hash` uses
            &cheap.replace("m=8,", "m=4294967295,"),
            &cheap.replace("t=1,", "t=4000000000,"),
            &cheap.replace("p=1$", "p=99$"),
            &cheap.replace("t=1,", "t=0,"),
            &cheap.replace("m=8,", "m=nope,"),
        ];
        for phc in bad {
            assert!(!verify("pw", phc), "{phc:?} must not verify");
            assert!(!verify("a perfectly fine password", phc), "{phc:?}");
        }
    }

    #[test]
    fn policy() {
        assert!(check_policy("twelve chars").is_ok());
        assert!(check_policy(&"ab".repeat(512)).is_ok());
        let short = check_policy("short").unwrap_err();
        assert!(
            short.contains("5 characters") && short.contains("at least 12"),
            "{short}"
        );
        // Characters, not bytes: 11 three-byte characters are still too short.
        assert!(check_policy(&"€".repeat(11)).is_err());
        assert!(check_policy("€uro€uro€uro").is_ok());
        let long = check_policy(&"ab".repeat(513)).unwrap_err();
        assert!(
            long.contains("1026 characters") && long.contains("at most 1024"),
            "{long}"
        );
        let same = check_policy(&"a".repeat(20)).unwrap_err();
        assert!(same.contains("single character"), "{same}");
        assert!(check_policy("").is_err());
    }

    #[test]
    fn generated_passwords() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        for password in [&a, &b] {
            assert_eq!(password.len(), 24);
            assert!(
                password
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{password}"
            );
            assert!(check_policy(password).is_ok());
        }
    }
}
