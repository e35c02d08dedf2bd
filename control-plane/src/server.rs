//! Assembles the control plane: store, bootstrap, snapshot cache and the
//! gRPC server with health checking and reflection.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mockplane_proto::v1::api_key_service_server::ApiKeyServiceServer;
use mockplane_proto::v1::config_discovery_server::ConfigDiscoveryServer;
use mockplane_proto::v1::environment_service_server::EnvironmentServiceServer;
use mockplane_proto::v1::journal_service_server::JournalServiceServer;
use mockplane_proto::v1::node_service_server::NodeServiceServer;
use mockplane_proto::v1::notification_service_server::NotificationServiceServer;
use mockplane_proto::v1::org_service_server::OrgServiceServer;
use mockplane_proto::v1::persona_service_server::PersonaServiceServer;
use mockplane_proto::v1::promotion_service_server::PromotionServiceServer;
use mockplane_proto::v1::route_service_server::RouteServiceServer;
use mockplane_proto::v1::scenario_service_server::ScenarioServiceServer;
use mockplane_proto::v1::usage_service_server::UsageServiceServer;
use mockplane_proto::v1::workspace_service_server::WorkspaceServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::api::ApiState;
use crate::api::audit::Audit;
use crate::api::auth::AuthLayer;
use crate::api::auth::Authenticator;
use crate::api::environments::Environments;
use crate::api::identity::{Auth, Members, Roles, Users};
use crate::api::journal::Journal;
use crate::api::keys::ApiKeys;
use crate::api::notifications::Notifications;
use crate::api::orgs::Orgs;
use crate::api::personas::Personas;
use crate::api::promotions::Promotions;
use crate::api::routes::Routes;
use crate::api::scenarios::Scenarios;
use crate::api::usage::Usage;
use crate::api::workspaces::Workspaces;
use crate::config_stream::discovery::Discovery;
use crate::config_stream::snapshot::ConfigCache;
use crate::fleet::nodes::Nodes;
use crate::identity::jwt::Signer;
use crate::identity::oidc::OidcVerifier;
use crate::identity::{password, token};
use crate::store::{Bootstrapped, NewPrincipal, PrincipalKind, Store};
use mockplane_proto::v1::audit_service_server::AuditServiceServer;
use mockplane_proto::v1::auth_service_server::AuthServiceServer;
use mockplane_proto::v1::member_service_server::MemberServiceServer;
use mockplane_proto::v1::role_service_server::RoleServiceServer;
use mockplane_proto::v1::user_service_server::UserServiceServer;
use mockplane_shared::governance::access::OrgRole;

/// Largest request the route service accepts: a batch of routes may carry
/// up to a workspace's worth of bodies (16 MiB), plus headroom.
const MAX_ROUTE_REQUEST_BYTES: usize = 32 * 1024 * 1024;

/// What a first run created, to tell the person who started it.
pub struct FirstRun {
    pub org: Bootstrapped,
    /// The first owner's API token.
    pub admin_token: String,
    pub admin_email: String,
    /// The first owner's password, for `mockplane login`; shown once.
    pub admin_password: String,
}

/// On a store with no org, creates `org_name` with an admin token and
/// returns it (it is shown once). When `token_file` is given the token is
/// also written there, readable by the owner only.
pub async fn bootstrap(
    store: &dyn Store,
    org_name: &str,
    admin_email: &str,
    token_file: Option<&PathBuf>,
) -> anyhow::Result<Option<FirstRun>> {
    let admin_token = token::generate();
    let admin_password = password::generate();
    let hash = password::hash(&admin_password).map_err(|e| anyhow::anyhow!("{e}"))?;
    let admin = NewPrincipal {
        kind: PrincipalKind::User,
        email: Some(admin_email.to_lowercase()),
        name: "admin".to_owned(),
        org_role: OrgRole::Owner,
        password_hash: Some(hash),
        must_change_password: true,
    };
    let Some(org) = store
        .bootstrap(org_name, &admin, &token::hash(&admin_token))
        .await?
    else {
        return Ok(None);
    };
    if let Some(path) = token_file {
        write_secret(path, &admin_token)
            .with_context(|| format!("writing the admin token to {}", path.display()))?;
    }
    Ok(Some(FirstRun {
        org,
        admin_token,
        admin_email: admin_email.to_lowercase(),
        admin_password,
    }))
}

/// Creates a node token named `name` and returns its secret (shown once);
/// with `file`, also writes it there, readable by the owner only.
pub async fn create_node_token(
    store: &dyn Store,
    name: &str,
    file: Option<&std::path::Path>,
) -> anyhow::Result<String> {
    let secret = token::generate_with(token::NODE_TOKEN_PREFIX);
    store.create_node_token(name, &token::hash(&secret)).await?;
    if let Some(path) = file {
        write_secret(path, &secret)
            .with_context(|| format!("writing the node token to {}", path.display()))?;
    }
    Ok(secret)
}

fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;

    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// A control plane whose serving config is loaded and kept current; call
/// [`ControlPlane::serve`] to answer requests.
pub struct ControlPlane {
    store: Arc<dyn Store>,
    signer: Arc<Signer>,
    oidc: Option<Arc<OidcVerifier>>,
    audit_retention: Arc<Vec<(String, u32)>>,
    audit_prune_dry_run: bool,
    /// What the retention job prunes, and whether it only counts.
    retention: Option<(crate::retention::Policy, bool, Duration)>,
    promotion_sweep: Duration,
    notify: crate::notify::Settings,
    outbound: Arc<crate::outbound::Outbound>,
    signup: Option<Arc<crate::api::orgs::Signups>>,
    stream_limits: crate::config_stream::discovery::StreamLimits,
    cache: Arc<ConfigCache>,
    refresher: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
    /// How this replica is named in the node registry; default: host:port.
    replica_name: Option<String>,
    /// Where `/metrics` is served, if anywhere.
    metrics_listener: Option<TcpListener>,
}

impl ControlPlane {
    /// Loads the serving config and starts keeping it current (every
    /// `poll_interval`, and on every local write) until `shutdown`.
    pub async fn start(
        store: Arc<dyn Store>,
        poll_interval: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let started = std::time::Instant::now();
        let metrics =
            Arc::new(crate::config_stream::metrics::Metrics::new().context("defining metrics")?);
        let cache = ConfigCache::load(&*store, metrics)
            .await
            .context("loading the serving config")?;
        let snapshot = cache.current();
        tracing::info!(
            revision = snapshot.revision,
            workspaces = snapshot.workspace_count(),
            backend = store.backend(),
            took_ms = started.elapsed().as_millis() as u64,
            "config snapshot loaded"
        );
        let refresher = tokio::spawn(cache.clone().run(
            store.clone(),
            poll_interval,
            shutdown.clone(),
        ));
        Ok(Self {
            store,
            // Tokens from a key made now die with the process; `with_signer`
            // gives a key that outlives restarts.
            signer: Arc::new(Signer::new(&rand_key()).context("making a signing key")?),
            oidc: None,
            audit_retention: Arc::new(Vec::new()),
            audit_prune_dry_run: false,
            retention: None,
            promotion_sweep: crate::api::promotions::SWEEP_INTERVAL,
            notify: crate::notify::Settings::default(),
            outbound: Arc::default(),
            signup: None,
            stream_limits: crate::config_stream::discovery::StreamLimits::default(),
            cache,
            refresher,
            shutdown,
            replica_name: None,
            metrics_listener: None,
        })
    }

    /// Names this replica in the node registry (default: host:port).
    #[must_use]
    pub fn with_replica_name(mut self, name: String) -> Self {
        self.replica_name = Some(name);
        self
    }

    /// Serves Prometheus metrics at `/metrics` on `listener`.
    #[must_use]
    pub fn with_metrics_listener(mut self, listener: TcpListener) -> Self {
        self.metrics_listener = Some(listener);
        self
    }

    /// Signs and checks access tokens with `signer`.
    #[must_use]
    pub fn with_signer(mut self, signer: Signer) -> Self {
        self.signer = Arc::new(signer);
        self
    }

    /// Keeps audit events of each named environment this many days; a job
    /// prunes older ones every hour (or only reports them, when `dry_run`).
    /// Environments that require a reason are never pruned.
    #[must_use]
    pub fn with_audit_retention(mut self, retention: Vec<(String, u32)>, dry_run: bool) -> Self {
        self.audit_retention = Arc::new(retention);
        self.audit_prune_dry_run = dry_run;
        self
    }

    /// Prunes the tables that grow with use (change log, usage,
    /// deliveries, access log, refresh tokens) as `policy` says, `every`
    /// so long (the first run at start) on one replica; `dry_run` only logs
    /// what it would prune. Without this, nothing of them is pruned.
    #[must_use]
    pub fn with_retention(
        mut self,
        policy: crate::retention::Policy,
        dry_run: bool,
        every: Duration,
    ) -> Self {
        self.retention = Some((policy, dry_run, every));
        self
    }

    /// Looks for expired promotions (and ones to remind of) this often.
    #[must_use]
    pub fn with_promotion_sweep(mut self, every: Duration) -> Self {
        self.promotion_sweep = every;
        self
    }

