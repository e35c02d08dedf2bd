//! Promotion notifications end to end: a webhook receiver (which fails
//! once), an SMTP sink, and GitOps against a real local git repository and
//! a stand-in for the provider's pull-request API.

use std::path::Path;

use hmac::{Hmac, Mac};
use mockplane_e2e::fixtures::{approvals, member, new_workspace, route};
use mockplane_e2e::stand_in::{Http, Smtp};
use mockplane_e2e::{ControlPlane, eventually};
use mockplane_proto::v1;
use sha2::Sha256;

/// The `secret` column of every notification channel, as stored.
async fn stored_secrets(dir: &Path) -> Vec<String> {
    use sqlx::Connection as _;
    let url = mockplane_e2e::database_url(dir).await;
    let query = "SELECT secret FROM notification_channels";
    if url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_scalar(query)
            .fetch_all(&mut conn)
            .await
            .unwrap()
    } else {
        // Past row-level security, as an operator at the database would be.
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query("SELECT set_config('mockplane.system', 'on', false)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query_scalar(query)
            .fetch_all(&mut conn)
            .await
            .unwrap()
    }
}

/// The SQLite file the control plane on `dir` uses, if it uses one.
async fn sqlite_file(dir: &Path) -> Option<String> {
    mockplane_e2e::database_url(dir)
        .await
        .strip_prefix("sqlite://")
        .map(str::to_owned)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@localhost"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A bare repository with one commit on `main`.
fn remote(dir: &Path) -> String {
    let bare = dir.join("mocks.git");
    std::fs::create_dir_all(&bare).unwrap();
    git(&bare, &["init", "--bare", "-b", "main"]);
    let seed = dir.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    git(&seed, &["init", "-b", "main"]);
    std::fs::write(seed.join("README.md"), "mocks\n").unwrap();
    git(&seed, &["add", "README.md"]);
    git(&seed, &["commit", "-m", "start"]);
    git(&seed, &["push", bare.to_str().unwrap(), "main"]);
    bare.display().to_string()
}

fn verify(secret: &str, timestamp: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_mail_and_pull_requests_follow_a_promotion() {
    let dir = tempfile::tempdir().unwrap();
    // The receiver fails its first delivery: it must be retried.
    let hooks = Http::start(|_, n| {
        if n == 0 {
            (500, "{}".into())
        } else {
            (200, "{}".into())
        }
    })
    .await;
    let provider = Http::start(|request, _| {
        if request.path == "/repos/acme/mocks/pulls" {
            (
                201,
                r#"{"html_url":"https://git.example/acme/mocks/pull/7"}"#.into(),
            )
        } else {
            (422, r#"{"message":"Validation Failed"}"#.into())
        }
    })
    .await;
    let smtp = Smtp::start().await;
    let repository = remote(dir.path());
    let smtp_url = format!("smtp://{}", smtp.addr);
    let plane = ControlPlane::start_with(
        dir.path(),
        "127.0.0.1:0",
        None,
        &[
            "--smtp-url",
            &smtp_url,
            "--smtp-from",
            "mockplane@acme.io",
            "--notify-poll-ms",
            "50",
            "--notify-retry-ms",
            "100",
        ],
    )
    .await
    .unwrap();
    let mut admin = plane.api(plane.token.as_deref().unwrap()).await;
    admin
        .workspaces
        .create_workspace(new_workspace("shop"))
        .await
        .unwrap();
    admin
        .environments
        .update_environment(approvals("shop", "test", 1, &[], 0))
        .await
        .unwrap();
    let channel =
        |kind: &str, target: &str, events: &[&str], gitops: Option<v1::GitOpsSettings>| {
            v1::CreateNotificationChannelRequest {
                workspace: "shop".into(),
                channel: Some(v1::NotificationChannel {
                    kind: kind.into(),
                    target: target.into(),
                    events: events.iter().map(|e| (*e).to_owned()).collect(),
                    gitops,
                    ..Default::default()
                }),
            }
        };
    let hook = admin
        .notifications
        .create_notification_channel(channel("webhook", &hooks.url("/hooks"), &[], None))
        .await
        .unwrap()
        .into_inner();
    assert!(hook.secret.starts_with("whsec_"));
    admin
        .notifications
        .create_notification_channel(channel(
            "email",
            "qa@acme.io",
            &["approval_needed", "approved", "completed"],
            None,
        ))
        .await
        .unwrap();
    let github = |repository: &str| v1::GitOpsSettings {
        provider: "github".into(),
        api_url: provider.url(""),
        repository: repository.into(),
        token: "ghp_test".into(),
        ..Default::default()
    };
    let pulls = admin
        .notifications
        .create_notification_channel(channel(
            "gitops",
            &repository,
            &[],
            Some(github("acme/mocks")),
        ))
        .await
        .unwrap()
        .into_inner();
    // Another opens a pull request as soon as a promotion is requested,
    // proposing what the target would serve.
    let on_request = admin
        .notifications
        .create_notification_channel(channel(
            "gitops",
            &repository,
            &["requested"],
            Some(github("acme/mocks")),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pulls.secret, "", "a provider token is never shown");
    assert_eq!(pulls.channel.as_ref().unwrap().events, vec!["completed"]);
    // Secrets are sealed at rest: neither the webhook secret nor the
    // provider token is in the database.
    let stored = stored_secrets(dir.path()).await;
    assert!(
        !stored.is_empty()
            && stored
                .iter()
                .all(|s| s.is_empty() || s.starts_with("enc1:")),
        "{stored:?}"
    );
    for secret in [hook.secret.as_str(), "ghp_test"] {
        assert!(
            !stored.iter().any(|s| s.contains(secret)),
            "{secret} is stored in the clear"
        );
    }
    if let Some(file) = sqlite_file(dir.path()).await {
        for path in [file.clone(), format!("{file}-wal")] {
            let bytes = std::fs::read(&path).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            for secret in [hook.secret.as_str(), "ghp_test"] {
                assert!(!text.contains(secret), "{secret} is readable in {path}");
            }
        }
    }
    // Bad channels are refused, naming the field.
    let bad = admin
        .notifications
        .create_notification_channel(channel("webhook", "ftp://x", &[], None))
        .await
        .unwrap_err();
    assert!(
        bad.message().contains("channel.target"),
        "{}",
        bad.message()
    );
    let bad = admin
        .notifications
        .create_notification_channel(channel("email", "qa@acme.io", &["done"], None))
        .await
        .unwrap_err();
    assert!(
        bad.message().contains("channel.events[0]"),
        "{}",
        bad.message()
    );

    let (_, dana) = member(
        &plane,
        &mut admin,
        "shop",
        "dana@acme.io",
        &[("dev", "editor"), ("test", "editor")],
    )
    .await;
    let mut dana = plane.api(&dana).await;
    dana.routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: "shop".into(),
            routes: vec![route("GET", "/cart", 200, r#"{"items":[]}"#)],
            ..Default::default()
        })
        .await
        .unwrap();
    dana.scenarios
        .create_version(v1::CreateVersionRequest {
            workspace: "shop".into(),
            scenario: "default".into(),
            note: String::new(),
        })
        .await
        .unwrap();
    let promotion = dana
        .promotions
        .create_promotion(v1::CreatePromotionRequest {
            workspace: "shop".into(),
            scenario: "default".into(),
            from_environment: "dev".into(),
            to_environment: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    admin
        .promotions
        .approve_promotion(v1::DecidePromotionRequest {
            id: promotion.id.clone(),
            comment: "fine".into(),
        })
        .await
        .unwrap();
    dana.promotions
        .execute_promotion(v1::ExecutePromotionRequest {
            id: promotion.id.clone(),
        })
        .await
        .unwrap();

    // Every event reached the webhook, signed; the first was retried.
    let delivered = eventually("the webhook to get four events", || async {
        let got: Vec<_> = hooks
            .received()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect();
        let mut events: Vec<String> = got
            .iter()
            .map(|r| r.header("x-mockplane-event").unwrap_or_default().to_owned())
            .collect();
        events.sort();
        events.dedup();
        (events == ["approval_needed", "approved", "completed", "requested"]).then_some(got)
    })
    .await;
    for request in &delivered {
        let timestamp = request.header("x-mockplane-timestamp").unwrap();
        assert_eq!(
            request.header("x-mockplane-signature").unwrap(),
            verify(&hook.secret, timestamp, &request.body),
            "signed with the channel's secret"
        );
        let body: serde_json::Value = serde_json::from_str(&request.body).unwrap();
        assert_eq!(body["event"], request.header("x-mockplane-event").unwrap());
        assert_eq!(body["promotion"]["id"], promotion.id.as_str());
    }
    let log = eventually("the delivery log to show the retry", || async {
        let deliveries = admin
            .notifications
            .clone()
            .list_deliveries(v1::ListDeliveriesRequest {
                workspace: "shop".into(),
                promotion: promotion.id.clone(),
                page_size: 0,
            })
            .await
            .ok()?
            .into_inner()
            .deliveries;
        let retried = deliveries
            .iter()
            .find(|d| d.kind == "webhook" && d.attempts.len() == 2 && d.status == "delivered")?;
        Some(
            retried
                .attempts
                .iter()
                .map(|a| a.outcome.clone())
                .collect::<Vec<_>>(),
        )
    })
    .await;
    assert_eq!(log, vec!["retry", "delivered"]);

    // Three mails to QA.
    let mails = eventually("three mails", || async {
        let mails = smtp.mails();
        (mails.len() == 3).then_some(mails)
    })
    .await;
    assert!(
        mails
            .iter()
            .all(|m| m.to == ["qa@acme.io"] && m.from == "mockplane@acme.io")
    );
    assert!(
        mails.iter().any(|m| m
            .data
            .contains("Subject: [Mockplane] promotion #1 of shop needs your approval")),
        "{mails:?}"
    );

    // The pull request: a branch in the real repository, the provider
    // called with it, its URL on the promotion.
    eventually("both pull requests to reach the provider", || async {
        let bodies: Vec<String> = provider.received().into_iter().map(|r| r.body).collect();
        (bodies.iter().any(|b| b.contains("promotion-1-requested"))
            && bodies.iter().any(|b| b.contains("promotion-1-completed")))
        .then_some(())
    })
    .await;
    let done = eventually("the pull request URL on the promotion", || async {
        let p = admin
            .promotions
            .clone()
            .get_promotion(v1::GetPromotionRequest {
                id: promotion.id.clone(),
            })
            .await
            .ok()?
            .into_inner();
        (!p.pr_url.is_empty()).then_some(p)
    })
    .await;
    assert_eq!(done.pr_url, "https://git.example/acme/mocks/pull/7");
    let proposed = git(
        Path::new(&repository),
        &[
            "show",
            "mockplane/shop/test/promotion-1-requested:mockplane/shop/test.yaml",
        ],
    );
    assert!(proposed.contains("path: /cart"), "{proposed}");
    let branch = "mockplane/shop/test/promotion-1-completed";
    let file = git(
        Path::new(&repository),
        &["show", &format!("{branch}:mockplane/shop/test.yaml")],
    );
    assert!(
        file.contains("environment: test") && file.contains("path: /cart"),
        "{file}"
    );
    // Test's own served settings and its (promoted) personas: none yet.
    assert!(
        file.contains("\nsettings:") && file.contains("\npersonas: []"),
        "{file}"
    );
    let call = provider
        .received()
        .into_iter()
        .find(|r| r.body.contains("promotion-1-completed"))
        .unwrap();
    assert_eq!(call.header("authorization"), Some("Bearer ghp_test"));
    let body: serde_json::Value = serde_json::from_str(&call.body).unwrap();
    assert_eq!(
        (body["head"].as_str(), body["base"].as_str()),
        (Some(branch), Some("main"))
    );

    // A provider error is recorded on the promotion, which stays completed.
    admin
        .notifications
        .delete_notification_channel(v1::DeleteNotificationChannelRequest {
            workspace: "shop".into(),
            id: pulls.channel.unwrap().id,
        })
        .await
        .unwrap();
    admin
        .notifications
        .delete_notification_channel(v1::DeleteNotificationChannelRequest {
            workspace: "shop".into(),
            id: on_request.channel.unwrap().id,
        })
        .await
        .unwrap();
    admin
        .notifications
        .create_notification_channel(channel(
            "gitops",
            &repository,
            &[],
            Some(github("acme/broken")),
        ))
        .await
        .unwrap();
    let rolled = admin
        .promotions
        .rollback_promotion(v1::RollbackPromotionRequest {
            id: promotion.id.clone(),
            reason: "again".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rolled.status, v1::PromotionStatus::RolledBack as i32);
    dana.routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: "shop".into(),
            routes: vec![route("GET", "/orders", 200, "[]")],
            ..Default::default()
        })
        .await
        .unwrap();
    dana.scenarios
        .create_version(v1::CreateVersionRequest {
            workspace: "shop".into(),
            scenario: "default".into(),
            note: String::new(),
        })
        .await
        .unwrap();
    let second = dana
        .promotions
        .create_promotion(v1::CreatePromotionRequest {
            workspace: "shop".into(),
            scenario: "default".into(),
            from_environment: "dev".into(),
            to_environment: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    admin
        .promotions
        .approve_promotion(v1::DecidePromotionRequest {
            id: second.id.clone(),
            comment: String::new(),
        })
        .await
        .unwrap();
    dana.promotions
        .execute_promotion(v1::ExecutePromotionRequest {
            id: second.id.clone(),
        })
        .await
        .unwrap();
    let failed = eventually("the provider's error on the promotion", || async {
        let p = admin
            .promotions
            .clone()
            .get_promotion(v1::GetPromotionRequest {
                id: second.id.clone(),
            })
            .await
            .ok()?
            .into_inner();
        (!p.gitops_error.is_empty()).then_some(p)
    })
    .await;
    assert_eq!(failed.status, v1::PromotionStatus::Completed as i32);
    assert!(
        failed.gitops_error.contains("HTTP 422: Validation Failed"),
        "{}",
        failed.gitops_error
    );
    assert_eq!(failed.pr_url, "");
}

/// Notification channels cannot point at the control plane's own machine
/// or private networks unless the operator allows it: a webhook to
/// loopback (by address or by a name that resolves there), a GitOps
/// provider on a private address and a repository on the control plane's
/// disk are refused at creation, naming the rule; what the allow-list
/// lists is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_to_local_and_private_addresses_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    for plane in ["strict", "allowing"] {
        std::fs::create_dir_all(dir.path().join(plane)).unwrap();
    }
    let strict = ControlPlane::start_with(
        &dir.path().join("strict"),
        "127.0.0.1:0",
        None,
        &["--outbound-allow", ""],
    )
    .await
    .unwrap();
    let allowing = ControlPlane::start_with(
        &dir.path().join("allowing"),
        "127.0.0.1:0",
        None,
        &["--outbound-allow", "127.0.0.1,local-git"],
    )
    .await
    .unwrap();
    let hooks = Http::start(|_, _| (200, String::new())).await;
    let channel = |kind: &str, target: &str, gitops: Option<v1::GitOpsSettings>| {
        v1::CreateNotificationChannelRequest {
            workspace: "shop".into(),
            channel: Some(v1::NotificationChannel {
                kind: kind.into(),
                target: target.into(),
                gitops,
                ..Default::default()
            }),
        }
    };
    let gitops = |api_url: &str| v1::GitOpsSettings {
        provider: "github".into(),
        api_url: api_url.into(),
        repository: "acme/mocks".into(),
        token: "ghp_test".into(),
        ..Default::default()
    };
    let localhost = hooks.url("/hooks").replace("127.0.0.1", "localhost");
    let repository = dir.path().join("mocks.git").display().to_string();

    let mut api = strict.api(strict.token.as_deref().unwrap()).await;
    api.workspaces
        .create_workspace(new_workspace("shop"))
        .await
        .unwrap();
    for (what, request, needles) in [
        (
            "a webhook to 127.0.0.1",
            channel("webhook", &hooks.url("/hooks"), None),
            ["channel.target", "loopback"],
        ),
        (
            "a webhook to a name that resolves to loopback",
            channel("webhook", &localhost, None),
            ["localhost resolves to", "loopback"],
        ),
        (
            "a webhook to the cloud metadata address",
            channel("webhook", "http://169.254.169.254/latest", None),
            ["channel.target", "link-local"],
        ),
        (
            "a GitOps provider on a private network",
            channel(
                "gitops",
                "https://github.com/acme/mocks.git",
                Some(gitops("http://10.0.0.7/api")),
            ),
            ["channel.gitops.api_url", "private"],
        ),
        (
            "a repository on the control plane's disk",
            channel(
                "gitops",
                &repository,
                Some(gitops("https://203.0.113.10/api")),
            ),
            ["channel.target", "local-git"],
        ),
    ] {
        let status = api
            .notifications
            .create_notification_channel(request)
            .await
            .expect_err(what);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{what}: {status:?}"
        );
        for needle in needles {
            assert!(
                status.message().contains(needle),
                "{what}: {}",
                status.message()
            );
        }
    }
    assert!(
        api.notifications
            .list_notification_channels(v1::ListNotificationChannelsRequest {
                workspace: "shop".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .channels
            .is_empty(),
        "a refused channel was kept"
    );

    let mut api = allowing.api(allowing.token.as_deref().unwrap()).await;
    api.workspaces
        .create_workspace(new_workspace("shop"))
        .await
        .unwrap();
    api.notifications
        .create_notification_channel(channel("webhook", &hooks.url("/hooks"), None))
        .await
        .unwrap();
    api.notifications
        .create_notification_channel(channel("gitops", &repository, Some(gitops(&hooks.url("")))))
        .await
        .unwrap();
    // Listed by address, not by name: localhost may resolve to ::1 too.
    let status = api
        .notifications
        .create_notification_channel(channel("webhook", "http://10.0.0.7/hook", None))
        .await
        .unwrap_err();
    assert!(status.message().contains("private"), "{}", status.message());
}
