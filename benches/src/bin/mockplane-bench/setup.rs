//! What a benchmark run needs on disk: the tools, the control plane's
//! database holding the generated workspaces, and the same mocks in each
//! peer's own format. Generated files are cached in the work folder.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use mockplane_benches::{Mock, mocks, route_specs, slug};
use mockplane_control_plane::identity::token;
use mockplane_control_plane::store::{self, WorkspaceRef};
use mockplane_shared::NewWorkspace;
use serde_json::json;

/// Where the binaries and peer tools are.
pub struct Tools {
    pub bin_dir: PathBuf,
    pub npm_dir: PathBuf,
    pub peers_dir: PathBuf,
}

impl Tools {
    pub fn find(bin_dir: PathBuf, npm_dir: PathBuf) -> anyhow::Result<Self> {
        for binary in ["mockplane-control-plane", "mockplane-node"] {
            let path = bin_dir.join(binary);
            if !path.exists() {
                bail!(
                    "{} is missing: `cargo build --release --bins` (make bench does)",
                    path.display()
                );
            }
        }
        let peers_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers");
        Ok(Self {
            bin_dir,
            npm_dir,
            peers_dir,
        })
    }

    pub fn binary(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    pub fn wiremock_jar(&self) -> anyhow::Result<PathBuf> {
        let dir = self.npm_dir.join("node_modules/wiremock/build");
        std::fs::read_dir(&dir)
            .with_context(|| {
                format!(
                    "reading {} (run scripts/ensure-bench-deps.sh)",
                    dir.display()
                )
            })?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("wiremock-standalone") && n.ends_with(".jar"))
            })
            .with_context(|| format!("no WireMock jar in {}", dir.display()))
    }

    pub fn mockoon_cli(&self) -> PathBuf {
        self.npm_dir.join("node_modules/.bin/mockoon-cli")
    }
}

/// A control-plane database holding `workspaces` generated workspaces, and
/// the admin token that goes with it.
pub struct ConfigDb {
    pub dir: PathBuf,
    pub token: String,
}

impl ConfigDb {
    /// A working copy of the database in `run_dir`, so runs that change it
    /// leave the cached one as generated.
    pub fn copy_to(&self, run_dir: &Path) -> anyhow::Result<()> {
        if run_dir.exists() {
            std::fs::remove_dir_all(run_dir)?;
        }
        std::fs::create_dir_all(run_dir)?;
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path.file_name().context("file name")?;
            if name.to_string_lossy().starts_with("control-plane.db") {
                std::fs::copy(&path, run_dir.join(name))?;
            }
        }
        Ok(())
    }
}

/// A new SQLite store in `dir`, bootstrapped: the store, the API token and
/// the org.
async fn fresh_store(
    dir: &Path,
) -> anyhow::Result<(std::sync::Arc<dyn store::Store>, String, uuid::Uuid)> {
    std::fs::create_dir_all(dir)?;
    let url = format!("sqlite://{}", dir.join("control-plane.db").display());
    let store = store::open(&url).await?;
    let token = token::generate();
    let org = store
        .bootstrap(
            "bench",
            &store::NewPrincipal {
                kind: store::PrincipalKind::User,
                email: Some("bench@localhost".into()),
                name: "bench".into(),
                org_role: mockplane_shared::governance::access::OrgRole::Owner,
                password_hash: None,
                must_change_password: false,
            },
            &token::hash(&token),
        )
        .await?
        .context("the new database was already bootstrapped")?
        .org_id;
    Ok((store, token, org))
}

