//! `herald soak`: thousands of recipients through a real `herald serve` (a child process) while a
//! chaos provider injects faults, the server's own store and queue fail a share of their calls
//! (`--store-fault-rate`), and the server is killed with SIGKILL and restarted. It ends by
//! counting what was accepted, what ended, what was lost and what was sent twice, and fails if
//! anything was lost or duplicated beyond the documented crash window. Its own calls to the API
//! retry answers that say "try again" (5xx, 429, a key in progress) and dropped connections, with
//! one Idempotency-Key per send, so its counts are exact.

use clap::Args;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::chaos::Chaos;

const KEY: &str = "hk_soak_0123456789abcdef0123456789abcdef";

#[derive(Args)]
pub struct SoakArgs {
    /// Recipients to send to (each with its own number).
    #[arg(long, default_value_t = 2000)]
    recipients: usize,
    /// Share of provider calls (0.0–1.0) answered with a fault.
    #[arg(long, default_value_t = 0.2)]
    fault_rate: f64,
    /// Share of the server's store and queue calls (0.0–1.0) that fail, half before their work
    /// and half after it committed.
    #[arg(long, default_value_t = 0.0)]
    store_fault_rate: f64,
    /// Times to kill the server with SIGKILL in the middle of the run.
    #[arg(long, default_value_t = 2)]
    kills: u32,
    /// Delivery workers of the server.
    #[arg(long, default_value_t = 16)]
    workers: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, port: u16, chaos: &str, workers: usize, store_fault_rate: f64) -> Result<Server, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--workers", &workers.to_string()])
        .arg("--data-dir")
        .arg(dir)
        .args(["--backoff-base-ms", "20", "--max-attempts", "12", "--provider-timeout-ms", "300"])
        // Short leases and visibility timeouts, so that work stranded by a kill or a lost answer
        // comes back within the run.
        .args(["--lease-ms", "3000", "--visibility-ms", "5000"])
        .args(["--store-fault-rate", &store_fault_rate.to_string()])
        .args(["--tenant-rps", "1000", "--tenant-recipients-per-minute", "10000000"])
        .env("HERALD_API_KEY", KEY)
        .env("HERALD_TWILIO_ACCOUNT_SID", "ACsoak")
        .env("HERALD_TWILIO_AUTH_TOKEN", "soak-token")
        .env("HERALD_TWILIO_FROM", "+15005550006")
        .env("HERALD_TWILIO_BASE_URL", chaos)
        .env("HERALD_SMS_RATE", "100000")
        .env("HERALD_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start herald serve: {e}"))?;
    Ok(Server(child))
}

