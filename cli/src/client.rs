//! `herald send`, `herald status` and `herald import`: clients of a running Herald's HTTP API.

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Args)]
pub struct Conn {
    /// Herald's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "HERALD_URL")]
    url: String,
    /// API key (or set HERALD_API_KEY).
    #[arg(long, env = "HERALD_API_KEY", hide_env_values = true)]
    api_key: String,
}

#[derive(Args)]
pub struct SendArgs {
    #[command(flatten)]
    conn: Conn,
    /// Recipient: a phone in E.164 (+14155550123) or an email. Repeat for several.
    #[arg(long = "to", value_name = "PHONE|EMAIL")]
    to: Vec<String>,
    /// Recipient by stored contact id. Repeat for several.
    #[arg(long = "contact", value_name = "CONTACT_ID")]
    contacts: Vec<String>,
    /// Send this text.
    #[arg(long, conflicts_with_all = ["template", "campaign"])]
    text: Option<String>,
    /// Send a stored template.
    #[arg(long, conflicts_with = "campaign")]
    template: Option<String>,
    /// Send a stored campaign's templates.
    #[arg(long)]
    campaign: Option<String>,
    /// Channel to use (whatsapp, sms, email, messenger, telegram, slack, webhook).
    #[arg(long)]
    channel: Option<String>,
    /// A template variable, KEY=VALUE. Repeat for several.
    #[arg(long = "var", value_name = "KEY=VALUE")]
    vars: Vec<String>,
    /// Idempotency-Key header: sending twice with the same key sends once.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Follow the request until every row is terminal.
    #[arg(long)]
    wait: bool,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    conn: Conn,
    /// The request_id that POST /v1/broadcasts answered.
    request_id: String,
    /// Print the current state once instead of following it.
    #[arg(long)]
    no_wait: bool,
    /// Seconds to wait for every row to be terminal before giving up.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().map_err(|e| e.to_string())
}

/// Turns an error answer into one readable line (with every field error).
fn explain(status: reqwest::StatusCode, body: &Value) -> String {
    let err = &body["error"];
    let mut out = format!("{status}: {}", err["message"].as_str().unwrap_or("request failed"));
    for f in err["fields"].as_array().into_iter().flatten() {
        out.push_str(&format!("\n  {}: {}", f["field"].as_str().unwrap_or("?"), f["message"].as_str().unwrap_or("")));
    }
    out
}

