//! External identity providers: teams bring their own OIDC issuer, and the
//! control plane accepts the JWTs it signs.
//!
//! Each provider is configured with its issuer (`iss`), the audience its
//! tokens must carry for us (`aud`), and where its public keys are: a JWKS
//! URL, or a JWKS file for providers without one. A token picks its
//! provider by its (unverified) `iss`; the provider's key is found by the
//! token's `kid`; then the signature, `iss` and `aud` are checked, and `exp`
//! and `nbf` with 30 seconds of leeway for clock skew between us and the
//! provider.
//!
//! Only asymmetric algorithms are accepted (RS256/384/512, PS256/384/512,
//! ES256/384, EdDSA), whatever the token's header says; symmetric keys in a
//! key set are ignored. With HS256 allowed, anyone could sign a token with
//! the provider's *public* key as the HMAC secret.
//!
//! Keys are fetched on first use and cached for an hour. A token whose `kid`
//! is not in the cache makes the verifier fetch the keys again, at most
//! once every 30 seconds per provider, which picks up key rotation without
//! letting made-up `kid`s hammer the provider. When the provider cannot be
//! reached the error is [`OidcError::Unavailable`], which callers answer
//! with gRPC `UNAVAILABLE` rather than `UNAUTHENTICATED`; keys already
//! cached keep working meanwhile.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::{Mutex, RwLock};

/// How long fetched keys are used before they are fetched again.
const KEYS_TTL: Duration = Duration::from_secs(60 * 60);
/// The shortest time between two fetches of one provider's keys.
const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// How long to wait before trying again after a failed fetch.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Key sets are a few KiB; a provider answering more is misbehaving.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;
/// Identity tokens are a few KiB at most; anything far longer is refused
/// before any decoding.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// One trusted identity provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The provider's `iss`, exactly as it appears in its tokens.
    pub issuer: String,
    /// The `aud` its tokens must carry to be accepted here.
    pub audience: String,
    /// Where the provider publishes its JSON Web Key Set (http or https).
    pub jwks_url: Option<String>,
    /// A JSON Web Key Set on disk, instead of `jwks_url`. A relative path
    /// in a file read by [`load_issuers`] is relative to that file.
    pub jwks_file: Option<PathBuf>,
    /// The claim holding the user's email address; `email` by default.
    #[serde(default = "default_email_claim")]
    pub email_claim: String,
}

fn default_email_claim() -> String {
    "email".to_owned()
}

impl IssuerConfig {
    fn check(&self) -> Result<(), String> {
        if self.issuer.trim().is_empty() {
            return Err("`issuer` is empty".into());
        }
        if self.issuer == crate::jwt::ISSUER {
            return Err(format!(
                "`{}` is the issuer of the control plane's own access tokens; an identity \
                 provider needs another name",
                crate::jwt::ISSUER
            ));
        }
        if self.audience.trim().is_empty() {
            return Err("`audience` is empty".into());
        }
        if self.email_claim.trim().is_empty() {
            return Err("`email_claim` is empty; leave it out to use `email`".into());
        }
        match (&self.jwks_url, &self.jwks_file) {
            (Some(_), Some(_)) => Err("set only one of `jwks_url` and `jwks_file`".into()),
            (None, None) => {
                Err("set `jwks_url` (where the provider publishes its keys) or `jwks_file`".into())
            }
            (Some(url), None) => match reqwest::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Ok(()),
                Ok(_) => Err(format!("`jwks_url` {url:?} must be an http or https URL")),
                Err(error) => Err(format!("`jwks_url` {url:?} is not a URL: {error}")),
            },
            (None, Some(_)) => Ok(()),
        }
    }
}

/// Reads the identity providers from a YAML or JSON file (JSON when the
/// name ends in `.json`): a list of [`IssuerConfig`] entries, at the top
/// level or under `issuers:`. Errors name the file and the entry.
pub fn load_issuers(path: &Path) -> anyhow::Result<Vec<IssuerConfig>> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the identity provider file {shown}"))?;
    let is_json = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    let document: Value = if is_json {
        serde_json::from_str(&text)
            .map_err(|error| anyhow!("{shown} is not valid JSON: {error}"))?
    } else {
        serde_yaml::from_str(&text)
            .map_err(|error| anyhow!("{shown} is not valid YAML: {error}"))?
    };
    let entries = match document {
        Value::Null => Vec::new(),
        Value::Array(entries) => entries,
        Value::Object(mut map) if map.len() == 1 && map.contains_key("issuers") => {
            match map.remove("issuers") {
                Some(Value::Array(entries)) => entries,
                Some(Value::Null) => Vec::new(),
                _ => bail!("{shown}: `issuers` must be a list of identity providers"),
            }
        }
        _ => bail!("{shown}: expected a list of identity providers, or an `issuers:` list"),
    };
    let base = path.parent().unwrap_or(Path::new(""));
    let mut issuers: Vec<IssuerConfig> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let name = match entry.get("issuer").and_then(Value::as_str) {
            Some(issuer) => format!("entry {} (issuer `{issuer}`)", index + 1),
            None => format!("entry {}", index + 1),
        };
        let mut config: IssuerConfig =
            serde_json::from_value(entry).map_err(|error| anyhow!("{shown}, {name}: {error}"))?;
        config
            .check()
            .map_err(|error| anyhow!("{shown}, {name}: {error}"))?;
        if let Some(earlier) = issuers.iter().position(|c| c.issuer == config.issuer) {
            bail!(
                "{shown}, {name}: the issuer is already configured by entry {}",
                earlier + 1
            );
        }
        if let Some(file) = &config.jwks_file
            && file.is_relative()
        {
            config.jwks_file = Some(base.join(file));
        }
        issuers.push(config);
    }
    Ok(issuers)
}

