//! Promotions end to end: real control plane, real data-plane nodes,
//! people with different roles per environment.

use std::time::Instant;

use mockplane_e2e::fixtures::{approvals, cut, in_env, member, new_workspace, route, set_reality};
use mockplane_e2e::{ControlPlane, Node, eventually};
use mockplane_proto::v1;
use tonic::Code;

fn promote(scenario: &str, from: &str, to: &str) -> v1::CreatePromotionRequest {
    v1::CreatePromotionRequest {
        workspace: "shop".into(),
        scenario: scenario.into(),
        from_environment: from.into(),
        to_environment: to.into(),
        comment: format!("{scenario} to {to}"),
        ..Default::default()
    }
}

fn decide(id: &str) -> v1::DecidePromotionRequest {
    v1::DecidePromotionRequest {
        id: id.into(),
        comment: "looks right".into(),
    }
}

fn execute(id: &str) -> v1::ExecutePromotionRequest {
    v1::ExecutePromotionRequest { id: id.into() }
}

fn status(p: &v1::Promotion) -> v1::PromotionStatus {
    v1::PromotionStatus::try_from(p.status).unwrap()
}

fn gate<'a>(p: &'a v1::Promotion, name: &str) -> &'a v1::Gate {
    p.gates.iter().find(|g| g.name == name).unwrap()
}

async fn body_in(node: &Node, env: &str, path: &str) -> (u16, String) {
    let reply = node
        .send_with("GET", path, &[("x-mockplane-env", env)], "")
        .await
        .unwrap();
    (reply.status, reply.body)
}

/// A control plane and two nodes streaming from it, each node with its own
/// folder.
async fn plane_with_two_nodes(dir: &std::path::Path) -> (ControlPlane, Vec<Node>) {
    let plane = ControlPlane::start(dir, "127.0.0.1:0", None).await.unwrap();
    let mut nodes = Vec::new();
    for name in ["a", "b"] {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        nodes.push(Node::start(&dir.join(name), &plane.url()).await.unwrap());
    }
    (plane, nodes)
}

