//! OpenAPI import end to end: the pet store of `examples/petstore.yaml`
//! becomes a scenario whose routes a node serves with the document's
//! examples and schema-derived bodies.

use mockplane_e2e::fixtures::new_workspace;
use mockplane_e2e::{ControlPlane, Node};
use mockplane_proto::v1;
use serde_json::json;
use tonic::Code;

const PETSTORE: &str = include_str!("../../examples/petstore.yaml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pet_store_is_served_from_its_document() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let node = Node::start(dir.path(), &plane.url()).await.unwrap();
    let mut api = plane.api(plane.token.as_deref().unwrap()).await;
    api.workspaces
        .create_workspace(new_workspace("pets"))
        .await
        .unwrap();
    let imported = api
        .scenarios
        .import_open_api(v1::ImportOpenApiRequest {
            workspace: "pets".into(),
            scenario: Some(v1::Scenario {
                name: "petstore".into(),
                tags: vec!["[Contracts]".into()],
                ..Default::default()
            }),
            document: PETSTORE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let scenario = imported.scenario.unwrap();
    assert_eq!(
        scenario.description,
        "Pets, their owners and the store's orders."
    );
    assert_eq!(scenario.route_count, 7);
    let names: Vec<&str> = imported.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "listPets",
            "createPet",
            "showPetById",
            "deletePet",
            "showOwner",
            "getInventory",
            "health"
        ]
    );
    assert!(imported.routes.iter().all(|r| r.scenario == "petstore"));

    let pets = node.wait_for("/w/pets/pets", 200, |_| true).await;
    assert_eq!(
        pets.json(),
        json!([
            { "id": 1, "name": "Rex", "species": "dog", "tags": ["good"] },
            { "id": 2, "name": "Tom", "species": "cat", "tags": [] }
        ])
    );
    assert_eq!(
        pets.headers["content-type"].to_str().unwrap(),
        "application/json"
    );
    let created = node.send("POST", "/w/pets/pets").await.unwrap();
    assert_eq!(created.status, 201);
    assert_eq!(created.json()["name"], "Rex");
    // Typed parameters: integer ids only.
    let pet = node.get("/w/pets/pets/7").await.unwrap();
    assert_eq!(
        pet.json(),
        json!({ "id": 1, "name": "string", "species": "dog", "tags": ["string"] })
    );
    assert_eq!(node.get("/w/pets/pets/rex").await.unwrap().status, 404);
    assert_eq!(
        node.send("DELETE", "/w/pets/pets/7").await.unwrap().status,
        204
    );
    let owner = node
        .get("/w/pets/owners/8f14e45f-ceea-467f-a0e6-5b1d2c6a9b10")
        .await
        .unwrap();
    assert_eq!(owner.json()["email"], "user@example.com");
    assert_eq!(owner.json()["pets"][0]["species"], "dog");
    assert_eq!(
        node.get("/w/pets/store/inventory").await.unwrap().json(),
        json!({ "available": 12, "sold": 3 })
    );
    assert_eq!(node.get("/w/pets/health").await.unwrap().body, "ok");

    // Importing again under the same name clashes and changes nothing;
    // a broken document names the place.
    let again = api
        .scenarios
        .import_open_api(v1::ImportOpenApiRequest {
            workspace: "pets".into(),
            scenario: Some(v1::Scenario {
                name: "petstore".into(),
                ..Default::default()
            }),
            document: PETSTORE.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    let broken = api
        .scenarios
        .import_open_api(v1::ImportOpenApiRequest {
            workspace: "pets".into(),
            scenario: Some(v1::Scenario {
                name: "broken".into(),
                ..Default::default()
            }),
            document: "openapi: 3.0.0\npaths:\n  /a:\n    get: {}\n".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(broken.code(), Code::InvalidArgument);
    assert!(
        broken.message().contains("document.paths./a.get.responses"),
        "{}",
        broken.message()
    );
    let scenarios = api
        .scenarios
        .list_scenarios(v1::ListScenariosRequest {
            workspace: "pets".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .scenarios;
    assert_eq!(
        scenarios.len(),
        2,
        "default and petstore, nothing half-made"
    );
}

/// A document nested fifty thousand levels deep (and one of 8 MiB) is
/// refused at once, naming where it passes the limit, and other calls are
/// answered while such imports run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_nested_document_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let plane = ControlPlane::start(dir.path(), "127.0.0.1:0", None)
        .await
        .unwrap();
    let mut api = plane.api(plane.token.as_deref().unwrap()).await;
    api.workspaces
        .create_workspace(new_workspace("deep"))
        .await
        .unwrap();
    let head = "openapi: 3.0.0\ninfo: {title: deep, version: '1'}\npaths: {}\nx-deep: ";
    let small = format!("{head}{}", "[".repeat(50_000));
    let large = format!(
        "{head}{}",
        "[".repeat(mockplane_shared::model::openapi::MAX_DOCUMENT_BYTES - head.len())
    );
    let mut imports = Vec::new();
    for document in [small, large.clone(), large] {
        let mut scenarios = api.scenarios.clone();
        imports.push(tokio::spawn(async move {
            scenarios
                .import_open_api(v1::ImportOpenApiRequest {
                    workspace: "deep".into(),
                    scenario: Some(v1::Scenario {
                        name: "deep".into(),
                        ..Default::default()
                    }),
                    document,
                })
                .await
        }));
    }
    let me = api.auth.who_am_i(v1::WhoAmIRequest {}).await.unwrap();
    assert!(!me.into_inner().principal.unwrap().id.is_empty());
    for import in imports {
        let status = import.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status
                .message()
                .contains("document: nests deeper than 128 levels at line 4, column 136"),
            "{}",
            status.message()
        );
    }
    // JSON persona data the same way.
    let status = api
        .personas
        .create_persona(v1::CreatePersonaRequest {
            workspace: "deep".into(),
            persona: Some(v1::Persona {
                name: "deep".into(),
                data: format!("{{\"a\":{}", "[".repeat(60_000)),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("nests deeper than 128 levels"),
        "{}",
        status.message()
    );
}
