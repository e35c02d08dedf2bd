//! `mockplane-bench`: Mockplane's load and propagation benchmarks.
//!
//! - `load`: a node serving generated workspaces, side by side with
//!   WireMock, Mockoon and nginx (the ceiling) holding the same mocks, all
//!   driven by wrk at the same concurrency in interleaved rounds; then
//!   latency at half of the node's peak rate; and the node's memory.
//! - `propagation`: a control plane with generated workspaces and N
//!   simulated nodes on real sockets: time from a change to every node's
//!   ACK, bytes per node, resync after a restart, control-plane memory.
//!
//! `make bench` installs what is needed and runs everything; results are
//! printed as Markdown and saved under the work folder.
#![forbid(unsafe_code)]

mod hostile;
mod procs;
mod propagation;
mod rate;
mod report;
mod servers;
mod setup;
mod units;
mod wrk;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use mockplane_benches::request_paths;

use crate::procs::Pinning;
use crate::report::Report;
use crate::servers::{Kind, Server};
use crate::setup::{Tools, config_db};

#[derive(Parser)]
#[command(about = "Mockplane's load and propagation benchmarks")]
struct Cli {
    /// Generated configs, logs and results.
    #[arg(long, default_value = "target/bench-work")]
    work: PathBuf,
    /// Where the release binaries are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Where scripts/ensure-bench-deps.sh installed the peers (npm).
    #[arg(long, default_value = "target/bench-tools")]
    tools: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything: load, delays and chaos, then propagation.
    All(AllArgs),
    Load(LoadArgs),
    Propagation(propagation::Args),
    /// A route with a 50 ms delay at 200 connections (Mockplane and
    /// WireMock), and a route answering 503 to 10% of requests.
    Realism(LoadArgs),
    /// Open-loop latency against a running server, for investigations.
    Rate(RateArgs),
    /// An unrelated call's latency while clients send hostile, deeply
    /// nested 8 MiB documents.
    Hostile(hostile::Args),
}

#[derive(Args, Clone)]
struct RateArgs {
    /// The server, host:port.
    #[arg(long)]
    address: std::net::SocketAddr,
    /// Requests per second.
    #[arg(long)]
    rate: f64,
    /// Generated workspaces the paths are spread over.
    #[arg(long, default_value = "1")]
    workspaces: usize,
    #[arg(long, default_value = "64")]
    connections: usize,
    #[arg(long, default_value = "10")]
    seconds: u64,
    /// CPUs for the load generator (a taskset list).
    #[arg(long)]
    client_cpus: Option<String>,
}

#[derive(Args, Clone)]
struct AllArgs {
    #[command(flatten)]
    load: LoadArgs,
    #[command(flatten)]
    propagation: propagation::Args,
    #[command(flatten)]
    hostile: hostile::Args,
}

#[derive(Args, Clone)]
struct LoadArgs {
    /// Workspace counts (of 20 routes) Mockplane runs at.
    #[arg(long, value_delimiter = ',', default_value = "1,1000,10000")]
    scales: Vec<usize>,
    /// Workspace counts the peers run at. WireMock and Mockoon load 20 000
    /// mocks in seconds but 200 000 in many minutes (see docs/benchmarks.md),
    /// so by default they stop at 1 000 workspaces.
    #[arg(long, value_delimiter = ',', default_value = "1,1000")]
    peer_scales: Vec<usize>,
    /// Peers to compare with.
    #[arg(long, value_delimiter = ',', default_value = "wiremock,mockoon,nginx")]
    peers: Vec<String>,
    #[arg(long, default_value = "64")]
    connections: usize,
    #[arg(long, default_value = "2")]
    wrk_threads: usize,
    /// Seconds per measured run.
    #[arg(long, default_value = "10")]
    seconds: u64,
    /// Seconds of warm-up per server before the rounds.
    #[arg(long, default_value = "10")]
    warmup: u64,
    #[arg(long, default_value = "3")]
    rounds: usize,
    /// CPUs for the servers (a taskset list); "none" to not pin. Default:
    /// CPU 0 when the machine has two or more.
    #[arg(long)]
    server_cpus: Option<String>,
    /// CPUs for the load generators. Default: every CPU but the servers'.
    #[arg(long)]
    client_cpus: Option<String>,
}

