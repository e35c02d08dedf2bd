//! What hostile documents cost everyone else: a real control plane (release
//! build) answers `WhoAmI` alone, then while clients keep sending 8 MiB
//! OpenAPI documents nested `[` all the way down (each refused at its 129th
//! level). The figure that matters is the unrelated call's latency under
//! that load against its latency alone, measured side by side in one run.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args as ClapArgs;
use mockplane_proto::v1;
use mockplane_proto::v1::auth_service_client::AuthServiceClient;
use mockplane_proto::v1::scenario_service_client::ScenarioServiceClient;
use mockplane_proto::v1::workspace_service_client::WorkspaceServiceClient;
use nix::sys::signal::Signal;
use serde::Serialize;
use tonic::Request;
use tonic::transport::Channel;

use crate::setup::Tools;

#[derive(ClapArgs, Clone)]
pub struct Args {
    /// Clients sending hostile documents at once.
    #[arg(long, default_value = "4")]
    pub hostile_clients: usize,
    /// Seconds of hostile load.
    #[arg(long, default_value = "10")]
    pub hostile_seconds: u64,
}

#[derive(Serialize, Debug, Clone)]
pub struct HostileResult {
    pub document_bytes: usize,
    pub clients: usize,
    pub refusals: usize,
    pub refusal_p50_ms: f64,
    pub refusal_max_ms: f64,
    pub whoami_alone_p50_ms: f64,
    pub whoami_alone_p99_ms: f64,
    pub whoami_loaded_p50_ms: f64,
    pub whoami_loaded_p99_ms: f64,
    pub whoami_loaded_max_ms: f64,
}

fn percentile(mut values: Vec<f64>, p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let index = ((values.len() - 1) as f64 * p).round() as usize;
    values[index]
}

fn authorized<T>(message: T, token: &str) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

async fn whoami(auth: &mut AuthServiceClient<Channel>, token: &str) -> anyhow::Result<f64> {
    let start = Instant::now();
    auth.who_am_i(authorized(v1::WhoAmIRequest {}, token)?)
        .await
        .context("WhoAmI")?;
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

pub async fn run(tools: &Tools, work: &Path, args: &Args) -> anyhow::Result<HostileResult> {
    let run_dir = work.join("run-hostile");
    let _ = std::fs::remove_dir_all(&run_dir);
    std::fs::create_dir_all(&run_dir)?;
    let (mut plane, address) =
        crate::propagation::start_plane(tools, &run_dir, "127.0.0.1:0", "control-plane.log")
            .await?;
    let token = plane
        .event("bootstrap", "admin_token")
        .context("no admin token")?;
    let channel = Channel::from_shared(format!("http://{address}"))?
        .connect()
        .await?;
    WorkspaceServiceClient::new(channel.clone())
        .create_workspace(authorized(
            v1::CreateWorkspaceRequest {
                workspace: Some(v1::Workspace {
                    slug: "hostile".into(),
                    ..Default::default()
                }),
            },
            &token,
        )?)
        .await?;
    let mut auth = AuthServiceClient::new(channel.clone());
    let mut alone = Vec::new();
    for _ in 0..300 {
        alone.push(whoami(&mut auth, &token).await?);
    }

    let head = "openapi: 3.0.0\ninfo: {title: deep, version: '1'}\npaths: {}\nx-deep: ";
    let size = mockplane_shared::model::openapi::MAX_DOCUMENT_BYTES;
    let document: Arc<str> = format!("{head}{}", "[".repeat(size - head.len())).into();
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for _ in 0..args.hostile_clients {
        let (stop, document, token) = (stop.clone(), document.clone(), token.clone());
        // A connection of its own, as separate clients would have.
        let channel = Channel::from_shared(format!("http://{address}"))?
            .connect()
            .await?;
        senders.push(tokio::spawn(async move {
            let mut scenarios =
                ScenarioServiceClient::new(channel).max_encoding_message_size(usize::MAX);
            let mut took = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let refused = scenarios
                    .import_open_api(authorized(
                        v1::ImportOpenApiRequest {
                            workspace: "hostile".into(),
                            scenario: Some(v1::Scenario {
                                name: "deep".into(),
                                ..Default::default()
                            }),
                            document: document.to_string(),
                        },
                        &token,
                    )?)
                    .await
                    .is_err();
                anyhow::ensure!(refused, "a hostile document was accepted");
                took.push(start.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(took)
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(args.hostile_seconds);
    let mut loaded = Vec::new();
    while Instant::now() < deadline {
        loaded.push(whoami(&mut auth, &token).await?);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut refusals = Vec::new();
    for sender in senders {
        refusals.extend(sender.await??);
    }
    plane.stop(Signal::SIGTERM).await;

    let result = HostileResult {
        document_bytes: size,
        clients: args.hostile_clients,
        refusals: refusals.len(),
        refusal_p50_ms: percentile(refusals.clone(), 0.5),
        refusal_max_ms: percentile(refusals, 1.0),
        whoami_alone_p50_ms: percentile(alone.clone(), 0.5),
        whoami_alone_p99_ms: percentile(alone, 0.99),
        whoami_loaded_p50_ms: percentile(loaded.clone(), 0.5),
        whoami_loaded_p99_ms: percentile(loaded.clone(), 0.99),
        whoami_loaded_max_ms: percentile(loaded, 1.0),
    };
    eprintln!("hostile documents: {result:?}");
    Ok(result)
}

pub fn markdown(out: &mut String, results: &[HostileResult]) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "### Hostile documents\n\n\
         Clients sending 8 MiB OpenAPI documents nested `[` all the way down (refused at the 129th \
         level), and `WhoAmI` alone and meanwhile, against one control plane.\n\n\
         | clients | refusals | refusal p50 | max | WhoAmI alone p50 | p99 | WhoAmI meanwhile p50 | p99 | max |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in results {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} ms | {:.1} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.1} ms |",
            r.clients,
            r.refusals,
            r.refusal_p50_ms,
            r.refusal_max_ms,
            r.whoami_alone_p50_ms,
            r.whoami_alone_p99_ms,
            r.whoami_loaded_p50_ms,
            r.whoami_loaded_p99_ms,
            r.whoami_loaded_max_ms,
        );
    }
    out.push('\n');
}
