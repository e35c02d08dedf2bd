use mockplane_shared::model::persona::PersonaConfig;
use mockplane_shared::{ConfigRoute, ResponseSpec, RouteSpec, Slug, WorkspaceConfig};
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::table::Update;

fn table() -> RoutingTable {
    let config = WorkspaceConfig::single(
        Uuid::new_v4(),
        Slug::parse("demo").unwrap(),
        vec![ConfigRoute {
            id: Uuid::new_v4(),
            spec: RouteSpec::parse("", "GET", "/users/{id}", || {
                ResponseSpec::parse(
                    200,
                    vec![("content-type".into(), "application/json".into())],
                    Bytes::from_static(b"{\"id\":1}"),
                )
            })
            .unwrap(),
        }],
    );
    let update = Update {
        revision: 1,
        full: true,
        upserts: vec![mockplane_proto::resource::encode(&config, 1)],
        ..Default::default()
    };
    RoutingTable::default().apply(&update).0
}

fn ask(table: &RoutingTable, method: &http::Method, path: &str) -> Answer {
    let (path, query) = match path.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (path, None),
    };
    let headers = http::HeaderMap::new();
    answer(
        table,
        method,
        path,
        &RequestParts::new(query, &headers, b""),
    )
}

fn error_code(answer: &Answer) -> String {
    let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    body["error"]["code"].as_str().unwrap().to_owned()
}

#[test]
fn routes_by_workspace_and_route() {
    let table = table();
    let hit = ask(&table, &http::Method::GET, "/w/demo/users/7");
    assert_eq!(hit.outcome, Outcome::Matched);
    assert_eq!(hit.header.status, 200);
    assert_eq!(&hit.body[..], b"{\"id\":1}");
    assert_eq!(hit.header.headers["content-length"], "8");
    let long = ask(&table, &http::Method::GET, "/workspace/demo/users/7");
    assert_eq!(long.outcome, Outcome::Matched);
}

#[test]
fn each_miss_has_its_own_code() {
    let table = table();
    let cases = [
        ("/widgets/1", Outcome::NoWorkspace, 404, "no_workspace"),
        (
            "/w/idgets/1",
            Outcome::UnknownWorkspace,
            404,
            "workspace_not_found",
        ),
        ("/w/demo/users", Outcome::NoRoute, 404, "route_not_found"),
    ];
    for (path, outcome, status, code) in cases {
        let miss = ask(&table, &http::Method::GET, path);
        assert_eq!(miss.outcome, outcome, "{path}");
        assert_eq!(miss.header.status, status);
        assert_eq!(error_code(&miss), code);
        assert_eq!(miss.header.headers["content-type"], "application/json");
    }
    let not_allowed = ask(&table, &http::Method::POST, "/w/demo/users/7");
    assert_eq!(not_allowed.header.status, 405);
    assert_eq!(not_allowed.header.headers["allow"], "GET");
    let upper = ask(&table, &http::Method::GET, "/w/Demo/users/7");
    let body: serde_json::Value = serde_json::from_slice(&upper.body).unwrap();
    assert!(body["error"]["hint"].as_str().unwrap().contains("'demo'"));
    let near = ask(&table, &http::Method::GET, "/w/demo/users/7/x");
    let body: serde_json::Value = serde_json::from_slice(&near.body).unwrap();
    assert_eq!(
        body["error"]["hint"],
        "the closest route is GET /users/{id}"
    );
}