impl LoadArgs {
    fn pinning(&self) -> Pinning {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let server = match self.server_cpus.as_deref() {
            Some("none") => None,
            Some(list) => Some(list.to_owned()),
            None if cpus >= 2 => Some("0".to_owned()),
            None => None,
        };
        let client = match (self.client_cpus.as_deref(), &server) {
            (Some("none"), _) | (None, None) => None,
            (Some(list), _) => Some(list.to_owned()),
            (None, Some(_)) => Some(format!("1-{}", cpus - 1)),
        };
        Pinning { server, client }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    raise_open_files_limit();
    std::fs::create_dir_all(&cli.work)?;
    let work = cli.work.canonicalize()?;
    let tools = Tools::find(cli.bin_dir.canonicalize()?, cli.tools.clone())?;
    let mut report = Report::new();
    if let Command::Rate(args) = cli.command {
        return rate_only(args).await;
    }
    let work_done = async {
        match cli.command {
            Command::All(args) => {
                let load = load(&tools, &work, &args.load, &mut report).await;
                let realism = realism(&tools, &work, &args.load, &mut report).await;
                let propagation = propagation::run(
                    &tools,
                    &work,
                    &args.propagation,
                    report.propagation_results(),
                )
                .await;
                let hostile = hostile::run(&tools, &work, &args.hostile)
                    .await
                    .map(|r| report.hostile(r));
                load.and(realism).and(propagation).and(hostile)
            }
            Command::Load(args) => load(&tools, &work, &args, &mut report).await,
            Command::Propagation(args) => {
                propagation::run(&tools, &work, &args, report.propagation_results()).await
            }
            Command::Realism(args) => realism(&tools, &work, &args, &mut report).await,
            Command::Hostile(args) => hostile::run(&tools, &work, &args)
                .await
                .map(|r| report.hostile(r)),
            Command::Rate(_) => Ok(()),
        }
    };
    // On Ctrl-C or SIGTERM the work is dropped, and with it every server it
    // started: their handles stop their process groups.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let outcome = tokio::select! {
        outcome = work_done => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; the processes started were stopped")),
        _ = terminate.recv() => Err(anyhow::anyhow!("terminated; the processes started were stopped")),
    };
    let saved = report.save(&work)?;
    println!("{}", report.markdown());
    eprintln!("results saved to {}", saved.display());
    outcome
}

async fn rate_only(args: RateArgs) -> anyhow::Result<()> {
    let pin = Pinning {
        server: None,
        client: args.client_cpus.clone(),
    };
    let paths = request_paths(args.workspaces, 20_000, 42);
    let sample = tokio::task::spawn_blocking(move || {
        rate::run(
            args.address,
            &paths,
            args.rate,
            args.connections,
            Duration::from_secs(args.seconds),
            &pin,
        )
    })
    .await??;
    println!("{}", serde_json::to_string_pretty(&sample)?);
    Ok(())
}

fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

async fn start(
    kind: Kind,
    tools: &Tools,
    pin: &Pinning,
    work: &std::path::Path,
    workspaces: usize,
) -> anyhow::Result<Server> {
    let run_dir = work.join(format!("run-{kind:?}-{workspaces}").to_lowercase());
    match kind {
        Kind::Mockplane => {
            let db = config_db(work, workspaces).await?;
            Server::mockplane(tools, pin, &run_dir, &db, workspaces).await
        }
        Kind::WireMock => {
            let root = setup::wiremock_root(work, workspaces)?;
            Server::wiremock(tools, pin, &root, &run_dir, workspaces).await
        }
        Kind::Mockoon => Server::mockoon(tools, pin, work, &run_dir, workspaces).await,
        Kind::Nginx => Server::nginx(pin, &run_dir).await,
    }
}

