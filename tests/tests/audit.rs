//! The audit trail through the real server: every mutating call leaves
//! exactly one event naming its request (every mutating method of the API,
//! found in its descriptors), refused and read-only calls leave none, and
//! editing an event in the database is detected.

use std::collections::BTreeMap;

use mockplane_e2e::fixtures::{new_workspace, route, set_reality};
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
        .update_environment(tagged("m10", set_reality("shop", "prod", 5)))
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

/// A request with `token` as its bearer.
fn authorized<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The newest event's sequence number.
async fn head(api: &mut Api) -> i64 {
    api.audit
        .list_audit_events(v1::ListAuditEventsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
        .first()
        .map_or(0, |e| e.seq)
}

/// Runs one call of `method` and checks that it left exactly one event;
/// records the method as covered.
macro_rules! one_event {
    ($covered:ident, $auditor:ident, $method:literal, $call:expr) => {{
        let before = head(&mut $auditor).await;
        let answer = $call
            .await
            .unwrap_or_else(|status| panic!("{}: {status:?}", $method))
            .into_inner();
        let after = head(&mut $auditor).await;
        assert_eq!(
            after - before,
            1,
            "{} left {} events",
            $method,
            after - before
        );
        assert!($covered.insert($method), "{} twice", $method);
        answer
    }};
}

/// Every mutating method of the API (all but reads), called once each in
/// a realistic order, leaves exactly one event; the list of methods comes
/// from the API's descriptors, so a new mutating method must be added here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutating_method_leaves_exactly_one_event() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start_with(dir.path(), "127.0.0.1:0", None, &["--allow-signup"])
        .await
        .unwrap();
    let token = plane.token.as_deref().unwrap();
    let mut api = plane.api(token).await;
    let mut auditor = plane.api(token).await;
    let mut anonymous = plane.api_with("unused", None).await;
    let mut covered = std::collections::BTreeSet::new();
    let ws = || "shop".to_owned();

    one_event!(
        covered,
        auditor,
        "WorkspaceService/CreateWorkspace",
        api.workspaces.create_workspace(new_workspace("shop"))
    );
    one_event!(
        covered,
        auditor,
        "WorkspaceService/UpdateWorkspace",
        api.workspaces.update_workspace(v1::UpdateWorkspaceRequest {
            workspace: ws(),
            patch: Some(v1::Workspace {
                description: "the shop".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["description".into()],
            }),
            ..Default::default()
        })
    );
    one_event!(
        covered,
        auditor,
        "EnvironmentService/CreateEnvironment",
        api.environments
            .create_environment(v1::CreateEnvironmentRequest {
                workspace: ws(),
                environment: Some(v1::Environment {
                    name: "sandbox".into(),
                    ..Default::default()
                }),
            })
    );
    one_event!(
        covered,
        auditor,
        "EnvironmentService/UpdateEnvironment",
        api.environments
            .update_environment(set_reality(&ws(), "sandbox", 2))
    );
    one_event!(
        covered,
        auditor,
        "EnvironmentService/DeleteEnvironment",
        api.environments
            .delete_environment(v1::DeleteEnvironmentRequest {
                workspace: ws(),
                environment: "sandbox".into(),
                ..Default::default()
            })
    );
    let routes = one_event!(
        covered,
        auditor,
        "RouteService/CreateRoutes",
        api.routes.create_routes(v1::CreateRoutesRequest {
            workspace: ws(),
            routes: vec![
                route("GET", "/orders", 200, "[]"),
                route("GET", "/carts", 200, "[]")
            ],
            ..Default::default()
        })
    );
    one_event!(
        covered,
        auditor,
        "RouteService/UpdateRoute",
        api.routes.update_route(v1::UpdateRouteRequest {
            workspace: ws(),
            route_id: routes.routes[0].id.clone(),
            patch: Some(route("GET", "/orders", 201, "[]")),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["response.status".into()],
            }),
            ..Default::default()
        })
    );
    one_event!(
        covered,
        auditor,
        "RouteService/DeleteRoutes",
        api.routes.delete_routes(v1::DeleteRoutesRequest {
            workspace: ws(),
            route_ids: vec![routes.routes[1].id.clone()],
            ..Default::default()
        })
    );
    one_event!(
        covered,
        auditor,
        "ScenarioService/CreateScenario",
        api.scenarios.create_scenario(v1::CreateScenarioRequest {
            workspace: ws(),
            scenario: Some(v1::Scenario {
                name: "checkout".into(),
                ..Default::default()
            }),
        })
    );
    one_event!(
        covered,
        auditor,
        "ScenarioService/UpdateScenario",
        api.scenarios.update_scenario(v1::UpdateScenarioRequest {
            workspace: ws(),
            scenario: "checkout".into(),
            patch: Some(v1::Scenario {
                description: "paying".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["description".into()],
            }),
            ..Default::default()
        })
    );
    one_event!(
        covered,
        auditor,
        "ScenarioService/ImportScenario",
        api.scenarios.import_scenario(v1::ImportScenarioRequest {
            workspace: ws(),
            scenario: Some(v1::Scenario {
                name: "imported".into(),
                ..Default::default()
            }),
            routes: vec![route("GET", "/imported", 200, "{}")],
        })
    );
    one_event!(
        covered,
        auditor,
        "ScenarioService/ImportOpenApi",
        api.scenarios.import_open_api(v1::ImportOpenApiRequest {
            workspace: ws(),
            scenario: Some(v1::Scenario {
                name: "petstore".into(),
                ..Default::default()
            }),
            document: r#"{"openapi":"3.0.0","info":{"title":"pets","version":"1"},
                "paths":{"/pets":{"get":{"responses":{"200":{"description":"ok"}}}}}}"#
                .into(),
        })
    );
    one_event!(
        covered,
        auditor,
        "ScenarioService/CreateVersion",
        api.scenarios.create_version(v1::CreateVersionRequest {
            workspace: ws(),
            scenario: "default".into(),
            ..Default::default()
        })
    );
    one_event!(
        covered,
        auditor,
        "ScenarioService/AdminDeployVersion",
        api.scenarios
            .admin_deploy_version(v1::AdminDeployVersionRequest {
                workspace: ws(),
                scenario: "default".into(),
                version: 1,
                environment: "test".into(),
            })
    );
    one_event!(
        covered,
        auditor,
        "ScenarioService/DeleteScenario",
        api.scenarios.delete_scenario(v1::DeleteScenarioRequest {
            workspace: ws(),
            scenario: "checkout".into(),
            ..Default::default()
        })
    );
    one_event!(
        covered,
        auditor,
        "PersonaService/CreatePersona",
        api.personas.create_persona(v1::CreatePersonaRequest {
            workspace: ws(),
            persona: Some(v1::Persona {
                name: "ada".into(),
                data: r#"{"name":"Ada"}"#.into(),
                ..Default::default()
            }),
        })
    );
    one_event!(
        covered,
        auditor,
        "PersonaService/UpdatePersona",
        api.personas.update_persona(v1::UpdatePersonaRequest {
            workspace: ws(),
            persona: "ada".into(),
            data: r#"{"name":"Ada L."}"#.into(),
            ..Default::default()
        })
    );
    one_event!(
        covered,
        auditor,
        "PersonaService/DeletePersona",
        api.personas.delete_persona(v1::DeletePersonaRequest {
            workspace: ws(),
            persona: "ada".into(),
            ..Default::default()
        })
    );
    one_event!(
        covered,
        auditor,
        "WorkspaceService/ResetState",
        api.workspaces
            .reset_state(v1::ResetStateRequest { workspace: ws() })
    );

    let mut keys = mockplane_proto::v1::api_key_service_client::ApiKeyServiceClient::new(
        plane.channel().await,
    );
    let key = one_event!(
        covered,
        auditor,
        "ApiKeyService/CreateApiKey",
        keys.create_api_key(authorized(
            token,
            v1::CreateApiKeyRequest {
                workspace: ws(),
                environment: "dev".into(),
                name: "app".into(),
                ..Default::default()
            }
        ))
    );
    one_event!(
        covered,
        auditor,
        "ApiKeyService/RevokeApiKey",
        keys.revoke_api_key(authorized(
            token,
            v1::RevokeApiKeyRequest {
                workspace: ws(),
                id: key.key.unwrap().id,
            }
        ))
    );

    one_event!(
        covered,
        auditor,
        "RoleService/CreateRole",
        api.roles.create_role(v1::CreateRoleRequest {
            role: Some(v1::Role {
                name: "qa".into(),
                permissions: vec!["environment.chaos".into()],
                ..Default::default()
            }),
        })
    );
    one_event!(
        covered,
        auditor,
        "RoleService/UpdateRole",
        api.roles.update_role(v1::UpdateRoleRequest {
            name: "qa".into(),
            permissions: vec!["environment.chaos".into(), "scenario.read".into()],
            ..Default::default()
        })
    );
    let user = one_event!(
        covered,
        auditor,
        "UserService/CreateUser",
        api.users.create_user(v1::CreateUserRequest {
            email: "qa@acme.io".into(),
            ..Default::default()
        })
    );
    let user_id = user.user.as_ref().unwrap().id.clone();
    one_event!(
        covered,
        auditor,
        "UserService/UpdatePrincipal",
        api.users.update_principal(v1::UpdatePrincipalRequest {
            id: user_id.clone(),
            name: "Quinn".into(),
            ..Default::default()
        })
    );
    one_event!(
        covered,
        auditor,
        "MemberService/SetMember",
        api.members.set_member(v1::SetMemberRequest {
            workspace: ws(),
            environment: "test".into(),
            principal_id: user_id.clone(),
            role: "qa".into(),
        })
    );
    one_event!(
        covered,
        auditor,
        "MemberService/RemoveMember",
        api.members.remove_member(v1::RemoveMemberRequest {
            workspace: ws(),
            environment: "test".into(),
            principal_id: user_id.clone(),
        })
    );
    one_event!(
        covered,
        auditor,
        "MemberService/SetPolicy",
        api.members.set_policy(v1::SetPolicyRequest {
            workspace: ws(),
            policy: Some(v1::Policy {
                environment: "test".into(),
                permission: "environment.chaos".into(),
                roles: vec!["qa".into()],
                ..Default::default()
            }),
        })
    );
    one_event!(
        covered,
        auditor,
        "MemberService/DeletePolicy",
        api.members.delete_policy(v1::DeletePolicyRequest {
            workspace: ws(),
            environment: "test".into(),
            permission: "environment.chaos".into(),
        })
    );
    one_event!(
        covered,
        auditor,
        "RoleService/DeleteRole",
        api.roles
            .delete_role(v1::DeleteRoleRequest { name: "qa".into() })
    );
    let bot = one_event!(
        covered,
        auditor,
        "UserService/CreateServiceAccount",
        api.users
            .create_service_account(v1::CreateServiceAccountRequest {
                name: "bot".into(),
                ..Default::default()
            })
    );
    let bot_token = one_event!(
        covered,
        auditor,
        "UserService/CreateApiToken",
        api.users.create_api_token(v1::CreateApiTokenRequest {
            principal_id: bot.id.clone(),
            name: "ci".into(),
            ..Default::default()
        })
    );
    // Promotions: the bot requests, the admin decides, executes and rolls
    // back. A pillar rule makes dev → test need an approval.
    let bot_id = bot.id.clone();
    for env in ["dev", "test"] {
        api.members
            .set_member(v1::SetMemberRequest {
                workspace: ws(),
                environment: env.into(),
                principal_id: bot_id.clone(),
                role: "editor".into(),
            })
            .await
            .unwrap();
    }
    let mut bot_api = plane.api(bot_token.secret.as_str()).await;
    api.scenarios
        .create_scenario(v1::CreateScenarioRequest {
            workspace: ws(),
            scenario: Some(v1::Scenario {
                name: "flows".into(),
                tags: vec!["[Contracts]".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    api.routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: ws(),
            routes: vec![route("GET", "/flows", 200, "[]")],
            scenario: "flows".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    api.scenarios
        .create_version(v1::CreateVersionRequest {
            workspace: ws(),
            scenario: "flows".into(),
            note: String::new(),
        })
        .await
        .unwrap();
    one_event!(
        covered,
        auditor,
        "PromotionService/SetApprovalRules",
        api.promotions
            .set_approval_rules(v1::SetApprovalRulesRequest {
                workspace: ws(),
                rules: Some(v1::ApprovalRules {
                    pillars: vec!["Contracts".into()],
                    ..Default::default()
                }),
                clear: false,
            })
    );
    let hook = one_event!(
        covered,
        auditor,
        "NotificationService/CreateNotificationChannel",
        api.notifications
            .create_notification_channel(v1::CreateNotificationChannelRequest {
                workspace: ws(),
                channel: Some(v1::NotificationChannel {
                    kind: "email".into(),
                    target: "qa@acme.io".into(),
                    ..Default::default()
                }),
            })
    );
    one_event!(
        covered,
        auditor,
        "NotificationService/DeleteNotificationChannel",
        api.notifications
            .delete_notification_channel(v1::DeleteNotificationChannelRequest {
                workspace: ws(),
                id: hook.channel.unwrap().id,
            })
    );
    let promote = || v1::CreatePromotionRequest {
        workspace: ws(),
        scenario: "flows".into(),
        from_environment: "dev".into(),
        to_environment: "test".into(),
        comment: "ready".into(),
        ..Default::default()
    };
    let refused = one_event!(
        covered,
        auditor,
        "PromotionService/CreatePromotion",
        bot_api.promotions.create_promotion(promote())
    );
    assert_eq!(refused.status, v1::PromotionStatus::Pending as i32);
    one_event!(
        covered,
        auditor,
        "PromotionService/RejectPromotion",
        api.promotions.reject_promotion(v1::DecidePromotionRequest {
            id: refused.id,
            comment: "not yet".into(),
        })
    );
    let promotion = bot_api
        .promotions
        .create_promotion(promote())
        .await
        .unwrap()
        .into_inner();
    one_event!(
        covered,
        auditor,
        "PromotionService/ReportCheck",
        api.promotions.report_check(v1::ReportCheckRequest {
            id: promotion.id.clone(),
            name: "ci".into(),
            status: "passed".into(),
            ..Default::default()
        })
    );
    one_event!(
        covered,
        auditor,
        "PromotionService/ApprovePromotion",
        api.promotions
            .approve_promotion(v1::DecidePromotionRequest {
                id: promotion.id.clone(),
                comment: String::new(),
            })
    );
    let executed = one_event!(
        covered,
        auditor,
        "PromotionService/ExecutePromotion",
        api.promotions
            .execute_promotion(v1::ExecutePromotionRequest {
                id: promotion.id.clone(),
            })
    );
    assert_eq!(executed.status, v1::PromotionStatus::Completed as i32);
    one_event!(
        covered,
        auditor,
        "PromotionService/RollbackPromotion",
        api.promotions
            .rollback_promotion(v1::RollbackPromotionRequest {
                id: promotion.id,
                reason: "wrong version".into(),
            })
    );

    one_event!(
        covered,
        auditor,
        "UserService/RevokeApiToken",
        api.users.revoke_api_token(v1::RevokeApiTokenRequest {
            id: bot_token.token.clone().unwrap().id,
        })
    );
    one_event!(
        covered,
        auditor,
        "UserService/DeletePrincipal",
        api.users
            .delete_principal(v1::DeletePrincipalRequest { id: bot.id })
    );
    one_event!(
        covered,
        auditor,
        "AuthService/IssueEnvironmentToken",
        api.auth
            .issue_environment_token(v1::IssueEnvironmentTokenRequest {
                workspace: ws(),
                environment: "prod".into(),
                reason: "look at prod for INC-9".into(),
                ttl_seconds: 0,
            })
    );

    // The new user signs in, replaces the one-time password, signs in
    // again, refreshes and logs out.
    let first = one_event!(
        covered,
        auditor,
        "AuthService/Login",
        anonymous.auth.login(v1::LoginRequest {
            email: "qa@acme.io".into(),
            password: user.one_time_password.clone(),
        })
    );
    let mut quinn = plane.api_with(&first.access_token, None).await;
    one_event!(
        covered,
        auditor,
        "AuthService/ChangePassword",
        quinn.auth.change_password(v1::ChangePasswordRequest {
            current_password: user.one_time_password.clone(),
            new_password: "a long enough passphrase".into(),
        })
    );
    let second = anonymous
        .auth
        .login(v1::LoginRequest {
            email: "qa@acme.io".into(),
            password: "a long enough passphrase".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let renewed = one_event!(
        covered,
        auditor,
        "AuthService/Refresh",
        anonymous.auth.refresh(v1::RefreshRequest {
            refresh_token: second.refresh_token,
        })
    );
    one_event!(
        covered,
        auditor,
        "AuthService/Logout",
        anonymous.auth.logout(v1::LogoutRequest {
            refresh_token: renewed.refresh_token,
        })
    );

    one_event!(
        covered,
        auditor,
        "AuditService/PruneAuditEvents",
        api.audit.prune_audit_events(v1::PruneAuditEventsRequest {
            retention_days: [("dev".to_owned(), 30)].into(),
            dry_run: false,
        })
    );
    one_event!(
        covered,
        auditor,
        "OrgService/CreateOrg",
        api.orgs.create_org(v1::CreateOrgRequest {
            name: "globex".into(),
            display_name: String::new(),
            owner_email: "owner@globex.io".into(),
        })
    );
    one_event!(
        covered,
        auditor,
        "OrgService/UpdateOrg",
        api.orgs.update_org(v1::UpdateOrgRequest {
            patch: Some(v1::Org {
                display_name: "Acme".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
            ..Default::default()
        })
    );
    // A sign-up's one event is the first of the new org's trail (the
    // owner's login, to read it, the second).
    anonymous
        .orgs
        .sign_up(v1::SignUpRequest {
            name: "umbrella".into(),
            display_name: String::new(),
            email: "eve@umbrella.io".into(),
            password: "a long enough passphrase".into(),
        })
        .await
        .unwrap();
    let eve = anonymous
        .auth
        .login(v1::LoginRequest {
            email: "eve@umbrella.io".into(),
            password: "a long enough passphrase".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let actions: Vec<String> = events(&mut plane.api_with(&eve.access_token, None).await)
        .await
        .into_iter()
        .rev()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["org.create", "session.start"]);
    covered.insert("OrgService/SignUp");
    one_event!(
        covered,
        auditor,
        "OrgService/DeleteOrg",
        api.orgs.delete_org(v1::DeleteOrgRequest {
            org: "globex".into(),
            reason: "made only to be deleted".into(),
            etag: String::new(),
        })
    );
    one_event!(
        covered,
        auditor,
        "WorkspaceService/DeleteWorkspace",
        api.workspaces.delete_workspace(v1::DeleteWorkspaceRequest {
            workspace: ws(),
            ..Default::default()
        })
    );

    let reads = ["Get", "List", "Verify", "WhoAmI", "Export", "Preview"];
    let mutating: std::collections::BTreeSet<String> = mockplane_e2e::api_methods()
        .into_iter()
        .map(|path| path.trim_start_matches("/mockplane.v1.").to_owned())
        .filter(|m| {
            let name = m.split_once('/').unwrap().1;
            !reads.iter().any(|read| name.starts_with(read))
        })
        .collect();
    let covered: std::collections::BTreeSet<String> =
        covered.into_iter().map(str::to_owned).collect();
    assert_eq!(
        covered, mutating,
        "every mutating method (from the descriptors) is covered"
    );
}
