//! How a node maps request paths to workspaces and routes, and what it
//! answers when nothing matches.

use mockplane_e2e::fixtures::{new_workspace, route};
use mockplane_e2e::{ControlPlane, Node};
use mockplane_proto::v1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_name_workspaces_on_whole_segments_and_misses_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let node = Node::start(dir.path(), &plane.url()).await.unwrap();
    let mut api = plane.api(plane.token.as_deref().unwrap()).await;
    for (slug, routes) in [
        (
            "demo",
            vec![
                route("GET", "/a", 200, "a"),
                route("GET", "/users/{id}", 200, "user"),
                route("GET", "/", 200, "root"),
            ],
        ),
        // `/widgets/1` must not reach workspace `idgets`.
        ("idgets", vec![route("GET", "/1", 200, "wrong")]),
    ] {
        api.workspaces
            .create_workspace(new_workspace(slug))
            .await
            .unwrap();
        api.routes
            .create_routes(v1::CreateRoutesRequest {
                workspace: slug.into(),
                routes,
                environment: String::new(),
                scenario: String::new(),
            })
            .await
            .unwrap();
    }
    node.wait_for("/w/idgets/1", 200, |b| b == "wrong").await;
    node.wait_for("/w/demo/a", 200, |b| b == "a").await;

    let widgets = node.get("/widgets/1").await.unwrap();
    assert_eq!(
        (widgets.status, widgets.error_code().as_str()),
        (404, "no_workspace")
    );
    assert!(
        widgets.json()["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("/w/{workspace}")
    );

    // The query string is not part of the path: the route still matches.
    for path in [
        "/w/demo/a?x=1",
        "/workspace/demo/a?x=1&y=",
        "/w/demo/users/7?expand=orders",
    ] {
        let reply = node.get(path).await.unwrap();
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
    }
    assert_eq!(node.get("/w/demo").await.unwrap().body, "root");
    assert_eq!(node.get("/w/demo/").await.unwrap().body, "root");

    let unknown = node.get("/w/nope/a").await.unwrap();
    assert_eq!(
        (unknown.status, unknown.error_code().as_str()),
        (404, "workspace_not_found")
    );
    let upper = node.get("/w/Demo/a").await.unwrap();
    assert!(
        upper.json()["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("'demo'")
    );

    let no_route = node.get("/w/demo/users").await.unwrap();
    assert_eq!(
        (no_route.status, no_route.error_code().as_str()),
        (404, "route_not_found")
    );
    assert_eq!(no_route.headers["content-type"], "application/json");
    let hint = no_route.json()["error"]["hint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(hint.contains("GET /users/{id}"), "{hint}");

    let not_allowed = node.send("DELETE", "/w/demo/a").await.unwrap();
    assert_eq!(
        (not_allowed.status, not_allowed.error_code().as_str()),
        (405, "method_not_allowed")
    );
    assert_eq!(not_allowed.headers["allow"], "GET");

    // HEAD is answered by the GET route, without a body.
    let head = node.send("HEAD", "/w/demo/a").await.unwrap();
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert_eq!(head.headers["content-length"], "1");

    // Requests are counted by outcome.
    let metrics = node.ops_get("/metrics").await.unwrap().body;
    for outcome in [
        "matched",
        "no_workspace",
        "unknown_workspace",
        "no_route",
        "method_not_allowed",
    ] {
        let line = format!("mockplane_requests_total{{outcome=\"{outcome}\"}}");
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
}