/// Who an identity token says its holder is, once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// The provider's `iss`.
    pub issuer: String,
    /// The token's `sub`: the user's id at that provider.
    pub subject: String,
    /// The address in the configured email claim, unless missing or marked
    /// unverified by the provider (`email_verified: false`).
    pub email: Option<String>,
}

/// Why an identity token was refused. The messages are meant for the person
/// holding the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OidcError {
    #[error("the identity token is malformed: {0}")]
    Malformed(String),
    #[error(
        "the identity token is signed with algorithm `{0}`; only asymmetric signatures \
         (RS256/384/512, PS256/384/512, ES256/384, EdDSA) are accepted"
    )]
    WrongAlgorithm(String),
    #[error(
        "the identity token was issued by `{0}`, which is not an identity provider this control plane trusts"
    )]
    UnknownIssuer(String),
    #[error(
        "{} is not among the signing keys `{issuer}` publishes",
        key_name(.kid)
    )]
    UnknownKey { issuer: String, kid: Option<String> },
    #[error("{} of `{issuer}` cannot verify this token: {reason}", key_name(.kid))]
    UnsuitableKey {
        issuer: String,
        kid: Option<String>,
        reason: String,
    },
    #[error("the identity token's signature does not match the key `{issuer}` publishes for it")]
    BadSignature { issuer: String },
    #[error("the identity token has expired; sign in with your identity provider again")]
    Expired,
    #[error("the identity token is not valid yet (its `nbf` is in the future); check the clocks")]
    NotYetValid,
    #[error(
        "the identity token is meant for another audience; `{issuer}` must issue it for `{expected}`"
    )]
    WrongAudience { issuer: String, expected: String },
    #[error(
        "could not get the signing keys of identity provider `{issuer}`: {reason}; try again shortly"
    )]
    Unavailable { issuer: String, reason: String },
}

fn key_name(kid: &Option<String>) -> String {
    match kid {
        Some(kid) => format!("the token's key `{kid}`"),
        None => "the token names no key (`kid`), and its key".to_owned(),
    }
}

/// Verifies identity tokens from the configured providers, caching their
/// keys. Share one per process.
pub struct OidcVerifier {
    providers: HashMap<String, Provider>,
    client: reqwest::Client,
}

struct Provider {
    config: IssuerConfig,
    keys: RwLock<KeyCache>,
    /// Held while fetching, so concurrent misses cause one fetch.
    fetching: Mutex<()>,
}

#[derive(Default)]
struct KeyCache {
    keys: Vec<CachedKey>,
    /// Until when the keys count as current; `None` before the first fetch.
    fresh_until: Option<Instant>,
    /// The earliest time the next fetch may start.
    next_fetch: Option<Instant>,
    /// Why the last fetch failed, while it is the latest word.
    last_error: Option<String>,
}

struct CachedKey {
    kid: Option<String>,
    kind: KeyKind,
    /// The one algorithm the key is published for, if the JWK says.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        match self {
            KeyKind::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            KeyKind::P256 => alg == Algorithm::ES256,
            KeyKind::P384 => alg == Algorithm::ES384,
            KeyKind::Ed25519 => alg == Algorithm::EdDSA,
        }
    }
}

enum Lookup {
    Found(DecodingKey),
    Unsuitable(String),
    Missing,
}

impl KeyCache {
    fn is_fresh(&self, now: Instant) -> bool {
        self.fresh_until.is_some_and(|until| now < until)
    }

