//! Prometheus metrics of a node. Request counters are resolved to their
//! label values once, so counting a request is an atomic add.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// How a request ended, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Matched,
    NoWorkspace,
    UnknownWorkspace,
    /// The request named an environment the workspace does not have.
    UnknownEnvironment,
    NoRoute,
    MethodNotAllowed,
    /// A route matched and chaos answered instead (an error status or a fault).
    Chaos,
    /// The request's API key was missing (where the workspace requires
    /// one), unknown, of another environment, or expired.
    Unauthorized,
    /// The environment's rate or concurrency limit on this node refused it.
    Limited,
}

impl Outcome {
    /// The label counters and the journal use.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Matched => "matched",
            Outcome::NoWorkspace => "no_workspace",
            Outcome::UnknownWorkspace => "unknown_workspace",
            Outcome::UnknownEnvironment => "unknown_environment",
            Outcome::NoRoute => "no_route",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::Chaos => "chaos",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Limited => "limited",
        }
    }
}

pub struct Metrics {
    pub registry: Registry,
    matched: IntCounter,
    no_workspace: IntCounter,
    unknown_workspace: IntCounter,
    unknown_environment: IntCounter,
    no_route: IntCounter,
    method_not_allowed: IntCounter,
    chaos: IntCounter,
    unauthorized: IntCounter,
    limited: IntCounter,
    pub request_seconds: Histogram,
    pub config_revision: IntGauge,
    pub config_workspaces: IntGauge,
    pub config_connected: IntGauge,
    pub config_applied: IntCounter,
    pub config_rejected_workspaces: IntCounter,
    /// Whole updates refused because they would have emptied the table.
    pub config_refused_updates: IntCounter,
    /// From an update's last chunk to the table swapped (compiling it).
    pub config_apply_seconds: Histogram,
    /// Encoded bytes of config messages received.
    pub config_received_bytes: IntCounter,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some("mockplane".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Requests answered, by outcome"),
            &["outcome"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        let request_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from request to response sent",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
            ]),
        )?;
        registry.register(Box::new(request_seconds.clone()))?;
        let config_apply_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "config_apply_duration_seconds",
                "From a config update's last chunk to the new table serving",
            )
            .buckets(vec![
                0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
            ]),
        )?;
        registry.register(Box::new(config_apply_seconds.clone()))?;
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let gauge = IntGauge::new(name, help)?;
            registry.register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let counter = IntCounter::new(name, help)?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };
        Ok(Self {
            matched: requests.with_label_values(&["matched"]),
            no_workspace: requests.with_label_values(&["no_workspace"]),
            unknown_workspace: requests.with_label_values(&["unknown_workspace"]),
            unknown_environment: requests.with_label_values(&["unknown_environment"]),
            no_route: requests.with_label_values(&["no_route"]),
            method_not_allowed: requests.with_label_values(&["method_not_allowed"]),
            chaos: requests.with_label_values(&["chaos"]),
            unauthorized: requests.with_label_values(&["unauthorized"]),
            limited: requests.with_label_values(&["limited"]),
            request_seconds,
            config_revision: gauge("config_revision", "Config revision the node serves")?,
            config_workspaces: gauge("config_workspaces", "Workspaces the node serves")?,
            config_connected: gauge("config_connected", "1 while the config stream is open")?,
            config_applied: counter("config_updates_applied_total", "Config updates applied")?,
            config_rejected_workspaces: counter(
                "config_workspaces_rejected_total",
                "Workspace configs the node could not apply",
            )?,
            config_refused_updates: counter(
                "config_updates_refused_total",
                "Updates refused whole because they would have left nothing to serve",
            )?,
            config_apply_seconds,
            config_received_bytes: counter(
                "config_received_bytes_total",
                "Encoded bytes of config updates received",
            )?,
            registry,
        })
    }

    pub fn count(&self, outcome: Outcome) {
        match outcome {
            Outcome::Matched => &self.matched,
            Outcome::NoWorkspace => &self.no_workspace,
            Outcome::UnknownWorkspace => &self.unknown_workspace,
            Outcome::UnknownEnvironment => &self.unknown_environment,
            Outcome::NoRoute => &self.no_route,
            Outcome::MethodNotAllowed => &self.method_not_allowed,
            Outcome::Chaos => &self.chaos,
            Outcome::Unauthorized => &self.unauthorized,
            Outcome::Limited => &self.limited,
        }
        .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        use prometheus::Encoder as _;
        let mut buffer = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if encoder
            .encode(&self.registry.gather(), &mut buffer)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}
