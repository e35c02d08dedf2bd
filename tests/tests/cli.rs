//! The `mockplane` CLI as a user runs it: against a real control plane, its
//! output checked, its changes served by a real node.

use std::path::Path;

use mockplane_e2e::{Cli, ControlPlane, Node, Process, bin, eventually};
use nix::sys::signal::Signal;
use serde_json::Value;

const MOCKS: &str = r#"
routes:
  - name: hello
    path: /hello
    response:
      json: {"message": "hello"}
  - name: one user
    method: GET
    path: /users/{id}
    response:
      headers: {content-type: application/json, x-mock: "yes"}
      body: '{"id": 1}'
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manages_workspaces_and_mocks_that_nodes_then_serve() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let node = Node::start(dir.path(), &plane.url()).await.unwrap();
    let cli = Cli {
        server: plane.url(),
        token: plane.token.as_deref(),
    };

    let created = cli
        .ok(&["workspace", "create", "demo", "--name", "Demo API"])
        .await;
    assert!(
        created
            .lines()
            .any(|line| line.split_whitespace().eq(["slug", "demo"])),
        "{created}"
    );
    let table = cli.ok(&["workspace", "list"]).await;
    let mut lines = table.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("SLUG  NAME      ROUTES  ID"),
        "{table}"
    );
    assert!(
        lines.next().unwrap().starts_with("demo  Demo API  0"),
        "{table}"
    );
    let listed: Value =
        serde_json::from_str(&cli.ok(&["--output", "json", "ws", "list"]).await).unwrap();
    assert_eq!(listed[0]["slug"], "demo");
    let etag = listed[0]["etag"].as_str().unwrap().to_owned();

    let mocks = write(dir.path(), "mocks.yaml", MOCKS);
    let added = cli.ok(&["route", "add", "demo", "--file", &mocks]).await;
    assert!(added.contains("/users/{id}"), "{added}");
    let reply = node
        .wait_for("/w/demo/hello", 200, |b| b.contains("hello"))
        .await;
    assert_eq!(reply.headers["content-type"], "application/json");
    let user = node.wait_for("/w/demo/users/9", 200, |_| true).await;
    assert_eq!(user.headers["x-mock"], "yes");

    let routes: Value =
        serde_json::from_str(&cli.ok(&["-o", "json", "route", "list", "demo"]).await).unwrap();
    assert_eq!(routes.as_array().unwrap().len(), 2);
    assert_eq!(routes[1]["path"], "/users/{id}");
    let route_id = routes[0]["id"].as_str().unwrap().to_owned();
    let one: Value = serde_json::from_str(
        &cli.ok(&["-o", "json", "route", "get", "demo", &route_id])
            .await,
    )
    .unwrap();
    assert_eq!(one["name"], "hello");

    // Replace one route from a file.
    let replacement = write(
        dir.path(),
        "one.yaml",
        "- path: /hello\n  response: {body: changed}\n",
    );
    cli.ok(&["route", "update", "demo", &route_id, "--file", &replacement])
        .await;
    node.wait_for("/w/demo/hello", 200, |b| b == "changed")
        .await;

    // A malformed file: the CLI names the route and the field, sends nothing.
    let broken = write(
        dir.path(),
        "broken.yaml",
        "routes:\n  - path: /fine\n  - path: /bad\n    response: {status: 700}\n",
    );
    let error = cli
        .fails(&["route", "add", "demo", "--file", &broken])
        .await;
    assert!(error.contains("routes[1].response.status"), "{error}");
    assert!(error.contains("200 to 599"), "{error}");
    let typo = write(dir.path(), "typo.yaml", "- path: /x\n  respons: {}\n");
    let error = cli.fails(&["route", "add", "demo", "-f", &typo]).await;
    assert!(
        error.contains("routes[0]") && error.contains("respons"),
        "{error}"
    );
    let json_file = write(
        dir.path(),
        "bad.json",
        r#"{"routes": [{"path": "/x", "method": 7}]}"#,
    );
    let error = cli.fails(&["route", "add", "demo", "-f", &json_file]).await;
    assert!(error.contains("routes[0].method"), "{error}");
    let count: Value =
        serde_json::from_str(&cli.ok(&["-o", "json", "route", "list", "demo"]).await).unwrap();
    assert_eq!(count.as_array().unwrap().len(), 2);

    // Server errors are printed with their code; the exit status is 1.
    let error = cli.fails(&["workspace", "create", "Demo"]).await;
    assert!(
        error.contains("lower-case") && error.contains("InvalidArgument"),
        "{error}"
    );
    let error = cli.fails(&["workspace", "create", "demo"]).await;
    assert!(error.contains("already exists"), "{error}");
    cli.ok(&[
        "workspace",
        "update",
        "demo",
        "--description",
        "first",
        "--etag",
        &etag,
    ])
    .await;
    let error = cli
        .fails(&[
            "workspace",
            "update",
            "demo",
            "--description",
            "again",
            "--etag",
            &etag,
        ])
        .await;
    assert!(
        error.contains("Aborted") && error.contains("etag"),
        "{error}"
    );
    let anonymous = Cli {
        server: plane.url(),
        token: None,
    };
    let error = anonymous.fails(&["workspace", "list"]).await;
    assert!(error.contains("MOCKPLANE_TOKEN"), "{error}");
    let nowhere = Cli {
        server: "http://127.0.0.1:1".into(),
        token: None,
    };
    let error = nowhere.fails(&["workspace", "list"]).await;
    assert!(error.contains("cannot reach the control plane"), "{error}");

    // Removing by file removes exactly the routes the file names.
    cli.ok(&["route", "remove", "demo", "--file", &mocks]).await;
    node.wait_for("/w/demo/hello", 404, |b| b.contains("route_not_found"))
        .await;
    let error = cli
        .fails(&["route", "remove", "demo", "--file", &mocks])
        .await;
    assert!(error.contains("has no route GET /hello"), "{error}");

    // Deleting reaches prod, which asks for a reason.
    let error = cli.fails(&["workspace", "delete", "demo"]).await;
    assert!(error.contains("`prod` requires a reason"), "{error}");
    cli.ok(&[
        "workspace",
        "delete",
        "demo",
        "--reason",
        "retiring the demo",
    ])
    .await;
    node.wait_for("/w/demo/hello", 404, |b| b.contains("workspace_not_found"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_a_local_stack_and_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args: Vec<String> = [
        "--output",
        "json",
        "up",
        "--data-dir",
        data.to_str().unwrap(),
        "--grpc-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--ops-listen",
        "127.0.0.1:0",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut up = Process::start(
        "mockplane up",
        &bin("mockplane"),
        &args,
        dir.path().join("up-1.log"),
        "ready",
    )
    .await
    .unwrap();
    assert_eq!(up.events.last().unwrap()["first_run"], true);
    let grpc = up.event("ready", "grpc").unwrap();
    let http = up.event("ready", "http").unwrap();
    let ops = up.event("ready", "ops").unwrap();
    let token_file = up.event("ready", "admin_token_file").unwrap();
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the admin token is readable by its owner only"
        );
    }

    let cli = Cli {
        server: grpc.clone(),
        token: Some(&token),
    };
    cli.ok(&["workspace", "create", "demo"]).await;
    let mocks = write(dir.path(), "mocks.yaml", MOCKS);
    cli.ok(&["route", "add", "demo", "-f", &mocks]).await;
    let client = reqwest::Client::new();
    eventually("the local node to serve the new mock", || async {
        let reply = client
            .get(format!("{http}/w/demo/hello"))
            .send()
            .await
            .ok()?;
        (reply.status() == 200).then_some(())
    })
    .await;

    // Ctrl-C stops the whole stack.
    let status = up.stop(Signal::SIGINT).await.unwrap();
    assert!(status.success(), "up exited with {status}");
    assert!(
        client.get(format!("{ops}/healthz")).send().await.is_err(),
        "the node is still up"
    );
    assert!(
        std::net::TcpStream::connect(grpc.trim_start_matches("http://")).is_err(),
        "the control plane is still up"
    );

    // A second run keeps the data and creates no new admin.
    let mut again = Process::start(
        "mockplane up",
        &bin("mockplane"),
        &args,
        dir.path().join("up-2.log"),
        "ready",
    )
    .await
    .unwrap();
    assert_eq!(again.events.last().unwrap()["first_run"], false);
    let grpc = again.event("ready", "grpc").unwrap();
    let http = again.event("ready", "http").unwrap();
    let cli = Cli {
        server: grpc,
        token: Some(&token),
    };
    let listed: Value =
        serde_json::from_str(&cli.ok(&["-o", "json", "workspace", "list"]).await).unwrap();
    assert_eq!(listed[0]["slug"], "demo");
    let reply = client
        .get(format!("{http}/w/demo/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    again.stop(Signal::SIGTERM).await.unwrap();
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn names(environments: &Value) -> Vec<&str> {
    environments
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manages_environments_and_which_one_answers() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let node = Node::start(dir.path(), &plane.url()).await.unwrap();
    let cli = Cli {
        server: plane.url(),
        token: plane.token.as_deref(),
    };
    cli.workspace_with_mocks(dir.path(), "shop", MOCKS).await;
    node.wait_for("/w/shop/hello", 200, |b| b.contains("hello"))
        .await;

    // Every workspace starts with dev → test → prod, dev active.
    let table = cli.ok(&["env", "list", "shop"]).await;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "NAME",
            "CHAIN",
            "ACTIVE",
            "REALITY",
            "LATENCY",
            "CHAOS",
            "DRIFT_BUDGET",
            "VALIDATION",
            "REASON",
            "LIMITS"
        ],
        "{table}"
    );
    assert_eq!(
        rows[1],
        ["dev", "1", "yes", "1", "-", "-", "unlimited", "warn", "-"]
    );
    assert_eq!(rows[2][..4], ["test", "2", "3", "normal"], "{table}");
    assert_eq!(rows[3][..3], ["prod", "3", "4"], "{table}");
    assert!(rows[3].ends_with(&["0", "enforce", "yes", "-"]), "{table}");
    let listed = json(&cli.ok(&["-o", "json", "envs", "list", "shop"]).await);
    assert_eq!(names(&listed), ["dev", "test", "prod"]);
    let chain: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["chain"])
        .collect();
    assert_eq!(chain, [1, 2, 3]);
    assert_eq!(listed[0]["active"], true);
    assert_eq!(listed[2]["settings"]["validation"], "enforce");
    assert_eq!(listed[2]["effective"]["reality"], 4);

    // A new environment on the chain moves the later ones down.
    cli.ok(&["env", "create", "shop", "staging", "--position", "3"])
        .await;
    let listed = json(&cli.ok(&["-o", "json", "env", "list", "shop"]).await);
    assert_eq!(names(&listed), ["dev", "test", "staging", "prod"]);
    assert_eq!(listed[3]["chain"], 4);

    // One setting at a time; --inherit clears one.
    cli.ok(&["env", "update", "shop", "staging", "--reality", "5"])
        .await;
    let staging = json(
        &cli.ok(&["-o", "json", "env", "get", "shop", "staging"])
            .await,
    );
    assert_eq!(staging["settings"]["reality"], 5);
    assert_eq!(staging["effective"]["reality"], 5);
    assert!(
        staging["effective"]["latency"]["pareto"].is_object(),
        "{staging}"
    );
    cli.ok(&[
        "env",
        "update",
        "shop",
        "staging",
        "--inherit",
        "reality_level",
    ])
    .await;
    let staging = json(
        &cli.ok(&["-o", "json", "environment", "get", "shop", "staging"])
            .await,
    );
    assert!(staging["settings"].get("reality").is_none(), "{staging}");
    assert_eq!(staging["effective"]["reality"], 1, "the built-in level");
    let error = cli.fails(&["env", "update", "shop", "staging"]).await;
    assert!(error.contains("nothing to change"), "{error}");

    // A settings file with a typo names the file and the field; nothing
    // is created.
    let typo = write(dir.path(), "qa.yaml", "reality: 2\nrealty: 3\n");
    let error = cli
        .fails(&["env", "create", "shop", "qa", "--file", &typo])
        .await;
    assert!(
        error.contains("qa.yaml") && error.contains("unknown field `realty`"),
        "{error}"
    );
    let listed = json(&cli.ok(&["-o", "json", "env", "list", "shop"]).await);
    assert_eq!(names(&listed).len(), 4);

    // Requests without the header go to the active environment; test
    // serves nothing yet, dev still serves the mocks to those who ask.
    let updated = cli
        .ok(&[
            "workspace",
            "update",
            "shop",
            "--active-env",
            "test",
            "--reason",
            "trying test as the default",
        ])
        .await;
    assert!(
        updated
            .lines()
            .any(|line| line.split_whitespace().eq(["active_env", "test"])),
        "{updated}"
    );
    node.wait_for("/w/shop/hello", 404, |b| b.contains("route_not_found"))
        .await;
    let dev = node
        .send_with("GET", "/w/shop/hello", &[("x-mockplane-env", "dev")], "")
        .await
        .unwrap();
    assert_eq!(dev.status, 200);
    assert!(dev.body.contains("hello"), "{}", dev.body);
    let table = cli.ok(&["ws", "list"]).await;
    assert!(
        table.lines().next().unwrap().ends_with("ACTIVE_ENV"),
        "{table}"
    );
    assert!(table.lines().nth(1).unwrap().ends_with("test"), "{table}");

    // What later environments serve changes only through promotions.
    let mocks = write(dir.path(), "more.yaml", "- path: /direct\n");
    let error = cli
        .fails(&["route", "add", "shop", "--file", &mocks, "--env", "prod"])
        .await;
    assert!(
        error.contains("promote") && error.contains("FailedPrecondition"),
        "{error}"
    );

    // The active environment stays; another can go.
    let error = cli.fails(&["env", "delete", "shop", "test"]).await;
    assert!(
        error.contains("'test'") && error.contains("active"),
        "{error}"
    );
    cli.ok(&["env", "delete", "shop", "staging"]).await;
    let listed = json(&cli.ok(&["-o", "json", "env", "list", "shop"]).await);
    assert_eq!(names(&listed), ["dev", "test", "prod"]);
}

