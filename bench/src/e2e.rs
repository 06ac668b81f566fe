//! Part 3: end to end. Recipients/s from request to terminal row with the sandbox provider; a
//! loopback provider sink (speaking Twilio's Messages API) answering after 0, 20 and 100 ms, with
//! the throughput achieved at the sink against the bound `workers ÷ latency`; and the provider
//! rate limiter's achieved rate against its setting.

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::proc::{Serve, KEY};

#[derive(clap::Args)]
pub struct Args {
    /// Recipients for the sandbox run.
    #[arg(long, default_value_t = 20_000)]
    recipients: usize,
    /// Delivery workers of `herald serve`.
    #[arg(long, default_value_t = 32)]
    workers: usize,
    /// The provider rate to check the limiter against (messages/s).
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
}

pub async fn run(args: Args, bin_dir: &Path) -> Result<Value, String> {
    let workers = args.workers.to_string();
    let sandbox = sandbox(bin_dir, &workers, args.recipients).await?;
    println!("e2e sandbox: {sandbox}");
    let mut sinks = Vec::new();
    for latency_ms in [0u64, 20, 100] {
        let bound = (latency_ms > 0).then(|| args.workers as f64 * 1000.0 / latency_ms as f64);
        let n = match bound {
            None => 5_000,
            Some(b) => ((b * 5.0) as usize).clamp(1_000, 10_000),
        };
        let achieved = through_sink(bin_dir, &workers, latency_ms, n, None).await?;
        let figure = json!({
            "latency_ms": latency_ms,
            "recipients": n,
            "achieved_per_second": achieved,
            "bound_per_second": bound,
            "ratio": bound.map(|b| achieved / b),
        });
        println!("e2e sink: {figure}");
        sinks.push(figure);
    }
    let n = (args.rate * 10.0) as usize;
    let achieved = through_sink(bin_dir, &workers, 0, n, Some(args.rate)).await?;
    let limiter = json!({
        "setting_per_second": args.rate,
        "recipients": n,
        "achieved_per_second": achieved,
        "deviation": achieved / args.rate - 1.0,
    });
    println!("e2e limiter: {limiter}");
    Ok(json!({"workers": args.workers, "sandbox": sandbox, "sinks": sinks, "limiter": limiter}))
}

/// Submits `n` recipients in 1,000-recipient requests (four at a time) and waits until every row
/// is terminal: recipients/s over the whole span.
async fn sandbox(bin_dir: &Path, workers: &str, n: usize) -> Result<Value, String> {
    let serve = Serve::start(bin_dir, &["--workers", workers], &[]).await?;
    let http = reqwest::Client::new();
    let start = Instant::now();
    let ids = submit(&http, &serve.base(), n).await?;
    let accepted = start.elapsed().as_secs_f64();
    let mut sent = 0u64;
    let mut pending: Vec<String> = ids;
    let deadline = Instant::now() + Duration::from_secs(600);
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            let v = get_json(&http, &format!("{}/v1/broadcasts/{id}?limit=1", serve.base())).await?;
            if v["state"] == "completed" {
                sent += v["summary"]["by_status"]["sent"].as_u64().unwrap_or(0);
            } else {
                still.push(id);
            }
        }
        pending = still;
        if Instant::now() > deadline {
            return Err(format!("{} requests still pending after 600 s", pending.len()));
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if sent != n as u64 {
        return Err(format!("{sent} of {n} rows ended sent"));
    }
    Ok(json!({
        "recipients": n,
        "accepted_after_s": accepted,
        "terminal_after_s": seconds,
        "recipients_per_second": n as f64 / seconds,
        "serve_peak_rss_kib": serve.peak_rss_kib(),
    }))
}

async fn submit(http: &reqwest::Client, base: &str, n: usize) -> Result<Vec<String>, String> {
    let bodies: Vec<String> =
        (0..n.div_ceil(1000)).map(|i| crate::broadcast_body(i * 1000, (n - i * 1000).min(1000))).collect();
    let mut ids = Vec::new();
    for chunk in bodies.chunks(4) {
        let answers = futures::future::join_all(chunk.iter().map(|b| {
            http.post(format!("{base}/v1/broadcasts"))
                .bearer_auth(KEY)
                .header("content-type", "application/json")
                .body(b.clone())
                .send()
        }))
        .await;
        for a in answers {
            let r = a.map_err(|e| e.to_string())?;
            let status = r.status();
            let v: Value = r.json().await.map_err(|e| e.to_string())?;
            if status.as_u16() != 202 {
                return Err(format!("submit answered {status}: {v}"));
            }
            ids.push(v["request_id"].as_str().unwrap_or_default().to_string());
        }
    }
    Ok(ids)
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let r = http.get(url).bearer_auth(KEY).send().await.map_err(|e| e.to_string())?;
    r.json().await.map_err(|e| e.to_string())
}

#[derive(Clone)]
struct Sink {
    latency: Duration,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

async fn answer(State(sink): State<Sink>) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    if !sink.latency.is_zero() {
        tokio::time::sleep(sink.latency).await;
    }
    let n = {
        let mut a = sink.arrivals.lock().unwrap_or_else(|p| p.into_inner());
        a.push(Instant::now());
        a.len()
    };
    (
        StatusCode::CREATED,
        [("content-type", "application/json")],
        format!(r#"{{"sid": "SM{n:032x}", "status": "queued"}}"#),
    )
}

/// `n` recipients through a Twilio-speaking sink answering after `latency_ms`; the rate the sink
/// saw, first answer to last.
async fn through_sink(
    bin_dir: &Path,
    workers: &str,
    latency_ms: u64,
    n: usize,
    rate: Option<f64>,
) -> Result<f64, String> {
    let sink = Sink { latency: Duration::from_millis(latency_ms), arrivals: Arc::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let app = axum::Router::new().fallback(answer).with_state(sink.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let (sms_rate, burst) = match rate {
        Some(r) => (r.to_string(), "1".to_string()),
        None => ("1000000".to_string(), "1000000".to_string()),
    };
    let env = [
        ("HERALD_TWILIO_ACCOUNT_SID", "ACbench".to_string()),
        ("HERALD_TWILIO_AUTH_TOKEN", "bench-token".to_string()),
        ("HERALD_TWILIO_FROM", "+15005550006".to_string()),
        ("HERALD_TWILIO_BASE_URL", format!("http://127.0.0.1:{port}")),
        ("HERALD_SMS_RATE", sms_rate),
        ("HERALD_SMS_BURST", burst),
    ];
    let serve = Serve::start(bin_dir, &["--workers", workers], &env).await?;
    let http = reqwest::Client::new();
    submit(&http, &serve.base(), n).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let count = sink.arrivals.lock().unwrap_or_else(|p| p.into_inner()).len();
        if count >= n {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("the sink saw {count} of {n} messages in 300 s"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(serve);
    server.abort();
    let a = sink.arrivals.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let span = a[n - 1].duration_since(a[0]).as_secs_f64();
    Ok((n - 1) as f64 / span)
}
