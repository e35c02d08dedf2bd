//! Data-plane API keys and usage end to end, through the real binaries: a
//! workspace that requires keys, keys that open one environment only,
//! expired and revoked keys, the rules of test keys, and test-key traffic
//! kept out of usage and flagged in the journal.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mockplane_control_plane::store::{self, NewApiKey, Store, WorkspaceRef};
use mockplane_e2e::fixtures::{new_workspace, route, set_reality};
use mockplane_e2e::{Api, ControlPlane, Node, Reply, eventually};
use mockplane_proto::v1;
use mockplane_proto::v1::api_key_service_client::ApiKeyServiceClient;
use mockplane_proto::v1::usage_service_client::UsageServiceClient;
use mockplane_shared::Slug;
use tonic::Code;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const KEY: &str = "x-mockplane-key";
const ENV: &str = "x-mockplane-env";

/// A bearer token, and a reason when the caller states one.
#[derive(Clone)]
struct Credentials(AsciiMetadataValue, Option<AsciiMetadataValue>);

impl Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        if let Some(reason) = &self.1 {
            request
                .metadata_mut()
                .insert("x-mockplane-reason", reason.clone());
        }
        Ok(request)
    }
}

type Keys = ApiKeyServiceClient<InterceptedService<Channel, Credentials>>;
type Usage = UsageServiceClient<InterceptedService<Channel, Credentials>>;

async fn clients(plane: &ControlPlane, token: &str, reason: Option<&str>) -> (Keys, Usage) {
    let channel = plane.channel().await;
    let credentials = Credentials(
        format!("Bearer {token}").parse().unwrap(),
        reason.map(|r| r.parse().unwrap()),
    );
    (
        ApiKeyServiceClient::with_interceptor(channel.clone(), credentials.clone()),
        UsageServiceClient::with_interceptor(channel, credentials),
    )
}