async fn call(req: reqwest::RequestBuilder) -> Result<Value, String> {
    let resp = req.send().await.map_err(|e| format!("cannot reach Herald: {e}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(explain(status, &body));
    }
    Ok(body)
}

pub async fn send(args: SendArgs) -> Result<(), String> {
    let mut recipients: Vec<Value> = Vec::new();
    for to in &args.to {
        recipients.push(if to.contains('@') { json!({"email": to}) } else { json!({"phone": to}) });
    }
    recipients.extend(args.contacts.iter().map(|c| json!({"contact_id": c})));
    if recipients.is_empty() {
        return Err("name at least one recipient with --to or --contact".into());
    }
    let mut body = json!({"recipients": recipients});
    match (&args.text, &args.template, &args.campaign) {
        (Some(t), _, _) => body["messages"] = json!([{"text": t}]),
        (_, Some(t), _) => body["template"] = json!(t),
        (_, _, Some(c)) => body["campaign_id"] = json!(c),
        _ => return Err("give the content with --text, --template or --campaign".into()),
    }
    if let Some(c) = &args.channel {
        body["channel"] = json!(c);
    }
    if !args.vars.is_empty() {
        let mut vars = serde_json::Map::new();
        for v in &args.vars {
            let (k, val) = v.split_once('=').ok_or_else(|| format!("--var {v:?} is not KEY=VALUE"))?;
            vars.insert(k.to_string(), json!(val));
        }
        body["variables"] = Value::Object(vars);
    }
    let mut req = client()?
        .post(format!("{}/v1/broadcasts", args.conn.url.trim_end_matches('/')))
        .bearer_auth(&args.conn.api_key)
        .json(&body);
    if let Some(k) = &args.idempotency_key {
        req = req.header("Idempotency-Key", k);
    }
    let answer = call(req).await?;
    let id = answer["request_id"].as_str().unwrap_or_default().to_string();
    eprintln!("queued {} row(s) for {} recipient(s)", answer["row_count"], answer["recipient_count"]);
    println!("{id}");
    if args.wait {
        follow(&args.conn, &id, 600).await?;
    }
    Ok(())
}

pub async fn status(args: StatusArgs) -> Result<(), String> {
    if args.no_wait {
        let (req, rows) = fetch_all(&args.conn, &args.request_id).await?;
        print_summary(&req);
        print_rows(&rows);
        return Ok(());
    }
    follow(&args.conn, &args.request_id, args.timeout).await
}

async fn fetch_page(conn: &Conn, id: &str, cursor: Option<u64>, limit: u32) -> Result<Value, String> {
    let mut url = format!("{}/v1/broadcasts/{id}?limit={limit}", conn.url.trim_end_matches('/'));
    if let Some(c) = cursor {
        url.push_str(&format!("&cursor={c}"));
    }
    call(client()?.get(url).bearer_auth(&conn.api_key)).await
}

async fn fetch_all(conn: &Conn, id: &str) -> Result<(Value, Vec<Value>), String> {
    let first = fetch_page(conn, id, None, 1000).await?;
    let mut rows: Vec<Value> = first["recipients"].as_array().cloned().unwrap_or_default();
    let mut cursor = first["next_cursor"].as_u64();
    while let Some(c) = cursor {
        let page = fetch_page(conn, id, Some(c), 1000).await?;
        rows.extend(page["recipients"].as_array().cloned().unwrap_or_default());
        cursor = page["next_cursor"].as_u64();
    }
    Ok((first, rows))
}

/// Shows a progress bar until no row is pending, then the rows as a table.
async fn follow(conn: &Conn, id: &str, timeout: u64) -> Result<(), String> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} terminal  {msg}")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        let page = fetch_page(conn, id, None, 1).await?;
        let summary = &page["summary"];
        bar.set_length(summary["total"].as_u64().unwrap_or(0));
        bar.set_position(summary["terminal"].as_u64().unwrap_or(0));
        bar.set_message(counts_line(&summary["by_status"]));
        // An audience still fanning out may have made no row yet: nothing pending is not done.
        if summary["pending"].as_u64() == Some(0) && page["state"] != "fanning_out" {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bar.abandon();
            return Err(format!(
                "rows still pending after {timeout} s; run `herald status {id}` again to keep following"
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bar.finish();
    let (req, rows) = fetch_all(conn, id).await?;
    print_summary(&req);
    print_rows(&rows);
    Ok(())
}

fn counts_line(by_status: &Value) -> String {
    by_status
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("  "))
        .unwrap_or_default()
}

fn print_summary(req: &Value) {
    // An audience's total is known once fan-out has made its last row.
    let rows = match req["summary"]["total"].as_u64() {
        Some(n) => n.to_string(),
        None => format!("{} so far", req["summary"]["rows_made"].as_u64().unwrap_or(0)),
    };
    println!(
        "request {}  state: {}  rows: {rows}  {}",
        req["request_id"].as_str().unwrap_or("?"),
        req["state"].as_str().unwrap_or("?"),
        counts_line(&req["summary"]["by_status"])
    );
}

fn print_rows(rows: &[Value]) {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let table: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            let who =
                r["phone"].as_str().or(r["email"].as_str()).or(r["contact_id"].as_str()).unwrap_or("-").to_string();
            let detail = r["external_message_id"].as_str().or(r["error_message"].as_str()).unwrap_or("-").to_string();
            [s(&r["id"]), who, s(&r["template_id"]), s(&r["channel"]), s(&r["status"]), detail]
        })
        .collect();
    let headers = ["ROW", "RECIPIENT", "TEMPLATE", "CHANNEL", "STATUS", "EXTERNAL ID / ERROR"];
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &table {
        for (i, c) in row.iter().enumerate().take(5) {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i < 5 {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            } else {
                out.push_str(c);
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in &table {
        line(row.iter().map(String::as_str).collect());
    }
}

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    conn: Conn,
    /// The CSV file: a header line (phone, email, name, the channel ids, timezone; any other
    /// column is a contact field), then one contact per line.
    file: std::path::PathBuf,
    /// The segment the contacts join (it must exist: PUT /v1/segments/{id}).
    #[arg(long)]
    segment: String,
    /// Print the import's id once the file is uploaded instead of following it.
    #[arg(long)]
    no_wait: bool,
    /// Seconds to follow the import before giving up.
    #[arg(long, default_value_t = 3600)]
    timeout: u64,
}

fn bytes_bar(len: u64, what: &str) -> Result<ProgressBar, String> {
    let bar = ProgressBar::new(len);
    let template = format!("{what} [{{bar:40}}] {{bytes}}/{{total_bytes}} ({{bytes_per_sec}})  {{msg}}");
    bar.set_style(ProgressStyle::with_template(&template).map_err(|e| e.to_string())?.progress_chars("=> "));
    Ok(bar)
}

/// A file read that moves a progress bar.
struct Counted {
    file: std::fs::File,
    bar: ProgressBar,
}

impl std::io::Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// Streams the file to `POST /v1/imports` (never holding it whole); the answer.
fn upload(args: &ImportArgs) -> Result<Value, String> {
    let file = std::fs::File::open(&args.file).map_err(|e| format!("cannot open {}: {e}", args.file.display()))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let bar = bytes_bar(len, "upload")?;
    let body = reqwest::blocking::Body::sized(Counted { file, bar: bar.clone() }, len);
    let url = format!("{}/v1/imports", args.conn.url.trim_end_matches('/'));
    let client = reqwest::blocking::Client::builder().timeout(None).build().map_err(|e| e.to_string())?;
    let resp = client
        .post(url)
        .query(&[("segment_id", &args.segment)])
        .bearer_auth(&args.conn.api_key)
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .map_err(|e| format!("cannot reach Herald: {e}"))?;
    bar.finish_and_clear();
    let status = resp.status();
    let answer: Value = resp.json().unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(explain(status, &answer));
    }
    Ok(answer)
}