/// A scenario's routes: a query matcher, priority, latency and chaos,
/// headers a map cannot hold, keyed state and a template, so that export
/// and import are shown to keep all of them.
const CHECKOUT: &str = r#"
routes:
  - name: total
    path: /checkout/total
    priority: 2
    match:
      query: [{ name: currency, equals: EUR }]
    latency: { fixed: 1 }
    response:
      headers: { content-type: application/json, x-mock: "yes" }
      json: { total: 42, currency: EUR }
  - name: pay
    method: POST
    path: /checkout/{id:int}
    chaos: { rate: 0, statuses: { 503: 1 }, seed: 3 }
    state: { machine: checkout, set: paid, key: "param:id" }
    response:
      status: 201
      headers:
        - { name: set-cookie, value: a=1 }
        - { name: set-cookie, value: b=2 }
      body: paid
  - name: receipt
    path: /checkout/{id:int}
    state: { machine: checkout, when: paid, key: "param:id" }
    response:
      template: true
      json: { id: "{{request.params.id}}" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_are_versioned_deployed_exported_and_imported() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let node = Node::start(dir.path(), &plane.url()).await.unwrap();
    let cli = Cli {
        server: plane.url(),
        token: plane.token.as_deref(),
    };
    cli.ok(&["workspace", "create", "shop"]).await;
    let created = json(
        &cli.ok(&[
            "-o",
            "json",
            "scenario",
            "create",
            "shop",
            "checkout",
            "--description",
            "The checkout flow",
            "--tag",
            "payments",
            "--tag",
            "[reality]",
        ])
        .await,
    );
    assert_eq!(
        created["tags"],
        serde_json::json!(["payments", "[Reality]"])
    );
    assert_eq!(created["pillars"], serde_json::json!(["Reality"]));
    let mocks = write(dir.path(), "checkout.yaml", CHECKOUT);
    cli.ok(&[
        "route",
        "add",
        "shop",
        "--file",
        &mocks,
        "--scenario",
        "checkout",
    ])
    .await;
    let routes = json(
        &cli.ok(&[
            "-o",
            "json",
            "route",
            "list",
            "shop",
            "--scenario",
            "checkout",
        ])
        .await,
    );
    assert_eq!(routes.as_array().unwrap().len(), 3);
    assert_eq!(routes[0]["scenario"], "checkout");
    assert!(routes[0].get("state").is_none(), "{}", routes[0]);
    assert_eq!(routes[1]["state"]["key"], "param:id");
    let default = json(
        &cli.ok(&[
            "-o",
            "json",
            "routes",
            "list",
            "shop",
            "--scenario",
            "default",
        ])
        .await,
    );
    assert_eq!(default.as_array().unwrap().len(), 0);

    // Contract checks travel with the scenario: frozen into its version,
    // exported and imported with it.
    let checks = write(
        dir.path(),
        "checkout-checks.yaml",
        "- name: total in euros\n  request: { path: \"/checkout/total?currency=EUR\" }\n  expect: { status: 200, body: { total: 42 } }\n",
    );
    cli.ok(&[
        "scenario", "update", "shop", "checkout", "--checks", &checks,
    ])
    .await;
    // Freeze, and serve the version in test (without test's 1% errors).
    let version = json(
        &cli.ok(&[
            "-o", "json", "scenario", "version", "shop", "checkout", "--note", "first",
        ])
        .await,
    );
    assert_eq!(
        (version["version"].clone(), version["routes"].clone()),
        (1.into(), 3.into())
    );
    cli.ok(&["env", "update", "shop", "test", "--reality", "1"])
        .await;
    let deployed = cli
        .ok(&["scenario", "deploy", "shop", "checkout", "--env", "test"])
        .await;
    assert!(
        deployed
            .lines()
            .any(|line| line.split_whitespace().eq(["environment", "test"])),
        "{deployed}"
    );
    let total = eventually("test to serve the deployed version", || async {
        let reply = node
            .send_with(
                "GET",
                "/w/shop/checkout/total?currency=EUR",
                &[("x-mockplane-env", "test")],
                "",
            )
            .await
            .ok()?;
        (reply.status == 200).then_some(reply)
    })
    .await;
    assert_eq!(total.json()["total"], 42);
    assert_eq!(total.headers["x-mock"], "yes");
    let table = cli.ok(&["scenarios", "list", "shop"]).await;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "ROUTES", "VERSION", "DEPLOYED", "TAGS"]);
    assert_eq!(
        rows[1],
        ["checkout", "3", "1", "test", "v1", "payments,", "[Reality]"],
        "{table}"
    );
    let versions = json(
        &cli.ok(&["-o", "json", "scenario", "versions", "shop", "checkout"])
            .await,
    );
    assert_eq!(versions[0]["note"], "first");
    let error = cli.fails(&["scenario", "delete", "shop", "checkout"]).await;
    assert!(error.contains("FailedPrecondition"), "{error}");

    // Export writes a scenario file: YAML, or JSON with --output json,
    // the routes in mock-file form; a version exports the same.
    let exported = cli.ok(&["scenario", "export", "shop", "checkout"]).await;
    assert!(
        exported.starts_with("scenario:\n  name: checkout\n"),
        "{exported}"
    );
    assert!(
        exported.contains("\nroutes:\n- name: total\n"),
        "{exported}"
    );
    let first = json(
        &cli.ok(&["-o", "json", "scenario", "export", "shop", "checkout"])
            .await,
    );
    assert_eq!(first["scenario"]["description"], "The checkout flow");
    assert_eq!(first["scenario"]["checks"][0]["name"], "total in euros");
    assert_eq!(first["routes"][0]["match"]["query"][0]["equals"], "EUR");
    assert_eq!(first["routes"][0]["response"]["json"]["total"], 42);
    assert_eq!(first["routes"][1]["state"]["set"], "paid");
    assert_eq!(first["routes"][1]["response"]["headers"][1]["value"], "b=2");
    assert_eq!(first["routes"][2]["response"]["template"], true);
    let from_version = cli
        .ok(&["scenario", "export", "shop", "checkout", "--version", "1"])
        .await;
    assert_eq!(from_version, exported);

    // Import it under another name; working copies are served together,
    // so the original's goes first (test keeps serving version 1). Its
    // export is the first one, but for the name.
    let file = write(dir.path(), "checkout-export.yaml", &exported);
    cli.ok(&["route", "remove", "shop", "--all"]).await;
    let imported = cli
        .ok(&[
            "scenario", "import", "shop", "--file", &file, "--name", "copy",
        ])
        .await;
    assert!(
        imported.starts_with("scenario copy: 3 routes"),
        "{imported}"
    );
    let again = cli.ok(&["scenario", "export", "shop", "copy"]).await;
    assert_eq!(again, exported.replacen("name: checkout", "name: copy", 1));
    let again = json(
        &cli.ok(&["-o", "json", "scenario", "export", "shop", "copy"])
            .await,
    );
    let mut expected = first.clone();
    expected["scenario"]["name"] = "copy".into();
    assert_eq!(again, expected);
    node.wait_for("/w/shop/checkout/total?currency=EUR", 200, |b| {
        b.contains("42")
    })
    .await;

    // A broken scenario file names the field; nothing is created.
    let broken = write(
        dir.path(),
        "broken-scenario.yaml",
        "scenario: { name: broken }\nroutes:\n  - path: /a\n  - path: /b\n    state: { machine: m, when: x, key: \"cookie:id\" }\n",
    );
    let error = cli
        .fails(&["scenario", "import", "shop", "-f", &broken])
        .await;
    assert!(
        error.contains("broken-scenario.yaml") && error.contains("routes[1].state.key"),
        "{error}"
    );
    let error = cli.fails(&["scenario", "get", "shop", "broken"]).await;
    assert!(error.contains("NotFound"), "{error}");

    // OpenAPI: a route per operation, answering with the examples.
    let petstore = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/petstore.yaml");
    let imported = json(
        &cli.ok(&[
            "-o",
            "json",
            "scenario",
            "import-openapi",
            "shop",
            "petstore",
            "--file",
            petstore,
            "--tag",
            "[Contracts]",
        ])
        .await,
    );
    assert_eq!(imported["scenario"]["name"], "petstore");
    assert!(imported["routes"].as_array().unwrap().len() > 1);
    let pets = node
        .wait_for("/w/shop/pets", 200, |b| b.contains("Rex"))
        .await;
    assert_eq!(pets.json()[1]["name"], "Tom");
}

