use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";

fn signer() -> Signer {
    Signer::new(SECRET).unwrap()
}

fn claims() -> Claims {
    let now = unix_now();
    Claims {
        sub: format!("user:{}", Uuid::new_v4()),
        org: Uuid::new_v4(),
        env: None,
        jti: Uuid::new_v4().to_string(),
        iat: now,
        exp: now + 600,
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
    }
}

fn b64(json: &str) -> String {
    URL_SAFE_NO_PAD.encode(json)
}

#[test]
fn round_trip() {
    let signer = signer();
    let org = Uuid::new_v4();
    let (token, claims) = signer.issue(
        "user:0191e0a4-0000-7000-8000-000000000001".into(),
        org,
        None,
        Duration::from_secs(900),
    );
    assert!(looks_like_jwt(&token));
    assert_eq!(claims.exp - claims.iat, 900);
    assert_eq!(
        (claims.iss.as_str(), claims.aud.as_str()),
        (ISSUER, AUDIENCE)
    );
    assert_eq!(claims.org, org);
    assert_eq!(signer.verify(&token), Ok(claims.clone()));
    // The payload has no `env` at all when there is none.
    let payload = token.split('.').nth(1).unwrap();
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert!(!payload.contains("env"), "{payload}");

    let (other, other_claims) =
        signer.issue(claims.sub.clone(), org, None, Duration::from_secs(900));
    assert_ne!(other, token);
    assert_ne!(other_claims.jti, claims.jti);
}

#[test]
fn env_scope_round_trips() {
    let signer = signer();
    let scope = EnvScope {
        workspace: Uuid::new_v4(),
        environment: "staging".into(),
        reason: "checking staging".into(),
    };
    let (token, claims) = signer.issue(
        format!("service:{}", Uuid::new_v4()),
        Uuid::new_v4(),
        Some(scope.clone()),
        Duration::from_secs(60),
    );
    let verified = signer.verify(&token).unwrap();
    assert_eq!(verified.env, Some(scope));
    assert_eq!(verified, claims);
}

#[test]
fn expired_tokens_are_refused() {
    let signer = signer();
    let mut claims = claims();
    claims.iat -= 3600;
    claims.exp = unix_now() - 60;
    let error = signer.verify(&signer.sign(&claims)).unwrap_err();
    assert_eq!(error, TokenError::Expired);
    assert!(error.to_string().contains("has expired"), "{error}");
    // Within the leeway a token still passes.
    claims.exp = unix_now() - 1;
    assert!(signer.verify(&signer.sign(&claims)).is_ok());
}

#[test]
fn another_key_is_refused() {
    let other = Signer::new(&[7u8; 32]).unwrap();
    let (token, _) = other.issue(
        "user:x".into(),
        Uuid::new_v4(),
        None,
        Duration::from_secs(60),
    );
    assert_eq!(signer().verify(&token), Err(TokenError::BadSignature));
    // A tampered payload breaks the signature too.
    let signer = signer();
    let (token, _) = signer.issue(
        "user:x".into(),
        Uuid::new_v4(),
        None,
        Duration::from_secs(60),
    );
    let mut forged = claims();
    forged.sub = "user:admin".into();
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(&serde_json::to_string(&forged).unwrap()),
        parts[2]
    );
    assert_eq!(signer.verify(&forged), Err(TokenError::BadSignature));
}

