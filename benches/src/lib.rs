//! Shared set-up for Mockplane's benchmarks: generated workspaces with
//! realistic routes, compiled the way a node compiles them.
#![forbid(unsafe_code)]

use bytes::Bytes;
use mockplane_data_plane::table::{RoutingTable, Update};
use mockplane_shared::{ConfigRoute, ResponseSpec, RouteSpec, Slug, WorkspaceConfig};
use uuid::Uuid;

/// The path templates every generated workspace has: literals, parameters,
/// nesting, and a literal that shadows a parameter.
pub const TEMPLATES: [&str; 20] = [
    "/",
    "/health",
    "/users",
    "/users/me",
    "/users/{id}",
    "/users/{id}/orders",
    "/users/{id}/orders/{order}",
    "/users/{id}/settings",
    "/orders",
    "/orders/{id}",
    "/orders/{id}/items",
    "/products",
    "/products/{sku}",
    "/products/{sku}/reviews",
    "/carts/{id}",
    "/carts/{id}/checkout",
    "/search",
    "/v2/users/{id}",
    "/v2/orders/{id}",
    "/admin/stats",
];

pub fn slug(index: usize) -> String {
    format!("ws-{index}")
}

/// One workspace with a route per template, each answering a small JSON body.
pub fn workspace(index: usize) -> WorkspaceConfig {
    let routes = TEMPLATES
        .iter()
        .map(|template| ConfigRoute {
            id: Uuid::new_v4(),
            spec: RouteSpec::parse("", "GET", template, || {
                ResponseSpec::parse(
                    200,
                    vec![("content-type".into(), "application/json".into())],
                    Bytes::from(format!(
                        "{{\"route\":\"{template}\",\"workspace\":{index}}}"
                    )),
                )
            })
            .expect("generated routes are valid"),
        })
        .collect();
    WorkspaceConfig {
        id: Uuid::new_v4(),
        slug: Slug::parse(&slug(index)).expect("generated slugs are valid"),
        routes,
    }
}

/// The full update a node would receive for `workspaces` workspaces.
pub fn full_update(workspaces: usize) -> Update {
    Update {
        revision: 1,
        full: true,
        upserts: (0..workspaces)
            .map(|i| mockplane_proto::resource::encode(&workspace(i), 1))
            .collect(),
        ..Update::default()
    }
}

/// A node's routing table holding `workspaces` generated workspaces.
pub fn table(workspaces: usize) -> RoutingTable {
    let (table, errors) = RoutingTable::default().apply(&full_update(workspaces));
    assert!(errors.is_empty(), "generated config rejected: {errors:?}");
    table
}
