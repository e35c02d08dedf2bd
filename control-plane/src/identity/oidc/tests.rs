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
const RSA_1: &str = include_str!("../../../tests/fixtures/oidc/rsa-1.pem");
const RSA_1_PUBLIC: &str = include_str!("../../../tests/fixtures/oidc/rsa-1.pub.pem");
const RSA_2: &str = include_str!("../../../tests/fixtures/oidc/rsa-2.pem");
const EC_1: &str = include_str!("../../../tests/fixtures/oidc/ec-1.pem");
const JWKS_1: &str = include_str!("../../../tests/fixtures/oidc/jwks-1.json");
const JWKS_2: &str = include_str!("../../../tests/fixtures/oidc/jwks-2.json");

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
