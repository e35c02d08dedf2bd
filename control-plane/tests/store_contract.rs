//! One store contract, run against both backends: every test below runs once
//! on SQLite (a fresh file opened the way the control plane opens it) and
//! once on PostgreSQL (a fresh database per test, from `#[sqlx::test]`;
//! `make test` starts the server and sets `DATABASE_URL`).

use std::sync::Arc;

use bytes::Bytes;
use mockplane_control_plane::store::{
    AccessGrant, EnvironmentPatch, NewEnvironment, NewPrincipal, PrincipalKind, PrincipalPatch,
    RefreshOutcome, RoleRecord, Store, StoreError, WorkspaceRecord, WorkspaceRef,
};
use mockplane_shared::governance::access::{OrgRole, Permission};
use mockplane_shared::model::environment::{SettingKey, SettingsPatch};
use mockplane_shared::model::realism::{Chaos, Latency};
use mockplane_shared::model::scenario::{NewScenario, ScenarioPatch, parse_tags};
use mockplane_shared::{
    EnvSettings, NewWorkspace, ResponseSpec, RoutePatch, RouteSpec, Slug, WorkspacePatch,
};
use uuid::Uuid;

mod contract {
    use super::*;

    fn route(method: &str, path: &str, body: &str) -> RouteSpec {
        RouteSpec::parse("", method, path, || {
            ResponseSpec::parse(
                200,
                vec![("content-type".into(), "text/plain".into())],
                Bytes::from(body.to_owned()),
            )
        })
        .unwrap()
    }

    fn slug_ref(slug: &str) -> WorkspaceRef {
        WorkspaceRef::Slug(Slug::parse(slug).unwrap())
    }

    async fn org(store: &dyn Store) -> Uuid {
        store
            .create_org(&format!("org-{}", Uuid::new_v4()))
            .await
            .unwrap()
    }

    async fn workspace(store: &dyn Store, org: Uuid, slug: &str) -> Uuid {
        store
            .create_workspace(org, NewWorkspace::parse(slug, "", "").unwrap(), None)
            .await
            .unwrap()
            .id
    }

    fn admin(email: &str) -> NewPrincipal {
        NewPrincipal {
            kind: PrincipalKind::User,
            email: Some(email.to_owned()),
            name: "admin".into(),
            org_role: OrgRole::Owner,
            password_hash: Some("phc".into()),
            must_change_password: false,
        }
    }

    pub async fn bootstrap_happens_once(store: Arc<dyn Store>) {
        let first = store
            .bootstrap("default", &admin("Admin@Example.com"), "hash-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.org_name, "default");
        assert!(
            store
                .bootstrap("default", &admin("other@example.com"), "hash-2")
                .await
                .unwrap()
                .is_none()
        );
        let principal = store.find_token("hash-1").await.unwrap().unwrap();
        assert_eq!(principal.org_id, first.org_id);
        assert_eq!(principal.id, first.admin_id);
        assert_eq!(principal.org_role, OrgRole::Owner);
        assert!(
            principal.platform_admin,
            "the first run's owner is platform admin"
        );
        assert!(store.find_token("hash-2").await.unwrap().is_none());
        // E-mails are kept lowercased and found in any case.
        let (login, hash) = store
            .find_login("admin@EXAMPLE.com")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(login.id, first.admin_id);
        assert_eq!(hash.as_deref(), Some("phc"));

        store.add_token("default", "ci", "hash-3").await.unwrap();
        let ci = store.find_token("hash-3").await.unwrap().unwrap();
        assert_eq!(ci.kind, PrincipalKind::Service);
        assert_eq!(ci.org_role, OrgRole::Owner);
        assert!(
            ci.platform_admin,
            "a replacement admin token keeps the role"
        );
        store.create_org("globex").await.unwrap();
        store.add_token("globex", "owner", "hash-5").await.unwrap();
        let other = store.find_token("hash-5").await.unwrap().unwrap();
        assert!(!other.platform_admin, "another org's owner is not");
        assert!(matches!(
            store.add_token("nope", "ci", "hash-4").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.create_org("default").await,
            Err(StoreError::AlreadyExists(_))
        ));
    }

    pub async fn workspace_lifecycle(store: Arc<dyn Store>) {
        let org = org(&*store).await;
        let created = store
            .create_workspace(
                org,
                NewWorkspace::parse("demo", "Demo", "first").unwrap(),
                None,
            )
            .await
            .unwrap();
        assert_eq!((created.name.as_str(), created.version), ("Demo", 1));

        let by_id = store
            .get_workspace(org, &WorkspaceRef::Id(created.id))
            .await
            .unwrap();
        let by_slug = store.get_workspace(org, &slug_ref("demo")).await.unwrap();
        assert_eq!(by_id, by_slug);
        assert_eq!(by_id.description, "first");

        let patch = WorkspacePatch {
            name: Some("Renamed".into()),
            ..Default::default()
        };
        let updated = store
            .update_workspace(org, &slug_ref("demo"), &patch, Some(1))
            .await
            .unwrap();
        assert_eq!((updated.name.as_str(), updated.version), ("Renamed", 2));
        assert_eq!(updated.description, "first");

        // A stale version is refused and changes nothing.
        let stale = store
            .update_workspace(org, &slug_ref("demo"), &patch, Some(1))
            .await;
        assert!(
            matches!(stale, Err(StoreError::EtagMismatch { ref current, .. }) if current == "2")
        );
        assert!(matches!(
            store
                .delete_workspace(org, &slug_ref("demo"), Some(1))
                .await,
            Err(StoreError::EtagMismatch { .. })
        ));

        let moved = WorkspacePatch {
            slug: Some(Slug::parse("demo-2").unwrap()),
            ..Default::default()
        };
        store
            .update_workspace(org, &slug_ref("demo"), &moved, None)
            .await
            .unwrap();
        assert!(matches!(
            store.get_workspace(org, &slug_ref("demo")).await,
            Err(StoreError::NotFound(_))
        ));
        store
            .delete_workspace(org, &slug_ref("demo-2"), Some(3))
            .await
            .unwrap();
        assert!(matches!(
            store
                .get_workspace(org, &WorkspaceRef::Id(created.id))
                .await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store
                .delete_workspace(org, &WorkspaceRef::Id(created.id), None)
                .await,
            Err(StoreError::NotFound(_))
        ));
    }

    pub async fn slugs_are_unique_across_orgs(store: Arc<dyn Store>) {
        let (a, b) = (org(&*store).await, org(&*store).await);
        workspace(&*store, a, "taken").await;
        let err = store
            .create_workspace(b, NewWorkspace::parse("taken", "", "").unwrap(), None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::AlreadyExists(ref m) if m.contains("'taken'")),
            "{err}"
        );
        workspace(&*store, b, "other").await;
        let rename = WorkspacePatch {
            slug: Some(Slug::parse("taken").unwrap()),
            ..Default::default()
        };
        assert!(matches!(
            store
                .update_workspace(b, &slug_ref("other"), &rename, None)
                .await,
            Err(StoreError::AlreadyExists(_))
        ));
    }

    pub async fn orgs_are_isolated(store: Arc<dyn Store>) {
        let (a, b) = (org(&*store).await, org(&*store).await);
        let id = workspace(&*store, a, "mine").await;
        store
            .create_routes(a, &slug_ref("mine"), vec![route("GET", "/x", "x")])
            .await
            .unwrap();
        for key in [WorkspaceRef::Id(id), slug_ref("mine")] {
            assert!(matches!(
                store.get_workspace(b, &key).await,
                Err(StoreError::NotFound(_))
            ));
            assert!(matches!(
                store.list_routes(b, &key, None, 10).await,
                Err(StoreError::NotFound(_))
            ));
            assert!(matches!(
                store
                    .create_routes(b, &key, vec![route("GET", "/y", "y")])
                    .await,
                Err(StoreError::NotFound(_))
            ));
            assert!(matches!(
                store.delete_workspace(b, &key, None).await,
                Err(StoreError::NotFound(_))
            ));
        }
        assert!(
            store
                .list_workspaces(b, None, None, 10)
                .await
                .unwrap()
                .items
                .is_empty()
        );
    }

