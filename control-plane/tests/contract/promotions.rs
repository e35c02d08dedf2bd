//! The store contract for promotions and their notifications (run on both
//! backends by `contract_suite!` in `store_contract.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{TimeDelta, Utc};
use mockplane_control_plane::store::{
    Actor, ChannelKind, Decision, EnvironmentPatch, NewChannel, NewPromotion, Store, StoreError,
    WorkspaceRef,
};
use mockplane_shared::environment::{Approvals, SettingKey, SettingsPatch};
use mockplane_shared::promotion::{EntityKind, Status};
use mockplane_shared::{EnvSettings, NewWorkspace, ResponseSpec, RouteSpec, Slug};
use uuid::Uuid;

fn shop() -> WorkspaceRef {
    WorkspaceRef::Slug(Slug::parse("shop").unwrap())
}

fn slug(raw: &str) -> Slug {
    Slug::parse(raw).unwrap()
}

fn actor(name: &str) -> Actor {
    Actor {
        id: Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes()),
        name: name.into(),
    }
}

fn request(by: &str) -> NewPromotion {
    NewPromotion {
        kind: EntityKind::Scenario,
        scenario: slug("default"),
        version: None,
        from: slug("dev"),
        to: slug("test"),
        comment: "ready".into(),
        metadata: BTreeMap::from([("ticket".into(), "PAY-1".into())]),
        requested_by: actor(by),
    }
}

fn decision(by: &str, approve: bool) -> Decision {
    Decision {
        approver: actor(by),
        role: "admin".into(),
        approve,
        comment: String::new(),
    }
}

/// A workspace whose test needs one approval (expiring after an hour),
/// with version 1 of `default` and an e-mail channel.
async fn setup(store: &dyn Store) -> Uuid {
    let org = store
        .create_org(&format!("org-{}", Uuid::new_v4()))
        .await
        .unwrap();
    store
        .create_workspace(org, NewWorkspace::parse("shop", "", "").unwrap(), None)
        .await
        .unwrap();
    store
        .update_environment(
            org,
            &shop(),
            &slug("test"),
            &EnvironmentPatch {
                settings: Some(SettingsPatch {
                    values: EnvSettings {
                        approvals: Some(Approvals {
                            required: 1,
                            roles: vec!["admin".into()],
                            expire_after_secs: Some(3600),
                        }),
                        ..Default::default()
                    },
                    keys: vec![SettingKey::Approvals],
                }),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    let route = RouteSpec::parse("", "GET", "/cart", || {
        ResponseSpec::parse(200, vec![], Bytes::from_static(b"v1"))
    })
    .unwrap();
    store
        .create_routes(org, &shop(), vec![route])
        .await
        .unwrap();
    store
        .create_version(org, &shop(), &slug("default"), "")
        .await
        .unwrap();
    store
        .create_channel(
            org,
            &shop(),
            NewChannel {
                kind: ChannelKind::Email,
                target: "qa@acme.io".into(),
                secret: String::new(),
                events: Vec::new(),
                gitops: None,
                created_by: "admin".into(),
            },
        )
        .await
        .unwrap();
    org
}

pub async fn a_promotion_runs_its_lifecycle(store: Arc<dyn Store>) {
    let org = setup(&*store).await;
    let created = store
        .create_promotion(org, &shop(), request("dana"))
        .await
        .unwrap();
    assert_eq!(
        (created.status, created.number, created.version),
        (Status::Pending, 1, 1)
    );
    assert_eq!(created.requirement.approvals, 1);
    assert_eq!(created.metadata["ticket"], "PAY-1");
    let again = store
        .create_promotion(org, &shop(), request("dana"))
        .await
        .unwrap_err();
    assert!(matches!(again, StoreError::AlreadyExists(_)), "{again:?}");
    let own = store
        .decide_promotion(org, created.id, decision("dana", true))
        .await
        .unwrap_err();
    assert!(matches!(own, StoreError::Refused(_)), "{own:?}");
    let mut wrong = decision("quinn", true);
    wrong.role = "editor".into();
    let refused = store
        .decide_promotion(org, created.id, wrong)
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::Refused(_)), "{refused:?}");
    let early = store
        .execute_promotion(org, created.id, actor("dana"))
        .await
        .unwrap_err();
    assert!(
        matches!(early, StoreError::FailedPrecondition(_)),
        "{early:?}"
    );
    let approved = store
        .decide_promotion(org, created.id, decision("alex", true))
        .await
        .unwrap();
    assert_eq!(approved.status, Status::Approved);
    let before = store.current_revision().await.unwrap();
    let done = store
        .execute_promotion(org, created.id, actor("dana"))
        .await
        .unwrap();
    assert_eq!(done.status, Status::Completed);
    assert!(done.revision.unwrap() > before);
    assert_eq!(done.previous_version, None);
    let scenario = store
        .get_scenario(org, &shop(), &slug("default"))
        .await
        .unwrap();
    assert_eq!(
        scenario
            .deployments
            .iter()
            .map(|d| (d.environment.as_str(), d.version))
            .collect::<Vec<_>>(),
        vec![("test", 1)]
    );
    let twice = store
        .execute_promotion(org, created.id, actor("dana"))
        .await
        .unwrap_err();
    assert!(
        matches!(twice, StoreError::FailedPrecondition(_)),
        "{twice:?}"
    );
    let rolled = store
        .rollback_promotion(org, created.id, actor("alex"), "not yet")
        .await
        .unwrap();
    assert_eq!(rolled.status, Status::RolledBack);
    let steps: Vec<(Option<Status>, Status)> =
        rolled.transitions.iter().map(|t| (t.from, t.to)).collect();
    assert_eq!(
        steps,
        vec![
            (None, Status::Pending),
            (Some(Status::Pending), Status::Approved),
            (Some(Status::Approved), Status::Completed),
            (Some(Status::Completed), Status::RolledBack),
        ]
    );
    let served = store
        .get_scenario(org, &shop(), &slug("default"))
        .await
        .unwrap();
    assert!(served.deployments.is_empty(), "test serves nothing again");
    let releases = store
        .list_releases(org, &shop(), Some("test"), 10)
        .await
        .unwrap();
    let kinds: Vec<(&str, u32)> = releases
        .iter()
        .map(|r| (r.kind.as_str(), r.version))
        .collect();
    assert_eq!(kinds, vec![("rollback", 0), ("promotion", 1)]);
    // Every event went into the outbox for the channel.
    let mut events: Vec<String> = store
        .list_deliveries(org, &shop(), Some(created.id), 50)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.event)
        .collect();
    events.sort();
    assert_eq!(
        events,
        [
            "approval_needed",
            "approved",
            "completed",
            "requested",
            "rolled_back"
        ]
    );
}

