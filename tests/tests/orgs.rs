//! Orgs as a resource, through the real gRPC server and CLI: reading and
//! changing an org, the platform admin's reach into other orgs, quotas
//! refused by name with nothing made, and who may create workspaces.

use mockplane_control_plane::identity::token;
use mockplane_control_plane::store;
use mockplane_e2e::fixtures::{self, new_workspace, route};
use mockplane_e2e::{Api, Cli, ControlPlane, Node};
use mockplane_proto::v1;
use tonic::Code;

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

fn quotas_update(org: &str, quotas: v1::Quotas, paths: &[&str]) -> v1::UpdateOrgRequest {
    v1::UpdateOrgRequest {
        org: org.into(),
        patch: Some(v1::Org {
            settings: Some(v1::OrgSettings {
                members_create_workspaces: None,
                quotas: Some(quotas),
            }),
            ..Default::default()
        }),
        update_mask: mask(paths),
        etag: String::new(),
    }
}

async fn get(api: &mut Api, org: &str) -> Result<v1::Org, tonic::Status> {
    api.orgs
        .get_org(v1::GetOrgRequest { org: org.into() })
        .await
        .map(tonic::Response::into_inner)
}

fn refused(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, needle: &str) {
    let status = result.expect_err("must be refused");
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(
        status.message().contains(needle),
        "{:?} should mention {needle:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_admins_set_quotas_and_creates_past_them_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let mut platform = plane.api(plane.token.as_deref().unwrap()).await;

    // The first run's org, as its owner (the platform admin) sees it.
    let own = get(&mut platform, "").await.unwrap();
    let quotas = own.settings.as_ref().unwrap().quotas.unwrap();
    assert_eq!(
        (quotas.max_workspaces, quotas.max_routes_per_workspace),
        (1_000, 2_000)
    );
    assert_eq!(own.usage.unwrap().members, 1);
    assert_eq!(get(&mut platform, &own.name).await.unwrap().id, own.id);

    // A second org with an owner who is no platform admin.
    let store = store::open(&mockplane_e2e::database_url(dir.path()).await)
        .await
        .unwrap();
    store.create_org("globex").await.unwrap();
    let secret = token::generate();
    store
        .add_token("globex", "globex-owner", &token::hash(&secret))
        .await
        .unwrap();
    let mut owner = plane.api(&secret).await;
    let globex = get(&mut owner, "").await.unwrap();
    assert_eq!(globex.name, "globex");
    // Another org does not exist for them, by name or by id.
    refused(
        get(&mut owner, &own.name).await,
        Code::NotFound,
        "not found",
    );
    refused(get(&mut owner, &own.id).await, Code::NotFound, "not found");
    // They change their org's display name, not its quotas.
    let renamed = owner
        .orgs
        .update_org(v1::UpdateOrgRequest {
            patch: Some(v1::Org {
                display_name: "Globex Corp.".into(),
                ..Default::default()
            }),
            update_mask: mask(&["display_name"]),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renamed.display_name, "Globex Corp.");
    // A display name too long is refused naming it, and nothing changes.
    refused(
        owner
            .orgs
            .update_org(v1::UpdateOrgRequest {
                patch: Some(v1::Org {
                    display_name: "x".repeat(201),
                    ..Default::default()
                }),
                update_mask: mask(&["display_name"]),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "patch.display_name: is at most 200 characters",
    );
    assert_eq!(get(&mut owner, "").await.unwrap().etag, renamed.etag);
    assert_ne!(renamed.etag, globex.etag);
    refused(
        owner
            .orgs
            .update_org(quotas_update(
                "",
                v1::Quotas {
                    max_workspaces: 5_000,
                    ..Default::default()
                },
                &["settings.quotas.max_workspaces"],
            ))
            .await,
        Code::PermissionDenied,
        "only a platform admin",
    );
    // A stale etag changes nothing.
    let mut stale = quotas_update("", v1::Quotas::default(), &["display_name"]);
    stale.etag = globex.etag.clone();
    refused(owner.orgs.update_org(stale).await, Code::Aborted, "etag");

    // The platform admin sets globex's quotas; a quota out of range is
    // refused naming it, and nothing changes.
    refused(
        platform
            .orgs
            .update_org(quotas_update(
                "globex",
                v1::Quotas {
                    max_workspaces: 100_001,
                    ..Default::default()
                },
                &["settings.quotas.max_workspaces"],
            ))
            .await,
        Code::InvalidArgument,
        "patch.settings.quotas.max_workspaces: must be 1 to 100000",
    );
    let limited = platform
        .orgs
        .update_org(quotas_update(
            "globex",
            v1::Quotas {
                max_workspaces: 1,
                max_routes_per_workspace: 2,
                max_api_keys: 1,
                max_members: 2,
            },
            &["settings.quotas"],
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(limited.display_name, "Globex Corp.", "only quotas changed");
    assert_eq!(limited.settings.unwrap().quotas.unwrap().max_workspaces, 1);
    // The first org keeps its defaults.
    assert_eq!(
        get(&mut platform, "")
            .await
            .unwrap()
            .settings
            .unwrap()
            .quotas
            .unwrap()
            .max_workspaces,
        1_000
    );

    // Workspaces: one, then the quota.
    owner
        .workspaces
        .create_workspace(new_workspace("globex-shop"))
        .await
        .unwrap();
    refused(
        owner
            .workspaces
            .create_workspace(new_workspace("globex-other"))
            .await,
        Code::ResourceExhausted,
        "max_workspaces is 1 and it has 1",
    );
    // Routes: three at once are past a quota of two; none is made.
    refused(
        owner
            .routes
            .create_routes(v1::CreateRoutesRequest {
                workspace: "globex-shop".into(),
                routes: vec![
                    route("GET", "/a", 200, "a"),
                    route("GET", "/b", 200, "b"),
                    route("GET", "/c", 200, "c"),
                ],
                ..Default::default()
            })
            .await,
        Code::ResourceExhausted,
        "max_routes_per_workspace is 2",
    );
    let listed = owner
        .routes
        .list_routes(v1::ListRoutesRequest {
            workspace: "globex-shop".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.routes.is_empty(), "a refused batch leaves nothing");
    // API keys: one, then the quota.
    let key = |name: &str| v1::CreateApiKeyRequest {
        workspace: "globex-shop".into(),
        environment: "dev".into(),
        name: name.into(),
        ..Default::default()
    };
    owner.api_keys.create_api_key(key("first")).await.unwrap();
    refused(
        owner.api_keys.create_api_key(key("second")).await,
        Code::ResourceExhausted,
        "max_api_keys is 1",
    );
    // Members: the owner's service account and one more.
    owner
        .users
        .create_user(v1::CreateUserRequest {
            email: "ann@globex.io".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    refused(
        owner
            .users
            .create_user(v1::CreateUserRequest {
                email: "bob@globex.io".into(),
                ..Default::default()
            })
            .await,
        Code::ResourceExhausted,
        "max_members is 2 and it has 2",
    );
    let usage = get(&mut owner, "").await.unwrap().usage.unwrap();
    assert_eq!((usage.workspaces, usage.api_keys, usage.members), (1, 1, 2));

    // Back to the default: the next workspace is made.
    platform
        .orgs
        .update_org(quotas_update(
            "globex",
            v1::Quotas::default(),
            &["settings.quotas.max_workspaces"],
        ))
        .await
        .unwrap();
    owner
        .workspaces
        .create_workspace(new_workspace("globex-other"))
        .await
        .unwrap();

    // Every change is in the org's audit trail.
    let events = owner
        .audit
        .list_audit_events(v1::ListAuditEventsRequest {
            action: "org.update".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events.len(), 3, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_settings_decide_whether_members_create_workspaces() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let admin_token = plane.token.clone().unwrap();
    let mut admin = plane.api(&admin_token).await;
    // A member of the org with no workspace role yet.
    let (_, secret) = fixtures::member(&plane, &mut admin, "", "mia@acme.io", &[]).await;
    let mut mia = plane.api(&secret).await;
    // By default members create workspaces.
    mia.workspaces
        .create_workspace(new_workspace("mias"))
        .await
        .unwrap();
    // A member may not change the org.
    refused(
        mia.orgs
            .update_org(v1::UpdateOrgRequest {
                patch: Some(v1::Org::default()),
                update_mask: mask(&["display_name"]),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "org.manage",
    );

    // Through the CLI: the owner turns it off; bad values are refused
    // before anything is sent.
    let cli = Cli {
        server: plane.url(),
        token: Some(&admin_token),
    };
    let bad = cli.run(&["org", "update", "--max-workspaces=-1"]).await;
    assert_eq!(bad.status.code(), Some(2), "a usage error");
    let bad = String::from_utf8(bad.stderr).unwrap();
    assert!(bad.contains("whole number from 1"), "{bad}");
    let none = cli.fails(&["org", "update"]).await;
    assert!(none.contains("nothing to change"), "{none}");
    let shown = cli
        .ok(&[
            "-o",
            "json",
            "org",
            "update",
            "--members-create-workspaces",
            "false",
        ])
        .await;
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["settings"]["members_create_workspaces"], false);
    let table = cli.ok(&["org", "get"]).await;
    assert!(table.contains("members_create_workspaces  no"), "{table}");
    assert!(table.contains("workspaces"), "{table}");

    refused(
        mia.workspaces
            .create_workspace(new_workspace("mias-second"))
            .await,
        Code::PermissionDenied,
        "members_create_workspaces is false",
    );
    // Owners and admins still do.
    admin
        .workspaces
        .create_workspace(new_workspace("owners"))
        .await
        .unwrap();
    // A quota of the platform's, through the CLI.
    let out = cli
        .ok(&["-o", "json", "org", "update", "--max-members", "7"])
        .await;
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["settings"]["quotas"]["max_members"], 7);
    assert_eq!(out["usage"]["members"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_admins_create_orgs_whose_owners_sign_in_alone() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let admin_token = plane.token.clone().unwrap();
    let mut platform = plane.api(&admin_token).await;
    let cli = Cli {
        server: plane.url(),
        token: Some(&admin_token),
    };

    // Through the CLI: an org and its owner's one-time password.
    let created = cli
        .ok(&[
            "-o",
            "json",
            "org",
            "create",
            "globex",
            "--owner",
            "Ann@Globex.io",
            "--display-name",
            "Globex",
        ])
        .await;
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["org"], "globex");
    assert_eq!(created["owner"], "ann@globex.io");
    let one_time = created["one_time_password"].as_str().unwrap().to_owned();
    assert!(one_time.len() >= 12, "{one_time}");

    // Bad input: nothing half-made.
    let create = |name: &str, email: &str| v1::CreateOrgRequest {
        name: name.into(),
        display_name: String::new(),
        owner_email: email.into(),
    };
    refused(
        platform
            .orgs
            .create_org(create("globex", "bob@globex.io"))
            .await,
        Code::AlreadyExists,
        "an org named 'globex' already exists",
    );
    refused(
        platform
            .orgs
            .create_org(create("initech", "ann@globex.io"))
            .await,
        Code::AlreadyExists,
        "ann@globex.io",
    );
    refused(
        platform
            .orgs
            .create_org(create("Not A Slug", "bob@x.io"))
            .await,
        Code::InvalidArgument,
        "name:",
    );
    refused(
        platform.orgs.create_org(create("initech", "")).await,
        Code::InvalidArgument,
        "owner_email: is required",
    );
    refused(
        platform
            .orgs
            .create_org(create("initech", "not-an-email"))
            .await,
        Code::InvalidArgument,
        "owner_email",
    );
    let listed = cli.ok(&["-o", "json", "org", "list"]).await;
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    let names: Vec<&str> = listed.iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2, "the refused creates made no org: {names:?}");
    assert!(names.contains(&"globex"), "{names:?}");

    // The owner signs in with the one-time password, must change it, and
    // then acts in their org only.
    let mut anonymous = plane.api_with("unused", None).await;
    let session = anonymous
        .auth
        .login(v1::LoginRequest {
            email: "ann@globex.io".into(),
            password: one_time.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut first = plane.api(&session.access_token).await;
    refused(
        first
            .workspaces
            .create_workspace(new_workspace("globex-shop"))
            .await,
        Code::FailedPrecondition,
        "change it first",
    );
    first
        .auth
        .change_password(v1::ChangePasswordRequest {
            current_password: one_time,
            new_password: "correct horse battery staple".into(),
        })
        .await
        .unwrap();
    let session = anonymous
        .auth
        .login(v1::LoginRequest {
            email: "ann@globex.io".into(),
            password: "correct horse battery staple".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut ann = plane.api(&session.access_token).await;
    let me = ann
        .auth
        .who_am_i(v1::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.org_id, created["id"].as_str().unwrap());
    ann.workspaces
        .create_workspace(new_workspace("globex-shop"))
        .await
        .unwrap();
    // Not a platform admin: no orgs of their own making, only theirs listed.
    refused(
        ann.orgs
            .create_org(create("initech", "eve@initech.io"))
            .await,
        Code::PermissionDenied,
        "only a platform admin",
    );
    let theirs = ann
        .orgs
        .list_orgs(v1::ListOrgsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .orgs;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].name, "globex");
    assert_eq!(theirs[0].display_name, "Globex");
    // The platform's workspaces are not theirs, nor theirs the platform's.
    let mine = platform
        .workspaces
        .list_workspaces(v1::ListWorkspacesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .workspaces;
    assert!(mine.is_empty(), "{mine:?}");

    // Both orgs' audit trails tell who made the org.
    for api in [&mut platform, &mut ann] {
        let events = api
            .audit
            .list_audit_events(v1::ListAuditEventsRequest {
                action: "org.create".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].resource, "org/globex");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_org_is_gone_from_the_nodes_that_serve_both_orgs() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let admin_token = plane.token.clone().unwrap();
    let mut platform = plane.api(&admin_token).await;
    let cli = Cli {
        server: plane.url(),
        token: Some(&admin_token),
    };
    let nodes = [
        Node::start(dir.path(), &plane.url()).await.unwrap(),
        Node::start(dir.path(), &plane.url()).await.unwrap(),
    ];

    // Two orgs made through the CLI, each with a workspace answering the
    // same path, served by both nodes.
    let mut owners = Vec::new();
    for (org, owner) in [("acme", "bea@acme.io"), ("globex", "ann@globex.io")] {
        let created = cli
            .ok(&["-o", "json", "org", "create", org, "--owner", owner])
            .await;
        let created: serde_json::Value = serde_json::from_str(&created).unwrap();
        let one_time = created["one_time_password"].as_str().unwrap();
        let mut api = fixtures::owner_session(&plane, owner, one_time).await;
        let workspace = format!("{org}-shop");
        api.workspaces
            .create_workspace(new_workspace(&workspace))
            .await
            .unwrap();
        fixtures::add_routes(&mut api, &workspace, vec![route("GET", "/hello", 200, org)]).await;
        owners.push(api);
    }
    let mut ann = owners.pop().unwrap();
    for node in &nodes {
        node.wait_for("/w/acme-shop/hello", 200, |b| b == "acme")
            .await;
        node.wait_for("/w/globex-shop/hello", 200, |b| b == "globex")
            .await;
    }

    // Bad requests change nothing: no org named, no reason, a short one,
    // a stale etag; an owner cannot reach another org.
    let delete = |org: &str, reason: &str, etag: &str| v1::DeleteOrgRequest {
        org: org.into(),
        reason: reason.into(),
        etag: etag.into(),
    };
    refused(
        platform
            .orgs
            .delete_org(delete("", "closing it down", ""))
            .await,
        Code::InvalidArgument,
        "org: is required",
    );
    refused(
        platform.orgs.delete_org(delete("globex", "", "")).await,
        Code::InvalidArgument,
        "reason: say why",
    );
    refused(
        platform.orgs.delete_org(delete("globex", "bye", "")).await,
        Code::InvalidArgument,
        "got 3",
    );
    refused(
        platform
            .orgs
            .delete_org(delete("globex", "closing it down", "99"))
            .await,
        Code::Aborted,
        "etag",
    );
    let platform_org = get(&mut platform, "").await.unwrap();
    refused(
        ann.orgs
            .delete_org(delete(&platform_org.name, "taking over the platform", ""))
            .await,
        Code::NotFound,
        "not found",
    );
    // The platform's own org holds its only admins.
    refused(
        platform
            .orgs
            .delete_org(delete(&platform_org.name, "starting over again", ""))
            .await,
        Code::FailedPrecondition,
        "platform admin",
    );
    let stderr = cli.fails(&["org", "delete", "globex"]).await;
    assert!(stderr.contains("needs a reason"), "{stderr}");
    assert_eq!(
        get(&mut ann, "").await.unwrap().usage.unwrap().workspaces,
        1
    );

    // Through the CLI, for a reason.
    let out = cli
        .ok(&[
            "-o",
            "json",
            "--reason",
            "globex closed its account (ticket 4411)",
            "org",
            "delete",
            "globex",
        ])
        .await;
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["deleted"], "globex");
    assert_eq!(out["workspaces"], 1);
    assert_eq!(out["members"], 1);
    assert!(out["audit_events_pruned"].as_u64().unwrap() >= 3, "{out}");

    // Both nodes stop serving globex and go on serving acme.
    for node in &nodes {
        node.wait_for("/w/globex-shop/hello", 404, |b| {
            b.contains("workspace_not_found")
        })
        .await;
        let acme = node.get("/w/acme-shop/hello").await.unwrap();
        assert_eq!((acme.status, acme.body.as_str()), (200, "acme"));
    }
    // Its owner's session ends with it; the org is found no more.
    refused(
        ann.orgs.get_org(v1::GetOrgRequest::default()).await,
        Code::Unauthenticated,
        "",
    );
    refused(get(&mut platform, "globex").await, Code::NotFound, "globex");
    let listed = platform
        .orgs
        .list_orgs(v1::ListOrgsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .orgs;
    let names: Vec<&str> = listed.iter().map(|o| o.name.as_str()).collect();
    assert!(
        !names.contains(&"globex") && names.contains(&"acme"),
        "{names:?}"
    );
    assert_eq!(names.len(), 2, "{names:?}");
    // Its name is not given out again.
    refused(
        platform
            .orgs
            .create_org(v1::CreateOrgRequest {
                name: "globex".into(),
                display_name: String::new(),
                owner_email: "bob@globex.io".into(),
            })
            .await,
        Code::AlreadyExists,
        "deleted",
    );
    // The deleter's trail has it, with the reason.
    let events = platform
        .audit
        .list_audit_events(v1::ListAuditEventsRequest {
            action: "org.delete".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].resource, "org/globex");
    assert_eq!(events[0].reason, "globex closed its account (ticket 4411)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_admins_act_in_another_org_with_org_and_no_one_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let admin_token = plane.token.clone().unwrap();
    let mut platform = plane.api(&admin_token).await;
    let platform_org = get(&mut platform, "").await.unwrap().name;
    let created = platform
        .orgs
        .create_org(v1::CreateOrgRequest {
            name: "globex".into(),
            display_name: String::new(),
            owner_email: "ann@globex.io".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut ann =
        fixtures::owner_session(&plane, "ann@globex.io", &created.one_time_password).await;
    let globex_id = created.org.unwrap().id;
    let cli = Cli {
        server: plane.url(),
        token: Some(&admin_token),
    };

    // Through the CLI, the platform admin works in globex as its owner.
    cli.ok(&["--org", "globex", "workspace", "create", "globex-shop"])
        .await;
    let listed = cli
        .ok(&["--org", &globex_id, "-o", "json", "workspace", "list"])
        .await;
    assert!(listed.contains("globex-shop"), "{listed}");
    let own = cli.ok(&["-o", "json", "workspace", "list"]).await;
    assert!(!own.contains("globex-shop"), "{own}");
    let theirs = ann
        .workspaces
        .list_workspaces(v1::ListWorkspacesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .workspaces;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].slug, "globex-shop");
    // The platform admin made it without becoming one of its members.
    let members = ann
        .members
        .list_members(v1::ListMembersRequest {
            workspace: "globex-shop".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .members;
    assert!(members.is_empty(), "{members:?}");

    // Who they are stays theirs; where they act is globex.
    let mut acting = plane.api_in(&admin_token, "globex").await;
    let me = acting
        .auth
        .who_am_i(v1::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    let myself = platform
        .auth
        .who_am_i(v1::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.org_id, globex_id);
    assert_ne!(myself.org_id, globex_id);
    assert_eq!(me.principal, myself.principal);
    // What needs their own identity in their own org is refused plainly.
    refused(
        acting
            .users
            .list_api_tokens(v1::ListApiTokensRequest::default())
            .await,
        Code::PermissionDenied,
        "without --org",
    );
    refused(
        acting
            .auth
            .issue_environment_token(v1::IssueEnvironmentTokenRequest {
                workspace: "globex-shop".into(),
                environment: "prod".into(),
                reason: "checking prod for ann".into(),
                ttl_seconds: 0,
            })
            .await,
        Code::PermissionDenied,
        "ask an owner of the org",
    );
    // globex's trail names the platform admin, as such.
    let events = ann
        .audit
        .list_audit_events(v1::ListAuditEventsRequest {
            action: "workspace.create".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(
        events[0].actor.contains("(platform admin"),
        "{:?}",
        events[0].actor
    );

    // Nobody else acts in another org, and learns nothing of it.
    let mut ann_elsewhere = {
        let token = ann
            .users
            .create_api_token(v1::CreateApiTokenRequest {
                principal_id: String::new(),
                name: "ann".into(),
                ttl_days: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .secret;
        plane.api_in(&token, &platform_org).await
    };
    refused(
        ann_elsewhere
            .workspaces
            .list_workspaces(v1::ListWorkspacesRequest::default())
            .await,
        Code::PermissionDenied,
        "only a platform admin",
    );
    // An org that does not exist, for the platform admin: NOT_FOUND.
    let mut nowhere = plane.api_in(&admin_token, "nowhere").await;
    refused(
        nowhere
            .workspaces
            .list_workspaces(v1::ListWorkspacesRequest::default())
            .await,
        Code::NotFound,
        "org 'nowhere' not found",
    );
    let stderr = cli
        .fails(&["--org", "bad\u{7f}name", "workspace", "list"])
        .await;
    assert!(stderr.contains("--org"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anyone_signs_up_for_an_org_of_their_own_only_where_allowed() {
    let signup = |name: &str, email: &str, password: &str| v1::SignUpRequest {
        name: name.into(),
        display_name: String::new(),
        email: email.into(),
        password: password.into(),
    };
    const PASSWORD: &str = "a long enough passphrase";

    // Off by default: only platform admins create orgs.
    let closed_dir = tempfile::tempdir().unwrap();
    let closed = ControlPlane::start(closed_dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let mut anonymous = closed.api_with("unused", None).await;
    refused(
        anonymous
            .orgs
            .sign_up(signup("umbrella", "eve@umbrella.io", PASSWORD))
            .await,
        Code::PermissionDenied,
        "sign-up is off",
    );

    // Not beside identity providers, whose logins match users by e-mail:
    // sign-ups do not verify theirs.
    let refused_start = tokio::process::Command::new(mockplane_e2e::bin("mockplane-control-plane"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--allow-signup",
            "--oidc-issuers",
        ])
        .arg(closed_dir.path().join("issuers.yaml"))
        .arg("--data-dir")
        .arg(closed_dir.path().join("other"))
        .output()
        .await
        .unwrap();
    assert!(!refused_start.status.success());
    let stderr = String::from_utf8_lossy(&refused_start.stderr);
    assert!(
        stderr.contains("cannot be combined with --oidc-issuers"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start_with(
        dir.path(),
        "127.0.0.1:0",
        None,
        &["--allow-signup", "--signups-per-minute", "2"],
    )
    .await
    .unwrap();
    let mut anonymous = plane.api_with("unused", None).await;
    // Bad input is refused by field, and does not count against the rate.
    for (request, needle) in [
        (signup("Not A Slug", "eve@umbrella.io", PASSWORD), "name:"),
        (signup("umbrella", "", PASSWORD), "email: is required"),
        (signup("umbrella", "not-an-email", PASSWORD), "email"),
        (signup("umbrella", "eve@umbrella.io", "short"), "password:"),
    ] {
        refused(
            anonymous.orgs.sign_up(request).await,
            Code::InvalidArgument,
            needle,
        );
    }
    // Through the CLI; then a taken name; then past the rate.
    let cli = Cli {
        server: plane.url(),
        token: None,
    };
    let out = cli
        .ok_with(
            &[
                "-o",
                "json",
                "signup",
                "umbrella",
                "--email",
                "Eve@Umbrella.io",
                "--password-stdin",
            ],
            &[],
            Some(&format!("{PASSWORD}\n")),
        )
        .await;
    let out: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["org"], "umbrella");
    assert_eq!(out["owner"], "eve@umbrella.io");
    refused(
        anonymous
            .orgs
            .sign_up(signup("umbrella", "mallory@umbrella.io", PASSWORD))
            .await,
        Code::AlreadyExists,
        "org name or e-mail address is taken",
    );
    refused(
        anonymous
            .orgs
            .sign_up(signup("initech", "peter@initech.io", PASSWORD))
            .await,
        Code::ResourceExhausted,
        "at most 2 sign-ups a minute",
    );

    // Eve signs in and owns her org, and only that.
    let session = anonymous
        .auth
        .login(v1::LoginRequest {
            email: "eve@umbrella.io".into(),
            password: PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut eve = plane.api(&session.access_token).await;
    let me = eve
        .auth
        .who_am_i(v1::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    let principal = me.principal.unwrap();
    assert_eq!(me.org_id, out["id"].as_str().unwrap());
    assert_eq!(principal.org_role, "owner");
    eve.workspaces
        .create_workspace(new_workspace("umbrella-shop"))
        .await
        .unwrap();
    refused(
        eve.orgs
            .create_org(v1::CreateOrgRequest {
                name: "initech".into(),
                display_name: String::new(),
                owner_email: "peter@initech.io".into(),
            })
            .await,
        Code::PermissionDenied,
        "only a platform admin",
    );
    let theirs = eve
        .orgs
        .list_orgs(v1::ListOrgsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .orgs;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].name, "umbrella");
}