    pub async fn workspaces_page_by_slug(store: Arc<dyn Store>) {
        let org = org(&*store).await;
        for slug in ["e", "c", "a", "d", "b"] {
            workspace(&*store, org, slug).await;
        }
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        let mut pages = 0;
        loop {
            let page = store
                .list_workspaces(org, None, after.as_deref(), 2)
                .await
                .unwrap();
            pages += 1;
            seen.extend(page.items.iter().map(|w| w.slug.to_string()));
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, ["a", "b", "c", "d", "e"]);
        assert_eq!(pages, 3);
    }

    pub async fn route_lifecycle(store: Arc<dyn Store>) {
        let org = org(&*store).await;
        let ws = workspace(&*store, org, "api").await;
        let created = store
            .create_routes(
                org,
                &slug_ref("api"),
                vec![
                    route("GET", "/users/{id}", "user"),
                    route("POST", "/users", "made"),
                    route("GET", "/", "root"),
                ],
            )
            .await
            .unwrap();
        assert_eq!(created.len(), 3);

        let listed = store
            .list_routes(org, &WorkspaceRef::Id(ws), None, 100)
            .await
            .unwrap();
        let ids: Vec<Uuid> = listed.items.iter().map(|r| r.id).collect();
        assert_eq!(
            ids,
            created.iter().map(|r| r.id).collect::<Vec<_>>(),
            "creation order"
        );
        assert_eq!(listed.items[0].spec, created[0].spec);
        assert_eq!(
            store
                .get_workspace(org, &slug_ref("api"))
                .await
                .unwrap()
                .route_count,
            3
        );

        let page = store
            .list_routes(org, &slug_ref("api"), None, 2)
            .await
            .unwrap();
        assert_eq!(page.items.len(), 2);
        let rest = store
            .list_routes(org, &slug_ref("api"), page.next, 2)
            .await
            .unwrap();
        assert_eq!(rest.items.len(), 1);
        assert!(rest.next.is_none());

        let patch = RoutePatch {
            status: Some(201),
            body: Some(Bytes::from_static(b"changed")),
            ..Default::default()
        };
        let updated = store
            .update_route(org, &slug_ref("api"), created[1].id, &patch, Some(1))
            .await
            .unwrap();
        assert_eq!(updated.spec.response.status, 201);
        assert_eq!(updated.spec.response.body, Bytes::from_static(b"changed"));
        assert_eq!(updated.spec.path.as_str(), "/users");
        assert_eq!(updated.version, 2);
        assert_eq!(
            store
                .get_route(org, &slug_ref("api"), created[1].id)
                .await
                .unwrap(),
            updated
        );
        assert!(matches!(
            store
                .update_route(org, &slug_ref("api"), created[1].id, &patch, Some(1))
                .await,
            Err(StoreError::EtagMismatch { .. })
        ));
        // An update that breaks a rule is refused with the field named.
        let bad = RoutePatch {
            status: Some(204),
            ..Default::default()
        };
        assert!(matches!(
            store.update_route(org, &slug_ref("api"), created[1].id, &bad, None).await,
            Err(StoreError::Invalid(ref e)) if e.field == "response.body"
        ));

        // Deleting is all or nothing.
        let unknown = Uuid::now_v7();
        assert!(matches!(
            store
                .delete_routes(org, &slug_ref("api"), &[created[0].id, unknown])
                .await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(
            store
                .list_routes(org, &slug_ref("api"), None, 10)
                .await
                .unwrap()
                .items
                .len(),
            3
        );
        assert_eq!(
            store
                .delete_routes(org, &slug_ref("api"), &[created[0].id, created[2].id])
                .await
                .unwrap(),
            2
        );
        let left = store
            .list_routes(org, &slug_ref("api"), None, 10)
            .await
            .unwrap();
        assert_eq!(
            left.items.iter().map(|r| r.id).collect::<Vec<_>>(),
            [created[1].id]
        );
        assert!(matches!(
            store.get_route(org, &slug_ref("api"), created[0].id).await,
            Err(StoreError::NotFound(_))
        ));
    }

    pub async fn clashing_routes_are_refused_atomically(store: Arc<dyn Store>) {
        let org = org(&*store).await;
        workspace(&*store, org, "clash").await;
        store
            .create_routes(org, &slug_ref("clash"), vec![route("GET", "/a/{id}", "a")])
            .await
            .unwrap();
        let err = store
            .create_routes(
                org,
                &slug_ref("clash"),
                vec![route("GET", "/fresh", "f"), route("GET", "/a/{other}", "b")],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::AlreadyExists(ref m) if m.starts_with("routes[1]")),
            "{err}"
        );
        let routes = store
            .list_routes(org, &slug_ref("clash"), None, 10)
            .await
            .unwrap();
        assert_eq!(
            routes.items.len(),
            1,
            "nothing of the failed batch was kept"
        );

        // Moving a route onto another's path clashes too.
        let b = store
            .create_routes(org, &slug_ref("clash"), vec![route("GET", "/b", "b")])
            .await
            .unwrap();
        let onto = RoutePatch {
            path: Some("/a/{x}".into()),
            ..Default::default()
        };
        assert!(matches!(
            store
                .update_route(org, &slug_ref("clash"), b[0].id, &onto, None)
                .await,
            Err(StoreError::AlreadyExists(_))
        ));
    }

    pub async fn workspace_limits_hold(store: Arc<dyn Store>) {
        let org = org(&*store).await;
        workspace(&*store, org, "big").await;
        let body = "x".repeat(1024 * 1024);
        let routes: Vec<RouteSpec> = (0..16)
            .map(|i| route("GET", &format!("/b{i}"), &body))
            .collect();
        store
            .create_routes(org, &slug_ref("big"), routes)
            .await
            .unwrap();
        let err = store
            .create_routes(
                org,
                &slug_ref("big"),
                vec![route("GET", "/one-more", &body)],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::LimitExceeded(ref m) if m.contains("bytes")),
            "{err}"
        );
        assert_eq!(
            store
                .get_workspace(org, &slug_ref("big"))
                .await
                .unwrap()
                .route_count,
            16
        );

        workspace(&*store, org, "many").await;
        let limit = mockplane_shared::model::config::MAX_ROUTES_PER_WORKSPACE;
        let routes: Vec<RouteSpec> = (0..=limit)
            .map(|i| route("GET", &format!("/r{i}"), ""))
            .collect();
        let err = store
            .create_routes(org, &slug_ref("many"), routes)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::LimitExceeded(ref m) if m.contains("routes")),
            "{err}"
        );
        assert_eq!(
            store
                .get_workspace(org, &slug_ref("many"))
                .await
                .unwrap()
                .route_count,
            0
        );
    }

    /// The snapshot cache hears of this replica's config changes from the
    /// store itself: the commit of every transaction that bumped the
    /// revision wakes the watchers before the write returns; a failed
    /// write, or one that changes nothing served, wakes nobody.
    pub async fn config_commits_wake_the_watchers(store: Arc<dyn Store>) {
        let org = org(&*store).await;
        let (woken, mut wakes) = tokio::sync::mpsc::unbounded_channel();
        let stop = tokio_util::sync::CancellationToken::new();
        let watcher = tokio::spawn({
            let store = store.clone();
            let stop = stop.clone();
            async move {
                store
                    .watch_config_changes(
                        Arc::new(move || {
                            let _ = woken.send(());
                        }),
                        stop,
                    )
                    .await;
            }
        });
        // Until the watcher is registered, keep changing something.
        let mut n = 0;
        loop {
            assert!(n < 100, "{n} committed workspaces woke nobody");
            workspace(&*store, org, &format!("wake-{n}")).await;
            n += 1;
            if tokio::time::timeout(std::time::Duration::from_millis(100), wakes.recv())
                .await
                .is_ok()
            {
                break;
            }
        }
        // Only PostgreSQL has a second, later signal (LISTEN): on SQLite
        // every wake is this replica's own, so none may be missing or extra.
        let exact = store.backend() == "sqlite";
        let drain = |wakes: &mut tokio::sync::mpsc::UnboundedReceiver<()>| {
            let mut count = 0;
            while wakes.try_recv().is_ok() {
                count += 1;
            }
            count
        };
        drain(&mut wakes);

        store
            .create_routes(org, &slug_ref("wake-0"), vec![route("GET", "/a", "a")])
            .await
            .unwrap();
        let after_write = drain(&mut wakes);
        assert!(after_write >= 1, "a committed route change woke nobody");
        if exact {
            assert_eq!(after_write, 1);
        }

        store
            .create_routes(org, &slug_ref("wake-0"), vec![route("GET", "/a", "dup")])
            .await
            .unwrap_err();
        let someone = store
            .create_principal(org, admin("someone@example.com"))
            .await
            .unwrap();
        store
            .update_principal(
                org,
                someone.id,
                &PrincipalPatch {
                    name: Some("renamed".into()),
                    org_role: None,
                    disabled: None,
                },
                None,
            )
            .await
            .unwrap();
        if exact {
            assert_eq!(
                drain(&mut wakes),
                0,
                "a failed write or one that changes nothing served woke the watchers"
            );
        }

        stop.cancel();
        watcher.await.unwrap();
        store
            .create_routes(org, &slug_ref("wake-0"), vec![route("GET", "/b", "b")])
            .await
            .unwrap();
        if exact {
            assert_eq!(
                drain(&mut wakes),
                0,
                "a watcher that stopped is still woken"
            );
        }
    }

    pub async fn every_serving_change_bumps_the_revision(store: Arc<dyn Store>) {
        let org = org(&*store).await;
        let start = store.current_revision().await.unwrap();
        let ws = workspace(&*store, org, "rev").await;
        let r1 = store.current_revision().await.unwrap();
        assert_eq!(r1, start + 1);

        let routes = store
            .create_routes(org, &slug_ref("rev"), vec![route("GET", "/a", "a")])
            .await
            .unwrap();
        let r2 = store.current_revision().await.unwrap();
        assert_eq!(r2, r1 + 1);

        let changes = store.config_changes_since(r1).await.unwrap();
        assert_eq!(changes.revision, r2);
        assert_eq!(changes.changed.len(), 1);
        let (id, config) = &changes.changed[0];
        assert_eq!(*id, ws);
        let config = config.as_ref().unwrap().as_ref().unwrap();
        assert_eq!(config.slug.as_str(), "rev");
        assert_eq!(config.active_routes().len(), 1);
        assert_eq!(config.active_routes()[0].id, routes[0].id);

        // A failed change bumps nothing.
        let _ = store
            .create_routes(org, &slug_ref("rev"), vec![route("GET", "/a", "dup")])
            .await
            .unwrap_err();
        assert_eq!(store.current_revision().await.unwrap(), r2);

        store
            .delete_workspace(org, &WorkspaceRef::Id(ws), None)
            .await
            .unwrap();
        let r3 = store.current_revision().await.unwrap();
        assert_eq!(r3, r2 + 1);
        let changes = store.config_changes_since(r2).await.unwrap();
        assert!(matches!(changes.changed.as_slice(), [(id, None)] if *id == ws));

        let history = store.change_history(start).await.unwrap();
        assert_eq!(history.complete_after, start);
        assert_eq!(history.entries, vec![(r1, ws), (r2, ws), (r3, ws)]);
        assert!(
            store
                .config_changes_since(r3)
                .await
                .unwrap()
                .changed
                .is_empty()
        );
    }

    pub async fn load_config_is_the_whole_serving_state(store: Arc<dyn Store>) {
        let org = org(&*store).await;
        workspace(&*store, org, "one").await;
        workspace(&*store, org, "two").await;
        store
            .create_routes(
                org,
                &slug_ref("two"),
                vec![route("GET", "/a", "a"), route("PUT", "/a", "b")],
            )
            .await
            .unwrap();
        let config = store.load_config().await.unwrap();
        assert_eq!(config.revision, store.current_revision().await.unwrap());
        assert!(config.invalid.is_empty());
        let mut slugs: Vec<(&str, usize)> = config
            .workspaces
            .iter()
            .map(|w| (w.slug.as_str(), w.active_routes().len()))
            .collect();
        slugs.sort();
        assert_eq!(slugs, [("one", 0), ("two", 2)]);
    }

    pub async fn matchers_and_priorities_are_stored_and_keyed(store: Arc<dyn Store>) {
        let org = org(&*store).await;
        workspace(&*store, org, "m").await;
        let with = |matcher: serde_json::Value, priority: u32| {
            route("GET", "/u/{id:int}", "x")
                .matching(serde_json::from_value(matcher).unwrap(), priority)
                .unwrap()
        };
        let tenant = serde_json::json!({
            "headers": [{ "name": "x-tenant", "regex": "^t-[0-9]+$", "ignoreCase": true }],
            "body": [{ "json": { "a": [1, 2] }, "ignoreArrayOrder": true }, { "jsonPath": "$.b" }],
        });
        let created = store
            .create_routes(
                org,
                &slug_ref("m"),
                vec![
                    route("GET", "/u/{id:int}", "plain"),
                    with(tenant.clone(), 0),
                    // Same matchers, another priority: a different route.
                    with(tenant.clone(), 2),
                ],
            )
            .await
            .unwrap();
        let listed = store
            .list_routes(org, &slug_ref("m"), None, 10)
            .await
            .unwrap();
        let specs: Vec<&RouteSpec> = listed.items.iter().map(|r| &r.spec).collect();
        assert_eq!(specs, created.iter().map(|r| &r.spec).collect::<Vec<_>>());
        assert_eq!(specs[2].priority, 2);
        let config = store.load_config().await.unwrap();
        let served = config.workspaces[0].active_routes();
        assert_eq!(served[1].spec.matcher, specs[1].matcher);

        // The same matchers listed in another order clash.
        let mut reordered = with(tenant, 0);
        reordered.matcher.body.reverse();
        let err = store
            .create_routes(org, &slug_ref("m"), vec![reordered])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists(_)), "{err}");

        // A patch may change matchers and priority; the result is checked.
        let patch = RoutePatch {
            priority: Some(1),
            matcher: Some(Default::default()),
            ..Default::default()
        };
        let updated = store
            .update_route(org, &slug_ref("m"), created[2].id, &patch, None)
            .await
            .unwrap();
        assert!(updated.spec.matcher.is_empty());
        assert_eq!(updated.spec.priority, 1);

        // Templates are stored as such and checked when set.
        let templated = RoutePatch {
            body: Some(Bytes::from_static(b"id {{request.params.id}}")),
            template: Some(true),
            ..Default::default()
        };
        store
            .update_route(org, &slug_ref("m"), created[2].id, &templated, None)
            .await
            .unwrap();
        let stored = store
            .get_route(org, &slug_ref("m"), created[2].id)
            .await
            .unwrap();
        assert!(stored.spec.response.template);
        let broken = RoutePatch {
            body: Some(Bytes::from_static(b"{{request.params.nope}}")),
            ..Default::default()
        };
        let err = store
            .update_route(org, &slug_ref("m"), created[2].id, &broken, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no parameter {nope}"), "{err}");
        let bad = RoutePatch {
            priority: Some(5000),
            ..Default::default()
        };
        let err = store
            .update_route(org, &slug_ref("m"), created[2].id, &bad, None)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("priority"), "{err}");
    }

    fn names(record: &WorkspaceRecord) -> Vec<(String, u32)> {
        record
            .environments
            .iter()
            .map(|e| (e.name.to_string(), e.position))
            .collect()
    }

    fn env(name: &str) -> Slug {
        Slug::parse(name).unwrap()
    }

    pub async fn environments_follow_the_chain(store: Arc<dyn Store>) {
        let org = org(&*store).await;
        let created = store
            .create_workspace(org, NewWorkspace::parse("envs", "", "").unwrap(), None)
            .await
            .unwrap();
        assert_eq!(
            names(&created),
            [("dev".into(), 1), ("test".into(), 2), ("prod".into(), 3)]
        );
        assert_eq!(created.active_environment.as_str(), "dev");
        assert_eq!(created.chain().describe(), "dev → test → prod");
        let prod = created.environment("prod").unwrap();
        assert_eq!(prod.settings.reason_required, Some(true));
        assert_eq!(prod.settings.drift_budget, Some(0));
        assert_eq!(
            store.get_workspace(org, &slug_ref("envs")).await.unwrap(),
            created
        );
        let listed = store.list_workspaces(org, None, None, 10).await.unwrap();
        assert_eq!(listed.items, std::slice::from_ref(&created));

        store
            .create_routes(org, &slug_ref("envs"), vec![route("GET", "/a", "a")])
            .await
            .unwrap();

        // A staging step between test and prod, and a sandbox off the chain.
        let staged = store
            .create_environment(
                org,
                &slug_ref("envs"),
                NewEnvironment {
                    name: env("staging"),
                    settings: EnvSettings {
                        reality: Some(5),
                        ..Default::default()
                    },
                    position: 3,
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(staged.chain().describe(), "dev → test → staging → prod");
        let sandboxed = store
            .create_environment(
                org,
                &slug_ref("envs"),
                NewEnvironment {
                    name: env("sandbox"),
                    settings: EnvSettings::default(),
                    position: 0,
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            sandboxed.environments.last().unwrap().name.as_str(),
            "sandbox"
        );
        assert_eq!(sandboxed.chain().steps().len(), 4);

        // Bad requests change nothing.
        let again = store
            .create_environment(
                org,
                &slug_ref("envs"),
                NewEnvironment {
                    name: env("dev"),
                    settings: EnvSettings::default(),
                    position: 0,
                },
                None,
            )
            .await;
        assert!(
            matches!(again, Err(StoreError::AlreadyExists(_))),
            "{again:?}"
        );
        let far = store
            .create_environment(
                org,
                &slug_ref("envs"),
                NewEnvironment {
                    name: env("far"),
                    settings: EnvSettings::default(),
                    position: 9,
                },
                None,
            )
            .await;
        assert!(
            matches!(&far, Err(StoreError::Invalid(e)) if e.field == "chain_position"),
            "{far:?}"
        );
        let bad_settings = store
            .create_environment(
                org,
                &slug_ref("envs"),
                NewEnvironment {
                    name: env("bad"),
                    settings: EnvSettings {
                        reality: Some(9),
                        ..Default::default()
                    },
                    position: 0,
                },
                None,
            )
            .await;
        assert!(
            matches!(&bad_settings, Err(StoreError::Invalid(e)) if e.field == "settings.reality"),
            "{bad_settings:?}"
        );

        // Settings change field by field; renaming keeps the place.
        let patched = store
            .update_environment(
                org,
                &slug_ref("envs"),
                &env("test"),
                &EnvironmentPatch {
                    name: Some(env("qa")),
                    settings: Some(SettingsPatch {
                        values: EnvSettings {
                            chaos: Some(Chaos {
                                rate: 0.5,
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        keys: vec![SettingKey::Chaos],
                    }),
                },
                Some(1),
            )
            .await
            .unwrap();
        let qa = patched.environment("qa").unwrap();
        assert_eq!(qa.position, 2);
        assert_eq!(qa.settings.reality, Some(3), "untouched");
        assert_eq!(qa.settings.chaos.as_ref().unwrap().rate, 0.5);
        let stale = store
            .update_environment(
                org,
                &slug_ref("envs"),
                &env("qa"),
                &EnvironmentPatch::default(),
                Some(1),
            )
            .await;
        assert!(
            matches!(stale, Err(StoreError::EtagMismatch { .. })),
            "{stale:?}"
        );
        let missing = store
            .update_environment(
                org,
                &slug_ref("envs"),
                &env("test"),
                &EnvironmentPatch::default(),
                None,
            )
            .await;
        assert!(
            matches!(&missing, Err(StoreError::NotFound(m)) if m.contains("qa")),
            "the error lists what exists: {missing:?}"
        );

        // The serving config: working copies in the first environment,
        // each environment's realism merged over the workspace defaults.
        let defaults = store
            .update_workspace(
                org,
                &slug_ref("envs"),
                &WorkspacePatch {
                    environment_defaults: Some(SettingsPatch::replace(EnvSettings {
                        latency: Some(Latency {
                            fixed: Some(7),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })),
                    ..Default::default()
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            defaults.environment_defaults.latency.unwrap().fixed,
            Some(7)
        );
        let full = store.load_config().await.unwrap();
        let served = full
            .workspaces
            .iter()
            .find(|w| w.slug.as_str() == "envs")
            .unwrap();
        let order: Vec<&str> = served
            .environments
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(order, ["dev", "qa", "staging", "prod", "sandbox"]);
        assert_eq!(served.environments[0].routes.len(), 1);
        assert!(served.environments[1..].iter().all(|e| e.routes.is_empty()));
        let qa = served.environment("qa").unwrap();
        assert_eq!(
            qa.realism.chaos.as_ref().unwrap().rate,
            0.5,
            "its own chaos"
        );
        assert_eq!(
            qa.realism.latency.unwrap().fixed,
            Some(7),
            "the workspace's latency"
        );
        let sandbox = served.environment("sandbox").unwrap();
        assert_eq!(sandbox.realism.latency.unwrap().fixed, Some(7));
        assert!(sandbox.realism.chaos.is_none(), "reality 1 by default");

        // Reordering the chain moves the working copies; the active
        // environment must exist.
        let reordered = store
            .update_workspace(
                org,
                &slug_ref("envs"),
                &WorkspacePatch {
                    promotion_chain: Some(vec![env("sandbox"), env("dev"), env("prod")]),
                    active_environment: Some(env("sandbox")),
                    allow_promotion_skips: Some(true),
                    ..Default::default()
                },
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            names(&reordered),
            [
                ("sandbox".into(), 1),
                ("dev".into(), 2),
                ("prod".into(), 3),
                ("qa".into(), 0),
                ("staging".into(), 0)
            ]
        );
        assert!(reordered.chain().allows("sandbox", "prod").is_ok());
        let full = store.load_config().await.unwrap();
        let served = full
            .workspaces
            .iter()
            .find(|w| w.slug.as_str() == "envs")
            .unwrap();
        assert_eq!(served.active.as_str(), "sandbox");
        assert_eq!(served.environment("sandbox").unwrap().routes.len(), 1);
        assert!(served.environment("dev").unwrap().routes.is_empty());
        for (patch, field) in [
            (
                WorkspacePatch {
                    promotion_chain: Some(vec![env("dev"), env("nowhere")]),
                    ..Default::default()
                },
                "promotion_chain[1]",
            ),
            (
                WorkspacePatch {
                    promotion_chain: Some(vec![env("dev"), env("dev")]),
                    ..Default::default()
                },
                "promotion_chain[1]",
            ),
            (
                WorkspacePatch {
                    active_environment: Some(env("nowhere")),
                    ..Default::default()
                },
                "active_environment",
            ),
        ] {
            let refused = store
                .update_workspace(org, &slug_ref("envs"), &patch, None)
                .await;
            assert!(
                matches!(&refused, Err(StoreError::Invalid(e)) if e.field == field),
                "{refused:?}"
            );
        }
        assert_eq!(
            store.get_workspace(org, &slug_ref("envs")).await.unwrap(),
            reordered,
            "refused patches change nothing"
        );

        // Deleting: not the active one, not the last on the chain.
        let active = store
            .delete_environment(org, &slug_ref("envs"), &env("sandbox"), None)
            .await;
        assert!(
            matches!(active, Err(StoreError::FailedPrecondition(_))),
            "{active:?}"
        );
        let after = store
            .delete_environment(org, &slug_ref("envs"), &env("dev"), None)
            .await
            .unwrap();
        assert_eq!(after.chain().describe(), "sandbox → prod");
        store
            .update_workspace(
                org,
                &slug_ref("envs"),
                &WorkspacePatch {
                    promotion_chain: Some(vec![env("sandbox")]),
                    ..Default::default()
                },
                None,
            )
            .await
            .unwrap();
        store
            .update_workspace(
                org,
                &slug_ref("envs"),
                &WorkspacePatch {
                    active_environment: Some(env("prod")),
                    ..Default::default()
                },
                None,
            )
            .await
            .unwrap();
        let last = store
            .delete_environment(org, &slug_ref("envs"), &env("sandbox"), None)
            .await;
        assert!(
            matches!(&last, Err(StoreError::FailedPrecondition(m)) if m.contains("only environment on the promotion chain")),
            "{last:?}"
        );

        // Another org sees none of it.
        let other = super::contract::org(&*store).await;
        let hidden = store
            .create_environment(
                other,
                &slug_ref("envs"),
                NewEnvironment {
                    name: env("x"),
                    settings: EnvSettings::default(),
                    position: 0,
                },
                None,
            )
            .await;
        assert!(matches!(hidden, Err(StoreError::NotFound(_))));
    }

    pub async fn scenarios_version_and_deploy(store: Arc<dyn Store>) {
        let org = org(&*store).await;
        workspace(&*store, org, "sc").await;
        let ws = slug_ref("sc");
        let listed = store.list_scenarios(org, &ws).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name.as_str(), "default");

        let tags = parse_tags(&["[Cloud][Contracts][Reality]".into(), "payments".into()]).unwrap();
        let created = store
            .create_scenario(
                org,
                &ws,
                NewScenario {
                    name: env("checkout"),
                    description: "the checkout flow".into(),
                    tags: tags.clone(),
                    checks: Vec::new(),
                },
            )
            .await
            .unwrap();
        assert_eq!(created.tags, tags);
        assert_eq!((created.route_count, created.latest_version), (0, 0));
        let again = store
            .create_scenario(
                org,
                &ws,
                NewScenario {
                    name: env("checkout"),
                    description: String::new(),
                    tags: Vec::new(),
                    checks: Vec::new(),
                },
            )
            .await;
        assert!(
            matches!(again, Err(StoreError::AlreadyExists(_))),
            "{again:?}"
        );

        let added = store
            .create_scenario_routes(
                org,
                &ws,
                Some(&env("checkout")),
                vec![
                    route("GET", "/cart", "cart v1"),
                    route("POST", "/pay", "paid"),
                ],
            )
            .await
            .unwrap();
        assert!(added.iter().all(|r| r.scenario.as_str() == "checkout"));
        store
            .create_routes(org, &ws, vec![route("GET", "/other", "other")])
            .await
            .unwrap();
        let only = store
            .list_scenario_routes(org, &ws, Some(&env("checkout")), None, 100)
            .await
            .unwrap();
        assert_eq!(only.items.len(), 2);
        assert_eq!(
            store
                .list_routes(org, &ws, None, 100)
                .await
                .unwrap()
                .items
                .len(),
            3
        );
        let missing = store
            .create_scenario_routes(org, &ws, Some(&env("nope")), vec![route("GET", "/x", "x")])
            .await;
        assert!(
            matches!(missing, Err(StoreError::NotFound(_))),
            "{missing:?}"
        );

        // Versions: content-hashed and immutable.
        let none = store.get_version(org, &ws, &env("checkout"), None).await;
        assert!(
            matches!(&none, Err(StoreError::NotFound(m)) if m.contains("none yet")),
            "{none:?}"
        );
        let v1 = store
            .create_version(org, &ws, &env("checkout"), "first")
            .await
            .unwrap();
        assert_eq!((v1.number, v1.route_count), (1, 2));
        assert_eq!(v1.content_hash.len(), 64);
        let same = store
            .create_version(org, &ws, &env("checkout"), "nothing changed")
            .await
            .unwrap();
        assert_eq!(same.number, 1, "unchanged content: the newest version");
        store
            .update_route(
                org,
                &ws,
                added[0].id,
                &RoutePatch {
                    body: Some(Bytes::from_static(b"cart v2")),
                    ..Default::default()
                },
                None,
            )
            .await
            .unwrap();
        let v2 = store
            .create_version(org, &ws, &env("checkout"), "cart v2")
            .await
            .unwrap();
        assert_eq!(v2.number, 2);
        assert_ne!(v2.content_hash, v1.content_hash);
        let frozen = store
            .get_version(org, &ws, &env("checkout"), Some(1))
            .await
            .unwrap();
        let bodies: Vec<&[u8]> = frozen
            .routes
            .iter()
            .map(|r| &r.spec.response.body[..])
            .collect();
        assert!(
            bodies.contains(&&b"cart v1"[..]),
            "version 1 keeps what it froze"
        );
        let versions = store
            .list_versions(org, &ws, &env("checkout"))
            .await
            .unwrap();
        assert_eq!(
            versions.iter().map(|v| v.number).collect::<Vec<_>>(),
            [2, 1]
        );

        // Deploying: versions to environments after the first only.
        let first = store
            .deploy_version(org, &ws, &env("checkout"), Some(1), &env("dev"))
            .await;
        assert!(
            matches!(&first, Err(StoreError::FailedPrecondition(m)) if m.contains("working copies")),
            "{first:?}"
        );
        let before = store.current_revision().await.unwrap();
        let deployed = store
            .deploy_version(org, &ws, &env("checkout"), Some(1), &env("test"))
            .await
            .unwrap();
        assert_eq!(deployed.version, 1);
        assert!(store.current_revision().await.unwrap() > before);
        let config = store.load_config().await.unwrap();
        let served = config
            .workspaces
            .iter()
            .find(|w| w.slug.as_str() == "sc")
            .unwrap();
        let test = served.environment("test").unwrap();
        assert_eq!(test.routes.len(), 2);
        assert!(
            test.routes
                .iter()
                .any(|r| &r.spec.response.body[..] == b"cart v1"),
            "test serves version 1, not the working copy"
        );
        assert_eq!(served.environment("dev").unwrap().routes.len(), 3);
        assert!(served.environment("prod").unwrap().routes.is_empty());
        let changes = store.config_changes_since(before).await.unwrap();
        let (_, delta) = &changes.changed[0];
        assert_eq!(
            delta
                .as_ref()
                .unwrap()
                .as_ref()
                .unwrap()
                .environment("test")
                .unwrap()
                .routes
                .len(),
            2
        );
        let scenario = store
            .get_scenario(org, &ws, &env("checkout"))
            .await
            .unwrap();
        assert_eq!(scenario.latest_version, 2);
        assert_eq!(scenario.deployments.len(), 1);
        assert_eq!(scenario.deployments[0].environment.as_str(), "test");

        // A version whose routes clash with another scenario's in the
        // environment is refused.
        store
            .create_scenario(
                org,
                &ws,
                NewScenario {
                    name: env("rival"),
                    description: String::new(),
                    tags: Vec::new(),
                    checks: Vec::new(),
                },
            )
            .await
            .unwrap();
        // Working copies share the workspace's match keys, so the rival's
        // /cart is made by moving checkout's away first.
        store.delete_routes(org, &ws, &[added[0].id]).await.unwrap();
        store
            .create_scenario_routes(
                org,
                &ws,
                Some(&env("rival")),
                vec![route("GET", "/cart", "rival")],
            )
            .await
            .unwrap();
        store
            .create_version(org, &ws, &env("rival"), "")
            .await
            .unwrap();
        let clash = store
            .deploy_version(org, &ws, &env("rival"), None, &env("test"))
            .await;
        assert!(
            matches!(&clash, Err(StoreError::FailedPrecondition(m)) if m.contains("matches the same requests")),
            "{clash:?}"
        );

        // Deleting: not while deployed, never the default.
        let served = store
            .delete_scenario(org, &ws, &env("checkout"), None)
            .await;
        assert!(
            matches!(&served, Err(StoreError::FailedPrecondition(m)) if m.contains("test (version 1)")),
            "{served:?}"
        );
        let default = store.delete_scenario(org, &ws, &env("default"), None).await;
        assert!(matches!(default, Err(StoreError::FailedPrecondition(_))));
        store
            .delete_scenario(org, &ws, &env("rival"), None)
            .await
            .unwrap();
        assert_eq!(
            store
                .list_routes(org, &ws, None, 100)
                .await
                .unwrap()
                .items
                .len(),
            2
        );
        let renamed = store
            .update_scenario(
                org,
                &ws,
                &env("checkout"),
                &ScenarioPatch {
                    name: Some(env("pay")),
                    tags: Some(Vec::new()),
                    ..Default::default()
                },
                Some(created.version),
            )
            .await
            .unwrap();
        assert_eq!(renamed.name.as_str(), "pay");
        assert!(renamed.tags.is_empty());
        assert_eq!(renamed.deployments[0].scenario.as_str(), "pay");
    }

    pub async fn personas_keep_every_version(store: Arc<dyn Store>) {
        let org = org(&*store).await;
        workspace(&*store, org, "people").await;
        let ws = slug_ref("people");
        let ada = serde_json::json!({ "user": { "name": "Ada" } });
        let created = store
            .create_persona(org, &ws, &env("ada"), &ada)
            .await
            .unwrap();
        assert_eq!(created.version, 1);
        let twice = store.create_persona(org, &ws, &env("ada"), &ada).await;
        assert!(
            matches!(twice, Err(StoreError::AlreadyExists(_))),
            "{twice:?}"
        );
        let before = store.current_revision().await.unwrap();
        let grace = serde_json::json!({ "user": { "name": "Grace" } });
        let updated = store
            .update_persona(org, &ws, &env("ada"), &grace, Some(1))
            .await
            .unwrap();
        assert_eq!(updated.version, 2);
        assert!(
            store.current_revision().await.unwrap() > before,
            "personas are served"
        );
        let stale = store
            .update_persona(org, &ws, &env("ada"), &ada, Some(1))
            .await;
        assert!(
            matches!(stale, Err(StoreError::EtagMismatch { .. })),
            "{stale:?}"
        );
        assert_eq!(
            store
                .get_persona(org, &ws, &env("ada"), Some(1))
                .await
                .unwrap()
                .data,
            ada,
            "earlier versions stay readable"
        );
        assert_eq!(
            store
                .get_persona(org, &ws, &env("ada"), None)
                .await
                .unwrap()
                .data,
            grace
        );
        let missing = store.get_persona(org, &ws, &env("ada"), Some(9)).await;
        assert!(
            matches!(&missing, Err(StoreError::NotFound(m)) if m.contains("1 to 2")),
            "{missing:?}"
        );
        let config = store.load_config().await.unwrap();
        let served = config
            .workspaces
            .iter()
            .find(|w| w.slug.as_str() == "people")
            .unwrap();
        // The first environment serves the working copy; the others
        // serve only what was promoted into them.
        let dev = served.environment("dev").unwrap();
        assert_eq!(dev.personas.len(), 1);
        assert_eq!(dev.personas[0].data, grace);
        assert!(served.environment("prod").unwrap().personas.is_empty());
        assert_eq!(store.list_personas(org, &ws).await.unwrap().len(), 1);
        store
            .delete_persona(org, &ws, &env("ada"), None)
            .await
            .unwrap();
        assert!(store.list_personas(org, &ws).await.unwrap().is_empty());
    }

    pub async fn concurrent_writes_get_distinct_revisions(store: Arc<dyn Store>) {
        let org = org(&*store).await;
        let start = store.current_revision().await.unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .create_workspace(
                            org,
                            NewWorkspace::parse(&format!("c{i}"), "", "").unwrap(),
                            None,
                        )
                        .await
                        .map(|w| w.id)
                })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await.unwrap().unwrap());
        }
        assert_eq!(store.current_revision().await.unwrap(), start + 16);
        let history = store.change_history(start).await.unwrap();
        let revisions: Vec<u64> = history.entries.iter().map(|(r, _)| *r).collect();
        assert_eq!(revisions, (start + 1..=start + 16).collect::<Vec<_>>());
        let mut seen: Vec<Uuid> = history.entries.iter().map(|(_, id)| *id).collect();
        seen.sort();
        ids.sort();
        assert_eq!(seen, ids);

        // Racing updates with the same expected version: exactly one wins.
        let racers: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let patch = WorkspacePatch {
                        name: Some(format!("racer {i}")),
                        ..Default::default()
                    };
                    store
                        .update_workspace(
                            org,
                            &WorkspaceRef::Slug(Slug::parse("c0").unwrap()),
                            &patch,
                            Some(1),
                        )
                        .await
                })
            })
            .collect();
        let mut wins = 0;
        for racer in racers {
            match racer.await.unwrap() {
                Ok(_) => wins += 1,
                Err(StoreError::EtagMismatch { .. }) => {}
                Err(other) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(wins, 1);
    }
}

mod identity {
    use super::*;

    fn user(email: &str, role: OrgRole) -> NewPrincipal {
        NewPrincipal {
            kind: PrincipalKind::User,
            email: Some(email.to_owned()),
            name: email.to_owned(),
            org_role: role,
            password_hash: Some("phc".into()),
            must_change_password: false,
        }
    }

    pub async fn principals_tokens_roles_and_memberships(store: Arc<dyn Store>) {
        let org = store.create_org("acme").await.unwrap();
        let other = store.create_org("globex").await.unwrap();
        let owner = store
            .create_principal(org, user("owner@acme.io", OrgRole::Owner))
            .await
            .unwrap();
        let dev = store
            .create_principal(org, user("dev@acme.io", OrgRole::Member))
            .await
            .unwrap();
        assert!(matches!(
            store
                .create_principal(other, user("DEV@acme.io", OrgRole::Member))
                .await,
            Err(StoreError::AlreadyExists(_))
        ));
        // Another org sees nothing.
        assert!(matches!(
            store.get_principal(other, dev.id).await,
            Err(StoreError::NotFound(_))
        ));

        // The last owner stays.
        let demote = PrincipalPatch {
            org_role: Some(OrgRole::Admin),
            ..Default::default()
        };
        assert!(matches!(
            store.update_principal(org, owner.id, &demote, None).await,
            Err(StoreError::FailedPrecondition(_))
        ));
        assert!(matches!(
            store.delete_principal(org, owner.id).await,
            Err(StoreError::FailedPrecondition(_))
        ));
        // A disabled owner is not the last one: it may go.
        let former = store
            .create_principal(org, user("former@acme.io", OrgRole::Owner))
            .await
            .unwrap();
        let off = PrincipalPatch {
            disabled: Some(true),
            ..Default::default()
        };
        store
            .update_principal(org, former.id, &off, None)
            .await
            .unwrap();
        store.delete_principal(org, former.id).await.unwrap();

        // API tokens: expiry, disabling and revocation all refuse.
        store
            .create_api_token(org, dev.id, "ci", "live", None)
            .await
            .unwrap();
        let past = chrono::Utc::now() - chrono::Duration::minutes(1);
        store
            .create_api_token(org, dev.id, "old", "expired", Some(past))
            .await
            .unwrap();
        assert_eq!(store.find_token("live").await.unwrap().unwrap().id, dev.id);
        assert!(store.find_token("expired").await.unwrap().is_none());
        let tokens = store.list_api_tokens(org, dev.id).await.unwrap();
        assert_eq!(tokens.len(), 2);
        assert!(tokens.iter().any(|t| t.last_used_at.is_some()));
        let disable = PrincipalPatch {
            disabled: Some(true),
            ..Default::default()
        };
        let disabled = store
            .update_principal(org, dev.id, &disable, Some(dev.version))
            .await
            .unwrap();
        assert!(store.find_token("live").await.unwrap().is_none());
        assert!(store.find_principal(org, dev.id).await.unwrap().is_none());
        let enable = PrincipalPatch {
            disabled: Some(false),
            ..Default::default()
        };
        store
            .update_principal(org, dev.id, &enable, Some(disabled.version))
            .await
            .unwrap();
        let live = tokens.iter().find(|t| t.name == "ci").unwrap();
        assert!(matches!(
            store.revoke_api_token(other, live.id).await,
            Err(StoreError::NotFound(_))
        ));
        store.revoke_api_token(org, live.id).await.unwrap();
        assert!(store.find_token("live").await.unwrap().is_none());

        // Refresh tokens work once, each use storing the next; a second
        // use revokes the family, as does ending the session.
        let principal = store.find_principal(org, dev.id).await.unwrap().unwrap();
        let later = chrono::Utc::now() + chrono::Duration::days(1);
        let family = store.start_session(&principal, "r1", later).await.unwrap();
        assert!(matches!(
            store.use_refresh_token("r1", ("r2", later)).await.unwrap(),
            RefreshOutcome::Used { family: f, .. } if f == family
        ));
        assert_eq!(
            store.use_refresh_token("r1", ("r3", later)).await.unwrap(),
            RefreshOutcome::Reused
        );
        // The reuse revoked the rest of the family, and stored no r3.
        assert_eq!(
            store.use_refresh_token("r2", ("r4", later)).await.unwrap(),
            RefreshOutcome::Revoked
        );
        assert_eq!(
            store.use_refresh_token("r3", ("r5", later)).await.unwrap(),
            RefreshOutcome::Unknown
        );
        assert_eq!(
            store
                .use_refresh_token("nope", ("r6", later))
                .await
                .unwrap(),
            RefreshOutcome::Unknown
        );
        let earlier = chrono::Utc::now() - chrono::Duration::seconds(1);
        store
            .start_session(&principal, "old", earlier)
            .await
            .unwrap();
        assert_eq!(
            store.use_refresh_token("old", ("r7", later)).await.unwrap(),
            RefreshOutcome::Expired
        );
        store.start_session(&principal, "s1", later).await.unwrap();
        assert!(store.end_session("s1").await.unwrap());
        assert!(!store.end_session("unknown").await.unwrap());
        assert_eq!(
            store.use_refresh_token("s1", ("s2", later)).await.unwrap(),
            RefreshOutcome::Revoked
        );
        let actions: Vec<String> = store
            .list_audit(org, &Default::default(), None, 100)
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.action.starts_with("session."))
            .map(|e| {
                assert_eq!(e.actor, "dev@acme.io");
                e.action
            })
            .rev()
            .collect();
        assert_eq!(
            actions,
            [
                "session.start",
                "session.refresh",
                "session.revoke",
                "session.start",
                "session.start",
                "session.end"
            ]
        );

        // Roles, memberships and policies make up the access facts.
        store
            .create_role(
                org,
                &RoleRecord {
                    name: "platform".into(),
                    description: String::new(),
                    permissions: [Permission::RealityConfig].into(),
                    version: 0,
                },
            )
            .await
            .unwrap();
        let ws = WorkspaceRef::Slug(Slug::parse("shop").unwrap());
        store
            .create_workspace(
                org,
                NewWorkspace::parse("shop", "", "").unwrap(),
                Some(owner.id),
            )
            .await
            .unwrap();
        let facts = store.access_facts(org, &ws, owner.id).await.unwrap();
        assert_eq!(
            facts.standing.roles.len(),
            3,
            "the creator is admin everywhere"
        );
        store
            .set_membership(org, &ws, dev.id, "dev", "editor")
            .await
            .unwrap();
        store
            .set_membership(org, &ws, dev.id, "prod", "platform")
            .await
            .unwrap();
        assert!(matches!(
            store
                .set_membership(org, &ws, dev.id, "prod", "ghost")
                .await,
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store
                .set_membership(org, &ws, dev.id, "moon", "viewer")
                .await,
            Err(StoreError::NotFound(_))
        ));
        store
            .set_policy(
                org,
                &ws,
                "prod",
                Permission::RealityConfig,
                &["platform".to_owned()].into(),
            )
            .await
            .unwrap();
        let facts = store.access_facts(org, &ws, dev.id).await.unwrap();
        assert_eq!(
            facts.standing.roles.get("dev").map(String::as_str),
            Some("editor")
        );
        assert_eq!(
            facts.standing.roles.get("prod").map(String::as_str),
            Some("platform")
        );
        assert!(
            facts
                .policies
                .get("prod", Permission::RealityConfig)
                .is_some()
        );
        assert!(matches!(
            store.access_facts(other, &ws, dev.id).await,
            Err(StoreError::NotFound(_))
        ));
        // A role in use cannot be deleted.
        assert!(matches!(
            store.delete_role(org, "platform").await,
            Err(StoreError::FailedPrecondition(_))
        ));
        // Renaming an environment carries its roles and policies along;
        // deleting it drops them.
        store
            .update_environment(
                org,
                &ws,
                &Slug::parse("prod").unwrap(),
                &EnvironmentPatch {
                    name: Some(Slug::parse("live").unwrap()),
                    settings: None,
                },
                None,
            )
            .await
            .unwrap();
        let facts = store.access_facts(org, &ws, dev.id).await.unwrap();
        assert_eq!(
            facts.standing.roles.get("live").map(String::as_str),
            Some("platform")
        );
        assert!(
            facts
                .policies
                .get("live", Permission::RealityConfig)
                .is_some()
        );
        store
            .update_workspace(
                org,
                &ws,
                &WorkspacePatch {
                    promotion_chain: Some(vec![
                        Slug::parse("dev").unwrap(),
                        Slug::parse("test").unwrap(),
                    ]),
                    ..Default::default()
                },
                None,
            )
            .await
            .unwrap();
        store
            .delete_environment(org, &ws, &Slug::parse("live").unwrap(), None)
            .await
            .unwrap();
        let facts = store.access_facts(org, &ws, dev.id).await.unwrap();
        assert!(!facts.standing.roles.contains_key("live"));
        assert!(store.list_policies(org, &ws).await.unwrap().is_empty());
        store
            .remove_membership(org, &ws, dev.id, "dev")
            .await
            .unwrap();
        store.delete_role(org, "platform").await.unwrap();

        // Workspaces a member sees: those with a role.
        let visible = store
            .list_workspaces(org, Some(dev.id), None, 10)
            .await
            .unwrap();
        assert!(visible.items.is_empty());
        store
            .set_membership(org, &ws, dev.id, "test", "viewer")
            .await
            .unwrap();
        let visible = store
            .list_workspaces(org, Some(dev.id), None, 10)
            .await
            .unwrap();
        assert_eq!(visible.items.len(), 1);

        // The access log.
        let ws_id = facts.workspace.id;
        store
            .record_access(
                org,
                ws_id,
                &AccessGrant {
                    principal_id: dev.id,
                    environment: "test".into(),
                    reason: "debugging issue #123".into(),
                    token_id: "jti".into(),
                    granted_at: chrono::Utc::now(),
                    expires_at: chrono::Utc::now(),
                },
            )
            .await
            .unwrap();
        let log = store.list_access(org, &ws, 10).await.unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].reason, "debugging issue #123");
    }
}

