//! Collects what the benchmarks measure and renders it: Markdown tables for
//! docs/benchmarks.md, and everything as JSON next to them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::procs::Memory;
use crate::propagation::PropagationResult;
use crate::rate::RateSample;
use crate::servers::Kind;
use crate::units::{mib, micros};
use crate::wrk::Sample;

#[derive(Serialize, Default)]
struct ServerRun {
    startup_seconds: Option<f64>,
    memory_at_start: Option<Memory>,
    memory_after_load: Option<Memory>,
    failure: Option<String>,
    samples: Vec<Sample>,
    half_load: Vec<RateSample>,
}

#[derive(Serialize)]
pub struct Report {
    date: String,
    machine: String,
    /// (workspaces, server) → what was measured.
    load: BTreeMap<usize, BTreeMap<String, ServerRun>>,
    #[serde(skip)]
    kinds: BTreeMap<String, Kind>,
    propagation: Vec<PropagationResult>,
    realism: Vec<RealismRun>,
    hostile: Vec<crate::hostile::HostileResult>,
    pinning: Option<String>,
}

/// One server under the delay or the chaos run.
#[derive(Serialize)]
pub struct RealismRun {
    pub scenario: &'static str,
    pub server: &'static str,
    pub connections: usize,
    pub sample: Sample,
}

impl Report {
    pub fn new() -> Self {
        Self {
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            machine: machine(),
            load: BTreeMap::new(),
            kinds: BTreeMap::new(),
            propagation: Vec::new(),
            realism: Vec::new(),
            hostile: Vec::new(),
            pinning: None,
        }
    }

    pub fn pinning(&mut self, pin: &crate::procs::Pinning) {
        self.pinning = match (&pin.server, &pin.client) {
            (Some(server), Some(client)) => Some(format!(
                "servers pinned to CPU {server}, load generators to CPU {client}"
            )),
            _ => Some("servers and load generators share every CPU".into()),
        };
    }

    fn run(&mut self, kind: Kind, workspaces: usize) -> &mut ServerRun {
        let name = kind.name().to_owned();
        self.kinds.insert(name.clone(), kind);
        self.load
            .entry(workspaces)
            .or_default()
            .entry(name)
            .or_default()
    }

    pub fn startup(
        &mut self,
        kind: Kind,
        workspaces: usize,
        took: Duration,
        memory: Option<Memory>,
    ) {
        let run = self.run(kind, workspaces);
        run.startup_seconds = Some(took.as_secs_f64());
        run.memory_at_start = memory;
    }

    pub fn failed(&mut self, kind: Kind, workspaces: usize, why: &str) {
        self.run(kind, workspaces).failure = Some(why.lines().next().unwrap_or(why).to_owned());
    }

    pub fn throughput(&mut self, kind: Kind, workspaces: usize, sample: Sample) {
        self.run(kind, workspaces).samples.push(sample);
    }

    pub fn half_load(&mut self, kind: Kind, workspaces: usize, sample: RateSample) {
        self.run(kind, workspaces).half_load.push(sample);
    }

    pub fn memory_after_load(&mut self, kind: Kind, workspaces: usize, memory: Option<Memory>) {
        self.run(kind, workspaces).memory_after_load = memory;
    }

    pub fn median_rps(&self, kind: Kind, workspaces: usize) -> Option<f64> {
        let run = self.load.get(&workspaces)?.get(kind.name())?;
        median(run.samples.iter().map(Sample::rps).collect())
    }

    /// Where the propagation runs put what they measure.
    pub fn propagation_results(&mut self) -> &mut Vec<PropagationResult> {
        &mut self.propagation
    }

    pub fn hostile(&mut self, result: crate::hostile::HostileResult) {
        self.hostile.push(result);
    }

    pub fn realism(&mut self, run: RealismRun) {
        self.realism.push(run);
    }