#[test]
fn matchers_choose_the_route_and_misses_explain_why() {
    let route =
        |path: &str, method: &str, matcher: serde_json::Value, body: &'static str| ConfigRoute {
            id: Uuid::new_v4(),
            spec: RouteSpec::parse("", method, path, || {
                ResponseSpec::parse(200, vec![], Bytes::from_static(body.as_bytes()))
            })
            .and_then(|spec| spec.matching(serde_json::from_value(matcher).unwrap(), 0))
            .unwrap(),
        };
    let config = WorkspaceConfig::single(
        Uuid::new_v4(),
        Slug::parse("shop").unwrap(),
        vec![
            route("/users/{id:int}", "GET", json!({}), "plain"),
            route(
                "/users/{id:int}",
                "GET",
                json!({ "headers": [{ "name": "x-tenant", "equals": "acme" }] }),
                "acme",
            ),
            route(
                "/orders",
                "POST",
                json!({ "body": [{ "jsonPath": "$.kind", "equals": "rush" }] }),
                "rush",
            ),
        ],
    );
    let update = Update {
        revision: 1,
        full: true,
        upserts: vec![mockplane_proto::resource::encode(&config, 1)],
        ..Default::default()
    };
    let table = RoutingTable::default().apply(&update).0;
    assert!(
        table
            .workspace("shop")
            .unwrap()
            .environment(None)
            .unwrap()
            .table
            .needs_body
    );

    let mut headers = http::HeaderMap::new();
    let get = |headers: &http::HeaderMap, path: &str| {
        answer(
            &table,
            &http::Method::GET,
            path,
            &RequestParts::new(None, headers, b""),
        )
    };
    assert_eq!(&get(&headers, "/w/shop/users/1").body[..], b"plain");
    headers.insert("x-tenant", http::HeaderValue::from_static("acme"));
    assert_eq!(&get(&headers, "/w/shop/users/1").body[..], b"acme");
    assert_eq!(get(&headers, "/w/shop/users/x").outcome, Outcome::NoRoute);

    let post = |body: &[u8]| {
        answer(
            &table,
            &http::Method::POST,
            "/w/shop/orders",
            &RequestParts::new(None, &headers, body),
        )
    };
    assert_eq!(&post(br#"{"kind":"rush"}"#).body[..], b"rush");
    let miss = post(br#"{"kind":"slow"}"#);
    assert_eq!(miss.header.status, 404);
    assert_eq!(
        miss.header.headers["content-length"],
        miss.body.len().to_string().as_str()
    );
    let body: serde_json::Value = serde_json::from_slice(&miss.body).unwrap();
    assert_eq!(body["error"]["code"], "no_route_matched");
    let near = &body["error"]["near_misses"][0];
    assert_eq!(near["name"], "POST /orders");
    assert_eq!(
        near["reasons"][0],
        "body JSON at $.kind must equal \"rush\""
    );
}

#[test]
fn templates_render_per_request() {
    let spec = RouteSpec::parse("user", "GET", "/users/{id:int}", || {
            ResponseSpec::parse(
                200,
                vec![
                    ("content-type".into(), "application/json".into()),
                    ("x-user".into(), "u-{{request.params.id}}".into()),
                ],
                Bytes::from_static(
                    br#"{"id":{{request.params.id}},"q":"{{request.query.q}}","name":"{{faker.name seed=request.params.id}}"}"#,
                ),
            )
        })
        .and_then(|spec| spec.templated(true))
        .unwrap();
    let config = WorkspaceConfig::single(
        Uuid::new_v4(),
        Slug::parse("t").unwrap(),
        vec![ConfigRoute {
            id: Uuid::new_v4(),
            spec,
        }],
    );
    let update = Update {
        revision: 1,
        full: true,
        upserts: vec![mockplane_proto::resource::encode(&config, 1)],
        ..Default::default()
    };
    let table = RoutingTable::default().apply(&update).0;
    assert!(
        !table
            .workspace("t")
            .unwrap()
            .environment(None)
            .unwrap()
            .table
            .needs_body
    );
    let reply = ask(&table, &http::Method::GET, "/w/t/users/42?q=%22x%22");
    assert_eq!(reply.header.status, 200);
    assert_eq!(reply.header.headers["x-user"], "u-42");
    assert_eq!(
        reply.header.headers["content-length"],
        reply.body.len().to_string().as_str()
    );
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(body["id"], 42);
    assert_eq!(body["q"], "\"x\"");
    let again = ask(&table, &http::Method::GET, "/w/t/users/42");
    let again: serde_json::Value = serde_json::from_slice(&again.body).unwrap();
    assert_eq!(again["name"], body["name"], "seeded by the id");
}

fn table_of(configs: &[WorkspaceConfig]) -> RoutingTable {
    let update = Update {
        revision: 1,
        full: true,
        upserts: configs
            .iter()
            .map(|c| mockplane_proto::resource::encode(c, 1))
            .collect(),
        ..Default::default()
    };
    let (table, errors) = RoutingTable::default().apply(&update);
    assert!(errors.is_empty(), "{errors:?}");
    table
}

fn plain(path: &str, body: String) -> ConfigRoute {
    ConfigRoute {
        id: Uuid::new_v4(),
        spec: RouteSpec::parse("", "GET", path, || {
            ResponseSpec::parse(200, vec![], Bytes::from(body))
        })
        .unwrap(),
    }
}

fn ask_env(table: &RoutingTable, path: &str, env: Option<&str>) -> Answer {
    let mut headers = http::HeaderMap::new();
    if let Some(env) = env {
        headers.insert(ENV_HEADER, http::HeaderValue::from_str(env).unwrap());
    }
    answer(
        table,
        &http::Method::GET,
        path,
        &RequestParts::new(None, &headers, b""),
    )
}

fn three_environments() -> WorkspaceConfig {
    use mockplane_shared::EnvironmentConfig;
    let env = |name: &str, routes| EnvironmentConfig::plain(Slug::parse(name).unwrap(), routes);
    WorkspaceConfig {
        id: Uuid::new_v4(),
        slug: Slug::parse("shop").unwrap(),
        active: Slug::parse("test").unwrap(),
        environments: vec![
            env(
                "dev",
                vec![plain("/a", "dev".into()), plain("/new", "dev".into())],
            ),
            env("test", vec![plain("/a", "test".into())]),
            env("prod", vec![]),
        ],
        state_epoch: 0,
        require_api_keys: false,
    }
}

fn ask_with_key(table: &RoutingTable, path: &str, env: Option<&str>, key: Option<&str>) -> Answer {
    let mut headers = http::HeaderMap::new();
    if let Some(env) = env {
        headers.insert(ENV_HEADER, http::HeaderValue::from_str(env).unwrap());
    }
    if let Some(key) = key {
        headers.insert(KEY_HEADER, http::HeaderValue::from_str(key).unwrap());
    }
    answer(
        table,
        &http::Method::GET,
        path,
        &RequestParts::new(None, &headers, b""),
    )
}

/// `shop` with dev, test (active) and prod; a key in dev, a test key in
/// prod, an expired key in prod.
fn keyed(require: bool) -> (WorkspaceConfig, [Uuid; 3]) {
    use mockplane_shared::model::keys::ApiKeyConfig;
    let mut config = three_environments();
    config.require_api_keys = require;
    let ids = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let key = |id, secret: &str, test, expires_at_unix| ApiKeyConfig {
        id,
        sha256: digest(secret.as_bytes()),
        test,
        expires_at_unix,
    };
    config.environments[0]
        .keys
        .push(key(ids[0], "mpk_dev", false, 0));
    config.environments[2].keys.extend([
        key(ids[1], "mpk_test_key", true, unix_now() + 3600),
        key(ids[2], "mpk_old", false, unix_now() - 90),
    ]);
    config.environments[2]
        .routes
        .push(plain("/a", "prod".into()));
    (config, ids)
}

#[test]
fn keys_open_their_own_environment_only() {
    let (config, [dev, test_key, old]) = keyed(true);
    let table = table_of(&[config]);
    let refused = |answer: &Answer, code: &str| {
        assert_eq!(answer.header.status, 401, "{code}");
        assert_eq!(answer.outcome, Outcome::Unauthorized);
        assert_eq!(error_code(answer), code);
        assert_eq!(
            answer.header.headers["www-authenticate"],
            "ApiKey header=\"x-mockplane-key\""
        );
        assert!(answer.place.is_some(), "refusals go to the journal");
        assert!(answer.key.is_none());
        let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        body["error"].clone()
    };
    let missing = ask_with_key(&table, "/w/shop/a", Some("dev"), None);
    let error = refused(&missing, "api_key_required");
    assert!(error["message"].as_str().unwrap().contains("'dev'"));

    let opened = ask_with_key(&table, "/w/shop/a", Some("dev"), Some("mpk_dev"));
    assert_eq!(opened.header.status, 200);
    assert_eq!(&opened.body[..], b"dev");
    assert_eq!(opened.key, Some((dev, false)));

    // A dev key is not a prod key, and says where it belongs.
    let elsewhere = ask_with_key(&table, "/w/shop/a", Some("prod"), Some("mpk_dev"));
    let error = refused(&elsewhere, "api_key_invalid");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("no key of environment 'prod'"),
        "{error}"
    );
    assert!(
        error["hint"]
            .as_str()
            .unwrap()
            .contains("key of environment 'dev'"),
        "{error}"
    );
    // Without the env header the active environment (test) answers,
    // and the dev key does not open it either.
    refused(
        &ask_with_key(&table, "/w/shop/a", None, Some("mpk_dev")),
        "api_key_invalid",
    );
    let unknown = ask_with_key(&table, "/w/shop/a", Some("dev"), Some("mpk_nope"));
    let error = refused(&unknown, "api_key_invalid");
    assert!(error["hint"].as_str().unwrap().contains("revoked"));

    let expired = ask_with_key(&table, "/w/shop/a", Some("prod"), Some("mpk_old"));
    let error = refused(&expired, "api_key_expired");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(&old.to_string()),
        "{error}"
    );

    let tested = ask_with_key(&table, "/w/shop/a", Some("prod"), Some("mpk_test_key"));
    assert_eq!(tested.header.status, 200);
    assert_eq!(tested.key, Some((test_key, true)));

    // An unknown environment is a 404 naming the environments only to
    // a caller with a key of the workspace.
    let nowhere = ask_with_key(&table, "/w/shop/a", Some("qa"), Some("mpk_dev"));
    assert_eq!(error_code(&nowhere), "environment_not_found");
    assert!(String::from_utf8_lossy(&nowhere.body).contains("dev, test, prod"));
}

