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

/// CSV import, the CPU half: 10,000 lines as `herald-bench audience` writes them (phone, email,
/// name, timezone, two fields) read and checked into contact drafts. The store's half is part 8.
fn import_chunk(c: &mut Criterion) {
    use herald::domain::import::{parse_chunk, read_header};
    const ZONES: [&str; 4] = ["America/New_York", "Europe/Berlin", "Asia/Tokyo", "America/Los_Angeles"];
    let mut csv = String::new();
    for i in 0..10_000 {
        let phone = format!("+1415{}{:04}", 220 + i / 10_000 % 80, i % 10_000);
        csv.push_str(&format!("{phone},m{i}@example.com,Member {i},{},gold,Springfield\n", ZONES[i % 4]));
    }
    let (columns, _, _) = read_header(b"phone,email,name,timezone,plan,city\n", true).expect("header");
    let mut g = c.benchmark_group("import");
    g.throughput(criterion::Throughput::Elements(10_000));
    g.bench_function("parse_10k_lines", |b| {
        b.iter(|| {
            let chunk = parse_chunk(&columns, black_box(csv.as_bytes()), 0, 2, true).expect("chunk");
            assert_eq!(chunk.drafts.len(), 10_000);
        })
    });
    g.finish();
}

criterion_group!(benches, plan, import_chunk);
criterion_main!(benches);
