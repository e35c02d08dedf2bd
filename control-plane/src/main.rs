//! `mockplane-control-plane`: parse the configuration, build, run.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use mockplane_control_plane::identity::token;
use mockplane_control_plane::retention::{self, Keep, Policy};
use mockplane_control_plane::{server, store};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The Mockplane control plane: the gRPC API for workspaces and their mocks,
/// and the config stream that feeds data-plane nodes.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (what runs when no command is given).
    Serve(Box<ServeArgs>),
    /// Create an API token for an org, straight in the database (for example
    /// to replace a lost admin token), and print it once.
    CreateToken(CreateTokenArgs),
    /// Create a node token (the credential data-plane nodes present on the
    /// config stream) and print it once. Several can be valid at once:
    /// rotate by creating a new one, moving the nodes to it, and revoking
    /// the old one.
    CreateNodeToken(NodeTokenArgs),
    /// Revoke a node token: new streams presenting it are refused, and
    /// each replica ends the open ones at its next token check
    /// (`--node-token-recheck-secs`).
    RevokeNodeToken(RevokeNodeTokenArgs),
    /// List node tokens (names, when created, last used, revoked).
    ListNodeTokens(StoreOnlyArgs),
    /// Run the retention jobs once now (what `serve` does every hour) and
    /// print what each pruned, as JSON; exits 1 when one failed.
    Prune(PruneArgs),
}

#[derive(Args)]
struct PruneArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    retention: RetentionArgs,
    /// Count what would be pruned; delete nothing.
    #[arg(long)]
    dry_run: bool,
}

/// How long the tables that grow with use keep their rows: whole days, or
/// `forever`. Environments that require a reason keep their access log
/// whatever the setting; pending deliveries, usable refresh tokens and
/// each workspace's newest change are never pruned.
#[derive(Args)]
struct RetentionArgs {
    /// The change log (rows beyond the 10 000 newest revisions, which the
    /// config stream computes deltas from).
    #[arg(
        long,
        env = "MOCKPLANE_RETAIN_CHANGE_LOG",
        default_value = "30",
        value_name = "DAYS|forever"
    )]
    retain_change_log: Keep,
    /// Per-minute usage counts.
    #[arg(
        long,
        env = "MOCKPLANE_RETAIN_USAGE",
        default_value = "400",
        value_name = "DAYS|forever"
    )]
    retain_usage: Keep,
    /// Notification deliveries that were delivered or gave up.
    #[arg(
        long,
        env = "MOCKPLANE_RETAIN_DELIVERIES",
        default_value = "30",
        value_name = "DAYS|forever"
    )]
    retain_deliveries: Keep,
    /// The environment access log, counted from each access's expiry.
    #[arg(
        long,
        env = "MOCKPLANE_RETAIN_ACCESS_LOG",
        default_value = "365",
        value_name = "DAYS|forever"
    )]
    retain_access_log: Keep,
    /// Expired or revoked refresh tokens.
    #[arg(
        long,
        env = "MOCKPLANE_RETAIN_REFRESH_TOKENS",
        default_value = "7",
        value_name = "DAYS|forever"
    )]
    retain_refresh_tokens: Keep,
}

impl RetentionArgs {
    fn policy(&self) -> Policy {
        Policy {
            change_log: self.retain_change_log,
            usage: self.retain_usage,
            deliveries: self.retain_deliveries,
            access_log: self.retain_access_log,
            refresh_tokens: self.retain_refresh_tokens,
        }
    }
}

#[derive(Args)]
struct NodeTokenArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The token's name: 1-63 letters, digits, '-', '_' or '.'.
    #[arg(long)]
    name: String,
    /// Also write the new token to this file (mode 0600), for
    /// `mockplane-node --token-file`.
    #[arg(long)]
    file: Option<PathBuf>,
}

#[derive(Args)]
struct RevokeNodeTokenArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long)]
    name: String,
}

