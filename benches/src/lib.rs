//! Shared set-up for Mockplane's benchmarks: generated workspaces with
//! realistic routes, the requests that hit them, and the same mocks in the
//! shape each benchmark needs (a node's table, the control plane's store,
//! or a peer's configuration).
#![forbid(unsafe_code)]

use bytes::Bytes;
use mockplane_data_plane::table::{RoutingTable, Update};
use mockplane_shared::{ConfigRoute, ResponseSpec, RouteSpec, Slug, WorkspaceConfig};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
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

/// The body a generated route answers with: small JSON naming the route.
pub fn body(template: &str, workspace: usize) -> String {
    format!("{{\"route\":\"{template}\",\"workspace\":{workspace}}}")
}

/// One mock as every server under test gets it: method GET, the full
/// request path template (workspace prefix included), a JSON body.
#[derive(Debug, Clone)]
pub struct Mock {
    pub workspace: usize,
    pub template: &'static str,
    /// `/w/ws-7/users/{id}`.
    pub full_template: String,
    pub body: String,
}

/// Every mock of `workspaces` generated workspaces.
pub fn mocks(workspaces: usize) -> impl Iterator<Item = Mock> {
    (0..workspaces).flat_map(|workspace| {
        TEMPLATES.iter().map(move |template| Mock {
            workspace,
            template,
            full_template: format!("/w/{}{}", slug(workspace), template),
            body: body(template, workspace),
        })
    })
}

/// The route specs of one generated workspace.
pub fn route_specs(workspace: usize) -> Vec<RouteSpec> {
    TEMPLATES
        .iter()
        .map(|template| {
            RouteSpec::parse("", "GET", template, || {
                ResponseSpec::parse(
                    200,
                    vec![("content-type".into(), "application/json".into())],
                    Bytes::from(body(template, workspace)),
                )
            })
            .expect("generated routes are valid")
        })
        .collect()
}

/// One generated workspace as a node receives it.
pub fn workspace(index: usize) -> WorkspaceConfig {
    WorkspaceConfig {
        id: Uuid::new_v4(),
        slug: Slug::parse(&slug(index)).expect("generated slugs are valid"),
        routes: route_specs(index)
            .into_iter()
            .map(|spec| ConfigRoute {
                id: Uuid::new_v4(),
                spec,
            })
            .collect(),
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

/// `count` request paths that hit generated mocks, spread over the
/// workspaces and templates, the same for every seed.
pub fn request_paths(workspaces: usize, count: usize, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let workspace = rng.random_range(0..workspaces);
            let template = TEMPLATES[rng.random_range(0..TEMPLATES.len())];
            let path: Vec<String> = template
                .split('/')
                .map(|segment| {
                    if segment.starts_with('{') {
                        rng.random_range(1..100_000u32).to_string()
                    } else {
                        segment.to_owned()
                    }
                })
                .collect();
            format!("/w/{}{}", slug(workspace), path.join("/"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use mockplane_data_plane::metrics::Outcome;
    use mockplane_data_plane::proxy::answer;

    use super::*;

    #[test]
    fn generated_requests_hit_generated_mocks() {
        let table = table(50);
        for path in request_paths(50, 500, 7) {
            let reply = answer(&table, &http::Method::GET, &path).unwrap();
            assert_eq!(reply.outcome, Outcome::Matched, "{path}");
        }
        assert_eq!(mocks(3).count(), 60);
        assert_eq!(request_paths(10, 5, 1), request_paths(10, 5, 1));
    }
}
