//! The gRPC API as a client sees it: errors with the right code and a
//! message a person can act on, health checking and reflection.

use mockplane_e2e::ControlPlane;
use mockplane_e2e::fixtures::{new_workspace, route};
use mockplane_proto::v1;
use mockplane_proto::v1::workspace_service_client::WorkspaceServiceClient;
use tonic::Code;

fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, needle: &str) {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(
        status.message().contains(needle),
        "{:?} does not mention {needle:?}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_the_right_code_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let mut api = plane.api(plane.token.as_deref().unwrap()).await;

    // Without or with a wrong token, nothing is answered.
    let mut anonymous = WorkspaceServiceClient::new(plane.channel().await);
    assert_status(
        anonymous
            .list_workspaces(v1::ListWorkspacesRequest::default())
            .await,
        Code::Unauthenticated,
        "Bearer",
    );
    let mut forged = plane.api("mpt_forged").await;
    assert_status(
        forged.workspaces.create_workspace(new_workspace("x")).await,
        Code::Unauthenticated,
        "not valid",
    );

    for (slug, needle) in [
        ("Demo", "lower-case"),
        (&"x".repeat(64), "at most 63"),
        ("a/b", "'/'"),
        ("", "must not be empty"),
        ("-a", "start or end"),
    ] {
        assert_status(
            api.workspaces.create_workspace(new_workspace(slug)).await,
            Code::InvalidArgument,
            needle,
        );
    }
    assert_status(
        api.workspaces
            .create_workspace(v1::CreateWorkspaceRequest { workspace: None })
            .await,
        Code::InvalidArgument,
        "workspace: is required",
    );

    let created = api
        .workspaces
        .create_workspace(new_workspace("demo"))
        .await
        .unwrap()
        .into_inner();
    let duplicate = api.workspaces.create_workspace(new_workspace("demo")).await;
    assert_status(duplicate, Code::AlreadyExists, "slug 'demo' already exists");

    assert_status(
        api.workspaces
            .get_workspace(v1::GetWorkspaceRequest {
                workspace: "missing".into(),
            })
            .await,
        Code::NotFound,
        "workspace 'missing' not found",
    );

    // Optimistic concurrency: the first update with the etag wins, a second
    // with the same (now stale) etag is aborted.
    let rename = |etag: &str| v1::UpdateWorkspaceRequest {
        workspace: "demo".into(),
        patch: Some(v1::Workspace {
            name: "Renamed".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["name".into()],
        }),
        etag: etag.into(),
    };
    let updated = api
        .workspaces
        .update_workspace(rename(&created.etag))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.name, "Renamed");
    assert_ne!(updated.etag, created.etag);
    assert_status(
        api.workspaces.update_workspace(rename(&created.etag)).await,
        Code::Aborted,
        "read it again",
    );
    assert_status(
        api.workspaces
            .delete_workspace(v1::DeleteWorkspaceRequest {
                workspace: "demo".into(),
                etag: created.etag.clone(),
            })
            .await,
        Code::Aborted,
        "etag",
    );
    let mut no_mask = rename("");
    no_mask.update_mask = None;
    assert_status(
        api.workspaces.update_workspace(no_mask).await,
        Code::InvalidArgument,
        "update_mask",
    );
    assert_status(
        api.workspaces
            .list_workspaces(v1::ListWorkspacesRequest {
                page_size: 10,
                page_token: "garbage".into(),
            })
            .await,
        Code::InvalidArgument,
        "page_token",
    );

    // Routes: the bad field is named, clashes are refused, nothing half-added.
    let good = route("GET", "/a", 200, "");
    let bad = route("GET", "/b", 700, "");
    assert_status(
        api.routes
            .create_routes(v1::CreateRoutesRequest {
                workspace: "demo".into(),
                routes: vec![good.clone(), bad],
                environment: String::new(),
                scenario: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "routes[1].response.status",
    );
    api.routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: "demo".into(),
            routes: vec![good.clone()],
            environment: String::new(),
            scenario: String::new(),
        })
        .await
        .unwrap();
    let clash = api
        .routes
        .create_routes(v1::CreateRoutesRequest {
            workspace: "demo".into(),
            routes: vec![good],
            environment: String::new(),
            scenario: String::new(),
        })
        .await;
    let status = clash.expect_err("duplicate route");
    assert_eq!(status.code(), Code::AlreadyExists);
    for leak in ["UNIQUE", "constraint", "SQL", "sqlite"] {
        assert!(
            !status.message().contains(leak),
            "database text leaked: {}",
            status.message()
        );
    }
    let listed = api
        .routes
        .list_routes(v1::ListRoutesRequest {
            workspace: "demo".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.routes.len(), 1);
    assert_status(
        api.routes
            .delete_routes(v1::DeleteRoutesRequest {
                workspace: "demo".into(),
                route_ids: vec!["not-a-uuid".into()],
                environment: String::new(),
            })
            .await,
        Code::InvalidArgument,
        "route_ids[0]",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_health_checks_and_reflection_without_credentials() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let channel = plane.channel().await;

    // Every service of the API's descriptor set is SERVING, so a service
    // added to the protos but not to health checking fails here.
    use prost::Message as _;
    let descriptors =
        prost_types::FileDescriptorSet::decode(mockplane_proto::FILE_DESCRIPTOR_SET).unwrap();
    let services: Vec<String> = descriptors
        .file
        .iter()
        .flat_map(|file| {
            file.service
                .iter()
                .map(move |service| format!("{}.{}", file.package(), service.name()))
        })
        .collect();
    assert!(services.len() >= 17, "{services:?}");
    let mut health = HealthClient::new(channel.clone());
    for service in std::iter::once("").chain(services.iter().map(String::as_str)) {
        let reply = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health of {service:?}: {e}"))
            .into_inner();
        assert_eq!(reply.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "mockplane.v1.NoSuchService".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream_once(request))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("unexpected reflection reply: {reply:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "mockplane.v1.WorkspaceService",
        "mockplane.v1.RouteService",
        "mockplane.v1.ConfigDiscovery",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    // Reflected files keep their comments (source info), so clients built
    // from reflection see what each field means.
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "mockplane.v1.WorkspaceService".into(),
        )),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream_once(request))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = reply.message_response else {
        panic!("unexpected reflection reply: {reply:?}");
    };
    let comments: Vec<String> = files
        .file_descriptor_proto
        .iter()
        .map(|raw| prost_types::FileDescriptorProto::decode(&raw[..]).unwrap())
        .filter_map(|file| file.source_code_info)
        .flat_map(|info| info.location)
        .filter_map(|location| location.leading_comments)
        .collect();
    assert!(
        comments.iter().any(|c| c.contains("Output only")),
        "no field comments reflected: {comments:?}"
    );

    // The v1alpha protocol too: Python's grpcio-reflection speaks only it.
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        let mut alpha = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let reply = alpha
            .server_reflection_info(tokio_stream_once(request))
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap()
            .unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("unexpected v1alpha reflection reply: {reply:?}");
        };
        let alpha_names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for service in &services {
            assert!(
                alpha_names.contains(service),
                "{service} missing from {alpha_names:?}"
            );
        }
    }
}

fn tokio_stream_once<T: Send + 'static>(
    item: T,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::iter([item])
}
