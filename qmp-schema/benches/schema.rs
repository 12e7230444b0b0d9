//! Parse-and-index cost of QEMU 7.2's real `query-qmp-schema` reply (207 KB), against
//! `serde_json::from_slice::<Value>` of the same bytes in the same run, and the cost of
//! typical argument checks.
//!
//! `cargo bench -p qmp-schema --bench schema`, then
//! `scripts/criterion-ratio schema_parse serde_json_value schema_from_slice schema_from_value`;
//! instruction counts: `scripts/bench-schema-callgrind`. See BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use qmp_schema::Schema;
use serde_json::Value;

#[path = "common/typical.rs"]
mod typical;

const SCHEMA: &[u8] = include_bytes!("../tests/data/qemu-7.2-schema.json");

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("schema_parse");
    group.throughput(Throughput::Bytes(SCHEMA.len() as u64));
    // Baseline: the generic parse every client does of any reply.
    group.bench_function("serde_json_value", |b| {
        b.iter(|| black_box(serde_json::from_slice::<Value>(black_box(SCHEMA)).unwrap()));
    });
    // Straight from the reply's bytes to the indexed schema.
    group.bench_function("schema_from_slice", |b| {
        b.iter(|| black_box(Schema::from_slice(black_box(SCHEMA)).unwrap()));
    });
    // From a reply the client has already parsed into a Value (that parse not included).
    let value: Value = serde_json::from_slice(SCHEMA).unwrap();
    group.bench_function("schema_from_value", |b| {
        b.iter(|| black_box(Schema::from_value(black_box(&value)).unwrap()));
    });
    group.finish();
}

fn check(c: &mut Criterion) {
    let schema = Schema::from_slice(SCHEMA).unwrap();
    let mut group = c.benchmark_group("schema_check");
    for (name, command, arguments) in typical::typical_checks() {
        group.bench_function(name, |b| {
            b.iter(|| black_box(schema.check(black_box(command), Some(black_box(&arguments)))));
        });
    }
    group.finish();
}

criterion_group!(benches, parse, check);
criterion_main!(benches);
