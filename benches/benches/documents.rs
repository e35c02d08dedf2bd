//! What a hostile document costs the control plane: the nesting check on
//! 8 MiB of `[` (refused at the 129th) and on an ordinary 8 MiB OpenAPI
//! document (passed whole), next to a whole OpenAPI import of that ordinary
//! document (as YAML and as JSON) and of the costliest one the check lets
//! through (nested just under the limits), and what the YAML parser alone spends
//! on nesting it is given (2 000 and 4 000 levels: quadratic, which is why
//! the check runs first).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mockplane_shared::model::nesting;
use mockplane_shared::model::openapi::MAX_DOCUMENT_BYTES;

/// An OpenAPI document of about `bytes`: 1 500 operations (an import takes
/// at most 2 000), each with an example of many small objects.
fn ordinary(bytes: usize) -> String {
    const OPERATIONS: usize = 1500;
    let item = |i: usize| {
        format!(
            "{{\"id\": {i}, \"name\": \"item {i}\", \"tags\": [\"a\", \"b\"], \"owner\": {{\"name\": \"x [y]\"}}}}"
        )
    };
    let per_operation = bytes / OPERATIONS;
    let items = (per_operation.saturating_sub(300) / (item(100).len() + 2)).max(1);
    let example = (0..items).map(item).collect::<Vec<_>>().join(", ");
    let mut text = String::from("openapi: 3.0.0\ninfo: {title: big, version: '1'}\npaths:\n");
    for index in 0..OPERATIONS {
        text.push_str(&format!(
            "  /items{index}/{{id}}:\n    get:\n      operationId: get{index}\n      responses:\n        '200':\n          description: ok\n          content:\n            application/json:\n              example: {{\"items\": [{example}]}}\n"
        ));
    }
    text
}

/// The costliest document the check lets through: flow collections nested
/// just under the depth limit, over and over, until just under the work
/// budget (each token the YAML parser reads re-checks every open level),
/// then plain block mappings up to 8 MiB.
fn costliest(bytes: usize) -> String {
    let head = "openapi: 3.0.0\ninfo: {title: deep, version: '1'}\npaths: {}\nx-deep: [";
    // The mapping and the outer list take two of the 128 levels.
    let levels = nesting::MAX_DEPTH - 2;
    let unit = format!("{}{},", "[".repeat(levels), "]".repeat(levels));
    let build = |units: usize| {
        let mut text = String::from(head);
        text.push_str(&unit.repeat(units));
        text.push_str("]\nx-pad:\n");
        let mut index = 0;
        while text.len() < bytes - 32 {
            text.push_str(&format!("  k{index}: v{index}\n"));
            index += 1;
        }
        text
    };
    let per_unit = (levels * (levels + 4)) as u64;
    let mut units = usize::try_from(nesting::MAX_FLOW_WORK / per_unit).unwrap_or(0);
    loop {
        let text = build(units);
        if nesting::check(&text).is_ok() {
            return text;
        }
        units -= units / 50 + 1;
    }
}

fn documents(c: &mut Criterion) {
    let mut group = c.benchmark_group("nesting_check");
    group.sample_size(10);
    let hostile = "[".repeat(MAX_DOCUMENT_BYTES);
    let ordinary = ordinary(MAX_DOCUMENT_BYTES - 64 * 1024);
    if let Err(e) = mockplane_shared::model::openapi::import(&ordinary) {
        panic!("the ordinary document is refused: {e}");
    }
    for (name, text) in [("hostile_8mib", &hostile), ("ordinary_8mib", &ordinary)] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| b.iter(|| nesting::check(black_box(text))));
    }
    group.finish();

    let mut group = c.benchmark_group("openapi_import");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(ordinary.len() as u64));
    group.bench_function("ordinary_8mib", |b| {
        b.iter(|| mockplane_shared::model::openapi::import(black_box(&ordinary)))
    });
    group.bench_function("hostile_8mib", |b| {
        b.iter(|| mockplane_shared::model::openapi::import(black_box(&hostile)))
    });
    let costliest = costliest(MAX_DOCUMENT_BYTES);
    group.bench_function("costliest_passing_8mib", |b| {
        b.iter(|| mockplane_shared::model::openapi::import(black_box(&costliest)))
    });
    // The same kind of document as JSON, as large as still fits.
    let wide_json = serde_json::to_string(
        &serde_yaml::from_str::<serde_json::Value>(&self::ordinary(MAX_DOCUMENT_BYTES / 2))
            .unwrap(),
    )
    .unwrap();
    assert!(wide_json.len() <= MAX_DOCUMENT_BYTES, "{}", wide_json.len());
    if let Err(e) = mockplane_shared::model::openapi::import(&wide_json) {
        panic!("{e}");
    }
    group.throughput(Throughput::Bytes(wide_json.len() as u64));
    group.bench_function("ordinary_as_json", |b| {
        b.iter(|| mockplane_shared::model::openapi::import(black_box(&wide_json)))
    });
    group.finish();

    let mut group = c.benchmark_group("yaml_parser_unguarded");
    group.sample_size(10);
    for depth in [2_000, 4_000] {
        let text = "[".repeat(depth);
        group.bench_with_input(BenchmarkId::from_parameter(depth), &text, |b, text| {
            b.iter(|| serde_yaml::from_str::<serde_json::Value>(black_box(text)).is_err())
        });
    }
    group.finish();
}

criterion_group!(benches, documents);
criterion_main!(benches);
