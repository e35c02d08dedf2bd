//! `mockplane up`: a whole local Mockplane in one command. Starts the
//! control plane (on an SQLite file in the data folder) and one data-plane
//! node as child processes, waits until the node serves, prints where
//! everything is, and stops both on Ctrl-C.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use crate::output::Format;

/// How long each process gets to come up.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long each process gets to stop before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub struct UpArgs {
    /// Folder for the database, the admin token and the logs.
    #[arg(long, env = "MOCKPLANE_DATA_DIR", default_value = ".mockplane")]
    data_dir: PathBuf,
    /// Address of the control plane's gRPC API.
    #[arg(long, default_value = "127.0.0.1:7070")]
    grpc_listen: SocketAddr,
    /// Address where the node serves mocks.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http_listen: SocketAddr,
    /// Address of the node's /healthz, /readyz and /metrics.
    #[arg(long, default_value = "127.0.0.1:9090")]
    ops_listen: SocketAddr,
    // The CLI's global connection flags mean nothing here: `up` starts its
    // own control plane. Declaring them (hidden) keeps them out of `up
    // --help`; giving one on the command line is refused (their variables,
    // MOCKPLANE_SERVER and the like, may well be set for other commands).
    #[arg(long, hide = true)]
    server: Option<String>,
    #[arg(long, hide = true)]
    token: Option<String>,
    #[arg(long, hide = true)]
    reason: Option<String>,
}

/// Whether `flag` was typed on the command line (not taken from a variable).
fn typed(flag: &str) -> bool {
    std::env::args().any(|arg| {
        arg == flag
            || arg
                .strip_prefix(flag)
                .is_some_and(|rest| rest.starts_with('='))
    })
}

impl UpArgs {
    /// Refuses what `up` does not take, and ports already in use, before
    /// anything is started or a database opened.
    fn check(&self) -> anyhow::Result<()> {
        for (flag, given) in [
            ("--server", &self.server),
            ("--token", &self.token),
            ("--reason", &self.reason),
        ] {
            if given.is_some() && typed(flag) {
                return Err(anyhow!(
                    "`mockplane up` starts its own control plane and takes no {flag}; it writes the admin token to {}",
                    self.data_dir.join("admin-token").display()
                ));
            }
        }
        for (what, address) in [
            ("--grpc-listen", self.grpc_listen),
            ("--http-listen", self.http_listen),
            ("--ops-listen", self.ops_listen),
        ] {
            if address.port() == 0 {
                continue;
            }
            std::net::TcpListener::bind(address).map_err(|e| {
                anyhow!(
                    "{address} ({what}) is not free: {e}; is another `mockplane up` running? Stop it, or pick other addresses with {what}"
                )
            })?;
        }
        Ok(())
    }
}

/// A child process whose stdout carries JSON event lines.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Self { name, child, log })
    }

    /// Reads event lines until one has `"event": wanted`; returns every event
    /// seen. Fails with the end of the log when the process exits first.
    async fn wait_for(&mut self, wanted: &str) -> anyhow::Result<Vec<Value>> {
        let stdout = self
            .child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("{} has no stdout", self.name))?;
        let mut lines = BufReader::new(stdout).lines();
        let mut events = Vec::new();
        let found = tokio::time::timeout(START_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                let Ok(event) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let done = event["event"] == wanted;
                events.push(event);
                if done {
                    return Ok::<bool, std::io::Error>(true);
                }
            }
            Ok(false)
        })
        .await;
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(drain(lines.into_inner().into_inner()));
        match found {
            Ok(Ok(true)) => Ok(events),
            Ok(Ok(false)) | Ok(Err(_)) => {
                bail!("{} exited while starting:\n{}", self.name, tail(&self.log))
            }
            Err(_) => bail!(
                "{} did not start within {START_TIMEOUT:?}:\n{}",
                self.name,
                tail(&self.log)
            ),
        }
    }

    /// Asks the process to stop, then kills it if it does not.
    async fn stop(&mut self, signal: Signal) {
        if let Some(id) = self.child.id().and_then(|id| i32::try_from(id).ok()) {
            let _ = kill(Pid::from_raw(id), signal);
        }
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

async fn drain(mut stdout: ChildStdout) {
    let mut sink = [0u8; 1024];
    while matches!(stdout.read(&mut sink).await, Ok(n) if n > 0) {}
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(15);
    format!(
        "{}\n(full log: {})",
        lines[start..].join("\n"),
        log.display()
    )
}

fn event_field(events: &[Value], event: &str, field: &str) -> Option<String> {
    events
        .iter()
        .find(|e| e["event"] == event)
        .and_then(|e| e[field].as_str())
        .map(str::to_owned)
}

/// The status code of `GET path`, or `None` when nothing answers.
async fn http_status(address: &str, path: &str) -> Option<u16> {
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {address}\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = [0u8; 32];
    let read = stream.read(&mut head).await.ok()?;
    let line = std::str::from_utf8(&head[..read]).ok()?;
    line.split_whitespace().nth(1)?.parse().ok()
}

async fn wait_ready(ops: &str, node: &mut Process) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if http_status(ops, "/readyz").await == Some(200) {
            return Ok(());
        }
        if let Ok(Some(status)) = node.child.try_wait() {
            bail!("the node exited ({status}):\n{}", tail(&node.log));
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the node did not become ready within {START_TIMEOUT:?} (has it reached the control plane?):\n{}",
                tail(&node.log)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the mockplane binary")?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} is missing: build all binaries together (`cargo build --release` or `make run`)",
            path.display()
        );
    }
    Ok(path)
}

