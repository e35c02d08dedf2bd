//! The store contract for data-plane API keys and usage statistics (run on
//! both backends by `contract_suite!` in `store_contract.rs`).

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use mockplane_control_plane::store::{
    EnvironmentPatch, NewApiKey, NewPrincipal, NewTestKey, PrincipalKind, Store, StoreError,
    UsageCount, UsageReport, WorkspaceRef,
};
use mockplane_shared::governance::access::OrgRole;
use mockplane_shared::model::keys::{digest, hash_hex};
use mockplane_shared::{NewWorkspace, Slug, WorkspaceConfig, WorkspacePatch};
use uuid::Uuid;

fn shop() -> WorkspaceRef {
    WorkspaceRef::Slug(Slug::parse("shop").unwrap())
}

fn key(environment: &str, secret: &str, creator: Uuid) -> NewApiKey {
    NewApiKey {
        environment: environment.into(),
        name: format!("{environment} key"),
        key_hash: hash_hex(secret),
        hint: secret.chars().take(10).collect(),
        expires_at: None,
        created_by: Some(creator),
        test: None,
    }
}

fn test_key(environment: &str, secret: &str, creator: Uuid, hours: i64) -> NewApiKey {
    NewApiKey {
        expires_at: Some(Utc::now() + TimeDelta::hours(hours)),
        test: Some(NewTestKey {
            reason: "load test for INC-42".into(),
            max_active: 2,
        }),
        ..key(environment, secret, creator)
    }
}

async fn config_of(store: &dyn Store, id: Uuid) -> WorkspaceConfig {
    store
        .load_config()
        .await
        .unwrap()
        .workspaces
        .into_iter()
        .find(|w| w.id == id)
        .unwrap()
}

