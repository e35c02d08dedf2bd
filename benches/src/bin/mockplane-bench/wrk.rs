//! Peak throughput with wrk (closed loop: each connection sends its next
//! request as soon as the last one is answered).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Sample {
    pub requests: u64,
    pub duration_us: u64,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    pub non_2xx: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl Sample {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / (self.duration_us.max(1) as f64 / 1e6)
    }

    pub fn errors(&self) -> u64 {
        self.connect_errors + self.read_errors + self.write_errors + self.timeouts + self.non_2xx
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub threads: usize,
    pub connections: usize,
    pub duration: Duration,
}

/// One wrk run against `address`, cycling through the paths in `paths`,
/// on `cpus` when given.
pub fn run(
    address: SocketAddr,
    script: &Path,
    paths: &Path,
    load: &Load,
    cpus: Option<&str>,
) -> anyhow::Result<Sample> {
    let mut command = match cpus {
        Some(cpus) => {
            let mut command = std::process::Command::new("taskset");
            command.args(["-c", cpus, "wrk"]);
            command
        }
        None => std::process::Command::new("wrk"),
    };
    let output = command
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.duration.as_secs().max(1)))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(script)
        .arg(format!("http://{address}"))
        .arg("--")
        .arg(paths)
        .output()
        .context("running wrk (scripts/ensure-bench-deps.sh installs it)")?;
    if !output.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("wrk printed no result:\n{stdout}"))?;
    Ok(serde_json::from_str(line)?)
}
