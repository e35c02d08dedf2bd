//! The store contract for promotions and their notifications (run on both
//! backends by `contract_suite!` in `store_contract.rs`).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{TimeDelta, Utc};
use mockplane_control_plane::promotions as workflow;
use mockplane_control_plane::store::{
    Actor, ChannelKind, Decision, EnvironmentPatch, NewChannel, NewPromotion, Store, StoreError,
    WorkspaceRef,
};
use mockplane_shared::governance::promotion::{EntityKind, Status};
use mockplane_shared::model::environment::{Approvals, SettingKey, SettingsPatch};
use mockplane_shared::{EnvSettings, NewWorkspace, ResponseSpec, RouteSpec, Slug};
use uuid::Uuid;

pub(crate) fn shop() -> WorkspaceRef {
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

pub(crate) fn request(by: &str) -> NewPromotion {
    NewPromotion {
        kind: EntityKind::Scenario,
        name: slug("default"),
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
pub(crate) async fn setup(store: &dyn Store) -> Uuid {
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
    let created = workflow::request(&*store, org, &shop(), request("dana"))
        .await
        .unwrap();
    assert_eq!(
        (created.status, created.number, created.version),
        (Status::Pending, 1, 1)
    );
    assert_eq!(created.requirement.approvals, 1);
    assert_eq!(created.metadata["ticket"], "PAY-1");
    let again = workflow::request(&*store, org, &shop(), request("dana"))
        .await
        .unwrap_err();
    assert!(matches!(again, StoreError::AlreadyExists(_)), "{again:?}");
    let own = workflow::decide(&*store, org, created.id, decision("dana", true))
        .await
        .unwrap_err();
    assert!(matches!(own, StoreError::Refused(_)), "{own:?}");
    let mut wrong = decision("quinn", true);
    wrong.role = "editor".into();
    let refused = workflow::decide(&*store, org, created.id, wrong)
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::Refused(_)), "{refused:?}");
    let early = workflow::execute(&*store, org, created.id, actor("dana"))
        .await
        .unwrap_err();
    assert!(
        matches!(early, StoreError::FailedPrecondition(_)),
        "{early:?}"
    );
    let approved = workflow::decide(&*store, org, created.id, decision("alex", true))
        .await
        .unwrap();
    assert_eq!(approved.status, Status::Approved);
    let before = store.current_revision().await.unwrap();
    let done = workflow::execute(&*store, org, created.id, actor("dana"))
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
    let twice = workflow::execute(&*store, org, created.id, actor("dana"))
        .await
        .unwrap_err();
    assert!(
        matches!(twice, StoreError::FailedPrecondition(_)),
        "{twice:?}"
    );
    let rolled = workflow::roll_back(&*store, org, created.id, actor("alex"), "not yet")
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
    let created = workflow::request(&*store, org, &shop(), request("dana"))
        .await
        .unwrap();
    let now = Utc::now();
    // Nothing is due yet.
    assert!(workflow::expire_due(&*store, now).await.unwrap().is_empty());
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
    let expired = workflow::expire_due(&*store, now + TimeDelta::hours(2))
        .await
        .unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].status, Status::Expired);
    assert_eq!(expired[0].transitions.last().unwrap().actor, "system");
    let late = workflow::decide(&*store, org, created.id, decision("alex", true))
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

/// What the environment serves of personas, by name.
async fn personas_in(store: &dyn Store, env: &str) -> Vec<(String, serde_json::Value)> {
    let config = store.load_config().await.unwrap();
    let ws = config
        .workspaces
        .iter()
        .find(|w| w.slug.as_str() == "shop")
        .unwrap();
    ws.environment(env)
        .unwrap()
        .personas
        .iter()
        .map(|p| (p.name.to_string(), p.data.clone()))
        .collect()
}

async fn test_settings(store: &dyn Store, org: Uuid) -> EnvSettings {
    store
        .get_workspace(org, &shop())
        .await
        .unwrap()
        .environment("test")
        .unwrap()
        .settings
        .clone()
}