#[test]
fn a_protected_workspace_names_no_environment_to_a_caller_without_a_key() {
    let (config, _) = keyed(true);
    let table = table_of(&[config]);
    for (env, key, code) in [
        (Some("nope"), None, "api_key_required"),
        (Some("nope"), Some("mpk_nope"), "api_key_invalid"),
        (None, None, "api_key_required"),
        (None, Some("mpk_nope"), "api_key_invalid"),
    ] {
        let answer = ask_with_key(&table, "/w/shop/a", env, key);
        assert_eq!(answer.header.status, 401, "{env:?} {key:?}");
        assert_eq!(error_code(&answer), code);
        let body = String::from_utf8_lossy(&answer.body).into_owned();
        for name in ["dev", "test", "prod"] {
            assert!(!body.contains(name), "{env:?} {key:?} names {name}: {body}");
        }
    }
}

#[test]
fn keys_are_optional_unless_required_but_a_bad_one_is_refused() {
    let (config, _) = keyed(false);
    let table = table_of(&[config]);
    let open = ask_with_key(&table, "/w/shop/a", Some("dev"), None);
    assert_eq!(open.header.status, 200);
    assert_eq!(open.key, None);
    let bad = ask_with_key(&table, "/w/shop/a", Some("dev"), Some("mpk_nope"));
    assert_eq!(bad.header.status, 401);
    assert_eq!(error_code(&bad), "api_key_invalid");
    let good = ask_with_key(&table, "/w/shop/a", Some("dev"), Some("mpk_dev"));
    assert_eq!(good.header.status, 200);
}

