//! Access tokens: short-lived JWTs the control plane signs for itself with an
//! HS256 secret, and checks on every request.
//!
//! A token names its subject (`user:<uuid>` or `service:<uuid>`), the
//! organization it acts in and, for an environment-scoped token, one
//! workspace environment. Verification is strict: the algorithm is pinned to
//! HS256 whatever the token's header says, `iss` must be [`ISSUER`], `aud`
//! must be [`AUDIENCE`], and `exp` is checked with a leeway of five seconds,
//! which absorbs clock skew between control-plane replicas and nothing more.
//!
//! Opaque API tokens (`mpt_…`, see [`crate::identity::token`]) never look like a JWT;
//! [`looks_like_jwt`] tells the two apart.

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The `iss` of every token the control plane signs.
pub const ISSUER: &str = "mockplane";
/// The `aud` of every token the control plane signs.
pub const AUDIENCE: &str = "mockplane-api";
/// The shortest signing secret [`Signer::new`] accepts, in bytes.
pub const MIN_SECRET_LEN: usize = 32;

/// How many random bytes a new key file holds.
const KEY_FILE_SECRET_LEN: usize = 64;
/// Seconds a token stays valid past its `exp`, for clock skew.
const LEEWAY_SECS: u64 = 5;
/// Our tokens are a few hundred bytes; anything far longer is refused
/// before any decoding.
const MAX_TOKEN_LEN: usize = 8 * 1024;

/// What an access token asserts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// `user:<uuid>` or `service:<uuid>`.
    pub sub: String,
    /// The organization the token acts in.
    pub org: Uuid,
    /// Set for a token that is limited to one workspace environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<EnvScope>,
    /// A random id, unique per token, for revocation lists and audit logs.
    pub jti: String,
    /// Issued at, in seconds since the Unix epoch.
    pub iat: i64,
    /// Expires at, in seconds since the Unix epoch.
    pub exp: i64,
    pub iss: String,
    pub aud: String,
}

/// The environment an environment-scoped token is limited to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnvScope {
    pub workspace: Uuid,
    pub environment: String,
    /// The reason stated when the token was issued; the audit trail
    /// records it with every change made with the token.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// Why a token was refused. The messages are meant for the person holding
/// the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the access token has expired; log in again or use your refresh token")]
    Expired,
    #[error(
        "the access token's signature is not valid: it was not signed by this control plane, or \
         the control plane's signing key has changed since; log in again"
    )]
    BadSignature,
    #[error(
        "the token is signed with algorithm `{0}`; only HS256 tokens issued by this control plane are accepted"
    )]
    WrongAlgorithm(String),
    #[error(
        "the token was not issued by this control plane (its `iss` is not `{}`)",
        ISSUER
    )]
    WrongIssuer,
    #[error(
        "the token is not meant for the Mockplane API (its `aud` is not `{}`)",
        AUDIENCE
    )]
    WrongAudience,
    #[error("the access token is malformed: {0}")]
    Malformed(String),
}

/// The signing secret is too short to be safe.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the token signing secret has {0} bytes; at least {MIN_SECRET_LEN} are required")]
pub struct SecretTooShort(pub usize);