pub async fn personas_and_settings_are_promoted_and_rolled_back(store: Arc<dyn Store>) {
    let org = setup(&*store).await;
    let alice = slug("alice");
    let v1 = serde_json::json!({"user": {"name": "Alice", "id": 7}});
    let v2 = serde_json::json!({"user": {"name": "Alice B.", "id": 7}});
    store
        .create_persona(org, &shop(), &alice, &v1)
        .await
        .unwrap();
    store
        .update_persona(org, &shop(), &alice, &v2, None)
        .await
        .unwrap();
    // Only dev serves the working copy.
    assert_eq!(
        personas_in(&*store, "dev").await,
        vec![("alice".into(), v2.clone())]
    );
    assert!(personas_in(&*store, "test").await.is_empty());

    // Version 1, explicitly, into test (one approval needed there).
    let persona = |version: Option<u32>| NewPromotion {
        kind: EntityKind::Persona,
        name: alice.clone(),
        version,
        ..request("dev-1")
    };
    let preview = workflow::preview(&*store, org, &shop(), &persona(Some(1)))
        .await
        .unwrap();
    assert_eq!(preview.evaluation.diff.added, vec!["persona alice"]);
    assert_eq!(preview.current_version, None);
    let p = workflow::request(&*store, org, &shop(), persona(Some(1)))
        .await
        .unwrap();
    assert_eq!(
        (p.status, p.kind, p.name.as_str(), p.version),
        (Status::Pending, EntityKind::Persona, "alice", 1)
    );
    let again = workflow::request(&*store, org, &shop(), persona(None)).await;
    assert!(
        matches!(&again, Err(StoreError::AlreadyExists(m)) if m.contains("persona 'alice'")),
        "{again:?}"
    );
    workflow::decide(&*store, org, p.id, decision("qa-1", true))
        .await
        .unwrap();
    let done = workflow::execute(&*store, org, p.id, actor("qa-1"))
        .await
        .unwrap();
    assert_eq!(done.status, Status::Completed, "{}", done.status_reason);
    assert_eq!(
        personas_in(&*store, "test").await,
        vec![("alice".into(), v1.clone())]
    );
    assert_eq!(
        personas_in(&*store, "dev").await,
        vec![("alice".into(), v2.clone())]
    );
    let record = store.get_persona(org, &shop(), &alice, None).await.unwrap();
    assert_eq!(record.served, vec![("test".to_owned(), 1)]);
    // A served persona cannot be deleted.
    let delete = store.delete_persona(org, &shop(), &alice, None).await;
    assert!(
        matches!(&delete, Err(StoreError::FailedPrecondition(m)) if m.contains("test (version 1)")),
        "{delete:?}"
    );
    // Test → prod moves what test serves; asking for another version is refused.
    let wrong = workflow::request(
        &*store,
        org,
        &shop(),
        NewPromotion {
            from: slug("test"),
            to: slug("prod"),
            ..persona(Some(2))
        },
    )
    .await;
    assert!(
        matches!(&wrong, Err(StoreError::FailedPrecondition(m)) if m.contains("test serves version 1 of persona 'alice', not 2")),
        "{wrong:?}"
    );

    // Roll back: test serves no alice again, recorded in the history.
    let back = workflow::roll_back(&*store, org, p.id, actor("qa-1"), "")
        .await
        .unwrap();
    assert_eq!(back.status, Status::RolledBack);
    assert!(personas_in(&*store, "test").await.is_empty());
    let releases = store
        .list_releases(org, &shop(), Some("test"), 10)
        .await
        .unwrap();
    let history: Vec<(EntityKind, &str, u32, u32, &str)> = releases
        .iter()
        .map(|r| {
            (
                r.entity,
                r.name.as_str(),
                r.version,
                r.previous_version,
                r.kind.as_str(),
            )
        })
        .collect();
    assert_eq!(
        history,
        vec![
            (EntityKind::Persona, "alice", 0, 1, "rollback"),
            (EntityKind::Persona, "alice", 1, 0, "promotion"),
        ]
    );

    // Settings: dev's reality level and latency go to test; test's
    // approvals stay as they were.
    store
        .update_environment(
            org,
            &shop(),
            &slug("dev"),
            &EnvironmentPatch {
                settings: Some(SettingsPatch {
                    values: EnvSettings {
                        reality: Some(4),
                        drift_budget: Some(9),
                        ..Default::default()
                    },
                    keys: vec![SettingKey::Reality, SettingKey::DriftBudget],
                }),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    let settings = NewPromotion {
        kind: EntityKind::Environment,
        name: slug("dev"),
        ..request("dev-1")
    };
    let before = test_settings(&*store, org).await;
    let s = workflow::request(&*store, org, &shop(), settings.clone())
        .await
        .unwrap();
    assert_eq!(s.settings.as_ref().unwrap().reality, Some(4));
    assert_eq!(
        s.settings.as_ref().unwrap().drift_budget,
        None,
        "governance does not travel"
    );
    assert!(
        s.diff
            .changed
            .iter()
            .any(|c| c.starts_with("settings.reality")),
        "{:?}",
        s.diff
    );
    // Dev changes after the request: the promotion moves what was asked for.
    store
        .update_environment(
            org,
            &shop(),
            &slug("dev"),
            &EnvironmentPatch {
                settings: Some(SettingsPatch {
                    values: EnvSettings {
                        reality: Some(5),
                        ..Default::default()
                    },
                    keys: vec![SettingKey::Reality],
                }),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    workflow::decide(&*store, org, s.id, decision("qa-1", true))
        .await
        .unwrap();
    let done = workflow::execute(&*store, org, s.id, actor("qa-1"))
        .await
        .unwrap();
    assert_eq!(done.status, Status::Completed, "{}", done.status_reason);
    let test = test_settings(&*store, org).await;
    assert_eq!(test.reality, Some(4));
    assert_eq!(
        test.drift_budget, before.drift_budget,
        "dev's budget of 9 stays in dev"
    );
    assert_eq!(test.approvals.as_ref().unwrap().required, 1);
    let again = workflow::request(
        &*store,
        org,
        &shop(),
        NewPromotion {
            version: None,
            ..settings.clone()
        },
    )
    .await;
    assert!(again.is_ok(), "dev moved on to 5: {again:?}");
    workflow::decide(&*store, org, again.unwrap().id, decision("qa-1", false))
        .await
        .unwrap();
    let back = workflow::roll_back(&*store, org, s.id, actor("qa-1"), "too slow")
        .await
        .unwrap();
    assert_eq!(back.status, Status::RolledBack);
    let test = test_settings(&*store, org).await;
    assert_eq!(test.reality, before.reality);
    assert_eq!(test.approvals.as_ref().unwrap().required, 1);
}
