//! The store contract for orgs: settings, quotas and their enforcement
//! (run on both backends by `contract_suite!` in `store_contract.rs`).

use std::sync::Arc;

use mockplane_control_plane::store::{
    NewPrincipal, OrgPatch, PrincipalKind, Store, StoreError, WorkspaceRef,
};
use mockplane_shared::governance::access::OrgRole;
use mockplane_shared::model::org::Quota;
use mockplane_shared::{NewWorkspace, ResponseSpec, RouteSpec};

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
        matches!(&error, StoreError::Invalid(field) if field.field == "quotas.max_members"),
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
