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
        if self.issuer == crate::identity::jwt::ISSUER {
            return Err(format!(
                "`{}` is the issuer of the control plane's own access tokens; an identity \
                 provider needs another name",
                crate::identity::jwt::ISSUER
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
mod tests;
