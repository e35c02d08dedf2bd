//! The servers under test, each started on loopback with the same mocks.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use mockplane_benches::{TEMPLATES, body, slug};
use nix::sys::signal::Signal;

use crate::procs::{Memory, Pinning, Proc, free_port, wait_http_ok};
use crate::setup::{ConfigDb, Tools, mockoon_env, nginx_conf};

/// How long a server may take to load its mocks and answer.
const START_TIMEOUT: Duration = Duration::from_secs(900);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Kind {
    Mockplane,
    WireMock,
    Mockoon,
    Nginx,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Mockplane => "Mockplane",
            Kind::WireMock => "WireMock",
            Kind::Mockoon => "Mockoon",
            Kind::Nginx => "nginx (ceiling)",
        }
    }
}

pub struct Server {
    pub kind: Kind,
    pub address: SocketAddr,
    /// The process that serves requests (for memory figures).
    serving: usize,
    procs: Vec<Proc>,
    pub startup: Duration,
}

impl Server {
    pub fn memory(&self) -> anyhow::Result<Memory> {
        self.procs[self.serving].memory()
    }

    pub async fn stop(mut self) {
        for proc in self.procs.iter_mut().rev() {
            proc.stop(Signal::SIGINT).await;
        }
    }

    /// A control plane on a copy of `db` and one node streaming from it,
    /// ready when the node serves every workspace.
    pub async fn mockplane(
        tools: &Tools,
        pin: &Pinning,
        run_dir: &Path,
        db: &ConfigDb,
        workspaces: usize,
    ) -> anyhow::Result<Self> {
        let started = std::time::Instant::now();
        db.copy_to(run_dir)?;
        let plane = Proc::spawn_ours(
            "control plane",
            pin.server.as_deref(),
            &tools.binary("mockplane-control-plane"),
            &[
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--data-dir".into(),
                run_dir.display().to_string(),
            ],
            run_dir.join("control-plane.log"),
            "listening",
            START_TIMEOUT,
        )
        .await?;
        let grpc = plane
            .event("listening", "grpc")
            .context("control plane address")?;
        let node = Proc::spawn_ours(
            "node",
            pin.server.as_deref(),
            &tools.binary("mockplane-node"),
            &[
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--ops-listen".into(),
                "127.0.0.1:0".into(),
                "--control-plane".into(),
                format!("http://{grpc}"),
                "--node-id".into(),
                "bench-node".into(),
            ],
            run_dir.join("node.log"),
            "listening",
            START_TIMEOUT,
        )
        .await?;
        let address: SocketAddr = node
            .event("listening", "http")
            .context("node address")?
            .parse()?;
        let ops: SocketAddr = node
            .event("listening", "ops")
            .context("ops address")?
            .parse()?;
        let mut server = Self {
            kind: Kind::Mockplane,
            address,
            serving: 1,
            procs: vec![plane, node],
            startup: Duration::ZERO,
        };
        wait_http_ok(ops, "/readyz", START_TIMEOUT, &mut server.procs[1]).await?;
        let probe = format!("/w/{}/health", slug(workspaces - 1));
        wait_http_ok(address, &probe, START_TIMEOUT, &mut server.procs[1]).await?;
        server.startup = started.elapsed();
        Ok(server)
    }

    /// WireMock standalone, its journal and request logging off.
    pub async fn wiremock(
        tools: &Tools,
        pin: &Pinning,
        root: &Path,
        run_dir: &Path,
        workspaces: usize,
    ) -> anyhow::Result<Self> {
        let started = std::time::Instant::now();
        std::fs::create_dir_all(run_dir)?;
        let mut proc = Proc::spawn(
            "WireMock",
            pin.server.as_deref(),
            Path::new("java"),
            &[
                "-Xmx8g".into(),
                "-jar".into(),
                tools.wiremock_jar()?.display().to_string(),
                "--port".into(),
                "0".into(),
                "--root-dir".into(),
                root.display().to_string(),
                "--no-request-journal".into(),
                "--disable-request-logging".into(),
                "--disable-banner".into(),
            ],
            run_dir.join("wiremock.log"),
        )?;
        let port: u16 = proc
            .wait_log(START_TIMEOUT, |line| {
                line.trim()
                    .strip_prefix("port:")
                    .and_then(|p| p.trim().parse().ok())
            })
            .await?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let probe = format!("/w/{}/health", slug(workspaces - 1));
        wait_http_ok(address, &probe, START_TIMEOUT, &mut proc).await?;
        Ok(Self {
            kind: Kind::WireMock,
            address,
            serving: 0,
            procs: vec![proc],
            startup: started.elapsed(),
        })
    }

    /// Mockoon CLI with one environment holding every mock.
    pub async fn mockoon(
        tools: &Tools,
        pin: &Pinning,
        work: &Path,
        run_dir: &Path,
        workspaces: usize,
    ) -> anyhow::Result<Self> {
        let started = std::time::Instant::now();
        std::fs::create_dir_all(run_dir)?;
        let port = free_port()?;
        let data = mockoon_env(work, tools, workspaces, port)?;
        let mut command = Pinning::command(pin.server.as_deref(), &tools.mockoon_cli());
        command
            .args(["start", "--data"])
            .arg(&data)
            .args(["--port", &port.to_string(), "--disable-log-to-file"])
            .env("HOME", run_dir);
        let mut proc = Proc::spawn_with("Mockoon", &mut command, run_dir.join("mockoon.log"))?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let probe = format!("/w/{}/health", slug(workspaces - 1));
        wait_http_ok(address, &probe, START_TIMEOUT, &mut proc).await?;
        Ok(Self {
            kind: Kind::Mockoon,
            address,
            serving: 0,
            procs: vec![proc],
            startup: started.elapsed(),
        })
    }

    /// nginx answering every path with a body like the mocks': the ceiling.
    pub async fn nginx(pin: &Pinning, run_dir: &Path) -> anyhow::Result<Self> {
        let started = std::time::Instant::now();
        std::fs::create_dir_all(run_dir.join("tmp"))?;
        let port = free_port()?;
        let conf = nginx_conf(run_dir, port, pin.server_cpus(), &body(TEMPLATES[4], 5000))?;
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let Some(nginx) = nginx else {
            bail!("nginx is missing (scripts/ensure-bench-deps.sh installs it)");
        };
        let mut proc = Proc::spawn(
            "nginx",
            pin.server.as_deref(),
            Path::new(nginx),
            &[
                "-c".into(),
                conf.display().to_string(),
                "-p".into(),
                run_dir.display().to_string(),
            ],
            run_dir.join("nginx.log"),
        )?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        wait_http_ok(address, "/", START_TIMEOUT, &mut proc).await?;
        Ok(Self {
            kind: Kind::Nginx,
            address,
            serving: 0,
            procs: vec![proc],
            startup: started.elapsed(),
        })
    }
}