/// Waits until every node answers `path` in `env` with `body`.
async fn all_serve(nodes: &[Node], env: &str, path: &str, body: &str) {
    for node in nodes {
        eventually(&format!("{env} {path} to answer {body}"), || async {
            let (status, got) = body_in(node, env, path).await;
            (status == 200 && got == body).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scenario_moves_dev_test_prod_through_gates_approvals_and_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let (plane, nodes) = plane_with_two_nodes(dir.path()).await;
    let mut admin = plane.api(plane.token.as_deref().unwrap()).await;
    admin
        .workspaces
        .create_workspace(new_workspace("shop"))
        .await
        .unwrap();
    let mut admin_prod = in_env(&plane, &mut admin, "shop", "prod").await;
    // No injected errors: every answer below is certain.
    admin
        .environments
        .update_environment(set_reality("shop", "test", 1))
        .await
        .unwrap();
    admin_prod
        .environments
        .update_environment(set_reality("shop", "prod", 1))
        .await
        .unwrap();
    // Test: one approval by QA. Prod: two by admins.
    admin
        .environments
        .update_environment(approvals("shop", "test", 1, &["qa"], 0))
        .await
        .unwrap();
    admin_prod
        .environments
        .update_environment(approvals("shop", "prod", 2, &["admin"], 0))
        .await
        .unwrap();
    admin
        .roles
        .create_role(v1::CreateRoleRequest {
            role: Some(v1::Role {
                name: "qa".into(),
                permissions: [
                    "workspace.read",
                    "environment.read",
                    "scenario.read",
                    "promotion.request",
                    "promotion.approve",
                    "promotion.execute",
                ]
                .map(str::to_owned)
                .to_vec(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let (_, dana) = member(
        &plane,
        &mut admin,
        "shop",
        "dana@acme.io",
        &[("dev", "editor"), ("test", "editor")],
    )
    .await;
    let (_, quinn) = member(
        &plane,
        &mut admin,
        "shop",
        "quinn@acme.io",
        &[("test", "qa")],
    )
    .await;
    let (_, paula) = member(
        &plane,
        &mut admin,
        "shop",
        "paula@acme.io",
        &[("test", "viewer"), ("prod", "admin")],
    )
    .await;
    let (_, alex) = member(
        &plane,
        &mut admin,
        "shop",
        "alex@acme.io",
        &[("prod", "admin")],
    )
    .await;
    let mut dana = plane.api(&dana).await;
    let mut quinn = plane.api(&quinn).await;
    let mut paula = plane.api(&paula).await;
    let mut paula_prod = in_env(&plane, &mut paula, "shop", "prod").await;
    let mut alex = plane.api(&alex).await;
    let mut alex_prod = in_env(&plane, &mut alex, "shop", "prod").await;

    dana.scenarios
        .create_scenario(v1::CreateScenarioRequest {
            workspace: "shop".into(),
            scenario: Some(v1::Scenario {
                name: "checkout".into(),
                tags: vec!["payments".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let v1_body = r#"{"items":[],"total":0}"#;
    assert_eq!(
        cut(
            &mut dana,
            "shop",
            "checkout",
            vec![route("GET", "/cart", 200, v1_body)]
        )
        .await,
        1
    );

    // dev → test: QA approves; an admin is the wrong role; the requester
    // cannot approve (dana has no approve permission in test at all).
    let first = dana
        .promotions
        .create_promotion(promote("checkout", "dev", "test"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&first), v1::PromotionStatus::Pending);
    assert_eq!(first.version, 1);
    assert_eq!(
        first.requirement.as_ref().unwrap().reasons,
        vec!["test requires 1 approval by qa"]
    );
    assert_eq!(first.diff.as_ref().unwrap().added, vec!["GET /cart"]);
    let queue = quinn
        .promotions
        .list_promotions(v1::ListPromotionsRequest {
            pending_for_me: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .promotions;
    assert_eq!(
        queue.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        vec![first.id.as_str()]
    );
    let early = dana
        .promotions
        .execute_promotion(execute(&first.id))
        .await
        .unwrap_err();
    assert_eq!(early.code(), Code::FailedPrecondition);
    assert!(
        early.message().contains("0 of 1 approval"),
        "{}",
        early.message()
    );
    let wrong = admin
        .promotions
        .approve_promotion(decide(&first.id))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::PermissionDenied);
    assert!(
        wrong
            .message()
            .contains("decided by qa; your role there is admin"),
        "{}",
        wrong.message()
    );
    let approved = quinn
        .promotions
        .approve_promotion(decide(&first.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&approved), v1::PromotionStatus::Approved);
    let done = dana
        .promotions
        .execute_promotion(execute(&first.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status(&done),
        v1::PromotionStatus::Completed,
        "{}",
        done.status_reason
    );
    assert!(done.revision > 0);
    all_serve(&nodes, "test", "/w/shop/cart", v1_body).await;

    // The working copy moves on; dev serves it, test keeps version 1.
    let dev_body = r#"{"items":[],"total":0,"currency":"EUR"}"#;
    assert_eq!(
        cut(
            &mut dana,
            "shop",
            "checkout",
            vec![route("GET", "/cart", 200, dev_body)]
        )
        .await,
        2
    );
    all_serve(&nodes, "dev", "/w/shop/cart", dev_body).await;
    assert_eq!(
        body_in(&nodes[0], "test", "/w/shop/cart").await,
        (200, v1_body.to_owned())
    );

    // test → prod: two admins; no self-approval, one decision each.
    let to_prod = paula_prod
        .promotions
        .create_promotion(promote("checkout", "test", "prod"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&to_prod), v1::PromotionStatus::Pending);
    assert_eq!(to_prod.version, 1, "test → prod moves what test serves");
    let own = paula_prod
        .promotions
        .approve_promotion(decide(&to_prod.id))
        .await
        .unwrap_err();
    assert_eq!(own.code(), Code::PermissionDenied);
    assert!(own.message().contains("you requested"), "{}", own.message());
    let half = admin_prod
        .promotions
        .approve_promotion(decide(&to_prod.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&half), v1::PromotionStatus::Pending);
    assert_eq!(half.requirement.as_ref().unwrap().given, 1);
    let twice = admin_prod
        .promotions
        .approve_promotion(decide(&to_prod.id))
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::AlreadyExists);
    alex_prod
        .promotions
        .approve_promotion(decide(&to_prod.id))
        .await
        .unwrap();
    // Prod changes need an environment token, promotions included.
    let unscoped = paula
        .promotions
        .execute_promotion(execute(&to_prod.id))
        .await
        .unwrap_err();
    assert_eq!(unscoped.code(), Code::PermissionDenied);
    let started = Instant::now();
    let live = paula_prod
        .promotions
        .execute_promotion(execute(&to_prod.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&live), v1::PromotionStatus::Completed);
    all_serve(&nodes, "prod", "/w/shop/cart", v1_body).await;
    eprintln!(
        "promotion → all {} nodes serving: {:?}",
        nodes.len(),
        started.elapsed()
    );
    let propagated = eventually("the promotion to report every node serving it", || {
        let mut client = paula_prod.promotions.clone();
        let id = to_prod.id.clone();
        async move {
            let p = client
                .get_promotion(v1::GetPromotionRequest { id })
                .await
                .ok()?
                .into_inner();
            let prop = p.propagation.clone()?;
            (prop.nodes_serving == 2 && prop.nodes_total == 2).then_some(p)
        }
    })
    .await;
    let transitions: Vec<(String, String, String)> = propagated
        .transitions
        .iter()
        .map(|t| (t.from.clone(), t.to.clone(), t.actor.clone()))
        .collect();
    assert_eq!(
        transitions,
        vec![
            (String::new(), "pending".into(), "paula@acme.io".into()),
            ("pending".into(), "approved".into(), "alex@acme.io".into()),
            (
                "approved".into(),
                "completed".into(),
                "paula@acme.io".into()
            ),
        ]
    );
    // An approval of a completed promotion is refused as a transition.
    let late = alex_prod
        .promotions
        .reject_promotion(decide(&to_prod.id))
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition);

    // A breaking change (a removed field) goes into test (budget 5, but it
    // needs an approval for it) and is stopped before prod (budget 0).
    let breaking = r#"{"items":[]}"#;
    assert_eq!(
        cut(
            &mut dana,
            "shop",
            "checkout",
            vec![route("GET", "/cart", 200, breaking)]
        )
        .await,
        3
    );
    let preview = dana
        .promotions
        .preview_promotion(promote("checkout", "dev", "test"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(preview.current_version, 1);
    assert_eq!(preview.diff.as_ref().unwrap().breaking_count, 1);
    assert!(!preview.blocked);
    let to_test = dana
        .promotions
        .create_promotion(promote("checkout", "dev", "test"))
        .await
        .unwrap()
        .into_inner();
    assert!(
        to_test
            .requirement
            .as_ref()
            .unwrap()
            .reasons
            .iter()
            .any(|r| r.contains("1 breaking change")),
        "{:?}",
        to_test.requirement
    );
    quinn
        .promotions
        .approve_promotion(decide(&to_test.id))
        .await
        .unwrap();
    dana.promotions
        .execute_promotion(execute(&to_test.id))
        .await
        .unwrap();
    all_serve(&nodes, "test", "/w/shop/cart", breaking).await;
    let stopped = paula_prod
        .promotions
        .create_promotion(promote("checkout", "test", "prod"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&stopped), v1::PromotionStatus::Failed);
    let drift = gate(&stopped, "drift");
    assert_eq!(drift.status, "failed");
    assert!(
        drift.detail.contains("field $.total was removed"),
        "{}",
        drift.detail
    );
    assert!(
        stopped.status_reason.contains("drift budget of prod (0)"),
        "{}",
        stopped.status_reason
    );
    assert_eq!(
        body_in(&nodes[1], "prod", "/w/shop/cart").await,
        (200, v1_body.to_owned())
    );

    // Rollback: test serves version 1 again, on every node.
    let rolled = dana
        .promotions
        .rollback_promotion(v1::RollbackPromotionRequest {
            id: to_test.id.clone(),
            reason: "the field is still used".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        rolled.code(),
        Code::PermissionDenied,
        "editors do not roll back"
    );
    let rolled = admin
        .promotions
        .rollback_promotion(v1::RollbackPromotionRequest {
            id: to_test.id.clone(),
            reason: "the field is still used".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&rolled), v1::PromotionStatus::RolledBack);
    all_serve(&nodes, "test", "/w/shop/cart", v1_body).await;
    let releases = admin
        .promotions
        .list_releases(v1::ListReleasesRequest {
            workspace: "shop".into(),
            environment: "test".into(),
            page_size: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .releases;
    let history: Vec<(&str, u32, u32)> = releases
        .iter()
        .map(|r| (r.kind.as_str(), r.version, r.previous_version))
        .collect();
    assert_eq!(
        history,
        vec![("rollback", 1, 3), ("promotion", 3, 1), ("promotion", 1, 0)]
    );

    // PII into prod (which forbids it) is stopped, naming route and field.
    dana.scenarios
        .create_scenario(v1::CreateScenarioRequest {
            workspace: "shop".into(),
            scenario: Some(v1::Scenario {
                name: "owners".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    cut(
        &mut dana,
        "shop",
        "owners",
        vec![route(
            "GET",
            "/owner",
            200,
            r#"{"owner":{"email":"jane.roe@corp.io"}}"#,
        )],
    )
    .await;
    let owners = dana
        .promotions
        .create_promotion(promote("owners", "dev", "test"))
        .await
        .unwrap()
        .into_inner();
    quinn
        .promotions
        .approve_promotion(decide(&owners.id))
        .await
        .unwrap();
    dana.promotions
        .execute_promotion(execute(&owners.id))
        .await
        .unwrap();
    let pii = paula_prod
        .promotions
        .create_promotion(promote("owners", "test", "prod"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&pii), v1::PromotionStatus::Failed);
    let data = gate(&pii, "data_policy");
    assert_eq!(data.status, "failed");
    assert!(
        data.detail
            .contains("GET /owner response.body $.owner.email: an e-mail address (PII)"),
        "{}",
        data.detail
    );
    assert!(
        !data.detail.contains("jane.roe"),
        "the value is masked: {}",
        data.detail
    );

    // A promotion that nobody approves in time expires; approving it then
    // is refused. A rejected one cannot be approved.
    admin
        .environments
        .update_environment(approvals("shop", "test", 1, &["qa"], 1))
        .await
        .unwrap();
    cut(
        &mut dana,
        "shop",
        "owners",
        vec![route("GET", "/owner", 200, r#"{"owner":{"name":"Ann"}}"#)],
    )
    .await;
    let slow = dana
        .promotions
        .create_promotion(promote("owners", "dev", "test"))
        .await
        .unwrap()
        .into_inner();
    let expires = slow.expire_time.as_ref().unwrap().seconds;
    eventually("the approval time to run out", || async {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        (now > expires).then_some(())
    })
    .await;
    let expired = quinn
        .promotions
        .approve_promotion(decide(&slow.id))
        .await
        .unwrap_err();
    assert_eq!(expired.code(), Code::FailedPrecondition);
    assert!(
        expired.message().contains("expired"),
        "{}",
        expired.message()
    );
    let slow = quinn
        .promotions
        .get_promotion(v1::GetPromotionRequest {
            id: slow.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status(&slow), v1::PromotionStatus::Expired);
    admin
        .environments
        .update_environment(approvals("shop", "test", 1, &["qa"], 0))
        .await
        .unwrap();
    let again = dana
        .promotions
        .create_promotion(promote("owners", "dev", "test"))
        .await
        .unwrap()
        .into_inner();
    quinn
        .promotions
        .reject_promotion(decide(&again.id))
        .await
        .unwrap();
    let after_reject = quinn
        .promotions
        .approve_promotion(decide(&again.id))
        .await
        .unwrap_err();
    assert_eq!(after_reject.code(), Code::FailedPrecondition);
    assert!(
        after_reject.message().contains("rejected is final"),
        "{}",
        after_reject.message()
    );
}

/// The CLI: contract checks from a file, an external check reported by
/// "CI", `promote`, `promotions check|execute|list|releases`, a contract
/// failure, `rollback`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_promotes_with_contract_and_external_checks() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let node = Node::start(dir.path(), &plane.url()).await.unwrap();
    let cli = mockplane_e2e::Cli {
        server: plane.url(),
        token: plane.token.as_deref(),
    };
    cli.workspace_with_mocks(
        dir.path(),
        "shop",
        "routes:\n  - path: /cart/{id:int}\n    response:\n      status: 200\n      headers: { content-type: application/json }\n      template: true\n      body: '{\"id\": {{request.params.id}}, \"items\": []}'\n",
    )
    .await;
    let hooks = mockplane_e2e::stand_in::Http::start(|_, _| (204, String::new())).await;
    let added = cli
        .ok(&[
            "notifications",
            "add",
            "shop",
            "--webhook",
            &hooks.url("/in"),
            "--event",
            "completed",
            "-o",
            "json",
        ])
        .await;
    assert!(
        added.contains("whsec_"),
        "the secret is shown once: {added}"
    );
    let refused = cli
        .fails(&[
            "notifications",
            "add",
            "shop",
            "--email",
            "nobody",
            "-o",
            "json",
        ])
        .await;
    assert!(refused.contains("not an e-mail address"), "{refused}");
    let checks = dir.path().join("checks.yaml");
    std::fs::write(
        &checks,
        "- name: cart-by-id\n  request: { path: /cart/7 }\n  expect: { status: 200, body: { id: 7 } }\n",
    )
    .unwrap();
    let bad = dir.path().join("bad-checks.yaml");
    std::fs::write(
        &bad,
        "- name: x\n  request: { path: cart }\n  expect: { status: 200 }\n",
    )
    .unwrap();
    let refused = cli
        .fails(&[
            "scenario",
            "update",
            "shop",
            "default",
            "--checks",
            &bad.display().to_string(),
        ])
        .await;
    assert!(refused.contains("checks[0].request.path"), "{refused}");
    cli.ok(&[
        "scenario",
        "update",
        "shop",
        "default",
        "--checks",
        &checks.display().to_string(),
    ])
    .await;
    cli.ok(&["scenario", "version", "shop", "default"]).await;
    let settings = dir.path().join("test.yaml");
    std::fs::write(&settings, "reality: 1\nrequired_checks: [ci]\n").unwrap();
    cli.ok(&[
        "env",
        "update",
        "shop",
        "test",
        "--file",
        &settings.display().to_string(),
    ])
    .await;

    // Approved (test needs no approval), but CI has not reported yet.
    let promoted: serde_json::Value = serde_json::from_str(
        &cli.ok(&[
            "promote",
            "shop",
            "default",
            "--to",
            "test",
            "-c",
            "first cut",
            "-o",
            "json",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(promoted["status"], "approved");
    let id = promoted["id"].as_str().unwrap().to_owned();
    let gates = promoted["gates"].to_string();
    assert!(gates.contains("contracts: passed"), "{gates}");
    assert!(
        gates.contains("external_checks: pending — waiting for ci"),
        "{gates}"
    );
    let early = cli.fails(&["promotions", "execute", &id]).await;
    assert!(early.contains("waits for external checks"), "{early}");
    cli.ok(&[
        "promotions",
        "check",
        &id,
        "ci",
        "passed",
        "--url",
        "http://ci.local/build/1",
    ])
    .await;
    let executed = cli.ok(&["promotions", "execute", &id, "-o", "json"]).await;
    assert!(executed.contains("\"status\": \"completed\""), "{executed}");
    node.wait_for("/w/shop/cart/7", 200, |_| true).await;
    let test = node
        .send_with("GET", "/w/shop/cart/9", &[("x-mockplane-env", "test")], "")
        .await
        .unwrap();
    assert_eq!(
        (test.status, test.body.as_str()),
        (200, r#"{"id": 9, "items": []}"#)
    );

    // A version whose answer breaks the contract check is stopped.
    let mocks = dir.path().join("v2.yaml");
    std::fs::write(
        &mocks,
        "routes:\n  - path: /cart/{id:int}\n    response: { status: 200, json: { id: 0, items: [] } }\n",
    )
    .unwrap();
    let listed: serde_json::Value =
        serde_json::from_str(&cli.ok(&["route", "list", "shop", "-o", "json"]).await).unwrap();
    let route_id = listed[0]["id"].as_str().unwrap().to_owned();
    cli.ok(&["route", "remove", "shop", &route_id]).await;
    cli.ok(&[
        "route",
        "add",
        "shop",
        "--file",
        &mocks.display().to_string(),
    ])
    .await;
    cli.ok(&["scenario", "version", "shop", "default"]).await;
    let preview = cli
        .ok(&[
            "promote",
            "shop",
            "default",
            "--to",
            "test",
            "--dry-run",
            "-o",
            "json",
        ])
        .await;
    assert!(preview.contains("\"blocked\": true"), "{preview}");
    let stopped = cli
        .fails(&["promote", "shop", "default", "--to", "test"])
        .await;
    assert!(
        stopped.contains("gate contracts failed") && stopped.contains("cart-by-id"),
        "{stopped}"
    );
    let all: serde_json::Value =
        serde_json::from_str(&cli.ok(&["promotions", "list", "shop", "-o", "json"]).await).unwrap();
    let statuses: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["failed", "completed"]);

    // Rolled back: test serves nothing of the scenario again.
    cli.ok(&["rollback", &id, "-c", "not needed after all"])
        .await;
    eventually("test to stop serving the cart", || async {
        let reply = node
            .send_with("GET", "/w/shop/cart/9", &[("x-mockplane-env", "test")], "")
            .await
            .ok()?;
        (reply.status == 404).then_some(())
    })
    .await;
    eventually("the webhook delivery in the log", || async {
        let log = cli
            .ok(&["notifications", "deliveries", "shop", "-o", "json"])
            .await;
        (log.contains("\"status\": \"delivered\"") && log.contains("\"event\": \"completed\""))
            .then_some(())
    })
    .await;
    assert_eq!(hooks.received().len(), 1, "one completion, one delivery");
    let releases = cli
        .ok(&["promotions", "releases", "shop", "--env", "test"])
        .await;
    assert!(
        releases.contains("rollback") && releases.contains("promotion"),
        "{releases}"
    );
}

/// Personas and environment settings move along the chain like scenarios:
/// `promote --persona` and `promote --settings` through the CLI, each node
/// serving the promoted persona and settings in test while dev keeps its
/// working copy; a rollback restores what test served on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personas_and_settings_move_along_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (plane, nodes) = plane_with_two_nodes(dir.path()).await;
    let cli = mockplane_e2e::Cli {
        server: plane.url(),
        token: plane.token.as_deref(),
    };
    cli.workspace_with_mocks(
        dir.path(),
        "shop",
        "routes:\n  - path: /me\n    response:\n      status: 200\n      template: true\n      body: 'hi {{persona.user.name}}'\n",
    )
    .await;
    let mut admin = plane.api(plane.token.as_deref().unwrap()).await;
    for (env, level) in [("dev", 1), ("test", 1)] {
        admin
            .environments
            .update_environment(set_reality("shop", env, level))
            .await
            .unwrap();
    }
    cli.ok(&["scenario", "version", "shop", "default"]).await;
    cli.ok(&["promote", "shop", "default", "--to", "test", "-o", "json"])
        .await;
    let persona = dir.path().join("ada.json");
    std::fs::write(&persona, r#"{"user": {"name": "Ada", "id": 1}}"#).unwrap();
    cli.ok(&[
        "persona",
        "create",
        "shop",
        "default",
        "-f",
        &persona.display().to_string(),
    ])
    .await;
    all_serve(&nodes, "dev", "/w/shop/me", "hi Ada").await;
    // Test serves the scenario but no persona yet.
    for node in &nodes {
        eventually("test to serve the scenario", || async {
            let (status, body) = body_in(node, "test", "/w/shop/me").await;
            (status == 200 && body == "hi ").then_some(())
        })
        .await;
    }

    let promoted = cli
        .ok(&[
            "promote",
            "shop",
            "--persona",
            "default",
            "--to",
            "test",
            "-o",
            "json",
        ])
        .await;
    let promoted: serde_json::Value = serde_json::from_str(&promoted).unwrap();
    assert_eq!(promoted["status"], "completed", "{promoted}");
    assert_eq!(promoted["entity"], "persona");
    assert_eq!(promoted["version"], 1);
    let persona_promotion = promoted["id"].as_str().unwrap().to_owned();
    all_serve(&nodes, "test", "/w/shop/me", "hi Ada").await;

    // Dev moves on; test keeps version 1 until promoted.
    std::fs::write(&persona, r#"{"user": {"name": "Grace"}}"#).unwrap();
    cli.ok(&[
        "persona",
        "update",
        "shop",
        "default",
        "-f",
        &persona.display().to_string(),
    ])
    .await;
    all_serve(&nodes, "dev", "/w/shop/me", "hi Grace").await;
    all_serve(&nodes, "test", "/w/shop/me", "hi Ada").await;
    // Contract checks read the personas of the target, as its nodes do:
    // test serves Ada (version 1) while dev has moved on to Grace.
    let checks = dir.path().join("checks.yaml");
    let check = |name: &str| {
        format!(
            "- name: greets\n  request: {{ path: /me }}\n  expect: {{ status: 200, body_contains: 'hi {name}' }}\n"
        )
    };
    for (name, gate) in [("Ada", "contracts: passed"), ("Grace", "contracts: failed")] {
        std::fs::write(&checks, check(name)).unwrap();
        cli.ok(&[
            "scenario",
            "update",
            "shop",
            "default",
            "--checks",
            &checks.display().to_string(),
        ])
        .await;
        cli.ok(&["scenario", "version", "shop", "default"]).await;
        let preview = cli
            .ok(&[
                "promote",
                "shop",
                "default",
                "--to",
                "test",
                "--dry-run",
                "-o",
                "json",
            ])
            .await;
        assert!(preview.contains(gate), "checking for {name}: {preview}");
    }
    let shown = cli
        .ok(&["persona", "get", "shop", "default", "-o", "json"])
        .await;
    assert!(shown.contains("test: v1"), "{shown}");
    // The dry run names what a template reading user.id would lose.
    let preview = cli
        .ok(&[
            "promote",
            "shop",
            "--persona",
            "default",
            "--to",
            "test",
            "--dry-run",
            "-o",
            "json",
        ])
        .await;
    assert!(
        preview.contains("persona default: field $.user.id was removed"),
        "{preview}"
    );
    // A served persona cannot be deleted.
    let refused = cli.fails(&["persona", "delete", "shop", "default"]).await;
    assert!(refused.contains("served by test (version 1)"), "{refused}");

    // Settings: every answer of dev is a 503; test takes dev's chaos, not
    // its governance.
    admin
        .environments
        .update_environment(v1::UpdateEnvironmentRequest {
            workspace: "shop".into(),
            environment: "dev".into(),
            patch: Some(v1::Environment {
                settings: Some(v1::EnvironmentSettings {
                    chaos: Some(v1::Chaos {
                        rate: 1.0,
                        statuses: vec![v1::WeightedStatus {
                            status: 503,
                            weight: 1,
                        }],
                        ..Default::default()
                    }),
                    drift_budget: Some(42),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["settings.chaos".into(), "settings.drift_budget".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let settings = cli
        .ok(&[
            "promote",
            "shop",
            "--settings",
            "--to",
            "test",
            "-o",
            "json",
        ])
        .await;
    let settings: serde_json::Value = serde_json::from_str(&settings).unwrap();
    assert_eq!(settings["status"], "completed", "{settings}");
    assert_eq!(settings["entity"], "environment");
    assert!(settings["settings"]["chaos"].is_object(), "{settings}");
    assert!(
        settings["settings"].get("drift_budget").is_none(),
        "{settings}"
    );
    for node in &nodes {
        eventually("test to answer with dev's chaos", || async {
            let (status, _) = body_in(node, "test", "/w/shop/me").await;
            (status == 503).then_some(())
        })
        .await;
    }
    let env = admin
        .environments
        .get_environment(v1::GetEnvironmentRequest {
            workspace: "shop".into(),
            environment: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        env.settings.unwrap_or_default().drift_budget,
        Some(42),
        "governance stays with test"
    );
    cli.ok(&[
        "rollback",
        settings["id"].as_str().unwrap(),
        "-c",
        "too noisy",
    ])
    .await;
    all_serve(&nodes, "test", "/w/shop/me", "hi Ada").await;

    // Rolling the persona back leaves test with none; every node agrees.
    cli.ok(&["rollback", &persona_promotion]).await;
    for node in &nodes {
        eventually("test to serve no persona again", || async {
            let (status, body) = body_in(node, "test", "/w/shop/me").await;
            (status == 200 && body == "hi ").then_some(())
        })
        .await;
    }
    let history = cli
        .ok(&[
            "promotions",
            "releases",
            "shop",
            "--env",
            "test",
            "-o",
            "json",
        ])
        .await;
    let history: Vec<serde_json::Value> = serde_json::from_str(&history).unwrap();
    let kinds: Vec<(&str, &str, &str)> = history
        .iter()
        .map(|r| {
            (
                r["entity"].as_str().unwrap(),
                r["name"].as_str().unwrap(),
                r["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("persona", "default", "rollback"),
            ("environment", "test", "rollback"),
            ("environment", "test", "promotion"),
            ("persona", "default", "promotion"),
            ("scenario", "default", "promotion"),
        ]
    );
}
