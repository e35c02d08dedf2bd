//! What write methods take: every field a create or update does not apply
//! is refused naming it, and CreateWorkspace applies every field it takes.

use std::collections::HashMap;

use mockplane_e2e::fixtures::route;
use mockplane_e2e::{ControlPlane, Node};
use mockplane_proto::takes::{self, Takes};
use mockplane_proto::v1;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value};
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;

/// A value of the field's type that is not its default.
fn sample(field: &FieldDescriptor) -> Value {
    let single = |kind: Kind| match kind {
        Kind::String => Value::String("x".into()),
        Kind::Bytes => Value::Bytes(b"x".to_vec().into()),
        Kind::Bool => Value::Bool(true),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(1),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(1),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(1),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(1),
        Kind::Float => Value::F32(1.0),
        Kind::Double => Value::F64(1.0),
        Kind::Enum(_) => Value::EnumNumber(1),
        Kind::Message(message) => Value::Message(DynamicMessage::new(message)),
    };
    if field.is_map() {
        let entry = field.kind();
        let entry = entry.as_message().unwrap();
        let value = single(entry.map_entry_value_field().kind());
        Value::Map(HashMap::from([(MapKey::String("x".into()), value)]))
    } else if field.is_list() {
        Value::List(vec![single(field.kind())])
    } else {
        single(field.kind())
    }
}

/// A request of `descriptor` with only the field at `path` set (and the
/// messages on the way to it, as one element where they are lists).
fn with_path(descriptor: &MessageDescriptor, path: &[&str]) -> DynamicMessage {
    let mut message = DynamicMessage::new(descriptor.clone());
    let field = descriptor.get_field_by_name(path[0]).unwrap();
    let value = if path.len() == 1 {
        sample(&field)
    } else {
        let inner = with_path(field.kind().as_message().unwrap(), &path[1..]);
        if field.is_list() {
            Value::List(vec![Value::Message(inner)])
        } else {
            Value::Message(inner)
        }
    };
    message.set_field(&field, value);
    message
}

/// Every path of a request that its method does not take: walked into
/// messages that hold taken fields, not into well-known types.
fn not_taken(takes: &Takes, descriptor: &MessageDescriptor, prefix: &str, out: &mut Vec<String>) {
    for field in descriptor.fields() {
        let path = if prefix.is_empty() {
            field.name().to_owned()
        } else {
            format!("{prefix}.{}", field.name())
        };
        if takes.takes(&path) {
            continue;
        }
        if takes.takes_inside(&path) {
            let kind = field.kind();
            let inner = kind.as_message().unwrap();
            not_taken(takes, inner, &path, out);
        } else {
            out.push(path);
        }
    }
}

/// The place a refusal names: list elements get their index.
fn shown(descriptor: &MessageDescriptor, path: &str) -> String {
    let mut shown = String::new();
    let mut message = descriptor.clone();
    for part in path.split('.') {
        let field = message.get_field_by_name(part).unwrap();
        if !shown.is_empty() {
            shown.push('.');
        }
        shown.push_str(part);
        if let Some(inner) = field.kind().as_message().cloned() {
            if field.is_list() && !path.ends_with(part) {
                shown.push_str("[0]");
            }
            message = inner;
        }
    }
    shown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_method_refuses_what_it_does_not_take() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let token = plane.token.clone().unwrap();
    let channel = plane.channel().await;
    let mut checked = 0;
    let mut declarations: Vec<&Takes> = takes::all().collect();
    declarations.sort_by_key(|t| t.method);
    for takes in declarations {
        let descriptor = takes.descriptor();
        let mut paths = Vec::new();
        not_taken(takes, &descriptor, "", &mut paths);
        for path in paths {
            let parts: Vec<&str> = path.split('.').collect();
            let message = with_path(&descriptor, &parts);
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            grpc.ready().await.unwrap();
            let mut request = tonic::Request::new(message);
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            let route = PathAndQuery::try_from(format!("/mockplane.v1.{}", takes.method)).unwrap();
            let status = grpc
                .unary::<DynamicMessage, (), _>(request, route, tonic_prost::ProstCodec::default())
                .await
                .expect_err(&format!("{} took {path}", takes.method));
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "{}: {path}: {status:?}",
                takes.method
            );
            let place = shown(&descriptor, &path);
            assert!(
                status
                    .message()
                    .starts_with(&format!("{place}: cannot be set in")),
                "{}: {path}: {}",
                takes.method,
                status.message()
            );
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} fields checked");
}