/// A templated route that reads the persona, and a cart that remembers.
const STATEFUL: &str = r#"
routes:
  - name: me
    path: /me
    response:
      template: true
      json: { name: "{{persona.user.name}}" }
  - { name: empty cart, path: /cart, state: { machine: cart, when: started }, response: { body: empty } }
  - { name: fill cart, method: POST, path: /cart, state: { machine: cart, set: full }, response: { status: 201 } }
  - { name: full cart, path: /cart, state: { machine: cart, when: full }, response: { body: full } }
  - { name: clear cart, method: DELETE, path: /cart, state: { machine: cart, when: full, set: started }, response: { status: 204 } }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personas_state_and_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let node = Node::start(dir.path(), &plane.url()).await.unwrap();
    let cli = Cli {
        server: plane.url(),
        token: plane.token.as_deref(),
    };
    cli.ok(&["workspace", "create", "app"]).await;

    // Personas: YAML or JSON in, JSON objects out, versioned.
    let ada = write(dir.path(), "ada.yaml", "user:\n  name: Ada Lovelace\n");
    let created = cli
        .ok(&[
            "persona",
            "create",
            "app",
            "default",
            "--file",
            &ada,
            "--reason",
            "seed personas",
        ])
        .await;
    assert!(
        created
            .lines()
            .any(|line| line.split_whitespace().eq(["version", "1"])),
        "{created}"
    );
    let broken = write(dir.path(), "list.yaml", "- Ada\n- Grace\n");
    let error = cli
        .fails(&[
            "persona",
            "create",
            "app",
            "list",
            "-f",
            &broken,
            "--reason",
            "seed personas",
        ])
        .await;
    assert!(
        error.contains("list.yaml") && error.contains("data: must be a JSON object"),
        "{error}"
    );
    let mocks = write(dir.path(), "app.yaml", STATEFUL);
    cli.ok(&["route", "add", "app", "-f", &mocks]).await;
    node.wait_for("/w/app/me", 200, |b| b.contains("Ada Lovelace"))
        .await;
    let grace = write(
        dir.path(),
        "grace.json",
        r#"{"user": {"name": "Grace Hopper"}}"#,
    );
    let persona = json(
        &cli.ok(&["-o", "json", "personas", "get", "app", "default"])
            .await,
    );
    let etag = persona["etag"].as_str().unwrap().to_owned();
    cli.ok(&[
        "persona",
        "update",
        "app",
        "default",
        "-f",
        &grace,
        "--etag",
        &etag,
        "--reason",
        "new persona",
    ])
    .await;
    node.wait_for("/w/app/me", 200, |b| b.contains("Grace Hopper"))
        .await;
    let first = json(
        &cli.ok(&[
            "-o",
            "json",
            "persona",
            "get",
            "app",
            "default",
            "--version",
            "1",
        ])
        .await,
    );
    assert_eq!(first["data"]["user"]["name"], "Ada Lovelace");
    let listed = cli.ok(&["persona", "list", "app"]).await;
    assert!(
        listed.lines().nth(1).unwrap().starts_with("default  2"),
        "{listed}"
    );

    // State: the cart answers by what came before, until a reset.
    let routes = json(&cli.ok(&["-o", "json", "route", "list", "app"]).await);
    assert!(routes[0].get("state").is_none(), "{}", routes[0]);
    assert_eq!(
        routes[2]["state"],
        serde_json::json!({"machine": "cart", "set": "full"})
    );
    node.wait_for("/w/app/cart", 200, |b| b == "empty").await;
    let refused = node.send("DELETE", "/w/app/cart").await.unwrap();
    assert_eq!(refused.status, 404, "{}", refused.body);
    assert_eq!(node.send("POST", "/w/app/cart").await.unwrap().status, 201);
    assert_eq!(node.get("/w/app/cart").await.unwrap().body, "full");
    let reset = cli
        .ok(&[
            "workspace",
            "reset-state",
            "app",
            "--reason",
            "fresh state for a run",
        ])
        .await;
    assert!(
        reset.starts_with("workspace: app, state_epoch: 1"),
        "{reset}"
    );
    node.wait_for("/w/app/cart", 200, |b| b == "empty").await;

    // The journal: what answered, and why the DELETE found no route.
    let misses = eventually("the journal to show the miss", || async {
        let output = cli
            .run(&["-o", "json", "journal", "app", "--unmatched"])
            .await;
        let entries: Value = serde_json::from_slice(&output.stdout).ok()?;
        (!entries.as_array()?.is_empty()).then_some(entries)
    })
    .await;
    let miss = &misses[0];
    assert_eq!(
        (&miss["method"], &miss["status"], &miss["route"]),
        (
            &Value::from("DELETE"),
            &Value::from(404),
            &Value::from("no_route_matched")
        )
    );
    assert_eq!(miss["miss"]["code"], "no_route_matched");
    let near = &miss["miss"]["near_misses"][0];
    assert_eq!(near["name"], "clear cart");
    assert!(
        near["reasons"][0].as_str().unwrap().contains("'full'"),
        "{near}"
    );
    let table = cli
        .ok(&[
            "journal",
            "app",
            "--method",
            "post",
            "--path",
            "/w/app/ca",
            "--limit",
            "5",
        ])
        .await;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "TIME", "ENV", "METHOD", "PATH", "STATUS", "OUTCOME", "ROUTE"
        ]
    );
    assert_eq!(rows.len(), 2, "{table}");
    assert_eq!(
        rows[1][2..],
        [
            "dev",
            "POST",
            "/w/app/cart",
            "201",
            "matched",
            "fill",
            "cart"
        ]
    );

    // A state rule that cannot work names the route and the field.
    let broken = write(
        dir.path(),
        "broken-state.yaml",
        "routes:\n  - path: /a\n  - path: /orders/{id}\n    state: { machine: order, when: paid, key: \"param:order\" }\n",
    );
    let error = cli.fails(&["route", "add", "app", "-f", &broken]).await;
    assert!(
        error.contains("broken-state.yaml")
            && error.contains("routes[1].state.key")
            && error.contains("no parameter \"order\""),
        "{error}"
    );
}

