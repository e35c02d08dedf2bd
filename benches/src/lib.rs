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
    WorkspaceConfig::single(
        Uuid::new_v4(),
        Slug::parse(&slug(index)).expect("generated slugs are valid"),
        route_specs(index)
            .into_iter()
            .map(|spec| ConfigRoute {
                id: Uuid::new_v4(),
                spec,
            })
            .collect(),
    )
}

/// The full update a node would receive for `workspaces` workspaces.
pub fn full_update(workspaces: usize) -> Update {
    update_of((0..workspaces).map(workspace))
}

fn update_of(configs: impl Iterator<Item = WorkspaceConfig>) -> Update {
    Update {
        revision: 1,
        full: true,
        upserts: configs
            .map(|config| mockplane_proto::resource::encode(&config, 1))
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

/// Templates of a workspace with matchers: the first 16 of [`TEMPLATES`]
/// plain, and a variant of 4 of them that needs a header or a query value.
pub const RICH_PLAIN: usize = 16;

/// The matcher variants of rich workspaces: a template of the first
/// [`RICH_PLAIN`], its matchers (file form), and the header or query a
/// request adds to hit the variant.
pub const MATCHED: [(&str, &str, Extra); 4] = [
    (
        "/users/{id}",
        r#"{"headers":[{"name":"x-tenant","equals":"acme"}]}"#,
        Extra::Header("x-tenant", "acme"),
    ),
    (
        "/orders",
        r#"{"query":[{"name":"status","equals":"open"}]}"#,
        Extra::Query("status=open"),
    ),
    (
        "/products/{sku}",
        r#"{"headers":[{"name":"accept","regex":"^application/(vnd\\.shop\\+)?json$"}]}"#,
        Extra::Header("accept", "application/vnd.shop+json"),
    ),
    (
        "/carts/{id}",
        r#"{"query":[{"name":"expand","present":true}]}"#,
        Extra::Query("expand=items"),
    ),
];

/// What a request carries to hit a matcher variant.
#[derive(Debug, Clone, Copy)]
pub enum Extra {
    Header(&'static str, &'static str),
    Query(&'static str),
}

/// The routes of one rich workspace: 20, four of them with matchers.
pub fn rich_route_specs(workspace: usize) -> Vec<RouteSpec> {
    let mut specs: Vec<RouteSpec> = route_specs(workspace)
        .into_iter()
        .take(RICH_PLAIN)
        .collect();
    for (template, matcher, _) in MATCHED {
        let matcher = serde_json::from_str(matcher).expect("generated matchers are valid");
        let spec = RouteSpec::parse("", "GET", template, || {
            ResponseSpec::parse(
                200,
                vec![("content-type".into(), "application/json".into())],
                Bytes::from(format!("{{\"variant\":\"{template}\"}}")),
            )
        })
        .and_then(|spec| spec.matching(matcher, 0))
        .expect("generated routes are valid");
        specs.push(spec);
    }
    specs
}

/// A node's routing table of `workspaces` rich workspaces.
pub fn rich_table(workspaces: usize) -> RoutingTable {
    let configs = (0..workspaces).map(|index| {
        WorkspaceConfig::single(
            Uuid::new_v4(),
            Slug::parse(&slug(index)).expect("generated slugs are valid"),
            rich_route_specs(index)
                .into_iter()
                .map(|spec| ConfigRoute {
                    id: Uuid::new_v4(),
                    spec,
                })
                .collect(),
        )
    });
    let (table, errors) = RoutingTable::default().apply(&update_of(configs));
    assert!(errors.is_empty(), "generated config rejected: {errors:?}");
    table
}

/// A request for the rich benchmarks.
#[derive(Debug, Clone)]
pub struct BenchRequest {
    pub path: String,
    pub query: Option<&'static str>,
    pub headers: http::HeaderMap,
}

/// `count` requests over rich workspaces: any of the plain templates, and
/// for templates with a variant, half of them carrying what the variant
/// needs. The same for every seed.
pub fn rich_requests(workspaces: usize, count: usize, seed: u64) -> Vec<BenchRequest> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let workspace = rng.random_range(0..workspaces);
            let template = TEMPLATES[rng.random_range(0..RICH_PLAIN)];
            let path = fill(template, &mut rng);
            let mut request = BenchRequest {
                path: format!("/w/{}{}", slug(workspace), path),
                query: None,
                headers: http::HeaderMap::new(),
            };
            let variant = MATCHED.iter().find(|(t, _, _)| *t == template);
            if let Some((_, _, extra)) = variant
                && rng.random_bool(0.5)
            {
                match extra {
                    Extra::Header(name, value) => {
                        request.headers.insert(
                            http::HeaderName::from_static(name),
                            http::HeaderValue::from_static(value),
                        );
                    }
                    Extra::Query(query) => request.query = Some(query),
                }
            }
            request
        })
        .collect()
}

fn fill(template: &str, rng: &mut StdRng) -> String {
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
    path.join("/")
}

/// `count` request paths that hit generated mocks, spread over the
/// workspaces and templates, the same for every seed.
pub fn request_paths(workspaces: usize, count: usize, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let workspace = rng.random_range(0..workspaces);
            let template = TEMPLATES[rng.random_range(0..TEMPLATES.len())];
            format!("/w/{}{}", slug(workspace), fill(template, &mut rng))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use mockplane_data_plane::metrics::Outcome;
    use mockplane_data_plane::proxy::answer;
    use mockplane_shared::RequestParts;

    use super::*;

    #[test]
    fn generated_requests_hit_generated_mocks() {
        let table = table(50);
        let no_headers = http::HeaderMap::new();
        for path in request_paths(50, 500, 7) {
            let parts = RequestParts::new(None, &no_headers, b"");
            let reply = answer(&table, &http::Method::GET, &path, &parts);
            assert_eq!(reply.outcome, Outcome::Matched, "{path}");
        }
        // Rich workspaces: requests with the header or query hit the variant.
        let table = rich_table(20);
        let mut variants = 0;
        for request in rich_requests(20, 500, 7) {
            let parts = RequestParts::new(request.query, &request.headers, b"");
            let reply = answer(&table, &http::Method::GET, &request.path, &parts);
            assert_eq!(reply.outcome, Outcome::Matched, "{}", request.path);
            let carries = request.query.is_some() || !request.headers.is_empty();
            let variant = reply.body.starts_with(b"{\"variant\"");
            assert_eq!(carries, variant, "{request:?}");
            variants += usize::from(variant);
        }
        assert!(variants > 20, "only {variants} requests hit a variant");
        assert_eq!(mocks(3).count(), 60);
        assert_eq!(request_paths(10, 5, 1), request_paths(10, 5, 1));
    }
}
