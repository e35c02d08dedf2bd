//! `mockplane.v1.ConfigDiscovery`: the config stream to data-plane nodes.
//!
//! One task per stream. It sends the node what it lacks, then waits for a
//! newer snapshot or a message from the node. Sending blocks only this
//! stream's own task: the snapshot cache publishes through a `watch`
//! channel, so a slow node never holds up the others, and when its task
//! comes back it sends the latest revision, skipping those in between.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use mockplane_proto::{CONFIG_SCHEMA_VERSION, PROTOCOL_VERSION, v1};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::config_stream::snapshot::ConfigCache;
use crate::fleet::nodes::{Nodes, SentUpdate};
use crate::store::Store;

/// How long a node has to say Hello after opening the stream.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest node id accepted.
const MAX_NODE_ID: usize = 128;
/// Full snapshots sent at the same time. Each one in flight holds a few
/// encoded chunks in its stream's buffers; bounding them bounds the memory
/// (and CPU) a fleet reconnecting at once can take, whatever its size.
/// Deltas are small and never wait.
pub const CONCURRENT_FULL_SYNCS: usize = 16;

/// How streams are paced: how long one lives before the node is asked to
/// reconnect (so a fleet rebalances across replicas), and how many new
/// ones are admitted per second (so a fleet reconnecting at once is let in
/// at a bounded rate; the rest retry with their jittered backoff).
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Each stream ends after this, plus up to half of it again at random.
    pub max_age: Duration,
    pub admissions_per_sec: u32,
    /// How often the node tokens of open streams are checked again: a
    /// revoked token's streams end within this long.
    pub token_recheck: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(30 * 60),
            admissions_per_sec: 200,
            token_recheck: TOKEN_CACHE_TTL,
        }
    }
}

/// The open streams by the node token they presented (its name), so that
/// revoking a token ends them, and the tokens recently found valid.
#[derive(Default)]
struct Tokens {
    /// Token name → what ends its streams.
    open: std::sync::Mutex<std::collections::HashMap<String, CancellationToken>>,
    /// Token hash → (name, when checked): trusted without asking the
    /// database again for [`TOKEN_CACHE_TTL`].
    checked: std::sync::Mutex<std::collections::HashMap<String, (String, std::time::Instant)>>,
}

impl Tokens {
    /// What ends the streams of token `name` when it is revoked.
    fn revocation(&self, name: &str) -> CancellationToken {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Ends the streams of the tokens in `revoked` and forgets that they
    /// were valid.
    fn revoke(&self, revoked: &[String]) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for name in revoked {
            if let Some(ends) = open.remove(name) {
                ends.cancel();
            }
        }
        drop(open);
        self.checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, (name, _)| !revoked.contains(name));
    }
}

/// A token bucket: `rate` admissions per second, bursts of up to `rate`.
struct Admission {
    rate: f64,
    state: std::sync::Mutex<(f64, std::time::Instant)>,
}

impl Admission {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        Self {
            rate,
            state: std::sync::Mutex::new((rate, std::time::Instant::now())),
        }
    }

    fn admit(&self) -> bool {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        let (tokens, last) = *state;
        let refilled = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate);
        if refilled >= 1.0 {
            *state = (refilled - 1.0, now);
            true
        } else {
            *state = (refilled, now);
            false
        }
    }
}

/// How long a node token found valid is trusted without asking the
/// database again: a fleet reconnecting at once costs one look-up per token
/// and period, not one write per stream. A revocation reaches new streams
/// within this long.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(30);
/// Most node tokens remembered (a fleet uses a handful).
const TOKEN_CACHE_ENTRIES: usize = 1024;

pub struct Discovery {
    /// Checks the node tokens streams present.
    store: Arc<dyn Store>,
    tokens: Arc<Tokens>,
    limits: StreamLimits,
    admission: Admission,
    cache: Arc<ConfigCache>,
    nodes: Arc<Nodes>,
    full_syncs: Arc<Semaphore>,
    shutdown: CancellationToken,
    /// Where nodes' usage reports go; `None`: they are dropped.
    usage: Option<Arc<dyn Store>>,
}

impl Discovery {
    pub fn new(
        tokens: Arc<dyn Store>,
        cache: Arc<ConfigCache>,
        nodes: Arc<Nodes>,
        shutdown: CancellationToken,
    ) -> Self {
        let limits = StreamLimits::default();
        Self {
            store: tokens,
            tokens: Arc::default(),
            limits,
            admission: Admission::new(limits.admissions_per_sec),
            cache,
            nodes,
            full_syncs: Arc::new(Semaphore::new(CONCURRENT_FULL_SYNCS)),
            shutdown,
            usage: None,
        }
    }

    /// Paces streams with `limits`.
    #[must_use]
    pub fn with_limits(mut self, limits: StreamLimits) -> Self {
        self.limits = limits;
        self.admission = Admission::new(limits.admissions_per_sec);
        self
    }

