//! The fleet as the control plane sees it: the node registry, NACKs
//! reported there while the other workspaces keep updating, how far a
//! change has spread, the metrics of both planes, and a fleet of simulated
//! nodes reconnecting without the control plane's memory running away.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mockplane_e2e::fixtures::{self, new_workspace, route};
use mockplane_e2e::{Cli, ControlPlane, Node, eventually};
use mockplane_proto::v1;
use serde_json::Value;
use tokio::sync::mpsc;

/// A node simulated in the test: it opens a real config stream and ACKs
/// every update, except that it rejects `refuse`'s config while `refusing`
/// holds. Returns the workspaces of each update it got, in order.
struct SimulatedNode {
    updates: mpsc::UnboundedReceiver<(u64, Vec<String>)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SimulatedNode {
    /// Closes its stream, as a node that stops.
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SimulatedNode {
    async fn start(
        plane: &ControlPlane,
        node_id: &str,
        refuse: Option<(String, Arc<AtomicBool>)>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(8);
        tx.send(hello(node_id, 0)).await.unwrap();
        let mut client =
            v1::config_discovery_client::ConfigDiscoveryClient::new(plane.channel().await)
                .max_decoding_message_size(64 * 1024 * 1024);
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", plane.node_token).parse().unwrap(),
        );
        let mut inbound = client.stream(request).await.unwrap().into_inner();
        let (seen, updates) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(Some(update)) = inbound.message().await {
                let ids: Vec<String> = update
                    .upserts
                    .iter()
                    .map(|u| u.workspace_id.clone())
                    .collect();
                let rejected = refuse.as_ref().and_then(|(id, refusing)| {
                    (refusing.load(Ordering::SeqCst) && ids.contains(id)).then(|| id.clone())
                });
                let answer = match rejected {
                    Some(workspace_id) => v1::node_message::Kind::Nack(v1::Nack {
                        revision: update.revision,
                        nonce: update.nonce.clone(),
                        errors: vec![v1::WorkspaceError {
                            workspace_id,
                            message: "route 1: this node cannot compile it".into(),
                        }],
                    }),
                    None => v1::node_message::Kind::Ack(v1::Ack {
                        revision: update.revision,
                        nonce: update.nonce.clone(),
                    }),
                };
                if tx
                    .send(v1::NodeMessage { kind: Some(answer) })
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = seen.send((update.revision, ids));
            }
        });
        Self { updates, task }
    }

    /// The next update it answered: (revision, workspaces upserted).
    async fn next(&mut self) -> (u64, Vec<String>) {
        tokio::time::timeout(Duration::from_secs(30), self.updates.recv())
            .await
            .expect("an update within 30 s")
            .expect("the stream is open")
    }
}

fn hello(node_id: &str, applied_revision: u64) -> v1::NodeMessage {
    v1::NodeMessage {
        kind: Some(v1::node_message::Kind::Hello(v1::Hello {
            node_id: node_id.into(),
            protocol_version: mockplane_proto::PROTOCOL_VERSION,
            config_schema_version: mockplane_proto::CONFIG_SCHEMA_VERSION,
            applied_revision,
            binary_version: "simulated".into(),
            ..Default::default()
        })),
    }
}

/// `mockplane nodes -o json`, by node id.
async fn nodes(cli: &Cli<'_>) -> std::collections::BTreeMap<String, Value> {
    let listed: Vec<Value> = serde_json::from_str(&cli.ok(&["-o", "json", "nodes"]).await).unwrap();
    listed
        .into_iter()
        .map(|n| (n["node"].as_str().unwrap().to_owned(), n))
        .collect()
}

