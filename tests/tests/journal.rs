//! The request journal end to end: a node records what it answered, and
//! the control plane's JournalService asks the node and filters.

use mockplane_e2e::fixtures::{self, new_workspace, route};
use mockplane_e2e::{ControlPlane, Node, eventually};
use mockplane_proto::v1;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_shows_what_nodes_answered_and_why_misses_missed() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let node = Node::start(dir.path(), &plane.url()).await.unwrap();
    let mut api = plane.api(plane.token.as_deref().unwrap()).await;
    for slug in ["shop", "other"] {
        api.workspaces
            .create_workspace(new_workspace(slug))
            .await
            .unwrap();
    }
    let mut search = route("GET", "/search", 200, "found");
    search.request_match = Some(v1::RequestMatch {
        query: vec![v1::FieldMatch {
            name: "q".into(),
            test: Some(v1::TextMatch {
                test: Some(v1::text_match::Test::Equals("lamp".into())),
                ignore_case: false,
            }),
        }],
        ..Default::default()
    });
    fixtures::add_routes(
        &mut api,
        "shop",
        vec![search, route("POST", "/orders", 201, "{\"id\":1}")],
    )
    .await;
    node.wait_for("/w/shop/search?q=lamp", 200, |b| b == "found")
        .await;
    let ordered = node
        .send_with(
            "POST",
            "/w/shop/orders",
            &[("x-trace", "t-1")],
            "{\"sku\":\"lamp\"}",
        )
        .await
        .unwrap();
    assert_eq!(ordered.status, 201);
    assert_eq!(node.get("/w/shop/search?q=desk").await.unwrap().status, 404);
    node.get("/w/other/anything").await.unwrap();

    let list = |unmatched_only: bool, method: &str| v1::ListRequestsRequest {
        workspace: "shop".into(),
        unmatched_only,
        method: method.into(),
        ..Default::default()
    };
    let all = eventually("the journal to hold the requests", || {
        let mut journal = api.journal.clone();
        async move {
            let found = journal
                .list_requests(list(false, ""))
                .await
                .ok()?
                .into_inner();
            (found.entries.len() >= 3).then_some(found)
        }
    })
    .await;
    assert_eq!(all.nodes_asked, 1);
    assert!(all.unreachable_nodes.is_empty());
    let newest = &all.entries[0];
    assert_eq!((newest.method.as_str(), newest.status), ("GET", 404));
    assert_eq!(newest.query, "q=desk");
    assert!(
        all.entries.iter().all(|e| e.path.starts_with("/w/shop")),
        "only shop's"
    );
    let order = all.entries.iter().find(|e| e.method == "POST").unwrap();
    assert_eq!(order.outcome, "matched");
    assert!(!order.route_id.is_empty());
    assert!(order.headers.contains("x-trace: t-1"), "{}", order.headers);
    assert_eq!(order.environment, "dev");

    let misses = api
        .journal
        .list_requests(list(true, ""))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(misses.len(), 1);
    let miss: serde_json::Value = serde_json::from_str(&misses[0].miss).unwrap();
    assert_eq!(miss["code"], "no_route_matched");
    let reasons = miss["near_misses"][0]["reasons"].to_string();
    assert!(
        reasons.contains("lamp"),
        "the near miss says why: {reasons}"
    );
    let posts = api
        .journal
        .list_requests(list(false, "post"))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(posts.len(), 1, "methods match case-insensitively");

    let unknown = api
        .journal
        .list_requests(v1::ListRequestsRequest {
            workspace: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}
