//! `mockplane-node`: parse the configuration, build, run.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use mockplane_data_plane::NodeConfig;
use mockplane_data_plane::client::Backoff;
use rand::Rng as _;
use serde_json::json;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A Mockplane data-plane node: serves every workspace's mocks from an
/// in-memory table that the control plane streams to it.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Address for mock traffic. Port 0 picks a free port; the address
    /// bound is printed.
    #[arg(long, env = "MOCKPLANE_NODE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address for /healthz, /readyz, /metrics and /status.
    #[arg(
        long,
        env = "MOCKPLANE_NODE_OPS_LISTEN",
        default_value = "127.0.0.1:9090"
    )]
    ops_listen: SocketAddr,
    /// How the control plane reaches the ops listener, to query the request
    /// journal (http://host:port); default: the address bound.
    #[arg(long, env = "MOCKPLANE_NODE_OPS_ADVERTISE")]
    ops_advertise: Option<String>,
    /// MiB of recent requests the request journal keeps; 0 turns it off.
    #[arg(long, env = "MOCKPLANE_NODE_JOURNAL_MIB", default_value = "64")]
    journal_mib: usize,
    /// Seconds between usage reports to the control plane (requests per
    /// workspace and environment, key last-use times); 0 turns reporting
    /// off. A last report goes when the node shuts down.
    #[arg(
        long,
        env = "MOCKPLANE_NODE_USAGE_INTERVAL_SECS",
        default_value = "10",
        value_name = "SECONDS"
    )]
    usage_interval_secs: u64,
    /// The control plane's gRPC address; several replicas comma-separated
    /// (the node moves to the next when a stream fails or ends).
    #[arg(
        long,
        env = "MOCKPLANE_CONTROL_PLANE",
        default_value = "http://127.0.0.1:7070",
        value_delimiter = ','
    )]
    control_plane: Vec<String>,
    /// This node's identity in the control plane's registry. Default: the
    /// host name and a random suffix.
    #[arg(long, env = "MOCKPLANE_NODE_ID")]
    node_id: Option<String>,
    /// A label for the registry, as key=value; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Worker threads for mock traffic. Default: one per CPU.
    #[arg(long, env = "MOCKPLANE_NODE_THREADS")]
    threads: Option<usize>,
    /// First reconnect delay after the config stream breaks.
    #[arg(long, default_value = "250", value_name = "MS")]
    reconnect_min_ms: u64,
    /// Longest reconnect delay.
    #[arg(long, default_value = "10000", value_name = "MS")]
    reconnect_max_ms: u64,
    /// The node token to present to the control plane (`mpn_…`); prefer
    /// --token-file, which keeps it out of the process list.
    #[arg(long, env = "MOCKPLANE_NODE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the node token (what `mockplane-control-plane
    /// create-node-token --file` writes).
    #[arg(
        long,
        env = "MOCKPLANE_NODE_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "token"
    )]
    token_file: Option<std::path::PathBuf>,
    /// Directory for the node's last-known-good config: written after
    /// every applied update, read at start so the node serves while the
    /// control plane is away. Unset: the node keeps none.
    #[arg(long, env = "MOCKPLANE_NODE_STATE_DIR", value_name = "DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// On SIGTERM, seconds to keep serving before closing the listeners.
    #[arg(long, default_value = "5", value_name = "SECONDS")]
    grace_period: u64,
    /// After that, seconds to let requests in flight finish.
    #[arg(long, default_value = "5", value_name = "SECONDS")]
    shutdown_timeout: u64,
    #[arg(long, env = "MOCKPLANE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_label(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((key, value))
            if !key.is_empty()
                && key.len() <= 128
                && value.len() <= 256
                && !raw.chars().any(char::is_control) =>
        {
            Ok((key.to_owned(), value.to_owned()))
        }
        _ => Err(format!(
            "expected key=value (a key of 1 to 128 and a value of up to 256 printable characters), got {raw:?}"
        )),
    }
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!("{host}-{:06x}", rand::rng().random_range(0..0x100_0000u32))
}

/// Lets the process hold as many sockets as the system allows it: each
/// connected node (or client) is one, and soft limits are often 1024.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(error) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(%error, soft, hard, "could not raise the open-files limit");
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    raise_open_files_limit();
    let token = match (&cli.token, &cli.token_file) {
        (Some(token), _) => token.trim().to_owned(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("reading the node token from {}", file.display()))?
            .trim()
            .to_owned(),
        (None, None) => String::new(),
    };
    let threads = cli
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let node = mockplane_data_plane::build(NodeConfig {
        listen: cli.listen,
        ops_listen: cli.ops_listen,
        ops_advertise: cli.ops_advertise,
        journal_mib: cli.journal_mib,
        usage_interval: (cli.usage_interval_secs > 0)
            .then(|| Duration::from_secs(cli.usage_interval_secs)),
        control_planes: cli.control_plane,
        node_id: cli.node_id.unwrap_or_else(default_node_id),
        labels: cli.labels.into_iter().collect::<HashMap<_, _>>(),
        threads,
        backoff: Backoff::new(
            Duration::from_millis(cli.reconnect_min_ms),
            Duration::from_millis(cli.reconnect_max_ms),
        ),
        grace_period: Duration::from_secs(cli.grace_period),
        shutdown_timeout: Duration::from_secs(cli.shutdown_timeout),
        state_dir: cli.state_dir,
        token,
    })?;
    // Machine-readable events go to stdout, one JSON object per line.
    println!(
        "{}",
        json!({
            "event": "listening",
            "http": node.http_address.to_string(),
            "ops": node.ops_address.to_string(),
            "node_id": node.state.node_id,
        })
    );
    tracing::info!(http = %node.http_address, ops = %node.ops_address, node = %node.state.node_id, "node listening");
    node.server.run_forever()
}