#[derive(Args)]
struct StoreOnlyArgs {
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Args)]
struct StoreArgs {
    /// Folder for the embedded database and other local state.
    #[arg(long, env = "MOCKPLANE_DATA_DIR", default_value = ".mockplane")]
    data_dir: PathBuf,
    /// postgres://user:password@host/db, or sqlite://path. Default: an
    /// SQLite file in the data folder.
    #[arg(long, env = "MOCKPLANE_DATABASE_URL")]
    database_url: Option<String>,
    /// The keys that seal the secrets the store keeps (webhook secrets,
    /// GitOps provider tokens): one per line, 64 hex digits, the first
    /// sealing. Made when missing. Every replica needs the same file.
    /// Default: `secrets.key` in the data folder.
    #[arg(long, env = "MOCKPLANE_SECRETS_KEY_FILE")]
    secrets_key_file: Option<PathBuf>,
}

impl StoreArgs {
    /// Opens the store; `serving` makes the secrets key when it is missing
    /// (the admin commands read no sealed value and only load an existing
    /// one, so they leave no key file behind).
    async fn open_for(&self, serving: bool) -> anyhow::Result<std::sync::Arc<dyn store::Store>> {
        let url = match &self.database_url {
            Some(url) => url.clone(),
            None => {
                std::fs::create_dir_all(&self.data_dir).with_context(|| {
                    format!("creating the data folder {}", self.data_dir.display())
                })?;
                format!(
                    "sqlite://{}",
                    self.data_dir.join("control-plane.db").display()
                )
            }
        };
        let key_file = self
            .secrets_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("secrets.key"));
        let secrets = if serving || key_file.exists() {
            mockplane_control_plane::secrets::Secrets::load_or_create(&key_file)?
        } else {
            mockplane_control_plane::secrets::Secrets::default()
        };
        store::open_sealed(&url, secrets).await
    }

    async fn open(&self) -> anyhow::Result<std::sync::Arc<dyn store::Store>> {
        self.open_for(false).await
    }
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Address for the gRPC API and the config stream. Port 0 picks a free
    /// port; the address bound is printed.
    #[arg(long, env = "MOCKPLANE_LISTEN", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Name of the org a first run creates.
    #[arg(long, env = "MOCKPLANE_ORG", default_value = "default")]
    org: String,
    /// E-mail of the first owner a first run creates (it logs in with the
    /// one-time password printed then).
    #[arg(long, env = "MOCKPLANE_ADMIN_EMAIL", default_value = "admin@localhost")]
    admin_email: String,
    /// The key that signs access tokens (HS256). Created on first use,
    /// mode 0600; every replica of one deployment must share it.
    /// Default: jwt.key in the data folder.
    #[arg(long, env = "MOCKPLANE_JWT_KEY_FILE")]
    jwt_key_file: Option<PathBuf>,
    /// A YAML or JSON file listing the identity providers (OIDC issuers)
    /// whose JWTs are accepted.
    #[arg(long, env = "MOCKPLANE_OIDC_ISSUERS")]
    oidc_issuers: Option<PathBuf>,
    /// Days to keep audit events per environment, e.g. `dev=90,test=180`;
    /// older events are pruned hourly (their content emptied, the hash chain
    /// kept). Environments not named, and those that require a reason
    /// (prod by default), are never pruned.
    #[arg(
        long,
        env = "MOCKPLANE_AUDIT_RETENTION",
        default_value = "dev=90,test=180"
    )]
    audit_retention: String,
    /// Only log what the retention job would prune.
    #[arg(long, env = "MOCKPLANE_AUDIT_RETENTION_DRY_RUN")]
    audit_retention_dry_run: bool,
    #[command(flatten)]
    retention: RetentionArgs,
    /// Only log what the hourly retention job (change log, usage,
    /// deliveries, access log, refresh tokens) would prune.
    #[arg(long, env = "MOCKPLANE_RETENTION_DRY_RUN")]
    retention_dry_run: bool,
    /// Seconds between runs of the retention job (the first runs at start).
    #[arg(long, env = "MOCKPLANE_RETENTION_INTERVAL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    retention_interval_secs: u64,
    /// How often pending promotions are checked for expiry, in seconds.
    #[arg(long, env = "MOCKPLANE_PROMOTION_SWEEP_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    promotion_sweep_secs: u64,
    /// The SMTP relay notification e-mail goes through: smtp://host:port
    /// (plain SMTP to a local relay, which does TLS and authentication).
    #[arg(long, env = "MOCKPLANE_SMTP_URL")]
    smtp_url: Option<String>,
    /// The sender of notification e-mail.
    #[arg(
        long,
        env = "MOCKPLANE_SMTP_FROM",
        default_value = "mockplane@localhost"
    )]
    smtp_from: String,
    /// How often the notification outbox is looked at, in milliseconds.
    #[arg(long, env = "MOCKPLANE_NOTIFY_POLL_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    notify_poll_ms: u64,
    /// The wait before a failed delivery's first retry, in milliseconds;
    /// doubled after each further failure (at most an hour).
    #[arg(long, env = "MOCKPLANE_NOTIFY_RETRY_MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    notify_retry_ms: u64,
    /// Seconds a config stream lives before the node is asked to reconnect
    /// (plus up to half as long again, at random), so that nodes spread
    /// over the replicas a balancer offers.
    #[arg(long, env = "MOCKPLANE_STREAM_MAX_AGE_SECS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    stream_max_age_secs: u64,
    /// New config streams admitted per second; nodes beyond it retry with
    /// their jittered backoff.
    #[arg(long, env = "MOCKPLANE_STREAM_ADMISSIONS_PER_SEC", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    stream_admissions_per_sec: u32,
    /// Seconds between checks of the node tokens open streams present: a
    /// revoked token's streams end within this long.
    #[arg(long, env = "MOCKPLANE_NODE_TOKEN_RECHECK_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    node_token_recheck_secs: u64,
    /// Exceptions to the refusal of notification targets (webhooks, GitOps
    /// providers and repositories) on loopback, private and link-local
    /// addresses: networks (10.1.0.0/16), addresses, host names, and
    /// `local-git` for repositories that are paths on this machine;
    /// comma separated.
    #[arg(long, env = "MOCKPLANE_OUTBOUND_ALLOW", value_delimiter = ',')]
    outbound_allow: Vec<String>,
    /// Lets anyone create an org of their own, as its owner
    /// (`mockplane org signup`). Default: only platform admins create orgs.
    #[arg(long, env = "MOCKPLANE_ALLOW_SIGNUP")]
    allow_signup: bool,
    /// With --allow-signup: most sign-ups a minute on this replica.
    #[arg(long, env = "MOCKPLANE_SIGNUPS_PER_MINUTE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    signups_per_minute: u32,
    /// How this replica is named in the node registry (`mockplane nodes`).
    /// Default: the host name and the API port.
    #[arg(long, env = "MOCKPLANE_REPLICA_NAME")]
    replica_name: Option<String>,
    /// Address to serve Prometheus metrics on (`/metrics`): propagation
    /// latencies, ACKs and NACKs, connected nodes, lag, snapshot bytes.
    /// Port 0 picks a free port; the address bound is printed. Default: no
    /// metrics listener.
    #[arg(long, env = "MOCKPLANE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Where the first run writes its admin token (mode 0600). Default:
    /// `admin-token` in the data folder.
    #[arg(long, env = "MOCKPLANE_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// How often the snapshot cache looks for changes it was not told about.
    #[arg(long, default_value = "1000", value_name = "MS")]
    poll_interval_ms: u64,
    #[arg(long, env = "MOCKPLANE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Args)]