    fn may_fetch(&self, now: Instant) -> bool {
        self.next_fetch.is_none_or(|at| now >= at)
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Lookup {
        let Some(kid) = kid else {
            // Without a `kid`, only a key set with exactly one key that fits
            // is unambiguous.
            let mut fitting = self.keys.iter().filter(|key| key.accepts(alg));
            return match (fitting.next(), fitting.next()) {
                (Some(key), None) => Lookup::Found(key.key.clone()),
                _ => Lookup::Missing,
            };
        };
        match self.keys.iter().find(|key| key.kid.as_deref() == Some(kid)) {
            None => Lookup::Missing,
            Some(key) if key.accepts(alg) => Lookup::Found(key.key.clone()),
            Some(key) => Lookup::Unsuitable(match key.alg {
                Some(published) if key.kind.fits(alg) => {
                    format!("it is published for {published:?} and the token says {alg:?}")
                }
                _ => format!(
                    "it is {} key and the token says {alg:?}",
                    match key.kind {
                        KeyKind::Rsa => "an RSA",
                        KeyKind::P256 => "a P-256",
                        KeyKind::P384 => "a P-384",
                        KeyKind::Ed25519 => "an Ed25519",
                    }
                ),
            }),
        }
    }
}

impl CachedKey {
    fn accepts(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|published| published == alg)
    }

    /// The verifying key a JWK describes, or `None` for anything that is
    /// not an asymmetric signing key we support (symmetric keys, encryption
    /// keys, other curves, malformed coordinates).
    fn from_jwk(jwk: &Jwk) -> Option<Self> {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return None;
        }
        let coordinate_len = |value: &str| URL_SAFE_NO_PAD.decode(value).ok().map(|b| b.len());
        let kind = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => KeyKind::Rsa,
            AlgorithmParameters::EllipticCurve(params) => {
                let (kind, len) = match params.curve {
                    EllipticCurve::P256 => (KeyKind::P256, 32),
                    EllipticCurve::P384 => (KeyKind::P384, 48),
                    _ => return None,
                };
                if coordinate_len(&params.x) != Some(len) || coordinate_len(&params.y) != Some(len)
                {
                    return None;
                }
                kind
            }
            AlgorithmParameters::OctetKeyPair(params) => {
                if params.curve != EllipticCurve::Ed25519 || coordinate_len(&params.x) != Some(32) {
                    return None;
                }
                KeyKind::Ed25519
            }
            _ => return None,
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(published) => Some(Algorithm::try_from(published).ok()?),
        };
        if alg.is_some_and(|alg| !kind.fits(alg)) {
            return None;
        }
        Some(Self {
            kid: jwk.common.key_id.clone(),
            kind,
            alg,
            key: DecodingKey::from_jwk(jwk).ok()?,
        })
    }
}

/// What a token says about itself before anything is verified.
struct Unverified {
    alg: String,
    kid: Option<String>,
    iss: String,
}

impl OidcVerifier {
    /// A verifier for `issuers`, fetching keys with `client`. Keys are
    /// fetched on first use; if an issuer is listed twice, the first entry
    /// counts ([`load_issuers`] refuses such files).
    pub fn new(issuers: Vec<IssuerConfig>, client: reqwest::Client) -> Self {
        let mut providers = HashMap::with_capacity(issuers.len());
        for config in issuers {
            providers
                .entry(config.issuer.clone())
                .or_insert_with(|| Provider {
                    config,
                    keys: RwLock::new(KeyCache::default()),
                    fetching: Mutex::new(()),
                });
        }
        Self { providers, client }
    }

    /// Whether `token` claims (unverified) to come from one of the
    /// configured providers, so the auth layer knows which verifier to ask.
    pub fn is_external_issuer(&self, token: &str) -> bool {
        token.len() <= MAX_TOKEN_LEN
            && token
                .split('.')
                .nth(1)
                .and_then(decode_part)
                .and_then(|claims| claims.get("iss")?.as_str().map(str::to_owned))
                .is_some_and(|iss| self.providers.contains_key(&iss))
    }

    /// Checks `token` against the keys of the provider it names and returns
    /// who it identifies.
    pub async fn verify(&self, token: &str) -> Result<ExternalIdentity, OidcError> {
        let unverified = peek(token)?;
        let alg = accepted_algorithm(&unverified.alg)?;
        let provider = self
            .providers
            .get(&unverified.iss)
            .ok_or_else(|| OidcError::UnknownIssuer(unverified.iss.clone()))?;
        let config = &provider.config;
        let kid = unverified.kid.as_deref();
        let key = self.key(provider, kid, alg).await?;

        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|error| {
                let issuer = config.issuer.clone();
                match error.kind() {
                    ErrorKind::ExpiredSignature => OidcError::Expired,
                    ErrorKind::ImmatureSignature => OidcError::NotYetValid,
                    ErrorKind::InvalidSignature => OidcError::BadSignature { issuer },
                    ErrorKind::InvalidAudience => OidcError::WrongAudience {
                        issuer,
                        expected: config.audience.clone(),
                    },
                    ErrorKind::InvalidRsaKey(_)
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidEddsaKey
                    | ErrorKind::InvalidKeyFormat => OidcError::UnsuitableKey {
                        issuer,
                        kid: unverified.kid.clone(),
                        reason: format!("the published key is not valid ({error})"),
                    },
                    ErrorKind::MissingRequiredClaim(claim) => {
                        OidcError::Malformed(format!("the `{claim}` claim is missing"))
                    }
                    ErrorKind::InvalidClaimFormat(claim) => {
                        OidcError::Malformed(format!("the `{claim}` claim has the wrong type"))
                    }
                    ErrorKind::Json(_)
                    | ErrorKind::Base64(_)
                    | ErrorKind::Utf8(_)
                    | ErrorKind::InvalidToken => {
                        OidcError::Malformed("it is not valid base64url-encoded JSON".into())
                    }
                    _ => OidcError::Malformed(error.to_string()),
                }
            })?
            .claims;

