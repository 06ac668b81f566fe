//! `herald serve`'s guard flags on the real binary: loopback URLs only when the operator allows
//! them, a tenant rate that could admit nothing refused at start-up, the socket's read timeouts
//! taken from the command line, and a status event's retry schedule shortened for tests.

use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "hk_serve_flags_key_0123456789abcdef";

struct Server(Child, u16);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &std::path::Path, flags: &[&str], env: &[(&str, &str)]) -> Server {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(["serve", "--addr", &format!("127.0.0.1:{port}"), "--workers", "1", "--data-dir"])
        .arg(dir)
        .args(flags)
        .env("HERALD_API_KEY", KEY)
        .env("HERALD_LOG", "warn")
        .env_remove("HERALD_ALLOW_LOOPBACK_URLS")
        .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("start herald serve");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz")).is_err() {
        assert!(Instant::now() < deadline, "herald serve did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server(child, port)
}

fn put_webhook(s: &Server, url: &str) -> u16 {
    reqwest::blocking::Client::new()
        .put(format!("http://127.0.0.1:{}/v1/webhook", s.1))
        .bearer_auth(KEY)
        .json(&json!({ "url": url }))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn loopback_urls_need_the_operators_flag() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), &[], &[]);
    assert_eq!(put_webhook(&s, "http://127.0.0.1:9/hook"), 422, "off by default");
    drop(s);
    let s = serve(dir.path(), &["--allow-loopback-urls"], &[]);
    assert_eq!(put_webhook(&s, "http://127.0.0.1:9/hook"), 201);
    drop(s);
    let s = serve(dir.path(), &[], &[("HERALD_ALLOW_LOOPBACK_URLS", "true")]);
    assert_eq!(put_webhook(&s, "http://127.0.0.1:9/hook"), 200, "the environment turns it on too");
}

#[test]
fn a_tenant_rate_below_half_a_request_a_second_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--addr", "127.0.0.1:0", "--tenant-rps", "0.4", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run herald serve");
    assert!(!out.status.success(), "herald serve started with --tenant-rps 0.4");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--tenant-rps must be at least 0.5"), "{stderr}");
}

#[test]
fn the_header_timeout_comes_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path(), &["--header-timeout-ms", "500"], &[]);
    let mut slow = TcpStream::connect(("127.0.0.1", s.1)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\n").unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    // The server closes the connection (0 bytes, or a reset) well before the client's 5 s.
    let _ = slow.read(&mut buf);
    assert!(started.elapsed() < Duration::from_secs(3), "a half-sent request head was kept open");
}

/// A subscriber that answers every post with a 500, and when each post came.
fn refusing_receiver() -> (u16, std::sync::mpsc::Receiver<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let _ = reader.read_exact(&mut vec![0; length]);
            let _ = tx.send(Instant::now());
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, rx)
}

/// Serves with `--event-retry-schedule-ms schedule`, sends one recipient to a subscription that
/// refuses every post, and answers the event's failure once listed and when each post came.
fn refused_event(schedule: &str) -> (serde_json::Value, Vec<Instant>) {
    let dir = tempfile::tempdir().unwrap();
    let flag = format!("--event-retry-schedule-ms={schedule}");
    let s = serve(dir.path(), &["--allow-loopback-urls", &flag], &[]);
    let (port, posts) = refusing_receiver();
    let http = reqwest::blocking::Client::new();
    let base = format!("http://127.0.0.1:{}", s.1);
    let sub = json!({"url": format!("http://127.0.0.1:{port}/hook"), "events": ["message.sent"]});
    let put = http.put(format!("{base}/v1/event-subscriptions/ops")).bearer_auth(KEY).json(&sub).send().unwrap();
    assert_eq!(put.status().as_u16(), 201);
    let send = json!({"recipients": [{"phone": "+14155550100"}], "messages": [{"text": "hi"}]});
    let sent = http.post(format!("{base}/v1/broadcasts")).bearer_auth(KEY).json(&send).send().unwrap();
    assert_eq!(sent.status().as_u16(), 202);

    // Standard Webhooks' schedule would post the third time after 5 min: a busy machine gets time.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let url = format!("{base}/v1/event-subscriptions/ops/failures");
        let page: serde_json::Value = http.get(url).bearer_auth(KEY).send().unwrap().json().unwrap();
        if let Some(failure) = page["failures"].as_array().unwrap().first() {
            return (failure.clone(), posts.try_iter().collect());
        }
        assert!(Instant::now() < deadline, "no failure within 30 s: {page}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_events_retry_schedule_from_the_command_line_makes_it_a_failure_in_well_under_a_minute() {
    let (failure, at) = refused_event("300, 300");
    assert_eq!((&failure["attempts"], &failure["last_status"]), (&json!(3), &json!(500)), "{failure}");
    assert_eq!(at.len(), 3, "one post, then one per wait");
    assert!(at.windows(2).all(|w| w[1] - w[0] >= Duration::from_millis(300)), "each wait was kept");
}

#[test]
fn an_empty_event_retry_schedule_posts_once() {
    let (failure, at) = refused_event("");
    assert_eq!(failure["attempts"], 1, "{failure}");
    assert_eq!(at.len(), 1);
}

#[test]
fn a_bad_event_retry_schedule_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let too_many = ["1"; 21].join(",");
    let cases = [
        ("200,,200", "waits in milliseconds"),
        ("200,soon", "waits in milliseconds"),
        ("-5", "waits in milliseconds"),
        ("86400001", "each at most 86400000"),
        (too_many.as_str(), "at most 20 waits"),
    ];
    for (bad, says) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--addr", "127.0.0.1:0", &format!("--event-retry-schedule-ms={bad}"), "--data-dir"])
            .arg(dir.path())
            .output()
            .expect("run herald serve");
        assert!(!out.status.success(), "herald serve started with --event-retry-schedule-ms {bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--event-retry-schedule-ms") && stderr.contains(says), "{bad}: {stderr}");
    }
}
