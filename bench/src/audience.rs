//! Part 8: an audience. A CSV file of `members` contacts is imported into a segment
//! (`POST /v1/imports`, streamed from disk), one broadcast goes to the segment, and its rows are
//! timed as fan-out makes them and as the sandbox sends them; `herald serve`'s peak RSS is read
//! at the end, so it covers the import too.

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
    /// Stop once the import is done (to measure it alone): the figures have no broadcast's.
    #[arg(long)]
    import_only: bool,
}

/// `herald serve`'s CPU seconds by thread since `before`, as a figure.
fn cpu_since(serve: &Serve, before: &std::collections::BTreeMap<String, f64>) -> Value {
    let now = serve.thread_cpu_seconds();
    let used: serde_json::Map<String, Value> = now
        .iter()
        .map(|(name, s)| (name.clone(), json!(((s - before.get(name).unwrap_or(&0.0)) * 100.0).round() / 100.0)))
        .collect();
    Value::Object(used)
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

    let file = write_csv(args.members)?;
    let bytes = file.as_file().metadata().map_err(|e| e.to_string())?.len();
    let cpu_before = serve.thread_cpu_seconds();
    let started = Instant::now();
    let url = format!("{base}/v1/imports?segment_id=bench");
    let answer = tokio::task::spawn_blocking(move || upload(&url, file)).await.map_err(|e| e.to_string())??;
    let upload_seconds = started.elapsed().as_secs_f64();
    let id = answer["import_id"].as_str().ok_or("no import_id")?.to_string();
    let import = loop {
        let now = call(&http, reqwest::Method::GET, format!("{base}/v1/imports/{id}"), None).await?;
        if now["state"] != "running" {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let add_seconds = started.elapsed().as_secs_f64();
    if import["state"] != "completed" || import["created"] != json!(args.members) {
        return Err(format!("the import did not create every member: {import}"));
    }
    let import_rss = serve.peak_rss_kib().ok_or("cannot read herald serve's peak RSS")?;
    let import_cpu = cpu_since(&serve, &cpu_before);
    println!(
        "audience: {} lines imported in {add_seconds:.1} s (upload {upload_seconds:.1} s), peak RSS {import_rss} KiB, CPU seconds by thread {import_cpu}",
        args.members
    );
    let imported = json!({
        "members": args.members,
        "workers": args.workers,
        "import_bytes": bytes,
        "import_peak_rss_kib": import_rss,
        "import_cpu_seconds": import_cpu,
        "upload_seconds": upload_seconds,
        "add_seconds": add_seconds,
        "members_added_per_second": args.members as f64 / add_seconds,
    });
    if args.import_only {
        return Ok(imported);
    }
    let cpu_before = serve.thread_cpu_seconds();

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
    let send_cpu = cpu_since(&serve, &cpu_before);
    println!(
        "audience: {rows} rows terminal in {terminal_seconds:.1} s, peak RSS {rss} KiB, CPU seconds by thread {send_cpu}"
    );
    let mut figures = imported;
    for (name, value) in [
        ("broadcast_cpu_seconds", send_cpu),
        ("rows", json!(rows)),
        ("by_status", done["summary"]["by_status"].clone()),
        ("fan_out_seconds", json!(fan_out_seconds)),
        ("fan_out_rows_per_second", json!(rows as f64 / fan_out_seconds)),
        ("terminal_seconds", json!(terminal_seconds)),
        ("rows_per_second_end_to_end", json!(rows as f64 / terminal_seconds)),
        ("serve_peak_rss_kib", json!(rss)),
    ] {
        figures[name] = value;
    }
    Ok(figures)
}

/// A CSV file of `members` contacts as a customer's export looks: a phone, an email, a name, a
/// timezone and two fields each.
fn write_csv(members: usize) -> Result<tempfile::NamedTempFile, String> {
    use std::io::Write;
    const ZONES: [&str; 4] = ["America/New_York", "Europe/Berlin", "Asia/Tokyo", "America/Los_Angeles"];
    let file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let mut w = std::io::BufWriter::new(file.as_file());
    let io = |e: std::io::Error| e.to_string();
    writeln!(w, "phone,email,name,timezone,plan,city").map_err(io)?;
    for i in 0..members {
        // Ten real area codes, exchanges 220–299: distinct and valid for the first eight million.
        const AREAS: [u32; 10] = [415, 212, 312, 617, 206, 303, 512, 702, 404, 305];
        let phone = format!("+1{}{}{:04}", AREAS[i / 800_000 % 10], 220 + i / 10_000 % 80, i % 10_000);
        let line = format!("{phone},m{i}@example.com,Member {i},{},gold,Springfield", ZONES[i % 4]);
        writeln!(w, "{line}").map_err(io)?;
    }
    w.flush().map_err(io)?;
    drop(w);
    Ok(file)
}

/// Streams the file to `POST /v1/imports`; the answer.
fn upload(url: &str, file: tempfile::NamedTempFile) -> Result<Value, String> {
    let f = file.reopen().map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    let client = reqwest::blocking::Client::builder().timeout(None).build().map_err(|e| e.to_string())?;
    let resp = client
        .post(url)
        .header("x-api-key", KEY)
        .header("content-type", "text/csv")
        .body(reqwest::blocking::Body::sized(f, len))
        .send()
        .map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    let body: Value = resp.json().map_err(|e| format!("{url}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{url}: {status} {body}"));
    }
    Ok(body)
}