#[test]
fn unsigned_tokens_are_refused() {
    let payload = b64(&serde_json::to_string(&claims()).unwrap());
    let token = format!("{}.{payload}.", b64(r#"{"alg":"none","typ":"JWT"}"#));
    assert!(looks_like_jwt(&token));
    let error = signer().verify(&token).unwrap_err();
    assert_eq!(error, TokenError::WrongAlgorithm("none".into()));
    assert_eq!(
        error.to_string(),
        "the token is signed with algorithm `none`; only HS256 tokens issued by this control plane are accepted"
    );
    // Case games do not help.
    let token = format!("{}.{payload}.", b64(r#"{"alg":"None"}"#));
    assert_eq!(
        signer().verify(&token),
        Err(TokenError::WrongAlgorithm("None".into()))
    );
}

#[test]
fn other_algorithms_are_refused_even_with_the_right_secret() {
    let claims = claims();
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(
            signer().verify(&token),
            Err(TokenError::WrongAlgorithm(format!("{alg:?}")))
        );
    }
    let payload = b64(&serde_json::to_string(&claims).unwrap());
    let token = format!(
        "{}.{payload}.c2lnbmF0dXJl",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#)
    );
    assert_eq!(
        signer().verify(&token),
        Err(TokenError::WrongAlgorithm("RS256".into()))
    );
}

#[test]
fn wrong_issuer_or_audience_is_refused() {
    let signer = signer();
    let mut claims = claims();
    claims.iss = "someone-else".into();
    assert_eq!(
        signer.verify(&signer.sign(&claims)),
        Err(TokenError::WrongIssuer)
    );
    claims.iss = ISSUER.into();
    claims.aud = "another-api".into();
    assert_eq!(
        signer.verify(&signer.sign(&claims)),
        Err(TokenError::WrongAudience)
    );
}

#[test]
fn garbage_is_refused() {
    let signer = signer();
    let (token, _) = signer.issue(
        "user:x".into(),
        Uuid::new_v4(),
        None,
        Duration::from_secs(60),
    );
    let long = "a".repeat(MAX_TOKEN_LEN) + ".b.c";
    let truncated = &token[..token.len() - 3];
    let missing_part = token.rsplit_once('.').unwrap().0;
    let not_json = format!("{}.{}.{}", b64("nope"), b64("{}"), "c2ln");
    let no_alg = format!("{}.{}.{}", b64(r#"{"typ":"JWT"}"#), b64("{}"), "c2ln");
    let inputs = [
        "",
        ".",
        "..",
        "a.b.c",
        "mpt_abcdefghijklmnopqrstuvwxyz",
        "not a token at all",
        "é.é.é",
        &long,
        truncated,
        missing_part,
        &not_json,
        &no_alg,
    ];
    for input in inputs {
        let error = signer.verify(input).unwrap_err();
        assert!(
            matches!(error, TokenError::Malformed(_) | TokenError::BadSignature),
            "{input:?}: {error:?}"
        );
    }
    assert!(matches!(
        signer.verify(&no_alg),
        Err(TokenError::Malformed(message)) if message.contains("`alg`")
    ));
}

#[test]
fn tells_jwts_from_api_tokens() {
    assert!(!looks_like_jwt(&crate::identity::token::generate()));
    assert!(looks_like_jwt("eyJh.eyJz.sig-_"));
    assert!(looks_like_jwt("eyJh.eyJz."));
    assert!(!looks_like_jwt("eyJh..sig"));
    assert!(!looks_like_jwt("eyJh.eyJz"));
    assert!(!looks_like_jwt("eyJh.eyJz.sig.more"));
    assert!(!looks_like_jwt("eyJh.ey Jz.sig"));
    assert!(!looks_like_jwt("eyJh.eyJz=.sig"));
}

#[test]
fn short_secrets_are_refused() {
    assert_eq!(Signer::new(&[1u8; 31]).unwrap_err(), SecretTooShort(31));
    let debug = format!("{:?}", signer());
    assert!(debug.contains("[redacted]"), "{debug}");
    assert!(!debug.contains("0123456789abcdef"), "{debug}");
}

#[test]
fn key_file_is_created_private_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwt.key");
    let first = Signer::load_or_create(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(URL_SAFE_NO_PAD.decode(text.trim()).unwrap().len(), 64);
    // No temporary files are left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let second = Signer::load_or_create(&path).unwrap();
    let (token, claims) = first.issue(
        "user:x".into(),
        Uuid::new_v4(),
        None,
        Duration::from_secs(60),
    );
    assert_eq!(second.verify(&token), Ok(claims));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn bad_key_files_are_errors_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 4] = [
        ("empty.key", b"", "is empty"),
        ("blank.key", b" \n", "is empty"),
        ("garbage.key", b"this is not base64!", "base64url"),
        ("binary.key", &[0xff, 0xfe, 0x00], "base64url"),
    ];
    for (name, contents, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        let error = format!("{:#}", Signer::load_or_create(&path).unwrap_err());
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains(expected), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), contents, "never replaced");
    }
    let path = dir.path().join("short.key");
    std::fs::write(&path, URL_SAFE_NO_PAD.encode([1u8; 16])).unwrap();
    let error = format!("{:#}", Signer::load_or_create(&path).unwrap_err());
    assert!(
        error.contains("16 bytes") && error.contains("short.key"),
        "{error}"
    );

    let missing_dir = dir.path().join("no-such-dir").join("jwt.key");
    let error = format!("{:#}", Signer::load_or_create(&missing_dir).unwrap_err());
    assert!(error.contains("no-such-dir"), "{error}");
}
