//! Part 8: an audience. `members` contacts are added to a segment through the API (found or
//! created, 10,000 a call), one broadcast goes to the segment, and its rows are timed as fan-out
//! makes them and as the sandbox sends them; `herald serve`'s peak RSS is read at the end.

use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::proc::{Serve, KEY};

#[derive(clap::Args)]
pub struct Args {
    /// Contacts in the segment.
    #[arg(long, default_value_t = 1_000_000)]
    members: usize,
    /// `herald serve --workers`.
    #[arg(long, default_value_t = 32)]
    workers: usize,
    /// Give up waiting for the last row after this many seconds.
    #[arg(long, default_value_t = 1_800)]
    patience: u64,
}

/// A call to the running Herald; its JSON answer, or why not.
async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Result<Value, String> {
    let mut req = http.request(method, &url).header("x-api-key", KEY).timeout(Duration::from_secs(300));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{url}: {status} {body}"));
    }
    Ok(body)
}

pub async fn run(args: Args, bin_dir: &Path) -> Result<Value, String> {
    let serve = Serve::start(bin_dir, &["--workers", &args.workers.to_string()], &[]).await?;
    let (http, base) = (reqwest::Client::new(), serve.base());
    call(&http, reqwest::Method::PUT, format!("{base}/v1/segments/bench"), Some(json!({"name": "Bench"}))).await?;

    let started = Instant::now();
    for first in (0..args.members).step_by(10_000) {
        let contacts: Vec<Value> = (first..(first + 10_000).min(args.members))
            .map(|i| json!({"email": format!("m{i}@example.com")}))
            .collect();
        let url = format!("{base}/v1/segments/bench/members");
        call(&http, reqwest::Method::POST, url, Some(json!({"contacts": contacts}))).await?;
    }
    let add_seconds = started.elapsed().as_secs_f64();
    println!("audience: {} members added in {add_seconds:.1} s", args.members);

    let body = json!({"audience": {"segments": ["bench"]}, "messages": [{"text": "Hello"}], "channel": "email"});
    let sent_at = Instant::now();
    let answer = call(&http, reqwest::Method::POST, format!("{base}/v1/broadcasts"), Some(body)).await?;
    let id = answer["request_id"].as_str().ok_or("no request_id")?.to_string();
    let (mut fanned, deadline) = (None, sent_at + Duration::from_secs(args.patience));
    let done = loop {
        let now = call(&http, reqwest::Method::GET, format!("{base}/v1/broadcasts/{id}?limit=1"), None).await?;
        if fanned.is_none() && now["state"] != "fanning_out" {
            fanned = Some(sent_at.elapsed().as_secs_f64());
            println!("audience: fanned out in {:.1} s", fanned.unwrap_or_default());
        }
        if now["state"] == "completed" {
            break now;
        }
        if Instant::now() > deadline {
            return Err(format!("rows still pending after {} s: {}", args.patience, now["summary"]));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let terminal_seconds = sent_at.elapsed().as_secs_f64();
    let fan_out_seconds = fanned.unwrap_or(terminal_seconds);
    let rows = done["summary"]["total"].as_u64().unwrap_or(0);
    let rss = serve.peak_rss_kib().ok_or("cannot read herald serve's peak RSS")?;
    println!("audience: {rows} rows terminal in {terminal_seconds:.1} s, peak RSS {rss} KiB");
    Ok(json!({
        "members": args.members,
        "workers": args.workers,
        "add_seconds": add_seconds,
        "members_added_per_second": args.members as f64 / add_seconds,
        "rows": rows,
        "by_status": done["summary"]["by_status"],
        "fan_out_seconds": fan_out_seconds,
        "fan_out_rows_per_second": rows as f64 / fan_out_seconds,
        "terminal_seconds": terminal_seconds,
        "rows_per_second_end_to_end": rows as f64 / terminal_seconds,
        "serve_peak_rss_kib": rss,
    }))
}
