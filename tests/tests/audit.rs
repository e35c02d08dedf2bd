//! The audit trail through the real server: every mutating call leaves
//! exactly one event naming its request, refused and read-only calls leave
//! none, and editing an event in the database is detected.

use std::collections::BTreeMap;

use mockplane_e2e::fixtures::{new_workspace, route};
use mockplane_e2e::{Api, ControlPlane};
use mockplane_proto::v1;
use tonic::Code;

/// A request carrying `x-request-id: id`.
fn tagged<T>(id: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-request-id", id.parse().unwrap());
    request
}

async fn events(api: &mut Api) -> Vec<v1::AuditEvent> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = api
            .audit
            .list_audit_events(v1::ListAuditEventsRequest {
                page_size: 7,
                page_token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.events);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_leaves_one_chained_event_and_tampering_shows() {
    let dir = tempfile::tempdir().unwrap();
    // It tampers with the SQLite file by hand below.
    let sqlite = format!("sqlite://{}", dir.path().join("control-plane.db").display());
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", Some(&sqlite))
        .await
        .unwrap();
    let mut api = plane.api(plane.token.as_deref().unwrap()).await;
    let before = events(&mut api).await.len();

    // Each mutating call, tagged with its own request id.
    let mut expected: BTreeMap<&str, &str> = BTreeMap::new();
    api.workspaces
        .create_workspace(tagged("m1", new_workspace("shop")))
        .await
        .unwrap();
    expected.insert("m1", "workspace.create");
    let created = api
        .routes
        .create_routes(tagged(
            "m2",
            v1::CreateRoutesRequest {
                workspace: "shop".into(),
                routes: vec![route("GET", "/orders", 200, "[]")],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    expected.insert("m2", "route.create");
    api.routes
        .update_route(tagged(
            "m3",
            v1::UpdateRouteRequest {
                workspace: "shop".into(),
                route_id: created.routes[0].id.clone(),
                patch: Some(route("GET", "/orders", 201, "[]")),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["response.status".into()],
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    expected.insert("m3", "route.update");
    api.scenarios
        .create_version(tagged(
            "m4",
            v1::CreateVersionRequest {
                workspace: "shop".into(),
                scenario: "default".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    expected.insert("m4", "scenario.version");
    api.personas
        .create_persona(tagged(
            "m5",
            v1::CreatePersonaRequest {
                workspace: "shop".into(),
                persona: Some(v1::Persona {
                    name: "default".into(),
                    data: r#"{"user":{"name":"Ada"}}"#.into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();
    expected.insert("m5", "persona.create");
    api.roles
        .create_role(tagged(
            "m6",
            v1::CreateRoleRequest {
                role: Some(v1::Role {
                    name: "qa".into(),
                    permissions: vec!["environment.chaos".into()],
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();
    expected.insert("m6", "role.create");
    let user = api
        .users
        .create_user(tagged(
            "m7",
            v1::CreateUserRequest {
                email: "qa@acme.io".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    expected.insert("m7", "user.create");
    api.members
        .set_member(tagged(
            "m8",
            v1::SetMemberRequest {
                workspace: "shop".into(),
                environment: "test".into(),
                principal_id: user.id.clone(),
                role: "qa".into(),
            },
        ))
        .await
        .unwrap();
    expected.insert("m8", "member.set");
    let prod = api
        .auth
        .issue_environment_token(tagged(
            "m9",
            v1::IssueEnvironmentTokenRequest {
                workspace: "shop".into(),
                environment: "prod".into(),
                reason: "raise prod latency for INC-7".into(),
                ttl_seconds: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .token;
    expected.insert("m9", "environment.access");
    let mut prod_api = plane.api_with(&prod, None).await;
    prod_api
        .environments
        .update_environment(tagged(
            "m10",
            v1::UpdateEnvironmentRequest {
                workspace: "shop".into(),
                environment: "prod".into(),
                patch: Some(v1::Environment {
                    settings: Some(v1::EnvironmentSettings {
                        reality_level: Some(5),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["settings.reality_level".into()],
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    expected.insert("m10", "environment.update");
    api.workspaces
        .delete_workspace(tagged(
            "m11",
            v1::DeleteWorkspaceRequest {
                workspace: "shop".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    expected.insert("m11", "workspace.delete");

    // Reads and refused calls leave nothing.
    api.workspaces
        .list_workspaces(tagged("r1", v1::ListWorkspacesRequest::default()))
        .await
        .unwrap();
    let refused = api
        .workspaces
        .get_workspace(tagged(
            "r2",
            v1::GetWorkspaceRequest {
                workspace: "shop".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    let refused = prod_api
        .workspaces
        .create_workspace(tagged("r3", new_workspace("other")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    let all = events(&mut api).await;
    let mine: Vec<&v1::AuditEvent> = all
        .iter()
        .filter(|e| e.request_id.starts_with('m') || e.request_id.starts_with('r'))
        .collect();
    let mut seen: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for event in &mine {
        seen.entry(event.request_id.as_str())
            .or_default()
            .push(event.action.as_str());
    }
    let expected: BTreeMap<&str, Vec<&str>> = expected
        .into_iter()
        .map(|(id, action)| (id, vec![action]))
        .collect();
    assert_eq!(seen, expected, "exactly one event per mutating call");
    assert_eq!(all.len(), before + 11);
    // Newest first, consecutive, chained.
    for pair in all.windows(2) {
        assert_eq!(pair[0].seq, pair[1].seq + 1);
        assert_eq!(pair[0].prev_hash, pair[1].hash);
    }
    let prod_change = all.iter().find(|e| e.request_id == "m10").unwrap();
    assert_eq!(prod_change.environment, "prod");
    assert_eq!(prod_change.credential, "environment_token");
    assert_eq!(prod_change.actor, "admin@localhost");
    assert!(
        prod_change.actor_id.starts_with("user:"),
        "{}",
        prod_change.actor_id
    );
    assert_eq!(prod_change.reason, "raise prod latency for INC-7");
    assert!(
        prod_change.summary.contains("before"),
        "{}",
        prod_change.summary
    );
    let deleted = all.iter().find(|e| e.request_id == "m11").unwrap();
    assert_eq!(deleted.reason, "end-to-end test run");

    // Filters.
    let routes = api
        .audit
        .list_audit_events(v1::ListAuditEventsRequest {
            action: "route.".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(routes.len(), 2);

    let verified = api
        .audit
        .verify_audit_chain(v1::VerifyAuditChainRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(verified.ok, "{}", verified.problem);
    assert_eq!(verified.events, all.len() as u64);

    // Only org admins read the trail.
    let token = api
        .users
        .create_api_token(v1::CreateApiTokenRequest {
            principal_id: user.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    let status = plane
        .api(&token)
        .await
        .audit
        .list_audit_events(v1::ListAuditEventsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // Retention: a dry run reports without changing anything, and prod is
    // protected.
    let dry = api
        .audit
        .prune_audit_events(v1::PruneAuditEventsRequest {
            retention_days: [("prod".to_owned(), 1), ("test".to_owned(), 1)].into(),
            dry_run: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry.protected, ["prod"]);
    assert!(dry.dry_run);

    // Someone edits an event in the database by hand (getting past the
    // append-only trigger first).
    let target = all.iter().find(|e| e.request_id == "m3").unwrap().seq;
    let url = format!("sqlite://{}", dir.path().join("control-plane.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let error = sqlx::query("UPDATE audit_events SET summary = '{}' WHERE seq = ?")
        .bind(target)
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("append-only"), "{error}");
    sqlx::query("DROP TRIGGER audit_events_prune_only")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_events SET summary = '{\"after\":\"nothing to see\"}' WHERE seq = ?")
        .bind(target)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let verified = api
        .audit
        .verify_audit_chain(v1::VerifyAuditChainRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!verified.ok);
    assert_eq!(verified.broken_seq, target);
    assert!(verified.problem.contains("changed"), "{}", verified.problem);
}