/// `mockplane` with its own config directory, where `login` keeps the
/// session.
struct WithSession<'a> {
    cli: Cli<'a>,
    config: String,
}

impl WithSession<'_> {
    fn env(&self) -> [(&'static str, &str); 1] {
        [("MOCKPLANE_CONFIG_DIR", self.config.as_str())]
    }

    async fn ok(&self, args: &[&str]) -> String {
        self.cli.ok_with(args, &self.env(), None).await
    }

    async fn fails(&self, args: &[&str]) -> String {
        self.cli.fails_with(args, &self.env(), None).await
    }

    async fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        self.cli.ok_with(args, &self.env(), Some(stdin)).await
    }

    async fn fails_stdin(&self, args: &[&str], stdin: &str) -> String {
        self.cli.fails_with(args, &self.env(), Some(stdin)).await
    }

    /// stdout and stderr of a command that must succeed.
    async fn both(&self, args: &[&str]) -> (String, String) {
        let output = self.cli.run_with(args, &self.env(), None).await;
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            output.status.success(),
            "mockplane {args:?} failed:\n{stderr}"
        );
        (String::from_utf8(output.stdout).unwrap(), stderr)
    }

    fn session_file(&self) -> std::path::PathBuf {
        Path::new(&self.config).join("session.json")
    }
}

