//! The config client: a pingora background service that keeps a stream to
//! the control plane open, applies what arrives, and answers each update
//! with an ACK or a NACK. When the stream breaks it reconnects with jittered
//! exponential backoff, saying which revision it serves so the control plane
//! can send a delta; meanwhile the node keeps serving its last table.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_trait::async_trait;
use mockplane_proto::v1::config_discovery_client::ConfigDiscoveryClient;
use mockplane_proto::{CONFIG_SCHEMA_VERSION, PROTOCOL_VERSION, v1};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use rand::Rng as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::lkg::LastKnownGood;
use crate::state::NodeState;
use crate::table::Update;
use crate::usage::{Usage, unix_now};

/// After shutdown starts, usage is reported this often while requests in
/// flight finish.
const SHUTDOWN_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// Largest config message the node accepts. The control plane cuts updates
/// into chunks of about 1 MiB, and one workspace's config is at most about
/// 16 MiB of bodies; this leaves room for both.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http://host:port` of each control-plane replica, tried in turn.
    pub control_planes: Vec<String>,
    pub labels: HashMap<String, String>,
    pub backoff: Backoff,
    /// Where the control plane reaches the ops listener.
    pub ops_url: String,
    /// How often usage is reported on the stream; `None`: never.
    pub usage_interval: Option<Duration>,
    /// Where each applied config is saved; `None`: nowhere.
    pub lkg: Option<LastKnownGood>,
    /// The node token presented on the stream.
    pub token: String,
}

/// Reconnect delays: exponential from `min` to `max`, each drawn at random
/// from the upper half of its step so that nodes restarted together do not
/// reconnect together.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            attempt: 0,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let step = self
            .min
            .saturating_mul(2u32.saturating_pow(self.attempt.min(16)))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        half + rand::rng().random_range(Duration::ZERO..=half)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

pub struct ConfigClient {
    config: ClientConfig,
    state: Arc<NodeState>,
}

impl ConfigClient {
    pub fn new(config: ClientConfig, state: Arc<NodeState>) -> Self {
        Self { config, state }
    }