/// CreateWorkspace applies every field it takes: a workspace can be born
/// protected by keys, with its own chain, active environment and defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_workspace_applies_every_field_it_takes() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let node = Node::start(dir.path(), &plane.url()).await.unwrap();
    let mut api = plane.api(plane.token.as_deref().unwrap()).await;
    let wanted = v1::Workspace {
        slug: "locked".into(),
        name: "Locked".into(),
        description: "keys from the start".into(),
        active_environment: "test".into(),
        promotion_chain: vec!["test".into(), "prod".into()],
        allow_promotion_skips: true,
        require_api_keys: true,
        environment_defaults: Some(v1::EnvironmentSettings {
            reality_level: Some(2),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = api
        .workspaces
        .create_workspace(v1::CreateWorkspaceRequest {
            workspace: Some(wanted.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    let read = api
        .workspaces
        .get_workspace(v1::GetWorkspaceRequest {
            workspace: "locked".into(),
        })
        .await
        .unwrap()
        .into_inner();
    for got in [&created, &read] {
        assert_eq!(got.slug, wanted.slug);
        assert_eq!(got.name, wanted.name);
        assert_eq!(got.description, wanted.description);
        assert_eq!(got.active_environment, "test");
        assert_eq!(got.promotion_chain, ["test", "prod"]);
        assert!(got.allow_promotion_skips);
        assert!(got.require_api_keys);
        assert_eq!(
            got.environment_defaults.as_ref().unwrap().reality_level,
            Some(2)
        );
        assert_eq!(got.environments.len(), 3, "dev stays, off the chain");
    }

    // It serves its mocks to no one without a key, from the first route on.
    mockplane_e2e::fixtures::add_routes(&mut api, "locked", vec![route("GET", "/a", 200, "a")])
        .await;
    let reply = node.wait_for("/w/locked/a", 401, |_| true).await;
    assert!(reply.body.contains("api_key_required"), "{}", reply.body);

    // Wrong values are refused naming the field; nothing is created.
    for (workspace, field) in [
        (
            v1::Workspace {
                slug: "bad-chain".into(),
                promotion_chain: vec!["dev".into(), "qa".into()],
                ..Default::default()
            },
            "workspace.promotion_chain[1]",
        ),
        (
            v1::Workspace {
                slug: "bad-chain".into(),
                promotion_chain: vec!["dev".into(), "dev".into()],
                ..Default::default()
            },
            "workspace.promotion_chain[1]",
        ),
        (
            v1::Workspace {
                slug: "bad-active".into(),
                active_environment: "qa".into(),
                ..Default::default()
            },
            "workspace.active_environment",
        ),
        (
            v1::Workspace {
                slug: "bad-id".into(),
                id: "0190a5a8-0000-7000-8000-000000000000".into(),
                ..Default::default()
            },
            "workspace.id",
        ),
        (
            v1::Workspace {
                slug: "bad-count".into(),
                route_count: 3,
                ..Default::default()
            },
            "workspace.route_count",
        ),
    ] {
        let status = api
            .workspaces
            .create_workspace(v1::CreateWorkspaceRequest {
                workspace: Some(workspace),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with(&format!("{field}:")),
            "{field}: {}",
            status.message()
        );
    }
    let listed = api
        .workspaces
        .list_workspaces(v1::ListWorkspacesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let slugs: Vec<&str> = listed.workspaces.iter().map(|w| w.slug.as_str()).collect();
    assert_eq!(slugs, ["locked"]);
}

/// The API reads an unset method and status as mock files do (GET, 200),
/// names two routes of one call that match the same requests, and the
/// first run's admin token is in the data folder, for the owner only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_take_mock_file_defaults_and_one_call_names_its_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let token_file = dir.path().join("admin-token");
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap().trim(),
        plane.token.as_deref().unwrap()
    );
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let mut api = plane.api(plane.token.as_deref().unwrap()).await;
    api.workspaces
        .create_workspace(mockplane_e2e::fixtures::new_workspace("shop"))
        .await
        .unwrap();
    let bare = v1::Route {
        path: "/a".into(),
        response: Some(v1::MockResponse::default()),
        ..Default::default()
    };
    let created = api
        .routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: "shop".into(),
            routes: vec![bare.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.routes[0].method, "GET");
    assert_eq!(created.routes[0].response.as_ref().unwrap().status, 200);

    let twice = |path: &str| v1::Route {
        path: path.into(),
        ..bare.clone()
    };
    let status = api
        .routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: "shop".into(),
            routes: vec![twice("/b"), twice("/c"), twice("/b")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.message(),
        "routes[2]: GET /b matches the same requests as routes[0] of this request"
    );
    // A clash with a route the workspace has is still named as such.
    let status = api
        .routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: "shop".into(),
            routes: vec![twice("/a")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        status
            .message()
            .contains("a route the workspace already has"),
        "{}",
        status.message()
    );
}

/// Fields a method reads only in some cases are refused in the others, and
/// a role's description can be cleared without touching its permissions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_fields_are_refused_where_they_mean_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let mut api = plane.api(plane.token.as_deref().unwrap()).await;
    api.workspaces
        .create_workspace(mockplane_e2e::fixtures::new_workspace("shop"))
        .await
        .unwrap();
    let status = api
        .notifications
        .create_notification_channel(v1::CreateNotificationChannelRequest {
            workspace: "shop".into(),
            channel: Some(v1::NotificationChannel {
                kind: "webhook".into(),
                target: "http://127.0.0.1:1/hook".into(),
                gitops: Some(v1::GitOpsSettings {
                    provider: "github".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("channel.gitops: only a gitops channel takes it"),
        "{}",
        status.message()
    );

    api.roles
        .create_role(v1::CreateRoleRequest {
            role: Some(v1::Role {
                name: "qa".into(),
                description: "testers".into(),
                permissions: vec!["scenario.read".into()],
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let updated = api
        .roles
        .update_role(v1::UpdateRoleRequest {
            name: "qa".into(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["description".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.description, "");
    assert_eq!(updated.permissions, ["scenario.read"]);
    let status = api
        .roles
        .update_role(v1::UpdateRoleRequest {
            name: "qa".into(),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["name".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("update_mask:"),
        "{}",
        status.message()
    );
}
