//! Part 2: ingest over HTTP. Single-recipient sends and 1,000-recipient sends against a release
//! `herald serve` (embedded store and queue, sandbox provider, its workers delivering meanwhile),
//! from this separate process; then serve's peak RSS (part 5).

use bytes::Bytes;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::load::Load;
use crate::proc::{quantile, Serve, KEY};

#[derive(clap::Args)]
pub struct Args {
    /// Seconds each load runs (after a 2 s warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Connections for single-recipient sends.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Connections for 1,000-recipient sends.
    #[arg(long, default_value_t = 4)]
    bulk_connections: usize,
}

pub async fn run(args: Args, bin_dir: &Path) -> Result<Value, String> {
    let serve = Serve::start(bin_dir, &[], &[]).await?;
    let single = Load {
        addr: serve.addr,
        path: "/v1/broadcasts",
        key: KEY,
        connections: args.connections,
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(args.seconds),
        body: Arc::new(|n| Bytes::from(crate::broadcast_body(n as usize % 100_000, 1))),
        expect: 202,
    }
    .run()
    .await;
    let single_figures = figures(&single, 1);
    println!("http single: {single_figures}");
    let bodies: Arc<Vec<Bytes>> =
        Arc::new((0..10).map(|i| Bytes::from(crate::broadcast_body(i * 1000, 1000))).collect());
    let bulk = Load {
        addr: serve.addr,
        path: "/v1/broadcasts",
        key: KEY,
        connections: args.bulk_connections,
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(args.seconds),
        body: Arc::new(move |n| bodies[n as usize % bodies.len()].clone()),
        expect: 202,
    }
    .run()
    .await;
    let bulk_figures = figures(&bulk, 1000);
    println!("http bulk: {bulk_figures}");
    let rss = serve.peak_rss_kib().ok_or("cannot read herald serve's peak RSS")?;
    if single.ok == 0 || bulk.ok == 0 {
        return Err(format!("no request succeeded: {:?}", single.first_error.or(bulk.first_error)));
    }
    Ok(json!({
        "single": single_figures,
        "bulk": bulk_figures,
        "serve_peak_rss_kib": rss,
        "connections": args.connections,
        "bulk_connections": args.bulk_connections,
        "seconds": args.seconds,
    }))
}

fn figures(o: &crate::load::Outcome, recipients_per_request: u64) -> Value {
    json!({
        "requests": o.ok,
        "errors": o.errors,
        "first_error": o.first_error,
        "requests_per_second": o.ok as f64 / o.seconds,
        "recipients_per_second": (o.ok * recipients_per_request) as f64 / o.seconds,
        "p50_ms": quantile(&o.latencies_ms, 0.5),
        "p99_ms": quantile(&o.latencies_ms, 0.99),
        "max_ms": o.latencies_ms.last().copied().unwrap_or(f64::NAN),
    })
}