/// The delay run (Mockplane and WireMock, 200 connections on a route that
/// answers after 50 ms: a server whose delays hold threads cannot reach
/// 200 / 0.05 s = 4 000 req/s) and the chaos run (Mockplane, 64 connections
/// on a route answering 503 to 10% of requests).
async fn realism(
    tools: &Tools,
    work: &std::path::Path,
    args: &LoadArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
    let script = tools.peers_dir.join("wrk-paths.lua");
    let pin = args.pinning();
    report.pinning(&pin);
    let db = setup::realism_db(work).await?;
    let mockplane =
        Server::mockplane(tools, &pin, &work.join("run-realism-mockplane"), &db, 1).await?;
    let root = setup::wiremock_realism_root(work)?;
    let wiremock =
        Server::wiremock(tools, &pin, &root, &work.join("run-realism-wiremock"), 1).await?;
    let slow = work.join("paths-slow.txt");
    std::fs::write(&slow, setup::SLOW_PATH)?;
    let flaky = work.join("paths-flaky.txt");
    std::fs::write(&flaky, setup::FLAKY_PATH)?;
    let runs = [
        ("delay", &mockplane, &slow, 200),
        ("delay", &wiremock, &slow, 200),
        ("chaos", &mockplane, &flaky, args.connections),
    ];
    for (scenario, server, paths, connections) in runs {
        let load = wrk::Load {
            threads: args.wrk_threads,
            connections,
            duration: Duration::from_secs(args.seconds),
        };
        let warmup = wrk::Load {
            duration: Duration::from_secs(args.warmup.min(5)),
            ..load
        };
        let (address, cpus) = (server.address, pin.client.clone());
        let (script, paths) = (script.clone(), paths.clone());
        pin.wait_quiet(Duration::from_secs(60)).await;
        let sample = tokio::task::spawn_blocking(move || {
            wrk::run(address, &script, &paths, &warmup, cpus.as_deref())?;
            wrk::run(address, &script, &paths, &load, cpus.as_deref())
        })
        .await??;
        eprintln!(
            "  {scenario} {:<10} {connections} connections: {:.0} req/s, p50 {} µs, p99 {} µs, non-2xx {}",
            server.kind.name(),
            sample.rps(),
            sample.p50_us,
            sample.p99_us,
            sample.non_2xx
        );
        report.realism(report::RealismRun {
            scenario,
            server: server.kind.name(),
            connections,
            sample,
        });
    }
    mockplane.stop().await;
    wiremock.stop().await;
    Ok(())
}