    /// One stream, from connect to its end. `Ok` when the control plane
    /// ended it, or shutdown came before it opened; the caller reconnects
    /// unless shutting down. Once shutdown starts, the stream stays open
    /// (the node still answers requests in flight) and reports usage at
    /// once, then every second, until the process ends.
    async fn session(
        &self,
        url: &str,
        backoff: &mut Backoff,
        full_sync: &mut bool,
        shutdown: &mut ShutdownWatch,
    ) -> anyhow::Result<()> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .context("invalid control plane address")?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(15))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let channel = tokio::select! {
            channel = endpoint.connect() => channel.context("connecting to the control plane")?,
            _ = shutdown.changed() => return Ok(()),
        };
        let mut client =
            ConfigDiscoveryClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);

        let (applied, workspace_hashes) = if *full_sync || !self.state.is_ready() {
            (0, HashMap::new())
        } else {
            let table = self.state.table.load();
            (table.revision, table.hashes())
        };
        let (outbound, rx) = mpsc::channel(16);
        outbound
            .send(message(v1::node_message::Kind::Hello(v1::Hello {
                node_id: self.state.node_id.clone(),
                labels: self.config.labels.clone(),
                binary_version: env!("CARGO_PKG_VERSION").to_owned(),
                protocol_version: PROTOCOL_VERSION,
                applied_revision: applied,
                ops_url: self.config.ops_url.clone(),
                config_schema_version: CONFIG_SCHEMA_VERSION,
                capabilities: self.capabilities(),
                workspace_hashes,
            })))
            .await
            .context("queueing hello")?;
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.config.token)
                .parse()
                .context("the node token is not a valid header value")?,
        );
        let mut inbound = tokio::select! {
            opened = client.stream(request) => {
                opened.context("opening the config stream")?.into_inner()
            }
            _ = shutdown.changed() => return Ok(()),
        };
        self.state.set_connected(true);
        tracing::info!(control_plane = %url, applied, "config stream open");

        let usage = self.state.table.load().usage().clone();
        let mut reports = self.config.usage_interval.map(every);
        let mut stopping = false;
        let mut chunks = Chunks::default();
        loop {
            tokio::select! {
                part = inbound.message() => {
                    let Some(part) = part.context("reading the config stream")? else {
                        break;
                    };
                    self.state.metrics.config_received_bytes.inc_by(
                        u64::try_from(prost::Message::encoded_len(&part)).unwrap_or(u64::MAX),
                    );
                    let Some(update) = chunks.push(part)? else {
                        continue;
                    };
                    let started = std::time::Instant::now();
                    let (reply, changed) = self.apply(update, backoff, full_sync)?;
                    self.state
                        .metrics
                        .config_apply_seconds
                        .observe(started.elapsed().as_secs_f64());
                    // ACKed once serving; saved after, so the control
                    // plane never waits on this node's disk.
                    outbound
                        .send(message(reply))
                        .await
                        .context("the config stream closed")?;
                    if changed {
                        self.save().await;
                    }
                }
                () = tick(&mut reports) => report(&usage, &outbound)?,
                _ = shutdown.changed(), if !stopping => {
                    stopping = true;
                    if reports.is_some() {
                        report(&usage, &outbound)?;
                        reports = Some(every(SHUTDOWN_REPORT_INTERVAL));
                    }
                }
            }
        }
        Ok(())
    }

    /// What this node can do, as the hello tells the control plane.
    fn capabilities(&self) -> Vec<String> {
        let mut capabilities = vec!["empty-guard".to_owned()];
        if self.config.lkg.is_some() {
            capabilities.push("last-known-good".to_owned());
        }
        if self.config.control_planes.len() > 1 {
            capabilities.push("replica-failover".to_owned());
        }
        capabilities
    }

    /// Saves what the node serves now as its last-known-good config (off
    /// the async threads); a failure is logged, serving goes on.
    async fn save(&self) {
        let Some(lkg) = self.config.lkg.clone() else {
            return;
        };
        let table = self.state.table.load_full();
        match tokio::task::spawn_blocking(move || lkg.save(&table)).await {
            Ok(Ok(revision)) => {
                tracing::debug!(revision, "saved the last-known-good config");
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "could not save the last-known-good config");
            }
            Err(error) => {
                tracing::error!(%error, "saving the last-known-good config failed");
            }
        }
    }

    /// Applies a whole update; returns the ACK or NACK to send and whether
    /// the table changed.
    fn apply(
        &self,
        update: Update,
        backoff: &mut Backoff,
        full_sync: &mut bool,
    ) -> anyhow::Result<(v1::node_message::Kind, bool)> {
        let current = self.state.table.load_full();
        if !update.full && update.base_revision != current.revision {
            // Should not happen; a fresh full snapshot is the safe way out.
            *full_sync = true;
            bail!(
                "delta on top of revision {} but this node serves {}; resyncing",
                update.base_revision,
                current.revision
            );
        }
        if update.full
            && let Some(missing) = update
                .kept
                .iter()
                .find(|id| uuid::Uuid::try_parse(id).map_or(true, |id| !current.contains(&id)))
        {
            // It was told to keep what it does not hold (the table
            // changed since its Hello): ask again without hashes.
            *full_sync = true;
            bail!("told to keep workspace {missing}, which this node does not serve; resyncing");
        }
        if current.empties(&update) {
            tracing::error!(
                revision = update.revision,
                serving = current.len(),
                "refusing a config that would leave nothing to serve; keeping the last one"
            );
            self.state.metrics.config_refused_updates.inc();
            return Ok((
                v1::node_message::Kind::Nack(v1::Nack {
                    revision: update.revision,
                    nonce: update.nonce,
                    errors: vec![v1::WorkspaceError {
                        workspace_id: String::new(),
                        message: format!(
                            "refused: revision {} would leave nothing to serve on a node serving {} workspaces, and the control plane did not mark it intended (is it on the right database?)",
                            update.revision,
                            current.len()
                        ),
                    }],
                }),
                false,
            ));
        }
        let (table, errors) = current.apply(&update);
        let workspaces = table.len();
        self.state.publish(table);
        *full_sync = false;
        backoff.reset();
        self.state.metrics.config_applied.inc();
        let reply = if errors.is_empty() {
            tracing::info!(
                revision = update.revision,
                workspaces,
                full = update.full,
                "config applied"
            );
            v1::node_message::Kind::Ack(v1::Ack {
                revision: update.revision,
                nonce: update.nonce,
            })
        } else {
            for error in &errors {
                tracing::warn!(workspace = %error.workspace_id, error = %error.message, "workspace config rejected");
            }
            self.state
                .metrics
                .config_rejected_workspaces
                .inc_by(u64::try_from(errors.len()).unwrap_or(u64::MAX));
            v1::node_message::Kind::Nack(v1::Nack {
                revision: update.revision,
                nonce: update.nonce,
                errors: errors
                    .into_iter()
                    .map(|e| v1::WorkspaceError {
                        workspace_id: e.workspace_id,
                        message: e.message,
                    })
                    .collect(),
            })
        };
        Ok((reply, true))
    }
}