mod audit {
    use mockplane_control_plane::store::audit::{AUDIT_CONTEXT, AuditContext, AuditFilter};

    use super::*;

    pub async fn audit_trail_chains_every_write(store: Arc<dyn Store>) {
        let org = store.create_org("acme").await.unwrap();
        let context = AuditContext {
            actor_id: "user:1".into(),
            actor: "ada@acme.io".into(),
            credential: "api_token".into(),
            reason: "testing the trail".into(),
            request_id: "req-1".into(),
        };
        AUDIT_CONTEXT
            .scope(context, async {
                store
                    .create_workspace(org, NewWorkspace::parse("shop", "", "").unwrap(), None)
                    .await
                    .unwrap();
            })
            .await;
        let ws = WorkspaceRef::Slug(Slug::parse("shop").unwrap());
        // Outside a request, writes are the system's.
        store
            .update_environment(
                org,
                &ws,
                &Slug::parse("dev").unwrap(),
                &EnvironmentPatch {
                    name: None,
                    settings: Some(SettingsPatch {
                        values: EnvSettings {
                            reality: Some(2),
                            ..Default::default()
                        },
                        keys: vec![SettingKey::Reality],
                    }),
                },
                None,
            )
            .await
            .unwrap();
        // A write that fails records nothing.
        assert!(
            store
                .create_workspace(org, NewWorkspace::parse("shop", "", "").unwrap(), None)
                .await
                .is_err()
        );
        let events = store
            .list_audit(org, &AuditFilter::default(), None, 10)
            .await
            .unwrap()
            .items;
        assert_eq!(events.len(), 2);
        let (newest, oldest) = (&events[0], &events[1]);
        assert_eq!(oldest.seq, 1);
        assert_eq!(oldest.action, "workspace.create");
        assert_eq!(oldest.actor, "ada@acme.io");
        assert_eq!(oldest.reason, "testing the trail");
        assert_eq!(oldest.request_id, "req-1");
        assert_eq!(newest.action, "environment.update");
        assert_eq!(newest.environment, "dev");
        assert_eq!(newest.actor_id, "system");
        assert_eq!(newest.prev_hash, oldest.hash);
        let filtered = store
            .list_audit(
                org,
                &AuditFilter {
                    action_prefix: "environment.".into(),
                    ..Default::default()
                },
                None,
                10,
            )
            .await
            .unwrap()
            .items;
        assert_eq!(filtered.len(), 1);
        // `_` in a prefix is literal, not a wildcard.
        store.reset_state(org, &ws).await.unwrap();
        for (prefix, found) in [
            ("workspace.reset_", 1),
            ("workspace.reset_x", 0),
            ("workspace_", 0),
        ] {
            let listed = store
                .list_audit(
                    org,
                    &AuditFilter {
                        action_prefix: prefix.into(),
                        ..Default::default()
                    },
                    None,
                    10,
                )
                .await
                .unwrap()
                .items;
            assert_eq!(listed.len(), found, "{prefix}");
        }
        let verified = store.verify_audit(org).await.unwrap();
        assert_eq!(verified.broken, None);
        assert_eq!(verified.events, 3);
        assert_eq!(verified.head_seq, 3);
        // Another org's chain is its own.
        let other = store.create_org("globex").await.unwrap();
        assert!(
            store
                .list_audit(other, &AuditFilter::default(), None, 10)
                .await
                .unwrap()
                .items
                .is_empty()
        );

        // Retention: a dry run changes nothing; protected environments keep
        // everything; pruning keeps the chain verifiable.
        let retention = [("dev".to_owned(), 1), ("prod".to_owned(), 1)];
        let future = store
            .prune_audit(org, &retention, &["prod".to_owned()], true)
            .await
            .unwrap();
        assert_eq!(future.by_environment, [("dev".to_owned(), 0)]);
        assert_eq!(future.protected, ["prod".to_owned()]);
        assert_eq!(store.verify_audit(org).await.unwrap().broken, None);
    }
}