    /// Ends the open streams of node tokens revoked since (checked every
    /// [`StreamLimits::token_recheck`], one query for all streams), until
    /// `shutdown`. Revocations come from another process (the
    /// `revoke-node-token` command), so they are polled.
    pub fn revocation_watcher(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let store = self.store.clone();
        let tokens = self.tokens.clone();
        let every = self.limits.token_recheck;
        let shutdown = self.shutdown.clone();
        async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = shutdown.cancelled() => return,
                }
                let watched: Vec<String> = tokens
                    .open
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .keys()
                    .cloned()
                    .collect();
                if watched.is_empty() {
                    continue;
                }
                match store.list_node_tokens().await {
                    Ok(records) => {
                        let revoked: Vec<String> = records
                            .into_iter()
                            .filter(|r| r.revoked_at.is_some() && watched.contains(&r.name))
                            .map(|r| r.name)
                            .collect();
                        if !revoked.is_empty() {
                            tracing::info!(tokens = ?revoked, "node tokens revoked: ending their streams");
                            tokens.revoke(&revoked);
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "could not check node tokens for revocations; will retry");
                    }
                }
            }
        }
    }

    /// Stores the usage reports nodes send in `store`.
    #[must_use]
    pub fn with_usage(mut self, store: Arc<dyn Store>) -> Self {
        self.usage = Some(store);
        self
    }
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<v1::ConfigUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl v1::config_discovery_server::ConfigDiscovery for Discovery {
    type StreamStream = UpdateStream;

    async fn stream(
        &self,
        request: Request<Streaming<v1::NodeMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let refused = |reason: &str| {
            self.cache
                .metrics()
                .streams_refused
                .with_label_values(&[reason])
                .inc();
        };
        if !self.admission.admit() {
            refused("admission");
            return Err(Status::resource_exhausted(
                "too many nodes are connecting at once; retry after a (jittered) backoff",
            ));
        }
        let credential = self
            .authenticate(request.metadata())
            .await
            .inspect_err(|_| refused("credential"))?;
        let mut inbound = request.into_inner();
        let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Err(_) => {
                return Err(Status::deadline_exceeded(
                    "a node must send Hello first, within 10 s",
                ));
            }
            Ok(Err(status)) => return Err(status),
            Ok(Ok(None)) => {
                return Err(Status::cancelled("the node closed the stream before Hello"));
            }
            Ok(Ok(Some(v1::NodeMessage {
                kind: Some(v1::node_message::Kind::Hello(hello)),
            }))) => hello,
            Ok(Ok(Some(_))) => {
                return Err(Status::invalid_argument("the first message must be Hello"));
            }
        };
        check_hello(&hello).inspect_err(|_| refused("hello"))?;
        tracing::info!(
            node = %hello.node_id,
            applied = hello.applied_revision,
            version = %hello.binary_version,
            token = %credential,
            capabilities = %hello.capabilities.join(","),
            "node connected"
        );

        let (tx, rx) = mpsc::channel(4);
        let stream = self.nodes.connected(&hello, &credential);
        // Up to half as long again, at random: streams opened together do
        // not all end together.
        let max_age = self
            .limits
            .max_age
            .mul_f64(1.0 + rand::random::<f64>() * 0.5);
        let hashes = hello
            .workspace_hashes
            .iter()
            .filter_map(|(id, hash)| Some((uuid::Uuid::try_parse(id).ok()?, hash.clone())))
            .collect();
        let session = Session {
            revoked: self.tokens.revocation(&credential),
            hashes,
            max_age,
            node: hello.node_id,
            applied: hello.applied_revision,
            cache: self.cache.clone(),
            full_syncs: self.full_syncs.clone(),
            nodes: self.nodes.clone(),
            stream,
            usage: self.usage.clone(),
            sent: std::collections::VecDeque::new(),
        };
        tokio::spawn(session.run(inbound, tx, self.shutdown.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl Discovery {
    /// The name of the valid node token the stream presents
    /// (`authorization: Bearer mpn_…`); anything else is refused.
    async fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<String, Status> {
        let presented = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = presented else {
            return Err(Status::unauthenticated(
                "a node must present a node token (authorization: Bearer mpn_…): start it with --token-file or MOCKPLANE_NODE_TOKEN; `mockplane-control-plane create-node-token` makes one",
            ));
        };
        if !token.starts_with(crate::identity::token::NODE_TOKEN_PREFIX) {
            return Err(Status::unauthenticated(
                "that is not a node token (they start with mpn_); API tokens and access tokens do not open the config stream",
            ));
        }
        let hash = crate::identity::token::hash(token);
        let fresh = |(name, at): &(String, std::time::Instant)| {
            (at.elapsed() < TOKEN_CACHE_TTL).then(|| name.clone())
        };
        if let Some(name) = self
            .tokens
            .checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&hash)
            .and_then(fresh)
        {
            return Ok(name);
        }
        match self.store.use_node_token(&hash).await {
            Ok(Some(record)) => {
                let mut checked = self
                    .tokens
                    .checked
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if checked.len() >= TOKEN_CACHE_ENTRIES {
                    checked.clear();
                }
                checked.insert(hash, (record.name.clone(), std::time::Instant::now()));
                Ok(record.name)
            }
            Ok(None) => Err(Status::unauthenticated(
                "the node token is not valid: unknown or revoked",
            )),
            Err(error) => {
                tracing::warn!(%error, "could not check a node token");
                Err(Status::unavailable(
                    "the node token cannot be checked right now; retry",
                ))
            }
        }
    }
}

fn check_hello(hello: &v1::Hello) -> Result<(), Status> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(Status::failed_precondition(format!(
            "the node speaks config protocol {}, this control plane speaks {PROTOCOL_VERSION}; run matching versions",
            hello.protocol_version
        )));
    }
    if hello.config_schema_version != CONFIG_SCHEMA_VERSION {
        return Err(Status::failed_precondition(format!(
            "the node reads workspace configs of schema {}, this control plane writes schema {CONFIG_SCHEMA_VERSION}; upgrade the node (it keeps serving what it has meanwhile)",
            hello.config_schema_version
        )));
    }
    if hello.capabilities.len() > 32
        || hello
            .capabilities
            .iter()
            .any(|c| c.is_empty() || c.len() > 64 || c.chars().any(char::is_control))
    {
        return Err(Status::invalid_argument(
            "hello.capabilities: at most 32 names of 1 to 64 printable characters",
        ));
    }
    if let Some((id, hash)) = hello.workspace_hashes.iter().find(|(id, hash)| {
        uuid::Uuid::try_parse(id).is_err()
            || hash.len() != 64
            || !hash.bytes().all(|b| b.is_ascii_hexdigit())
    }) {
        return Err(Status::invalid_argument(format!(
            "hello.workspace_hashes: {id:?} → {hash:?} is not a workspace id and a SHA-256 in hex"
        )));
    }
    let printable =
        |text: &str, most: usize| text.len() <= most && !text.chars().any(char::is_control);
    if hello.labels.len() > 64
        || hello
            .labels
            .iter()
            .any(|(k, v)| k.is_empty() || !printable(k, 128) || !printable(v, 256))
    {
        return Err(Status::invalid_argument(
            "hello.labels: at most 64, keys of 1 to 128 and values of up to 256 printable characters",
        ));
    }
    if !printable(&hello.binary_version, 128) || !printable(&hello.ops_url, 512) {
        return Err(Status::invalid_argument(
            "hello.binary_version (up to 128) and hello.ops_url (up to 512) must be printable characters",
        ));
    }
    let id = hello.node_id.as_str();
    if id.is_empty() || id.len() > MAX_NODE_ID || id.chars().any(char::is_control) {
        return Err(Status::invalid_argument(format!(
            "hello.node_id must be 1 to {MAX_NODE_ID} printable characters"
        )));
    }
    Ok(())
}