/// An environment token of `api`'s caller for `environment` of `shop`.
async fn env_token(api: &mut Api, environment: &str) -> String {
    api.auth
        .issue_environment_token(v1::IssueEnvironmentTokenRequest {
            workspace: "shop".into(),
            environment: environment.into(),
            reason: format!("managing keys in {environment}"),
            ttl_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .token
}

fn new_key(environment: &str, name: &str) -> v1::CreateApiKeyRequest {
    v1::CreateApiKeyRequest {
        workspace: "shop".into(),
        environment: environment.into(),
        name: name.into(),
        ..Default::default()
    }
}

fn new_test_key(environment: &str, ttl_seconds: u32, reason: &str) -> v1::CreateApiKeyRequest {
    v1::CreateApiKeyRequest {
        ttl_seconds,
        test: true,
        reason: reason.into(),
        ..new_key(environment, "trying prod")
    }
}

/// `shop` with GET /orders in dev (the working copy) and deployed to prod.
async fn shop(plane: &ControlPlane) -> Api {
    let token = plane.token.clone().unwrap();
    let mut admin = plane.api(&token).await;
    admin
        .workspaces
        .create_workspace(new_workspace("shop"))
        .await
        .unwrap();
    admin
        .routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: "shop".into(),
            routes: vec![route("GET", "/orders", 200, "[]")],
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .scenarios
        .create_version(v1::CreateVersionRequest {
            workspace: "shop".into(),
            scenario: "default".into(),
            note: "first".into(),
        })
        .await
        .unwrap();
    let prod = env_token(&mut admin, "prod").await;
    let mut in_prod = plane.api_with(&prod, None).await;
    in_prod
        .scenarios
        .admin_deploy_version(v1::AdminDeployVersionRequest {
            workspace: "shop".into(),
            scenario: "default".into(),
            version: 0,
            environment: "prod".into(),
        })
        .await
        .unwrap();
    // Prod's default reality (4) injects errors into 2% of requests; these
    // tests count requests and expect each to be answered.
    in_prod
        .environments
        .update_environment(set_reality("shop", "prod", 1))
        .await
        .unwrap();
    admin
}

async fn open_store(dir: &Path) -> Arc<dyn Store> {
    store::open(&mockplane_e2e::database_url(dir).await)
        .await
        .unwrap()
}

async fn get(node: &Node, headers: &[(&str, &str)]) -> Reply {
    node.send_with("GET", "/w/shop/orders", headers, "")
        .await
        .unwrap()
}

/// Waits until `headers` get `status` (configs reach the node
/// asynchronously); returns that reply.
async fn until(node: &Node, headers: &[(&str, &str)], status: u16) -> Reply {
    eventually(
        &format!("GET /w/shop/orders {headers:?} → {status}"),
        || async {
            let reply = get(node, headers).await;
            (reply.status == status).then_some(reply)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_open_their_environment_only_and_stop_when_expired_or_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let token = plane.token.clone().unwrap();
    let mut admin = shop(&plane).await;
    let node = Node::start(dir.path(), &plane.url()).await.unwrap();
    // Keys are optional until the workspace requires them.
    until(&node, &[], 200).await;

    let (mut keys, _) = clients(&plane, &token, Some("adding keys")).await;
    let dev = keys
        .create_api_key(new_key("dev", "checkout-service"))
        .await
        .unwrap()
        .into_inner();
    let dev_secret = dev.secret.clone();
    let dev_key = dev.key.unwrap();
    assert!(dev_secret.starts_with("mpk_"), "{dev_secret}");
    assert!(dev_secret.starts_with(&dev_key.hint));
    assert_eq!((dev_key.environment.as_str(), dev_key.test), ("dev", false));
    assert!(dev_key.expire_time.is_none(), "no ttl: no expiry");

    // A prod key needs a prod environment token, a stated reason is not
    // enough.
    let refused = keys
        .create_api_key(new_key("prod", "prod-ci"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert!(
        refused.message().contains("environment token"),
        "{}",
        refused.message()
    );
    let prod_token = env_token(&mut admin, "prod").await;
    let (mut prod_keys, _) = clients(&plane, &prod_token, None).await;
    let prod_secret = prod_keys
        .create_api_key(new_key("prod", "prod-ci"))
        .await
        .unwrap()
        .into_inner()
        .secret;
    // That token acts in prod only.
    let elsewhere = prod_keys
        .create_api_key(new_key("dev", "nope"))
        .await
        .unwrap_err();
    assert_eq!(elsewhere.code(), Code::PermissionDenied);

    // Even where keys are optional, a key that is not valid is refused.
    let bad = get(&node, &[(KEY, "mpk_not-a-key")]).await;
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (401, "api_key_invalid")
    );

    // Require keys: a request without one is refused.
    let updated = admin
        .workspaces
        .update_workspace(v1::UpdateWorkspaceRequest {
            workspace: "shop".into(),
            patch: Some(v1::Workspace {
                require_api_keys: true,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["require_api_keys".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(updated.require_api_keys);
    let missing = until(&node, &[], 401).await;
    assert_eq!(missing.error_code(), "api_key_required");
    assert!(missing.headers.contains_key("www-authenticate"));
    let missing_prod = get(&node, &[(ENV, "prod")]).await;
    assert_eq!(missing_prod.error_code(), "api_key_required");

    // The dev key opens dev, and never prod.
    let opened = until(&node, &[(KEY, dev_secret.as_str())], 200).await;
    assert_eq!(opened.body, "[]");
    let to_prod = get(&node, &[(KEY, dev_secret.as_str()), (ENV, "prod")]).await;
    assert_eq!(
        (to_prod.status, to_prod.error_code().as_str()),
        (401, "api_key_invalid")
    );
    let message = to_prod.json()["error"]["message"].to_string();
    assert!(
        message.contains("no key of environment 'prod'"),
        "{message}"
    );
    let prod_opened = until(&node, &[(KEY, prod_secret.as_str()), (ENV, "prod")], 200).await;
    assert_eq!(prod_opened.body, "[]");
    assert_eq!(
        get(&node, &[(KEY, prod_secret.as_str())]).await.status,
        401,
        "prod key in dev"
    );

    // An expired key (made through the store: the API makes none) is
    // refused as expired.
    let me = admin
        .auth
        .who_am_i(v1::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    let store = open_store(dir.path()).await;
    let old_secret = "mpk_expired-for-the-test";
    store
        .create_api_key(
            me.org_id.parse().unwrap(),
            &WorkspaceRef::Slug(Slug::parse("shop").unwrap()),
            NewApiKey {
                environment: "dev".into(),
                name: "old".into(),
                key_hash: mockplane_shared::model::keys::hash_hex(old_secret),
                hint: "mpk_expire".into(),
                expires_at: Some((SystemTime::now() - Duration::from_secs(120)).into()),
                created_by: None,
                test: None,
            },
        )
        .await
        .unwrap();
    let expired = eventually("the expired key to reach the node", || async {
        let reply = get(&node, &[(KEY, old_secret)]).await;
        (reply.error_code() == "api_key_expired").then_some(reply)
    })
    .await;
    assert!(
        expired.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{}",
        expired.body
    );
    let listed = keys
        .list_api_keys(v1::ListApiKeysRequest {
            workspace: "shop".into(),
            environment: "dev".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|k| k.name == "old" && k.expired));

    // Revoked: refused at once (as soon as the config reaches the node).
    keys.revoke_api_key(v1::RevokeApiKeyRequest {
        workspace: "shop".into(),
        id: dev_key.id.clone(),
    })
    .await
    .unwrap();
    let revoked = until(&node, &[(KEY, dev_secret.as_str())], 401).await;
    assert_eq!(revoked.error_code(), "api_key_invalid");
    let again = keys
        .revoke_api_key(v1::RevokeApiKeyRequest {
            workspace: "shop".into(),
            id: dev_key.id,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_keys_have_rules_and_their_traffic_is_not_usage() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let token = plane.token.clone().unwrap();
    let mut admin = shop(&plane).await;
    let node = Node::start_with(dir.path(), &plane.url(), &["--usage-interval-secs", "1"])
        .await
        .unwrap();
    let prod_token = env_token(&mut admin, "prod").await;
    let (mut prod_keys, _) = clients(&plane, &prod_token, None).await;
    let (mut keys, mut usage) = clients(&plane, &token, Some("adding keys")).await;
    let reason = "load test for INC-42, ada";

    // The rules, each refused with what is wrong.
    let cases = [
        (
            new_test_key("prod", 3600, ""),
            Code::InvalidArgument,
            "reason",
        ),
        (
            new_test_key("prod", 3600, "short"),
            Code::InvalidArgument,
            "8 to 500 characters",
        ),
        (
            new_test_key("prod", 0, reason),
            Code::InvalidArgument,
            "needs an expiry",
        ),
        (
            new_test_key("prod", 8 * 24 * 3600, reason),
            Code::InvalidArgument,
            "7 days",
        ),
    ];
    for (request, code, needle) in cases {
        let status = prod_keys.create_api_key(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(
            status.message().contains(needle),
            "{:?} should mention {needle:?}",
            status.message()
        );
    }
    let first_env = keys
        .create_api_key(new_test_key("dev", 3600, reason))
        .await
        .unwrap_err();
    assert_eq!(first_env.code(), Code::FailedPrecondition);
    assert!(
        first_env.message().contains("first of the chain"),
        "{}",
        first_env.message()
    );

    // Five active test keys per person; the sixth is refused.
    let mut test_keys = Vec::new();
    for _ in 0..5 {
        let made = prod_keys
            .create_api_key(new_test_key("prod", 7 * 24 * 3600, reason))
            .await
            .unwrap()
            .into_inner();
        let key = made.key.unwrap();
        assert!(key.test);
        assert_eq!(key.reason, reason);
        assert!(key.expire_time.is_some());
        test_keys.push((made.secret, key.id));
    }
    let sixth = prod_keys
        .create_api_key(new_test_key("prod", 3600, reason))
        .await
        .unwrap_err();
    assert_eq!(sixth.code(), Code::ResourceExhausted);
    assert!(
        sixth.message().contains("5 active test keys"),
        "{}",
        sixth.message()
    );
    let (test_secret, test_id) = test_keys[0].clone();
    let prod_secret = prod_keys
        .create_api_key(new_key("prod", "prod-ci"))
        .await
        .unwrap()
        .into_inner()
        .secret;

    // Traffic in prod: 3 with the test key, 3 with the normal key (the
    // first of each as soon as the node has the key; refusals before
    // that are not usage).
    until(&node, &[(KEY, test_secret.as_str()), (ENV, "prod")], 200).await;
    until(&node, &[(KEY, prod_secret.as_str()), (ENV, "prod")], 200).await;
    for _ in 0..2 {
        assert_eq!(
            get(&node, &[(KEY, test_secret.as_str()), (ENV, "prod")])
                .await
                .status,
            200
        );
        assert_eq!(
            get(&node, &[(KEY, prod_secret.as_str()), (ENV, "prod")])
                .await
                .status,
            200
        );
    }
    let prod_usage = eventually("the node to report prod's usage", || {
        let mut usage = usage.clone();
        async move {
            let found = usage
                .get_usage(v1::GetUsageRequest {
                    workspace: "shop".into(),
                    environment: "prod".into(),
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            let prod = found.environments.into_iter().next()?;
            (prod.requests + prod.test_requests >= 6).then_some(prod)
        }
    })
    .await;
    assert_eq!(
        (prod_usage.requests, prod_usage.test_requests),
        (3, 3),
        "test-key requests are counted apart, never as usage"
    );
    let everything = usage
        .get_usage(v1::GetUsageRequest {
            workspace: "shop".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = everything
        .environments
        .iter()
        .map(|e| e.environment.as_str())
        .collect();
    assert_eq!(names, ["dev", "test", "prod"]);

    // The journal flags the test key's requests, and never shows a secret.
    let journal = admin
        .journal
        .list_requests(v1::ListRequestsRequest {
            workspace: "shop".into(),
            environment: "prod".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    let flagged: Vec<&v1::JournalEntry> = journal.iter().filter(|e| e.test_key).collect();
    assert_eq!(flagged.len(), 3, "{journal:?}");
    assert!(flagged.iter().all(|e| e.api_key_id == test_id));
    assert_eq!(
        journal
            .iter()
            .filter(|e| !e.test_key && e.status == 200)
            .count(),
        3
    );
    assert!(
        journal
            .iter()
            .all(|e| !e.headers.contains(&test_secret) && !e.headers.contains(&prod_secret)),
        "secrets never reach the journal"
    );

    // Keys list with when they were last used; never a secret.
    let listed = eventually("the test key's last use to be reported", || {
        let mut keys = keys.clone();
        let test_id = test_id.clone();
        async move {
            let listed = keys
                .list_api_keys(v1::ListApiKeysRequest {
                    workspace: "shop".into(),
                    environment: String::new(),
                })
                .await
                .ok()?
                .into_inner()
                .keys;
            listed
                .iter()
                .any(|k| k.id == test_id && k.last_used_time.is_some())
                .then_some(listed)
        }
    })
    .await;
    assert_eq!(listed.len(), 6);
    assert!(listed.iter().all(|k| k.hint.len() == 10));

    // Revoking one test key makes room for another.
    prod_keys
        .revoke_api_key(v1::RevokeApiKeyRequest {
            workspace: "shop".into(),
            id: test_id,
        })
        .await
        .unwrap();
    prod_keys
        .create_api_key(new_test_key("prod", 3600, reason))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reports_what_it_counted_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let token = plane.token.clone().unwrap();
    shop(&plane).await;
    // Reports every hour: only the one sent on shutdown can carry these.
    let mut node = Node::start_with(
        dir.path(),
        &plane.url(),
        &[
            "--usage-interval-secs",
            "3600",
            "--grace-period",
            "1",
            "--shutdown-timeout",
            "1",
        ],
    )
    .await
    .unwrap();
    until(&node, &[], 200).await;
    for _ in 0..2 {
        assert_eq!(get(&node, &[]).await.status, 200);
    }
    node.process
        .stop(nix::sys::signal::Signal::SIGTERM)
        .await
        .unwrap();
    let (_, usage) = clients(&plane, &token, None).await;
    let dev = eventually("the node's last report", || {
        let mut usage = usage.clone();
        async move {
            let found = usage
                .get_usage(v1::GetUsageRequest {
                    workspace: "shop".into(),
                    environment: "dev".into(),
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            let dev = found.environments.into_iter().next()?;
            (dev.requests > 0).then_some(dev)
        }
    })
    .await;
    assert_eq!((dev.requests, dev.test_requests), (3, 0));
}

/// Usage counts of one workspace, all minutes, summed.
async fn requests_counted(store: &dyn Store, org: uuid::Uuid) -> u64 {
    store
        .usage(
            org,
            &WorkspaceRef::Slug(Slug::parse("shop").unwrap()),
            None,
            0,
            i64::MAX,
        )
        .await
        .unwrap()
        .iter()
        .map(|t| t.requests)
        .sum()
}

async fn record(store: &dyn Store, workspace_id: uuid::Uuid, minute: i64, requests: u64) {
    store
        .record_usage(&store::UsageReport {
            minute,
            counts: vec![store::UsageCount {
                workspace_id,
                environment: "dev".into(),
                requests,
                test_requests: 0,
                limited_requests: 0,
            }],
            key_uses: Vec::new(),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_usage_is_pruned_by_the_retention_job_and_the_prune_command() {
    let dir = tempfile::tempdir().unwrap();
    let mut plane = ControlPlane::start_with(
        dir.path(),
        "127.0.0.1:0",
        None,
        &["--retention-interval-secs", "1", "--retain-usage", "30"],
    )
    .await
    .unwrap();
    let token = plane.token.clone().unwrap();
    let mut admin = plane.api(&token).await;
    let shop = admin
        .workspaces
        .create_workspace(new_workspace("shop"))
        .await
        .unwrap()
        .into_inner();
    let workspace_id: uuid::Uuid = shop.id.parse().unwrap();
    let store = open_store(dir.path()).await;
    let org = store.org_ids().await.unwrap()[0];
    let now_minute = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        / 60
        * 60;
    let old_minute = now_minute - 31 * 24 * 3600;

    // The serving control plane's job prunes the old minute, not today's.
    record(&*store, workspace_id, old_minute, 7).await;
    record(&*store, workspace_id, now_minute, 3).await;
    eventually("the retention job prunes the old minute", || async {
        (requests_counted(&*store, org).await == 3).then_some(())
    })
    .await;
    plane
        .process
        .stop(nix::sys::signal::Signal::SIGTERM)
        .await
        .unwrap();

    // The command: a dry run counts, a real run deletes, both say so.
    record(&*store, workspace_id, old_minute, 7).await;
    let url = mockplane_e2e::database_url(dir.path()).await;
    let prune = |extra: &[&str]| {
        let mut args = vec![
            "prune".to_owned(),
            "--data-dir".into(),
            dir.path().display().to_string(),
            "--database-url".into(),
            url.clone(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        tokio::process::Command::new(mockplane_e2e::bin("mockplane-control-plane"))
            .args(args)
            .output()
    };
    let rows = |output: &std::process::Output, table: &str| -> serde_json::Value {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let event: serde_json::Value = stdout
            .lines()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| {
                panic!(
                    "no event: {stdout} {}",
                    String::from_utf8_lossy(&output.stderr)
                )
            });
        assert_eq!(event["event"], "pruned", "{event}");
        event["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == table)
            .unwrap_or_else(|| panic!("{table} missing: {event}"))["rows"]
            .clone()
    };
    let dry = prune(&["--dry-run", "--retain-usage", "30"]).await.unwrap();
    assert!(dry.status.success(), "{dry:?}");
    assert_eq!(rows(&dry, "usage"), 1);
    assert_eq!(
        requests_counted(&*store, org).await,
        10,
        "a dry run deletes nothing"
    );
    let kept = prune(&["--retain-usage", "forever"]).await.unwrap();
    assert!(kept.status.success(), "{kept:?}");
    assert!(rows(&kept, "usage").is_null());
    for table in ["change_log", "deliveries", "access_log", "refresh_tokens"] {
        assert_eq!(rows(&kept, table), 0, "{table}");
    }
    assert_eq!(requests_counted(&*store, org).await, 10);
    let real = prune(&["--retain-usage", "30"]).await.unwrap();
    assert!(real.status.success(), "{real:?}");
    assert_eq!(rows(&real, "usage"), 1);
    assert_eq!(requests_counted(&*store, org).await, 3);

    // Bad settings are refused, naming the flag and what is wrong.
    for bad in ["0", "-1", "thirty"] {
        let refused = prune(&[&format!("--retain-usage={bad}")]).await.unwrap();
        assert_eq!(refused.status.code(), Some(2), "{refused:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains("--retain-usage") && stderr.contains("from 1 to 36500"),
            "{stderr}"
        );
    }
}
