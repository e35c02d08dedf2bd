//! What the API changes reaches every node, and nodes outlive the control
//! plane: real control-plane and node processes, talking over real sockets.

use mockplane_e2e::fixtures::{self, new_workspace as workspace, route};
use mockplane_e2e::{ControlPlane, Node};
use mockplane_proto::v1;
use nix::sys::signal::Signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_serve_what_the_api_creates_updates_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let token = plane
        .token
        .clone()
        .expect("a first run prints an admin token");
    let nodes = [
        Node::start(dir.path(), &plane.url()).await.unwrap(),
        Node::start(dir.path(), &plane.url()).await.unwrap(),
    ];
    let mut api = plane.api(&token).await;

    api.workspaces
        .create_workspace(workspace("demo"))
        .await
        .unwrap();
    api.workspaces
        .create_workspace(workspace("other"))
        .await
        .unwrap();
    let created = api
        .routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: "demo".into(),
            routes: vec![
                route("GET", "/users/{id}", 200, r#"{"name":"Ada"}"#),
                route("POST", "/users", 201, r#"{"created":true}"#),
            ],
            environment: String::new(),
            scenario: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .routes;
    api.routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: "other".into(),
            routes: vec![route("GET", "/ping", 200, r#"{"pong":true}"#)],
            environment: String::new(),
            scenario: String::new(),
        })
        .await
        .unwrap();

    for node in &nodes {
        let reply = node
            .wait_for("/w/demo/users/42", 200, |b| b.contains("Ada"))
            .await;
        assert_eq!(reply.headers["content-type"], "application/json");
        assert_eq!(
            node.send("POST", "/workspace/demo/users")
                .await
                .unwrap()
                .status,
            201
        );
        node.wait_for("/w/other/ping", 200, |b| b.contains("pong"))
            .await;
    }

    // An update reaches both nodes.
    let user_route = &created[0];
    api.routes
        .update_route(v1::UpdateRouteRequest {
            workspace: "demo".into(),
            route_id: user_route.id.clone(),
            patch: Some(route("GET", "/users/{id}", 200, r#"{"name":"Grace"}"#)),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["response.body".into()],
            }),
            etag: user_route.etag.clone(),
            environment: String::new(),
        })
        .await
        .unwrap();
    for node in &nodes {
        node.wait_for("/w/demo/users/42", 200, |b| b.contains("Grace"))
            .await;
        let other = node.get("/w/other/ping").await.unwrap();
        assert_eq!(
            (other.status, other.body.as_str()),
            (200, r#"{"pong":true}"#)
        );
    }

    // A route delete reaches both nodes.
    api.routes
        .delete_routes(v1::DeleteRoutesRequest {
            workspace: "demo".into(),
            route_ids: vec![user_route.id.clone()],
            environment: String::new(),
        })
        .await
        .unwrap();
    for node in &nodes {
        let reply = node.wait_for("/w/demo/users/42", 404, |_| true).await;
        assert_eq!(reply.error_code(), "route_not_found");
        assert_eq!(
            node.send("POST", "/w/demo/users").await.unwrap().status,
            201
        );
    }

    // A workspace delete reaches both nodes; the other workspace is untouched.
    api.workspaces
        .delete_workspace(v1::DeleteWorkspaceRequest {
            workspace: "demo".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    for node in &nodes {
        let reply = node
            .wait_for("/w/demo/users", 404, |b| b.contains("workspace_not_found"))
            .await;
        assert_eq!(reply.error_code(), "workspace_not_found");
        assert_eq!(node.get("/w/other/ping").await.unwrap().status, 200);
        let status = node.status().await;
        assert_eq!(status["workspaces"], 1, "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_keep_serving_without_the_control_plane_and_catch_up_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let token = plane.token.clone().unwrap();
    let address = plane.grpc.to_string();
    let nodes = [
        Node::start(dir.path(), &plane.url()).await.unwrap(),
        Node::start(dir.path(), &plane.url()).await.unwrap(),
    ];
    let mut api = plane.api(&token).await;
    api.workspaces
        .create_workspace(workspace("steady"))
        .await
        .unwrap();
    fixtures::add_routes(
        &mut api,
        "steady",
        vec![route("GET", "/a", 200, r#"{"v":1}"#)],
    )
    .await;
    for node in &nodes {
        node.wait_for("/w/steady/a", 200, |b| b.contains("\"v\":1"))
            .await;
    }

    // The control plane goes away; both nodes keep serving and stay ready.
    drop(api);
    plane.process.stop(Signal::SIGTERM).await.unwrap();
    for node in &nodes {
        mockplane_e2e::eventually("the node to notice the stream is gone", || async {
            (node.status().await["connected"] == false).then_some(())
        })
        .await;
        for _ in 0..20 {
            let reply = node.get("/w/steady/a").await.unwrap();
            assert_eq!((reply.status, reply.body.as_str()), (200, r#"{"v":1}"#));
        }
        assert_eq!(node.ops_get("/readyz").await.unwrap().status, 200);
    }
    let revision_before = nodes[0].status().await["revision"].as_u64().unwrap();

    // Meanwhile a change is made, through a control plane the nodes do not
    // know about, on the same database.
    {
        let side = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
            .await
            .unwrap();
        assert!(side.token.is_none(), "not a first run any more");
        let mut api = side.api(&token).await;
        fixtures::add_routes(
            &mut api,
            "steady",
            vec![route("GET", "/b", 200, r#"{"v":2}"#)],
        )
        .await;
        let mut side = side;
        side.process.stop(Signal::SIGTERM).await.unwrap();
    }
    assert_eq!(nodes[0].get("/w/steady/b").await.unwrap().status, 404);

    // The control plane comes back where the nodes expect it; they
    // reconnect and catch up with the change.
    let _plane = ControlPlane::start(dir.path(), &address, None)
        .await
        .unwrap();
    for node in &nodes {
        node.wait_for("/w/steady/b", 200, |b| b.contains("\"v\":2"))
            .await;
        assert_eq!(node.get("/w/steady/a").await.unwrap().status, 200);
        let status = node.status().await;
        assert!(
            status["revision"].as_u64().unwrap() > revision_before,
            "{status}"
        );
        assert_eq!(status["connected"], true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_control_plane_is_not_ready_until_it_gets_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    // Learn a free address for the control plane by starting and stopping one.
    let mut first = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let address = first.grpc.to_string();
    let token = first.token.clone().unwrap();
    first.process.stop(Signal::SIGTERM).await.unwrap();

    let node = Node::spawn(dir.path(), &format!("http://{address}"))
        .await
        .unwrap();
    let readyz = node.ops_get("/readyz").await.unwrap();
    assert_eq!(
        readyz.status, 503,
        "ready without any snapshot: {}",
        readyz.body
    );
    assert_eq!(node.ops_get("/healthz").await.unwrap().status, 200);

    let plane = ControlPlane::start(dir.path(), &address, None)
        .await
        .unwrap();
    node.wait_ready().await;
    let mut api = plane.api(&token).await;
    api.workspaces
        .create_workspace(workspace("late"))
        .await
        .unwrap();
    fixtures::add_routes(&mut api, "late", vec![route("GET", "/x", 200, "{}")]).await;
    node.wait_for("/w/late/x", 200, |_| true).await;
}

/// A raw config stream, as a node would open it.
type Opened = (
    tokio::sync::mpsc::Sender<v1::NodeMessage>,
    Result<tonic::Response<tonic::Streaming<v1::ConfigUpdate>>, tonic::Status>,
);

async fn open_stream(plane: &ControlPlane, first: v1::node_message::Kind) -> Opened {
    open_stream_as(plane, Some(&plane.node_token), first).await
}

/// Opens a stream presenting `token` (none: no credential at all).
async fn open_stream_as(
    plane: &ControlPlane,
    token: Option<&str>,
    first: v1::node_message::Kind,
) -> Opened {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(v1::NodeMessage { kind: Some(first) })
        .await
        .unwrap();
    let mut client = v1::config_discovery_client::ConfigDiscoveryClient::new(plane.channel().await)
        .max_decoding_message_size(64 * 1024 * 1024);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let response = client.stream(request).await;
    (tx, response)
}

fn hello(node_id: &str, protocol_version: u32, applied_revision: u64) -> v1::node_message::Kind {
    v1::node_message::Kind::Hello(v1::Hello {
        node_id: node_id.into(),
        protocol_version,
        applied_revision,
        config_schema_version: mockplane_proto::CONFIG_SCHEMA_VERSION,
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_checks_the_hello_and_sends_a_snapshot_then_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let mut api = plane.api(plane.token.as_deref().unwrap()).await;
    api.workspaces
        .create_workspace(workspace("first"))
        .await
        .unwrap();

    // No credential, a wrong one, an API token: refused before anything
    // is read.
    let current = mockplane_proto::PROTOCOL_VERSION;
    for (token, says) in [
        (None, "must present a node token"),
        (Some("mpn_not-a-real-token"), "not valid"),
        (plane.token.as_deref(), "not a node token"),
    ] {
        let (_tx, refused) = open_stream_as(&plane, token, hello("n0", current, 0)).await;
        let status = refused.expect_err("an unauthenticated stream is refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains(says), "{}", status.message());
    }

    let ack = v1::node_message::Kind::Ack(v1::Ack::default());
    let (_tx, refused) = open_stream(&plane, ack).await;
    let status = refused.expect_err("a stream must start with Hello");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("Hello"), "{}", status.message());

    let (_tx, refused) = open_stream(&plane, hello("n1", 99, 0)).await;
    let status = refused.expect_err("an unknown protocol version is refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("protocol 99"),
        "{}",
        status.message()
    );

    // A node that reads an older config schema is told so, and gets nothing.
    let old_schema = v1::node_message::Kind::Hello(v1::Hello {
        node_id: "old".into(),
        protocol_version: mockplane_proto::PROTOCOL_VERSION,
        config_schema_version: 3,
        ..Default::default()
    });
    let (_tx, refused) = open_stream(&plane, old_schema).await;
    let status = refused.expect_err("an older schema is refused");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("schema 3") && status.message().contains("keeps serving"),
        "{}",
        status.message()
    );

    let mut labelled = v1::Hello {
        node_id: "labelled".into(),
        protocol_version: mockplane_proto::PROTOCOL_VERSION,
        config_schema_version: mockplane_proto::CONFIG_SCHEMA_VERSION,
        ..Default::default()
    };
    labelled.labels.insert("zone".into(), "x".repeat(300));
    let (_tx, refused) = open_stream(&plane, v1::node_message::Kind::Hello(labelled)).await;
    let status = refused.expect_err("an oversized label is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("hello.labels"),
        "{}",
        status.message()
    );

    let (_tx, refused) = open_stream(&plane, hello("", mockplane_proto::PROTOCOL_VERSION, 0)).await;
    assert_eq!(
        refused.expect_err("empty node id").code(),
        tonic::Code::InvalidArgument
    );

    // A new node gets everything, then only what changes.
    let (tx, accepted) =
        open_stream(&plane, hello("n1", mockplane_proto::PROTOCOL_VERSION, 0)).await;
    let mut updates = accepted.unwrap().into_inner();
    let full = updates.message().await.unwrap().unwrap();
    assert!(full.full);
    assert_eq!(full.upserts.len(), 1);
    let snapshot_revision = full.revision;
    tx.send(v1::NodeMessage {
        kind: Some(v1::node_message::Kind::Ack(v1::Ack {
            revision: full.revision,
            nonce: full.nonce.clone(),
        })),
    })
    .await
    .unwrap();

    api.workspaces
        .create_workspace(workspace("second"))
        .await
        .unwrap();
    let delta = updates.message().await.unwrap().unwrap();
    assert!(!delta.full);
    assert_eq!(delta.base_revision, snapshot_revision);
    assert!(delta.revision > snapshot_revision);
    assert_eq!(delta.upserts.len(), 1);
    assert_ne!(delta.nonce, full.nonce);

    api.workspaces
        .delete_workspace(v1::DeleteWorkspaceRequest {
            workspace: "first".into(),
            etag: String::new(),
        })
        .await
        .unwrap();
    let removal = updates.message().await.unwrap().unwrap();
    assert_eq!(removal.base_revision, delta.revision);
    assert!(removal.upserts.is_empty());
    assert_eq!(removal.removed, vec![full.upserts[0].workspace_id.clone()]);

    // A node that reconnects with the revision it serves gets a delta.
    let (_tx2, resumed) = open_stream(
        &plane,
        hello("n2", mockplane_proto::PROTOCOL_VERSION, delta.revision),
    )
    .await;
    let resumed = resumed
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert!(!resumed.full);
    assert_eq!(resumed.base_revision, delta.revision);
    assert_eq!(resumed.removed.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_reading_does_not_hold_up_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let node = Node::start(dir.path(), &plane.url()).await.unwrap();
    let mut api = plane.api(plane.token.as_deref().unwrap()).await;

    // This stream says hello and then never reads: once HTTP/2 flow control
    // fills, every send to it blocks.
    let (_tx, stalled) = open_stream(
        &plane,
        hello("stalled", mockplane_proto::PROTOCOL_VERSION, 0),
    )
    .await;
    let _stalled = stalled.unwrap();

    let big = "x".repeat(256 * 1024);
    for index in 0..6 {
        let slug = format!("bulk-{index}");
        api.workspaces
            .create_workspace(workspace(&slug))
            .await
            .unwrap();
        fixtures::add_routes(&mut api, &slug, vec![route("GET", "/big", 200, &big)]).await;
        // The reading node keeps up with every change.
        node.wait_for(&format!("/w/{slug}/big"), 200, |b| b.len() == big.len())
            .await;
    }
}

/// A node restarted while every control plane is down serves its
/// last-known-good file; one pointed at a control plane with an empty
/// database refuses the empty snapshot and keeps serving; a damaged file
/// is ignored, not trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_boots_from_its_last_known_good_file_and_refuses_an_empty_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("node-state");
    let state_arg = state.display().to_string();
    let mut plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let down = plane.url();
    let mut api = plane.api(plane.token.as_deref().unwrap()).await;
    api.workspaces
        .create_workspace(workspace("kept"))
        .await
        .unwrap();
    fixtures::add_routes(
        &mut api,
        "kept",
        vec![route("GET", "/a", 200, r#"{"v":1}"#)],
    )
    .await;
    let mut node = Node::start_with(dir.path(), &plane.url(), &["--state-dir", &state_arg])
        .await
        .unwrap();
    node.wait_for("/w/kept/a", 200, |b| b.contains("\"v\":1"))
        .await;
    // The hello told the control plane what the node can do.
    assert!(
        plane
            .process
            .log_text()
            .contains("capabilities=empty-guard,last-known-good"),
        "{}",
        plane.process.log_text()
    );
    let served = node.status().await["revision"].as_u64().unwrap();
    mockplane_e2e::eventually("the last-known-good file", || async {
        std::fs::metadata(state.join("last-known-good.bin"))
            .ok()
            .filter(|m| m.len() > 0)
    })
    .await;

    // Everything stops; the node restarts with no control plane to reach
    // and is ready at once, serving what it served.
    drop(api);
    plane.process.stop(Signal::SIGTERM).await.unwrap();
    node.process.stop(Signal::SIGINT).await.unwrap();
    let mut node = Node::start_with(dir.path(), &down, &["--state-dir", &state_arg])
        .await
        .unwrap();
    let reply = node.get("/w/kept/a").await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, r#"{"v":1}"#));
    let status = node.status().await;
    assert_eq!(status["revision"].as_u64(), Some(served), "{status}");
    assert_eq!(status["connected"], false, "{status}");

    // A control plane on a new, empty database: its snapshot would empty
    // the node, which refuses it and keeps serving.
    node.process.stop(Signal::SIGINT).await.unwrap();
    let empty_dir = dir.path().join("empty");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let empty = ControlPlane::start(&empty_dir, "127.0.0.1:0", None)
        .await
        .unwrap();
    let node = Node::start_with(dir.path(), &empty.url(), &["--state-dir", &state_arg])
        .await
        .unwrap();
    mockplane_e2e::eventually("the node to refuse the empty snapshot", || async {
        let metrics = node.ops_get("/metrics").await.ok()?.body;
        metrics
            .lines()
            .any(|l| l.starts_with("mockplane_config_updates_refused_total") && !l.ends_with(" 0"))
            .then_some(())
    })
    .await;
    assert!(
        node.process
            .log_text()
            .contains("refusing a config that would leave nothing to serve"),
        "{}",
        node.process.log_text()
    );
    let reply = node.get("/w/kept/a").await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, r#"{"v":1}"#));
    assert_eq!(node.status().await["connected"], true);

    // A damaged file is not trusted: the node waits for a control plane.
    let mut node = node;
    node.process.stop(Signal::SIGINT).await.unwrap();
    let file = state.join("last-known-good.bin");
    let good = std::fs::read(&file).unwrap();
    let mut bytes = good.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let node = Node::spawn_with(dir.path(), &down, &["--state-dir", &state_arg])
        .await
        .unwrap();
    mockplane_e2e::eventually("the node to report the damaged file", || async {
        node.process
            .log_text()
            .contains("checksum does not match")
            .then_some(())
    })
    .await;
    assert_eq!(node.ops_get("/readyz").await.unwrap().status, 503);

    // A file whose checksum is right but whose workspace was edited: the
    // node refuses the workspace and, with nothing it can trust, is not
    // ready until a control plane sends a snapshot.
    let mut node = node;
    node.process.stop(Signal::SIGINT).await.unwrap();
    std::fs::write(&file, edited_workspace(&good)).unwrap();
    let node = Node::spawn_with(dir.path(), &down, &["--state-dir", &state_arg])
        .await
        .unwrap();
    mockplane_e2e::eventually("the node to refuse the edited workspace", || async {
        node.process
            .log_text()
            .contains("last-known-good workspace not served")
            .then_some(())
    })
    .await;
    let readyz = node.ops_get("/readyz").await.unwrap();
    assert_eq!(readyz.status, 503, "{}", readyz.body);
    assert!(readyz.body.contains("refused"), "{}", readyz.body);
    let status = node.status().await;
    assert_eq!(status["ready"], false, "{status}");
    assert_eq!(node.get("/w/kept/a").await.unwrap().status, 404);
    // A control plane's snapshot makes it ready again.
    let mut node = node;
    node.process.stop(Signal::SIGINT).await.unwrap();
    let node = Node::spawn_with(dir.path(), &empty.url(), &["--state-dir", &state_arg])
        .await
        .unwrap();
    mockplane_e2e::eventually("the node to be ready after a snapshot", || async {
        (node.ops_get("/readyz").await.ok()?.status == 200).then_some(())
    })
    .await;
}

/// A last-known-good file whose first workspace's config was edited and
/// whose header (length, checksum) was written anew to match.
fn edited_workspace(file: &[u8]) -> Vec<u8> {
    use prost::Message as _;
    use sha2::Digest as _;
    let end = file.windows(2).position(|w| w == b"\n\n").unwrap();
    let header = std::str::from_utf8(&file[..end]).unwrap();
    let mut update = v1::ConfigUpdate::decode(&file[end + 2..]).unwrap();
    let resource = &mut update.upserts[0];
    let mut config = resource.config.to_vec();
    let middle = config.len() / 2;
    config[middle] ^= 0x01;
    resource.config = config.into();
    let body = update.encode_to_vec();
    let mut out = String::new();
    for line in header.lines() {
        if line.starts_with("length ") {
            out.push_str(&format!("length {}\n", body.len()));
        } else if line.starts_with("sha256 ") {
            out.push_str(&format!(
                "sha256 {}\n",
                hex::encode(sha2::Sha256::digest(&body))
            ));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push('\n');
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&body);
    bytes
}

/// A node with a wrong node token is refused and says why; it never
/// serves what the control plane has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_wrong_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let node = Node::spawn_with(dir.path(), &plane.url(), &["--token", "mpn_wrong"])
        .await
        .unwrap();
    mockplane_e2e::eventually("the node to be refused", || async {
        node.process
            .log_text()
            .contains("the node token is not valid")
            .then_some(())
    })
    .await;
    assert_eq!(node.ops_get("/readyz").await.unwrap().status, 503);
    assert_eq!(node.status().await["connected"], false);
}

/// Streams end at their (randomized) maximum age and nodes reconnect, so a
/// fleet spreads over the replicas; nothing is lost on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_at_their_maximum_age_and_nodes_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start_with(
        dir.path(),
        "127.0.0.1:0",
        None,
        &["--stream-max-age-secs", "1"],
    )
    .await
    .unwrap();
    let node = Node::start(dir.path(), &plane.url()).await.unwrap();
    mockplane_e2e::eventually("the stream to be renewed twice", || async {
        let log = plane.process.log_text();
        (log.matches("maximum age").count() >= 2).then_some(())
    })
    .await;
    let mut api = plane.api(plane.token.as_deref().unwrap()).await;
    api.workspaces
        .create_workspace(workspace("aging"))
        .await
        .unwrap();
    fixtures::add_routes(&mut api, "aging", vec![route("GET", "/still", 200, "here")]).await;
    node.wait_for("/w/aging/still", 200, |b| b == "here").await;
    assert!(
        plane.process.log_text().matches("node connected").count() >= 3,
        "{}",
        plane.process.log_text()
    );
}

/// A node the control plane cannot give a delta (here: new to it, revision
/// 0) but that says what it serves gets only the workspaces that differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_says_what_it_serves_gets_only_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let mut api = plane.api(plane.token.as_deref().unwrap()).await;
    for slug in ["same", "changed"] {
        api.workspaces
            .create_workspace(workspace(slug))
            .await
            .unwrap();
    }
    // Once the snapshot holds both (the cache refreshes after the writes).
    let full = mockplane_e2e::eventually("a snapshot of both workspaces", || async {
        let (_tx, first) =
            open_stream(&plane, hello("n1", mockplane_proto::PROTOCOL_VERSION, 0)).await;
        let full = first
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap()
            .unwrap();
        (full.upserts.len() == 2).then_some(full)
    })
    .await;
    let mut hashes: std::collections::HashMap<String, String> = full
        .upserts
        .iter()
        .map(|u| (u.workspace_id.clone(), u.hash.clone()))
        .collect();
    let same = full
        .upserts
        .iter()
        .find(|u| mockplane_proto::resource::decode(u).is_ok_and(|c| c.slug.as_str() == "same"));
    let same_id = same.unwrap().workspace_id.clone();
    let changed_id = hashes.keys().find(|id| **id != same_id).unwrap().clone();
    hashes.insert(changed_id.clone(), "0".repeat(64));

    let said = |hashes: std::collections::HashMap<String, String>| {
        v1::node_message::Kind::Hello(v1::Hello {
            node_id: "n2".into(),
            protocol_version: mockplane_proto::PROTOCOL_VERSION,
            config_schema_version: mockplane_proto::CONFIG_SCHEMA_VERSION,
            workspace_hashes: hashes,
            ..Default::default()
        })
    };
    let (_tx2, resumed) = open_stream(&plane, said(hashes)).await;
    let update = resumed
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap()
        .unwrap();
    assert!(update.full);
    assert_eq!(update.kept, [same_id]);
    assert_eq!(
        update
            .upserts
            .iter()
            .map(|u| u.workspace_id.clone())
            .collect::<Vec<_>>(),
        [changed_id]
    );

    // Hashes that are not hashes are refused, naming the entry.
    let (_tx3, refused) = open_stream(
        &plane,
        said([("not-an-id".to_owned(), "x".to_owned())].into()),
    )
    .await;
    let status = refused.expect_err("bad hashes are refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("workspace_hashes") && status.message().contains("not-an-id"),
        "{}",
        status.message()
    );
}

/// Revoking a node token (another process, on the same database) ends the
/// open streams that presented it within the recheck period; the node is
/// refused when it reconnects and keeps serving what it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_node_token_ends_its_open_streams() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start_with(
        dir.path(),
        "127.0.0.1:0",
        None,
        &["--node-token-recheck-secs", "1"],
    )
    .await
    .unwrap();
    let node = Node::start(dir.path(), &plane.url()).await.unwrap();
    let mut api = plane.api(plane.token.as_deref().unwrap()).await;
    api.workspaces
        .create_workspace(workspace("kept"))
        .await
        .unwrap();
    fixtures::add_routes(&mut api, "kept", vec![route("GET", "/here", 200, "still")]).await;
    node.wait_for("/w/kept/here", 200, |b| b == "still").await;
    assert_eq!(node.status().await["connected"], true);

    let store =
        mockplane_control_plane::store::open(&mockplane_e2e::database_url(dir.path()).await)
            .await
            .unwrap();
    store.revoke_node_token("default").await.unwrap();
    mockplane_e2e::eventually("the stream to end and the node to be refused", || async {
        let plane_log = plane.process.log_text();
        let node_log = node.process.log_text();
        (plane_log.contains("its node token was revoked")
            && node_log.contains("the node token is not valid"))
        .then_some(())
    })
    .await;
    assert_eq!(node.status().await["connected"], false);
    let reply = node.get("/w/kept/here").await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "still"));
}