pub async fn pending_promotions_are_reminded_then_expire(store: Arc<dyn Store>) {
    let org = setup(&*store).await;
    let created = store
        .create_promotion(org, &shop(), request("dana"))
        .await
        .unwrap();
    let now = Utc::now();
    // Nothing is due yet.
    assert!(store.expire_promotions(now).await.unwrap().is_empty());
    assert!(store.remind_promotions(now).await.unwrap().is_empty());
    // The wait is an hour: reminded once a quarter of it is left.
    assert!(
        store
            .remind_promotions(now + TimeDelta::minutes(30))
            .await
            .unwrap()
            .is_empty()
    );
    let reminded = store
        .remind_promotions(now + TimeDelta::minutes(50))
        .await
        .unwrap();
    assert_eq!(
        reminded.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![created.id]
    );
    assert!(reminded[0].reminded_at.is_some());
    // Once only.
    assert!(
        store
            .remind_promotions(now + TimeDelta::hours(2))
            .await
            .unwrap()
            .is_empty()
    );
    let expired = store
        .expire_promotions(now + TimeDelta::hours(2))
        .await
        .unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].status, Status::Expired);
    assert_eq!(expired[0].transitions.last().unwrap().actor, "system");
    let late = store
        .decide_promotion(org, created.id, decision("alex", true))
        .await
        .unwrap_err();
    assert!(
        matches!(late, StoreError::FailedPrecondition(_)),
        "{late:?}"
    );
    let events: Vec<String> = store
        .list_deliveries(org, &shop(), Some(created.id), 50)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.event)
        .collect();
    assert!(
        events.contains(&"expiring".to_owned()) && events.contains(&"expired".to_owned()),
        "{events:?}"
    );
    // The outbox is claimed once: a second claim within the lease gets none.
    let claimed = store
        .claim_deliveries(Utc::now(), TimeDelta::seconds(60), 100)
        .await
        .unwrap();
    assert_eq!(claimed.len(), events.len());
    assert!(
        store
            .claim_deliveries(Utc::now(), TimeDelta::seconds(60), 100)
            .await
            .unwrap()
            .is_empty()
    );
}