#[test]
fn usage_counts_test_keys_apart_and_refusals_not_at_all() {
    let (config, [dev, _, _]) = keyed(false);
    let id = config.id;
    let table = table_of(&[config]);
    for _ in 0..3 {
        ask_with_key(&table, "/w/shop/a", Some("prod"), None);
    }
    ask_with_key(&table, "/w/shop/missing", Some("prod"), None);
    for _ in 0..2 {
        ask_with_key(&table, "/w/shop/a", Some("prod"), Some("mpk_test_key"));
    }
    ask_with_key(&table, "/w/shop/a", Some("prod"), Some("mpk_old"));
    ask_with_key(&table, "/w/shop/a", Some("prod"), Some("mpk_nope"));
    ask_with_key(&table, "/w/shop/a", Some("dev"), Some("mpk_dev"));
    let pending = table.usage().report(unix_now()).unwrap();
    let count = |env: &str| {
        pending
            .report
            .counts
            .iter()
            .find(|c| c.environment == env && c.workspace_id == id.to_string())
            .map(|c| (c.requests, c.test_requests))
    };
    assert_eq!(count("prod"), Some((4, 2)), "404s count, refusals do not");
    assert_eq!(count("dev"), Some((1, 0)));
    assert_eq!(count("test"), None);
    assert!(
        pending
            .report
            .key_uses
            .iter()
            .any(|u| u.key_id == dev.to_string() && u.last_used_unix > 0)
    );
    // Counters survive a config change: the next table shares them.
    let (next, _) = table.apply(&Update {
        revision: 2,
        full: true,
        upserts: vec![mockplane_proto::resource::encode(&keyed(false).0, 2)],
        ..Default::default()
    });
    assert!(Arc::ptr_eq(next.usage(), table.usage()));
}