struct Session {
    /// Cancelled when the stream's node token is revoked.
    revoked: CancellationToken,
    /// What the node said it serves (workspace → content hash), for its
    /// first update; emptied once used.
    hashes: std::collections::HashMap<uuid::Uuid, String>,
    /// When this stream ends so that the node reconnects (to whichever
    /// replica the balancer picks).
    max_age: Duration,
    node: String,
    /// The revision the node serves, as far as this stream knows: what it
    /// said in Hello, then what was last sent to it.
    applied: u64,
    cache: Arc<ConfigCache>,
    full_syncs: Arc<Semaphore>,
    nodes: Arc<Nodes>,
    /// This stream's number in the registry of connected nodes.
    stream: u64,
    usage: Option<Arc<dyn Store>>,
    /// The updates sent and not yet ACKed or NACKed, oldest first (a few:
    /// a node answers each before it reads the next).
    sent: std::collections::VecDeque<SentUpdate>,
}

/// Updates remembered per stream for their ACK or NACK.
const SENT_REMEMBERED: usize = 8;

impl Session {
    async fn run(
        mut self,
        mut inbound: Streaming<v1::NodeMessage>,
        tx: mpsc::Sender<Result<v1::ConfigUpdate, Status>>,
        shutdown: CancellationToken,
    ) {
        let mut snapshots = self.cache.subscribe();
        let expiry = tokio::time::sleep(self.max_age);
        tokio::pin!(expiry);
        let mut sequence: u64 = 0;
        let mut first = true;
        loop {
            let snapshot = snapshots.borrow_and_update().clone();
            if first || snapshot.revision != self.applied {
                first = false;
                sequence += 1;
                let nonce = format!("{}-{sequence}", snapshot.revision);
                let plan = snapshot
                    .plan_from(self.applied)
                    .keeping(&std::mem::take(&mut self.hashes));
                let kind = if plan.full { "full" } else { "delta" };
                if self.sent.len() == SENT_REMEMBERED {
                    self.sent.pop_front();
                }
                self.sent.push_back(SentUpdate {
                    revision: snapshot.revision,
                    nonce: nonce.clone(),
                    full: plan.full,
                    workspaces: plan
                        .upserts
                        .iter()
                        .map(|w| w.id)
                        .chain(plan.removed.iter().copied())
                        .collect(),
                    published_at: snapshot.published_at,
                });
                let _permit = if plan.full && !plan.upserts.is_empty() {
                    tokio::select! {
                        permit = self.full_syncs.clone().acquire_owned() => permit.ok(),
                        () = shutdown.cancelled() => return self.closed("shutting down"),
                    }
                } else {
                    None
                };
                let metrics = self.cache.metrics().clone();
                metrics.updates_sent.with_label_values(&[kind]).inc();
                let sent_bytes = metrics.sent_bytes.with_label_values(&[kind]);
                for message in snapshot.messages(plan, &nonce) {
                    sent_bytes.inc_by(
                        u64::try_from(prost::Message::encoded_len(&message)).unwrap_or(u64::MAX),
                    );
                    tokio::select! {
                        sent = tx.send(Ok(message)) => if sent.is_err() { return self.closed("receiver gone") },
                        () = shutdown.cancelled() => return self.closed("shutting down"),
                    }
                }
                // Sent, whether the node applies it or not: a NACKed
                // revision is not sent again; the next change is a delta on
                // top of it.
                self.applied = snapshot.revision;
            }
            tokio::select! {
                () = self.revoked.cancelled() => {
                    let _ = tx
                        .send(Err(Status::unauthenticated(
                            "the node token of this stream was revoked; give the node a valid one",
                        )))
                        .await;
                    return self.closed("its node token was revoked");
                }
                () = &mut expiry => return self.closed("the stream reached its maximum age; the node reconnects"),
                changed = snapshots.changed() => if changed.is_err() { return self.closed("cache closed") },
                message = inbound.message() => match message {
                    Ok(Some(message)) => self.on_message(message).await,
                    Ok(None) => return self.closed("node closed the stream"),
                    Err(status) => return self.closed(status.message()),
                },
                () = shutdown.cancelled() => return self.closed("shutting down"),
            }
        }
    }