        let subject = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            _ => {
                return Err(OidcError::Malformed(
                    "the `sub` claim must be a non-empty string".into(),
                ));
            }
        };
        // Some providers send `email_verified` as a string.
        let unverified_email = match claims.get("email_verified") {
            Some(Value::Bool(verified)) => !verified,
            Some(Value::String(verified)) => verified != "true",
            _ => false,
        };
        let email = claims
            .get(&config.email_claim)
            .and_then(Value::as_str)
            .filter(|email| !email.is_empty() && !unverified_email)
            .map(str::to_owned);
        Ok(ExternalIdentity {
            issuer: config.issuer.clone(),
            subject,
            email,
        })
    }

    /// The provider's key for `kid`, fetching the key set when it is not
    /// cached yet, is stale, or lacks `kid` (rate-limited).
    async fn key(
        &self,
        provider: &Provider,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<DecodingKey, OidcError> {
        let issuer = &provider.config.issuer;
        let found = |lookup: Lookup| match lookup {
            Lookup::Found(key) => Some(Ok(key)),
            Lookup::Unsuitable(reason) => Some(Err(OidcError::UnsuitableKey {
                issuer: issuer.clone(),
                kid: kid.map(str::to_owned),
                reason,
            })),
            Lookup::Missing => None,
        };
        {
            let cache = provider.keys.read().await;
            if cache.is_fresh(Instant::now())
                && let Some(result) = found(cache.find(kid, alg))
            {
                return result;
            }
        }

        let _fetching = provider.fetching.lock().await;
        let now = Instant::now();
        {
            // Another request may have fetched while this one waited.
            let cache = provider.keys.read().await;
            if cache.is_fresh(now)
                && let Some(result) = found(cache.find(kid, alg))
            {
                return result;
            }
            if !cache.may_fetch(now) {
                // Stale keys are better than none while the provider is
                // unreachable.
                if let Some(result) = found(cache.find(kid, alg)) {
                    return result;
                }
                return Err(match &cache.last_error {
                    Some(reason) => OidcError::Unavailable {
                        issuer: issuer.clone(),
                        reason: reason.clone(),
                    },
                    None => OidcError::UnknownKey {
                        issuer: issuer.clone(),
                        kid: kid.map(str::to_owned),
                    },
                });
            }
        }

        let fetched = self.fetch(&provider.config).await;
        let now = Instant::now();
        let mut cache = provider.keys.write().await;
        match fetched {
            Ok(keys) => {
                tracing::debug!(%issuer, keys = keys.len(), "fetched identity provider keys");
                cache.keys = keys;
                cache.fresh_until = Some(now + KEYS_TTL);
                cache.next_fetch = Some(now + REFETCH_INTERVAL);
                cache.last_error = None;
            }
            Err(reason) => {
                tracing::warn!(%issuer, %reason, "could not fetch identity provider keys");
                cache.next_fetch = Some(now + RETRY_AFTER_FAILURE);
                cache.last_error = Some(reason.clone());
                return found(cache.find(kid, alg)).unwrap_or(Err(OidcError::Unavailable {
                    issuer: issuer.clone(),
                    reason,
                }));
            }
        }
        found(cache.find(kid, alg)).unwrap_or_else(|| {
            Err(OidcError::UnknownKey {
                issuer: issuer.clone(),
                kid: kid.map(str::to_owned),
            })
        })
    }

    async fn fetch(&self, config: &IssuerConfig) -> Result<Vec<CachedKey>, String> {
        let (source, body) = match (&config.jwks_url, &config.jwks_file) {
            (Some(url), _) => (url.clone(), self.download(url).await?),
            (None, Some(file)) => {
                let shown = file.display().to_string();
                let body = tokio::fs::read(file)
                    .await
                    .map_err(|error| format!("could not read {shown}: {error}"))?;
                (shown, body)
            }
            (None, None) => return Err("neither `jwks_url` nor `jwks_file` is configured".into()),
        };
        #[derive(Deserialize)]
        struct KeySet {
            keys: Vec<Value>,
        }
        let set: KeySet = serde_json::from_slice(&body)
            .map_err(|error| format!("{source} is not a JSON Web Key Set: {error}"))?;
        // Keys we cannot use (other types, encryption keys) are skipped, not
        // fatal: providers publish all sorts.
        Ok(set
            .keys
            .into_iter()
            .filter_map(|key| CachedKey::from_jwk(&serde_json::from_value(key).ok()?))
            .collect())
    }

    async fn download(&self, url: &str) -> Result<Vec<u8>, String> {
        let mut response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|error| format!("could not fetch {url}: {}", error_chain(&error)))?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| format!("could not read {url}: {}", error_chain(&error)))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!(
                    "{url} answered more than {} KiB, far more than a key set",
                    MAX_JWKS_BYTES / 1024
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Lets the next lookup for `issuer` fetch at once, as if the rate
    /// limit had run out.
    #[cfg(test)]
    async fn allow_fetch_now(&self, issuer: &str) {
        if let Some(provider) = self.providers.get(issuer) {
            provider.keys.write().await.next_fetch = None;
        }
    }
}