macro_rules! contract_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}", dir.path().join("store.db").display());
                    let store = mockplane_control_plane::store::open(&url).await.unwrap();
                    super::$name(store).await;
                }
            )*
        }

        mod postgres {
            use std::sync::Arc;

            use mockplane_control_plane::store::SqlStore;

            /// The audit table refuses edits and deletions; an edit made
            /// anyway (by someone who can disable the guard) is detected.
            #[sqlx::test(migrations = false)]
            async fn audit_events_are_append_only_and_tampering_shows(pool: sqlx::PgPool) {
                let store = SqlStore::new(pool.clone());
                store.migrate().await.unwrap();
                let store: Arc<dyn mockplane_control_plane::store::Store> = Arc::new(store);
                let org = store.create_org("acme").await.unwrap();
                for slug in ["one", "two", "three"] {
                    store
                        .create_workspace(org, mockplane_shared::NewWorkspace::parse(slug, "", "").unwrap(), None)
                        .await
                        .unwrap();
                }
                // Someone at the database, past row-level security.
                let mut admin = pool.acquire().await.unwrap();
                sqlx::query("SELECT set_config('mockplane.system', 'on', false)")
                    .execute(&mut *admin)
                    .await
                    .unwrap();
                let error = sqlx::query("UPDATE audit_events SET summary = '{}' WHERE seq = 2")
                    .execute(&mut *admin)
                    .await
                    .unwrap_err();
                assert!(error.to_string().contains("append-only"), "{error}");
                let error = sqlx::query("DELETE FROM audit_events WHERE seq = 3")
                    .execute(&mut *admin)
                    .await
                    .unwrap_err();
                assert!(error.to_string().contains("append-only"), "{error}");
                assert_eq!(store.verify_audit(org).await.unwrap().broken, None);

                sqlx::query("ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only")
                    .execute(&mut *admin)
                    .await
                    .unwrap();
                sqlx::query("UPDATE audit_events SET actor = 'someone else' WHERE seq = 2")
                    .execute(&mut *admin)
                    .await
                    .unwrap();
                let verified = store.verify_audit(org).await.unwrap();
                let (seq, problem) = verified.broken.unwrap();
                assert_eq!(seq, 2);
                assert!(problem.contains("changed"), "{problem}");

                sqlx::query("UPDATE audit_events SET actor = 'system' WHERE seq = 2")
                    .execute(&mut *admin)
                    .await
                    .unwrap();
                assert_eq!(store.verify_audit(org).await.unwrap().broken, None);
                sqlx::query("DELETE FROM audit_events WHERE seq = 3")
                    .execute(&mut *admin)
                    .await
                    .unwrap();
                let (seq, problem) = store.verify_audit(org).await.unwrap().broken.unwrap();
                assert_eq!(seq, 3);
                assert!(problem.contains("removed"), "{problem}");
            }

            $(
                #[sqlx::test(migrations = false)]
                async fn $name(pool: sqlx::PgPool) {
                    let store = SqlStore::new(pool);
                    store.migrate().await.unwrap();
                    super::$name(Arc::new(store)).await;
                }
            )*
        }
    };
}

