//! Row-level security on PostgreSQL, the second wall between tenants: with
//! one org's context a query reaches none of another org's rows, with one
//! workspace's context none of its sibling workspaces', and with no context
//! nothing at all — whatever its WHERE clause says. Tables are found in the
//! catalog, so a table added later without a policy fails here.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{Duration, Utc};
use mockplane_control_plane::store::{
    AccessGrant, NewApiKey, NewPrincipal, PrincipalKind, RoleRecord, SqlStore, Store, UsageCount,
    UsageReport, WorkspaceRef,
};
use mockplane_shared::governance::access::{OrgRole, Permission};
use mockplane_shared::{NewWorkspace, ResponseSpec, RouteSpec, Slug};
use sqlx::PgPool;
use sqlx::postgres::PgConnection;
use uuid::Uuid;

/// Tables that hold no tenant content: the fleet's revision counter, the
/// log of which workspace ids changed at which revision, sqlx's own.
const FLEET_TABLES: [&str; 6] = [
    "_sqlx_migrations",
    "config_revision",
    "change_log",
    "node_tokens",
    "data_plane_nodes",
    "control_plane_replicas",
];

fn route(path: &str) -> RouteSpec {
    RouteSpec::parse("", "GET", path, || {
        ResponseSpec::parse(200, vec![], Bytes::from_static(b"secret of acme"))
    })
    .unwrap()
}

fn slug(raw: &str) -> WorkspaceRef {
    WorkspaceRef::Slug(Slug::parse(raw).unwrap())
}

async fn tenant_tables(conn: &mut PgConnection) -> Vec<String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    tables
        .into_iter()
        .filter(|t| !FLEET_TABLES.contains(&t.as_str()))
        .collect()
}

/// Rows of every tenant table visible under the given settings, in one
/// transaction as the store runs its own.
async fn visible(
    pool: &PgPool,
    org: Option<Uuid>,
    workspace: Option<Uuid>,
    system: bool,
) -> BTreeMap<String, i64> {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "SELECT set_config('mockplane.org', $1, true), set_config('mockplane.workspace', $2, true), \
         set_config('mockplane.system', $3, true)",
    )
    .bind(org.map(|o| o.to_string()).unwrap_or_default())
    .bind(workspace.map(|w| w.to_string()).unwrap_or_default())
    .bind(if system { "on" } else { "off" })
    .execute(&mut *tx)
    .await
    .unwrap();
    let mut counts = BTreeMap::new();
    for table in tenant_tables(&mut tx).await {
        let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        counts.insert(table, count);
    }
    counts
}

/// Rows of tables with a `workspace_id` column (and `workspaces` itself)
/// that belong to `target`, under another workspace's context.
async fn rows_of_workspace(pool: &PgPool, org: Uuid, context: Uuid, target: Uuid) -> i64 {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query(
        "SELECT set_config('mockplane.org', $1, true), set_config('mockplane.workspace', $2, true)",
    )
    .bind(org.to_string())
    .bind(context.to_string())
    .execute(&mut *tx)
    .await
    .unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND column_name = 'workspace_id' ORDER BY table_name",
    )
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let mut total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workspaces WHERE id = $1")
        .bind(target)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    for table in tables
        .iter()
        .filter(|t| !FLEET_TABLES.contains(&t.as_str()))
    {
        let count: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM {table} WHERE workspace_id::text = $1::text"
        ))
        .bind(target)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        total += count;
    }
    total
}