/// The token's header and issuer, unverified.
fn peek(token: &str) -> Result<Unverified, OidcError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(OidcError::Malformed(format!(
            "it is {} bytes long, far longer than any identity token",
            token.len()
        )));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(OidcError::Malformed(
            "it is not a JWT (three base64url parts separated by dots)".into(),
        ));
    };
    let header = decode_part(header)
        .ok_or_else(|| OidcError::Malformed("its header is not base64url-encoded JSON".into()))?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| OidcError::Malformed("its header names no algorithm (`alg`)".into()))?
        .to_owned();
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(OidcError::Malformed("its `kid` is not a string".into())),
    };
    let claims = decode_part(payload)
        .ok_or_else(|| OidcError::Malformed("its claims are not base64url-encoded JSON".into()))?;
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| OidcError::Malformed("it has no `iss` claim naming its issuer".into()))?
        .to_owned();
    Ok(Unverified { alg, kid, iss })
}

fn decode_part(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn accepted_algorithm(alg: &str) -> Result<Algorithm, OidcError> {
    Ok(match alg {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        other => return Err(OidcError::WrongAlgorithm(other.to_owned())),
    })
}

/// An error and its causes, for reqwest errors whose own message is only
/// "error sending request".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use base64::engine::general_purpose::STANDARD;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;

    const ISSUER: &str = "https://idp.example.com/";
    const AUDIENCE: &str = "mockplane";
    const RSA_1: &str = include_str!("../tests/fixtures/oidc/rsa-1.pem");
    const RSA_1_PUBLIC: &str = include_str!("../tests/fixtures/oidc/rsa-1.pub.pem");
    const RSA_2: &str = include_str!("../tests/fixtures/oidc/rsa-2.pem");
    const EC_1: &str = include_str!("../tests/fixtures/oidc/ec-1.pem");
    const JWKS_1: &str = include_str!("../tests/fixtures/oidc/jwks-1.json");
    const JWKS_2: &str = include_str!("../tests/fixtures/oidc/jwks-2.json");

    fn der(pem: &str) -> Vec<u8> {
        let base64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        STANDARD.decode(base64).unwrap()
    }

    fn now() -> i64 {
        i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap()
    }

    fn claims() -> Value {
        json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "00u1abcd",
            "email": "ada@example.com",
            "iat": now(),
            "exp": now() + 600,
        })
    }

    fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn rsa(kid: &str, pem: &str, claims: &Value) -> String {
        sign(
            Algorithm::RS256,
            kid,
            &EncodingKey::from_rsa_der(&der(pem)),
            claims,
        )
    }

    fn b64(json: &Value) -> String {
        URL_SAFE_NO_PAD.encode(json.to_string())
    }

    /// An HTTP server on 127.0.0.1:0 answering every request with the
    /// current status and body, one request per connection.
    struct JwksServer {
        url: String,
        reply: Arc<std::sync::Mutex<(u16, String)>>,
        hits: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl JwksServer {
        async fn start(body: &str) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
            let reply = Arc::new(std::sync::Mutex::new((200, body.to_owned())));
            let hits = Arc::new(AtomicUsize::new(0));
            let task = tokio::spawn({
                let (reply, hits) = (reply.clone(), hits.clone());
                async move {
                    while let Ok((mut stream, _)) = listener.accept().await {
                        let (status, body) = reply.lock().unwrap().clone();
                        let hits = hits.clone();
                        tokio::spawn(async move {
                            let mut request = Vec::new();
                            let mut buf = [0u8; 1024];
                            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                                match stream.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => request.extend_from_slice(&buf[..n]),
                                }
                            }
                            hits.fetch_add(1, Ordering::SeqCst);
                            let response = format!(
                                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = stream.write_all(response.as_bytes()).await;
                            let _ = stream.shutdown().await;
                        });
                    }
                }
            });
            Self {
                url,
                reply,
                hits,
                task,
            }
        }

        fn set(&self, status: u16, body: &str) {
            *self.reply.lock().unwrap() = (status, body.to_owned());
        }

        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }
    }

    impl Drop for JwksServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn issuer(jwks_url: Option<&str>, jwks_file: Option<PathBuf>) -> IssuerConfig {
        IssuerConfig {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            jwks_url: jwks_url.map(str::to_owned),
            jwks_file,
            email_claim: default_email_claim(),
        }
    }

    fn client() -> reqwest::Client {
        // Proxy settings from the environment must not catch 127.0.0.1.
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    async fn verifier_with_server() -> (OidcVerifier, JwksServer) {
        let server = JwksServer::start(JWKS_1).await;
        let verifier = OidcVerifier::new(vec![issuer(Some(&server.url), None)], client());
        (verifier, server)
    }

    #[tokio::test]
    async fn valid_tokens_are_accepted() {
        let (verifier, server) = verifier_with_server().await;
        let token = rsa("rsa-1", RSA_1, &claims());
        assert!(verifier.is_external_issuer(&token));
        let identity = verifier.verify(&token).await.unwrap();
        assert_eq!(
            identity,
            ExternalIdentity {
                issuer: ISSUER.into(),
                subject: "00u1abcd".into(),
                email: Some("ada@example.com".into()),
            }
        );
        // ES256, from the same (cached) key set.
        let token = sign(
            Algorithm::ES256,
            "ec-1",
            &EncodingKey::from_ec_der(&der(EC_1)),
            &claims(),
        );
        assert_eq!(verifier.verify(&token).await.unwrap().subject, "00u1abcd");
        assert_eq!(server.hits(), 1, "the key set is fetched once");
    }

    #[tokio::test]
    async fn unverified_or_missing_email_is_left_out() {
        let (verifier, _server) = verifier_with_server().await;
        for flag in [json!(false), json!("false")] {
            let mut claims = claims();
            claims["email_verified"] = flag;
            let identity = verifier
                .verify(&rsa("rsa-1", RSA_1, &claims))
                .await
                .unwrap();
            assert_eq!(identity.email, None);
        }
        for flag in [json!(true), json!("true")] {
            let mut claims = claims();
            claims["email_verified"] = flag;
            let identity = verifier
                .verify(&rsa("rsa-1", RSA_1, &claims))
                .await
                .unwrap();
            assert_eq!(identity.email.as_deref(), Some("ada@example.com"));
        }
        let mut claims = claims();
        claims.as_object_mut().unwrap().remove("email");
        let identity = verifier
            .verify(&rsa("rsa-1", RSA_1, &claims))
            .await
            .unwrap();
        assert_eq!(identity.email, None);
    }

    #[tokio::test]
    async fn wrong_audience_expired_and_unknown_issuer_are_refused() {
        let (verifier, _server) = verifier_with_server().await;
        let mut wrong_aud = claims();
        wrong_aud["aud"] = json!("someone-else");
        let error = verifier
            .verify(&rsa("rsa-1", RSA_1, &wrong_aud))
            .await
            .unwrap_err();
        assert_eq!(
            error,
            OidcError::WrongAudience {
                issuer: ISSUER.into(),
                expected: AUDIENCE.into()
            }
        );

        let mut expired = claims();
        expired["exp"] = json!(now() - 3600);
        let error = verifier
            .verify(&rsa("rsa-1", RSA_1, &expired))
            .await
            .unwrap_err();
        assert_eq!(error, OidcError::Expired);

        let mut no_sub = claims();
        no_sub.as_object_mut().unwrap().remove("sub");
        assert!(matches!(
            verifier.verify(&rsa("rsa-1", RSA_1, &no_sub)).await,
            Err(OidcError::Malformed(message)) if message.contains("`sub`")
        ));

        let mut other = claims();
        other["iss"] = json!("https://evil.example.net");
        let token = rsa("rsa-1", RSA_1, &other);
        assert!(!verifier.is_external_issuer(&token));
        let error = verifier.verify(&token).await.unwrap_err();
        assert_eq!(
            error,
            OidcError::UnknownIssuer("https://evil.example.net".into())
        );
        assert!(error.to_string().contains("`https://evil.example.net`"));
    }

    #[tokio::test]
    async fn unknown_or_mismatched_keys_are_refused() {
        let (verifier, server) = verifier_with_server().await;
        let token = rsa("rsa-2", RSA_2, &claims());
        assert_eq!(
            verifier.verify(&token).await.unwrap_err(),
            OidcError::UnknownKey {
                issuer: ISSUER.into(),
                kid: Some("rsa-2".into())
            }
        );
        assert_eq!(server.hits(), 1);
        // Another unknown kid within 30 s does not fetch again.
        let token = rsa("made-up", RSA_2, &claims());
        assert!(matches!(
            verifier.verify(&token).await,
            Err(OidcError::UnknownKey { .. })
        ));
        assert_eq!(server.hits(), 1);

        // Signed by another key under a published kid.
        let token = rsa("rsa-1", RSA_2, &claims());
        assert_eq!(
            verifier.verify(&token).await.unwrap_err(),
            OidcError::BadSignature {
                issuer: ISSUER.into()
            }
        );
        // An ES256 token naming the RSA key.
        let token = sign(
            Algorithm::ES256,
            "rsa-1",
            &EncodingKey::from_ec_der(&der(EC_1)),
            &claims(),
        );
        assert!(matches!(
            verifier.verify(&token).await,
            Err(OidcError::UnsuitableKey { reason, .. }) if reason.contains("RSA")
        ));
        // RS512 with a key published for RS256 only.
        let token = sign(
            Algorithm::RS512,
            "rsa-1",
            &EncodingKey::from_rsa_der(&der(RSA_1)),
            &claims(),
        );
        assert!(matches!(
            verifier.verify(&token).await,
            Err(OidcError::UnsuitableKey { reason, .. }) if reason.contains("RS256")
        ));
    }

    #[tokio::test]
    async fn symmetric_and_unsigned_tokens_are_refused() {
        let (verifier, server) = verifier_with_server().await;
        // The classic confusion attack: HS256 with the public key as secret.
        for secret in [RSA_1_PUBLIC.as_bytes(), JWKS_1.as_bytes()] {
            let token = sign(
                Algorithm::HS256,
                "rsa-1",
                &EncodingKey::from_secret(secret),
                &claims(),
            );
            assert_eq!(
                verifier.verify(&token).await.unwrap_err(),
                OidcError::WrongAlgorithm("HS256".into())
            );
        }
        let token = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"})),
            b64(&claims())
        );
        let error = verifier.verify(&token).await.unwrap_err();
        assert_eq!(error, OidcError::WrongAlgorithm("none".into()));
        assert!(error.to_string().contains("`none`"), "{error}");
        assert_eq!(server.hits(), 0, "refused before any key is fetched");

        for garbage in ["", "a.b", "a.b.c", "x.y.z.w", "mpt_abc"] {
            assert!(
                matches!(verifier.verify(garbage).await, Err(OidcError::Malformed(_))),
                "{garbage:?}"
            );
            assert!(!verifier.is_external_issuer(garbage));
        }
    }

    #[tokio::test]
    async fn key_rotation_is_picked_up() {
        let (verifier, server) = verifier_with_server().await;
        let old = rsa("rsa-1", RSA_1, &claims());
        let new = rsa("rsa-2", RSA_2, &claims());
        assert!(verifier.verify(&old).await.is_ok());

        server.set(200, JWKS_2);
        // Within 30 s of the last fetch, an unknown kid does not refetch...
        assert!(matches!(
            verifier.verify(&new).await,
            Err(OidcError::UnknownKey { .. })
        ));
        assert_eq!(server.hits(), 1);
        // ...after that, it does, and the new key is used.
        verifier.allow_fetch_now(ISSUER).await;
        let identity = verifier.verify(&new).await.unwrap();
        assert_eq!(identity.subject, "00u1abcd");
        assert_eq!(server.hits(), 2);
        // The retired key is gone with the old key set.
        assert!(matches!(
            verifier.verify(&old).await,
            Err(OidcError::UnknownKey { .. })
        ));
        assert_eq!(server.hits(), 2);
    }

    #[tokio::test]
    async fn fetch_failures_are_unavailable() {
        let server = JwksServer::start(JWKS_1).await;
        server.set(500, "oops");
        let verifier = OidcVerifier::new(vec![issuer(Some(&server.url), None)], client());
        let token = rsa("rsa-1", RSA_1, &claims());
        let error = verifier.verify(&token).await.unwrap_err();
        assert!(
            matches!(&error, OidcError::Unavailable { reason, .. } if reason.contains("500")),
            "{error:?}"
        );
        // The failure is remembered briefly rather than retried at once.
        assert!(matches!(
            verifier.verify(&token).await,
            Err(OidcError::Unavailable { .. })
        ));
        assert_eq!(server.hits(), 1);

        server.set(200, "not json");
        verifier.allow_fetch_now(ISSUER).await;
        assert!(matches!(
            verifier.verify(&token).await,
            Err(OidcError::Unavailable { reason, .. }) if reason.contains("JSON Web Key Set")
        ));

        server.set(200, JWKS_1);
        verifier.allow_fetch_now(ISSUER).await;
        assert!(verifier.verify(&token).await.is_ok());
    }

    #[tokio::test]
    async fn keys_can_come_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jwks.json");
        std::fs::write(&file, JWKS_1).unwrap();
        let verifier = OidcVerifier::new(vec![issuer(None, Some(file.clone()))], client());
        let token = sign(
            Algorithm::ES256,
            "ec-1",
            &EncodingKey::from_ec_der(&der(EC_1)),
            &claims(),
        );
        assert_eq!(verifier.verify(&token).await.unwrap().subject, "00u1abcd");
        // Rotation works the same way for files.
        std::fs::write(&file, JWKS_2).unwrap();
        verifier.allow_fetch_now(ISSUER).await;
        let token = rsa("rsa-2", RSA_2, &claims());
        assert!(verifier.verify(&token).await.is_ok());

        let missing = OidcVerifier::new(
            vec![issuer(None, Some(dir.path().join("missing.json")))],
            client(),
        );
        assert!(matches!(
            missing.verify(&token).await,
            Err(OidcError::Unavailable { reason, .. }) if reason.contains("missing.json")
        ));
    }

    #[test]
    fn unusable_keys_are_skipped() {
        let keys: Value = json!([
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "kid": "short", "crv": "P-256", "x": "AQAB", "y": "AQAB"},
            {"kty": "OKP", "kid": "ed-short", "crv": "Ed25519", "x": "AQAB"},
            {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AQAB", "y": "AQAB"},
            {"kty": "RSA", "kid": "rs-as-es", "alg": "ES256", "n": "AQAB", "e": "AQAB"},
            {"kty": "weird", "kid": "weird"},
            {"kty": "RSA", "kid": "ok", "n": "AQAB", "e": "AQAB"},
        ]);
        let usable: Vec<Option<String>> = keys
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|key| CachedKey::from_jwk(&serde_json::from_value(key.clone()).ok()?))
            .map(|key| key.kid)
            .collect();
        assert_eq!(usable, vec![Some("ok".to_owned())]);
    }

    #[test]
    fn issuer_files() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("issuers.yaml");
        std::fs::write(
            &yaml,
            "issuers:\n\
             - issuer: https://idp.example.com/\n\
             \x20 audience: mockplane\n\
             \x20 jwks_url: https://idp.example.com/.well-known/jwks.json\n\
             - issuer: https://login.example.org\n\
             \x20 audience: api://mockplane\n\
             \x20 jwks_file: keys/jwks.json\n\
             \x20 email_claim: upn\n",
        )
        .unwrap();
        let issuers = load_issuers(&yaml).unwrap();
        assert_eq!(issuers.len(), 2);
        assert_eq!(issuers[0].email_claim, "email");
        assert_eq!(issuers[1].email_claim, "upn");
        assert_eq!(
            issuers[1].jwks_file.as_deref(),
            Some(dir.path().join("keys/jwks.json").as_path())
        );

        let json_file = dir.path().join("issuers.json");
        std::fs::write(
            &json_file,
            r#"[{"issuer": "a", "audience": "b", "jwks_file": "/etc/jwks.json"}]"#,
        )
        .unwrap();
        let issuers = load_issuers(&json_file).unwrap();
        assert_eq!(
            issuers[0].jwks_file.as_deref(),
            Some(Path::new("/etc/jwks.json"))
        );

        let bad = [
            (
                r#"[{"issuer": "a", "audience": "b", "jwks_file": "f"}, {"issuer": "c", "audience": "d", "jwks_url": "https://x/", "jwks_file": "f"}]"#,
                "entry 2 (issuer `c`): set only one",
            ),
            (
                r#"[{"issuer": "a", "audience": "b", "jwks_file": "f"}, {"issuer": "c", "audience": "d"}]"#,
                "entry 2 (issuer `c`): set `jwks_url`",
            ),
            (
                r#"[{"issuer": "a", "audience": "b", "jwks_uri": "https://x/"}]"#,
                "entry 1 (issuer `a`): unknown field `jwks_uri`",
            ),
            (
                r#"[{"issuer": "a", "jwks_url": "https://x/"}]"#,
                "missing field `audience`",
            ),
            (
                r#"[{"issuer": "a", "audience": "b", "jwks_url": "ftp://x/"}]"#,
                "http or https",
            ),
            (
                r#"[{"issuer": "a", "audience": "b", "jwks_url": "https://x/"}, {"issuer": "a", "audience": "c", "jwks_url": "https://y/"}]"#,
                "entry 2 (issuer `a`): the issuer is already configured by entry 1",
            ),
            (
                r#"[{"issuer": "mockplane", "audience": "b", "jwks_file": "f"}]"#,
                "entry 1 (issuer `mockplane`): `mockplane` is the issuer of the control plane's own",
            ),
            (r#"{"providers": []}"#, "expected a list"),
            ("[", "not valid JSON"),
        ];
        for (text, expected) in bad {
            std::fs::write(&json_file, text).unwrap();
            let error = format!("{:#}", load_issuers(&json_file).unwrap_err());
            assert!(error.contains("issuers.json"), "{error}");
            assert!(error.contains(expected), "{error}");
        }
        std::fs::write(&yaml, "issuers: [unclosed").unwrap();
        let error = format!("{:#}", load_issuers(&yaml).unwrap_err());
        assert!(
            error.contains("issuers.yaml") && error.contains("YAML"),
            "{error}"
        );
        let error = format!(
            "{:#}",
            load_issuers(&dir.path().join("nope.yaml")).unwrap_err()
        );
        assert!(error.contains("nope.yaml"), "{error}");
    }
}
