//! The control plane on PostgreSQL, as in production: two replicas on one
//! database, each with a node connected, both serving every change.

use mockplane_e2e::fixtures::{self, new_workspace, route};
use mockplane_e2e::{ControlPlane, Node, eventually};
use mockplane_proto::v1;
use sqlx::Connection as _;

/// A fresh database on the server `DATABASE_URL` points at (`make test`
/// starts PostgreSQL and sets it), dropped at the end.
struct TempDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TempDatabase {
    async fn create() -> Self {
        let admin_url = std::env::var("DATABASE_URL")
            .expect("DATABASE_URL must point at PostgreSQL (`make test` starts one and sets it)");
        let name = format!("mockplane_e2e_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let (server, _) = admin_url
            .rsplit_once('/')
            .expect("a database URL has a path");
        let url = format!("{server}/{name}");
        Self {
            admin_url,
            name,
            url,
        }
    }

    /// Drops the database. `WITH (FORCE)` ends our own connections to it,
    /// but a non-superuser may not end an autovacuum worker that happens to
    /// be in it (SQLSTATE 42501): that one finishes on its own, so the drop
    /// is tried again until it goes through.
    async fn drop(self) {
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.admin_url)
            .await
            .unwrap();
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        eventually(&format!("dropping database {}", self.name), || {
            let (statement, admin) = (statement.clone(), admin.clone());
            async move {
                match sqlx::query(&statement).execute(&admin).await {
                    Ok(_) => Some(()),
                    Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501") => None,
                    Err(e) => panic!("dropping the test database: {e}"),
                }
            }
        })
        .await;
        admin.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgres_feed_their_nodes_every_change() {
    let database = TempDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    // Their catch-up polls are an hour apart: a change reaches the other
    // replica's nodes only through LISTEN/NOTIFY.
    let slow_poll = ["--poll-interval-ms", "3600000"];
    let (a, b) = tokio::join!(
        ControlPlane::start_with(dir.path(), "127.0.0.1:0", Some(&database.url), &slow_poll),
        ControlPlane::start_with(dir.path(), "127.0.0.1:0", Some(&database.url), &slow_poll),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    // Started together, exactly one of them bootstrapped the org.
    let token = match (&a.token, &b.token) {
        (Some(token), None) | (None, Some(token)) => token.clone(),
        other => panic!("expected exactly one bootstrap, got {other:?}"),
    };
    let node_a = Node::start(dir.path(), &a.url()).await.unwrap();
    let node_b = Node::start(dir.path(), &b.url()).await.unwrap();

    let mut api_a = a.api(&token).await;
    api_a
        .workspaces
        .create_workspace(new_workspace("shared"))
        .await
        .unwrap();
    fixtures::add_routes(
        &mut api_a,
        "shared",
        vec![route("GET", "/from-a", 200, "a")],
    )
    .await;
    // A change made through replica A reaches the node on replica B.
    for node in [&node_a, &node_b] {
        node.wait_for("/w/shared/from-a", 200, |b| b == "a").await;
    }

    let mut api_b = b.api(&token).await;
    fixtures::add_routes(
        &mut api_b,
        "shared",
        vec![route("GET", "/from-b", 200, "b")],
    )
    .await;
    for node in [&node_a, &node_b] {
        node.wait_for("/w/shared/from-b", 200, |b| b == "b").await;
    }
    // Either replica counts the whole fleet: the change made through B,
    // asked on A, is served by both nodes (one streams from each).
    eventually("the change through B counted on A", || {
        let mut nodes = api_a.nodes.clone();
        async move {
            let p = nodes
                .get_propagation(v1::GetPropagationRequest {
                    workspace: "shared".into(),
                    revision: 0,
                })
                .await
                .unwrap()
                .into_inner();
            (p.nodes_serving == 2 && p.nodes_total == 2).then_some(())
        }
    })
    .await;

    drop((api_a, api_b, node_a, node_b, a, b));
    database.drop().await;
}

/// Row-level security does not hold for a role that bypasses it, so the
/// control plane refuses to start as one, saying why — before it touches
/// the database (no migration has run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_refuses_a_role_that_bypasses_row_level_security() {
    let database = TempDatabase::create().await;
    // `make test` creates the role (scripts/ensure-postgres.sh).
    let (scheme_and_user, rest) = database
        .url
        .split_once(':')
        .and_then(|(scheme, rest)| {
            rest.split_once(':')
                .map(|(user, rest)| (format!("{scheme}:{user}"), rest))
        })
        .expect("a postgres://user:password@host/db URL");
    let bypass_url = format!("{scheme_and_user}_bypass:{rest}");
    let dir = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(mockplane_e2e::bin("mockplane-control-plane"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--database-url", &bypass_url])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("superuser or has BYPASSRLS") && stderr.contains("mockplane_bypass"),
        "{stderr}"
    );
    let mut conn = sqlx::PgConnection::connect(&database.url).await.unwrap();
    let tables: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(tables, 0, "nothing was migrated");
    drop(conn);
    database.drop().await;
}

/// Cuts the next version of scenario "default" of `shop` (one route
/// answering `body`) and requests its promotion dev → test.
async fn next_promotion(api: &mut mockplane_e2e::Api, body: &str) -> v1::Promotion {
    fixtures::cut(
        api,
        "shop",
        "default",
        vec![route("GET", "/cart", 200, body)],
    )
    .await;
    api.promotions
        .create_promotion(v1::CreatePromotionRequest {
            workspace: "shop".into(),
            scenario: "default".into(),
            from_environment: "dev".into(),
            to_environment: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

fn completed(result: &Result<tonic::Response<v1::Promotion>, tonic::Status>) -> bool {
    result
        .as_ref()
        .is_ok_and(|p| p.get_ref().status == v1::PromotionStatus::Completed as i32)
}

/// Two approvers on two replicas race to approve and execute the same
/// promotion, round after round: every round ends with exactly one
/// completion, one release and one `promotion.execute` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_approvers_complete_a_promotion_exactly_once() {
    let database = TempDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let a = ControlPlane::start(dir.path(), "127.0.0.1:0", Some(&database.url))
        .await
        .unwrap();
    let b = ControlPlane::start(dir.path(), "127.0.0.1:0", Some(&database.url))
        .await
        .unwrap();
    let mut admin = a.api(a.token.as_deref().unwrap()).await;
    admin
        .workspaces
        .create_workspace(new_workspace("shop"))
        .await
        .unwrap();
    // Test needs one approval by an admin there; the two racers are.
    admin
        .environments
        .update_environment(fixtures::approvals("shop", "test", 1, &["admin"], 0))
        .await
        .unwrap();
    let (_, one) =
        fixtures::member(&a, &mut admin, "shop", "one@acme.io", &[("test", "admin")]).await;
    let (_, two) =
        fixtures::member(&a, &mut admin, "shop", "two@acme.io", &[("test", "admin")]).await;
    let mut one = a.api(&one).await;
    let mut two = b.api(&two).await;
    let rounds = 8;
    for round in 1..=rounds {
        let promotion = next_promotion(&mut admin, &format!("v{round}")).await;
        assert_eq!(promotion.status, v1::PromotionStatus::Pending as i32);
        let race = |api: &mut mockplane_e2e::Api| {
            let mut client = api.promotions.clone();
            let id = promotion.id.clone();
            async move {
                let approved = client
                    .approve_promotion(v1::DecidePromotionRequest {
                        id: id.clone(),
                        comment: String::new(),
                    })
                    .await;
                let executed = client
                    .execute_promotion(v1::ExecutePromotionRequest { id })
                    .await;
                (approved, executed)
            }
        };
        let ((approved_one, executed_one), (approved_two, executed_two)) =
            tokio::join!(race(&mut one), race(&mut two));
        // One approval moved it to approved; the other found it approved
        // already (or, if it came first, was the one).
        let approvals = [&approved_one, &approved_two]
            .iter()
            .filter(|r| r.is_ok())
            .count();
        assert!(
            approvals >= 1,
            "round {round}: {approved_one:?} {approved_two:?}"
        );
        for refused in [&approved_one, &approved_two]
            .into_iter()
            .filter_map(|r| r.as_ref().err())
        {
            assert_eq!(
                refused.code(),
                tonic::Code::FailedPrecondition,
                "{refused:?}"
            );
        }
        let completions = [&executed_one, &executed_two]
            .into_iter()
            .filter(|r| completed(r))
            .count();
        assert_eq!(
            completions, 1,
            "round {round}: {executed_one:?} {executed_two:?}"
        );
        for refused in [&executed_one, &executed_two]
            .into_iter()
            .filter_map(|r| r.as_ref().err())
        {
            assert_eq!(
                refused.code(),
                tonic::Code::FailedPrecondition,
                "{refused:?}"
            );
        }
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
        assert_eq!(releases.len(), round, "one release per round");
    }
    let executions = admin
        .audit
        .list_audit_events(v1::ListAuditEventsRequest {
            action: "promotion.execute".into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(executions.len(), rounds);
    drop((admin, one, two, a, b));
    database.drop().await;
}

/// Where a round stops the execution before the control plane is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// Waiting for the promotion's row: before any write.
    AtTheRow,
    /// Waiting for the revision row, the transaction's last write: after
    /// the deployment, the release, the status and the audit event.
    AtTheRevision,
    /// Not stopped: killed after it committed.
    Never,
}

/// The control plane is killed (SIGKILL) while it executes a promotion:
/// held at its first statement, held at its last write (a test connection
/// holds the row it waits for, and the kill comes once PostgreSQL shows it
/// waiting), and after it committed. After a restart the promotion is
/// either completed with everything that goes with it (the target serves
/// it, its release, its audit event) or still approved with none of it and
/// executable, and the audit chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_killed_mid_execution_leaves_all_or_nothing() {
    use nix::sys::signal::Signal;
    let database = TempDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut plane = ControlPlane::start(dir.path(), "127.0.0.1:0", Some(&database.url))
        .await
        .unwrap();
    let token = plane.token.clone().unwrap();
    let mut api = plane.api(&token).await;
    api.workspaces
        .create_workspace(new_workspace("shop"))
        .await
        .unwrap();
    let watcher = sqlx::PgPool::connect(&database.url).await.unwrap();
    for (round, stall) in [Stall::AtTheRow, Stall::AtTheRevision, Stall::Never]
        .into_iter()
        .enumerate()
    {
        // Test needs no approval by default: the request is approved.
        let promotion = next_promotion(&mut api, &format!("v{round}")).await;
        assert_eq!(promotion.status, v1::PromotionStatus::Approved as i32);
        let mut holder = sqlx::PgConnection::connect(&database.url).await.unwrap();
        let mut held = holder.begin().await.unwrap();
        // Past row-level security: this connection names no org.
        sqlx::query("SELECT set_config('mockplane.system', 'on', true)")
            .execute(&mut *held)
            .await
            .unwrap();
        match stall {
            Stall::AtTheRow => {
                sqlx::query("SELECT 1 FROM promotions WHERE id = $1 FOR UPDATE")
                    .bind(uuid::Uuid::parse_str(&promotion.id).unwrap())
                    .execute(&mut *held)
                    .await
                    .unwrap();
            }
            Stall::AtTheRevision => {
                sqlx::query("SELECT revision FROM config_revision WHERE id = 1 FOR UPDATE")
                    .execute(&mut *held)
                    .await
                    .unwrap();
            }
            Stall::Never => {}
        }
        let mut client = api.promotions.clone();
        let id = promotion.id.clone();
        let call = tokio::spawn(async move {
            client
                .execute_promotion(v1::ExecutePromotionRequest { id })
                .await
        });
        if stall == Stall::Never {
            let done = call.await.unwrap().unwrap().into_inner();
            assert_eq!(done.status, v1::PromotionStatus::Completed as i32);
        } else {
            eventually("the execution to wait for the held row", || {
                let watcher = watcher.clone();
                async move {
                    let waiting: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM pg_stat_activity \
                         WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    )
                    .fetch_one(&watcher)
                    .await
                    .ok()?;
                    (waiting > 0).then_some(())
                }
            })
            .await;
            plane.process.stop(Signal::SIGKILL).await.unwrap();
            assert!(
                call.await.unwrap().is_err(),
                "the call dies with the server"
            );
        }
        if stall == Stall::Never {
            plane.process.stop(Signal::SIGKILL).await.unwrap();
        }
        held.rollback().await.unwrap();
        plane = ControlPlane::start(dir.path(), "127.0.0.1:0", Some(&database.url))
            .await
            .unwrap();
        api = plane.api(&token).await;
        let after = api
            .promotions
            .get_promotion(v1::GetPromotionRequest {
                id: promotion.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let served = api
            .scenarios
            .get_scenario(v1::GetScenarioRequest {
                workspace: "shop".into(),
                scenario: "default".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .deployments
            .iter()
            .find(|d| d.environment == "test")
            .map(|d| d.version);
        let released = api
            .promotions
            .list_releases(v1::ListReleasesRequest {
                workspace: "shop".into(),
                environment: "test".into(),
                page_size: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .releases
            .iter()
            .any(|r| r.promotion == promotion.id);
        let audited = api
            .audit
            .list_audit_events(v1::ListAuditEventsRequest {
                action: "promotion.execute".into(),
                page_size: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events
            .iter()
            .any(|e| e.resource == format!("workspace/shop/promotion/{}", promotion.number));
        if stall == Stall::Never {
            assert_eq!(served, Some(promotion.version), "round {round}");
            assert!(
                released && audited,
                "round {round}: released {released}, audited {audited}"
            );
            assert!(after.revision > 0);
        } else {
            assert_eq!(
                after.status,
                v1::PromotionStatus::Approved as i32,
                "round {round}: {}",
                after.status_reason
            );
            assert_ne!(served, Some(promotion.version), "round {round}");
            assert!(
                !released && !audited,
                "round {round}: released {released}, audited {audited}"
            );
            // Nothing was lost: it can be executed now.
            let done = api
                .promotions
                .execute_promotion(v1::ExecutePromotionRequest {
                    id: promotion.id.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(done.status, v1::PromotionStatus::Completed as i32);
        }
        let chain = api
            .audit
            .verify_audit_chain(v1::VerifyAuditChainRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(chain.ok, "{}", chain.problem);
    }
    watcher.close().await;
    drop((api, plane));
    database.drop().await;
}

/// The replica each registered node streams from, by node id.
async fn replicas_of_nodes(api: &mut mockplane_e2e::Api) -> Vec<String> {
    eventually("both nodes in the registry", || {
        let mut nodes = api.nodes.clone();
        async move {
            let listed = nodes
                .list_nodes(v1::ListNodesRequest::default())
                .await
                .unwrap()
                .into_inner();
            (listed.nodes.len() == 2).then(|| listed.nodes.into_iter().map(|n| n.replica).collect())
        }
    })
    .await
}

/// A replica killed with SIGKILL: its nodes move to the other replica they
/// know and catch up with what changed there meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_a_killed_replica_move_to_another_and_catch_up() {
    let database = TempDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut a = ControlPlane::start_with(
        dir.path(),
        "127.0.0.1:0",
        Some(&database.url),
        &["--replica-name", "replica-a"],
    )
    .await
    .unwrap();
    let b = ControlPlane::start_with(
        dir.path(),
        "127.0.0.1:0",
        Some(&database.url),
        &["--replica-name", "replica-b"],
    )
    .await
    .unwrap();
    let token = a.token.clone().unwrap();
    let nodes = [
        Node::start_with(dir.path(), &a.url(), &["--control-plane", &b.url()])
            .await
            .unwrap(),
        Node::start_with(dir.path(), &a.url(), &["--control-plane", &b.url()])
            .await
            .unwrap(),
    ];
    let mut api_a = a.api(&token).await;
    api_a
        .workspaces
        .create_workspace(new_workspace("moving"))
        .await
        .unwrap();
    fixtures::add_routes(
        &mut api_a,
        "moving",
        vec![route("GET", "/before", 200, "a")],
    )
    .await;
    for node in &nodes {
        node.wait_for("/w/moving/before", 200, |b| b == "a").await;
    }
    let connected_to_a = a.process.log_text().matches("node connected").count();
    assert_eq!(connected_to_a, 2, "both nodes start on the first replica");
    // The other replica knows them from the registry.
    let mut api_b = b.api(&token).await;
    assert_eq!(
        replicas_of_nodes(&mut api_b).await,
        ["replica-a", "replica-a"]
    );

    drop(api_a);
    a.process
        .stop(nix::sys::signal::Signal::SIGKILL)
        .await
        .unwrap();
    fixtures::add_routes(&mut api_b, "moving", vec![route("GET", "/after", 200, "b")]).await;
    for node in &nodes {
        node.wait_for("/w/moving/after", 200, |b| b == "b").await;
        assert_eq!(node.get("/w/moving/before").await.unwrap().status, 200);
        assert_eq!(node.status().await["connected"], true);
    }
    assert!(
        b.process.log_text().matches("node connected").count() >= 2,
        "{}",
        b.process.log_text()
    );
    // The registry says where they are now, and that they serve the change.
    eventually("both nodes registered on replica-b", || {
        let mut api = api_b.nodes.clone();
        async move {
            let listed = api
                .list_nodes(v1::ListNodesRequest::default())
                .await
                .unwrap()
                .into_inner();
            listed
                .nodes
                .iter()
                .all(|n| n.replica == "replica-b" && n.state == "connected" && n.lag_revisions == 0)
                .then_some(())
        }
    })
    .await;
    let propagation = api_b
        .nodes
        .get_propagation(v1::GetPropagationRequest {
            workspace: "moving".into(),
            revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((propagation.nodes_serving, propagation.nodes_total), (2, 2));
    drop((api_b, nodes, a, b));
    database.drop().await;
}