pub async fn run(args: UpArgs, format: Format) -> anyhow::Result<()> {
    args.check()?;
    let control_plane_bin = sibling("mockplane-control-plane")?;
    let node_bin = sibling("mockplane-node")?;
    let logs = args.data_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let token_file = args.data_dir.join("admin-token");
    let database = args.data_dir.join("control-plane.db");

    let mut control_plane = Process::spawn(
        "the control plane",
        &control_plane_bin,
        &[
            "--listen".into(),
            args.grpc_listen.to_string(),
            "--data-dir".into(),
            args.data_dir.display().to_string(),
            "--admin-token-file".into(),
            token_file.display().to_string(),
        ],
        logs.join("control-plane.log"),
    )?;
    let events = control_plane.wait_for("listening").await?;
    let grpc = event_field(&events, "listening", "grpc")
        .ok_or_else(|| anyhow!("the control plane did not say where it listens"))?;
    let first_run = event_field(&events, "bootstrap", "admin_token").is_some();
    // The first owner's login, shown this once (the control plane keeps
    // only a hash of the password).
    let owner = event_field(&events, "bootstrap", "admin_email").zip(event_field(
        &events,
        "bootstrap",
        "admin_password",
    ));

    // The control plane writes the node's credential on its first run; a
    // data folder from before node tokens gets one now.
    let node_token = args.data_dir.join("node-token");
    if !node_token.exists() {
        let made = std::process::Command::new(&control_plane_bin)
            .args(["create-node-token", "--name", "local-node", "--data-dir"])
            .arg(&args.data_dir)
            .arg("--file")
            .arg(&node_token)
            .output()
            .context("creating a node token")?;
        if !made.status.success() {
            bail!(
                "could not create a node token: {}",
                String::from_utf8_lossy(&made.stderr).trim()
            );
        }
    }
    let mut node = Process::spawn(
        "the data-plane node",
        &node_bin,
        &[
            "--listen".into(),
            args.http_listen.to_string(),
            "--ops-listen".into(),
            args.ops_listen.to_string(),
            "--control-plane".into(),
            format!("http://{grpc}"),
            "--node-id".into(),
            "local-node".into(),
            "--state-dir".into(),
            args.data_dir.join("node-state").display().to_string(),
            "--token-file".into(),
            node_token.display().to_string(),
        ],
        logs.join("node.log"),
    )?;
    let events = node.wait_for("listening").await?;
    let http = event_field(&events, "listening", "http")
        .ok_or_else(|| anyhow!("the node did not say where it listens"))?;
    let ops = event_field(&events, "listening", "ops")
        .ok_or_else(|| anyhow!("the node did not say where it listens"))?;
    wait_ready(&ops, &mut node).await?;

    let token_note = token_file
        .exists()
        .then(|| token_file.display().to_string());
    match format {
        Format::Json => println!(
            "{}",
            json!({
                "event": "ready",
                "grpc": format!("http://{grpc}"),
                "http": format!("http://{http}"),
                "ops": format!("http://{ops}"),
                "admin_token_file": token_note,
                "first_run": first_run,
                "admin_email": owner.as_ref().map(|(email, _)| email),
                "admin_password": owner.as_ref().map(|(_, password)| password),
                "database": database.display().to_string(),
                "logs": logs.display().to_string(),
            })
        ),
        Format::Table => print_tour(
            &grpc,
            &http,
            &ops,
            first_run,
            owner.as_ref(),
            token_note.as_deref(),
            &args.data_dir,
        ),
    }

    let outcome = wait_for_stop(&mut control_plane, &mut node).await;
    // SIGINT stops a node at once; SIGTERM lets the control plane end its
    // streams cleanly.
    node.stop(Signal::SIGINT).await;
    control_plane.stop(Signal::SIGTERM).await;
    if format == Format::Table {
        eprintln!("Mockplane stopped.");
    }
    outcome
}

async fn wait_for_stop(control_plane: &mut Process, node: &mut Process) -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = terminate.recv() => Ok(()),
        status = control_plane.child.wait() => Err(anyhow!("the control plane exited ({}):\n{}", display(status), tail(&control_plane.log))),
        status = node.child.wait() => Err(anyhow!("the node exited ({}):\n{}", display(status), tail(&node.log))),
    }
}

fn display(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(error) => error.to_string(),
    }
}

fn print_tour(
    grpc: &str,
    http: &str,
    ops: &str,
    first_run: bool,
    owner: Option<&(String, String)>,
    token_file: Option<&str>,
    data_dir: &Path,
) {
    let cli = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "mockplane".into());
    println!("Mockplane is running.");
    println!("  control plane (gRPC)   http://{grpc}");
    println!("  data-plane node        http://{http}   (ops: http://{ops}/readyz, /metrics)");
    println!("  data and logs          {}", data_dir.display());
    println!();
    if first_run {
        println!("First run: created org \"default\", its first owner and an admin token.");
    }
    if let Some((email, password)) = owner {
        println!("  owner login            {email}");
        println!(
            "  one-time password      {password}   (shown only now: `mockplane login --email {email}`,"
        );
        println!("                         then `mockplane user passwd` to replace it)");
        println!();
    }
    println!("Use the CLI in another terminal:");
    println!("  alias mockplane={cli}");
    println!("  export MOCKPLANE_SERVER=http://{grpc}");
    match token_file {
        Some(path) => println!("  export MOCKPLANE_TOKEN=$(cat {path})"),
        None => println!(
            "  export MOCKPLANE_TOKEN=<the token printed on first run; a new one: mockplane-control-plane create-token --name admin --data-dir {}>",
            data_dir.display()
        ),
    }
    println!("  mockplane workspace create demo");
    println!("  mockplane route add demo --file examples/mocks.yaml");
    println!("  curl http://{http}/w/demo/hello");
    println!();
    println!("Press Ctrl-C to stop.");
}
