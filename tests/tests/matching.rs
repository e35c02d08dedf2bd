//! Request matchers end to end: written in a mock file, sent by the CLI,
//! stored, streamed, compiled by a node and matched against real requests.

use mockplane_e2e::{Cli, ControlPlane, Node};
use serde_json::Value;

const MOCKS: &str = r#"
routes:
  - name: any user
    path: /users/{id:int}
    response: { json: { plan: free } }
  - name: acme user
    path: /users/{id:int}
    match:
      headers: [{ name: X-Tenant, equals: acme }]
    response: { json: { plan: enterprise } }
  - name: user by handle
    path: /users/{handle:[a-z]+}
    response: { body: handle }
  - name: open orders
    path: /orders
    match:
      query: [{ name: status, equals: open }]
    response: { body: open }
  - name: rush order
    method: POST
    path: /orders
    match:
      body: [{ jsonPath: "$.items[*].sku", regex: "^RUSH-" }]
    response: { status: 201, body: rush }
  - name: exact order
    method: POST
    path: /orders
    match:
      body: [{ json: { kind: gift, items: [1, 2] }, ignoreExtraFields: true, ignoreArrayOrder: true }]
    response: { status: 201, body: gift }
  - name: any order
    method: POST
    path: /orders
    priority: 9
    response: { status: 202, body: queued }
  - name: templated profile
    path: /profiles/{id}
    response:
      template: true
      headers:
        x-echo: "{{request.headers.x-request-id default=none}}"
      json:
        id: "{{request.params.id}}"
        plan: "{{request.query.plan default=free}}"
        name: "{{faker.name seed=request.params.id}}"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matchers_pick_the_route_and_misses_say_why() {
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
    node.wait_for("/w/shop/users/1", 200, |b| b.contains("free"))
        .await;

    let send =
        |method: &'static str, path: &'static str, headers: &'static [(&str, &str)], body| {
            let node = &node;
            async move { node.send_with(method, path, headers, body).await.unwrap() }
        };
    // Headers (names in any case), typed and regex parameters.
    let acme = send("GET", "/w/shop/users/1", &[("x-tenant", "acme")], "").await;
    assert!(acme.body.contains("enterprise"), "{acme:?}");
    assert_eq!(
        send("GET", "/w/shop/users/bob", &[], "").await.body,
        "handle"
    );
    assert_eq!(send("GET", "/w/shop/users/Bob", &[], "").await.status, 404);
    // Query values, decoded.
    assert_eq!(
        send("GET", "/w/shop/orders?status=open", &[], "")
            .await
            .body,
        "open"
    );
    // Bodies: JSONPath, relaxed JSON equality, then the low-priority fallback.
    let rush = send(
        "POST",
        "/w/shop/orders",
        &[],
        r#"{"items":[{"sku":"A"},{"sku":"RUSH-1"}]}"#,
    )
    .await;
    assert_eq!((rush.status, rush.body.as_str()), (201, "rush"));
    let gift = send(
        "POST",
        "/w/shop/orders",
        &[],
        r#"{"items":[2,1],"kind":"gift","note":"hi"}"#,
    )
    .await;
    assert_eq!((gift.status, gift.body.as_str()), (201, "gift"));
    let other = send("POST", "/w/shop/orders", &[], r#"{"items":[]}"#).await;
    assert_eq!((other.status, other.body.as_str()), (202, "queued"));

    // Templates render per request; JSON bodies get JSON-escaped values.
    let profile = send(
        "GET",
        "/w/shop/profiles/a%22b?plan=pro",
        &[("x-request-id", "r-1")],
        "",
    )
    .await;
    assert_eq!(profile.headers["x-echo"], "r-1");
    let json = profile.json();
    assert_eq!(
        (json["id"].as_str(), json["plan"].as_str()),
        (Some("a\"b"), Some("pro"))
    );
    let again = send("GET", "/w/shop/profiles/a%22b", &[], "").await;
    assert_eq!(again.headers["x-echo"], "none");
    assert_eq!(again.json()["plan"], "free");
    assert_eq!(again.json()["name"], json["name"]);

    // A template that does not parse is refused with the route and field.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "routes:\n  - path: /t/{id}\n    response: { template: true, body: '{{request.params.idd}}' }\n",
    )
    .unwrap();
    let err = cli
        .fails(&["route", "add", "shop", "--file", broken.to_str().unwrap()])
        .await;
    assert!(err.contains("response.body"), "{err}");
    assert!(err.contains("no parameter {idd}"), "{err}");

    // Bodies are matched up to 1 MiB; a larger one is refused, not cut.
    let huge = "x".repeat(1024 * 1024 + 1);
    let too_large = node
        .send_with("POST", "/w/shop/orders", &[], &huge)
        .await
        .unwrap();
    assert_eq!(
        (too_large.status, too_large.error_code().as_str()),
        (413, "request_too_large")
    );

    // A miss on matchers lists the near misses and their reasons.
    let miss = send("GET", "/w/shop/orders?status=closed", &[], "").await;
    assert_eq!(
        (miss.status, miss.error_code().as_str()),
        (404, "no_route_matched")
    );
    let near = &miss.json()["error"]["near_misses"][0];
    assert_eq!(near["name"], "open orders");
    assert_eq!(
        near["reasons"][0],
        "query parameter \"status\" must equal \"open\""
    );

    // The file form comes back from `route list`.
    let routes: Value =
        serde_json::from_str(&cli.ok(&["-o", "json", "route", "list", "shop"]).await).unwrap();
    assert_eq!(routes[1]["match"]["headers"][0]["name"], "x-tenant");
    assert_eq!(routes[6]["priority"], 9);

    // Bad matchers are refused with the route and field named, and nothing
    // of the file is added.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "routes:\n  - path: /ok\n  - path: /x\n    match:\n      headers: [{ name: a, regex: '(' }]\n",
    )
    .unwrap();
    let err = cli
        .fails(&["route", "add", "shop", "--file", bad.to_str().unwrap()])
        .await;
    assert!(err.contains("routes[1]"), "{err}");
    assert!(err.contains("invalid regex"), "{err}");
    let count: Value =
        serde_json::from_str(&cli.ok(&["-o", "json", "route", "list", "shop"]).await).unwrap();
    assert_eq!(count.as_array().unwrap().len(), 8);
}
