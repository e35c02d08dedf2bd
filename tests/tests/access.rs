//! Getting in where one should not, through the real gRPC server: every
//! method without credentials or with bad ones, callers of another org,
//! viewers attempting each mutation, environment-scoped tokens, policies,
//! and signing in. Every refusal is checked to have changed nothing.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mockplane_control_plane::identity::jwt::{AUDIENCE, Claims, ISSUER, Signer};
use mockplane_control_plane::identity::token;
use mockplane_control_plane::store::{self, Store, WorkspaceRef};
use mockplane_e2e::fixtures::{self, new_workspace, route, set_reality};
use mockplane_e2e::{Api, ControlPlane};
use mockplane_proto::v1;
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::AsciiMetadataValue;
use uuid::Uuid;

/// Calls `path` with an empty message (every field at its default) and
/// `authorization` set to `bearer` when given.
async fn raw_call(
    channel: &tonic::transport::Channel,
    path: &str,
    bearer: Option<&str>,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(());
    if let Some(token) = bearer {
        let value: AsciiMetadataValue = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    let codec: tonic_prost::ProstCodec<(), ()> = tonic_prost::ProstCodec::default();
    grpc.unary(request, PathAndQuery::try_from(path).unwrap(), codec)
        .await
        .map(|_| ())
}

/// Calls `path` with a message that sets each string field of `fields`
/// its message has (the rest at defaults), as `bearer`, acting in `org`
/// (`x-mockplane-org`) when given.
async fn call_naming(
    channel: &tonic::transport::Channel,
    path: &str,
    bearer: &str,
    org: Option<&str>,
    fields: &[(&str, &str)],
) -> Result<(), tonic::Status> {
    use prost_reflect::{DynamicMessage, Value};

    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .expect("/package.Service/Method");
    let input = mockplane_proto::takes::pool()
        .get_service_by_name(service)
        .and_then(|s| s.methods().find(|m| m.name() == method))
        .expect("the method's descriptor")
        .input();
    let mut message = DynamicMessage::new(input.clone());
    for (field, value) in fields {
        if input
            .get_field_by_name(field)
            .is_some_and(|f| f.kind() == prost_reflect::Kind::String && !f.is_list())
        {
            message.set_field_by_name(field, Value::String((*value).into()));
        }
    }
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(message);
    let value: AsciiMetadataValue = format!("Bearer {bearer}").parse().unwrap();
    request.metadata_mut().insert("authorization", value);
    if let Some(org) = org {
        request
            .metadata_mut()
            .insert("x-mockplane-org", org.parse().unwrap());
    }
    grpc.unary::<DynamicMessage, (), _>(
        request,
        PathAndQuery::try_from(path).unwrap(),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .map(|_| ())
}

fn unsigned_token(claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    format!("{header}.{payload}.")
}

fn claims_for(org: Uuid, subject: &str, exp_offset: i64) -> Claims {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Claims {
        sub: subject.to_owned(),
        org,
        env: None,
        jti: Uuid::new_v4().to_string(),
        iat: now - 3600,
        exp: now + exp_offset,
        iss: ISSUER.to_owned(),
        aud: AUDIENCE.to_owned(),
    }
}

/// What the store holds, in a form two moments can be compared by.
async fn fingerprint(store: &dyn Store, org: Uuid) -> String {
    let revision = store.current_revision().await.unwrap();
    let principals = store
        .list_principals(org, None, None, 1000)
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| format!("{}:{}:{}:{}", p.name, p.org_role, p.disabled, p.version))
        .collect::<Vec<_>>();
    let roles = store.list_roles(org).await.unwrap();
    let workspaces = store
        .list_workspaces(org, None, None, 1000)
        .await
        .unwrap()
        .items;
    let mut parts = vec![
        format!("rev={revision}"),
        format!("{principals:?}"),
        format!("{roles:?}"),
    ];
    for ws in &workspaces {
        let key = WorkspaceRef::Id(ws.id);
        parts.push(format!("{ws:?}"));
        parts.push(format!(
            "{:?}",
            store.list_memberships(org, &key).await.unwrap()
        ));
        parts.push(format!(
            "{:?}",
            store.list_policies(org, &key).await.unwrap()
        ));
        parts.push(format!(
            "{:?}",
            store.list_access(org, &key, 100).await.unwrap()
        ));
    }
    parts.join("\n")
}

async fn open_store(dir: &Path) -> Arc<dyn Store> {
    store::open(&mockplane_e2e::database_url(dir).await)
        .await
        .unwrap()
}

struct Setup {
    plane: ControlPlane,
    store: Arc<dyn Store>,
    org: Uuid,
    admin: Api,
}

async fn setup(dir: &Path) -> Setup {
    let plane = ControlPlane::start(dir, "127.0.0.1:0", None).await.unwrap();
    let mut admin = plane.api(plane.token.as_deref().unwrap()).await;
    let me = admin
        .auth
        .who_am_i(v1::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    let org = me.org_id.parse().unwrap();
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
    let store = open_store(dir).await;
    Setup {
        plane,
        store,
        org,
        admin,
    }
}

async fn in_env(plane: &ControlPlane, api: &mut Api, environment: &str) -> Api {
    fixtures::in_env(plane, api, "shop", environment).await
}

async fn member(
    plane: &ControlPlane,
    admin: &mut Api,
    email: &str,
    roles: &[(&str, &str)],
) -> (String, String) {
    fixtures::member(plane, admin, "shop", email, roles).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_refuses_missing_and_bad_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let Setup {
        plane, store, org, ..
    } = setup(dir.path()).await;
    let channel = plane.channel().await;
    let owner = store
        .list_principals(org, None, None, 10)
        .await
        .unwrap()
        .items[0]
        .id;
    let subject = format!("user:{owner}");
    let signer = Signer::load_or_create(&dir.path().join("jwt.key")).unwrap();
    let other_key = Signer::new(&[7u8; 64]).unwrap();
    let expired = signer.sign(&claims_for(org, &subject, -600));
    let foreign = other_key.sign(&claims_for(org, &subject, 600));
    let unsigned = unsigned_token(&claims_for(org, &subject, 600));
    // A valid signature for an org that does not exist.
    let wrong_org = signer.sign(&claims_for(Uuid::new_v4(), &subject, 600));
    let before = fingerprint(&*store, org).await;

    let public: BTreeSet<&str> = [
        "/mockplane.v1.AuthService/Login",
        "/mockplane.v1.AuthService/Refresh",
        "/mockplane.v1.AuthService/Logout",
        "/mockplane.v1.OrgService/SignUp",
    ]
    .into();
    let cases: [(&str, Option<&str>, &str); 7] = [
        ("no token", None, "missing credentials"),
        (
            "an unknown API token",
            Some("mpt_unknown"),
            "API token is not valid",
        ),
        ("garbage", Some("not-a-token"), "neither an API token"),
        ("an expired token", Some(&expired), "expired"),
        ("a token signed by another key", Some(&foreign), "signature"),
        ("an unsigned token (alg none)", Some(&unsigned), "none"),
        (
            "a token of an org that does not exist",
            Some(&wrong_org),
            "no longer exists",
        ),
    ];
    let methods = mockplane_e2e::api_methods();
    for method in &methods {
        if public.contains(method.as_str()) {
            continue;
        }
        for (what, bearer, needle) in &cases {
            let status = raw_call(&channel, method, *bearer)
                .await
                .expect_err(&format!("{method} with {what} must fail"));
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{method} with {what}: {}",
                status.message()
            );
            assert!(
                status.message().contains(needle),
                "{method} with {what}: {:?} should mention {needle:?}",
                status.message()
            );
        }
    }
    assert_eq!(
        fingerprint(&*store, org).await,
        before,
        "a refused call changed something"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_org_sees_nothing_and_viewers_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Setup {
        plane,
        store,
        org,
        mut admin,
    } = setup(dir.path()).await;

    // A caller of another org: the workspace does not exist for them.
    store.create_org("globex").await.unwrap();
    let outsider = token::generate();
    store
        .add_token("globex", "intruder", &token::hash(&outsider))
        .await
        .unwrap();
    let mut intruder = plane.api(&outsider).await;
    let status = intruder
        .workspaces
        .get_workspace(v1::GetWorkspaceRequest {
            workspace: "shop".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    let listed = intruder
        .workspaces
        .list_workspaces(v1::ListWorkspacesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.workspaces.is_empty());
    let status = intruder
        .routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: "shop".into(),
            routes: vec![route("GET", "/pwned", 200, "x")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());

    // A member with no role in the workspace learns nothing either.
    let (_, stranger) = member(&plane, &mut admin, "stranger@acme.io", &[]).await;
    let mut stranger = plane.api(&stranger).await;
    let status = stranger
        .scenarios
        .list_scenarios(v1::ListScenariosRequest {
            workspace: "shop".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());

    // A viewer everywhere attempts every mutation; each is refused.
    let (viewer_id, viewer) = member(
        &plane,
        &mut admin,
        "viewer@acme.io",
        &[("dev", "viewer"), ("test", "viewer"), ("prod", "viewer")],
    )
    .await;
    let before = fingerprint(&*store, org).await;
    let mut v = plane.api(&viewer).await;
    let route_id = admin
        .routes
        .list_routes(v1::ListRoutesRequest {
            workspace: "shop".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .routes[0]
        .id
        .clone();
    let ws = || "shop".to_owned();
    let mut refusals: Vec<(&str, tonic::Status)> = Vec::new();
    macro_rules! attempt {
        ($name:literal, $call:expr) => {
            refusals.push(($name, $call.await.map(|_| ()).unwrap_err()));
        };
    }
    attempt!(
        "UpdateWorkspace",
        v.workspaces.update_workspace(v1::UpdateWorkspaceRequest {
            workspace: ws(),
            patch: Some(v1::Workspace {
                name: "Renamed".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()]
            }),
            ..Default::default()
        })
    );
    attempt!(
        "DeleteWorkspace",
        v.workspaces.delete_workspace(v1::DeleteWorkspaceRequest {
            workspace: ws(),
            ..Default::default()
        })
    );
    attempt!(
        "ResetState",
        v.workspaces
            .reset_state(v1::ResetStateRequest { workspace: ws() })
    );
    attempt!(
        "CreateEnvironment",
        v.environments
            .create_environment(v1::CreateEnvironmentRequest {
                workspace: ws(),
                environment: Some(v1::Environment {
                    name: "qa".into(),
                    ..Default::default()
                }),
            })
    );
    attempt!(
        "UpdateEnvironment",
        v.environments
            .update_environment(set_reality(&ws(), "dev", 5))
    );
    attempt!(
        "DeleteEnvironment",
        v.environments
            .delete_environment(v1::DeleteEnvironmentRequest {
                workspace: ws(),
                environment: "test".into(),
                ..Default::default()
            })
    );
    attempt!(
        "CreateRoutes",
        v.routes.create_routes(v1::CreateRoutesRequest {
            workspace: ws(),
            routes: vec![route("GET", "/new", 200, "x")],
            ..Default::default()
        })
    );
    attempt!(
        "UpdateRoute",
        v.routes.update_route(v1::UpdateRouteRequest {
            workspace: ws(),
            route_id: route_id.clone(),
            patch: Some(route("GET", "/orders", 500, "x")),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["response.status".into()]
            }),
            ..Default::default()
        })
    );
    attempt!(
        "DeleteRoutes",
        v.routes.delete_routes(v1::DeleteRoutesRequest {
            workspace: ws(),
            route_ids: vec![route_id.clone()],
            ..Default::default()
        })
    );
    attempt!(
        "CreateScenario",
        v.scenarios.create_scenario(v1::CreateScenarioRequest {
            workspace: ws(),
            scenario: Some(v1::Scenario {
                name: "checkout".into(),
                ..Default::default()
            }),
        })
    );
    attempt!(
        "UpdateScenario",
        v.scenarios.update_scenario(v1::UpdateScenarioRequest {
            workspace: ws(),
            scenario: "default".into(),
            patch: Some(v1::Scenario {
                description: "x".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["description".into()]
            }),
            ..Default::default()
        })
    );
    attempt!(
        "DeleteScenario",
        v.scenarios.delete_scenario(v1::DeleteScenarioRequest {
            workspace: ws(),
            scenario: "default".into(),
            ..Default::default()
        })
    );
    attempt!(
        "CreateVersion",
        v.scenarios.create_version(v1::CreateVersionRequest {
            workspace: ws(),
            scenario: "default".into(),
            ..Default::default()
        })
    );
    attempt!(
        "ImportOpenApi",
        v.scenarios.import_open_api(v1::ImportOpenApiRequest {
            workspace: ws(),
            scenario: Some(v1::Scenario {
                name: "petstore".into(),
                ..Default::default()
            }),
            document: "openapi: 3.0.0\ninfo: {title: t, version: '1'}\npaths: {}\n".into(),
        })
    );
    attempt!(
        "ImportScenario",
        v.scenarios.import_scenario(v1::ImportScenarioRequest {
            workspace: ws(),
            scenario: Some(v1::Scenario {
                name: "imported".into(),
                ..Default::default()
            }),
            routes: vec![route("GET", "/imported", 200, "x")],
        })
    );
    attempt!(
        "AdminDeployVersion",
        v.scenarios
            .admin_deploy_version(v1::AdminDeployVersionRequest {
                workspace: ws(),
                scenario: "default".into(),
                version: 1,
                environment: "test".into(),
            })
    );
    attempt!(
        "CreatePersona",
        v.personas.create_persona(v1::CreatePersonaRequest {
            workspace: ws(),
            persona: Some(v1::Persona {
                name: "default".into(),
                data: "{}".into(),
                ..Default::default()
            }),
        })
    );
    attempt!(
        "SetMember",
        v.members.set_member(v1::SetMemberRequest {
            workspace: ws(),
            environment: "prod".into(),
            principal_id: viewer_id.clone(),
            role: "admin".into(),
        })
    );
    attempt!(
        "RemoveMember",
        v.members.remove_member(v1::RemoveMemberRequest {
            workspace: ws(),
            environment: "dev".into(),
            principal_id: viewer_id.clone(),
        })
    );
    attempt!(
        "SetPolicy",
        v.members.set_policy(v1::SetPolicyRequest {
            workspace: ws(),
            policy: Some(v1::Policy {
                environment: "prod".into(),
                permission: "environment.chaos".into(),
                roles: vec!["viewer".into()],
                ..Default::default()
            }),
        })
    );
    attempt!(
        "CreateUser",
        v.users.create_user(v1::CreateUserRequest {
            email: "sneaky@acme.io".into(),
            ..Default::default()
        })
    );
    attempt!(
        "UpdatePrincipal",
        v.users.update_principal(v1::UpdatePrincipalRequest {
            id: viewer_id.clone(),
            org_role: "owner".into(),
            ..Default::default()
        })
    );
    attempt!(
        "CreateRole",
        v.roles.create_role(v1::CreateRoleRequest {
            role: Some(v1::Role {
                name: "superuser".into(),
                permissions: vec!["scenario.write".into()],
                ..Default::default()
            }),
        })
    );
    for (name, status) in &refusals {
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{name}: {}",
            status.message()
        );
        assert!(!status.message().is_empty(), "{name}");
    }
    assert_eq!(refusals.len(), 23);
    assert_eq!(
        fingerprint(&*store, org).await,
        before,
        "a refused mutation changed something"
    );

    // What a viewer may do, they can: read.
    v.routes
        .list_routes(v1::ListRoutesRequest {
            workspace: ws(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Their own API tokens are theirs to manage.
    v.users
        .create_api_token(v1::CreateApiTokenRequest {
            name: "laptop".into(),
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_tokens_and_policies_decide_per_environment() {
    let dir = tempfile::tempdir().unwrap();
    let Setup {
        plane,
        store,
        org,
        mut admin,
    } = setup(dir.path()).await;
    for (name, permissions) in [
        ("platform", vec!["environment.read", "environment.reality"]),
        (
            "qa",
            vec!["environment.read", "scenario.read", "environment.chaos"],
        ),
    ] {
        admin
            .roles
            .create_role(v1::CreateRoleRequest {
                role: Some(v1::Role {
                    name: name.into(),
                    permissions: permissions.into_iter().map(String::from).collect(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    for (environment, permission, roles) in [
        ("prod", "environment.reality", vec!["platform"]),
        ("test", "environment.chaos", vec!["qa", "admin"]),
        ("prod", "environment.chaos", vec!["qa"]),
    ] {
        let mut scoped = in_env(&plane, &mut admin, environment).await;
        scoped
            .members
            .set_policy(v1::SetPolicyRequest {
                workspace: "shop".into(),
                policy: Some(v1::Policy {
                    environment: environment.into(),
                    permission: permission.into(),
                    roles: roles.into_iter().map(String::from).collect(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
    }
    let (_, dev_token) = member(
        &plane,
        &mut admin,
        "dev@acme.io",
        &[("dev", "editor"), ("test", "editor"), ("prod", "platform")],
    )
    .await;
    let (_, qa_token) = member(
        &plane,
        &mut admin,
        "qa@acme.io",
        &[("test", "qa"), ("prod", "qa")],
    )
    .await;

    fn chaos(env: &str) -> v1::UpdateEnvironmentRequest {
        v1::UpdateEnvironmentRequest {
            workspace: "shop".into(),
            environment: env.into(),
            patch: Some(v1::Environment::default()),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["settings.chaos".into()],
            }),
            ..Default::default()
        }
    }

    let mut dev = plane.api(&dev_token).await;
    // An editor changes reality in dev; in prod, even the platform role
    // needs a token obtained with a reason.
    dev.environments
        .update_environment(set_reality("shop", "dev", 2))
        .await
        .unwrap();
    let status = dev
        .environments
        .update_environment(set_reality("shop", "prod", 3))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("env-token shop prod"),
        "{}",
        status.message()
    );

    let status = dev
        .auth
        .issue_environment_token(v1::IssueEnvironmentTokenRequest {
            workspace: "shop".into(),
            environment: "prod".into(),
            reason: "short".into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let prod_token = dev
        .auth
        .issue_environment_token(v1::IssueEnvironmentTokenRequest {
            workspace: "shop".into(),
            environment: "prod".into(),
            reason: "tuning prod latency, INC-42".into(),
            ttl_seconds: 300,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut prod = plane.api_with(&prod_token, None).await;
    prod.environments
        .update_environment(set_reality("shop", "prod", 3))
        .await
        .unwrap();
    // The prod token opens nothing else: not dev, not the org.
    let status = prod
        .environments
        .update_environment(set_reality("shop", "dev", 3))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("scoped to the `prod`"),
        "{}",
        status.message()
    );
    let status = prod
        .workspaces
        .create_workspace(new_workspace("side"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    // A dev token never opens prod.
    let dev_env_token = dev
        .auth
        .issue_environment_token(v1::IssueEnvironmentTokenRequest {
            workspace: "shop".into(),
            environment: "dev".into(),
            reason: "debugging issue #123".into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut dev_scoped = plane.api_with(&dev_env_token, None).await;
    let status = dev_scoped
        .environments
        .update_environment(set_reality("shop", "prod", 4))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    dev_scoped
        .environments
        .update_environment(set_reality("shop", "dev", 1))
        .await
        .unwrap();
    // Each grant is on the access log with its reason.
    let log = admin
        .auth
        .list_environment_access(v1::ListEnvironmentAccessRequest {
            workspace: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .grants;
    let reasons: Vec<_> = log
        .iter()
        .map(|g| (g.environment.as_str(), g.reason.as_str()))
        .collect();
    assert_eq!(
        reasons[..2],
        [
            ("dev", "debugging issue #123"),
            ("prod", "tuning prod latency, INC-42")
        ]
    );

    // Only platform changes reality in prod: the org owner, with a prod
    // token, is refused by the policy.
    let owner_prod = admin
        .auth
        .issue_environment_token(v1::IssueEnvironmentTokenRequest {
            workspace: "shop".into(),
            environment: "prod".into(),
            reason: "owner trying prod reality".into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut owner_prod = plane.api_with(&owner_prod, None).await;
    let status = owner_prod
        .environments
        .update_environment(set_reality("shop", "prod", 5))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status
            .message()
            .contains("reserved by policy for the roles platform"),
        "{}",
        status.message()
    );

    // qa changes chaos in test (and, with a token, in prod); an editor does
    // not, though chaos is among an editor's permissions.
    let mut qa = plane.api(&qa_token).await;
    qa.environments
        .update_environment(chaos("test"))
        .await
        .unwrap();
    let status = dev
        .environments
        .update_environment(chaos("test"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let qa_prod = qa
        .auth
        .issue_environment_token(v1::IssueEnvironmentTokenRequest {
            workspace: "shop".into(),
            environment: "prod".into(),
            reason: "chaos drill in prod".into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    plane
        .api_with(&qa_prod, None)
        .await
        .environments
        .update_environment(chaos("prod"))
        .await
        .unwrap();
    // qa has no role in dev at all.
    let status = qa
        .environments
        .update_environment(chaos("dev"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(
        status.message().contains("no role in the `dev`"),
        "{}",
        status.message()
    );

    // What the store holds agrees: prod got reality 3 from the platform
    // member, nothing from the owner.
    let ws = store
        .get_workspace(
            org,
            &WorkspaceRef::Slug(mockplane_shared::Slug::parse("shop").unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(ws.environment("prod").unwrap().settings.reality, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_log_in_refresh_once_and_lose_access_when_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let Setup {
        plane, mut admin, ..
    } = setup(dir.path()).await;
    // The first run printed the owner's one-time password.
    let owner_email = plane.process.event("bootstrap", "admin_email").unwrap();
    let owner_password = plane.process.event("bootstrap", "admin_password").unwrap();
    let mut anonymous = plane.api("unused").await;
    anonymous
        .auth
        .login(v1::LoginRequest {
            email: owner_email.to_uppercase(),
            password: owner_password,
        })
        .await
        .unwrap();

    let created = admin
        .users
        .create_user(v1::CreateUserRequest {
            email: "ada@acme.io".into(),
            name: "Ada".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let one_time = created.one_time_password;
    assert_eq!(one_time.len(), 24);
    for (email, password) in [
        ("ada@acme.io", "wrong password!"),
        ("nobody@acme.io", one_time.as_str()),
    ] {
        let status = anonymous
            .auth
            .login(v1::LoginRequest {
                email: email.into(),
                password: password.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "wrong e-mail or password");
    }
    let session = anonymous
        .auth
        .login(v1::LoginRequest {
            email: "ada@acme.io".into(),
            password: one_time.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut ada = plane.api(&session.access_token).await;
    assert!(session.must_change_password);
    let me = ada
        .auth
        .who_am_i(v1::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.credential, "access_token");
    let principal = me.principal.unwrap();
    assert_eq!(principal.email, "ada@acme.io");
    assert!(principal.must_change_password);
    // A session opened with a one-time password does nothing else until
    // the password is changed (WhoAmI above still answers).
    let status = ada
        .workspaces
        .list_workspaces(v1::ListWorkspacesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("one-time password"),
        "{}",
        status.message()
    );
    let status = ada
        .auth
        .issue_environment_token(v1::IssueEnvironmentTokenRequest {
            workspace: "shop".into(),
            environment: "prod".into(),
            reason: "trying".into(),
            ttl_seconds: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = ada
        .auth
        .change_password(v1::ChangePasswordRequest {
            current_password: one_time.clone(),
            new_password: "short".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    ada.auth
        .change_password(v1::ChangePasswordRequest {
            current_password: one_time.clone(),
            new_password: "a much longer passphrase".into(),
        })
        .await
        .unwrap();

    // The new password ended the session opened with the old one.
    let status = anonymous
        .auth
        .refresh(v1::RefreshRequest {
            refresh_token: session.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert!(
        status.message().contains("session was ended"),
        "{}",
        status.message()
    );
    let session = anonymous
        .auth
        .login(v1::LoginRequest {
            email: "ada@acme.io".into(),
            password: "a much longer passphrase".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!session.must_change_password);
    let mut ada = plane.api(&session.access_token).await;
    ada.workspaces
        .list_workspaces(v1::ListWorkspacesRequest::default())
        .await
        .unwrap();

    // Logging out ends the session: its refresh token is refused after,
    // and a second logout is told there is no session.
    let other = anonymous
        .auth
        .login(v1::LoginRequest {
            email: "ada@acme.io".into(),
            password: "a much longer passphrase".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let renewed_other = anonymous
        .auth
        .refresh(v1::RefreshRequest {
            refresh_token: other.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    // Any token of the session ends all of it, the used one included.
    anonymous
        .auth
        .logout(v1::LogoutRequest {
            refresh_token: other.refresh_token.clone(),
        })
        .await
        .unwrap();
    let status = anonymous
        .auth
        .refresh(v1::RefreshRequest {
            refresh_token: renewed_other.refresh_token.clone(),
        })
        .await
        .unwrap_err();
    assert!(
        status.message().contains("session was ended"),
        "{}",
        status.message()
    );
    let status = anonymous
        .auth
        .logout(v1::LogoutRequest {
            refresh_token: "mpt_not-a-session".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = anonymous
        .auth
        .logout(v1::LogoutRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // Sign-ins, refreshes and logouts are on the record as Ada.
    let sessions: Vec<(String, String)> = admin
        .audit
        .list_audit_events(v1::ListAuditEventsRequest {
            action: "session.".into(),
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
        .into_iter()
        .filter(|e| e.actor == "ada@acme.io")
        .map(|e| (e.action, e.credential))
        .rev()
        .collect();
    let sessions: Vec<(&str, &str)> = sessions
        .iter()
        .map(|(a, c)| (a.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        sessions,
        [
            ("session.start", "password"),
            ("session.start", "password"),
            ("session.start", "password"),
            ("session.refresh", "refresh_token"),
            ("session.end", "refresh_token"),
        ]
    );

    // A refresh token works once; its reuse revokes the session.
    let renewed = anonymous
        .auth
        .refresh(v1::RefreshRequest {
            refresh_token: session.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let status = anonymous
        .auth
        .refresh(v1::RefreshRequest {
            refresh_token: session.refresh_token,
        })
        .await
        .unwrap_err();
    assert!(
        status.message().contains("already used"),
        "{}",
        status.message()
    );
    let status = anonymous
        .auth
        .refresh(v1::RefreshRequest {
            refresh_token: renewed.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // Disabling a user ends their access at once, tokens and all.
    admin
        .users
        .update_principal(v1::UpdatePrincipalRequest {
            id: me_id(&mut ada).await,
            disabled: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    let status = ada.auth.who_am_i(v1::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = anonymous
        .auth
        .login(v1::LoginRequest {
            email: "ada@acme.io".into(),
            password: "a much longer passphrase".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

async fn me_id(api: &mut Api) -> String {
    api.auth
        .who_am_i(v1::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner()
        .principal
        .unwrap()
        .id
}

/// No RPC reaches the store without a grant: every method is called as
/// the org's owner and as a member with no role in the workspace, with
/// requests that name the workspace and an environment wherever the
/// message has such fields, and the store's own check
/// (`store::guard`, which refuses a request that was not authorized) never
/// fires; what the member was refused changed nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_reaches_the_store_only_through_a_grant() {
    let dir = tempfile::tempdir().unwrap();
    let Setup {
        plane,
        store,
        org,
        mut admin,
    } = setup(dir.path()).await;
    let (_, stranger) = member(&plane, &mut admin, "stranger@acme.io", &[]).await;
    let owner = plane.token.clone().unwrap();
    let channel = plane.channel().await;
    let call = |path: String, bearer: String| {
        let channel = channel.clone();
        async move {
            call_naming(
                &channel,
                &path,
                &bearer,
                None,
                &[
                    ("workspace", "shop"),
                    ("environment", "dev"),
                    ("env", "dev"),
                    ("from", "dev"),
                    ("to", "test"),
                ],
            )
            .await
        }
    };

    let before = fingerprint(&*store, org).await;
    let mut answered = 0;
    for method in mockplane_e2e::api_methods() {
        // Ending the owner's own session is for last.
        if method.ends_with("/Logout") || method.ends_with("/RevokeApiToken") {
            continue;
        }
        let refused = call(method.clone(), stranger.clone()).await;
        if let Err(status) = &refused {
            assert!(
                !status.message().contains("without an authorization grant"),
                "{method} reached the store for a member without a grant: {status:?}"
            );
        }
        answered += usize::from(refused.is_ok());
    }
    assert_eq!(
        fingerprint(&*store, org).await,
        before,
        "a call of a member with no role changed something"
    );
    for method in mockplane_e2e::api_methods() {
        if method.ends_with("/Logout") || method.ends_with("/RevokeApiToken") {
            continue;
        }
        if let Err(status) = call(method.clone(), owner.clone()).await {
            assert!(
                !status.message().contains("without an authorization grant"),
                "{method} reached the store without a grant: {status:?}"
            );
        }
    }
    // Some calls of the member (its own identity, the org's roles) were
    // answered: the member was authenticated, not turned away at the door.
    assert!(answered > 0);
}

/// Adding an environment needs `workspace.update`; placing it on the
/// promotion chain also needs `environment.manage` (it changes where every
/// promotion goes), and the settings it starts with need what changing
/// them would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_environment_on_the_chain_needs_environment_manage() {
    let dir = tempfile::tempdir().unwrap();
    let Setup {
        plane, mut admin, ..
    } = setup(dir.path()).await;
    admin
        .roles
        .create_role(v1::CreateRoleRequest {
            role: Some(v1::Role {
                name: "renamer".into(),
                permissions: vec!["workspace.read".into(), "workspace.update".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let (_, token) = member(
        &plane,
        &mut admin,
        "renamer@acme.io",
        &[("dev", "renamer"), ("test", "renamer"), ("prod", "renamer")],
    )
    .await;
    let mut renamer = plane.api(&token).await;
    let create = |name: &str, chain_position: u32, settings: Option<v1::EnvironmentSettings>| {
        v1::CreateEnvironmentRequest {
            workspace: "shop".into(),
            environment: Some(v1::Environment {
                name: name.into(),
                chain_position,
                settings,
                ..Default::default()
            }),
        }
    };
    renamer
        .environments
        .create_environment(create("sandbox", 0, None))
        .await
        .unwrap();
    for (what, request) in [
        ("on the chain", create("staging", 2, None)),
        (
            "with chaos",
            create(
                "chaotic",
                0,
                Some(v1::EnvironmentSettings {
                    chaos: Some(v1::Chaos {
                        rate: 0.5,
                        statuses: vec![v1::WeightedStatus {
                            status: 503,
                            weight: 1,
                        }],
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            ),
        ),
    ] {
        let status = renamer
            .environments
            .create_environment(request)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
    }
    let status = renamer
        .environments
        .create_environment(create("staging", 2, None))
        .await
        .unwrap_err();
    assert!(
        status.message().contains("environment.manage"),
        "{}",
        status.message()
    );
    admin
        .environments
        .create_environment(create("staging", 2, None))
        .await
        .unwrap();
}

/// The access matrix across orgs: every RPC is called, with requests that
/// name org globex's workspace wherever the message has such fields, as
/// globex's owner, as a platform admin acting in globex (`x-mockplane-org`),
/// and as a member of another org, with and without naming globex. The
/// platform admin is answered as the owner is (but where a call needs their
/// own identity in their own org); the member of another org is refused
/// everything of globex and changes none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_by_platform_admin_org_owner_and_another_orgs_member() {
    let dir = tempfile::tempdir().unwrap();
    let Setup {
        plane,
        store,
        mut admin,
        ..
    } = setup(dir.path()).await;
    let platform_token = plane.token.clone().unwrap();
    // Another org's member, with roles in that org's workspace.
    let (_, outsider) = member(&plane, &mut admin, "dev@acme.io", &[("dev", "editor")]).await;
    let created = admin
        .orgs
        .create_org(v1::CreateOrgRequest {
            name: "globex".into(),
            display_name: String::new(),
            owner_email: "ann@globex.io".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let globex: Uuid = created.org.unwrap().id.parse().unwrap();
    let mut ann =
        fixtures::owner_session(&plane, "ann@globex.io", &created.one_time_password).await;
    ann.workspaces
        .create_workspace(new_workspace("globex-shop"))
        .await
        .unwrap();
    fixtures::add_routes(
        &mut ann,
        "globex-shop",
        vec![route("GET", "/orders", 200, "[]")],
    )
    .await;
    let owner = ann
        .users
        .create_api_token(v1::CreateApiTokenRequest {
            name: "matrix".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .secret;

    let channel = plane.channel().await;
    let call = |path: String, bearer: String, org: Option<&'static str>| {
        let channel = channel.clone();
        async move {
            call_naming(
                &channel,
                &path,
                &bearer,
                org,
                &[
                    ("workspace", "globex-shop"),
                    ("environment", "dev"),
                    ("env", "dev"),
                    ("from", "dev"),
                    ("to", "test"),
                    ("org", "globex"),
                ],
            )
            .await
            .map_err(|status| status.code())
        }
    };
    // Where the platform admin's answer differs from the owner's, and why.
    let differs = [
        // Platform admins only.
        "OrgService/CreateOrg",
        // Their own tokens and environment tokens live in their own org.
        "UserService/CreateApiToken",
        "UserService/ListApiTokens",
        "AuthService/IssueEnvironmentToken",
    ];
    let skipped = |method: &str| {
        // Ending a session or a token is not a question of org, and
        // signing in has no caller yet.
        [
            "/Logout",
            "/RevokeApiToken",
            "/Login",
            "/Refresh",
            "/SignUp",
        ]
        .iter()
        .any(|end| method.ends_with(end))
    };

    let before = fingerprint(&*store, globex).await;
    let mut matched = 0;
    let mut answered = 0;
    for method in mockplane_e2e::api_methods() {
        if skipped(&method) {
            continue;
        }
        let name = method.trim_start_matches("/mockplane.v1.");
        // Another org's member, naming globex: refused at the door.
        let named = call(method.clone(), outsider.clone(), Some("globex")).await;
        assert_eq!(
            named,
            Err(Code::PermissionDenied),
            "{name} for another org's member acting in globex"
        );
        // Without naming it: nothing of globex's is theirs.
        let outside = call(method.clone(), outsider.clone(), None).await;
        assert_eq!(
            fingerprint(&*store, globex).await,
            before,
            "{name} by another org's member ({outside:?}) changed globex"
        );
        let by_owner = call(method.clone(), owner.clone(), None).await;
        let by_platform = call(method.clone(), platform_token.clone(), Some("globex")).await;
        if differs.contains(&name) {
            assert_ne!(by_owner, by_platform, "{name} is listed as differing");
        } else {
            assert_eq!(
                by_owner, by_platform,
                "{name}: the owner got {by_owner:?}, the platform admin in globex {by_platform:?}"
            );
            matched += 1;
            answered += usize::from(by_owner.is_ok());
        }
    }
    assert!(matched > 50, "{matched}");
    // Many calls were answered, so equal answers are not all refusals of
    // an empty request.
    assert!(answered > 20, "{answered}");
}