async fn wait_healthy(http: &reqwest::Client, base: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        if Instant::now() > deadline {
            return Err("herald serve did not come up".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Calls the API until it gives an answer that is not "try again": dropped connections, 5xx, 429
/// and `409 idempotency_key_in_progress` are retried (after `Retry-After` when given), for up to
/// two minutes. `retries` counts the calls made again.
async fn call(request: impl Fn() -> reqwest::RequestBuilder, retries: &mut u64) -> Result<Value, String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (wait, why) = match request().send().await {
            Ok(r) => {
                let status = r.status();
                let after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let body: Value = r.json().await.unwrap_or(Value::Null);
                let again = status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || body["error"]["code"] == "idempotency_key_in_progress";
                if !again {
                    return Ok(body);
                }
                (after.unwrap_or(Duration::from_millis(100)).min(Duration::from_secs(2)), format!("{status} {body}"))
            }
            Err(e) => (Duration::from_millis(100), e.to_string()),
        };
        if Instant::now() > deadline {
            return Err(format!("the API kept answering \"try again\" for two minutes: {why}"));
        }
        *retries += 1;
        tokio::time::sleep(wait).await;
    }
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// The `i`th recipient's number: valid, distinct US numbers across area codes.
fn phone(i: usize) -> String {
    const AREAS: [u32; 8] = [415, 212, 312, 617, 206, 303, 512, 702];
    format!("+1{}555{:04}", AREAS[i / 10_000 % AREAS.len()], i % 10_000)
}

pub async fn run(args: SoakArgs) -> Result<(), String> {
    if !(0.0..=1.0).contains(&args.fault_rate)
        || !(0.0..=1.0).contains(&args.store_fault_rate)
        || args.recipients == 0
        || args.recipients > 80_000
    {
        return Err("--fault-rate and --store-fault-rate must be 0.0–1.0 and --recipients 1–80000".into());
    }
    let started = Instant::now();
    let chaos = Chaos::start(args.fault_rate, Duration::from_millis(900)).await.map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(|e| e.to_string())?;
    let mut port = free_port()?;
    let mut base = format!("http://127.0.0.1:{port}");
    let mut server = start(dir.path(), port, &chaos.url, args.workers, args.store_fault_rate)?;
    wait_healthy(&http, &base).await?;
    let mut retries = 0u64;

    // Send in requests of up to 1,000 recipients, each with its own Idempotency-Key: a send
    // answered "try again" is sent again and counted once.
    let mut requests = Vec::new();
    for chunk in (0..args.recipients).collect::<Vec<_>>().chunks(1000) {
        let recipients: Vec<Value> = chunk.iter().map(|i| json!({"phone": phone(*i)})).collect();
        let body = json!({"recipients": recipients, "messages": [{"text": "soak"}], "channel": "sms"});
        let key = format!("soak-{:032x}", rand::random::<u128>());
        let url = format!("{base}/v1/broadcasts");
        let send = || http.post(&url).bearer_auth(KEY).header("idempotency-key", &key).json(&body);
        let answer = call(send, &mut retries).await?;
        requests.push(answer["request_id"].as_str().ok_or(format!("not accepted: {answer}"))?.to_string());
    }
    eprintln!(
        "accepted {} recipients in {} requests; injecting provider faults at {:.0}%, store and queue faults at {:.1}%",
        args.recipients,
        requests.len(),
        args.fault_rate * 100.0,
        args.store_fault_rate * 100.0
    );

    // Kill the server at even steps of progress, and restart it on the same data.
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let summary = loop {
        let mut terminal = 0u64;
        let mut pending = 0u64;
        for id in &requests {
            let url = format!("{base}/v1/broadcasts/{id}?limit=1");
            let v = call(|| http.get(&url).bearer_auth(KEY), &mut retries).await?;
            terminal += v["summary"]["terminal"].as_u64().ok_or(format!("no summary: {v}"))?;
            pending += v["summary"]["pending"].as_u64().ok_or(format!("no summary: {v}"))?;
        }
        if pending == 0 {
            break terminal;
        }
        if Instant::now() > deadline {
            break terminal;
        }
        let step = args.recipients as u64 / (u64::from(args.kills) + 1);
        if kills < args.kills && terminal >= step * u64::from(kills + 1) {
            server.0.kill().map_err(|e| e.to_string())?; // SIGKILL
            let _ = server.0.wait();
            kills += 1;
            eprintln!("killed herald serve with SIGKILL at {terminal} terminal rows; restarting");
            port = free_port()?;
            base = format!("http://127.0.0.1:{port}");
            server = start(dir.path(), port, &chaos.url, args.workers, args.store_fault_rate)?;
            wait_healthy(&http, &base).await?;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Every row, against what the provider saw.
    let mut by_status: HashMap<String, u64> = HashMap::new();
    let mut sent_to: Vec<String> = Vec::new();
    for id in &requests {
        let mut cursor: Option<u64> = None;
        loop {
            let mut url = format!("{base}/v1/broadcasts/{id}?limit=1000");
            if let Some(c) = cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page = call(|| http.get(&url).bearer_auth(KEY), &mut retries).await?;
            for row in page["recipients"].as_array().into_iter().flatten() {
                let st = row["status"].as_str().unwrap_or("?").to_string();
                if st == "sent" {
                    sent_to.push(row["phone"].as_str().unwrap_or_default().to_string());
                }
                *by_status.entry(st).or_insert(0) += 1;
            }
            match page["next_cursor"].as_u64() {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
    }
    drop(server);
    let injected = herald::adapters::embedded::read_fault_log(&dir.path().join(herald::local::FAULT_LOG))
        .map_err(|e| format!("cannot read the fault log: {e}"))?;
    let tally = chaos.tally.lock().unwrap();
    let pending: u64 = ["queued", "retrying", "sending"].iter().map(|s| by_status.get(*s).copied().unwrap_or(0)).sum();
    let unsent_but_said_sent = sent_to.iter().filter(|p| !tally.accepted.contains_key(*p)).count() as u64;
    let lost = pending + unsent_but_said_sent;
    let duplicated: u64 = tally.accepted.values().map(|n| u64::from(n.saturating_sub(1))).sum();
    let window = u64::from(kills) * args.workers as u64;
    let mut faults: Vec<String> = tally.faults.iter().map(|(k, n)| format!("{k} {n}")).collect();
    faults.sort();
    let mut statuses: Vec<String> = by_status.iter().map(|(k, n)| format!("{k} {n}")).collect();
    statuses.sort();
    let count = |what: &str, when: &str| injected.get(&(what.to_string(), when.to_string())).copied().unwrap_or(0);

    println!(
        "soak: {} recipients, fault rate {:.0}%, store fault rate {:.1}%, {kills} kill(s), {:.1} s",
        args.recipients,
        args.fault_rate * 100.0,
        args.store_fault_rate * 100.0,
        started.elapsed().as_secs_f64()
    );
    println!("  faults injected: {}", faults.join(", "));
    println!(
        "  store faults:    store {} before + {} after commit, queue {} before + {} after commit",
        count("store", "before"),
        count("store", "after-commit"),
        count("queue", "before"),
        count("queue", "after-commit")
    );
    println!("  client retries:  {retries}");
    println!("  rows:            {}", statuses.join(", "));
    println!(
        "accepted {}  terminal {summary}  lost {lost}  duplicated {duplicated} (allowed by the crash window: {window})",
        args.recipients
    );
    if lost > 0 {
        return Err(format!("{lost} message(s) lost"));
    }
    if duplicated > window {
        return Err(format!("{duplicated} duplicate(s), more than the crash window allows ({window})"));
    }
    Ok(())
}
