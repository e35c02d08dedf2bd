//! The end-to-end harness: starts the real Mockplane binaries as processes,
//! on port 0, and waits for each to say where it listens (an event line on
//! its stdout) or to report ready. Every process is stopped when its handle
//! is dropped; when a test fails, the logs of its processes are printed.
//!
//! The binaries come from the target directory next to the test executable:
//! `make test` builds them first (`cargo build --bins`).
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use mockplane_proto::v1::api_key_service_client::ApiKeyServiceClient;
use mockplane_proto::v1::audit_service_client::AuditServiceClient;
use mockplane_proto::v1::auth_service_client::AuthServiceClient;
use mockplane_proto::v1::environment_service_client::EnvironmentServiceClient;
use mockplane_proto::v1::journal_service_client::JournalServiceClient;
use mockplane_proto::v1::member_service_client::MemberServiceClient;
use mockplane_proto::v1::node_service_client::NodeServiceClient;
use mockplane_proto::v1::notification_service_client::NotificationServiceClient;
use mockplane_proto::v1::org_service_client::OrgServiceClient;
use mockplane_proto::v1::persona_service_client::PersonaServiceClient;
use mockplane_proto::v1::promotion_service_client::PromotionServiceClient;
use mockplane_proto::v1::role_service_client::RoleServiceClient;
use mockplane_proto::v1::route_service_client::RouteServiceClient;
use mockplane_proto::v1::scenario_service_client::ScenarioServiceClient;
use mockplane_proto::v1::user_service_client::UserServiceClient;
use mockplane_proto::v1::workspace_service_client::WorkspaceServiceClient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// How long a condition may take before a test gives up on it.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// The directory holding the built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/e2e-<hash> -> target/debug
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("test executable lives in target/<profile>/deps")
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`; `make test` does)",
        path.display()
    );
    path
}

/// Polls `check` until it yields `Some`, failing after [`PATIENCE`]. For
/// conditions that become true asynchronously (a config reaching a node);
/// the poll interval is short and the wait ends as soon as it holds.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running process of ours, with its log file.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    pub events: Vec<Value>,
}

impl Process {
    /// Starts `program` and reads its stdout until an event line with
    /// `"event": wanted` arrives.
    pub async fn start(
        name: &str,
        program: &Path,
        args: &[String],
        log: PathBuf,
        wanted: &str,
    ) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(&log)?;
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut events = Vec::new();
        let read = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await? {
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    let done = event["event"] == wanted;
                    events.push(event);
                    if done {
                        return Ok::<_, std::io::Error>(true);
                    }
                }
            }
            Ok(false)
        })
        .await;
        // Keep reading stdout so the process never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let process = Self {
            name: name.to_owned(),
            child,
            log,
            events,
        };
        match read {
            Ok(Ok(true)) => Ok(process),
            _ => bail!("{name} did not report '{wanted}':\n{}", process.log_text()),
        }
    }

    pub fn event(&self, event: &str, field: &str) -> Option<String> {
        self.events
            .iter()
            .find(|e| e["event"] == event)
            .and_then(|e| e[field].as_str())
            .map(str::to_owned)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<Pid> {
        self.child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw)
    }

    /// Sends `signal` and waits for the process to exit.
    pub async fn stop(&mut self, signal: Signal) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(pid) = self.pid() {
            kill(pid, signal).ok();
        }
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .map_err(|_| anyhow!("{} did not stop on {signal}", self.name))?
            .context("waiting for exit")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- log of {} -----\n{}", self.name, self.log_text());
        }
    }
}

/// A control plane process.
pub struct ControlPlane {
    pub process: Process,
    pub grpc: SocketAddr,
    pub token: Option<String>,
    /// A node token valid on this control plane's database; nodes started
    /// against its address present it.
    pub node_token: String,
    /// Where it serves `/metrics`.
    pub metrics: Option<SocketAddr>,
}

/// The node token for each control-plane address a test started, so a
/// node started against that address (even before the control plane is
/// back) presents it.
static NODE_TOKENS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

fn node_token_for(url: &str) -> Option<String> {
    let tokens = NODE_TOKENS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tokens
        .iter()
        .rev()
        .find(|(u, _)| u == url)
        .map(|(_, t)| t.clone())
}

/// Every method of the API (`/package.Service/Method`), from its
/// descriptors; the nodes' config stream is not part of it.
pub fn api_methods() -> Vec<String> {
    use prost::Message as _;
    let set = prost_types::FileDescriptorSet::decode(mockplane_proto::FILE_DESCRIPTOR_SET)
        .expect("the API's descriptors");
    let mut methods = Vec::new();
    for file in &set.file {
        for service in &file.service {
            if service.name() == "ConfigDiscovery" {
                continue;
            }
            for method in &service.method {
                methods.push(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    assert!(methods.len() > 50, "{methods:?}");
    methods
}

/// With `MOCKPLANE_E2E_BACKEND=postgres`, control planes started without a
/// database URL get a PostgreSQL database of their own (on the server
/// `DATABASE_URL` names) instead of SQLite: one per data directory, so a
/// test that restarts its control plane finds its data again. For running
/// the whole end-to-end suite against PostgreSQL now and then; the default
/// run keeps SQLite, which most users run.
async fn postgres_for(dir: &Path) -> anyhow::Result<Option<String>> {
    use sqlx::Connection as _;
    if std::env::var("MOCKPLANE_E2E_BACKEND").as_deref() != Ok("postgres") {
        return Ok(None);
    }
    let admin_url = std::env::var("DATABASE_URL")
        .context("MOCKPLANE_E2E_BACKEND=postgres needs DATABASE_URL")?;
    let name = format!(
        "mockplane_e2e_{}",
        uuid::Uuid::new_v5(
            &uuid::Uuid::NAMESPACE_URL,
            dir.display().to_string().as_bytes()
        )
        .simple()
    );
    let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await?;
    if exists.is_none() {
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await?;
    }
    let (server, _) = admin_url
        .rsplit_once('/')
        .context("a database URL has a path")?;
    Ok(Some(format!("{server}/{name}")))
}

/// The database a control plane started on `dir` without a URL uses, for
/// tests that look into it through the store.
pub async fn database_url(dir: &Path) -> String {
    match postgres_for(dir)
        .await
        .expect("a PostgreSQL database for the test")
    {
        Some(url) => url,
        None => format!("sqlite://{}", dir.join("control-plane.db").display()),
    }
}

impl ControlPlane {
    /// Starts a control plane on `listen` with its data in `dir` (SQLite,
    /// unless `database_url` is given).
    pub async fn start(
        dir: &Path,
        listen: &str,
        database_url: Option<&str>,
    ) -> anyhow::Result<Self> {
        Self::start_with(dir, listen, database_url, &[]).await
    }

    /// [`ControlPlane::start`] with more command-line arguments.
    pub async fn start_with(
        dir: &Path,
        listen: &str,
        database_url: Option<&str>,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut args = vec![
            "--listen".into(),
            listen.into(),
            "--data-dir".into(),
            dir.display().to_string(),
        ];
        if !extra.contains(&"--poll-interval-ms") {
            args.extend(["--poll-interval-ms".into(), "200".into()]);
        }
        if !extra.contains(&"--metrics-listen") {
            args.extend(["--metrics-listen".into(), "127.0.0.1:0".into()]);
        }
        // The stand-ins for webhooks and Git providers, and the test's own
        // repositories, live on this machine.
        if !extra.contains(&"--outbound-allow") {
            args.extend([
                "--outbound-allow".into(),
                "127.0.0.0/8,::1,local-git".into(),
            ]);
        }
        let shared_database = match database_url {
            Some(url) => Some(url.to_owned()),
            None => postgres_for(dir).await?,
        };
        if let Some(url) = shared_database {
            args.extend(["--database-url".into(), url]);
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let log = unique_log(dir, "control-plane");
        let process = Process::start(
            "control plane",
            &bin("mockplane-control-plane"),
            &args,
            log,
            "listening",
        )
        .await?;
        let grpc = process
            .event("listening", "grpc")
            .context("listening event without address")?
            .parse()?;
        let metrics = process
            .event("listening", "metrics")
            .and_then(|m| m.parse().ok());
        let token = process.event("bootstrap", "admin_token");
        // The first run's node token, else the one it wrote in its data
        // folder, else a new one in the same database.
        let node_token = match process.event("bootstrap", "node_token") {
            Some(token) => token,
            None => match std::fs::read_to_string(dir.join("node-token")) {
                Ok(text) => text.trim().to_owned(),
                Err(_) => {
                    let mut create = vec![
                        "create-node-token".to_owned(),
                        "--name".into(),
                        format!("test-{}", uuid::Uuid::new_v4()),
                        "--data-dir".into(),
                        dir.display().to_string(),
                    ];
                    if let Some(at) = args.iter().position(|a| a == "--database-url") {
                        create.extend(["--database-url".to_owned(), args[at + 1].clone()]);
                    }
                    let output = Command::new(bin("mockplane-control-plane"))
                        .args(&create)
                        .output()
                        .await?;
                    let stdout = String::from_utf8_lossy(&output.stdout);
                    let event: Value = stdout
                        .lines()
                        .find_map(|l| serde_json::from_str(l).ok())
                        .with_context(|| {
                            format!(
                                "create-node-token printed no event: {}",
                                String::from_utf8_lossy(&output.stderr)
                            )
                        })?;
                    event["token"].as_str().context("no token")?.to_owned()
                }
            },
        };
        NODE_TOKENS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((format!("http://{grpc}"), node_token.clone()));
        Ok(Self {
            process,
            grpc,
            token,
            node_token,
            metrics,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Its Prometheus metrics, as text.
    pub async fn metrics_text(&self) -> String {
        let at = self.metrics.expect("started with --metrics-listen");
        reqwest::get(format!("http://{at}/metrics"))
            .await
            .expect("scrape the control plane")
            .text()
            .await
            .expect("metrics text")
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .expect("url")
            .connect()
            .await
            .expect("connect to the control plane")
    }

    /// API clients authenticated with `token`, stating a reason with every
    /// call (as an operator scripting changes would), so changes that reach
    /// prod pass its reason gate.
    pub async fn api(&self, token: &str) -> Api {
        self.api_with(token, Some("end-to-end test run")).await
    }

    /// API clients authenticated with `token` that state `reason` with
    /// every call (`x-mockplane-reason`).
    pub async fn api_with(&self, token: &str, reason: Option<&str>) -> Api {
        self.api_for(token, reason, None).await
    }

    /// API clients of a platform admin acting in `org` (`x-mockplane-org`).
    pub async fn api_in(&self, token: &str, org: &str) -> Api {
        self.api_for(token, Some("end-to-end test run"), Some(org))
            .await
    }

    async fn api_for(&self, token: &str, reason: Option<&str>, org: Option<&str>) -> Api {
        let channel = self.channel().await;
        let auth = Bearer(
            format!("Bearer {token}").parse().expect("ascii token"),
            reason.map(|r| r.parse().expect("ascii reason")),
            org.map(|o| o.parse().expect("ascii org")),
        );
        Api {
            auth: AuthServiceClient::with_interceptor(channel.clone(), auth.clone()),
            audit: AuditServiceClient::with_interceptor(channel.clone(), auth.clone()),
            users: UserServiceClient::with_interceptor(channel.clone(), auth.clone()),
            roles: RoleServiceClient::with_interceptor(channel.clone(), auth.clone()),
            members: MemberServiceClient::with_interceptor(channel.clone(), auth.clone()),
            workspaces: WorkspaceServiceClient::with_interceptor(channel.clone(), auth.clone()),
            routes: RouteServiceClient::with_interceptor(channel.clone(), auth.clone()),
            environments: EnvironmentServiceClient::with_interceptor(channel.clone(), auth.clone()),
            scenarios: ScenarioServiceClient::with_interceptor(channel.clone(), auth.clone()),
            personas: PersonaServiceClient::with_interceptor(channel.clone(), auth.clone()),
            promotions: PromotionServiceClient::with_interceptor(channel.clone(), auth.clone()),
            orgs: OrgServiceClient::with_interceptor(channel.clone(), auth.clone()),
            api_keys: ApiKeyServiceClient::with_interceptor(channel.clone(), auth.clone()),
            notifications: NotificationServiceClient::with_interceptor(
                channel.clone(),
                auth.clone(),
            ),
            nodes: NodeServiceClient::with_interceptor(channel.clone(), auth.clone()),
            journal: JournalServiceClient::with_interceptor(channel, auth),
        }
    }
}

fn unique_log(dir: &Path, name: &str) -> PathBuf {
    let mut index = 0;
    loop {
        let path = dir.join(format!("{name}-{index}.log"));
        if !path.exists() {
            return path;
        }
        index += 1;
    }
}

#[derive(Clone)]
pub struct Bearer(
    AsciiMetadataValue,
    Option<AsciiMetadataValue>,
    Option<AsciiMetadataValue>,
);

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        if let Some(reason) = &self.1 {
            request
                .metadata_mut()
                .insert("x-mockplane-reason", reason.clone());
        }
        if let Some(org) = &self.2 {
            request
                .metadata_mut()
                .insert("x-mockplane-org", org.clone());
        }
        Ok(request)
    }
}

pub struct Api {
    pub auth: AuthServiceClient<InterceptedService<Channel, Bearer>>,
    pub audit: AuditServiceClient<InterceptedService<Channel, Bearer>>,
    pub users: UserServiceClient<InterceptedService<Channel, Bearer>>,
    pub roles: RoleServiceClient<InterceptedService<Channel, Bearer>>,
    pub members: MemberServiceClient<InterceptedService<Channel, Bearer>>,
    pub workspaces: WorkspaceServiceClient<InterceptedService<Channel, Bearer>>,
    pub routes: RouteServiceClient<InterceptedService<Channel, Bearer>>,
    pub environments: EnvironmentServiceClient<InterceptedService<Channel, Bearer>>,
    pub scenarios: ScenarioServiceClient<InterceptedService<Channel, Bearer>>,
    pub personas: PersonaServiceClient<InterceptedService<Channel, Bearer>>,
    pub journal: JournalServiceClient<InterceptedService<Channel, Bearer>>,
    pub nodes: NodeServiceClient<InterceptedService<Channel, Bearer>>,
    pub promotions: PromotionServiceClient<InterceptedService<Channel, Bearer>>,
    pub notifications: NotificationServiceClient<InterceptedService<Channel, Bearer>>,
    pub orgs: OrgServiceClient<InterceptedService<Channel, Bearer>>,
    pub api_keys: ApiKeyServiceClient<InterceptedService<Channel, Bearer>>,
}

/// A data-plane node process.
pub struct Node {
    pub process: Process,
    pub http: SocketAddr,
    pub ops: SocketAddr,
    client: reqwest::Client,
}

/// A response as a test looks at it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    /// The `error.code` of a JSON error response.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Node {
    /// Starts a node streaming from `control_plane` and waits until it is
    /// ready (it has applied a first snapshot).
    pub async fn start(dir: &Path, control_plane: &str) -> anyhow::Result<Self> {
        let node = Self::spawn(dir, control_plane).await?;
        node.wait_ready().await;
        Ok(node)
    }

    /// Starts a node and waits only until it listens.
    pub async fn spawn(dir: &Path, control_plane: &str) -> anyhow::Result<Self> {
        Self::spawn_with(dir, control_plane, &[]).await
    }

    /// Starts a node with `extra` flags and waits until it is ready.
    pub async fn start_with(
        dir: &Path,
        control_plane: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let node = Self::spawn_with(dir, control_plane, extra).await?;
        node.wait_ready().await;
        Ok(node)
    }

    /// Starts a node with `extra` flags and waits only until it listens.
    pub async fn spawn_with(
        dir: &Path,
        control_plane: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let mut args: Vec<String> = [
            "--listen",
            "127.0.0.1:0",
            "--ops-listen",
            "127.0.0.1:0",
            "--control-plane",
            control_plane,
            "--threads",
            "2",
            "--reconnect-min-ms",
            "50",
            "--reconnect-max-ms",
            "300",
        ]
        .map(str::to_owned)
        .to_vec();
        // The token of the control plane started at that address, unless
        // the test gives its own.
        if !extra.iter().any(|a| a.starts_with("--token"))
            && let Some(token) = node_token_for(control_plane)
        {
            args.extend(["--token".to_owned(), token]);
        }
        args.extend(extra.iter().map(|arg| (*arg).to_owned()));
        let log = unique_log(dir, "node");
        let process =
            Process::start("node", &bin("mockplane-node"), &args, log, "listening").await?;
        let address = |field| -> anyhow::Result<SocketAddr> {
            Ok(process
                .event("listening", field)
                .context("listening event")?
                .parse()?)
        };
        let node = Self {
            http: address("http")?,
            ops: address("ops")?,
            process,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        };
        Ok(node)
    }

    pub async fn wait_ready(&self) {
        eventually("the node to report ready", || async {
            (self.ops_get("/readyz").await.ok()?.status == 200).then_some(())
        })
        .await;
    }

    async fn request(&self, method: reqwest::Method, url: String) -> anyhow::Result<Reply> {
        let response = self.client.request(method, url).send().await?;
        Ok(Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await?,
        })
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.request(reqwest::Method::GET, format!("http://{}{path}", self.http))
            .await
    }

    pub async fn send(&self, method: &str, path: &str) -> anyhow::Result<Reply> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        self.request(method, format!("http://{}{path}", self.http))
            .await
    }

    /// Sends a request with headers and a body.
    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> anyhow::Result<Reply> {
        let mut request = self.client.request(
            reqwest::Method::from_bytes(method.as_bytes())?,
            format!("http://{}{path}", self.http),
        );
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.body(body.to_owned()).send().await?;
        Ok(Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await?,
        })
    }

    pub async fn ops_get(&self, path: &str) -> anyhow::Result<Reply> {
        self.request(reqwest::Method::GET, format!("http://{}{path}", self.ops))
            .await
    }

    pub async fn status(&self) -> Value {
        self.ops_get("/status")
            .await
            .map(|r| r.json())
            .unwrap_or(Value::Null)
    }

    /// Waits until `path` answers with `status` and a body for which
    /// `body_ok` holds; returns that reply.
    pub async fn wait_for(&self, path: &str, status: u16, body_ok: impl Fn(&str) -> bool) -> Reply {
        eventually(
            &format!("node {} to answer {status} on {path}", self.http),
            || async {
                let reply = self.get(path).await.ok()?;
                (reply.status == status && body_ok(&reply.body)).then_some(reply)
            },
        )
        .await
    }
}

/// The `mockplane` CLI run as a user runs it, against one control plane.
pub struct Cli<'a> {
    pub server: String,
    pub token: Option<&'a str>,
}

impl Cli<'_> {
    pub async fn run(&self, args: &[&str]) -> std::process::Output {
        let mut command = tokio::process::Command::new(bin("mockplane"));
        command
            .args(args)
            .env("MOCKPLANE_SERVER", &self.server)
            .env_remove("MOCKPLANE_TOKEN")
            .env_remove("MOCKPLANE_REASON");
        if let Some(token) = self.token {
            command.env("MOCKPLANE_TOKEN", token);
        }
        command.output().await.expect("run mockplane")
    }

    /// Runs a command with extra environment variables and, when `stdin`
    /// is given, that text on its standard input (otherwise it has none,
    /// as with [`Cli::run`]).
    pub async fn run_with(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> std::process::Output {
        use tokio::io::AsyncWriteExt as _;
        let mut command = tokio::process::Command::new(bin("mockplane"));
        command
            .args(args)
            .env("MOCKPLANE_SERVER", &self.server)
            .env_remove("MOCKPLANE_TOKEN")
            .env_remove("MOCKPLANE_REASON")
            .env_remove("MOCKPLANE_ORG");
        if let Some(token) = self.token {
            command.env("MOCKPLANE_TOKEN", token);
        }
        command.envs(env.iter().copied());
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("run mockplane");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            // The command may exit without reading: ignore a closed pipe.
            let _ = pipe.write_all(text.as_bytes()).await;
            drop(pipe);
        }
        child.wait_with_output().await.expect("run mockplane")
    }

    /// [`Cli::ok`] with extra environment variables and standard input.
    pub async fn ok_with(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> String {
        let output = self.run_with(args, env, stdin).await;
        assert!(
            output.status.success(),
            "mockplane {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// [`Cli::fails`] with extra environment variables and standard input.
    pub async fn fails_with(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> String {
        let output = self.run_with(args, env, stdin).await;
        assert!(
            !output.status.success(),
            "mockplane {args:?} should have failed"
        );
        assert_eq!(output.status.code(), Some(1));
        String::from_utf8(output.stderr).unwrap()
    }

    /// Creates workspace `slug` and adds the routes of the mock file text
    /// `yaml` (written under `dir`) with `route add`.
    pub async fn workspace_with_mocks(&self, dir: &Path, slug: &str, yaml: &str) {
        self.ok(&["workspace", "create", slug]).await;
        let file = dir.join(format!("{slug}-mocks.yaml"));
        std::fs::write(&file, yaml).expect("write the mock file");
        let file = file.display().to_string();
        self.ok(&["route", "add", slug, "--file", &file]).await;
    }

    /// Runs a command that must succeed; returns its stdout.
    pub async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "mockplane {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs a command that must fail; returns its stderr.
    pub async fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            !output.status.success(),
            "mockplane {args:?} should have failed"
        );
        assert_eq!(output.status.code(), Some(1));
        String::from_utf8(output.stderr).unwrap()
    }
}

/// Stand-ins for what the control plane talks to: an HTTP server (a
/// webhook receiver, a Git provider's API) and an SMTP sink. Both record
/// what they receive.
pub mod stand_in {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
    use tokio::net::TcpListener;

    /// A request as the stand-in received it.
    #[derive(Debug, Clone)]
    pub struct Received {
        pub method: String,
        pub path: String,
        /// Lower-case names.
        pub headers: Vec<(String, String)>,
        pub body: String,
    }

    impl Received {
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    type Handler = dyn Fn(&Received, usize) -> (u16, String) + Send + Sync;

    /// An HTTP/1.1 server on port 0; `answer` gets each request and how
    /// many came before it.
    pub struct Http {
        pub addr: SocketAddr,
        pub received: Arc<Mutex<Vec<Received>>>,
    }

    impl Http {
        pub async fn start(
            answer: impl Fn(&Received, usize) -> (u16, String) + Send + Sync + 'static,
        ) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let received = Arc::new(Mutex::new(Vec::new()));
            let answer: Arc<Handler> = Arc::new(answer);
            let log = received.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (log, answer) = (log.clone(), answer.clone());
                    tokio::spawn(async move {
                        let (read, mut write) = stream.into_split();
                        let mut read = BufReader::new(read);
                        loop {
                            let mut line = String::new();
                            if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let mut parts = line.split_whitespace();
                            let method = parts.next().unwrap_or_default().to_owned();
                            let path = parts.next().unwrap_or_default().to_owned();
                            let mut headers = Vec::new();
                            loop {
                                let mut header = String::new();
                                if read.read_line(&mut header).await.unwrap_or(0) == 0 {
                                    return;
                                }
                                let header = header.trim_end();
                                if header.is_empty() {
                                    break;
                                }
                                if let Some((name, value)) = header.split_once(':') {
                                    headers.push((
                                        name.trim().to_ascii_lowercase(),
                                        value.trim().to_owned(),
                                    ));
                                }
                            }
                            let length: usize = headers
                                .iter()
                                .find(|(n, _)| n == "content-length")
                                .and_then(|(_, v)| v.parse().ok())
                                .unwrap_or(0);
                            let mut body = vec![0; length];
                            if read.read_exact(&mut body).await.is_err() {
                                return;
                            }
                            let request = Received {
                                method,
                                path,
                                headers,
                                body: String::from_utf8_lossy(&body).into_owned(),
                            };
                            let count = {
                                let mut log = log.lock().unwrap();
                                log.push(request.clone());
                                log.len() - 1
                            };
                            let (status, text) = answer(&request, count);
                            let response = format!(
                                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                                text.len()
                            );
                            if write.write_all(response.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
            Self { addr, received }
        }

        pub fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        pub fn received(&self) -> Vec<Received> {
            self.received.lock().unwrap().clone()
        }
    }

    /// A mail as the sink received it.
    #[derive(Debug, Clone)]
    pub struct Mail {
        pub from: String,
        pub to: Vec<String>,
        pub data: String,
    }

    /// An SMTP server on port 0 that accepts every message.
    pub struct Smtp {
        pub addr: SocketAddr,
        pub mails: Arc<Mutex<Vec<Mail>>>,
    }

    impl Smtp {
        pub async fn start() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let mails = Arc::new(Mutex::new(Vec::new()));
            let log = mails.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let log = log.clone();
                    tokio::spawn(async move {
                        let (read, mut write) = stream.into_split();
                        let mut read = BufReader::new(read);
                        let _ = write.write_all(b"220 sink ready\r\n").await;
                        let mut mail = Mail {
                            from: String::new(),
                            to: Vec::new(),
                            data: String::new(),
                        };
                        loop {
                            let mut line = String::new();
                            if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let command = line.trim_end().to_owned();
                            let upper = command.to_ascii_uppercase();
                            let reply: &[u8] =
                                if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                                    b"250-sink\r\n250 8BITMIME\r\n"
                                } else if let Some(from) = upper.strip_prefix("MAIL FROM:") {
                                    let _ = from;
                                    mail.from = command[10..]
                                        .trim_matches(|c| c == '<' || c == '>')
                                        .to_owned();
                                    b"250 ok\r\n"
                                } else if upper.starts_with("RCPT TO:") {
                                    mail.to.push(
                                        command[8..]
                                            .trim_matches(|c| c == '<' || c == '>')
                                            .to_owned(),
                                    );
                                    b"250 ok\r\n"
                                } else if upper == "DATA" {
                                    let _ = write.write_all(b"354 go ahead\r\n").await;
                                    loop {
                                        let mut data = String::new();
                                        if read.read_line(&mut data).await.unwrap_or(0) == 0 {
                                            return;
                                        }
                                        if data == ".\r\n" {
                                            break;
                                        }
                                        mail.data.push_str(&data);
                                    }
                                    log.lock().unwrap().push(mail.clone());
                                    b"250 queued\r\n"
                                } else if upper == "QUIT" {
                                    let _ = write.write_all(b"221 bye\r\n").await;
                                    return;
                                } else {
                                    b"502 not implemented\r\n"
                                };
                            if write.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
            Self { addr, mails }
        }

        pub fn mails(&self) -> Vec<Mail> {
            self.mails.lock().unwrap().clone()
        }
    }
}

/// Request builders the tests share.
pub mod fixtures {
    use mockplane_proto::v1;

    use crate::{Api, ControlPlane};

    /// Adds `routes` to the working copy of `workspace`.
    pub async fn add_routes(api: &mut Api, workspace: &str, routes: Vec<v1::Route>) {
        api.routes
            .create_routes(v1::CreateRoutesRequest {
                workspace: workspace.into(),
                routes,
                environment: String::new(),
                scenario: String::new(),
            })
            .await
            .expect("add routes");
    }

    /// Clients acting with an environment token of `api`'s caller for
    /// `environment` of `workspace`.
    pub async fn in_env(
        plane: &ControlPlane,
        api: &mut Api,
        workspace: &str,
        environment: &str,
    ) -> Api {
        let token = api
            .auth
            .issue_environment_token(v1::IssueEnvironmentTokenRequest {
                workspace: workspace.into(),
                environment: environment.into(),
                reason: format!("test set-up in {environment}"),
                ttl_seconds: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .token;
        plane.api_with(&token, None).await
    }

    /// A user with `roles` (environment → role) in `workspace`, and an API
    /// token of theirs: `(id, token)`. Roles in an environment that
    /// requires a reason are granted with an environment token.
    pub async fn member(
        plane: &ControlPlane,
        admin: &mut Api,
        workspace: &str,
        email: &str,
        roles: &[(&str, &str)],
    ) -> (String, String) {
        let user = admin
            .users
            .create_user(v1::CreateUserRequest {
                email: email.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        for (environment, role) in roles {
            let mut scoped = if *environment == "prod" {
                Some(in_env(plane, admin, workspace, "prod").await)
            } else {
                None
            };
            scoped
                .as_mut()
                .unwrap_or(admin)
                .members
                .set_member(v1::SetMemberRequest {
                    workspace: workspace.into(),
                    environment: (*environment).into(),
                    principal_id: user.id.clone(),
                    role: (*role).into(),
                })
                .await
                .unwrap();
        }
        let token = admin
            .users
            .create_api_token(v1::CreateApiTokenRequest {
                principal_id: user.id.clone(),
                name: "test".into(),
                ttl_days: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .secret;
        (user.id, token)
    }

    /// An org's first owner, signed in with a new password.
    pub async fn owner_session(plane: &ControlPlane, email: &str, one_time: &str) -> Api {
        let mut anonymous = plane.api_with("unused", None).await;
        let login = |password: &str| v1::LoginRequest {
            email: email.into(),
            password: password.into(),
        };
        let first = anonymous
            .auth
            .login(login(one_time))
            .await
            .unwrap()
            .into_inner();
        plane
            .api(&first.access_token)
            .await
            .auth
            .change_password(v1::ChangePasswordRequest {
                current_password: one_time.into(),
                new_password: "correct horse battery staple".into(),
            })
            .await
            .unwrap();
        let session = anonymous
            .auth
            .login(login("correct horse battery staple"))
            .await
            .unwrap()
            .into_inner();
        plane.api(&session.access_token).await
    }

    /// A route answering `status` with `body` (JSON content type when the
    /// body looks like JSON).
    pub fn route(method: &str, path: &str, status: u32, body: &str) -> v1::Route {
        let headers = if body.starts_with('{') {
            vec![v1::Header {
                name: "content-type".into(),
                value: "application/json".into(),
            }]
        } else {
            Vec::new()
        };
        v1::Route {
            method: method.into(),
            path: path.into(),
            response: Some(v1::MockResponse {
                status,
                headers,
                body: body.as_bytes().to_vec(),
                template: false,
            }),
            ..Default::default()
        }
    }

    /// Sets an environment's reality level (and nothing else).
    pub fn set_reality(
        workspace: &str,
        environment: &str,
        level: u32,
    ) -> v1::UpdateEnvironmentRequest {
        v1::UpdateEnvironmentRequest {
            workspace: workspace.into(),
            environment: environment.into(),
            patch: Some(v1::Environment {
                settings: Some(v1::EnvironmentSettings {
                    reality_level: Some(level),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["settings.reality_level".into()],
            }),
            ..Default::default()
        }
    }

    /// Sets who must approve promotions into `env`.
    pub fn approvals(
        ws: &str,
        env: &str,
        required: u32,
        roles: &[&str],
        expire: u32,
    ) -> v1::UpdateEnvironmentRequest {
        v1::UpdateEnvironmentRequest {
            workspace: ws.into(),
            environment: env.into(),
            patch: Some(v1::Environment {
                settings: Some(v1::EnvironmentSettings {
                    approvals: Some(v1::Approvals {
                        required,
                        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
                        expire_after_secs: expire,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["settings.approvals".into()],
            }),
            ..Default::default()
        }
    }

    /// Replaces the working copy of `scenario` with `routes` and cuts a
    /// version of it; returns its number.
    pub async fn cut(
        api: &mut Api,
        workspace: &str,
        scenario: &str,
        routes: Vec<v1::Route>,
    ) -> u32 {
        let existing = api
            .routes
            .list_routes(v1::ListRoutesRequest {
                workspace: workspace.into(),
                scenario: scenario.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .routes;
        if !existing.is_empty() {
            api.routes
                .delete_routes(v1::DeleteRoutesRequest {
                    workspace: workspace.into(),
                    route_ids: existing.into_iter().map(|r| r.id).collect(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        api.routes
            .create_routes(v1::CreateRoutesRequest {
                workspace: workspace.into(),
                routes,
                scenario: scenario.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        api.scenarios
            .create_version(v1::CreateVersionRequest {
                workspace: workspace.into(),
                scenario: scenario.into(),
                note: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .number
    }

    pub fn new_workspace(slug: &str) -> v1::CreateWorkspaceRequest {
        v1::CreateWorkspaceRequest {
            workspace: Some(v1::Workspace {
                slug: slug.into(),
                ..Default::default()
            }),
        }
    }
}
