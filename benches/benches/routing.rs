//! The data plane's request path without the network: workspace lookup,
//! route match and response selection (`proxy::answer`), for 1, 1 000 and
//! 10 000 workspaces of 20 routes each, plain and "rich" (four routes with
//! header or query matchers, half the requests to them carrying what the
//! matchers need); the cost of API keys (none, a valid one among 1 000, an
//! unknown one); and the cost of compiling a table.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mockplane_benches::{
    full_update, request_paths, rich_requests, rich_table, slug, table, workspace,
};
use mockplane_data_plane::proxy::answer;
use mockplane_data_plane::table::RoutingTable;
use mockplane_shared::engine::path::split_workspace_path;
use mockplane_shared::{Lookup, Method, RequestParts};

fn request_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("answer");
    group.throughput(Throughput::Elements(1));
    for workspaces in [1, 1_000, 10_000] {
        let table = table(workspaces);
        let no_headers = http::HeaderMap::new();
        let target = slug(workspaces / 2);
        let cases = [
            ("hit_literal", format!("/w/{target}/users/me")),
            ("hit_param", format!("/w/{target}/users/42/orders/7")),
            ("miss_route", format!("/w/{target}/nothing/here")),
            ("miss_workspace", "/w/no-such-workspace/users/me".to_owned()),
        ];
        for (name, path) in cases {
            group.bench_with_input(BenchmarkId::new(name, workspaces), &path, |b, path| {
                b.iter(|| {
                    let parts = RequestParts::new(None, &no_headers, b"");
                    answer(
                        black_box(&table),
                        &http::Method::GET,
                        black_box(path),
                        &parts,
                    )
                });
            });
        }
        // Hits spread over every workspace and route, as a node sees them:
        // the table no longer sits in the CPU caches. First routing and
        // matching alone, then with the response made ready to send.
        let paths = request_paths(workspaces, 4096, 42);
        group.bench_function(BenchmarkId::new("match_spread", workspaces), |b| {
            let mut next = paths.iter().cycle();
            b.iter(|| {
                let path = next.next().map_or("/", String::as_str);
                let (slug, rest) = split_workspace_path(black_box(path)).unwrap_or(("", "/"));
                let workspace = table
                    .workspace(slug)
                    .and_then(|w| w.environment(None))
                    .map(|e| &e.table.router);
                workspace.map(|router| {
                    matches!(router.lookup(Some(Method::Get), rest), Lookup::Found(_))
                })
            });
        });
        group.bench_function(BenchmarkId::new("hit_spread", workspaces), |b| {
            let mut next = paths.iter().cycle();
            b.iter(|| {
                let path = next.next().map_or("/", String::as_str);
                let parts = RequestParts::new(None, &no_headers, b"");
                answer(
                    black_box(&table),
                    &http::Method::GET,
                    black_box(path),
                    &parts,
                )
            });
        });

        // The same spread over workspaces with matchers.
        let table = rich_table(workspaces);
        let requests = rich_requests(workspaces, 4096, 42);
        group.bench_function(BenchmarkId::new("match_spread_rich", workspaces), |b| {
            let mut next = requests.iter().cycle();
            b.iter(|| {
                let request = next.next().expect("requests cycle");
                let parts = RequestParts::new(request.query, &request.headers, b"");
                let (slug, rest) =
                    split_workspace_path(black_box(&request.path)).unwrap_or(("", "/"));
                let workspace = table
                    .workspace(slug)
                    .and_then(|w| w.environment(None))
                    .map(|e| &e.table.router);
                workspace.map(|router| {
                    matches!(
                        router.lookup_where(Some(Method::Get), rest, |route| route.accepts(&parts)),
                        Lookup::Found(_)
                    )
                })
            });
        });
        group.bench_function(BenchmarkId::new("hit_spread_rich", workspaces), |b| {
            let mut next = requests.iter().cycle();
            b.iter(|| {
                let request = next.next().expect("requests cycle");
                let parts = RequestParts::new(request.query, &request.headers, b"");
                answer(
                    black_box(&table),
                    &http::Method::GET,
                    black_box(&request.path),
                    &parts,
                )
            });
        });
    }
    group.finish();
}

/// A request to a workspace with 1 000 keys per environment: without a key
/// (keys not required), with a valid one (a SHA-256 and a hash lookup),
/// and with an unknown one (refused with a 401).
fn api_keys(c: &mut Criterion) {
    use mockplane_shared::model::keys::{
        ApiKeyConfig, KEY_HEADER, MAX_KEYS_PER_ENVIRONMENT, digest,
    };
    let mut group = c.benchmark_group("api_keys");
    group.throughput(Throughput::Elements(1));
    let mut config = workspace(0);
    let secrets: Vec<String> = (0..MAX_KEYS_PER_ENVIRONMENT)
        .map(|i| format!("mpk_bench-key-{i:04}-xxxxxxxxxxxxxxxxxxxxxxxxxxx"))
        .collect();
    config.environments[0].keys = secrets
        .iter()
        .map(|secret| ApiKeyConfig {
            id: uuid::Uuid::new_v4(),
            sha256: digest(secret.as_bytes()),
            test: false,
            expires_at_unix: 0,
        })
        .collect();
    let update = mockplane_data_plane::table::Update {
        revision: 1,
        full: true,
        upserts: vec![mockplane_proto::resource::encode(&config, 1)],
        ..Default::default()
    };
    let (table, errors) = RoutingTable::default().apply(&update);
    assert!(errors.is_empty(), "{errors:?}");
    let path = format!("/w/{}/users/me", slug(0));
    let header = |value: &str| {
        let mut headers = http::HeaderMap::new();
        headers.insert(KEY_HEADER, http::HeaderValue::from_str(value).unwrap());
        headers
    };
    let cases = [
        ("no_key", http::HeaderMap::new()),
        ("valid_key", header(&secrets[MAX_KEYS_PER_ENVIRONMENT / 2])),
        ("unknown_key", header("mpk_not-one-of-them")),
    ];
    for (name, headers) in cases {
        group.bench_function(name, |b| {
            b.iter(|| {
                let parts = RequestParts::new(None, &headers, b"");
                answer(
                    black_box(&table),
                    &http::Method::GET,
                    black_box(&path),
                    &parts,
                )
            });
        });
    }
    group.finish();
}

fn compile_table(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile");
    group.sample_size(10);
    for workspaces in [1_000, 10_000] {
        let update = full_update(workspaces);
        group.throughput(Throughput::Elements(workspaces as u64));
        group.bench_function(BenchmarkId::new("full_table", workspaces), |b| {
            b.iter(|| RoutingTable::default().apply(black_box(&update)));
        });
    }
    group.finish();
}

criterion_group!(benches, request_path, api_keys, compile_table);
criterion_main!(benches);