/// On SQLite too, an org's deletion leaves nothing of it in any table (read
/// from the catalog): after the contract's run only the platform's org keeps
/// its people and token, beside the tombstones and audit chains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_org_deletion_leaves_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = mockplane_control_plane::store::open(&url).await.unwrap();
    orgs::deleting_an_org_removes_it_and_keeps_its_chain(store.clone()).await;
    store.close().await;
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(tables.len() > 20, "{tables:?}");
    for table in tables {
        let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        match table.as_str() {
            // Fleet bookkeeping, not tenant content.
            "_sqlx_migrations" | "config_revision" | "change_log" => {}
            "orgs" => assert_eq!(count, 3, "the platform's org and two tombstones"),
            "principals" | "api_tokens" => assert_eq!(count, 1, "{table}: the platform admin's"),
            "audit_events" | "audit_heads" => assert!(count > 0, "{table}"),
            _ => assert_eq!(count, 0, "{table} holds {count} rows of deleted orgs"),
        }
    }
}

#[path = "contract/keys.rs"]
mod keys;

#[path = "contract/promotions.rs"]
mod promotions;

#[path = "contract/retention.rs"]
mod retention;

#[path = "contract/orgs.rs"]
mod orgs;

use audit::*;
use contract::*;
use identity::*;
use keys::*;
use orgs::*;
use promotions::*;
use retention::*;

