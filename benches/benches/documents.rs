//! What a hostile document costs the control plane: the nesting check on
//! 8 MiB of `[` (refused at the 129th) and on an ordinary 8 MiB OpenAPI
//! document (passed whole), next to a whole OpenAPI import of that ordinary
//! document, and what the YAML parser alone spends on nesting it is given
//! (2 000 and 4 000 levels: quadratic, which is why the check runs first).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mockplane_shared::nesting;
use mockplane_shared::openapi::MAX_DOCUMENT_BYTES;

/// An OpenAPI document of about `bytes`: many operations with examples.
fn ordinary(bytes: usize) -> String {
    let mut text = String::from("openapi: 3.0.0\ninfo: {title: big, version: '1'}\npaths:\n");
    let mut index = 0;
    while text.len() < bytes - 400 {
        text.push_str(&format!(
            "  /items{index}/{{id}}:\n    get:\n      operationId: get{index}\n      responses:\n        '200':\n          description: ok\n          content:\n            application/json:\n              example: {{\"id\": {index}, \"tags\": [\"a\", \"b\"], \"owner\": {{\"name\": \"x [y]\"}}}}\n"
        ));
        index += 1;
    }
    text
}

fn documents(c: &mut Criterion) {
    let mut group = c.benchmark_group("nesting_check");
    group.sample_size(10);
    let hostile = "[".repeat(MAX_DOCUMENT_BYTES);
    let ordinary = ordinary(MAX_DOCUMENT_BYTES);
    for (name, text) in [("hostile_8mib", &hostile), ("ordinary_8mib", &ordinary)] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| b.iter(|| nesting::check(black_box(text))));
    }
    group.finish();

    let mut group = c.benchmark_group("openapi_import");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(ordinary.len() as u64));
    group.bench_function("ordinary_8mib", |b| {
        b.iter(|| mockplane_shared::openapi::import(black_box(&ordinary)))
    });
    group.bench_function("hostile_8mib", |b| {
        b.iter(|| mockplane_shared::openapi::import(black_box(&hostile)))
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