    /// The update a node answers (by nonce), forgetting it and those sent
    /// before it.
    fn answered(&mut self, nonce: &str) -> Option<SentUpdate> {
        let index = self.sent.iter().position(|s| s.nonce == nonce)?;
        self.sent.drain(..=index).next_back()
    }

    async fn on_message(&mut self, message: v1::NodeMessage) {
        match message.kind {
            Some(v1::node_message::Kind::Ack(ack)) => {
                tracing::debug!(node = %self.node, revision = ack.revision, nonce = %ack.nonce, "node applied config");
                let sent = self.answered(&ack.nonce);
                self.nodes
                    .acked(&self.node, self.stream, ack.revision, sent.as_ref());
            }
            Some(v1::node_message::Kind::Nack(nack)) => {
                let sent = self.answered(&nack.nonce);
                self.nodes.nacked(
                    &self.node,
                    self.stream,
                    nack.revision,
                    &nack.errors,
                    sent.as_ref(),
                );
                for error in &nack.errors {
                    tracing::warn!(
                        node = %self.node,
                        revision = nack.revision,
                        workspace = %error.workspace_id,
                        error = %error.message,
                        "node rejected a workspace config"
                    );
                }
            }
            Some(v1::node_message::Kind::Usage(report)) => {
                // Stored before the next message is read: a slow database
                // delays this node's stream only.
                if let Some(store) = &self.usage {
                    crate::fleet::usage::record(&**store, &self.node, &report).await;
                }
            }
            Some(v1::node_message::Kind::Hello(_)) | None => {
                tracing::warn!(node = %self.node, "ignoring an unexpected message on an open stream");
            }
        }
    }

    fn closed(&self, why: &str) {
        self.nodes.disconnected(&self.node, self.stream);
        tracing::info!(node = %self.node, why, "node disconnected");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_lets_a_burst_in_then_the_rate() {
        let admission = Admission::new(5);
        let admitted = (0..20).filter(|_| admission.admit()).count();
        assert_eq!(admitted, 5, "a burst of the rate, then nothing at once");
        // A fifth of a second later, one more.
        {
            let mut state = admission.state.lock().unwrap();
            state.1 -= Duration::from_millis(200);
        }
        assert!(admission.admit());
        assert!(!admission.admit());
    }
}
