//! Processes the benchmarks start: each in its own process group, so that
//! stopping one (or dropping its handle) takes its workers with it, with its
//! output in a log file.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// CPUs the benchmark's servers and clients are confined to, so that on a
/// small machine a server and its load generator do not fight over cores.
#[derive(Debug, Clone, Default)]
pub struct Pinning {
    /// A `taskset -c` list, e.g. "0".
    pub server: Option<String>,
    pub client: Option<String>,
}

impl Pinning {
    /// How many CPUs servers get (1 when they are pinned to one).
    pub fn server_cpus(&self) -> usize {
        match &self.server {
            Some(list) => list.split(',').count(),
            None => std::thread::available_parallelism().map_or(1, usize::from),
        }
    }

    /// `program args…`, run under `taskset` when `cpus` is set.
    pub fn command(cpus: Option<&str>, program: &Path) -> Command {
        match cpus {
            Some(cpus) => {
                let mut command = Command::new("taskset");
                command.arg("-c").arg(cpus).arg(program);
                command
            }
            None => Command::new(program),
        }
    }

    /// Waits until the server CPUs have been mostly idle for a moment: a
    /// slow server can still be working through the backlog of the run
    /// before it, which would be charged to the next server measured.
    /// Gives up after `limit` and says so.
    pub async fn wait_quiet(&self, limit: Duration) -> bool {
        let cpus: Vec<usize> = match &self.server {
            Some(list) => list
                .split(',')
                .filter_map(|c| c.trim().parse().ok())
                .collect(),
            None => Vec::new(),
        };
        let deadline = Instant::now() + limit;
        let mut before = cpu_times(&cpus);
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let after = cpu_times(&cpus);
            let (busy, total) = (
                after.0.saturating_sub(before.0),
                after.1.saturating_sub(before.1),
            );
            if total > 0 && busy * 10 <= total {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            before = after;
        }
    }

    /// Confines the calling thread to the client CPUs.
    pub fn pin_client_thread(&self) {
        let Some(list) = &self.client else { return };
        let mut set = nix::sched::CpuSet::new();
        for cpu in list
            .split(',')
            .filter_map(|c| c.trim().parse::<usize>().ok())
        {
            let _ = set.set(cpu);
        }
        let _ = nix::sched::sched_setaffinity(Pid::from_raw(0), &set);
    }
}

pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    pub events: Vec<Value>,
}

impl Proc {
    /// Starts a program with stdout and stderr going to `log`, on `cpus`.
    pub fn spawn(
        name: &str,
        cpus: Option<&str>,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        Self::spawn_with(name, Pinning::command(cpus, program).args(args), log)
    }

    pub fn spawn_with(name: &str, command: &mut Command, log: PathBuf) -> anyhow::Result<Self> {
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
            events: Vec::new(),
        })
    }

    /// Starts one of our binaries, which print JSON event lines on stdout,
    /// and waits for the event `wanted`.
    pub async fn spawn_ours(
        name: &str,
        cpus: Option<&str>,
        program: &Path,
        args: &[String],
        log: PathBuf,
        wanted: &str,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let err =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Pinning::command(cpus, program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let mut process = Self {
            name: name.to_owned(),
            child,
            log,
            events: Vec::new(),
        };
        let found = tokio::time::timeout(timeout, async {
            while let Some(line) = lines.next_line().await? {
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    let done = event["event"] == wanted;
                    process.events.push(event);
                    if done {
                        return Ok::<bool, std::io::Error>(true);
                    }
                }
            }
            Ok(false)
        })
        .await;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        match found {
            Ok(Ok(true)) => Ok(process),
            _ => bail!("{name} did not report '{wanted}':\n{}", process.log_tail()),
        }
    }

    pub fn event(&self, event: &str, field: &str) -> Option<String> {
        self.events
            .iter()
            .find(|e| e["event"] == event)
            .and_then(|e| e[field].as_str())
            .map(str::to_owned)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits until a line of the log matches `find`, and returns what it found.
    pub async fn wait_log<T>(
        &mut self,
        timeout: Duration,
        find: impl Fn(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(found) = text.lines().find_map(&find) {
                return Ok(found);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("{} exited ({status}):\n{}", self.name, self.log_tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not start within {timeout:?}:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends `signal` to the process group and waits; kills what is left.
    pub async fn stop(&mut self, signal: Signal) {
        if let Some(pid) = self.group() {
            let _ = killpg(pid, signal);
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .is_err()
        {
            self.kill_group();
        }
        self.kill_group();
        let _ = self.child.wait().await;
    }

    fn group(&self) -> Option<Pid> {
        self.child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw)
    }

    fn kill_group(&self) {
        if let Some(pid) = self.group() {
            let _ = killpg(pid, Signal::SIGKILL);
        }
    }

    /// Resident and peak resident memory of the process, in bytes.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        let pid = self
            .pid()
            .ok_or_else(|| anyhow!("{} is not running", self.name))?;
        memory_of(pid)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_group();
    }
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Memory {
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    /// Resident pages the allocator has freed lazily (MADV_FREE): counted
    /// in RSS until the kernel wants them back.
    pub lazy_free_bytes: u64,
}

impl Memory {
    /// What the process really holds: RSS without lazily freed pages.
    pub fn held_bytes(&self) -> u64 {
        self.rss_bytes.saturating_sub(self.lazy_free_bytes)
    }
}

pub fn memory_of(pid: u32) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| anyhow!("no {name} in /proc/{pid}/status"))?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow!("bad {name} line"))?
            .parse()?;
        Ok(kib * 1024)
    };
    let lazy_free_bytes = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|rollup| {
            let line = rollup.lines().find(|l| l.starts_with("LazyFree:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024);
    Ok(Memory {
        rss_bytes: field("VmRSS:")?,
        peak_rss_bytes: field("VmHWM:")?,
        lazy_free_bytes,
    })
}

/// (busy, total) jiffies of the given CPUs (all of them when empty), from
/// /proc/stat.
fn cpu_times(cpus: &[usize]) -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut busy = 0;
    let mut total = 0;
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        let Some(name) = fields.next() else { continue };
        let wanted = match name.strip_prefix("cpu") {
            Some("") => cpus.is_empty(),
            Some(index) => index.parse::<usize>().is_ok_and(|i| cpus.contains(&i)),
            None => false,
        };
        if !wanted {
            continue;
        }
        let values: Vec<u64> = fields.filter_map(|v| v.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal
        let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
        let sum: u64 = values.iter().take(8).sum();
        busy += sum.saturating_sub(idle);
        total += sum;
    }
    (busy, total)
}

/// A port nothing listens on right now, for servers that cannot bind
/// port 0 and report it (nginx, Mockoon).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The status of `GET path`, or `None` when nothing answers.
pub fn http_status(address: SocketAddr, path: &str) -> Option<u16> {
    use std::io::{Read as _, Write as _};
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 32];
    let read = stream.read(&mut head).ok()?;
    std::str::from_utf8(&head[..read])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Waits until `GET path` answers 200.
pub async fn wait_http_ok(
    address: SocketAddr,
    path: &str,
    timeout: Duration,
    process: &mut Proc,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let path = path.to_owned();
    loop {
        let probe = path.clone();
        if tokio::task::spawn_blocking(move || http_status(address, &probe)).await? == Some(200) {
            return Ok(());
        }
        if let Ok(Some(status)) = process.child.try_wait() {
            bail!(
                "{} exited ({status}):\n{}",
                process.name,
                process.log_tail()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not answer 200 on {path} within {timeout:?}:\n{}",
                process.name,
                process.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
