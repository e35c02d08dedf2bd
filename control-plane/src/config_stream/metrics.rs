//! Prometheus metrics of a control-plane replica: how config reaches the
//! fleet. Served at `/metrics` on `--metrics-listen`.

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Buckets for propagation latencies: 1 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub struct Metrics {
    registry: Registry,
    /// From a change's commit (its change-log row) to the snapshot that
    /// carries it being published to this replica's streams.
    pub commit_to_publish: Histogram,
    /// From a snapshot's publication to a node's ACK of it.
    pub publish_to_ack: Histogram,
    pub acks: IntCounter,
    pub nacks: IntCounter,
    /// Workspaces named in NACKs.
    pub rejected_workspaces: IntCounter,
    pub connected_nodes: IntGauge,
    /// Connected nodes that serve an older revision than the current one.
    pub lagging_nodes: IntGauge,
    /// The most revisions a connected node is behind.
    pub max_lag_revisions: IntGauge,
    pub revision: IntGauge,
    pub workspaces: IntGauge,
    /// Encoded size of the whole config: what a full snapshot sends.
    pub snapshot_bytes: IntGauge,
    /// Encoded bytes of updates sent, by kind (full, delta).
    pub sent_bytes: IntCounterVec,
    pub updates_sent: IntCounterVec,
    /// Streams refused, by reason (admission, credential, hello).
    pub streams_refused: IntCounterVec,
    /// Registry reports that could not be written (retried).
    pub registry_write_errors: IntCounter,
}

impl Metrics {
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        // Each metric is registered as it is made, so none can be left out.
        fn registered<M: prometheus::core::Collector + Clone + 'static>(
            registry: &Registry,
            metric: prometheus::Result<M>,
        ) -> prometheus::Result<M> {
            let metric = metric?;
            registry.register(Box::new(metric.clone()))?;
            Ok(metric)
        }
        let histogram = |name: &str, help: &str| {
            registered(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                ),
            )
        };
        let counter = |name: &str, help: &str| registered(&registry, IntCounter::new(name, help));
        let gauge = |name: &str, help: &str| registered(&registry, IntGauge::new(name, help));
        let counters = |name: &str, help: &str, label: &str| {
            registered(
                &registry,
                IntCounterVec::new(Opts::new(name, help), &[label]),
            )
        };
        Ok(Self {
            commit_to_publish: histogram(
                "mockplane_config_commit_to_publish_seconds",
                "From a config change's commit to its snapshot being published to streams",
            )?,
            publish_to_ack: histogram(
                "mockplane_config_publish_to_ack_seconds",
                "From a snapshot's publication to a node's ACK of it",
            )?,
            acks: counter("mockplane_config_acks_total", "Config updates nodes ACKed")?,
            nacks: counter(
                "mockplane_config_nacks_total",
                "Config updates nodes NACKed",
            )?,
            rejected_workspaces: counter(
                "mockplane_config_rejected_workspaces_total",
                "Workspace configs nodes rejected (named in NACKs)",
            )?,
            connected_nodes: gauge(
                "mockplane_config_connected_nodes",
                "Nodes streaming config from this replica",
            )?,
            lagging_nodes: gauge(
                "mockplane_config_lagging_nodes",
                "Connected nodes serving an older revision than the current one",
            )?,
            max_lag_revisions: gauge(
                "mockplane_config_max_lag_revisions",
                "The most revisions a connected node is behind",
            )?,
            revision: gauge(
                "mockplane_config_revision",
                "The config revision this replica publishes",
            )?,
            workspaces: gauge(
                "mockplane_config_workspaces",
                "Workspaces in the published config",
            )?,
            snapshot_bytes: gauge(
                "mockplane_config_snapshot_bytes",
                "Encoded size of the whole published config (a full snapshot)",
            )?,
            sent_bytes: counters(
                "mockplane_config_sent_bytes_total",
                "Encoded bytes of config updates sent to nodes",
                "kind",
            )?,
            updates_sent: counters(
                "mockplane_config_updates_sent_total",
                "Config updates sent to nodes",
                "kind",
            )?,
            streams_refused: counters(
                "mockplane_config_streams_refused_total",
                "Config streams refused before they started",
                "reason",
            )?,
            registry_write_errors: counter(
                "mockplane_node_registry_write_errors_total",
                "Node registry reports that could not be written",
            )?,
            registry,
        })
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(%error, "could not encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_renders() {
        let metrics = Metrics::new().unwrap();
        metrics.sent_bytes.with_label_values(&["full"]).inc_by(10);
        metrics
            .streams_refused
            .with_label_values(&["admission"])
            .inc();
        metrics.publish_to_ack.observe(0.01);
        let text = metrics.render();
        for name in [
            "mockplane_config_commit_to_publish_seconds",
            "mockplane_config_publish_to_ack_seconds_count 1",
            "mockplane_config_nacks_total 0",
            "mockplane_config_connected_nodes",
            "mockplane_config_max_lag_revisions",
            "mockplane_config_snapshot_bytes",
            "mockplane_config_sent_bytes_total{kind=\"full\"} 10",
            "mockplane_config_streams_refused_total{reason=\"admission\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
