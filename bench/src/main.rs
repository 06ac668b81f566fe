//! `herald-bench`: the benchmark driver behind `scripts/bench.sh` (BENCHMARKS.md). Each part runs
//! alone and writes its figures to `target/bench/<part>.json`; `report` turns whatever parts are
//! there (plus criterion's estimates and the Lambda sizes) into BENCHMARKS.md.
//!
//! Every process it measures is a separate, release-built binary started by this driver: Herald
//! is never timed from inside its own process, except the per-request planning that criterion
//! measures.

mod audience;
mod cost;
mod e2e;
mod http;
mod lambda;
mod proc;
mod report;
mod wrk;

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "herald-bench", about = "Herald's benchmarks (see BENCHMARKS.md)")]
struct Cli {
    /// Where each part writes its figures.
    #[arg(long, global = true, default_value = "target/bench")]
    out: PathBuf,
    /// Where the release binaries are (`herald`, `ingest`, `send`, `hello-lambda`, `hello-http`).
    #[arg(long, global = true, default_value = "target/release")]
    bin_dir: PathBuf,
    #[command(subcommand)]
    part: Part,
}

#[derive(Subcommand)]
enum Part {
    /// Ingest over HTTP: wrk against `herald serve` and against hello-http (part 2, and serve's RSS).
    Http(http::Args),
    /// End to end: sandbox throughput, a loopback provider sink at set latencies, the rate limiter.
    E2e(e2e::Args),
    /// Lambda cold start and memory on a loopback fake of the runtime API (needs the emulator).
    Lambda(lambda::Args),
    /// AWS requests and capacity units per recipient on the emulator, in US dollars.
    Cost(cost::Args),
    /// Audiences: a segment's members added, one broadcast fanned out over them and sent (part 8).
    Audience(audience::Args),
    /// Writes BENCHMARKS.md from the parts' figures.
    Report(report::Args),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let (name, result) = match cli.part {
        Part::Http(a) => ("http", http::run(a, &cli.bin_dir).await),
        Part::E2e(a) => ("e2e", e2e::run(a, &cli.bin_dir).await),
        Part::Lambda(a) => ("lambda", lambda::run(a, &cli.bin_dir).await),
        Part::Cost(a) => ("cost", cost::run(a).await),
        Part::Audience(a) => ("audience", audience::run(a, &cli.bin_dir).await),
        Part::Report(a) => {
            return match report::run(a, &cli.out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("herald-bench report: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    };
    match result.and_then(|figures| save(&cli.out, name, &figures)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald-bench {name}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn save(dir: &Path, name: &str, figures: &serde_json::Value) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let path = dir.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(figures).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("{name}: figures written to {}", path.display());
    Ok(())
}

/// The `i`th recipient's number: valid, distinct US numbers across area codes.
pub fn phone(i: usize) -> String {
    const AREAS: [u32; 10] = [415, 212, 312, 617, 206, 303, 512, 702, 404, 305];
    format!("+1{}555{:04}", AREAS[i / 10_000 % AREAS.len()], i % 10_000)
}

/// A native request to recipients `first..first + n`.
pub fn broadcast_body(first: usize, n: usize) -> String {
    let recipients: Vec<serde_json::Value> =
        (first..first + n).map(|i| serde_json::json!({"phone": phone(i), "variables": {"name": "Ada"}})).collect();
    serde_json::json!({"recipients": recipients, "messages": [{"text": "Hi {{name}}, your order has shipped"}]})
        .to_string()
}

/// The API Gateway HTTP API event of `POST /v1/broadcasts` (tests/fixtures) carrying `body`,
/// authenticated with the benchmark key, with `idempotency_key` or none.
pub fn apigw_post(body: &str, idempotency_key: Option<&str>) -> serde_json::Value {
    let fixture = include_str!("../../tests/fixtures/apigw_v2_post_broadcast.json").replace("{{API_KEY}}", proc::KEY);
    let mut event: serde_json::Value = serde_json::from_str(&fixture).expect("the fixture is JSON");
    match idempotency_key {
        Some(k) => event["headers"]["idempotency-key"] = serde_json::json!(k),
        None => {
            event["headers"].as_object_mut().expect("headers").remove("idempotency-key");
        }
    }
    event["body"] = serde_json::json!(body);
    event
}