/// The value of an unlabelled metric in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_workspace_is_reported_while_the_others_keep_updating() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let token = plane.token.clone().unwrap();
    let mut api = plane.api(&token).await;
    let good = api
        .workspaces
        .create_workspace(new_workspace("good"))
        .await
        .unwrap()
        .into_inner();
    let broken = api
        .workspaces
        .create_workspace(new_workspace("broken"))
        .await
        .unwrap()
        .into_inner();
    let node = Node::start_with(dir.path(), &plane.url(), &["--label", "zone=eu-1"])
        .await
        .unwrap();
    let refusing = Arc::new(AtomicBool::new(true));
    let mut simulated = SimulatedNode::start(
        &plane,
        "simulated-1",
        Some((broken.id.clone(), refusing.clone())),
    )
    .await;
    let (_, first) = simulated.next().await;
    assert_eq!(first.len(), 2, "a full snapshot of both workspaces");

    let cli = Cli {
        server: plane.url(),
        token: Some(&token),
    };
    // The registry knows both nodes, the real one with its label and
    // capabilities, and the simulated one's rejection of `broken`.
    let listed = eventually("both nodes in the registry", || async {
        let listed = nodes(&cli).await;
        (listed.len() == 2
            && listed["simulated-1"]["failing"]
                .as_array()
                .is_some_and(|f| !f.is_empty()))
        .then_some(listed)
    })
    .await;
    let real = listed
        .values()
        .find(|n| n["node"] != "simulated-1")
        .unwrap();
    assert_eq!(real["state"], "connected");
    assert_eq!(real["labels"]["zone"], "eu-1");
    assert!(
        real["capabilities"]
            .as_array()
            .unwrap()
            .contains(&Value::from("empty-guard")),
        "{real}"
    );
    assert_eq!(real["errors"], "");
    let sim = &listed["simulated-1"];
    assert_eq!(sim["failing"][0]["workspace"], "broken");
    assert!(
        sim["failing"][0]["message"]
            .as_str()
            .unwrap()
            .contains("cannot compile"),
        "{sim}"
    );
    assert_eq!(sim["version"], "simulated");
    let table = cli.ok(&["nodes"]).await;
    assert!(
        table.contains("NODE") && table.contains("simulated-1") && table.contains("broken@"),
        "{table}"
    );

    // How far each workspace got: `good` everywhere, `broken` rejected.
    let served = cli
        .ok(&["nodes", "propagation", "good", "--wait", "30"])
        .await;
    assert!(
        served.contains("served by 2 of 2 connected nodes"),
        "{served}"
    );
    let refused = cli
        .run(&["nodes", "propagation", "broken", "--wait", "30"])
        .await;
    assert!(!refused.status.success());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr),
    );
    assert!(
        stdout.contains("served by 1 of 2")
            && stdout.contains("rejected by simulated-1: route 1: this node cannot compile it"),
        "{stdout}"
    );
    assert!(stderr.contains("1 node(s) rejected"), "{stderr}");

    // The other workspace keeps updating on that node.
    fixtures::add_routes(
        &mut api,
        "good",
        vec![route("GET", "/later", 200, "/later")],
    )
    .await;
    let (revision, changed) = simulated.next().await;
    assert_eq!(changed, std::slice::from_ref(&good.id));
    node.wait_for("/w/good/later", 200, |_| true).await;
    let propagation = eventually("the change to good served by both", || {
        let mut nodes = api.nodes.clone();
        async move {
            let p = nodes
                .get_propagation(v1::GetPropagationRequest {
                    workspace: "good".into(),
                    revision: 0,
                })
                .await
                .unwrap()
                .into_inner();
            (p.nodes_serving == 2).then_some(p)
        }
    })
    .await;
    assert_eq!(propagation.revision, revision);
    assert!(propagation.failing_nodes.is_empty());

    // Fixed: the next config of `broken` is applied, the error clears.
    refusing.store(false, Ordering::SeqCst);
    fixtures::add_routes(
        &mut api,
        "broken",
        vec![route("GET", "/fixed", 200, "/fixed")],
    )
    .await;
    let (_, changed) = simulated.next().await;
    assert_eq!(changed, std::slice::from_ref(&broken.id));
    cli.ok(&["nodes", "propagation", "broken", "--wait", "30"])
        .await;
    let cleared = eventually("the rejection cleared in the registry", || async {
        let listed = nodes(&cli).await;
        listed["simulated-1"]["failing"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(listed)
    })
    .await;
    assert!(
        cleared["simulated-1"]["last_nack"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );

    // Metrics on both planes.
    let text = plane.metrics_text().await;
    assert_eq!(metric(&text, "mockplane_config_connected_nodes"), 2.0);
    assert!(
        metric(&text, "mockplane_config_nacks_total") >= 1.0,
        "{text}"
    );
    assert!(metric(&text, "mockplane_config_rejected_workspaces_total") >= 1.0);
    assert!(metric(&text, "mockplane_config_publish_to_ack_seconds_count") >= 2.0);
    assert!(metric(&text, "mockplane_config_commit_to_publish_seconds_count") >= 2.0);
    assert!(metric(&text, "mockplane_config_snapshot_bytes") > 0.0);
    assert!(text.contains("mockplane_config_sent_bytes_total{kind=\"delta\"}"));
    assert!(text.contains("mockplane_config_max_lag_revisions"));
    let node_text = node.ops_get("/metrics").await.unwrap().body;
    assert!(metric(&node_text, "mockplane_config_apply_duration_seconds_count") >= 2.0);
    assert!(metric(&node_text, "mockplane_config_received_bytes_total") > 0.0);

    // The node registry is an org admin's: a member is refused.
    let (_, member) = mockplane_e2e::fixtures::member(
        &plane,
        &mut api,
        "good",
        "viewer@example.com",
        &[("dev", "viewer")],
    )
    .await;
    let mut as_member = plane.api(&member).await;
    let denied = as_member
        .nodes
        .list_nodes(v1::ListNodesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert!(denied.message().contains("node.read"), "{denied:?}");

    // A node that leaves is disconnected, and listed only on request.
    drop(simulated);
    eventually("the simulated node disconnected", || async {
        let all: Vec<Value> =
            serde_json::from_str(&cli.ok(&["-o", "json", "nodes", "--all"]).await).unwrap();
        let sim = all.into_iter().find(|n| n["node"] == "simulated-1")?;
        (sim["state"] == "disconnected").then_some(())
    })
    .await;
    assert!(!nodes(&cli).await.contains_key("simulated-1"));
}

/// Peak resident memory of a process (VmHWM), in bytes.
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/<pid>/status")
        * 1024
}

/// Opens a stream for `node_id` (retrying with jittered backoff while the
/// control plane tells it to), reads the update up to its last chunk,
/// ACKs it, and returns the stream's sender (the stream lives while it
/// does) and the revision it got.
async fn connect_and_sync(
    channel: tonic::transport::Channel,
    token: String,
    node_id: String,
    applied: u64,
) -> (mpsc::Sender<v1::NodeMessage>, u64) {
    let mut pause = Duration::from_millis(50);
    loop {
        let (tx, rx) = mpsc::channel(4);
        tx.send(hello(&node_id, applied)).await.unwrap();
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let mut client = v1::config_discovery_client::ConfigDiscoveryClient::new(channel.clone())
            .max_decoding_message_size(64 * 1024 * 1024);
        match client.stream(request).await {
            Ok(response) => {
                let mut inbound = response.into_inner();
                loop {
                    let part = inbound.message().await.unwrap().unwrap();
                    if part.chunk_index + 1 >= part.chunk_count.max(1) {
                        tx.send(v1::NodeMessage {
                            kind: Some(v1::node_message::Kind::Ack(v1::Ack {
                                revision: part.revision,
                                nonce: part.nonce.clone(),
                            })),
                        })
                        .await
                        .unwrap();
                        // Keep reading in the background so the stream
                        // stays open and later updates do not pile up.
                        tokio::spawn(
                            async move { while let Ok(Some(_)) = inbound.message().await {} },
                        );
                        return (tx, part.revision);
                    }
                }
            }
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                let jitter = rand_millis(pause.as_millis() as u64);
                tokio::time::sleep(pause / 2 + Duration::from_millis(jitter / 2)).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(status) => panic!("stream refused: {status:?}"),
        }
    }
}

fn rand_millis(below: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(below);
    hasher.finish() % below.max(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_nodes_reconnect_without_the_control_planes_memory_running_away() {
    const NODES: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let token = plane.token.clone().unwrap();
    let mut api = plane.api(&token).await;
    // About 2 MB of config: a copy per stream would be 600 MB.
    let body = "x".repeat(1000);
    for w in 0..40 {
        let slug = format!("load-{w}");
        api.workspaces
            .create_workspace(new_workspace(&slug))
            .await
            .unwrap();
        fixtures::add_routes(
            &mut api,
            &slug,
            (0..50)
                .map(|r| route("GET", &format!("/r{r}"), 200, &body))
                .collect(),
        )
        .await;
    }
    let pid = plane.process.pid().unwrap().as_raw() as u32;
    let before = peak_memory(pid);
    let snapshot_bytes = metric(
        &plane.metrics_text().await,
        "mockplane_config_snapshot_bytes",
    );
    assert!(snapshot_bytes > 2_000_000.0, "{snapshot_bytes}");

    // A few connections, as a fleet behind a balancer multiplexes onto
    // few replicas; each node is its own stream.
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(plane.channel().await);
    }
    let connect_all = |applied: u64| {
        let handles: Vec<_> = (0..NODES)
            .map(|i| {
                tokio::spawn(connect_and_sync(
                    channels[i % channels.len()].clone(),
                    plane.node_token.clone(),
                    format!("sim-{i}"),
                    applied,
                ))
            })
            .collect();
        async move {
            let mut streams = Vec::new();
            for handle in handles {
                streams.push(handle.await.unwrap());
            }
            streams
        }
    };
    // Everyone new: a full snapshot each.
    let streams = connect_all(0).await;
    let revision = streams[0].1;
    assert!(streams.iter().all(|(_, r)| *r == revision));
    // The registry holds them all.
    let nodes_api = api.nodes.clone();
    eventually("every node in the registry", || {
        let mut nodes_api = nodes_api.clone();
        async move {
            let listed = nodes_api
                .list_nodes(v1::ListNodesRequest::default())
                .await
                .unwrap()
                .into_inner();
            let ids: HashSet<String> = listed.nodes.into_iter().map(|n| n.node_id).collect();
            (ids.len() == NODES).then_some(())
        }
    })
    .await;
    // All drop at once and come back: first resuming (deltas), then as
    // if their disks were lost (full snapshots again).
    drop(streams);
    let resumed = connect_all(revision).await;
    drop(resumed);
    let again = connect_all(0).await;
    assert_eq!(again.len(), NODES);

    let after = peak_memory(pid);
    let grown = after.saturating_sub(before);
    eprintln!(
        "control plane peak memory: {} MiB before, {} MiB after {} reconnects of {NODES} nodes ({} KiB of config)",
        before >> 20,
        after >> 20,
        3 * NODES,
        snapshot_bytes as u64 >> 10
    );
    assert!(
        grown < 256 << 20,
        "the control plane's peak memory grew by {} MiB over {} reconnects",
        grown >> 20,
        3 * NODES
    );
    let propagation = nodes_api
        .clone()
        .get_propagation(v1::GetPropagationRequest {
            workspace: "load-0".into(),
            revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(propagation.nodes_serving as usize, NODES);
    drop(again);
}
