//! Latency and chaos on a real node: delays do not hold threads, seeded
//! chaos is reproducible, faults break connections as documented.

use std::time::{Duration, Instant};

use mockplane_e2e::{Cli, ControlPlane, Node};
use mockplane_shared::model::realism::{Chaos, Outcome, Rng};

const MOCKS: &str = r#"
routes:
  - path: /slow
    latency: { fixed: 1000 }
    response: { body: slow }
  - path: /flaky
    chaos: { rate: 0.5, statuses: { 503: 1 }, seed: 1234 }
    response: { body: ok }
  - path: /reset
    chaos: { rate: 1, faults: { reset: 1 } }
    response: { body: never }
  - path: /truncated
    chaos: { rate: 1, faults: { truncated: 1 } }
    response: { body: "0123456789abcdefghij" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_chaos_behave_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    // The harness starts nodes with two worker threads.
    let node = Node::start(dir.path(), &plane.url()).await.unwrap();
    let cli = Cli {
        server: plane.url(),
        token: plane.token.as_deref(),
    };
    cli.workspace_with_mocks(dir.path(), "real", MOCKS).await;
    node.wait_for("/w/real/slow", 200, |b| b == "slow").await;

    // 16 requests to a 1 s route at once: were each delay to hold one of the
    // two threads, they would take 8 s; as timers they overlap.
    let started = Instant::now();
    let replies = futures::future::join_all((0..16).map(|_| node.get("/w/real/slow"))).await;
    let elapsed = started.elapsed();
    for reply in replies {
        assert_eq!(reply.unwrap().body, "slow");
    }
    assert!(elapsed >= Duration::from_secs(1), "the delay was applied");
    assert!(
        elapsed < Duration::from_secs(8),
        "delays held threads: 16 took {elapsed:?}"
    );

    // Seeded chaos: the node's n-th request to the route gets the n-th
    // decision of the seed, so a sequential run is reproducible.
    let chaos: Chaos = serde_json::from_str(r#"{"rate": 0.5, "statuses": {"503": 1}}"#).unwrap();
    let mut errors = 0;
    for index in 0..100 {
        let reply = node.get("/w/real/flaky").await.unwrap();
        let expected = match chaos.decide(&mut Rng::at(1234, index)) {
            Outcome::Answer => 200,
            Outcome::Status(status) => status,
            Outcome::Fault(_) => unreachable!("no faults configured"),
        };
        assert_eq!(reply.status, expected, "request {index}: {}", reply.body);
        if reply.status == 503 {
            errors += 1;
            assert_eq!(reply.error_code(), "chaos");
        }
    }
    assert!((30..=70).contains(&errors), "{errors} of 100 at rate 0.5");

    // Faults break the connection instead of answering.
    assert!(
        node.get("/w/real/reset").await.is_err(),
        "reset answers nothing"
    );
    match node.get("/w/real/truncated").await {
        Err(_) => {}
        Ok(reply) => assert!(reply.body.len() < 20, "a truncated body: {reply:?}"),
    }

    let metrics = node.ops_get("/metrics").await.unwrap().body;
    assert!(
        metrics.contains("mockplane_requests_total{outcome=\"chaos\"}"),
        "{metrics}"
    );
}
