//! The control plane on PostgreSQL, as in production: two replicas on one
//! database, each with a node connected, both serving every change.

use mockplane_e2e::fixtures::{new_workspace, route};
use mockplane_e2e::{ControlPlane, Node};
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

    async fn drop(self) {
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgres_feed_their_nodes_every_change() {
    let database = TempDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = tokio::join!(
        ControlPlane::start(dir.path(), "127.0.0.1:0", Some(&database.url)),
        ControlPlane::start(dir.path(), "127.0.0.1:0", Some(&database.url)),
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
    api_a
        .routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: "shared".into(),
            routes: vec![route("GET", "/from-a", 200, "a")],
            environment: String::new(),
            scenario: String::new(),
        })
        .await
        .unwrap();
    // A change made through replica A reaches the node on replica B.
    for node in [&node_a, &node_b] {
        node.wait_for("/w/shared/from-a", 200, |b| b == "a").await;
    }

    let mut api_b = b.api(&token).await;
    api_b
        .routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: "shared".into(),
            routes: vec![route("GET", "/from-b", 200, "b")],
            environment: String::new(),
            scenario: String::new(),
        })
        .await
        .unwrap();
    for node in [&node_a, &node_b] {
        node.wait_for("/w/shared/from-b", 200, |b| b == "b").await;
    }

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