/// A table line with exactly these cells (separated by whitespace).
fn has_row(table: &str, cells: &[&str]) -> bool {
    table
        .lines()
        .any(|line| line.split_whitespace().eq(cells.iter().copied()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_and_manages_users_roles_members_policies_and_tokens() {
    use std::os::unix::fs::PermissionsExt as _;

    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let email = plane.process.event("bootstrap", "admin_email").unwrap();
    let password = plane.process.event("bootstrap", "admin_password").unwrap();
    let me = WithSession {
        cli: Cli {
            server: plane.url(),
            token: None,
        },
        config: dir.path().join("owner-config").display().to_string(),
    };

    // Without a token or a session, the hint says how to get one.
    let error = me.fails(&["whoami"]).await;
    assert!(
        error.contains("Unauthenticated") && error.contains("mockplane login"),
        "{error}"
    );
    let error = me
        .fails_stdin(
            &["login", "--email", &email, "--password-stdin"],
            "not the password\n",
        )
        .await;
    assert!(error.contains("wrong e-mail or password"), "{error}");
    assert!(!me.session_file().exists());
    let error = me
        .fails_stdin(&["login", "--password-stdin"], &format!("{password}\n"))
        .await;
    assert!(error.contains("needs --email"), "{error}");

    // Log in: the session is saved privately, for this server.
    let out = me
        .ok_stdin(
            &["login", "--email", &email, "--password-stdin"],
            &format!("{password}\n"),
        )
        .await;
    assert!(
        out.contains(&format!("logged in to {} as {email}", plane.url())),
        "{out}"
    );
    let mode = std::fs::metadata(me.session_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let saved = json(&std::fs::read_to_string(me.session_file()).unwrap());
    assert_eq!(saved["server"], plane.url());
    assert!(!saved["refresh_token"].as_str().unwrap().is_empty());

    // The first run's password is a one-time one: the session may only
    // change it. The change ends the session, and the CLI logs in again.
    let error = me.fails(&["workspace", "list"]).await;
    assert!(
        error.contains("one-time password") && error.contains("FailedPrecondition"),
        "{error}"
    );
    let changed = json(
        &me.ok_stdin(
            &["-o", "json", "user", "passwd", "--password-stdin"],
            &format!("{password}\ncorrect horse battery staple\n"),
        )
        .await,
    );
    assert_eq!(changed["session_renewed"], true, "{changed}");
    let renewed = json(&std::fs::read_to_string(me.session_file()).unwrap());
    assert_ne!(renewed["refresh_token"], saved["refresh_token"]);
    me.ok(&["workspace", "list"]).await;

    let who = me.ok(&["whoami"]).await;
    assert!(has_row(&who, &["credential", "access_token"]), "{who}");
    assert!(has_row(&who, &["org_role", "owner"]), "{who}");
    let who = json(&me.ok(&["-o", "json", "whoami"]).await);
    assert_eq!(who["email"], email.as_str());
    assert!(who.get("environment").is_none(), "{who}");
    // The session is for this server only: not even sent to the same
    // server under another name.
    let other_name = plane.url().replace("127.0.0.1", "localhost");
    let error = me.fails(&["--server", &other_name, "whoami"]).await;
    let for_session = format!("the session of `mockplane login` is for {}", plane.url());
    assert!(
        error.contains("Unauthenticated") && error.contains(&for_session),
        "{error}"
    );

    me.ok(&["workspace", "create", "shop"]).await;

    // Users: a generated one-time password is shown once.
    let dev = json(
        &me.ok(&[
            "-o",
            "json",
            "user",
            "create",
            "dev@example.com",
            "--name",
            "Dev",
        ])
        .await,
    );
    let dev_id = dev["id"].as_str().unwrap().to_owned();
    let one_time = dev["one_time_password"].as_str().unwrap().to_owned();
    assert_eq!(dev["org_role"], "member");
    let (out, note) = me.both(&["user", "create", "ops@example.com"]).await;
    assert!(out.contains("one_time_password"), "{out}");
    assert!(note.contains("shown only now"), "{note}");
    let error = me.fails(&["user", "create", "not-an-address"]).await;
    assert!(
        error.contains("\"not-an-address\" is not an e-mail address"),
        "{error}"
    );
    let users = me.ok(&["user", "list", "--kind", "user"]).await;
    for email in [email.as_str(), "dev@example.com", "ops@example.com"] {
        assert!(users.contains(email), "{users}");
    }
    let disabled = json(
        &me.ok(&["-o", "json", "user", "update", &dev_id, "--disable"])
            .await,
    );
    assert_eq!(disabled["disabled"], true);
    let enabled = json(
        &me.ok(&["-o", "json", "user", "update", &dev_id, "--enable"])
            .await,
    );
    assert_eq!(enabled["disabled"], false);
    let error = me.fails(&["user", "update", &dev_id]).await;
    assert!(error.contains("nothing to change"), "{error}");
    let got = json(&me.ok(&["-o", "json", "user", "get", &dev_id]).await);
    assert_eq!(got["name"], "Dev");

    // The new user logs in with the one-time password and changes it.
    let dev = WithSession {
        cli: Cli {
            server: plane.url(),
            token: None,
        },
        config: dir.path().join("dev-config").display().to_string(),
    };
    let login = ["login", "--email", "dev@example.com", "--password-stdin"];
    dev.ok_stdin(&login, &format!("{one_time}\n")).await;
    let error = dev
        .fails_stdin(
            &["user", "passwd", "--password-stdin"],
            "not my password\nmy new password, long\n",
        )
        .await;
    assert!(error.contains("current password is wrong"), "{error}");
    let error = dev
        .fails_stdin(
            &["user", "passwd", "--password-stdin"],
            &format!("{one_time}\n"),
        )
        .await;
    assert!(
        error.contains("line 2") && error.contains("missing"),
        "{error}"
    );
    dev.ok_stdin(
        &["user", "passwd", "--password-stdin"],
        &format!("{one_time}\nmy new password, long\n"),
    )
    .await;
    let error = dev.fails_stdin(&login, &format!("{one_time}\n")).await;
    assert!(error.contains("wrong e-mail or password"), "{error}");
    dev.ok_stdin(&login, "my new password, long\n").await;

    // Roles: the server's own words for what is wrong.
    let error = me
        .fails(&[
            "role",
            "create",
            "platform",
            "--permission",
            "environment.read,environment.nope",
        ])
        .await;
    assert!(
        error.contains("`environment.nope` is not a permission")
            && error.contains("InvalidArgument"),
        "{error}"
    );
    let error = me
        .fails(&[
            "role",
            "create",
            "editor",
            "--permission",
            "environment.read",
        ])
        .await;
    assert!(error.contains("`editor` is a built-in role"), "{error}");
    let role = json(
        &me.ok(&[
            "-o",
            "json",
            "role",
            "create",
            "platform",
            "--permission",
            "environment.read",
            "--permission",
            "environment.reality",
            "--description",
            "The platform team",
        ])
        .await,
    );
    assert_eq!(
        role["permissions"],
        serde_json::json!(["environment.read", "environment.reality"])
    );
    let etag = role["etag"].as_str().unwrap().to_owned();
    me.ok(&[
        "role",
        "update",
        "platform",
        "--permission",
        "environment.read,environment.reality,environment.chaos",
        "--etag",
        &etag,
    ])
    .await;
    let error = me
        .fails(&[
            "role",
            "update",
            "platform",
            "--permission",
            "environment.read",
            "--etag",
            &etag,
        ])
        .await;
    assert!(error.contains("Aborted"), "{error}");
    let roles = me.ok(&["role", "list"]).await;
    assert!(
        roles
            .lines()
            .any(|l| l.starts_with("platform") && l.contains("environment.chaos")),
        "{roles}"
    );
    assert!(roles.lines().any(|l| l.starts_with("viewer")), "{roles}");
    let permissions = me.ok(&["role", "permissions"]).await;
    assert!(
        permissions.starts_with("NAME") && permissions.lines().next().unwrap().contains("REACH"),
        "{permissions}"
    );
    assert!(
        permissions
            .lines()
            .any(|l| l.starts_with("environment.reality")
                && l.contains(" environment ")
                && l.contains("reality level")),
        "{permissions}"
    );

    // Prod asks for an environment token, given for a reason.
    let error = me
        .fails(&["member", "set", "shop", "prod", &dev_id, "platform"])
        .await;
    assert!(
        error.contains("mockplane env-token shop prod") && error.contains("PermissionDenied"),
        "{error}"
    );
    let error = me.fails(&["env-token", "shop", "prod"]).await;
    assert!(error.contains("needs --reason"), "{error}");
    let error = me
        .fails(&["env-token", "shop", "prod", "--reason", "short"])
        .await;
    assert!(error.contains("8 to 500"), "{error}");
    let (out, hint) = me
        .both(&[
            "env-token",
            "shop",
            "prod",
            "--reason",
            "looking at prod access",
        ])
        .await;
    assert!(
        out.starts_with("token ") && out.contains("\nexpires "),
        "{out}"
    );
    assert!(
        hint.contains("MOCKPLANE_TOKEN=") && hint.contains("mockplane env update shop prod"),
        "{hint}"
    );
    let issued = json(
        &me.ok(&[
            "-o",
            "json",
            "env-token",
            "shop",
            "prod",
            "--reason",
            "granting platform in prod",
        ])
        .await,
    );
    let prod_token = issued["token"].as_str().unwrap().to_owned();
    assert!(!issued["expires"].as_str().unwrap().is_empty());
    // --token wins over the session, and is used as is.
    let prod = WithSession {
        cli: Cli {
            server: plane.url(),
            token: Some(&prod_token),
        },
        config: me.config.clone(),
    };
    let who = json(&prod.ok(&["-o", "json", "whoami"]).await);
    assert_eq!(
        (&who["credential"], &who["environment"]),
        (&Value::from("environment_token"), &Value::from("prod"))
    );
    let set = prod
        .ok(&["member", "set", "shop", "prod", &dev_id, "platform"])
        .await;
    assert!(has_row(&set, &["role", "platform"]), "{set}");
    prod.ok(&[
        "policy",
        "set",
        "shop",
        "prod",
        "environment.reality",
        "platform",
    ])
    .await;
    let error = prod
        .fails(&["member", "set", "shop", "dev", &dev_id, "viewer"])
        .await;
    assert!(
        error.contains("scoped to the `prod` environment"),
        "{error}"
    );
    me.ok(&["member", "set", "shop", "dev", &dev_id, "editor"])
        .await;
    let error = me
        .fails(&["member", "set", "shop", "dev", &dev_id, "nobody"])
        .await;
    assert!(error.contains("nobody"), "{error}");

    let members = me.ok(&["member", "list", "shop"]).await;
    assert!(
        has_row(&members, &["prod", "Dev", "platform", &dev_id]),
        "{members}"
    );
    assert!(
        has_row(&members, &["dev", "Dev", "editor", &dev_id]),
        "{members}"
    );
    let policies = me.ok(&["policy", "list", "shop"]).await;
    assert!(
        has_row(&policies, &["prod", "environment.reality", "platform"]),
        "{policies}"
    );
    let policies = json(&me.ok(&["-o", "json", "policy", "list", "shop"]).await);
    assert_eq!(policies[0]["roles"], serde_json::json!(["platform"]));

    // The policy decides in prod: the platform member may change reality
    // there, the owner may not.
    let dev_token = json(
        &dev.ok(&[
            "-o",
            "json",
            "env-token",
            "shop",
            "prod",
            "--reason",
            "raising prod reality",
        ])
        .await,
    )["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let as_dev = Cli {
        server: plane.url(),
        token: Some(&dev_token),
    };
    as_dev
        .ok(&["env", "update", "shop", "prod", "--reality", "4"])
        .await;
    let error = prod
        .fails(&["env", "update", "shop", "prod", "--reality", "3"])
        .await;
    assert!(error.contains("PermissionDenied"), "{error}");
    let log = me.ok(&["access-log", "shop"]).await;
    assert!(
        log.contains("granting platform in prod") && log.contains("raising prod reality"),
        "{log}"
    );
    assert!(log.contains("dev@example.com"), "{log}");

    prod.ok(&["policy", "delete", "shop", "prod", "environment.reality"])
        .await;
    prod.ok(&["member", "remove", "shop", "prod", &dev_id])
        .await;
    let members = me.ok(&["-o", "json", "member", "list", "shop"]).await;
    assert!(!members.contains("platform"), "{members}");
    let error = me.fails(&["role", "delete", "editor"]).await;
    assert!(error.contains("built-in"), "{error}");

    // API tokens: the secret once, then it works until revoked.
    let (out, note) = me
        .both(&["api-token", "create", "--name", "ci", "--ttl-days", "30"])
        .await;
    assert!(note.contains("not shown again"), "{note}");
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(secret.starts_with("mpt_"), "{out}");
    let token_id = out
        .lines()
        .find_map(|l| l.strip_prefix("id "))
        .unwrap()
        .trim()
        .to_owned();
    let ci = Cli {
        server: plane.url(),
        token: Some(&secret),
    };
    let who = ci.ok(&["whoami"]).await;
    assert!(has_row(&who, &["credential", "api_token"]), "{who}");
    let tokens = json(&me.ok(&["-o", "json", "api-token", "list"]).await);
    assert!(
        tokens
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == token_id.as_str() && t["name"] == "ci" && t["secret"].is_null()),
        "{tokens}"
    );
    let robot = json(
        &me.ok(&["-o", "json", "service-account", "create", "deployer"])
            .await,
    );
    let robot_id = robot["id"].as_str().unwrap();
    assert_eq!(robot["kind"], "service");
    me.ok(&[
        "api-token",
        "create",
        "--for",
        robot_id,
        "--name",
        "deploys",
    ])
    .await;
    let robot_tokens = me.ok(&["api-token", "list", "--for", robot_id]).await;
    assert!(robot_tokens.contains("deploys"), "{robot_tokens}");
    let services = me.ok(&["user", "list", "--kind", "service"]).await;
    assert!(
        services.contains("deployer") && !services.contains("dev@example.com"),
        "{services}"
    );
    me.ok(&["api-token", "revoke", &token_id]).await;
    let error = ci.fails(&["whoami"]).await;
    assert!(
        error.contains("the API token is not valid")
            && error.contains(&format!("the API token {}…", &secret[..8]))
            && error.contains("MOCKPLANE_TOKEN"),
        "{error}"
    );

    // An access token about to expire is renewed, and the new pair saved.
    let before = std::fs::read_to_string(me.session_file()).unwrap();
    let mut expiring = json(&before);
    expiring["access_token_expire_time"] = Value::from("2000-01-01T00:00:00Z");
    std::fs::write(me.session_file(), expiring.to_string()).unwrap();
    me.ok(&["whoami"]).await;
    let renewed = json(&std::fs::read_to_string(me.session_file()).unwrap());
    assert_ne!(renewed["access_token"], expiring["access_token"]);
    assert_ne!(renewed["refresh_token"], expiring["refresh_token"]);
    assert_ne!(
        renewed["access_token_expire_time"],
        expiring["access_token_expire_time"]
    );
    let mode = std::fs::metadata(me.session_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A refresh token works once: using the old one again ends the session.
    std::fs::write(me.session_file(), expiring.to_string()).unwrap();
    let error = me.fails(&["whoami"]).await;
    assert!(
        error.contains("already used") && error.contains("log in again"),
        "{error}"
    );

    // Logging out ends the session on the control plane too (ending the
    // one above, already ended, succeeds).
    let (out, notes) = me.both(&["logout"]).await;
    assert!(out.contains("logged_out: true"), "{out}");
    assert!(notes.is_empty(), "{notes}");
    me.ok_stdin(
        &["login", "--email", &email, "--password-stdin"],
        "correct horse battery staple\n",
    )
    .await;
    let (out, notes) = me.both(&["logout"]).await;
    assert!(out.contains("logged_out: true"), "{out}");
    assert!(notes.is_empty(), "{notes}");
    // A session file that cannot be read is still removed.
    std::fs::write(me.session_file(), "not a session").unwrap();
    let (out, notes) = me.both(&["logout"]).await;
    assert!(out.contains("logged_out: true"), "{out}");
    assert!(notes.contains("removing it without ending"), "{notes}");
    assert!(!me.session_file().exists());
    assert!(!me.session_file().exists());
    let error = me.fails(&["whoami"]).await;
    assert!(error.contains("mockplane login"), "{error}");
}

/// The value of `field` in the `field  value` lines of a one-item table.
fn field(table: &str, name: &str) -> String {
    table
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no field {name}:\n{table}"))
}

/// stdout and stderr of a command that must succeed.
async fn both(cli: &Cli<'_>, args: &[&str]) -> (String, String) {
    let output = cli.run(args).await;
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        output.status.success(),
        "mockplane {args:?} failed:\n{stderr}"
    );
    (String::from_utf8(output.stdout).unwrap(), stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_close_the_mocks_and_show_in_the_audit_trail_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    // It tampers with the SQLite file by hand below.
    let sqlite = format!("sqlite://{}", dir.path().join("control-plane.db").display());
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", Some(&sqlite))
        .await
        .unwrap();
    let cli = Cli {
        server: plane.url(),
        token: plane.token.as_deref(),
    };
    cli.workspace_with_mocks(dir.path(), "gate", MOCKS).await;
    let node = Node::start_with(dir.path(), &plane.url(), &["--usage-interval-secs", "1"])
        .await
        .unwrap();
    node.wait_for("/w/gate/hello", 200, |b| b.contains("hello"))
        .await;

    // A dev key: its secret once, with how to send it.
    let (out, note) = both(
        &cli,
        &[
            "api-key",
            "create",
            "gate",
            "dev",
            "--name",
            "checkout-service",
        ],
    )
    .await;
    assert!(
        note.contains("not shown again") && note.contains("x-mockplane-key"),
        "{note}"
    );
    let secret = field(&out, "secret");
    let key_id = field(&out, "id");
    assert!(secret.starts_with("mpk_"), "{out}");
    assert_eq!(field(&out, "environment"), "dev");
    assert_eq!(field(&out, "name"), "checkout-service");
    assert_eq!(field(&out, "hint"), secret[..10]);
    assert_eq!(field(&out, "expires"), "-");

    // The server's words for what is wrong, and the option that fixes it.
    let error = cli
        .fails(&[
            "api-key",
            "create",
            "gate",
            "test",
            "--test",
            "--ttl-secs",
            "3600",
        ])
        .await;
    assert!(
        error.contains("a test key needs a reason")
            && error.contains("InvalidArgument")
            && error.contains("--reason"),
        "{error}"
    );
    let error = cli.fails(&["api-key", "create", "gate", "nope"]).await;
    assert!(
        error.contains("nope") && error.contains("NotFound"),
        "{error}"
    );
    let error = cli
        .fails(&[
            "--reason",
            "trying dev with a test key",
            "api-key",
            "create",
            "gate",
            "dev",
            "--test",
            "--ttl-secs",
            "3600",
        ])
        .await;
    assert!(
        error.contains("make a normal key for it") && error.contains("FailedPrecondition"),
        "{error}"
    );
    let error = cli
        .fails(&[
            "--reason",
            "a key for prod traffic",
            "api-key",
            "create",
            "gate",
            "prod",
        ])
        .await;
    assert!(
        error.contains("mockplane env-token gate prod") && error.contains("PermissionDenied"),
        "{error}"
    );
    let test_key = json(
        &cli.ok(&[
            "-o",
            "json",
            "--reason",
            "trying the test environment",
            "api-key",
            "create",
            "gate",
            "test",
            "--test",
            "--ttl-secs",
            "3600",
        ])
        .await,
    );
    assert_eq!(
        (&test_key["test"], &test_key["reason"], &test_key["name"]),
        (
            &Value::from(true),
            &Value::from("trying the test environment"),
            &Value::from("test test key")
        )
    );
    assert!(test_key["secret"].as_str().unwrap().starts_with("mpk_"));
    assert!(test_key["expires"].is_string(), "{test_key}");

    // Requiring keys reaches prod: it needs a reason.
    let error = cli
        .fails(&["workspace", "update", "gate", "--require-api-keys", "true"])
        .await;
    assert!(error.contains("`prod` requires a reason"), "{error}");
    let updated = cli
        .ok(&[
            "--reason",
            "closing the mocks to strangers",
            "workspace",
            "update",
            "gate",
            "--require-api-keys",
            "true",
        ])
        .await;
    assert!(has_row(&updated, &["require_api_keys", "yes"]), "{updated}");
    let refused = eventually("the node to require a key", || async {
        let reply = node.send_with("GET", "/w/gate/hello", &[], "").await.ok()?;
        (reply.status == 401).then_some(reply)
    })
    .await;
    assert_eq!(refused.error_code(), "api_key_required");
    let with_key = [("x-mockplane-key", secret.as_str())];
    let reply = node
        .send_with("GET", "/w/gate/hello", &with_key, "")
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);

    // Listing shows the keys, never their secrets.
    let table = cli.ok(&["api-key", "list", "gate"]).await;
    assert_eq!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        [
            "ID",
            "ENVIRONMENT",
            "NAME",
            "HINT",
            "TEST",
            "EXPIRES",
            "EXPIRED",
            "LAST_USED"
        ]
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&key_id) && l.contains("checkout-service")),
        "{table}"
    );
    assert!(!table.contains(&secret), "{table}");
    let keys = json(
        &cli.ok(&["-o", "json", "api-key", "list", "gate", "--env", "dev"])
            .await,
    );
    assert_eq!(keys.as_array().unwrap().len(), 1, "{keys}");
    assert_eq!(keys[0]["id"], key_id.as_str());
    assert_eq!(keys[0]["hint"], &secret[..10]);
    assert!(keys[0].get("secret").is_none(), "{keys}");
    // A node reports the key's use with its usage.
    eventually("the key's last use to be reported", || async {
        let keys = json(
            &cli.ok(&["-o", "json", "api-key", "list", "gate", "--env", "dev"])
                .await,
        );
        keys[0]["last_used"].is_string().then_some(())
    })
    .await;

    // Usage counts what dev served: the requests before keys were
    // required and the one with the key; refusals are not usage.
    let usage = eventually("usage to count the served requests", || async {
        let usage = json(&cli.ok(&["-o", "json", "usage", "gate"]).await);
        let dev = usage["environments"]
            .as_array()?
            .iter()
            .find(|e| e["environment"] == "dev")?
            .clone();
        (dev["requests"].as_u64()? >= 2).then_some(usage)
    })
    .await;
    assert_eq!(usage["workspace"], "gate");
    let table = cli.ok(&["usage", "gate"]).await;
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "ENVIRONMENT",
            "REQUESTS",
            "TEST_REQUESTS",
            "LIMITED_REQUESTS"
        ]
    );
    assert_eq!(
        rows[1..4].iter().map(|r| r[0]).collect::<Vec<_>>(),
        ["dev", "test", "prod"],
        "{table}"
    );
    assert!(rows[1][1].parse::<u64>().unwrap() >= 2, "{table}");
    assert_eq!(rows[3][1..], ["0", "0", "0"], "{table}");
    assert!(
        table
            .lines()
            .last()
            .unwrap()
            .starts_with("window: from the beginning"),
        "{table}"
    );
    let only_prod = json(
        &cli.ok(&[
            "-o",
            "json",
            "usage",
            "gate",
            "--env",
            "prod",
            "--since",
            "2020-01-01",
        ])
        .await,
    );
    assert_eq!(only_prod["environments"].as_array().unwrap().len(), 1);
    assert_eq!(only_prod["since"], "2020-01-01 00:00:00Z");
    let error = cli
        .fails(&[
            "usage",
            "gate",
            "--since",
            "2024-05-02",
            "--until",
            "2024-05-01",
        ])
        .await;
    assert!(error.contains("is before --since"), "{error}");
    let error = cli.fails(&["usage", "nowhere"]).await;
    assert!(
        error.contains("nowhere") && error.contains("NotFound"),
        "{error}"
    );

    // Revoked: nodes refuse the key, and it is gone.
    let out = cli.ok(&["api-key", "revoke", "gate", &key_id]).await;
    assert!(out.contains(&format!("revoked: {key_id}")), "{out}");
    let refused = eventually("the node to refuse the revoked key", || async {
        let reply = node
            .send_with("GET", "/w/gate/hello", &with_key, "")
            .await
            .ok()?;
        (reply.status == 401).then_some(reply)
    })
    .await;
    assert_eq!(refused.error_code(), "api_key_invalid");
    let error = cli.fails(&["api-key", "revoke", "gate", &key_id]).await;
    assert!(error.contains("NotFound"), "{error}");
    let error = cli.fails(&["api-key", "revoke", "gate", "not-an-id"]).await;
    assert!(error.contains("is not a key id"), "{error}");

    // The audit trail has the keys' creation and revocation.
    let table = cli.ok(&["audit", "list", "--action", "api_key."]).await;
    assert_eq!(
        table
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        [
            "SEQ",
            "TIME",
            "ACTOR",
            "ACTION",
            "RESOURCE",
            "ENVIRONMENT",
            "REASON"
        ]
    );
    assert_eq!(
        table
            .lines()
            .filter(|l| l.contains(" api_key.create "))
            .count(),
        2,
        "{table}"
    );
    assert_eq!(
        table
            .lines()
            .filter(|l| l.contains(" api_key.revoke "))
            .count(),
        1,
        "{table}"
    );
    assert!(!table.contains("workspace.update"), "{table}");
    let events = json(
        &cli.ok(&[
            "-o",
            "json",
            "audit",
            "list",
            "--action",
            "api_key.",
            "--workspace",
            "gate",
        ])
        .await,
    );
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    let revoked = &events[0];
    assert_eq!(revoked["action"], "api_key.revoke");
    assert_eq!(revoked["environment"], "dev");
    assert!(
        revoked["resource"].as_str().unwrap().ends_with(&key_id),
        "{revoked}"
    );
    assert_eq!(revoked["summary"]["before"]["name"], "checkout-service");
    assert_eq!(revoked["hash"].as_str().unwrap().len(), 64, "{revoked}");
    assert_eq!(revoked["pruned"], false);
    assert!(revoked["seq"].as_i64().unwrap() > events[1]["seq"].as_i64().unwrap());
    for name in [
        "id",
        "time",
        "actor_id",
        "actor",
        "credential",
        "workspace_id",
        "reason",
        "request_id",
        "prev_hash",
    ] {
        assert!(revoked[name].is_string(), "{name} missing: {revoked}");
    }
    assert_eq!(events[1]["reason"], "trying the test environment");
    let newest = json(
        &cli.ok(&["-o", "json", "audit", "list", "--limit", "1"])
            .await,
    );
    assert_eq!(newest.as_array().unwrap().len(), 1);
    let in_test = json(
        &cli.ok(&[
            "-o", "json", "audit", "list", "--env", "test", "--action", "api_key.",
        ])
        .await,
    );
    assert_eq!(in_test.as_array().unwrap().len(), 1, "{in_test}");
    let none = json(
        &cli.ok(&[
            "-o",
            "json",
            "audit",
            "list",
            "--since",
            "2999-01-01T00:00:00Z",
        ])
        .await,
    );
    assert_eq!(none, Value::Array(Vec::new()));
    let bad = cli.run(&["audit", "list", "--since", "yesterday"]).await;
    let error = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && error.contains("is not a time"),
        "{error}"
    );

    // The chain verifies; prune reports prod as protected.
    let out = cli.ok(&["audit", "verify"]).await;
    assert!(out.starts_with("ok: ") && out.contains("head seq"), "{out}");
    let verified = json(&cli.ok(&["-o", "json", "audit", "verify"]).await);
    assert_eq!(verified["ok"], true);
    assert!(verified["events"].as_u64().unwrap() >= 3, "{verified}");
    let head_seq = verified["head_seq"].as_i64().unwrap();
    assert!(verified.get("broken_seq").is_none(), "{verified}");
    // Nothing is old enough to prune; prod, which requires a reason, never is.
    let out = cli.ok(&["audit", "prune", "--dry-run"]).await;
    assert!(out.contains("nothing would be pruned"), "{out}");
    let out = cli
        .ok(&["audit", "prune", "--retention", "dev=1,prod=1", "--dry-run"])
        .await;
    assert!(
        out.contains("nothing would be pruned") && out.contains("protected (never pruned): prod"),
        "{out}"
    );
    let pruned = json(
        &cli.ok(&[
            "-o",
            "json",
            "audit",
            "prune",
            "--retention",
            "dev=30,prod=90",
            "--dry-run",
        ])
        .await,
    );
    assert_eq!(pruned["dry_run"], true);
    assert_eq!(pruned["protected"], serde_json::json!(["prod"]));
    assert_eq!(
        pruned["pruned"],
        serde_json::json!([{"environment": "dev", "events": 0}])
    );
    let bad = cli.run(&["audit", "prune", "--retention", "dev=0"]).await;
    let error = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && error.contains("at least 1"),
        "{error}"
    );
    let verified = json(&cli.ok(&["-o", "json", "audit", "verify"]).await);
    assert_eq!(
        verified["head_seq"].as_i64().unwrap(),
        head_seq,
        "a dry run changes nothing"
    );

    // Someone edits an event by hand: verify names it and fails.
    let url = format!("sqlite://{}", dir.path().join("control-plane.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("DROP TRIGGER audit_events_prune_only")
        .execute(&pool)
        .await
        .unwrap();
    let target = revoked["seq"].as_i64().unwrap();
    sqlx::query("UPDATE audit_events SET summary = '{\"before\":\"nothing\"}' WHERE seq = ?")
        .bind(target)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let error = cli.fails(&["audit", "verify"]).await;
    assert!(
        error.contains(&format!("broken at seq {target}")) && error.contains("changed"),
        "{error}"
    );
    let broken = cli.run(&["-o", "json", "audit", "verify"]).await;
    assert_eq!(broken.status.code(), Some(1));
    let broken = json(&String::from_utf8(broken.stdout).unwrap());
    assert_eq!(
        (&broken["ok"], &broken["broken_seq"]),
        (&Value::from(false), &Value::from(target))
    );
    assert!(head_seq >= target);
}

/// `up` takes none of the connection flags (and does not list them), and
/// a port in use is refused before a database is opened or created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_refuses_what_it_cannot_use_before_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let help = tokio::process::Command::new(bin("mockplane"))
        .args(["up", "--help"])
        .output()
        .await
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(help.contains("--grpc-listen"), "{help}");
    for flag in ["--server", "--token", "--reason"] {
        assert!(!help.contains(flag), "{flag} listed:\n{help}");
    }
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    for (extra, expected) in [
        (vec!["--grpc-listen", busy.as_str()], "is not free"),
        (vec!["--token", "mpt_x"], "takes no --token"),
    ] {
        let output = tokio::process::Command::new(bin("mockplane"))
            .args(["up", "--data-dir", data.to_str().unwrap()])
            .args([
                "--http-listen",
                "127.0.0.1:0",
                "--ops-listen",
                "127.0.0.1:0",
            ])
            .args(&extra)
            // Set for other commands, the connection variables do not
            // matter to `up`: only flags typed are refused.
            .env("MOCKPLANE_SERVER", "http://127.0.0.1:1")
            .env("MOCKPLANE_TOKEN", "mpt_from_the_environment")
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{extra:?}");
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
        assert!(
            !data.join("control-plane.db").exists(),
            "{extra:?}: the database was opened"
        );
    }
}

