//! `herald serve`'s guard flags on the real binary: loopback URLs only when the operator allows
//! them, a tenant rate that could admit nothing refused at start-up, and the socket's read
//! timeouts taken from the command line.

use serde_json::json;
use std::io::{Read, Write};
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