#[test]
fn environments_are_chosen_by_header_and_unknown_ones_are_404() {
    let table = table_of(&[three_environments()]);
    let body = |a: &Answer| String::from_utf8(a.body.to_vec()).unwrap();
    assert_eq!(
        body(&ask_env(&table, "/w/shop/a", None)),
        "test",
        "the active one"
    );
    assert_eq!(body(&ask_env(&table, "/w/shop/a", Some("dev"))), "dev");
    // What dev has, test does not serve.
    let isolated = ask_env(&table, "/w/shop/new", None);
    assert_eq!(isolated.header.status, 404);
    assert_eq!(error_code(&isolated), "route_not_found");
    let empty = ask_env(&table, "/w/shop/a", Some("prod"));
    let hint: serde_json::Value = serde_json::from_slice(&empty.body).unwrap();
    assert!(
        hint["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("serves no routes yet"),
        "{hint}"
    );
    for (asked, hint) in [
        (
            "staging",
            "has dev, test, prod; without the x-mockplane-env header, test answers",
        ),
        ("PROD", "lower case: try 'prod'"),
    ] {
        let unknown = ask_env(&table, "/w/shop/a", Some(asked));
        assert_eq!(unknown.header.status, 404);
        assert_eq!(unknown.outcome, Outcome::UnknownEnvironment);
        assert_eq!(error_code(&unknown), "environment_not_found");
        let body: serde_json::Value = serde_json::from_slice(&unknown.body).unwrap();
        assert!(
            body["error"]["message"].as_str().unwrap().contains(asked),
            "{body}"
        );
        assert!(
            body["error"]["hint"].as_str().unwrap().contains(hint),
            "{body}"
        );
    }
}

#[test]
fn environment_realism_applies_unless_the_route_sets_its_own() {
    use mockplane_shared::model::realism::{Chaos, Realism};
    let mut config = three_environments();
    let always = |status: u16| Chaos {
        rate: 1.0,
        statuses: [(status, 1)].into(),
        ..Default::default()
    };
    config.environments[1].realism = Realism {
        latency: None,
        chaos: Some(always(418)),
    };
    let mut calm = plain("/calm", "calm".into());
    calm.spec.realism.chaos = Some(Chaos::default());
    config.environments[1].routes.push(calm);
    let table = table_of(&[config]);
    let chaotic = ask_env(&table, "/w/shop/a", Some("test"));
    assert_eq!(
        (chaotic.outcome, chaotic.header.status.as_u16()),
        (Outcome::Chaos, 418)
    );
    let calm = ask_env(&table, "/w/shop/calm", Some("test"));
    assert_eq!(
        (calm.outcome, calm.header.status.as_u16()),
        (Outcome::Matched, 200)
    );
    let dev = ask_env(&table, "/w/shop/a", Some("dev"));
    assert_eq!(dev.header.status, 200, "dev has no chaos");
}

#[test]
fn templates_read_the_persona_the_request_names() {
    let spec = RouteSpec::parse("me", "GET", "/me", || {
        ResponseSpec::parse(
            200,
            vec![],
            Bytes::from_static(b"{{persona.user.name default=\"nobody\"}}"),
        )
    })
    .and_then(|spec| spec.templated(true))
    .unwrap();
    let mut config = WorkspaceConfig::single(
        Uuid::new_v4(),
        Slug::parse("p").unwrap(),
        vec![
            ConfigRoute {
                id: Uuid::new_v4(),
                spec,
            },
            plain("/plain", "plain".into()),
        ],
    );
    config.environments[0].personas = ["default", "ada"]
        .map(|name| PersonaConfig {
            name: Slug::parse(name).unwrap(),
            data: serde_json::json!({ "user": { "name": format!("{name} user") } }),
        })
        .to_vec();
    let table = table_of(&[config]);
    let with = |persona: Option<&str>, path: &str| {
        let mut headers = http::HeaderMap::new();
        if let Some(persona) = persona {
            headers.insert(
                PERSONA_HEADER,
                http::HeaderValue::from_str(persona).unwrap(),
            );
        }
        answer(
            &table,
            &http::Method::GET,
            path,
            &RequestParts::new(None, &headers, b""),
        )
    };
    let body = |a: Answer| String::from_utf8(a.body.to_vec()).unwrap();
    assert_eq!(body(with(None, "/w/p/me")), "default user");
    assert_eq!(body(with(Some("ada"), "/w/p/me")), "ada user");
    let unknown = with(Some("bob"), "/w/p/me");
    assert_eq!(unknown.header.status, 404);
    assert_eq!(error_code(&unknown), "persona_not_found");
    assert!(String::from_utf8_lossy(&unknown.body).contains("ada, default"));
    assert_eq!(
        body(with(Some("bob"), "/w/p/plain")),
        "plain",
        "routes without templates read no persona"
    );
}

/// The promotion gate runs contract checks on the engine a node answers
/// with: a check whose template reads a persona gets, for the same
/// request and personas, exactly the node's answer (the gate once rendered
/// without personas).
#[test]
fn a_persona_reading_contract_check_gets_the_nodes_answer() {
    use mockplane_shared::governance::contract;
    use mockplane_shared::model::checks::{CheckRequest, ContractCheck, Expectation};
    let spec = RouteSpec::parse("me", "GET", "/users/{id:int}", || {
        ResponseSpec::parse(
            200,
            vec![("content-type".into(), "application/json".into())],
            Bytes::from_static(
                br#"{"id":{{request.params.id}},"name":"{{persona.user.name}}","tier":"{{persona.tier default="free"}}"}"#,
            ),
        )
    })
    .and_then(|spec| spec.templated(true))
    .unwrap();
    let routes = vec![ConfigRoute {
        id: Uuid::new_v4(),
        spec,
    }];
    let personas = vec![
        PersonaConfig {
            name: Slug::parse("default").unwrap(),
            data: json!({ "user": { "name": "Grace \"G\" Hopper" }, "tier": "gold" }),
        },
        PersonaConfig {
            name: Slug::parse("ada").unwrap(),
            data: json!({ "user": { "name": "Ada" } }),
        },
    ];
    let mut config =
        WorkspaceConfig::single(Uuid::new_v4(), Slug::parse("p").unwrap(), routes.clone());
    config.environments[0].personas = personas.clone();
    let node = table_of(&[config]);
    let gate = contract::serve("p", "dev", &routes, &personas);
    let no_personas = contract::serve("p", "dev", &routes, &[]);

    for persona in [None, Some("ada"), Some("bob")] {
        let mut headers = http::HeaderMap::new();
        let mut check_headers = Vec::new();
        if let Some(persona) = persona {
            headers.insert(PERSONA_HEADER, http::HeaderValue::from_static(persona));
            check_headers.push((PERSONA_HEADER.to_owned(), persona.to_owned()));
        }
        let node_answer = answer(
            &node,
            &http::Method::GET,
            "/w/p/users/7",
            &RequestParts::new(None, &headers, b""),
        );
        let node_body: serde_json::Value = serde_json::from_slice(&node_answer.body).unwrap();
        let check = ContractCheck {
            name: "me".into(),
            request: CheckRequest {
                method: "GET".into(),
                path: "/users/7".into(),
                headers: check_headers,
                body: String::new(),
            },
            expect: Expectation {
                status: node_answer.header.status.as_u16(),
                headers: vec![("content-type".into(), "application/json".into())],
                body: Some(node_body.clone()),
                body_contains: Some(String::from_utf8_lossy(&node_answer.body).into_owned()),
            },
        };
        let outcome = &contract::run(std::slice::from_ref(&check), &gate)[0];
        assert!(
            outcome.passed,
            "persona {persona:?}: the node answered {node_body}, the gate: {}",
            outcome.detail
        );
        if persona.is_none() {
            assert_eq!(node_body["name"], "Grace \"G\" Hopper");
            assert_eq!(node_body["tier"], "gold");
            // Without the target's personas the same check fails: the gate
            // really reads them.
            let blind = &contract::run(std::slice::from_ref(&check), &no_personas)[0];
            assert!(!blind.passed, "{blind:?}");
        }
        if persona == Some("bob") {
            assert_eq!(node_answer.header.status, 404);
        }
    }
}

#[test]
fn stateful_routes_follow_their_machine_per_key() {
    use mockplane_shared::model::state::RawStateRule;
    let stateful =
        |method: &str, path: &str, body: &'static str, when: Option<&str>, set: Option<&str>| {
            let spec = RouteSpec::parse("", method, path, || {
                ResponseSpec::parse(200, vec![], Bytes::from_static(body.as_bytes()))
            })
            .and_then(|spec| {
                spec.with_state(Some(&RawStateRule {
                    machine: "cart".into(),
                    when: when.map(Into::into),
                    set: set.map(Into::into),
                    key: Some("header:x-run".into()),
                }))
            })
            .unwrap();
            ConfigRoute {
                id: Uuid::new_v4(),
                spec,
            }
        };
    let config = WorkspaceConfig::single(
        Uuid::new_v4(),
        Slug::parse("shop").unwrap(),
        vec![
            stateful("GET", "/cart", "empty", Some("started"), None),
            stateful("GET", "/cart", "one item", Some("full"), None),
            stateful("POST", "/cart", "added", None, Some("full")),
            stateful("DELETE", "/cart", "cleared", Some("full"), Some("started")),
        ],
    );
    let table = table_of(&[config]);
    let machines = Machines::default();
    let send = |method: http::Method, run: &str| {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-run", http::HeaderValue::from_str(run).unwrap());
        answer_with(
            &table,
            &machines,
            &method,
            "/w/shop/cart",
            &RequestParts::new(None, &headers, b""),
        )
    };
    let body = |a: Answer| String::from_utf8(a.body.to_vec()).unwrap();
    assert_eq!(body(send(http::Method::GET, "a")), "empty");
    assert_eq!(body(send(http::Method::POST, "a")), "added");
    assert_eq!(body(send(http::Method::GET, "a")), "one item");
    assert_eq!(
        body(send(http::Method::GET, "b")),
        "empty",
        "run b has its own cart"
    );
    let refused = send(http::Method::DELETE, "b");
    assert_eq!(error_code(&refused), "no_route_matched");
    assert!(
        String::from_utf8_lossy(&refused.body)
            .contains("state machine cart (key \\\"b\\\") is in 'started', the route needs 'full'"),
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    assert_eq!(body(send(http::Method::DELETE, "a")), "cleared");
    assert_eq!(body(send(http::Method::GET, "a")), "empty");
}

mod isolation {
    use proptest::prelude::*;

    use super::*;

    const SLUGS: [&str; 3] = ["alpha", "beta", "gamma"];
    const ENVS: [&str; 4] = ["dev", "test", "prod", "sandbox"];
    const PATHS: [&str; 4] = ["/a", "/b", "/c/d", "/items/{id}"];

    /// Per workspace: which environments it has (at least one), which
    /// is active, and which paths each serves.
    fn workspace() -> impl Strategy<Value = (Vec<(usize, Vec<bool>)>, usize)> {
        (
            proptest::sample::subsequence((0..ENVS.len()).collect::<Vec<_>>(), 1..=ENVS.len()),
            any::<prop::sample::Index>(),
            proptest::collection::vec(
                proptest::collection::vec(any::<bool>(), PATHS.len()),
                ENVS.len(),
            ),
        )
            .prop_map(|(envs, active, paths)| {
                let active = active.index(envs.len());
                (
                    envs.into_iter().map(|e| (e, paths[e].clone())).collect(),
                    active,
                )
            })
    }

    fn request() -> impl Strategy<Value = (usize, Option<usize>, usize)> {
        (
            0..SLUGS.len() + 1,
            proptest::option::of(0..ENVS.len()),
            0..PATHS.len(),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random workspaces, environments and requests: an answer
        /// always comes from the workspace and environment the request
        /// asked for (or the active one), and from nowhere else.
        #[test]
        fn no_request_gets_another_environments_answer(
            spaces in proptest::collection::vec(workspace(), SLUGS.len()),
            requests in proptest::collection::vec(request(), 1..40),
        ) {
            let configs: Vec<WorkspaceConfig> = spaces
                .iter()
                .enumerate()
                .map(|(w, (envs, active))| WorkspaceConfig {
                    id: Uuid::new_v4(),
                    slug: Slug::parse(SLUGS[w]).unwrap(),
                    active: Slug::parse(ENVS[envs[*active].0]).unwrap(),
                    environments: envs
                        .iter()
                        .map(|(e, paths)| mockplane_shared::EnvironmentConfig::plain(
                            Slug::parse(ENVS[*e]).unwrap(),
                            PATHS
                                .iter()
                                .zip(paths)
                                .filter(|(_, on)| **on)
                                .map(|(path, _)| plain(path, format!("{}/{}/{path}", SLUGS[w], ENVS[*e])))
                                .collect(),
                        ))
                        .collect(),
                    state_epoch: 0,
                    require_api_keys: false,
                })
                .collect();
            let table = table_of(&configs);
            for (w, env, p) in requests {
                let slug = SLUGS.get(w).copied().unwrap_or("nobody");
                let request_path = PATHS[p].replace("{id}", "7");
                let got = ask_env(&table, &format!("/w/{slug}{request_path}"), env.map(|e| ENVS[e]));
                let Some((envs, active)) = spaces.get(w) else {
                    prop_assert_eq!(got.outcome, Outcome::UnknownWorkspace);
                    continue;
                };
                let chosen = match env {
                    None => Some(&envs[*active]),
                    Some(e) => envs.iter().find(|(have, _)| *have == e),
                };
                let Some((e, paths)) = chosen else {
                    prop_assert_eq!(got.outcome, Outcome::UnknownEnvironment);
                    continue;
                };
                if paths[p] {
                    prop_assert_eq!(got.outcome, Outcome::Matched);
                    prop_assert_eq!(
                        String::from_utf8(got.body.to_vec()).unwrap(),
                        format!("{slug}/{}/{}", ENVS[*e], PATHS[p])
                    );
                } else {
                    prop_assert_ne!(got.outcome, Outcome::Matched);
                    prop_assert_eq!(got.header.status, 404);
                }
            }
        }
    }
}

/// `shop` (test answers: 1 request per second, bursts of 2, 1 at once) and
/// `other` (no limits), from one update.
fn limited_table() -> RoutingTable {
    use mockplane_shared::model::environment::Limits;
    let mut shop = three_environments();
    shop.environments[1].limits = Limits {
        requests_per_second: Some(1),
        burst: Some(2),
        max_concurrent: Some(1),
    };
    let mut other = three_environments();
    other.id = Uuid::new_v4();
    other.slug = Slug::parse("other").unwrap();
    let update = Update {
        revision: 1,
        full: true,
        upserts: vec![
            mockplane_proto::resource::encode(&shop, 1),
            mockplane_proto::resource::encode(&other, 1),
        ],
        ..Default::default()
    };
    let (table, errors) = RoutingTable::default().apply(&update);
    assert!(errors.is_empty(), "{errors:?}");
    table
}

#[test]
fn limits_answer_429_naming_the_limit_and_when_to_retry() {
    let table = limited_table();
    let env = table.workspace("shop").unwrap().environment(None).unwrap();
    let usage = env.usage.clone();

    // Concurrency: the first answer holds its permit until sent.
    let first = ask_with_key(&table, "/w/shop/a", None, None);
    assert_eq!(first.header.status, 200);
    assert!(first.permit.is_some());
    let busy = ask_with_key(&table, "/w/shop/a", None, None);
    assert_eq!(busy.header.status, 429);
    assert_eq!(busy.outcome, Outcome::Limited);
    assert_eq!(busy.header.headers["retry-after"], "1");
    let body: serde_json::Value = serde_json::from_slice(&busy.body).unwrap();
    assert_eq!(body["error"]["code"], "concurrency_limited");
    assert_eq!(body["error"]["limit"], "max_concurrent");
    assert_eq!(body["error"]["value"], 1);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 1 requests at once"),
        "{body}"
    );
    assert!(busy.place.is_some(), "a refusal is journaled where it was");
    drop(first);

    // Rate: the burst's second token, then a refusal saying when.
    let second = ask_with_key(&table, "/w/shop/a", None, None);
    assert_eq!(second.header.status, 200);
    drop(second);
    let over = ask_with_key(&table, "/w/shop/a", None, None);
    assert_eq!(over.header.status, 429);
    let body: serde_json::Value = serde_json::from_slice(&over.body).unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(body["error"]["limit"], "requests_per_second");
    assert_eq!(body["error"]["value"], 1);
    let retry: u64 = over.header.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry, 1, "a token comes back within a second");
    assert_eq!(body["error"]["retry_after_secs"], retry);

    // Refusals are counted apart from answers.
    assert_eq!(usage.pending(), (2, 0, 2));

    // Other environments and workspaces on the node are not limited.
    for _ in 0..20 {
        assert_eq!(
            ask_with_key(&table, "/w/shop/a", Some("dev"), None)
                .header
                .status,
            200
        );
        assert_eq!(
            ask_with_key(&table, "/w/other/a", None, None).header.status,
            200
        );
    }
}

#[test]
fn an_update_that_keeps_the_limits_keeps_the_bucket() {
    let table = limited_table();
    for _ in 0..2 {
        assert_eq!(
            ask_with_key(&table, "/w/shop/a", None, None).header.status,
            200
        );
    }
    // The same config again (as a resync sends it): still out of tokens.
    let shop = table.workspace("shop").unwrap();
    let mut config = three_environments();
    config.id = shop.id;
    config.environments[1].limits = mockplane_shared::model::environment::Limits {
        requests_per_second: Some(1),
        burst: Some(2),
        max_concurrent: Some(1),
    };
    let again = Update {
        revision: 2,
        upserts: vec![mockplane_proto::resource::encode(&config, 2)],
        ..Default::default()
    };
    let (next, errors) = table.apply(&again);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        ask_with_key(&next, "/w/shop/a", None, None).header.status,
        429
    );
    // Lifting the limits serves at once.
    config.environments[1].limits = Default::default();
    let lifted = Update {
        revision: 3,
        upserts: vec![mockplane_proto::resource::encode(&config, 3)],
        ..Default::default()
    };
    let (free, _) = next.apply(&lifted);
    assert_eq!(
        ask_with_key(&free, "/w/shop/a", None, None).header.status,
        200
    );
}