pub async fn import(args: ImportArgs) -> Result<(), String> {
    let (answer, args) = tokio::task::spawn_blocking(move || (upload(&args), args)).await.map_err(|e| e.to_string())?;
    let answer = answer?;
    let id = answer["import_id"].as_str().unwrap_or_default().to_string();
    eprintln!("uploaded {} bytes: import {id}", answer["bytes"]);
    if args.no_wait {
        println!("{id}");
        return Ok(());
    }
    let url = format!("{}/v1/imports/{id}", args.conn.url.trim_end_matches('/'));
    let bar = bytes_bar(answer["bytes"].as_u64().unwrap_or(0), "import")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout);
    let done = loop {
        let now = call(client()?.get(&url).bearer_auth(&args.conn.api_key)).await?;
        bar.set_position(now["bytes_done"].as_u64().unwrap_or(0));
        bar.set_message(format!("{} lines, {} rejected", now["lines"], now["rejected"]));
        if now["state"] != "running" {
            break now;
        }
        if tokio::time::Instant::now() > deadline {
            bar.abandon();
            return Err(format!("import {id} still running after {} s; GET {url} to follow it", args.timeout));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    bar.finish_and_clear();
    print_import(&done);
    match done["state"].as_str() {
        Some("completed") => Ok(()),
        _ => Err(format!("import {id} failed: {}", done["failure"].as_str().unwrap_or("no reason given"))),
    }
}

fn print_import(i: &Value) {
    println!(
        "import {}  state: {}  lines: {}  imported: {}  created: {}  updated: {}  unchanged: {}  rejected: {}",
        i["import_id"].as_str().unwrap_or("?"),
        i["state"].as_str().unwrap_or("?"),
        i["lines"],
        i["imported"],
        i["created"],
        i["updated"],
        i["unchanged"],
        i["rejected"]
    );
    let errors = i["errors"].as_array().cloned().unwrap_or_default();
    for e in &errors {
        println!("  line {}: {}", e["line"], e["reason"].as_str().unwrap_or(""));
    }
    let rejected = i["rejected"].as_u64().unwrap_or(0);
    if rejected > errors.len() as u64 {
        println!("  … and {} more rejected line(s)", rejected - errors.len() as u64);
    }
}
