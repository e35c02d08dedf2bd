//! The store contract for orgs: settings, quotas and their enforcement
//! (run on both backends by `contract_suite!` in `store_contract.rs`).

use std::sync::Arc;

use mockplane_control_plane::store::{
    NewPrincipal, OrgPatch, PrincipalKind, Store, StoreError, WorkspaceRef,
};
use mockplane_shared::governance::access::OrgRole;
use mockplane_shared::model::org::Quota;
use mockplane_shared::{NewWorkspace, ResponseSpec, RouteSpec};
use uuid::Uuid;

fn quotas(values: &[(Quota, Option<u32>)]) -> OrgPatch {
    OrgPatch {
        quotas: values.to_vec(),
        ..Default::default()
    }
}

fn user(email: &str) -> NewPrincipal {
    NewPrincipal {
        kind: PrincipalKind::User,
        email: Some(email.to_owned()),
        name: email.to_owned(),
        org_role: OrgRole::Member,
        password_hash: None,
        must_change_password: false,
    }
}

fn exceeded(error: StoreError, needle: &str) {
    match error {
        StoreError::LimitExceeded(message) => {
            assert!(
                message.contains(needle),
                "{message:?} should say {needle:?}"
            );
        }
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
}

pub async fn org_settings_and_quotas_hold(store: Arc<dyn Store>) {
    let org = store.create_org("initech").await.unwrap();
    let other = store.create_org("umbrella").await.unwrap();
    assert_eq!(store.find_org("initech").await.unwrap(), Some(org));
    assert_eq!(store.find_org(&org.to_string()).await.unwrap(), Some(org));
    assert_eq!(store.find_org("nobody").await.unwrap(), None);

    let fresh = store.get_org(org).await.unwrap();
    assert_eq!(fresh.name, "initech");
    assert_eq!(fresh.settings, Default::default());
    assert_eq!(fresh.usage.workspaces, 0);

    // A quota out of range changes nothing; a stale version neither.
    let error = store
        .update_org(org, &quotas(&[(Quota::Members, Some(0))]), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Invalid(field) if field.field == "settings.quotas.max_members"),
        "{error:?}"
    );
    let error = store
        .update_org(
            org,
            &quotas(&[(Quota::Members, Some(5))]),
            Some(fresh.version + 1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::EtagMismatch { .. }),
        "{error:?}"
    );
    assert_eq!(store.get_org(org).await.unwrap().version, fresh.version);

    let updated = store
        .update_org(
            org,
            &OrgPatch {
                display_name: Some("Initech".into()),
                members_create_workspaces: Some(Some(false)),
                quotas: vec![
                    (Quota::Workspaces, Some(1)),
                    (Quota::RoutesPerWorkspace, Some(2)),
                    (Quota::Members, Some(1)),
                ],
            },
            Some(fresh.version),
        )
        .await
        .unwrap();
    assert_eq!(updated.version, fresh.version + 1);
    assert!(!updated.settings.members_create_workspaces());
    assert_eq!(
        store.get_org(org).await.unwrap(),
        updated,
        "read back as written"
    );

    // Two workspaces created at once under a quota of one: exactly one is.
    let (a, b) = tokio::join!(
        store.create_workspace(org, NewWorkspace::parse("race-a", "", "").unwrap(), None),
        store.create_workspace(org, NewWorkspace::parse("race-b", "", "").unwrap(), None),
    );
    let (made, refused): (Vec<_>, Vec<_>) = [a, b].into_iter().partition(Result::is_ok);
    assert_eq!((made.len(), refused.len()), (1, 1));
    exceeded(
        refused.into_iter().next().unwrap().unwrap_err(),
        "max_workspaces is 1 and it has 1",
    );
    // Another org is not held to it.
    for slug in ["umb-a", "umb-b"] {
        store
            .create_workspace(other, NewWorkspace::parse(slug, "", "").unwrap(), None)
            .await
            .unwrap();
    }

    // Routes past the workspace quota: refused whole.
    let workspace = made.into_iter().next().unwrap().unwrap();
    let key = WorkspaceRef::Slug(workspace.slug.clone());
    let route = |path: &str| {
        RouteSpec::parse("", "GET", path, || {
            ResponseSpec::parse(200, Vec::new(), bytes::Bytes::from_static(b"x"))
        })
        .unwrap()
    };
    let error = store
        .create_routes(org, &key, vec![route("/a"), route("/b"), route("/c")])
        .await
        .unwrap_err();
    exceeded(error, "max_routes_per_workspace is 2");
    assert_eq!(store.get_workspace(org, &key).await.unwrap().route_count, 0);
    store
        .create_routes(org, &key, vec![route("/a"), route("/b")])
        .await
        .unwrap();

    // Members: the quota counts every principal.
    store
        .create_principal(org, user("a@initech.io"))
        .await
        .unwrap();
    exceeded(
        store
            .create_principal(org, user("b@initech.io"))
            .await
            .unwrap_err(),
        "max_members is 1 and it has 1",
    );
    assert_eq!(store.get_org(org).await.unwrap().usage.members, 1);

    // Back to the defaults.
    let reset = store
        .update_org(
            org,
            &quotas(&[(Quota::Workspaces, None), (Quota::Members, None)]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(reset.settings.quotas.get(Quota::Workspaces), 1_000);
    store
        .create_principal(org, user("b@initech.io"))
        .await
        .unwrap();
}

/// An org made with its owner in one transaction; paging by name.
pub async fn orgs_are_made_whole_and_listed_by_name(store: Arc<dyn Store>) {
    let first = store.create_org("aaa-first").await.unwrap();
    let owner = NewPrincipal {
        org_role: OrgRole::Owner,
        must_change_password: true,
        ..user("owner@bbb.io")
    };
    let (org, principal) = store
        .create_org_with_owner("bbb", "B & B", &owner, Some(first))
        .await
        .unwrap();
    assert_eq!(
        (org.name.as_str(), org.display_name.as_str()),
        ("bbb", "B & B")
    );
    assert_eq!(org.usage.members, 1);
    assert_eq!(principal.org_id, org.id);
    assert!(principal.must_change_password && !principal.platform_admin);
    // A taken e-mail: no org is left behind; a taken name likewise.
    let error = store
        .create_org_with_owner("ccc", "", &owner, Some(first))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::AlreadyExists(_)), "{error:?}");
    assert_eq!(store.find_org("ccc").await.unwrap(), None);
    let error = store
        .create_org_with_owner("bbb", "", &user("new@bbb.io"), Some(first))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::AlreadyExists(_)), "{error:?}");
    assert!(store.find_login("new@bbb.io").await.unwrap().is_none());
    // Both orgs' trails have the creation.
    for org in [first, org.id] {
        let events = store
            .list_audit(org, &Default::default(), None, 10)
            .await
            .unwrap();
        assert!(
            events.items.iter().any(|e| e.action == "org.create"),
            "{events:?}"
        );
    }
    store.create_org("ddd").await.unwrap();
    let page = store.list_orgs(None, 2).await.unwrap();
    let names: Vec<&str> = page.items.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["aaa-first", "bbb"]);
    let rest = store.list_orgs(page.next, 2).await.unwrap();
    assert_eq!(rest.items.len(), 1);
    assert_eq!(rest.items[0].name, "ddd");
    assert!(rest.next.is_none());
}