    pub fn save(&self, work: &Path) -> anyhow::Result<PathBuf> {
        let dir = work.join("results");
        std::fs::create_dir_all(&dir)?;
        let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
        let json = dir.join(format!("{stamp}.json"));
        std::fs::write(&json, serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join(format!("{stamp}.md")), self.markdown())?;
        Ok(json)
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Measured {} on {}.", self.date, self.machine);
        if let Some(pinning) = &self.pinning {
            let _ = writeln!(out, "In the load runs, {pinning}.");
        }
        out.push('\n');
        if !self.realism.is_empty() {
            let _ = writeln!(out, "### Delays and chaos\n");
            let _ = writeln!(
                out,
                "wrk, closed loop, one path. `delay`: a route answering after 50 ms; `chaos`: a route answering 503 to 10% of requests.\n"
            );
            let _ = writeln!(
                out,
                "| Run | Server | connections | req/s | p50 | p99 | p99.9 | non-2xx share | socket errors |"
            );
            let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
            for run in &self.realism {
                let s = &run.sample;
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.0} | {} | {} | {} | {:.1}% | {} |",
                    run.scenario,
                    run.server,
                    run.connections,
                    s.rps(),
                    micros(Some(s.p50_us as f64)),
                    micros(Some(s.p99_us as f64)),
                    micros(Some(s.p999_us as f64)),
                    100.0 * s.non_2xx as f64 / s.requests.max(1) as f64,
                    s.connect_errors + s.read_errors + s.write_errors + s.timeouts,
                );
            }
            out.push('\n');
        }
        for (workspaces, runs) in &self.load {
            self.load_tables(&mut out, *workspaces, runs);
        }
        if let (Some(one), Some(many)) = (
            self.median_rps(Kind::Mockplane, 1),
            self.load
                .keys()
                .max()
                .and_then(|w| self.median_rps(Kind::Mockplane, *w)),
        ) {
            let most = self.load.keys().max().copied().unwrap_or(1);
            let _ = writeln!(
                out,
                "Mockplane at {most} workspaces serves {:.1}% of its throughput at 1 workspace.\n",
                many / one * 100.0
            );
        }
        if !self.propagation.is_empty() {
            crate::propagation::markdown(&mut out, &self.propagation);
        }
        if !self.hostile.is_empty() {
            crate::hostile::markdown(&mut out, &self.hostile);
        }
        out
    }

    fn load_tables(&self, out: &mut String, workspaces: usize, runs: &BTreeMap<String, ServerRun>) {
        let mockplane = median(
            runs.get(Kind::Mockplane.name())
                .map(|r| r.samples.iter().map(Sample::rps).collect())
                .unwrap_or_default(),
        );
        let rounds = runs.values().map(|r| r.samples.len()).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "### Peak throughput, {workspaces} workspace(s) × 20 routes\n\n\
             wrk, closed loop, median of {rounds} interleaved rounds.\n\n\
             | Server | req/s | p50 | p99 | p99.9 | errors | Mockplane ÷ server |\n\
             |---|---:|---:|---:|---:|---:|---:|"
        );
        for (name, run) in runs {
            if let Some(failure) = &run.failure {
                let _ = writeln!(out, "| {name} | did not run: {failure} | | | | | |");
                continue;
            }
            let rps = median(run.samples.iter().map(Sample::rps).collect());
            let pick =
                |f: fn(&Sample) -> u64| median(run.samples.iter().map(|s| f(s) as f64).collect());
            let errors: u64 = run.samples.iter().map(Sample::errors).sum();
            let ratio = match (mockplane, rps) {
                (Some(m), Some(r)) if r > 0.0 => format!("{:.2}×", m / r),
                _ => "–".into(),
            };
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {} | {errors} | {ratio} |",
                rps.map_or("–".into(), |r| format!("{r:.0}")),
                micros(pick(|s| s.p50_us)),
                micros(pick(|s| s.p99_us)),
                micros(pick(|s| s.p999_us)),
            );
        }
        let half: Vec<_> = runs
            .iter()
            .filter(|(_, r)| !r.half_load.is_empty())
            .collect();
        if !half.is_empty() {
            let _ = writeln!(
                out,
                "\nLatency at half of the peak just measured, in each round (open loop, latency counted \
                 from when each request was due), median of the rounds:\n\n\
                 | Server | rate req/s | p50 | p99 | p99.9 | max | errors |\n\
                 |---|---:|---:|---:|---:|---:|---:|"
            );
            for (name, run) in half {
                let samples = &run.half_load;
                let pick = |f: fn(&RateSample) -> f64| median(samples.iter().map(f).collect());
                let errors: u64 = samples.iter().map(|s| s.errors).sum();
                let _ = writeln!(
                    out,
                    "| {name} | {} | {} | {} | {} | {} | {errors} |",
                    pick(|s| s.target_rps).map_or("–".into(), |r| format!("{r:.0}")),
                    micros(pick(|s| s.p50_us as f64)),
                    micros(pick(|s| s.p99_us as f64)),
                    micros(pick(|s| s.p999_us as f64)),
                    micros(pick(|s| s.max_us as f64)),
                );
            }
        }
        let _ = writeln!(
            out,
            "\n| Server | ready after | memory at start | memory after load (peak) |\n|---|---:|---:|---:|"
        );
        for (name, run) in runs {
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} |",
                run.startup_seconds
                    .map_or("–".into(), |s| format!("{s:.1} s")),
                run.memory_at_start
                    .map_or("–".into(), |m| mib(m.held_bytes())),
                run.memory_after_load.map_or("–".into(), |m| format!(
                    "{} ({})",
                    mib(m.rss_bytes),
                    mib(m.peak_rss_bytes)
                )),
            );
        }
        out.push('\n');
    }
}

pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse::<u64>().ok())
        })
        .map_or_else(String::new, |kib| {
            format!(", {:.0} GiB", kib as f64 / 1024.0 / 1024.0)
        });
    format!("{cores} × {cpu}{memory}")
}