pub async fn api_keys_open_one_environment_and_expire(store: Arc<dyn Store>) {
    let org = store.create_org("keys-org").await.unwrap();
    let ws = store
        .create_workspace(org, NewWorkspace::parse("shop", "", "").unwrap(), None)
        .await
        .unwrap();
    let ada = store
        .create_principal(
            org,
            NewPrincipal {
                kind: PrincipalKind::User,
                email: Some("ada@acme.io".into()),
                name: "ada".into(),
                org_role: OrgRole::Member,
                password_hash: None,
                must_change_password: false,
            },
        )
        .await
        .unwrap()
        .id;

    // A key bumps the revision and reaches the snapshot as a hash only.
    let before = store.current_revision().await.unwrap();
    let dev = store
        .create_api_key(org, &shop(), key("dev", "mpk_dev", ada))
        .await
        .unwrap();
    assert_eq!(
        (dev.environment.as_str(), dev.test, dev.created_by),
        ("dev", false, Some(ada))
    );
    assert!(store.current_revision().await.unwrap() > before);
    let changes = store.config_changes_since(before).await.unwrap();
    let (_, changed) = changes.changed.iter().find(|(id, _)| *id == ws.id).unwrap();
    let changed = changed.clone().unwrap().unwrap();
    assert_eq!(changed.environment("dev").unwrap().keys.len(), 1);
    let config = config_of(&*store, ws.id).await;
    let served = &config.environment("dev").unwrap().keys;
    assert_eq!(served.len(), 1);
    assert_eq!(
        (
            served[0].id,
            served[0].sha256,
            served[0].test,
            served[0].expires_at_unix
        ),
        (dev.id, digest(b"mpk_dev"), false, 0)
    );
    assert!(config.environment("prod").unwrap().keys.is_empty());
    assert!(!config.require_api_keys);

    // Test keys: never in the chain's first environment.
    let refused = store
        .create_api_key(org, &shop(), test_key("dev", "mpk_t0", ada, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, StoreError::FailedPrecondition(m) if m.contains("first of the chain")),
        "{refused}"
    );
    // An expired test key does not count towards the limit.
    store
        .create_api_key(org, &shop(), test_key("prod", "mpk_t1", ada, -48))
        .await
        .unwrap();
    let prod = store
        .create_api_key(org, &shop(), test_key("prod", "mpk_t2", ada, 1))
        .await
        .unwrap();
    assert!(prod.test);
    assert_eq!(prod.reason, "load test for INC-42");
    store
        .create_api_key(org, &shop(), test_key("test", "mpk_t3", ada, 2))
        .await
        .unwrap();
    let limit = store
        .create_api_key(org, &shop(), test_key("prod", "mpk_t4", ada, 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&limit, StoreError::LimitExceeded(m) if m.contains("2 active test keys")),
        "{limit}"
    );
    // The limit is per person: normal keys and others' test keys are apart.
    store
        .create_api_key(org, &shop(), key("prod", "mpk_prod", ada))
        .await
        .unwrap();
    let served = config_of(&*store, ws.id).await;
    let prod_keys = &served.environment("prod").unwrap().keys;
    assert_eq!(prod_keys.len(), 3);
    assert!(
        prod_keys
            .iter()
            .any(|k| k.test && k.expires_at_unix > 0 && k.expires_at_unix < 1_000_000_000_000)
    );

    // Listing: newest first, by environment, never across orgs.
    let all = store.list_api_keys(org, &shop(), None).await.unwrap();
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].created_at >= w[1].created_at));
    let in_prod = store
        .list_api_keys(org, &shop(), Some("prod"))
        .await
        .unwrap();
    assert_eq!(in_prod.len(), 3);
    assert!(matches!(
        store.list_api_keys(org, &shop(), Some("qa")).await,
        Err(StoreError::NotFound(_))
    ));
    let other = store.create_org("keys-other").await.unwrap();
    assert!(matches!(
        store.get_api_key(other, &shop(), dev.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.revoke_api_key(other, &shop(), dev.id).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store.get_api_key(org, &shop(), dev.id).await.unwrap().name,
        "dev key"
    );

    // Keys follow their environment's renames and go with it.
    store
        .update_environment(
            org,
            &shop(),
            &Slug::parse("test").unwrap(),
            &EnvironmentPatch {
                name: Some(Slug::parse("stage").unwrap()),
                settings: None,
            },
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .list_api_keys(org, &shop(), Some("stage"))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        config_of(&*store, ws.id)
            .await
            .environment("stage")
            .unwrap()
            .keys
            .len(),
        1
    );
    store
        .delete_environment(org, &shop(), &Slug::parse("stage").unwrap(), None)
        .await
        .unwrap();
    assert_eq!(
        store.list_api_keys(org, &shop(), None).await.unwrap().len(),
        4
    );

    // Revoking bumps the revision and takes the key out of the snapshot.
    let before = store.current_revision().await.unwrap();
    store.revoke_api_key(org, &shop(), dev.id).await.unwrap();
    assert!(store.current_revision().await.unwrap() > before);
    assert!(
        config_of(&*store, ws.id)
            .await
            .environment("dev")
            .unwrap()
            .keys
            .is_empty()
    );
    assert!(matches!(
        store.revoke_api_key(org, &shop(), dev.id).await,
        Err(StoreError::NotFound(_))
    ));

    // Keys expired for more than a day are deleted, the others kept.
    let before = store.current_revision().await.unwrap();
    let deleted = store
        .delete_expired_api_keys(Utc::now() - TimeDelta::days(1))
        .await
        .unwrap();
    assert_eq!(deleted, 1, "only the key expired two days ago");
    assert!(store.current_revision().await.unwrap() > before);
    let before = store.current_revision().await.unwrap();
    assert_eq!(
        store
            .delete_expired_api_keys(Utc::now() - TimeDelta::days(1))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store.current_revision().await.unwrap(),
        before,
        "nothing to do"
    );
    assert_eq!(
        store.list_api_keys(org, &shop(), None).await.unwrap().len(),
        2
    );

    // Requiring keys is a workspace setting nodes receive.
    let updated = store
        .update_workspace(
            org,
            &shop(),
            &WorkspacePatch {
                require_api_keys: Some(true),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    assert!(updated.require_api_keys);
    assert!(
        store
            .get_workspace(org, &shop())
            .await
            .unwrap()
            .require_api_keys
    );
    assert!(config_of(&*store, ws.id).await.require_api_keys);
}

pub async fn usage_adds_up_per_workspace_and_minute(store: Arc<dyn Store>) {
    let acme = store.create_org("usage-acme").await.unwrap();
    let globex = store.create_org("usage-globex").await.unwrap();
    let shop = store
        .create_workspace(acme, NewWorkspace::parse("shop", "", "").unwrap(), None)
        .await
        .unwrap();
    let bank = store
        .create_workspace(globex, NewWorkspace::parse("bank", "", "").unwrap(), None)
        .await
        .unwrap();
    let count = |workspace_id, environment: &str, requests, test_requests| UsageCount {
        workspace_id,
        environment: environment.into(),
        requests,
        test_requests,
        // Refusals by the environment's limits add up the same way.
        limited_requests: requests / 2,
    };
    // One report names workspaces of two orgs and one deleted since.
    store
        .record_usage(&UsageReport {
            minute: 600,
            counts: vec![
                count(shop.id, "dev", 3, 1),
                count(bank.id, "prod", 7, 0),
                count(Uuid::new_v4(), "dev", 100, 0),
            ],
            key_uses: Vec::new(),
        })
        .await
        .unwrap();
    store
        .record_usage(&UsageReport {
            minute: 600,
            counts: vec![count(shop.id, "dev", 2, 0), count(shop.id, "prod", 0, 4)],
            key_uses: Vec::new(),
        })
        .await
        .unwrap();
    store
        .record_usage(&UsageReport {
            minute: 660,
            counts: vec![count(shop.id, "dev", 10, 0)],
            key_uses: Vec::new(),
        })
        .await
        .unwrap();
    let shop_ref = WorkspaceRef::Id(shop.id);
    let totals = store
        .usage(acme, &shop_ref, None, 0, i64::MAX)
        .await
        .unwrap();
    let seen: Vec<(&str, u64, u64, u64)> = totals
        .iter()
        .map(|t| {
            (
                t.environment.as_str(),
                t.requests,
                t.test_requests,
                t.limited_requests,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("dev", 15, 1, 7), ("test", 0, 0, 0), ("prod", 0, 4, 0)],
        "chain order, zeros included"
    );
    let first_minute = store
        .usage(acme, &shop_ref, Some("dev"), 600, 660)
        .await
        .unwrap();
    assert_eq!(first_minute.len(), 1);
    assert_eq!(
        (first_minute[0].requests, first_minute[0].test_requests),
        (5, 1)
    );
    // Each count went to its workspace's own org, and only it reads them.
    let bank_totals = store
        .usage(globex, &WorkspaceRef::Id(bank.id), None, 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(
        bank_totals
            .iter()
            .find(|t| t.environment == "prod")
            .map(|t| t.requests),
        Some(7)
    );
    assert!(matches!(
        store
            .usage(acme, &WorkspaceRef::Id(bank.id), None, 0, i64::MAX)
            .await,
        Err(StoreError::NotFound(_))
    ));
    // Usage recorded under an environment name the workspace no longer
    // has is still shown, after its environments.
    store
        .record_usage(&UsageReport {
            minute: 720,
            counts: vec![count(shop.id, "legacy", 1, 0)],
            key_uses: Vec::new(),
        })
        .await
        .unwrap();
    let totals = store
        .usage(acme, &shop_ref, None, 0, i64::MAX)
        .await
        .unwrap();
    assert_eq!(totals.last().unwrap().environment, "legacy");

    // Key uses move last_used_at forward only.
    let key = store
        .create_api_key(
            acme,
            &shop_ref,
            NewApiKey {
                environment: "dev".into(),
                name: "ci".into(),
                key_hash: hash_hex("mpk_usage"),
                hint: "mpk_usage".into(),
                expires_at: None,
                created_by: None,
                test: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(key.last_used_at, None);
    let at = |seconds| chrono::DateTime::from_timestamp(seconds, 0).unwrap();
    for seconds in [1_700_000_100, 1_700_000_000] {
        store
            .record_usage(&UsageReport {
                minute: 1_700_000_040,
                counts: Vec::new(),
                key_uses: vec![(key.id, at(seconds)), (Uuid::new_v4(), at(seconds))],
            })
            .await
            .unwrap();
    }
    assert_eq!(
        store
            .get_api_key(acme, &shop_ref, key.id)
            .await
            .unwrap()
            .last_used_at,
        Some(at(1_700_000_100))
    );
}

pub async fn node_tokens_are_checked_by_hash_and_revoked(store: Arc<dyn Store>) {
    use mockplane_control_plane::store::StoreError;
    let first = store.create_node_token("fleet-a", "hash-a").await.unwrap();
    assert_eq!(first.name, "fleet-a");
    let twice = store.create_node_token("fleet-a", "hash-b").await;
    assert!(
        matches!(&twice, Err(StoreError::AlreadyExists(m)) if m.contains("fleet-a")),
        "{twice:?}"
    );
    let bad = store.create_node_token("has space", "hash-c").await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))), "{bad:?}");
    store.create_node_token("fleet-b", "hash-b").await.unwrap();

    let used = store.use_node_token("hash-a").await.unwrap().unwrap();
    assert_eq!(used.name, "fleet-a");
    assert!(store.use_node_token("hash-x").await.unwrap().is_none());
    let listed = store.list_node_tokens().await.unwrap();
    assert_eq!(
        listed.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["fleet-a", "fleet-b"]
    );
    assert!(listed[0].last_used_at.is_some(), "{listed:?}");
    assert!(listed[1].last_used_at.is_none(), "{listed:?}");

    // Rotation: b stays valid while a is revoked.
    let revoked = store.revoke_node_token("fleet-a").await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(store.use_node_token("hash-a").await.unwrap().is_none());
    assert!(store.use_node_token("hash-b").await.unwrap().is_some());
    assert!(matches!(
        store.revoke_node_token("nobody").await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn periodic_jobs_run_on_one_replica_at_a_time(store: Arc<dyn Store>) {
    let first = store.job_lock("sweep").await.unwrap();
    assert!(first.is_some());
    let other = store.job_lock("prune").await.unwrap();
    assert!(other.is_some(), "another job has its own lock");
    let second = store.job_lock("sweep").await.unwrap();
    if store.backend() == "postgres" {
        // What a second replica finds while the first runs the job.
        assert!(second.is_none(), "the lock is held");
    } else {
        // One machine: nothing to share it with.
        assert!(second.is_some());
    }
    drop((first, second));
    assert!(store.job_lock("sweep").await.unwrap().is_some(), "released");
}

pub async fn the_node_registry_keeps_each_nodes_newest_stream(store: Arc<dyn Store>) {
    use mockplane_control_plane::store::{FailingWorkspace, NodeReport, NodeState, ReplicaReport};
    let replica = |id: &str| ReplicaReport {
        id: id.into(),
        name: format!("replica-{id}"),
        started_at: Utc::now(),
        stopped: false,
    };
    let (a, b) = (replica("a"), replica("b"));
    let t0 = Utc::now() - TimeDelta::seconds(10);
    let on_a = NodeReport {
        node_id: "n1".into(),
        labels: [("zone".to_owned(), "eu-1".to_owned())].into(),
        binary_version: "1.2.3".into(),
        protocol_version: 4,
        schema_version: 4,
        capabilities: vec!["last-known-good".into()],
        token_name: "default".into(),
        replica_id: "a".into(),
        stream_id: "a/1".into(),
        ops_url: "http://127.0.0.1:1".into(),
        connected: true,
        connected_at: t0,
        last_seen: t0,
        applied_revision: 3,
        last_ack_at: Some(t0),
        last_nack_at: None,
        last_nack_revision: None,
        last_error: None,
        failing: Vec::new(),
    };
    store
        .report_nodes(&a, std::slice::from_ref(&on_a))
        .await
        .unwrap();
    let listed = store.list_nodes().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].state, NodeState::Connected);
    assert_eq!(listed[0].replica_name, "replica-a");
    assert_eq!(listed[0].report.labels, on_a.labels);
    assert_eq!(listed[0].report.capabilities, on_a.capabilities);

    // The node moves to b, which NACKed a workspace there.
    let t1 = t0 + TimeDelta::seconds(5);
    let on_b = NodeReport {
        replica_id: "b".into(),
        stream_id: "b/7".into(),
        connected_at: t1,
        last_seen: t1,
        applied_revision: 5,
        last_nack_at: Some(t1),
        last_nack_revision: Some(5),
        failing: vec![FailingWorkspace {
            workspace_id: Uuid::nil().to_string(),
            revision: 5,
            message: "route 2: bad regex".into(),
        }],
        ..on_a.clone()
    };
    store
        .report_nodes(&b, std::slice::from_ref(&on_b))
        .await
        .unwrap();
    // a learns late that its stream ended, and a stale heartbeat of it
    // arrives too: neither undoes b's newer row.
    let ended_on_a = NodeReport {
        connected: false,
        last_seen: Utc::now(),
        ..on_a.clone()
    };
    store.report_nodes(&a, &[ended_on_a]).await.unwrap();
    store
        .report_nodes(&a, std::slice::from_ref(&on_a))
        .await
        .unwrap();
    let listed = store.list_nodes().await.unwrap();
    assert_eq!(listed[0].state, NodeState::Connected);
    assert_eq!(listed[0].replica_name, "replica-b");
    assert_eq!(listed[0].report.applied_revision, 5);
    assert_eq!(listed[0].report.failing, on_b.failing);
    assert_eq!(listed[0].report.last_nack_revision, Some(5));

    // b stops without closing the stream (as if killed, then its last
    // report): the node is stale, not connected.
    store
        .report_nodes(
            &ReplicaReport {
                stopped: true,
                ..b.clone()
            },
            &[],
        )
        .await
        .unwrap();
    assert_eq!(store.list_nodes().await.unwrap()[0].state, NodeState::Stale);
    // The same stream ending is recorded.
    let ended_on_b = NodeReport {
        connected: false,
        ..on_b.clone()
    };
    store.report_nodes(&b, &[ended_on_b]).await.unwrap();
    assert_eq!(
        store.list_nodes().await.unwrap()[0].state,
        NodeState::Disconnected
    );

    // Nodes gone before the cut-off are forgotten; recent ones stay.
    assert_eq!(store.prune_nodes(t0).await.unwrap(), 0);
    let later = Utc::now() + TimeDelta::hours(1);
    assert_eq!(store.prune_nodes(later).await.unwrap(), 1);
    assert!(store.list_nodes().await.unwrap().is_empty());

    // A workspace's newest change, and an org's workspaces.
    let org = store.create_org("acme").await.unwrap();
    let other = store.create_org("other").await.unwrap();
    let shop_id = store
        .create_workspace(org, NewWorkspace::parse("shop", "", "").unwrap(), None)
        .await
        .unwrap()
        .id;
    store
        .create_workspace(other, NewWorkspace::parse("theirs", "", "").unwrap(), None)
        .await
        .unwrap();
    let created = store.last_change_revision(shop_id).await.unwrap();
    assert!(created > 0);
    store
        .update_workspace(
            org,
            &shop(),
            &WorkspacePatch {
                name: Some("Shop".into()),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    assert!(store.last_change_revision(shop_id).await.unwrap() > created);
    assert_eq!(store.last_change_revision(Uuid::new_v4()).await.unwrap(), 0);
    let slugs = store.workspace_slugs(org).await.unwrap();
    assert_eq!(slugs.len(), 1);
    assert_eq!(slugs[&shop_id], "shop");
}
