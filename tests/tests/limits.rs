//! Rate and concurrency limits end to end, through the real binaries: set
//! with the CLI, carried to a node in the config, answered there with 429
//! and `Retry-After` past each limit while another workspace on the same
//! node is served as before, and counted in usage.

use mockplane_e2e::{Cli, ControlPlane, Node, Reply, eventually};
use mockplane_proto::v1;
use mockplane_proto::v1::usage_service_client::UsageServiceClient;
use serde_json::Value;

const MOCKS: &str = r#"
routes:
  - path: /fast
    response: { json: { ok: true } }
  - path: /slow
    latency: { fixed: 3000 }
    response: { json: { slow: true } }
"#;

fn error(reply: &Reply) -> Value {
    reply.json()["error"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answers_429_past_each_limit_and_other_workspaces_are_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let node = Node::start_with(dir.path(), &plane.url(), &["--usage-interval-secs", "1"])
        .await
        .unwrap();
    let cli = Cli {
        server: plane.url(),
        token: plane.token.as_deref(),
    };
    cli.workspace_with_mocks(dir.path(), "shop", MOCKS).await;
    cli.workspace_with_mocks(dir.path(), "other", MOCKS).await;
    node.wait_for("/w/other/fast", 200, |_| true).await;

    // Bad limits are refused naming the option, before anything is sent.
    let zero = cli
        .fails(&["env", "update", "shop", "dev", "--rate-limit", "0"])
        .await;
    assert!(
        zero.contains("--rate-limit") && zero.contains("1 to 1000000"),
        "{zero}"
    );
    let lonely = cli
        .fails(&["env", "update", "shop", "dev", "--burst", "5"])
        .await;
    assert!(
        lonely.contains("--burst") && lonely.contains("needs requests_per_second"),
        "{lonely}"
    );
    let word = cli
        .run(&["env", "update", "shop", "dev", "--max-concurrent", "many"])
        .await;
    assert_eq!(word.status.code(), Some(2), "a usage error");
    let word = String::from_utf8_lossy(&word.stderr);
    assert!(word.contains("neither a whole number nor `none`"), "{word}");

    // The API refuses them the same way, naming the field.
    let mut api = plane.api(plane.token.as_deref().unwrap()).await;
    let refused = api
        .environments
        .update_environment(v1::UpdateEnvironmentRequest {
            workspace: "shop".into(),
            environment: "dev".into(),
            patch: Some(v1::Environment {
                settings: Some(v1::EnvironmentSettings {
                    limits: Some(v1::Limits {
                        burst: 5,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["settings.limits".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("limits.burst"),
        "{}",
        refused.message()
    );

    // A rate: 1 per second in bursts of 3. Each option changes only its
    // own limit.
    cli.ok(&[
        "env",
        "update",
        "shop",
        "dev",
        "--rate-limit",
        "1",
        "--burst",
        "3",
    ])
    .await;
    cli.ok(&["env", "update", "shop", "dev", "--max-concurrent", "5"])
        .await;
    let shown: Value =
        serde_json::from_str(&cli.ok(&["-o", "json", "env", "get", "shop", "dev"]).await).unwrap();
    assert_eq!(shown["limits"], "1/s burst 3, 5 at once", "{shown}");
    assert_eq!(
        shown["settings"]["limits"],
        serde_json::json!({"requests_per_second": 1, "burst": 3, "max_concurrent": 5})
    );

    let limited = eventually("the node to apply the rate limit", || async {
        let reply = node.get("/w/shop/fast").await.ok()?;
        (reply.status == 429).then_some(reply)
    })
    .await;
    let body = error(&limited);
    assert_eq!(body["code"], "rate_limited", "{body}");
    assert_eq!(body["limit"], "requests_per_second");
    assert_eq!(body["value"], 1);
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry, 1, "a token comes back within the second");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("workspace 'shop'"),
        "{body}"
    );
    // Another workspace on the same node, and another environment of this
    // one, are not limited.
    for _ in 0..30 {
        assert_eq!(node.get("/w/other/fast").await.unwrap().status, 200);
    }
    let test_env = node
        .send_with("GET", "/w/shop/fast", &[("x-mockplane-env", "test")], "")
        .await
        .unwrap();
    assert_eq!(
        test_env.status, 404,
        "answered (nothing is deployed to test), not refused"
    );
    // The rate comes back: a request after Retry-After is answered.
    let served = eventually("a token to come back", || async {
        let reply = node.get("/w/shop/fast").await.ok()?;
        (reply.status == 200).then_some(reply)
    })
    .await;
    assert_eq!(served.json()["ok"], true);

    // Concurrency: one request at a time; the rate lifted, the other kept.
    cli.ok(&[
        "env",
        "update",
        "shop",
        "dev",
        "--rate-limit",
        "none",
        "--max-concurrent",
        "1",
    ])
    .await;
    let shown: Value =
        serde_json::from_str(&cli.ok(&["-o", "json", "env", "get", "shop", "dev"]).await).unwrap();
    assert_eq!(shown["limits"], "1 at once", "{shown}");
    // Wait for the new limits: bursts are served again.
    eventually("the node to lift the rate limit", || async {
        for _ in 0..5 {
            if node.get("/w/shop/fast").await.ok()?.status != 200 {
                return None;
            }
        }
        Some(())
    })
    .await;
    // A slow request holds the one place; on a loaded machine it may end
    // before a probe lands, so another takes its place until one does.
    let slow_url = format!("http://{}/w/shop/slow", node.http);
    let spawn_slow = || {
        let url = slow_url.clone();
        tokio::spawn(async move { reqwest::get(url).await.unwrap().status().as_u16() })
    };
    let slow = std::sync::Mutex::new(spawn_slow());
    let busy = eventually(
        "a request while /slow is in flight to be refused",
        || async {
            {
                let mut in_flight = slow.lock().unwrap();
                if in_flight.is_finished() {
                    *in_flight = spawn_slow();
                }
            }
            let reply = node.get("/w/shop/fast").await.ok()?;
            (reply.status == 429).then_some(reply)
        },
    )
    .await;
    let slow = slow.into_inner().unwrap();
    let body = error(&busy);
    assert_eq!(body["code"], "concurrency_limited", "{body}");
    assert_eq!(body["limit"], "max_concurrent");
    assert_eq!(busy.headers["retry-after"], "1");
    assert_eq!(
        node.get("/w/other/slow").await.unwrap().status,
        200,
        "other workspaces go on"
    );
    assert_eq!(
        slow.await.unwrap(),
        200,
        "the request in flight is answered"
    );
    assert_eq!(node.get("/w/shop/fast").await.unwrap().status, 200);

    // Usage counts the refusals apart, per workspace; metrics by outcome.
    let channel = plane.channel().await;
    let token: tonic::metadata::AsciiMetadataValue =
        format!("Bearer {}", plane.token.as_deref().unwrap())
            .parse()
            .unwrap();
    let usage =
        UsageServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
            Ok(request)
        });
    let limited_of = |workspace: &'static str| {
        let mut usage = usage.clone();
        async move {
            usage
                .get_usage(v1::GetUsageRequest {
                    workspace: workspace.into(),
                    environment: "dev".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .environments
                .iter()
                .map(|e| (e.requests, e.limited_requests))
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
        }
    };
    let (answered, refused) = eventually("usage to count the refusals", || async {
        let counts = limited_of("shop").await;
        (counts.1 >= 2).then_some(counts)
    })
    .await;
    assert!(answered > 0 && refused >= 2, "{answered} {refused}");
    let (other_answered, other_refused) = limited_of("other").await;
    assert_eq!(other_refused, 0);
    assert!(other_answered > 0);
    let metrics = node.ops_get("/metrics").await.unwrap().body;
    let counted = metrics
        .lines()
        .find(|l| l.starts_with("mockplane_requests_total{outcome=\"limited\"}"))
        .unwrap_or_else(|| panic!("{metrics}"));
    let value: f64 = counted.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value >= 2.0, "{counted}");
}