struct CreateTokenArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long, default_value = "default")]
    org: String,
    /// A label for the token, such as "ci" or "admin".
    #[arg(long)]
    name: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::CreateToken(args)) => create_token(args).await,
        Some(Command::CreateNodeToken(args)) => create_node_token(args).await,
        Some(Command::RevokeNodeToken(args)) => revoke_node_token(args).await,
        Some(Command::ListNodeTokens(args)) => list_node_tokens(args).await,
        Some(Command::Prune(args)) => prune(args).await,
        Some(Command::Serve(args)) => serve(*args).await,
        None => serve(cli.serve).await,
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

/// Machine-readable events go to stdout, one JSON object per line; logs go
/// to stderr.
fn event(value: serde_json::Value) {
    println!("{value}");
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logs(args.log_format);
    raise_open_files_limit();
    let store = args.store.open_for(true).await?;
    let admin_token_file = args
        .admin_token_file
        .clone()
        .unwrap_or_else(|| args.store.data_dir.join("admin-token"));
    if let Some(first) = server::bootstrap(
        &*store,
        &args.org,
        &args.admin_email,
        Some(&admin_token_file),
    )
    .await?
    {
        // Nodes need a credential from the first run on: the token is
        // written next to the database for local nodes (`mockplane up`).
        let node_token_file = args.store.data_dir.join("node-token");
        let node_token =
            server::create_node_token(&*store, "default", Some(&node_token_file)).await?;
        event(json!({
            "event": "bootstrap",
            "org": first.org.org_name,
            "node_token": node_token,
            "node_token_file": node_token_file.display().to_string(),
            "admin_token": first.admin_token,
            "admin_token_file": admin_token_file.display().to_string(),
            "admin_email": first.admin_email,
            "admin_password": first.admin_password,
            "note": format!(
                "the password is shown only this once; the admin token is also in {} (mode 0600): export MOCKPLANE_TOKEN=$(cat {}) to use the CLI, or `mockplane login` with the e-mail and password",
                admin_token_file.display(),
                admin_token_file.display()
            ),
        }));
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    let backend = store.backend();
    let poll = Duration::from_millis(args.poll_interval_ms.max(10));
    let key_file = args
        .jwt_key_file
        .clone()
        .unwrap_or_else(|| args.store.data_dir.join("jwt.key"));
    let signer = mockplane_control_plane::identity::jwt::Signer::load_or_create(&key_file)?;
    let retention = mockplane_control_plane::api::audit::parse_retention(&args.audit_retention)
        .map_err(|e| anyhow::anyhow!("--audit-retention: {e}"))?;
    let outbound = std::sync::Arc::new(
        mockplane_control_plane::outbound::Outbound::parse(&args.outbound_allow)
            .map_err(|e| anyhow::anyhow!("--outbound-allow: {e}"))?,
    );
    let mut control_plane = server::ControlPlane::start(store, poll, shutdown)
        .await?
        .with_signer(signer)
        .with_audit_retention(retention, args.audit_retention_dry_run)
        .with_retention(
            args.retention.policy(),
            args.retention_dry_run,
            Duration::from_secs(args.retention_interval_secs),
        )
        .with_promotion_sweep(Duration::from_secs(args.promotion_sweep_secs))
        .with_stream_limits(
            mockplane_control_plane::config_stream::discovery::StreamLimits {
                max_age: Duration::from_secs(args.stream_max_age_secs),
                admissions_per_sec: args.stream_admissions_per_sec,
                token_recheck: Duration::from_secs(args.node_token_recheck_secs),
            },
        )
        .with_notifications(mockplane_control_plane::notify::Settings {
            poll: Duration::from_millis(args.notify_poll_ms),
            retry_base: Duration::from_millis(args.notify_retry_ms),
            smtp: args
                .smtp_url
                .as_deref()
                .map(|url| mockplane_control_plane::notify::Smtp::parse(url, &args.smtp_from))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--smtp-url/--smtp-from: {e}"))?,
            work_dir: args.store.data_dir.join("gitops"),
            outbound: outbound.clone(),
            ..Default::default()
        })
        .with_outbound(outbound);
    if args.allow_signup && args.oidc_issuers.is_some() {
        // Sign-ups do not verify e-mail addresses, and an identity
        // provider's login is matched to a user by e-mail: someone could
        // sign up with another's address and own their logins.
        anyhow::bail!(
            "--allow-signup cannot be combined with --oidc-issuers: sign-ups do not verify e-mail addresses, which identity-provider logins are matched by"
        );
    }
    if args.allow_signup
        && let Some(per_minute) = std::num::NonZeroU32::new(args.signups_per_minute)
    {
        control_plane = control_plane.with_signup(per_minute);
    }
    if let Some(path) = &args.oidc_issuers {
        let issuers = mockplane_control_plane::identity::oidc::load_issuers(path)?;
        control_plane =
            control_plane.with_oidc(mockplane_control_plane::identity::oidc::OidcVerifier::new(
                issuers,
                reqwest::Client::new(),
            ));
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let address = listener.local_addr()?;
    let mut metrics_address = None;
    if let Some(at) = args.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(at)
            .await
            .with_context(|| format!("binding {at} (--metrics-listen)"))?;
        metrics_address = Some(metrics.local_addr()?.to_string());
        control_plane = control_plane.with_metrics_listener(metrics);
    }
    if let Some(name) = args.replica_name {
        if name.trim().is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
            anyhow::bail!("--replica-name must be 1 to 128 printable characters");
        }
        control_plane = control_plane.with_replica_name(name);
    }
    tracing::info!(%address, "control plane listening");
    event(json!({
        "event": "listening",
        "grpc": address.to_string(),
        "metrics": metrics_address,
        "backend": backend,
    }));
    control_plane.serve(listener).await
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

async fn prune(args: PruneArgs) -> anyhow::Result<()> {
    init_logs(LogFormat::Text);
    let store = args.store.open().await?;
    let outcome = retention::run_once(
        &*store,
        &args.retention.policy(),
        args.dry_run,
        chrono::Utc::now(),
    )
    .await;
    store.close().await;
    let failed: Vec<&str> = outcome
        .iter()
        .filter(|p| p.error.is_some())
        .map(|p| p.table.name())
        .collect();
    event(json!({ "event": "pruned", "dry_run": args.dry_run, "tables": outcome }));
    if !failed.is_empty() {
        anyhow::bail!("retention failed for {}", failed.join(", "));
    }
    Ok(())
}

async fn create_token(args: CreateTokenArgs) -> anyhow::Result<()> {
    init_logs(LogFormat::Text);
    let store = args.store.open().await?;
    let secret = token::generate();
    store
        .add_token(&args.org, &args.name, &token::hash(&secret))
        .await?;
    event(json!({ "event": "token", "org": args.org, "name": args.name, "token": secret }));
    Ok(())
}

async fn create_node_token(args: NodeTokenArgs) -> anyhow::Result<()> {
    init_logs(LogFormat::Text);
    let store = args.store.open().await?;
    let secret = server::create_node_token(&*store, &args.name, args.file.as_deref()).await?;
    event(json!({
        "event": "node_token",
        "name": args.name,
        "token": secret,
        "file": args.file.map(|f| f.display().to_string()),
        "note": "shown only this once: give it to nodes with --token-file or MOCKPLANE_NODE_TOKEN",
    }));
    Ok(())
}

async fn revoke_node_token(args: RevokeNodeTokenArgs) -> anyhow::Result<()> {
    init_logs(LogFormat::Text);
    let store = args.store.open().await?;
    let record = store.revoke_node_token(&args.name).await?;
    event(json!({
        "event": "node_token_revoked",
        "name": record.name,
        "revoked_at": record.revoked_at.map(|t| t.to_rfc3339()),
    }));
    Ok(())
}

async fn list_node_tokens(args: StoreOnlyArgs) -> anyhow::Result<()> {
    init_logs(LogFormat::Text);
    let store = args.store.open().await?;
    for record in store.list_node_tokens().await? {
        event(json!({
            "name": record.name,
            "created_at": record.created_at.to_rfc3339(),
            "last_used_at": record.last_used_at.map(|t| t.to_rfc3339()),
            "revoked_at": record.revoked_at.map(|t| t.to_rfc3339()),
        }));
    }
    Ok(())
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
    tracing::info!("shutting down");
    shutdown.cancel();
}