contract_suite!(
    api_keys_open_one_environment_and_expire,
    usage_adds_up_per_workspace_and_minute,
    audit_trail_chains_every_write,
    principals_tokens_roles_and_memberships,
    bootstrap_happens_once,
    workspace_lifecycle,
    slugs_are_unique_across_orgs,
    orgs_are_isolated,
    workspaces_page_by_slug,
    route_lifecycle,
    clashing_routes_are_refused_atomically,
    workspace_limits_hold,
    every_serving_change_bumps_the_revision,
    config_commits_wake_the_watchers,
    load_config_is_the_whole_serving_state,
    matchers_and_priorities_are_stored_and_keyed,
    concurrent_writes_get_distinct_revisions,
    environments_follow_the_chain,
    scenarios_version_and_deploy,
    personas_keep_every_version,
    a_promotion_runs_its_lifecycle,
    pending_promotions_are_reminded_then_expire,
    personas_and_settings_are_promoted_and_rolled_back,
    node_tokens_are_checked_by_hash_and_revoked,
    periodic_jobs_run_on_one_replica_at_a_time,
    the_node_registry_keeps_each_nodes_newest_stream,
    retention_prunes_only_what_may_go,
    org_settings_and_quotas_hold,
    orgs_are_made_whole_and_listed_by_name,
    deleting_an_org_removes_it_and_keeps_its_chain,
);