/// Signs and verifies access tokens with one HS256 secret. Its `Debug`
/// output never shows the secret.
pub struct Signer {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl Signer {
    /// A signer for `secret`, which must have at least [`MIN_SECRET_LEN`]
    /// bytes.
    pub fn new(secret: &[u8]) -> Result<Self, SecretTooShort> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(SecretTooShort(secret.len()));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        })
    }

    /// The signer whose secret is in the key file at `path`: base64url text
    /// of at least [`MIN_SECRET_LEN`] bytes. When there is no file, one is
    /// created with 64 random bytes, readable by the owner only. A file that
    /// is there but empty or unreadable is an error, never replaced: a new
    /// key would log everyone out.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read(path) {
            Ok(contents) => Self::from_key_file(path, &contents),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => create_key_file(path),
            Err(error) => Err(error).with_context(|| {
                format!("could not read the token signing key {}", path.display())
            }),
        }
    }

    /// A new token for `sub` in `org`, valid from now for `ttl`, and the
    /// claims it carries.
    pub fn issue(
        &self,
        sub: String,
        org: Uuid,
        env: Option<EnvScope>,
        ttl: Duration,
    ) -> (String, Claims) {
        let iat = unix_now();
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = Claims {
            sub,
            org,
            env,
            jti: Uuid::new_v4().to_string(),
            iat,
            exp: iat.saturating_add(ttl),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
        };
        (self.sign(&claims), claims)
    }

    /// The claims of `token`, if this signer issued it and it is still
    /// valid.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed(format!(
                "it is {} bytes long, far longer than any token this control plane issues",
                token.len()
            )));
        }
        if !looks_like_jwt(token) {
            return Err(TokenError::Malformed(
                "it is not a JWT (three base64url parts separated by dots)".into(),
            ));
        }
        // Check the header's algorithm ourselves first, for a clear answer
        // to `none` and friends, which the library cannot even parse.
        let alg = header_algorithm(token)?;
        if alg != "HS256" {
            return Err(TokenError::WrongAlgorithm(alg));
        }
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                ErrorKind::InvalidIssuer => TokenError::WrongIssuer,
                ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
                    TokenError::WrongAlgorithm(alg)
                }
                ErrorKind::MissingRequiredClaim(claim) => {
                    TokenError::Malformed(format!("the `{claim}` claim is missing"))
                }
                ErrorKind::InvalidClaimFormat(claim) => {
                    TokenError::Malformed(format!("the `{claim}` claim has the wrong type"))
                }
                ErrorKind::Json(error) => TokenError::Malformed(format!(
                    "its claims are not those of a Mockplane access token: {error}"
                )),
                ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
                    TokenError::Malformed("it is not valid base64url-encoded JSON".into())
                }
                _ => TokenError::Malformed(error.to_string()),
            })
    }

    fn from_key_file(path: &Path, contents: &[u8]) -> anyhow::Result<Self> {
        #[cfg(unix)]
        if let Ok(metadata) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt as _;
            if metadata.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "the token signing key is readable by other users; `chmod 600` it"
                );
            }
        }
        let remedy = "restore it from a backup, or delete it to have a new key generated \
                      (which invalidates every access token)";
        let text = std::str::from_utf8(contents).map(str::trim);
        if matches!(text, Ok("")) {
            bail!(
                "the token signing key file {} is empty; {remedy}",
                path.display()
            );
        }
        let secret = text
            .ok()
            .and_then(|text| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok())
            .ok_or_else(|| {
                anyhow!(
                    "the token signing key file {} does not hold base64url text; {remedy}",
                    path.display()
                )
            })?;
        Self::new(&secret)
            .map_err(|error| anyhow!("the token signing key file {}: {error}", path.display()))
    }

    /// Signs `claims` exactly as given (tools and tests use it to make
    /// tokens with chosen times).
    pub fn sign(&self, claims: &Claims) -> String {
        // HMAC takes a key of any length, and `Claims` always serializes:
        // there is no input for which this fails.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing of serializable claims cannot fail")
    }
}

/// Whether `token` has the shape of a JWT: three dot-separated base64url
/// parts, the first two non-empty (the signature may be empty, as in an
/// unsigned token, which [`Signer::verify`] then refuses by name). Opaque
/// API tokens never do.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let base64url = |part: &str| {
        part.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    !header.is_empty()
        && !payload.is_empty()
        && base64url(header)
        && base64url(payload)
        && base64url(signature)
}

/// The `alg` the token's header claims, unverified.
fn header_algorithm(token: &str) -> Result<String, TokenError> {
    let header = token.split('.').next().unwrap_or_default();
    let header: serde_json::Value = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| TokenError::Malformed("its header is not base64url-encoded JSON".into()))?;
    header
        .get("alg")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| TokenError::Malformed("its header names no algorithm (`alg`)".into()))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}

/// Writes a new random key to `path` (see [`crate::keyfile::create_once`]);
/// when another process wrote one meanwhile, that key is used.
fn create_key_file(path: &Path) -> anyhow::Result<Signer> {
    let context = || format!("could not create the token signing key {}", path.display());
    let mut secret = [0u8; KEY_FILE_SECRET_LEN];
    rand::rng().fill_bytes(&mut secret);
    let contents = format!("{}\n", URL_SAFE_NO_PAD.encode(secret));
    if !crate::keyfile::create_once(path, contents.as_bytes()).with_context(context)? {
        tracing::info!(path = %path.display(), "another process created the token signing key");
        let contents = std::fs::read(path).with_context(context)?;
        return Signer::from_key_file(path, &contents);
    }
    tracing::info!(path = %path.display(), "created a new token signing key");
    Ok(Signer::new(&secret)?)
}

#[cfg(test)]
mod tests;