/// A mock file larger than one call goes in batches, saying so; two
/// routes of one file that match the same requests are named both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_add_sends_large_files_in_batches_and_names_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let cli = Cli {
        server: plane.url(),
        token: plane.token.as_deref(),
    };
    cli.ok(&["workspace", "create", "big"]).await;
    let many: String = (0..1500)
        .map(|i| format!("- {{path: /r{i}, response: {{body: '{i}'}}}}\n"))
        .collect();
    let file = write(dir.path(), "many.yaml", &many);
    let output = cli.run(&["route", "add", "big", "-f", &file]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("added routes 1–1000 of 1500 (batch 1 of 2)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("added routes 1001–1500 of 1500 (batch 2 of 2)"),
        "{stderr}"
    );
    let listed: Value =
        serde_json::from_str(&cli.ok(&["-o", "json", "route", "list", "big"]).await).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1500);

    let twice = write(
        dir.path(),
        "twice.yaml",
        "- {path: /a}\n- {path: /b}\n- {method: get, path: /a, response: {status: 201}}\n",
    );
    let output = cli.run(&["route", "add", "big", "-f", &twice]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("routes[2] (GET /a) matches the same requests as routes[0]"),
        "{stderr}"
    );

    // A file nested 100 000 levels deep is refused at once, naming where.
    let deep = write(dir.path(), "deep.yaml", &"[".repeat(100_000));
    let output = cli.run(&["route", "add", "big", "-f", &deep]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("nests deeper than 128 levels at line 1, column 129"),
        "{stderr}"
    );
}