async fn load(
    tools: &Tools,
    work: &std::path::Path,
    args: &LoadArgs,
    report: &mut Report,
) -> anyhow::Result<()> {
    let script = tools.peers_dir.join("wrk-paths.lua");
    let mut kinds = vec![Kind::Mockplane];
    for peer in &args.peers {
        kinds.push(match peer.as_str() {
            "wiremock" => Kind::WireMock,
            "mockoon" => Kind::Mockoon,
            "nginx" => Kind::Nginx,
            other => anyhow::bail!("unknown peer {other:?}: use wiremock, mockoon or nginx"),
        });
    }
    let load = wrk::Load {
        threads: args.wrk_threads,
        connections: args.connections,
        duration: Duration::from_secs(args.seconds),
    };
    let warmup = wrk::Load {
        duration: Duration::from_secs(args.warmup),
        ..load
    };
    let pin = args.pinning();
    eprintln!(
        "servers on CPUs {:?}, load generators on CPUs {:?}",
        pin.server, pin.client
    );
    report.pinning(&pin);

    // Every server at every scale runs at once and the rounds interleave
    // them, so that a shared machine's drift hits all of them alike.
    let mut servers: Vec<(usize, Server)> = Vec::new();
    for &kind in &kinds {
        // nginx answers the same whatever the number of mocks: one instance.
        let scales: Vec<usize> = match kind {
            Kind::Nginx => vec![args.scales.iter().copied().max().unwrap_or(1)],
            Kind::Mockplane => args.scales.clone(),
            Kind::WireMock | Kind::Mockoon => args.peer_scales.clone(),
        };
        for workspaces in scales {
            eprintln!(
                "starting {} with {workspaces} workspaces × 20 routes…",
                kind.name()
            );
            match start(kind, tools, &pin, work, workspaces).await {
                Ok(server) => {
                    eprintln!("  ready in {:.1} s", server.startup.as_secs_f64());
                    report.startup(kind, workspaces, server.startup, server.memory().ok());
                    servers.push((workspaces, server));
                }
                Err(error) => {
                    eprintln!("  {} did not start: {error:#}", kind.name());
                    report.failed(kind, workspaces, &format!("{error:#}"));
                }
            }
        }
    }
    let mut paths = std::collections::HashMap::new();
    let mut every_scale: Vec<usize> = args
        .scales
        .iter()
        .chain(&args.peer_scales)
        .copied()
        .collect();
    every_scale.sort_unstable();
    every_scale.dedup();
    for &workspaces in &every_scale {
        let list = request_paths(workspaces, 20_000, 42);
        let file = work.join(format!("paths-{workspaces}.txt"));
        std::fs::write(&file, list.join("\n"))?;
        paths.insert(workspaces, (file, list));
    }
    let largest = args.scales.iter().copied().max().unwrap_or(1);
    let paths_for = |server: &Server, workspaces: usize| {
        // nginx gets the largest scale's paths; any path answers.
        let scale = if server.kind == Kind::Nginx {
            largest
        } else {
            workspaces
        };
        paths.get(&scale).cloned().context("paths")
    };

    for (workspaces, server) in &servers {
        eprintln!("warming up {} ({workspaces})…", server.kind.name());
        let (file, _) = paths_for(server, *workspaces)?;
        let (address, script, cpus) = (server.address, script.clone(), pin.client.clone());
        tokio::task::spawn_blocking(move || {
            wrk::run(address, &script, &file, &warmup, cpus.as_deref())
        })
        .await??;
    }
    for round in 1..=args.rounds {
        for (workspaces, server) in &servers {
            if !pin.wait_quiet(Duration::from_secs(60)).await {
                eprintln!("  the server CPUs were still busy after 60 s; measuring anyway");
            }
            let (file, list) = paths_for(server, *workspaces)?;
            let (address, script, cpus) = (server.address, script.clone(), pin.client.clone());
            let sample = tokio::task::spawn_blocking(move || {
                wrk::run(address, &script, &file, &load, cpus.as_deref())
            })
            .await??;
            eprintln!(
                "  round {round} {:<16} {:>6} ws {:>10.0} req/s  p99 {:>8} µs  errors {}",
                server.kind.name(),
                workspaces,
                sample.rps(),
                sample.p99_us,
                sample.errors()
            );
            let scales: Vec<usize> = if server.kind == Kind::Nginx {
                every_scale.clone()
            } else {
                vec![*workspaces]
            };
            for &scale in &scales {
                report.throughput(server.kind, scale, sample);
            }
            // Latency at half of the peak just measured, while the machine
            // is in the same state.
            if matches!(server.kind, Kind::Mockplane | Kind::Nginx) {
                pin.wait_quiet(Duration::from_secs(60)).await;
                let (connections, seconds, rate_pin) =
                    (args.connections, args.seconds, pin.clone());
                let half = sample.rps() / 2.0;
                let rate_sample = tokio::task::spawn_blocking(move || {
                    rate::run(
                        address,
                        &list,
                        half,
                        connections,
                        Duration::from_secs(seconds),
                        &rate_pin,
                    )
                })
                .await??;
                eprintln!(
                    "  round {round} {:<16} {:>6} ws at half of peak ({:.0} req/s): p50 {} µs, p99 {} µs",
                    server.kind.name(),
                    workspaces,
                    rate_sample.target_rps,
                    rate_sample.p50_us,
                    rate_sample.p99_us
                );
                for &scale in &scales {
                    report.half_load(server.kind, scale, rate_sample.clone());
                }
            }
        }
    }
    for (workspaces, server) in servers {
        report.memory_after_load(server.kind, workspaces, server.memory().ok());
        server.stop().await;
    }
    Ok(())
}
