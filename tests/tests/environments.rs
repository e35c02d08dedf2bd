//! Environments end to end: every workspace gets dev → test → prod, each
//! serves its own routes with its own realism, a request picks one with
//! `x-mockplane-env`, and what later environments serve cannot be edited
//! directly.

use mockplane_e2e::fixtures::{new_workspace, route, set_reality};
use mockplane_e2e::{ControlPlane, Node, eventually};
use mockplane_proto::v1;
use tonic::Code;

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environments_serve_apart_and_later_ones_are_not_edited_directly() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let node = Node::start(dir.path(), &plane.url()).await.unwrap();
    let mut api = plane.api(plane.token.as_deref().unwrap()).await;

    let created = api
        .workspaces
        .create_workspace(new_workspace("shop"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.promotion_chain, ["dev", "test", "prod"]);
    assert_eq!(created.active_environment, "dev");
    let listed = api
        .environments
        .list_environments(v1::ListEnvironmentsRequest {
            workspace: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .environments;
    let summary: Vec<(&str, u32, bool, bool)> = listed
        .iter()
        .map(|e| {
            (
                e.name.as_str(),
                e.chain_position,
                e.working_copies,
                e.active,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("dev", 1, true, true),
            ("test", 2, false, false),
            ("prod", 3, false, false)
        ]
    );
    let prod = &listed[2];
    let effective = prod.effective.as_ref().unwrap();
    assert_eq!(effective.reality_level, Some(4));
    assert_eq!(effective.reason_required, Some(true));
    assert!(effective.latency.is_some() && effective.chaos.is_some());

    api.routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: "shop".into(),
            routes: vec![route("GET", "/items", 200, "items")],
            environment: "dev".into(),
            scenario: String::new(),
        })
        .await
        .unwrap();
    node.wait_for("/w/shop/items", 200, |b| b == "items").await;
    let dev = node
        .send_with("GET", "/w/shop/items", &[("x-mockplane-env", "dev")], "")
        .await
        .unwrap();
    assert_eq!(dev.body, "items");
    let test = node
        .send_with("GET", "/w/shop/items", &[("x-mockplane-env", "test")], "")
        .await
        .unwrap();
    assert_eq!(
        (test.status, test.error_code().as_str()),
        (404, "route_not_found"),
        "nothing of dev is served by test"
    );
    let nowhere = node
        .send_with("GET", "/w/shop/items", &[("x-mockplane-env", "qa")], "")
        .await
        .unwrap();
    assert_eq!(
        (nowhere.status, nowhere.error_code().as_str()),
        (404, "environment_not_found")
    );
    assert!(nowhere.body.contains("dev, test, prod"), "{}", nowhere.body);

    // What test and prod serve changes only through promotions.
    let refused = api
        .routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: "shop".into(),
            routes: vec![route("GET", "/direct", 200, "direct")],
            environment: "prod".into(),
            scenario: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("dev → test → prod"),
        "{}",
        refused.message()
    );
    let unknown = api
        .routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: "shop".into(),
            routes: vec![route("GET", "/direct", 200, "direct")],
            environment: "staging".into(),
            scenario: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    // Dev's chaos, set through its settings, reaches the node; clearing it
    // makes dev inherit again (reality 1: none).
    api.environments
        .update_environment(v1::UpdateEnvironmentRequest {
            workspace: "shop".into(),
            environment: "dev".into(),
            patch: Some(v1::Environment {
                settings: Some(v1::EnvironmentSettings {
                    chaos: Some(v1::Chaos {
                        rate: 1.0,
                        statuses: vec![v1::WeightedStatus {
                            status: 418,
                            weight: 1,
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_mask: mask(&["settings.chaos"]),
            etag: String::new(),
        })
        .await
        .unwrap();
    let teapot = node
        .wait_for("/w/shop/items", 418, |b| b.contains("\"chaos\""))
        .await;
    assert!(teapot.body.contains("(dev)"), "{}", teapot.body);
    let cleared = api
        .environments
        .update_environment(v1::UpdateEnvironmentRequest {
            workspace: "shop".into(),
            environment: "dev".into(),
            patch: Some(v1::Environment::default()),
            update_mask: mask(&["settings.chaos"]),
            etag: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cleared.settings.unwrap().chaos.is_none());
    node.wait_for("/w/shop/items", 200, |b| b == "items").await;

    // A sandbox off the chain, made active: requests without a header go
    // there, and it serves nothing of dev.
    api.environments
        .create_environment(v1::CreateEnvironmentRequest {
            workspace: "shop".into(),
            environment: Some(v1::Environment {
                name: "sandbox".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let updated = api
        .workspaces
        .update_workspace(v1::UpdateWorkspaceRequest {
            workspace: "shop".into(),
            patch: Some(v1::Workspace {
                active_environment: "sandbox".into(),
                ..Default::default()
            }),
            update_mask: mask(&["active_environment"]),
            etag: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.environments, ["dev", "test", "prod", "sandbox"]);
    eventually("the sandbox to answer by default", || async {
        let reply = node.get("/w/shop/items").await.ok()?;
        (reply.status == 404 && reply.error_code() == "route_not_found").then_some(())
    })
    .await;
    let still_dev = node
        .send_with("GET", "/w/shop/items", &[("x-mockplane-env", "dev")], "")
        .await
        .unwrap();
    assert_eq!(still_dev.body, "items");

    // Bad requests say what is wrong and change nothing.
    let bad_level = api
        .environments
        .create_environment(v1::CreateEnvironmentRequest {
            workspace: "shop".into(),
            environment: Some(v1::Environment {
                name: "loud".into(),
                settings: Some(v1::EnvironmentSettings {
                    reality_level: Some(9),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_level.code(), Code::InvalidArgument);
    assert!(
        bad_level
            .message()
            .contains("environment.settings.reality_level"),
        "{}",
        bad_level.message()
    );
    let active_delete = api
        .environments
        .delete_environment(v1::DeleteEnvironmentRequest {
            workspace: "shop".into(),
            environment: "sandbox".into(),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(active_delete.code(), Code::FailedPrecondition);
    let bad_chain = api
        .workspaces
        .update_workspace(v1::UpdateWorkspaceRequest {
            workspace: "shop".into(),
            patch: Some(v1::Workspace {
                promotion_chain: vec!["dev".into(), "dev".into()],
                ..Default::default()
            }),
            update_mask: mask(&["promotion_chain"]),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_chain.code(), Code::InvalidArgument);
    assert!(
        bad_chain.message().contains("promotion_chain[1]"),
        "{}",
        bad_chain.message()
    );
    let bad_mask = api
        .environments
        .update_environment(v1::UpdateEnvironmentRequest {
            workspace: "shop".into(),
            environment: "dev".into(),
            patch: Some(v1::Environment::default()),
            update_mask: mask(&["settings.colour"]),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_mask.code(), Code::InvalidArgument);
    assert!(bad_mask.message().contains("settings.colour"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_freeze_the_working_copy_and_serve_where_deployed() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let node = Node::start(dir.path(), &plane.url()).await.unwrap();
    let mut api = plane.api(plane.token.as_deref().unwrap()).await;
    api.workspaces
        .create_workspace(new_workspace("pay"))
        .await
        .unwrap();
    let scenario = api
        .scenarios
        .create_scenario(v1::CreateScenarioRequest {
            workspace: "pay".into(),
            scenario: Some(v1::Scenario {
                name: "checkout".into(),
                tags: vec!["[cloud][Contracts][Reality]".into(), "smoke".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scenario.tags, ["[Cloud][Contracts][Reality]", "smoke"]);
    assert_eq!(scenario.pillars, ["Reality", "Contracts", "Cloud"]);
    let bad_tag = api
        .scenarios
        .create_scenario(v1::CreateScenarioRequest {
            workspace: "pay".into(),
            scenario: Some(v1::Scenario {
                name: "x".into(),
                tags: vec!["ok".into(), "[Weather]".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_tag.code(), Code::InvalidArgument);
    assert!(
        bad_tag.message().contains("scenario.tags[1]"),
        "{}",
        bad_tag.message()
    );

    let added = api
        .routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: "pay".into(),
            routes: vec![route("GET", "/cart", 200, "v1")],
            environment: String::new(),
            scenario: "checkout".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .routes;
    assert_eq!(added[0].scenario, "checkout");
    let version = api
        .scenarios
        .create_version(v1::CreateVersionRequest {
            workspace: "pay".into(),
            scenario: "checkout".into(),
            note: "first cut".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((version.number, version.route_count), (1, 1));
    let deployed = api
        .scenarios
        .admin_deploy_version(v1::AdminDeployVersionRequest {
            workspace: "pay".into(),
            scenario: "checkout".into(),
            version: 0,
            environment: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (deployed.environment.as_str(), deployed.version),
        ("test", 1)
    );
    // Test's reality level 3 injects errors into 1% of requests; level 1
    // makes the answers below certain.
    api.environments
        .update_environment(set_reality("pay", "test", 1))
        .await
        .unwrap();

    // The working copy changes; test keeps serving version 1.
    api.routes
        .update_route(v1::UpdateRouteRequest {
            workspace: "pay".into(),
            route_id: added[0].id.clone(),
            patch: Some(route("GET", "/cart", 200, "v2")),
            update_mask: mask(&["response.body"]),
            etag: String::new(),
            environment: String::new(),
        })
        .await
        .unwrap();
    node.wait_for("/w/pay/cart", 200, |b| b == "v2").await;
    let test = node
        .send_with("GET", "/w/pay/cart", &[("x-mockplane-env", "test")], "")
        .await
        .unwrap();
    assert_eq!((test.status, test.body.as_str()), (200, "v1"));
    let prod = node
        .send_with("GET", "/w/pay/cart", &[("x-mockplane-env", "prod")], "")
        .await
        .unwrap();
    assert_eq!(prod.error_code(), "route_not_found");

    let frozen = api
        .scenarios
        .get_version(v1::GetVersionRequest {
            workspace: "pay".into(),
            scenario: "checkout".into(),
            version: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(frozen.routes[0].response.as_ref().unwrap().body, b"v1");
    let to_dev = api
        .scenarios
        .admin_deploy_version(v1::AdminDeployVersionRequest {
            workspace: "pay".into(),
            scenario: "checkout".into(),
            version: 1,
            environment: "dev".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(to_dev.code(), Code::FailedPrecondition);
    let deleted = api
        .scenarios
        .delete_scenario(v1::DeleteScenarioRequest {
            workspace: "pay".into(),
            scenario: "checkout".into(),
            etag: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(deleted.code(), Code::FailedPrecondition);
    assert!(deleted.message().contains("test (version 1)"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_answer_as_the_persona_a_request_names() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let node = Node::start(dir.path(), &plane.url()).await.unwrap();
    let mut api = plane.api(plane.token.as_deref().unwrap()).await;
    api.workspaces
        .create_workspace(new_workspace("bank"))
        .await
        .unwrap();
    for (name, user) in [("default", "Guest"), ("ada", "Ada Lovelace")] {
        api.personas
            .create_persona(v1::CreatePersonaRequest {
                workspace: "bank".into(),
                persona: Some(v1::Persona {
                    name: name.into(),
                    data: format!(r#"{{"user":{{"name":"{user}"}}}}"#),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    let bad = api
        .personas
        .create_persona(v1::CreatePersonaRequest {
            workspace: "bank".into(),
            persona: Some(v1::Persona {
                name: "broken".into(),
                data: "{not json".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("persona.data"), "{}", bad.message());

    let mut me = route("GET", "/me", 200, "hello {{persona.user.name}}");
    me.response.as_mut().unwrap().template = true;
    api.routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: "bank".into(),
            routes: vec![me],
            environment: String::new(),
            scenario: String::new(),
        })
        .await
        .unwrap();
    node.wait_for("/w/bank/me", 200, |b| b == "hello Guest")
        .await;
    let ada = node
        .send_with("GET", "/w/bank/me", &[("x-mockplane-persona", "ada")], "")
        .await
        .unwrap();
    assert_eq!(ada.body, "hello Ada Lovelace");

    let updated = api
        .personas
        .update_persona(v1::UpdatePersonaRequest {
            workspace: "bank".into(),
            persona: "ada".into(),
            data: r#"{"user":{"name":"Countess Ada"}}"#.into(),
            etag: "1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.version, 2);
    eventually("the new persona version to be served", || async {
        let reply = node
            .send_with("GET", "/w/bank/me", &[("x-mockplane-persona", "ada")], "")
            .await
            .ok()?;
        (reply.body == "hello Countess Ada").then_some(())
    })
    .await;
    let unknown = node
        .send_with("GET", "/w/bank/me", &[("x-mockplane-persona", "bob")], "")
        .await
        .unwrap();
    assert_eq!(
        (unknown.status, unknown.error_code().as_str()),
        (404, "persona_not_found")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_routes_move_their_machines_until_reset() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let node = Node::start(dir.path(), &plane.url()).await.unwrap();
    let mut api = plane.api(plane.token.as_deref().unwrap()).await;
    api.workspaces
        .create_workspace(new_workspace("flow"))
        .await
        .unwrap();
    let stateful = |method: &str, body: &str, when: &str, set: &str| {
        let mut route = route(method, "/orders/{id}", 200, body);
        route.state = Some(v1::RouteState {
            machine: "order".into(),
            when: when.into(),
            set: set.into(),
            key: "param:id".into(),
        });
        route
    };
    let created = api
        .routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: "flow".into(),
            routes: vec![
                stateful("GET", "new", "started", ""),
                stateful("GET", "paid", "paid", ""),
                stateful("POST", "paying", "", "paid"),
            ],
            environment: String::new(),
            scenario: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.routes[1].state.as_ref().unwrap().when, "paid");
    let bad = api
        .routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: "flow".into(),
            routes: vec![{
                let mut route = stateful("PUT", "x", "started", "");
                route.state.as_mut().unwrap().key = "param:nope".into();
                route
            }],
            environment: String::new(),
            scenario: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(
        bad.message().contains("routes[0].state.key"),
        "{}",
        bad.message()
    );

    node.wait_for("/w/flow/orders/1", 200, |b| b == "new").await;
    assert_eq!(
        node.send("POST", "/w/flow/orders/1").await.unwrap().body,
        "paying"
    );
    assert_eq!(node.get("/w/flow/orders/1").await.unwrap().body, "paid");
    assert_eq!(
        node.get("/w/flow/orders/2").await.unwrap().body,
        "new",
        "order 2 has its own machine"
    );
    let state = node.ops_get("/state/flow").await.unwrap().json();
    assert_eq!(
        state["machines"],
        serde_json::json!([{ "environment": "dev", "machine": "order", "key": "1", "state": "paid" }])
    );

    let reset = api
        .workspaces
        .reset_state(v1::ResetStateRequest {
            workspace: "flow".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reset.state_epoch, 1);
    node.wait_for("/w/flow/orders/1", 200, |b| b == "new").await;
    assert_eq!(
        node.ops_get("/state/flow").await.unwrap().json()["machines"],
        serde_json::json!([])
    );
}