    /// How config streams are paced (maximum age, admissions per second).
    #[must_use]
    pub fn with_stream_limits(
        mut self,
        limits: crate::config_stream::discovery::StreamLimits,
    ) -> Self {
        self.stream_limits = limits;
        self
    }

    /// How notifications are delivered (SMTP relay, retries, polling).
    #[must_use]
    pub fn with_notifications(mut self, settings: crate::notify::Settings) -> Self {
        self.notify = settings;
        self
    }

    /// Where notification channels may point (checked when one is made).
    #[must_use]
    pub fn with_outbound(mut self, outbound: Arc<crate::outbound::Outbound>) -> Self {
        self.outbound = outbound;
        self
    }

    /// Lets anyone create an org of their own (`OrgService.SignUp`), at
    /// most `per_minute` on this replica.
    #[must_use]
    pub fn with_signup(mut self, per_minute: std::num::NonZeroU32) -> Self {
        self.signup = Some(Arc::new(crate::api::orgs::Signups::per_minute(per_minute)));
        self
    }

    /// Accepts JWTs from these identity providers.
    #[must_use]
    pub fn with_oidc(mut self, oidc: OidcVerifier) -> Self {
        self.oidc = Some(Arc::new(oidc));
        self
    }

    /// Serves the API on `listener` until shutdown. Config streams end on
    /// shutdown, so nodes reconnect to another replica (or to this one when
    /// it comes back).
    pub async fn serve(self, listener: TcpListener) -> anyhow::Result<()> {
        let Self {
            store,
            signer,
            oidc,
            audit_retention,
            audit_prune_dry_run,
            retention,
            promotion_sweep,
            notify,
            outbound,
            signup,
            stream_limits,
            cache,
            refresher,
            shutdown,
            replica_name,
            metrics_listener,
        } = self;
        let replica_name = match replica_name {
            Some(name) => name,
            None => format!("{}:{}", host_name(), listener.local_addr()?.port()),
        };
        let nodes = Arc::new(Nodes::new(
            &replica_name,
            store.clone(),
            cache.metrics().clone(),
        ));
        let registry = tokio::spawn(nodes.clone().run(shutdown.clone()));
        let metrics_server = metrics_listener.map(|listener| {
            tokio::spawn(serve_metrics(
                listener,
                cache.clone(),
                nodes.clone(),
                shutdown.clone(),
            ))
        });
        let state = ApiState::new(
            store.clone(),
            cache.clone(),
            nodes.clone(),
            signer.clone(),
            audit_retention.clone(),
        )
        .with_outbound(outbound)
        .with_signup(signup);
        let key_sweeper = tokio::spawn(crate::keys::sweep_expired(store.clone(), shutdown.clone()));
        let pruner = tokio::spawn(prune_audit_periodically(
            store.clone(),
            audit_retention,
            audit_prune_dry_run,
            shutdown.clone(),
        ));
        let retention = retention.map(|(policy, dry_run, every)| {
            tokio::spawn(crate::retention::run_periodically(
                store.clone(),
                policy,
                dry_run,
                every,
                shutdown.clone(),
            ))
        });
        let promotion_sweeper = tokio::spawn(crate::api::promotions::sweep(
            store.clone(),
            promotion_sweep,
            shutdown.clone(),
        ));
        let notifier = tokio::spawn(crate::notify::run(store.clone(), notify, shutdown.clone()));
        let authenticator = Arc::new(Authenticator {
            store: store.clone(),
            signer,
            oidc,
        });
        let mut services = Services::default();
        services
            .add(WorkspaceServiceServer::new(Workspaces(state.clone())))
            .add(EnvironmentServiceServer::new(Environments(state.clone())))
            .add(
                ScenarioServiceServer::new(Scenarios(state.clone()))
                    .max_decoding_message_size(MAX_ROUTE_REQUEST_BYTES),
            )
            .add(PersonaServiceServer::new(Personas(state.clone())))
            .add(
                RouteServiceServer::new(Routes(state.clone()))
                    .max_decoding_message_size(MAX_ROUTE_REQUEST_BYTES),
            )
            .add(AuthServiceServer::new(Auth(state.clone())))
            .add(AuditServiceServer::new(Audit(state.clone())))
            .add(UserServiceServer::new(Users(state.clone())))
            .add(RoleServiceServer::new(Roles(state.clone())))
            .add(MemberServiceServer::new(Members(state.clone())))
            .add(ApiKeyServiceServer::new(ApiKeys(state.clone())))
            .add(UsageServiceServer::new(Usage(state.clone())))
            .add(OrgServiceServer::new(Orgs(state.clone())))
            .add(PromotionServiceServer::new(Promotions(state.clone())))
            .add(NotificationServiceServer::new(Notifications(state.clone())))
            .add(NodeServiceServer::new(crate::api::nodes::Nodes(
                state.clone(),
            )))
            .add(JournalServiceServer::new(Journal(state)));
        let discovery = Discovery::new(store.clone(), cache, nodes, shutdown.clone())
            .with_limits(stream_limits)
            .with_usage(store.clone());
        let revocations = tokio::spawn(discovery.revocation_watcher());
        services.add(ConfigDiscoveryServer::new(discovery));
        // Every service added above reports SERVING; nothing else does.
        let (health, health_service) = tonic_health::server::health_reporter();
        for name in &services.names {
            health
                .set_service_status(*name, tonic_health::ServingStatus::Serving)
                .await;
        }
        // Both reflection protocols: grpcurl and most clients speak v1,
        // Python's grpcio-reflection still only v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(mockplane_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        services
            .routes
            .add_service(health_service)
            .add_service(
                reflection()
                    .build_v1()
                    .context("building the reflection service")?,
            )
            .add_service(
                reflection()
                    .build_v1alpha()
                    .context("building the v1alpha reflection service")?,
            );

        let result = tonic::transport::Server::builder()
            .layer(AuthLayer::new(authenticator))
            .add_routes(services.routes.routes())
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                shutdown.clone().cancelled_owned(),
            )
            .await
            .context("serving gRPC");
        shutdown.cancel();
        let _ = refresher.await;
        let _ = pruner.await;
        if let Some(retention) = retention {
            let _ = retention.await;
        }
        let _ = key_sweeper.await;
        let _ = promotion_sweeper.await;
        let _ = notifier.await;
        let _ = revocations.await;
        // The registry's last write marks this replica's streams ended.
        let _ = registry.await;
        if let Some(server) = metrics_server {
            let _ = server.await;
        }
        store.close().await;
        result
    }
}

