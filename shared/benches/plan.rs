//! Ingest in process: parse + validate + plan of one request of each dialect (BENCHMARKS.md,
//! part 1). Run with `cargo bench -p herald --bench plan`; `scripts/bench.sh` runs it with the
//! rest and writes the figures down.

use criterion::{criterion_group, criterion_main, Criterion};
use herald::benching::{self, Planner};
use std::hint::black_box;

fn plan(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let planner = Planner::new(dir.path());
    let mut g = c.benchmark_group("plan");
    g.bench_function("native", |b| b.iter(|| benching::native(black_box(benching::NATIVE.as_bytes())).unwrap()));
    g.bench_function("csml", |b| b.iter(|| benching::csml(black_box(benching::CSML.as_bytes())).unwrap()));
    g.bench_function("smax_v2", |b| b.iter(|| planner.smax_v2(black_box(benching::SMAX_V2.as_bytes())).unwrap()));
    g.bench_function("invent", |b| b.iter(|| planner.invent(black_box(benching::INVENT.as_bytes())).unwrap()));
    g.bench_function("pabbly", |b| b.iter(|| planner.pabbly(black_box(benching::PABBLY.as_bytes())).unwrap()));
    g.finish();
}

criterion_group!(benches, plan);
criterion_main!(benches);
