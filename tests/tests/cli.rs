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

    cli.ok(&["workspace", "delete", "demo"]).await;
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
            "REASON"
        ],
        "{table}"
    );
    assert_eq!(
        rows[1],
        ["dev", "1", "yes", "1", "-", "-", "unlimited", "warn"]
    );
    assert_eq!(rows[2][..4], ["test", "2", "3", "normal"], "{table}");
    assert_eq!(rows[3][..3], ["prod", "3", "4"], "{table}");
    assert!(rows[3].ends_with(&["0", "enforce", "yes"]), "{table}");
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
        .ok(&["workspace", "update", "shop", "--active-env", "test"])
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