/// Generates (once, then reuses) a database through the control plane's own
/// store, as the API would fill it.
pub async fn config_db(work: &Path, workspaces: usize) -> anyhow::Result<ConfigDb> {
    let dir = work.join(format!("config-{workspaces}x20"));
    let marker = dir.join("complete");
    if marker.exists() {
        let token = std::fs::read_to_string(dir.join("token"))?
            .trim()
            .to_owned();
        return Ok(ConfigDb { dir, token });
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    eprintln!("generating a control-plane database with {workspaces} workspaces × 20 routes…");
    let started = std::time::Instant::now();
    let (store, token, org) = fresh_store(&dir).await?;
    for index in 0..workspaces {
        let workspace = store
            .create_workspace(org, NewWorkspace::parse(&slug(index), "", "")?, None)
            .await?;
        store
            .create_routes(org, &WorkspaceRef::Id(workspace.id), route_specs(index))
            .await?;
    }
    store.close().await;
    std::fs::write(dir.join("token"), &token)?;
    std::fs::write(&marker, b"")?;
    eprintln!("  done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(ConfigDb { dir, token })
}

/// The routes of the delay and chaos runs, added to workspace 0: `/slow`
/// answers after 50 ms, `/flaky` answers 503 to 10% of requests.
pub const SLOW_PATH: &str = "/w/ws-0/slow";
pub const FLAKY_PATH: &str = "/w/ws-0/flaky";

/// A control-plane database with one workspace: the 20 generated routes
/// plus the slow and the flaky one.
pub async fn realism_db(work: &Path) -> anyhow::Result<ConfigDb> {
    let dir = work.join("config-realism");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let (store, token, org) = fresh_store(&dir).await?;
    let workspace = store
        .create_workspace(org, NewWorkspace::parse(&slug(0), "", "")?, None)
        .await?;
    let mut routes = route_specs(0);
    let realism = |json: &str| -> anyhow::Result<mockplane_shared::model::realism::Realism> {
        Ok(serde_json::from_str(json)?)
    };
    let extra = |path: &str, json: &str| -> anyhow::Result<mockplane_shared::RouteSpec> {
        Ok(mockplane_shared::RouteSpec::parse("", "GET", path, || {
            mockplane_shared::ResponseSpec::parse(
                200,
                vec![("content-type".into(), "application/json".into())],
                bytes::Bytes::from(mockplane_benches::body(path, 0)),
            )
        })?
        .with_realism(realism(json)?)?)
    };
    routes.push(extra("/slow", r#"{"latency": {"fixed": 50}}"#)?);
    routes.push(extra(
        "/flaky",
        r#"{"chaos": {"rate": 0.1, "statuses": {"503": 1}, "seed": 1}}"#,
    )?);
    store
        .create_routes(org, &WorkspaceRef::Id(workspace.id), routes)
        .await?;
    store.close().await;
    std::fs::write(dir.join("token"), &token)?;
    Ok(ConfigDb { dir, token })
}

/// WireMock's root for the delay run: workspace 0's stubs plus `/slow` with
/// a fixed 50 ms delay.
pub fn wiremock_realism_root(work: &Path) -> anyhow::Result<PathBuf> {
    let root = wiremock_root(work, 1)?;
    let realism = work.join("wiremock-realism");
    std::fs::create_dir_all(realism.join("mappings"))?;
    std::fs::create_dir_all(realism.join("__files"))?;
    std::fs::copy(
        root.join("mappings/stubs.json"),
        realism.join("mappings/stubs.json"),
    )?;
    let slow = json!({
        "request": { "method": "GET", "urlPath": SLOW_PATH },
        "response": {
            "status": 200,
            "headers": { "content-type": "application/json" },
            "body": mockplane_benches::body("/slow", 0),
            "fixedDelayMilliseconds": 50,
        },
    });
    std::fs::write(
        realism.join("mappings/slow.json"),
        serde_json::to_vec(&slow)?,
    )?;
    Ok(realism)
}

/// WireMock's root folder with one stub per mock, matched on method and
/// URL path template, with journal and logging off at start-up.
pub fn wiremock_root(work: &Path, workspaces: usize) -> anyhow::Result<PathBuf> {
    let root = work.join(format!("wiremock-{workspaces}x20"));
    let file = root.join("mappings/stubs.json");
    if file.exists() {
        return Ok(root);
    }
    std::fs::create_dir_all(root.join("mappings"))?;
    std::fs::create_dir_all(root.join("__files"))?;
    let stubs: Vec<_> = mocks(workspaces)
        .map(|Mock { full_template, body, .. }| {
            let url = if full_template.contains('{') {
                json!({ "urlPathTemplate": full_template })
            } else {
                json!({ "urlPath": full_template })
            };
            let mut request = json!({ "method": "GET" });
            if let (Some(request), Some(url)) = (request.as_object_mut(), url.as_object()) {
                request.extend(url.clone());
            }
            json!({
                "request": request,
                "response": { "status": 200, "headers": { "content-type": "application/json" }, "body": body },
            })
        })
        .collect();
    std::fs::write(&file, serde_json::to_vec(&json!({ "mappings": stubs }))?)?;
    Ok(root)
}

/// A Mockoon data file with one route per mock, on `port`.
pub fn mockoon_env(
    work: &Path,
    tools: &Tools,
    workspaces: usize,
    port: u16,
) -> anyhow::Result<PathBuf> {
    let input = work.join(format!("mockoon-{workspaces}x20-mocks.json"));
    let output = work.join(format!("mockoon-{workspaces}x20-{port}.json"));
    let mocks: Vec<_> = mocks(workspaces)
        .map(|mock| {
            // Mockoon's endpoints are Express paths without the leading slash.
            let endpoint = mock
                .full_template
                .trim_start_matches('/')
                .split('/')
                .map(
                    |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(name) => format!(":{name}"),
                        None => segment.to_owned(),
                    },
                )
                .collect::<Vec<_>>()
                .join("/");
            json!({ "endpoint": endpoint, "status": 200, "body": mock.body })
        })
        .collect();
    std::fs::write(&input, serde_json::to_vec(&mocks)?)?;
    let status = std::process::Command::new("node")
        .arg(tools.peers_dir.join("mockoon-env.js"))
        .arg(&input)
        .arg(&output)
        .arg(port.to_string())
        .env("NODE_PATH", tools.npm_dir.join("node_modules"))
        .status()
        .context("running node")?;
    if !status.success() {
        bail!("building the Mockoon data file failed ({status})");
    }
    Ok(output)
}

/// An nginx configuration answering every path with `body`: the ceiling.
pub fn nginx_conf(
    run_dir: &Path,
    port: u16,
    workers: usize,
    body: &str,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(run_dir.join("logs"))?;
    let conf = run_dir.join("nginx.conf");
    let escaped = body.replace('\\', "\\\\").replace('\'', "\\'");
    let text = format!(
        "worker_processes {workers};\n\
         daemon off;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/logs/error.log warn;\n\
         events {{ worker_connections 8192; }}\n\
         http {{\n\
         \x20 access_log off;\n\
         \x20 keepalive_requests 100000000;\n\
         \x20 keepalive_timeout 120s;\n\
         \x20 client_body_temp_path {dir}/tmp;\n\
         \x20 server {{\n\
         \x20   listen 127.0.0.1:{port};\n\
         \x20   location / {{ default_type application/json; return 200 '{escaped}'; }}\n\
         \x20 }}\n\
         }}\n",
        dir = run_dir.display()
    );
    std::fs::write(&conf, text)?;
    Ok(conf)
}