pub async fn deleting_an_org_removes_it_and_keeps_its_chain(store: Arc<dyn Store>) {
    let boot = store
        .bootstrap(
            "platform",
            &NewPrincipal {
                org_role: OrgRole::Owner,
                ..user("root@platform.io")
            },
            "root-hash",
        )
        .await
        .unwrap()
        .unwrap();
    let owner = NewPrincipal {
        org_role: OrgRole::Owner,
        ..user("owner@doomed.io")
    };
    let (doomed, _) = store
        .create_org_with_owner("doomed", "Doomed Inc", &owner, Some(boot.org_id))
        .await
        .unwrap();
    let kept = store.create_org("kept").await.unwrap();
    let mut workspaces = Vec::new();
    for (org, slug) in [
        (doomed.id, "shop"),
        (doomed.id, "blog"),
        (kept, "kept-shop"),
    ] {
        let id = store
            .create_workspace(org, NewWorkspace::parse(slug, "", "").unwrap(), None)
            .await
            .unwrap()
            .id;
        store
            .create_routes(org, &WorkspaceRef::Id(id), vec![route("/one")])
            .await
            .unwrap();
        workspaces.push(id);
    }
    let member = store
        .create_principal(doomed.id, user("dev@doomed.io"))
        .await
        .unwrap();
    store
        .create_api_token(doomed.id, member.id, "ci", "doomed-token", None)
        .await
        .unwrap();
    let before = store.current_revision().await.unwrap();
    let seen = store.get_org(doomed.id).await.unwrap();

    // A reason is required; a stale etag changes nothing.
    let error = store
        .delete_org(doomed.id, " bye ", Some(boot.org_id), None)
        .await
        .unwrap_err();
    match error {
        StoreError::Invalid(field) => assert_eq!(field.field, "reason"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    let error = store
        .delete_org(
            doomed.id,
            "customer closed the account",
            None,
            Some(seen.version + 1),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, StoreError::EtagMismatch { .. }),
        "{error:?}"
    );
    assert_eq!(store.get_org(doomed.id).await.unwrap().usage.workspaces, 2);

    let deleted = store
        .delete_org(
            doomed.id,
            "  customer closed the account ",
            Some(boot.org_id),
            Some(seen.version),
        )
        .await
        .unwrap();
    assert_eq!(deleted.name, "doomed");
    assert_eq!(
        (
            deleted.usage.workspaces,
            deleted.usage.api_keys,
            deleted.usage.members
        ),
        (2, 0, 2)
    );
    assert!(deleted.audit_events_pruned >= 5, "{deleted:?}");

    // Gone for every look-up, its people and tokens with it.
    assert!(matches!(
        store.get_org(doomed.id).await.unwrap_err(),
        StoreError::NotFound(_)
    ));
    assert_eq!(store.find_org("doomed").await.unwrap(), None);
    assert_eq!(store.find_org(&doomed.id.to_string()).await.unwrap(), None);
    assert!(store.find_token("doomed-token").await.unwrap().is_none());
    assert!(store.find_login("owner@doomed.io").await.unwrap().is_none());
    let names: Vec<String> = store
        .list_orgs(None, 10)
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names, ["kept", "platform"]);
    assert!(
        store
            .org_ids()
            .await
            .unwrap()
            .iter()
            .all(|o| *o != doomed.id)
    );
    // Nothing more is written into it, whoever was let in before.
    let error = store
        .create_workspace(
            doomed.id,
            NewWorkspace::parse("late", "", "").unwrap(),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::NotFound(_)), "{error:?}");
    assert!(matches!(
        store
            .create_principal(doomed.id, user("late@doomed.io"))
            .await
            .unwrap_err(),
        StoreError::NotFound(_)
    ));
    // Twice is not found; the name is not given out again.
    assert!(matches!(
        store
            .delete_org(doomed.id, "customer closed the account", None, None)
            .await
            .unwrap_err(),
        StoreError::NotFound(_)
    ));
    let error = store
        .create_org_with_owner("doomed", "", &user("new@doomed.io"), None)
        .await
        .unwrap_err();
    match error {
        StoreError::AlreadyExists(message) => {
            assert!(message.contains("deleted"), "{message}");
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }

    // Nodes are told: each of its workspaces changed, to nothing; the
    // other org's is untouched.
    let changes = store.config_changes_since(before).await.unwrap();
    let mut gone: Vec<Uuid> = changes
        .changed
        .iter()
        .filter(|(_, config)| config.is_none())
        .map(|(id, _)| *id)
        .collect();
    gone.sort();
    let mut expected = workspaces[..2].to_vec();
    expected.sort();
    assert_eq!(gone, expected);
    assert!(changes.changed.iter().all(|(id, _)| *id != workspaces[2]));
    let config = store.load_config().await.unwrap();
    assert_eq!(
        config.workspaces.len(),
        1,
        "only kept's workspace is served"
    );

    // The chain still verifies; every event is pruned but the deletion,
    // which says why and who.
    assert_eq!(store.verify_audit(doomed.id).await.unwrap().broken, None);
    let events = store
        .list_audit(doomed.id, &Default::default(), None, 100)
        .await
        .unwrap()
        .items;
    let (last, rest) = events.split_first().unwrap();
    assert_eq!(last.action, "org.delete");
    assert_eq!(last.reason, "customer closed the account");
    assert_eq!(last.pruned, 0);
    assert!(rest.iter().all(|e| e.pruned == 1 && e.summary.is_empty()));
    assert_eq!(rest.len() as u64, deleted.audit_events_pruned);
    // The deleter's org has it on record too.
    let platform = store
        .list_audit(boot.org_id, &Default::default(), None, 1)
        .await
        .unwrap()
        .items;
    assert_eq!(platform[0].action, "org.delete");
    assert_eq!(platform[0].reason, "customer closed the account");

    // The org holding the platform's only admins cannot go.
    let error = store
        .delete_org(boot.org_id, "tidying up the platform", None, None)
        .await
        .unwrap_err();
    match error {
        StoreError::FailedPrecondition(message) => {
            assert!(message.contains("platform admin"), "{message}");
        }
        other => panic!("expected FailedPrecondition, got {other:?}"),
    }
    assert!(store.find_token("root-hash").await.unwrap().is_some());
    // The kept org can, with nothing of it left to serve.
    store
        .delete_org(kept, "kept was a test org only", None, None)
        .await
        .unwrap();
    assert!(store.load_config().await.unwrap().workspaces.is_empty());
}

fn route(path: &str) -> RouteSpec {
    RouteSpec::parse("", "GET", path, || {
        ResponseSpec::parse(200, vec![], bytes::Bytes::from_static(b"ok"))
    })
    .unwrap()
}
