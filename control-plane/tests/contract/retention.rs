//! The store contract for retention (run on both backends by
//! `contract_suite!` in `store_contract.rs`): each prune deletes what is old
//! enough and nothing a later step needs, and a dry run counts exactly what
//! a real run deletes while deleting nothing.

use std::sync::Arc;

use chrono::{TimeDelta, Utc};
use mockplane_control_plane::promotions as workflow;
use mockplane_control_plane::store::{
    AccessGrant, ChannelKind, NewChannel, NewPrincipal, Outcome, PrincipalKind, RefreshOutcome,
    Store, UsageCount, UsageReport,
};
use mockplane_shared::NewWorkspace;
use mockplane_shared::governance::access::OrgRole;

use super::promotions::{request, setup, shop};

pub async fn retention_prunes_only_what_may_go(store: Arc<dyn Store>) {
    let now = Utc::now();
    let day_ago = now - TimeDelta::days(1);
    let first = store
        .bootstrap(
            "default",
            &NewPrincipal {
                kind: PrincipalKind::User,
                email: Some("owner@example.com".into()),
                name: "owner".into(),
                org_role: OrgRole::Owner,
                password_hash: Some("phc".into()),
                must_change_password: false,
            },
            "token-hash",
        )
        .await
        .unwrap()
        .unwrap();
    let org = setup(&*store).await;
    let shop_id = store.get_workspace(org, &shop()).await.unwrap().id;

    // Deliveries: two channels, two events: one delivered, one given up
    // on, one retried later (still pending) and one claimed, not yet
    // answered (pending too).
    store
        .create_channel(
            org,
            &shop(),
            NewChannel {
                kind: ChannelKind::Email,
                target: "ops@acme.io".into(),
                secret: String::new(),
                events: Vec::new(),
                gitops: None,
                created_by: "admin".into(),
            },
        )
        .await
        .unwrap();
    workflow::request(&*store, org, &shop(), request("dana"))
        .await
        .unwrap();
    let claimed = store
        .claim_deliveries(
            Utc::now() + TimeDelta::seconds(1),
            TimeDelta::seconds(600),
            100,
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 4, "{claimed:?}");
    let later = now + TimeDelta::hours(1);
    let outcomes = [
        Outcome::Delivered {
            detail: "250 OK".into(),
        },
        Outcome::Failed {
            error: "550 no such user".into(),
        },
        Outcome::Retry {
            at: later,
            error: "421 try later".into(),
        },
    ];
    for (claim, outcome) in claimed.iter().zip(outcomes) {
        store.record_attempt(claim, outcome, None).await.unwrap();
    }
    assert_eq!(store.prune_deliveries(day_ago, false).await.unwrap(), 0);
    assert_eq!(store.prune_deliveries(later, true).await.unwrap(), 2);
    assert_eq!(
        store
            .list_deliveries(org, &shop(), None, 10)
            .await
            .unwrap()
            .len(),
        4,
        "a dry run deletes nothing"
    );
    assert_eq!(store.prune_deliveries(later, false).await.unwrap(), 2);
    let mut left: Vec<_> = store
        .list_deliveries(org, &shop(), None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.id, d.status))
        .collect();
    left.sort();
    let mut pending = vec![
        (claimed[2].id, "pending".to_owned()),
        (claimed[3].id, "pending".to_owned()),
    ];
    pending.sort();
    assert_eq!(left, pending);

    // Usage: minutes before the cut-off go.
    let minute = now.timestamp() / 60 * 60;
    for at in [600, minute] {
        store
            .record_usage(&UsageReport {
                minute: at,
                counts: vec![UsageCount {
                    workspace_id: shop_id,
                    environment: "dev".into(),
                    requests: 5,
                    test_requests: 0,
                    limited_requests: 0,
                }],
                key_uses: Vec::new(),
            })
            .await
            .unwrap();
    }
    let total = |store: Arc<dyn Store>| async move {
        store
            .usage(org, &shop(), Some("dev"), 0, i64::MAX)
            .await
            .unwrap()
            .iter()
            .map(|t| t.requests)
            .sum::<u64>()
    };
    assert_eq!(store.prune_usage(day_ago, true).await.unwrap(), 1);
    assert_eq!(total(store.clone()).await, 10);
    assert_eq!(store.prune_usage(day_ago, false).await.unwrap(), 1);
    assert_eq!(total(store.clone()).await, 5);

    // Refresh tokens: expired and revoked ones go once past the cut-off;
    // a used one that has not expired stays, so its reuse still revokes.
    let owner = store
        .find_principal(first.org_id, first.admin_id)
        .await
        .unwrap()
        .unwrap();
    store
        .start_session(&owner, "expired", now - TimeDelta::days(2))
        .await
        .unwrap();
    store.start_session(&owner, "used", later).await.unwrap();
    assert!(matches!(
        store
            .use_refresh_token("used", ("next", later))
            .await
            .unwrap(),
        RefreshOutcome::Used { .. }
    ));
    store.start_session(&owner, "ended", later).await.unwrap();
    assert!(store.end_session("ended").await.unwrap());
    assert_eq!(store.prune_refresh_tokens(day_ago, false).await.unwrap(), 1);
    assert_eq!(
        store
            .use_refresh_token("expired", ("x", later))
            .await
            .unwrap(),
        RefreshOutcome::Unknown
    );
    // Revoked now: gone with a cut-off after now, not before.
    assert_eq!(store.prune_refresh_tokens(later, false).await.unwrap(), 1);
    assert_eq!(
        store.use_refresh_token("used", ("y", later)).await.unwrap(),
        RefreshOutcome::Reused,
        "the used token is still known"
    );

    // The access log: an expired grant in test goes; prod's (an
    // environment that requires a reason) stays.
    for environment in ["test", "prod"] {
        store
            .record_access(
                org,
                shop_id,
                &AccessGrant {
                    principal_id: first.admin_id,
                    environment: environment.into(),
                    reason: format!("debugging {environment}"),
                    token_id: format!("jti-{environment}"),
                    granted_at: now - TimeDelta::days(3),
                    expires_at: now - TimeDelta::days(2),
                },
            )
            .await
            .unwrap();
    }
    let protected = vec!["prod".to_owned()];
    assert_eq!(
        store
            .prune_access_log(org, day_ago, &protected, true)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.list_access(org, &shop(), 10).await.unwrap().len(), 2);
    assert_eq!(
        store
            .prune_access_log(org, day_ago, &protected, false)
            .await
            .unwrap(),
        1
    );
    let log = store.list_access(org, &shop(), 10).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].environment, "prod");
    // Another org's prune reaches none of these.
    assert_eq!(
        store
            .prune_access_log(first.org_id, later, &[], false)
            .await
            .unwrap(),
        0
    );

    // The change log: beyond the kept revisions and old enough, except each
    // workspace's newest row; a deleted workspace's rows all go.
    let gone = store
        .create_workspace(org, NewWorkspace::parse("gone", "", "").unwrap(), None)
        .await
        .unwrap();
    let gone_ref = mockplane_control_plane::store::WorkspaceRef::Id(gone.id);
    store.delete_workspace(org, &gone_ref, None).await.unwrap();
    let newest = store.last_change_revision(shop_id).await.unwrap();
    assert!(newest > 0);
    let current = store.config_changes_since(0).await.unwrap().revision;
    assert_eq!(
        store.prune_change_log(day_ago, 0, false).await.unwrap(),
        0,
        "nothing is old enough"
    );
    assert_eq!(
        store.prune_change_log(later, current, false).await.unwrap(),
        0,
        "everything is among the kept revisions"
    );
    let would = store.prune_change_log(later, 0, true).await.unwrap();
    assert!(would > 0);
    assert!(store.config_changes_since(0).await.unwrap().complete);
    assert_eq!(
        store.prune_change_log(later, 0, false).await.unwrap(),
        would
    );
    assert_eq!(store.last_change_revision(shop_id).await.unwrap(), newest);
    assert_eq!(store.last_change_revision(gone.id).await.unwrap(), 0);
    let history = store.change_history(0).await.unwrap();
    assert_eq!(history.complete_after, current);
    // A reader from before the pruned revisions is told to start over,
    // with every workspace there is; one from after gets a delta.
    let behind = store.config_changes_since(0).await.unwrap();
    assert!(!behind.complete);
    let mut listed: Vec<_> = behind.changed.iter().map(|(id, _)| *id).collect();
    listed.sort();
    let mut all = store.load_config().await.unwrap().workspaces;
    all.sort_by_key(|w| w.id);
    assert_eq!(listed, all.iter().map(|w| w.id).collect::<Vec<_>>());
    let caught_up = store.config_changes_since(current).await.unwrap();
    assert!(caught_up.complete && caught_up.changed.is_empty());
    assert_eq!(store.prune_change_log(later, 0, false).await.unwrap(), 0);
}