/// Shutdown started (or its sender is gone, which ends the server too).
fn shutting_down(shutdown: &ShutdownWatch) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// A report timer whose first tick is one period from now.
fn every(period: Duration) -> tokio::time::Interval {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// The next tick of `reports`; never, when reporting is off.
async fn tick(reports: &mut Option<tokio::time::Interval>) {
    match reports {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Hands what was counted since the last report to the stream; the counts
/// are cleared only once it took them. A full queue (the control plane is
/// not reading) keeps them for the next report.
fn report(usage: &Usage, outbound: &mpsc::Sender<v1::NodeMessage>) -> anyhow::Result<()> {
    let Some(mut pending) = usage.report(unix_now()) else {
        return Ok(());
    };
    let report = std::mem::take(&mut pending.report);
    match outbound.try_send(message(v1::node_message::Kind::Usage(report))) {
        Ok(()) => {
            usage.sent(pending);
            Ok(())
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            tracing::debug!("the config stream is busy; usage goes with the next report");
            Ok(())
        }
        Err(mpsc::error::TrySendError::Closed(_)) => bail!("the config stream closed"),
    }
}

fn message(kind: v1::node_message::Kind) -> v1::NodeMessage {
    v1::NodeMessage { kind: Some(kind) }
}

#[async_trait]
impl BackgroundService for ConfigClient {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut backoff = self.config.backoff;
        let mut full_sync = false;
        let mut next = 0usize;
        loop {
            if shutting_down(&shutdown) {
                return;
            }
            // Replicas in turn: after a failed or ended stream, the next.
            let Some(url) = self
                .config
                .control_planes
                .get(next % self.config.control_planes.len().max(1))
            else {
                tracing::error!("no control plane address to connect to");
                return;
            };
            next = next.wrapping_add(1);
            let outcome = self
                .session(url, &mut backoff, &mut full_sync, &mut shutdown)
                .await;
            self.state.set_connected(false);
            if shutting_down(&shutdown) {
                return;
            }
            match outcome {
                Ok(()) => tracing::info!("the control plane ended the config stream"),
                Err(error) => tracing::warn!(error = format!("{error:#}"), "config stream failed"),
            }
            let delay = backoff.next_delay();
            tracing::info!(
                delay_ms = delay.as_millis() as u64,
                "reconnecting to the control plane"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Puts the chunks of one update back together.
#[derive(Default)]
struct Chunks {
    pending: Option<(Update, u32, u32)>,
}

impl Chunks {
    /// Takes the next message; returns the update once its last chunk is in.
    /// Chunks out of order or of different updates are a protocol error.
    fn push(&mut self, part: v1::ConfigUpdate) -> anyhow::Result<Option<Update>> {
        let count = part.chunk_count.max(1);
        if part.chunk_index == 0 {
            self.pending = Some((
                Update {
                    revision: part.revision,
                    nonce: part.nonce,
                    full: part.full,
                    base_revision: part.base_revision,
                    upserts: part.upserts,
                    removed: part.removed,
                    empty_is_intended: part.empty_is_intended,
                    kept: part.kept,
                },
                1,
                count,
            ));
        } else {
            let Some((update, received, expected)) = self.pending.as_mut() else {
                bail!(
                    "config chunk {} of {} arrived without chunk 0",
                    part.chunk_index,
                    count
                );
            };
            if part.nonce != update.nonce || part.chunk_index != *received || count != *expected {
                bail!(
                    "config chunk {} of {} (nonce {}) does not continue update {} (next chunk {} of {})",
                    part.chunk_index,
                    count,
                    part.nonce,
                    update.nonce,
                    received,
                    expected
                );
            }
            update.upserts.extend(part.upserts);
            update.removed.extend(part.removed);
            *received += 1;
        }
        match &self.pending {
            Some((_, received, expected)) if received == expected => {
                Ok(self.pending.take().map(|(u, _, _)| u))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(nonce: &str, index: u32, count: u32) -> v1::ConfigUpdate {
        v1::ConfigUpdate {
            revision: 3,
            nonce: nonce.into(),
            chunk_index: index,
            chunk_count: count,
            upserts: vec![v1::WorkspaceResource::default()],
            ..Default::default()
        }
    }

    #[test]
    fn chunks_assemble_in_order() {
        let mut chunks = Chunks::default();
        assert!(chunks.push(chunk("a", 0, 3)).unwrap().is_none());
        assert!(chunks.push(chunk("a", 1, 3)).unwrap().is_none());
        let update = chunks.push(chunk("a", 2, 3)).unwrap().unwrap();
        assert_eq!(update.upserts.len(), 3);
        // A single message is a whole update.
        assert!(chunks.push(chunk("b", 0, 1)).unwrap().is_some());
    }

    #[test]
    fn chunks_out_of_order_are_refused() {
        let mut chunks = Chunks::default();
        assert!(chunks.push(chunk("a", 1, 2)).is_err());
        chunks.push(chunk("a", 0, 3)).unwrap();
        assert!(chunks.push(chunk("b", 1, 3)).is_err());
        let mut chunks = Chunks::default();
        chunks.push(chunk("a", 0, 3)).unwrap();
        assert!(chunks.push(chunk("a", 2, 3)).is_err());
    }

    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        for (attempt, delay) in delays.iter().enumerate() {
            let step = Duration::from_millis(100 * 2u64.pow(attempt as u32))
                .min(Duration::from_millis(1000));
            assert!(
                *delay >= step / 2 && *delay <= step,
                "attempt {attempt}: {delay:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