#[sqlx::test(migrations = false)]
async fn another_tenants_context_sees_nothing(pool: PgPool) {
    let store = SqlStore::new(pool.clone());
    store.migrate().await.unwrap();
    let store: &dyn Store = &store;

    // acme has two workspaces with routes, people and tokens; globex has
    // nothing but itself.
    let acme = store.create_org("acme").await.unwrap();
    let globex = store.create_org("globex").await.unwrap();
    let one = store
        .create_workspace(acme, NewWorkspace::parse("one", "", "").unwrap(), None)
        .await
        .unwrap()
        .id;
    let two = store
        .create_workspace(acme, NewWorkspace::parse("two", "", "").unwrap(), None)
        .await
        .unwrap()
        .id;
    for ws in ["one", "two"] {
        store
            .create_routes(acme, &slug(ws), vec![route("/a"), route("/b")])
            .await
            .unwrap();
    }
    let person = store
        .create_principal(
            acme,
            NewPrincipal {
                kind: PrincipalKind::User,
                email: Some("dev@acme.test".into()),
                name: "dev".into(),
                org_role: OrgRole::Member,
                password_hash: Some("phc".into()),
                must_change_password: false,
            },
        )
        .await
        .unwrap();
    store
        .create_api_token(acme, person.id, "ci", "token-hash", None)
        .await
        .unwrap();
    store
        .set_membership(acme, &slug("one"), person.id, "dev", "editor")
        .await
        .unwrap();

    let default = Slug::parse("default").unwrap();
    store
        .create_version(acme, &slug("one"), &default, "first")
        .await
        .unwrap();
    store
        .deploy_version(
            acme,
            &slug("one"),
            &default,
            None,
            &Slug::parse("test").unwrap(),
        )
        .await
        .unwrap();
    store
        .create_persona(
            acme,
            &slug("two"),
            &Slug::parse("alice").unwrap(),
            &serde_json::json!({"name": "Alice"}),
        )
        .await
        .unwrap();
    store
        .create_role(
            acme,
            &RoleRecord {
                name: "qa".into(),
                description: String::new(),
                permissions: [Permission::ChaosConfig].into(),
                version: 0,
            },
        )
        .await
        .unwrap();
    store
        .set_policy(
            acme,
            &slug("one"),
            "prod",
            Permission::ChaosConfig,
            &["qa".to_owned()].into(),
        )
        .await
        .unwrap();
    let principal = store.find_token("token-hash").await.unwrap().unwrap();
    store
        .start_session(&principal, "refresh-hash", Utc::now() + Duration::hours(1))
        .await
        .unwrap();
    store
        .create_api_key(
            acme,
            &slug("two"),
            NewApiKey {
                environment: "dev".into(),
                name: "app".into(),
                key_hash: "key-hash".into(),
                hint: "mpk_abc".into(),
                expires_at: None,
                created_by: None,
                test: None,
            },
        )
        .await
        .unwrap();
    store
        .record_usage(&UsageReport {
            minute: 1_800_000_000 / 60 * 60,
            counts: vec![UsageCount {
                workspace_id: two,
                environment: "dev".into(),
                requests: 3,
                test_requests: 0,
                limited_requests: 0,
            }],
            key_uses: vec![],
        })
        .await
        .unwrap();
    store
        .record_access(
            acme,
            one,
            &AccessGrant {
                environment: "prod".into(),
                principal_id: person.id,
                reason: "incident 42".into(),
                token_id: "jti".into(),
                granted_at: Utc::now(),
                expires_at: Utc::now() + Duration::minutes(15),
            },
        )
        .await
        .unwrap();

    let mut conn = pool.acquire().await.unwrap();

    // The service's role cannot step around the policies, and every tenant
    // table has them, forced on its owner too.
    let bypass: bool = sqlx::query_scalar(
        "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert!(
        !bypass,
        "the test role must be subject to row-level security"
    );
    for table in tenant_tables(&mut conn).await {
        let (enabled, forced, policies): (bool, bool, i64) = sqlx::query_as(
            "SELECT c.relrowsecurity, c.relforcerowsecurity, \
             (SELECT COUNT(*) FROM pg_policies p WHERE p.schemaname = 'public' AND p.tablename = c.relname) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relname = $1",
        )
        .bind(&table)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert!(
            enabled && forced && policies > 0,
            "table {table} is not walled off by row-level security"
        );
    }

    let everything = visible(&pool, None, None, true).await;
    for table in [
        "workspaces",
        "routes",
        "environments",
        "principals",
        "api_tokens",
        "audit_events",
        "memberships",
        "deployments",
    ] {
        assert!(
            everything[table] > 0,
            "the set-up left {table} empty: {everything:?}"
        );
    }

    // No context: not a row, whatever the query asks for.
    let nothing = visible(&pool, None, None, false).await;
    assert!(
        nothing.values().all(|&n| n == 0),
        "rows visible without a context: {nothing:?}"
    );

    // Another org's context: its own org row and nothing of acme's.
    let from_globex = visible(&pool, Some(globex), None, false).await;
    for (table, count) in &from_globex {
        let expected = i64::from(table == "orgs");
        assert_eq!(*count, expected, "globex sees {count} rows of {table}");
    }

    // acme's context sees all of acme (which is everything but globex).
    let from_acme = visible(&pool, Some(acme), None, false).await;
    for (table, count) in &from_acme {
        let expected = everything[table] - i64::from(table == "orgs");
        assert_eq!(*count, expected, "acme sees {count} of its rows of {table}");
    }

    // Confined to workspace two, nothing of workspace one is in reach...
    assert_eq!(rows_of_workspace(&pool, acme, two, one).await, 0);
    // ...while two's own rows are.
    assert!(rows_of_workspace(&pool, acme, two, two).await > 0);
    assert!(rows_of_workspace(&pool, acme, one, one).await > 0);

    // Writes are held to the context too: globex changes none of acme's
    // rows, and acme cannot hand a row to globex.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('mockplane.org', $1, true)")
        .bind(globex.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let changed = sqlx::query("UPDATE routes SET body = 'defaced'")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(changed, 0);
    let deleted = sqlx::query("DELETE FROM workspaces")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(deleted, 0);
    tx.commit().await.unwrap();

    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('mockplane.org', $1, true)")
        .bind(acme.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let error = sqlx::query("UPDATE workspaces SET org_id = $1 WHERE id = $2")
        .bind(globex)
        .bind(one)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("row-level security"), "{error}");
    drop(tx);

    // And the store still reads acme's routes, untouched.
    let routes = store
        .list_routes(acme, &slug("one"), None, 10)
        .await
        .unwrap();
    assert_eq!(routes.items.len(), 2);
    assert!(
        routes
            .items
            .iter()
            .all(|r| r.spec.response.body.as_ref() == b"secret of acme")
    );

    // Deleting acme leaves none of its rows in any tenant table (found in
    // the catalog, so a table added later that the deletion misses fails
    // here) but its tombstone and its pruned audit chain.
    store
        .delete_org(acme, "acme's contract ended", None, None)
        .await
        .unwrap();
    let after = visible(&pool, None, None, true).await;
    for (table, count) in &after {
        let expected = match table.as_str() {
            "orgs" => 2,
            // The deletion's own event joins the chain.
            "audit_events" => everything["audit_events"] + 1,
            "audit_heads" => everything["audit_heads"],
            _ => 0,
        };
        assert_eq!(
            *count, expected,
            "{table} holds {count} rows after acme's deletion"
        );
    }
    // Only the deletion's event still says anything.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('mockplane.org', $1, true)")
        .bind(acme.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let unpruned: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_events WHERE pruned = 0")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    assert_eq!(unpruned, ["org.delete"]);
}
