//! Config propagation: a real control plane holding the generated
//! workspaces, and N simulated nodes in this process, each on its own
//! connection, speaking the real stream protocol (hello with the applied
//! revision, chunked updates, ACK, reconnect with the node's backoff). They
//! do not compile what they receive; they measure when and how much.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use mockplane_benches::slug;
use mockplane_data_plane::client::{Backoff, MAX_MESSAGE_BYTES};
use mockplane_proto::v1::config_discovery_client::ConfigDiscoveryClient;
use mockplane_proto::v1::route_service_client::RouteServiceClient;
use mockplane_proto::{PROTOCOL_VERSION, v1};
use nix::sys::signal::Signal;
use prost::Message as _;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::procs::{Memory, Proc};
use crate::setup::{ConfigDb, Tools, config_db};
use crate::units::{mib, micros};

/// How long the control plane rests before its steady memory is read.
const SETTLE: Duration = Duration::from_secs(15);

#[derive(clap::Args, Clone)]
pub struct Args {
    /// Numbers of simulated nodes to run with, one run each.
    #[arg(long = "nodes", value_delimiter = ',', default_value = "1,100,1000")]
    nodes: Vec<usize>,
    /// Workspaces (of 20 routes) in the control plane.
    #[arg(long = "propagation-workspaces", default_value = "10000")]
    workspaces: usize,
    /// One-route changes measured per run.
    #[arg(long, default_value = "20")]
    changes: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct PropagationResult {
    pub nodes: usize,
    pub workspaces: usize,
    pub initial_sync_seconds: f64,
    pub initial_bytes_per_node: u64,
    /// From sending the change to the control plane to a node's ACK, over
    /// every (change, node) pair.
    pub change_p50_us: u64,
    pub change_p99_us: u64,
    pub change_max_us: u64,
    pub change_samples: usize,
    /// Protobuf bytes each node received per change (with gRPC framing).
    pub bytes_per_node_per_change: u64,
    /// From starting the restarted control plane to every node in sync.
    pub restart_resync_seconds: f64,
    pub control_plane_idle: Option<Memory>,
    /// Right after every node's full sync.
    pub control_plane_after_sync: Option<Memory>,
    /// With every node connected, after the changes and a pause that lets
    /// the allocator return what the syncs used.
    pub control_plane_steady: Option<Memory>,
    pub bench_process: Option<Memory>,
}

/// What a simulated node reports after applying (ACKing) an update.
struct Applied {
    node: usize,
    revision: u64,
    bytes: u64,
    at: Instant,
}

pub async fn run(
    tools: &Tools,
    work: &Path,
    args: &Args,
    results: &mut Vec<PropagationResult>,
) -> anyhow::Result<()> {
    let db = config_db(work, args.workspaces).await?;
    for &nodes in &args.nodes {
        eprintln!(
            "== propagation to {nodes} simulated node(s), {} workspaces",
            args.workspaces
        );
        let result = run_once(tools, work, &db, nodes, args).await?;
        eprintln!(
            "  change → all ACKs: p50 {} p99 {} max {}; {} B per node per change; resync after restart {:.2} s",
            micros(Some(result.change_p50_us as f64)),
            micros(Some(result.change_p99_us as f64)),
            micros(Some(result.change_max_us as f64)),
            result.bytes_per_node_per_change,
            result.restart_resync_seconds
        );
        results.push(result);
    }
    Ok(())
}

pub(crate) async fn start_plane(
    tools: &Tools,
    run_dir: &Path,
    listen: &str,
    log: &str,
) -> anyhow::Result<(Proc, SocketAddr)> {
    let plane = Proc::spawn_ours(
        "control plane",
        None,
        &tools.binary("mockplane-control-plane"),
        &[
            "--listen".into(),
            listen.into(),
            "--data-dir".into(),
            run_dir.display().to_string(),
        ],
        run_dir.join(log),
        "listening",
        Duration::from_secs(300),
    )
    .await?;
    let address = plane
        .event("listening", "grpc")
        .context("address")?
        .parse()?;
    Ok((plane, address))
}

async fn run_once(
    tools: &Tools,
    work: &Path,
    db: &ConfigDb,
    nodes: usize,
    args: &Args,
) -> anyhow::Result<PropagationResult> {
    let run_dir = work.join(format!("run-propagation-{nodes}"));
    db.copy_to(&run_dir)?;
    let token = node_token(tools, &run_dir)?;
    let (mut plane, address) =
        start_plane(tools, &run_dir, "127.0.0.1:0", "control-plane-1.log").await?;
    let control_plane_idle = plane.memory().ok();

    let (events, mut applied) = mpsc::unbounded_channel();
    let url = format!("http://{address}");
    let started = Instant::now();
    let handles: Vec<_> = (0..nodes)
        .map(|node| {
            tokio::spawn(simulated_node(
                node,
                url.clone(),
                token.clone(),
                events.clone(),
            ))
        })
        .collect();
    let mut revisions = vec![0u64; nodes];
    let mut initial_bytes = Vec::with_capacity(nodes);
    let mut synced = 0;
    while synced < nodes {
        let event = next(&mut applied, Duration::from_secs(600), "the initial sync").await?;
        if revisions[event.node] == 0 {
            synced += 1;
            initial_bytes.push(event.bytes);
        }
        revisions[event.node] = event.revision;
    }
    let initial_sync = started.elapsed();
    let current = revisions.iter().copied().max().unwrap_or(0);
    eprintln!(
        "  {nodes} node(s) synced at revision {current} in {:.2} s",
        initial_sync.as_secs_f64()
    );
    let control_plane_after_sync = plane.memory().ok();

    // One route of one workspace changes, again and again.
    let channel = Endpoint::from_shared(url.clone())?.connect().await?;
    let token: tonic::metadata::AsciiMetadataValue = format!("Bearer {}", db.token).parse()?;
    let mut routes =
        RouteServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
            Ok(request)
        });
    let target = routes
        .list_routes(v1::ListRoutesRequest {
            workspace: slug(0),
            page_size: 1,
            page_token: String::new(),
            scenario: String::new(),
        })
        .await?
        .into_inner()
        .routes
        .into_iter()
        .next()
        .context("workspace ws-0 has no route")?;
    let mut latencies = Vec::with_capacity(args.changes * nodes);
    let mut change_bytes = Vec::new();
    let mut expected = current;
    for change in 0..args.changes {
        let sent = Instant::now();
        routes
            .update_route(v1::UpdateRouteRequest {
                workspace: slug(0),
                route_id: target.id.clone(),
                patch: Some(v1::Route {
                    response: Some(v1::MockResponse {
                        body: format!("{{\"change\":{change}}}").into_bytes(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["response.body".into()],
                }),
                etag: String::new(),
                environment: String::new(),
            })
            .await?;
        expected += 1;
        let mut done = 0;
        while done < nodes {
            let event = next(
                &mut applied,
                Duration::from_secs(60),
                "a change to reach every node",
            )
            .await?;
            if event.revision >= expected && revisions[event.node] < expected {
                done += 1;
                latencies.push(event.at.saturating_duration_since(sent));
                change_bytes.push(event.bytes);
            }
            revisions[event.node] = revisions[event.node].max(event.revision);
        }
    }

    tokio::time::sleep(SETTLE).await;
    let control_plane_steady = plane.memory().ok();

    // The control plane restarts where the nodes expect it.
    plane.stop(Signal::SIGTERM).await;
    let restarted = Instant::now();
    let (mut plane, _) =
        start_plane(tools, &run_dir, &address.to_string(), "control-plane-2.log").await?;
    let mut resynced = vec![false; nodes];
    let mut done = 0;
    while done < nodes {
        let event = next(
            &mut applied,
            Duration::from_secs(600),
            "the nodes to resync after a restart",
        )
        .await?;
        if event.at > restarted && event.revision >= expected && !resynced[event.node] {
            resynced[event.node] = true;
            done += 1;
        }
    }
    let restart_resync = restarted.elapsed();
    let bench_process = crate::procs::memory_of(std::process::id()).ok();

    for handle in handles {
        handle.abort();
    }
    plane.stop(Signal::SIGTERM).await;

    latencies.sort();
    change_bytes.sort_unstable();
    let percentile = |q: f64| -> u64 {
        let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies
            .get(index)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    };
    initial_bytes.sort_unstable();
    Ok(PropagationResult {
        nodes,
        workspaces: args.workspaces,
        initial_sync_seconds: initial_sync.as_secs_f64(),
        initial_bytes_per_node: initial_bytes
            .get(initial_bytes.len() / 2)
            .copied()
            .unwrap_or(0),
        change_p50_us: percentile(0.5),
        change_p99_us: percentile(0.99),
        change_max_us: percentile(1.0),
        change_samples: latencies.len(),
        bytes_per_node_per_change: change_bytes
            .get(change_bytes.len() / 2)
            .copied()
            .unwrap_or(0),
        restart_resync_seconds: restart_resync.as_secs_f64(),
        control_plane_idle,
        control_plane_after_sync,
        control_plane_steady,
        bench_process,
    })
}

async fn next(
    applied: &mut mpsc::UnboundedReceiver<Applied>,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<Applied> {
    match tokio::time::timeout(timeout, applied.recv()).await {
        Ok(Some(event)) => Ok(event),
        Ok(None) => bail!("every simulated node stopped while waiting for {what}"),
        Err(_) => bail!("timed out after {timeout:?} waiting for {what}"),
    }
}

/// A node that keeps a stream open, ACKs every update and reports it;
/// reconnects like a real node when the stream breaks.
/// A node token for the run's database, made with the operator command.
fn node_token(tools: &Tools, run_dir: &Path) -> anyhow::Result<String> {
    let output = std::process::Command::new(tools.binary("mockplane-control-plane"))
        .args(["create-node-token", "--name", "bench", "--data-dir"])
        .arg(run_dir)
        .output()
        .context("running create-node-token")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let event: serde_json::Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .with_context(|| {
            format!(
                "create-node-token failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
    Ok(event["token"].as_str().context("no token")?.to_owned())
}

async fn simulated_node(
    node: usize,
    url: String,
    token: String,
    events: mpsc::UnboundedSender<Applied>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    let mut applied = 0u64;
    loop {
        // A broken stream is what the benchmark provokes on restart: reconnect.
        let _ = stream_once(node, &url, &token, &mut applied, &events, &mut backoff).await;
        if events.is_closed() {
            return;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn stream_once(
    node: usize,
    url: &str,
    token: &str,
    applied: &mut u64,
    events: &mpsc::UnboundedSender<Applied>,
    backoff: &mut Backoff,
) -> anyhow::Result<()> {
    let channel = Endpoint::from_shared(url.to_owned())?
        .tcp_nodelay(true)
        .connect()
        .await?;
    let mut client =
        ConfigDiscoveryClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let (outbound, rx) = mpsc::channel(4);
    let hello = v1::Hello {
        node_id: format!("sim-{node}"),
        protocol_version: PROTOCOL_VERSION,
        config_schema_version: mockplane_proto::CONFIG_SCHEMA_VERSION,
        applied_revision: *applied,
        binary_version: "bench".into(),
        ..Default::default()
    };
    outbound
        .send(v1::NodeMessage {
            kind: Some(v1::node_message::Kind::Hello(hello)),
        })
        .await?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let mut inbound = client.stream(request).await?.into_inner();
    let mut bytes = 0u64;
    while let Some(update) = inbound.message().await? {
        // Each message is a length-prefixed frame of 5 bytes plus the message.
        bytes += update.encoded_len() as u64 + 5;
        if update.chunk_index + 1 < update.chunk_count.max(1) {
            continue;
        }
        *applied = update.revision;
        backoff.reset();
        outbound
            .send(v1::NodeMessage {
                kind: Some(v1::node_message::Kind::Ack(v1::Ack {
                    revision: update.revision,
                    nonce: update.nonce,
                })),
            })
            .await?;
        if events
            .send(Applied {
                node,
                revision: update.revision,
                bytes,
                at: Instant::now(),
            })
            .is_err()
        {
            return Ok(());
        }
        bytes = 0;
    }
    Ok(())
}

pub fn markdown(out: &mut String, results: &[PropagationResult]) {
    let _ = writeln!(
        out,
        "### Config propagation\n\n\
         A one-route change of one workspace, from sending it to the control plane to each \
         simulated node's ACK, over every (change, node) pair; bytes are what each node received \
         for the change; resync is from starting a restarted control plane to every node back in \
         sync. Memory is resident memory without pages the allocator freed lazily.\n\n\
         | Nodes | Workspaces | change p50 | p99 | max | bytes per node per change | initial sync | initial bytes per node | resync after restart | control plane memory: idle, after the syncs, steady |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.2} s | {} | {:.2} s | {}, {}, {} |",
            r.nodes,
            r.workspaces,
            micros(Some(r.change_p50_us as f64)),
            micros(Some(r.change_p99_us as f64)),
            micros(Some(r.change_max_us as f64)),
            r.bytes_per_node_per_change,
            r.initial_sync_seconds,
            mib(r.initial_bytes_per_node),
            r.restart_resync_seconds,
            r.control_plane_idle
                .map_or("–".into(), |m| mib(m.held_bytes())),
            r.control_plane_after_sync
                .map_or("–".into(), |m| mib(m.held_bytes())),
            r.control_plane_steady
                .map_or("–".into(), |m| mib(m.held_bytes())),
        );
    }
    out.push('\n');
}
