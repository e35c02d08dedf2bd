//! The data plane's request path without the network: workspace lookup,
//! route match and response selection (`proxy::answer`), for 1, 1 000 and
//! 10 000 workspaces of 20 routes each, plain and "rich" (four routes with
//! header or query matchers, half the requests to them carrying what the
//! matchers need); the cost of API keys (none, a valid one among 1 000, an
//! unknown one); the cost of an environment's rate and concurrency limits;
//! and the cost of compiling a table.

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

/// The cost of an environment's limits on the request path: a request to
/// an environment without limits, with a concurrency limit (a permit taken
/// and given back), with both limits (a token taken too), one refused with
/// a 429, and the limiter's admission alone.
fn limits(c: &mut Criterion) {
    use mockplane_data_plane::limits::Limiter;
    use mockplane_shared::model::environment::{Limits, MAX_LIMIT};
    let mut group = c.benchmark_group("limits");
    group.throughput(Throughput::Elements(1));
    let table_with = |limits: Limits| {
        let mut config = workspace(0);
        config.environments[0].limits = limits;
        let update = mockplane_data_plane::table::Update {
            revision: 1,
            full: true,
            upserts: vec![mockplane_proto::resource::encode(&config, 1)],
            ..Default::default()
        };
        let (table, errors) = RoutingTable::default().apply(&update);
        assert!(errors.is_empty(), "{errors:?}");
        table
    };
    let path = format!("/w/{}/users/me", slug(0));
    let no_headers = http::HeaderMap::new();
    let cases = [
        ("none", Limits::default()),
        (
            "concurrency",
            Limits {
                max_concurrent: Some(MAX_LIMIT),
                ..Default::default()
            },
        ),
        (
            // A bucket this large stays far from empty for the run.
            "rate_and_concurrency",
            Limits {
                requests_per_second: Some(MAX_LIMIT),
                burst: Some(MAX_LIMIT),
                max_concurrent: Some(MAX_LIMIT),
            },
        ),
        (
            "refused",
            Limits {
                requests_per_second: Some(1),
                ..Default::default()
            },
        ),
    ];
    // A benchmark runs faster than any rate that can be set: every half a
    // million requests get a fresh table (not timed), so the bucket never
    // empties and admitted requests are what is measured (but in `refused`).
    const CHUNK: u64 = 500_000;
    for (name, limits) in cases {
        group.bench_function(BenchmarkId::new("answer", name), |b| {
            b.iter_custom(|iters| {
                let mut spent = std::time::Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let chunk = left.min(CHUNK);
                    left -= chunk;
                    let table = table_with(limits);
                    let started = std::time::Instant::now();
                    for _ in 0..chunk {
                        let parts = RequestParts::new(None, &no_headers, b"");
                        black_box(answer(
                            black_box(&table),
                            &http::Method::GET,
                            black_box(&path),
                            &parts,
                        ));
                    }
                    spent += started.elapsed();
                }
                spent
            });
        });
    }
    group.bench_function("admit", |b| {
        b.iter_custom(|iters| {
            let mut spent = std::time::Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let chunk = left.min(CHUNK);
                left -= chunk;
                let limiter = Limiter::new(Limits {
                    requests_per_second: Some(MAX_LIMIT),
                    burst: Some(MAX_LIMIT),
                    max_concurrent: Some(MAX_LIMIT),
                })
                .expect("limits");
                let started = std::time::Instant::now();
                for _ in 0..chunk {
                    assert!(black_box(limiter.admit()).is_ok());
                }
                spent += started.elapsed();
            }
            spent
        });
    });
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

criterion_group!(benches, request_path, api_keys, limits, compile_table);
criterion_main!(benches);