/// The API's services, and the names health checking reports them by.
#[derive(Default)]
struct Services {
    routes: tonic::service::RoutesBuilder,
    names: Vec<&'static str>,
}

impl Services {
    fn add<S>(&mut self, service: S) -> &mut Self
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes.add_service(service);
        self
    }
}

/// This machine's name, for naming the replica.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Serves `/metrics` (Prometheus text) until shutdown.
async fn serve_metrics(
    listener: TcpListener,
    cache: Arc<ConfigCache>,
    nodes: Arc<Nodes>,
    shutdown: CancellationToken,
) {
    let render = move || {
        let cache = cache.clone();
        let nodes = nodes.clone();
        async move {
            nodes.observe_lag(cache.current().revision);
            (
                [(
                    http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                cache.metrics().render(),
            )
        }
    };
    let app = axum::Router::new().route("/metrics", axum::routing::get(render));
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(%error, "the metrics listener failed");
    }
}

fn rand_key() -> [u8; 64] {
    use rand::RngCore as _;
    let mut key = [0u8; 64];
    rand::rng().fill_bytes(&mut key);
    key
}

/// Every hour, prunes each org's audit events past their environment's
/// retention (or, dry, logs what it would prune). Protected environments
/// (those requiring a reason) are never pruned.
async fn prune_audit_periodically(
    store: Arc<dyn Store>,
    retention: Arc<Vec<(String, u32)>>,
    dry_run: bool,
    shutdown: CancellationToken,
) {
    if retention.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(_lock) = crate::jobs::lead(&*store, "audit.prune").await else {
            continue;
        };
        let orgs = match store.org_ids().await {
            Ok(orgs) => orgs,
            Err(error) => {
                tracing::warn!(%error, "audit retention: could not list orgs");
                continue;
            }
        };
        for org in orgs {
            let protected = match crate::api::audit::protected_environments(&*store, org).await {
                Ok(protected) => protected,
                Err(error) => {
                    tracing::warn!(%error, %org, "audit retention: could not read environments");
                    continue;
                }
            };
            // A real prune is itself on the record; look first, so an hour
            // with nothing to prune leaves no event.
            let due = match store.prune_audit(org, &retention, &protected, true).await {
                Ok(outcome) => outcome.by_environment.iter().any(|(_, n)| *n > 0),
                Err(error) => {
                    tracing::warn!(%error, %org, "audit retention failed");
                    continue;
                }
            };
            if !due {
                continue;
            }
            match store
                .prune_audit(org, &retention, &protected, dry_run)
                .await
            {
                Ok(outcome) => {
                    for (environment, events) in
                        outcome.by_environment.iter().filter(|(_, n)| *n > 0)
                    {
                        tracing::info!(%org, %environment, events, dry_run, "audit retention pruned events");
                    }
                }
                Err(error) => tracing::warn!(%error, %org, "audit retention failed"),
            }
        }
    }
}
