//! The real `herald` binary importing a CSV file: killed with SIGKILL in the middle of the import,
//! then started again, it carries on from the last chunk it wrote and ends with every line
//! imported and counted exactly once.

use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{free_port, serve, KEY};

const LINES: usize = 100_000;

fn get(port: u16, path: &str) -> Value {
    let resp = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(KEY)
        .timeout(Duration::from_secs(60))
        .send()
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

#[test]
fn killed_in_the_middle_of_an_import_it_finishes_with_each_line_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("contacts.csv");
    let mut text = String::from("email,name,plan\n");
    for i in 0..LINES {
        text.push_str(&format!("m{i}@example.com,Member {i},gold\n"));
    }
    std::fs::write(&csv, text).unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let server = serve(&data, port, 0);
    let put = reqwest::blocking::Client::new()
        .put(format!("http://127.0.0.1:{port}/v1/segments/all"))
        .bearer_auth(KEY)
        .json(&json!({"name": "All"}))
        .send()
        .unwrap();
    assert!(put.status().is_success());

    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["import", "--no-wait", "--segment", "all", "--url", &format!("http://127.0.0.1:{port}")])
        .arg(&csv)
        .env("HERALD_API_KEY", KEY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(id.starts_with("imp_"), "{id}");

    // Kill once some chunks are written and others are not.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = get(port, &format!("/v1/imports/{id}"));
        assert_eq!(now["state"], "running", "the import ended before the kill: {now}");
        if now["lines"].as_u64().unwrap() > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no progress: {now}");
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut server = server;
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    let _again = serve(&data, port, 0);
    let deadline = Instant::now() + Duration::from_secs(300);
    let done = loop {
        let now = get(port, &format!("/v1/imports/{id}"));
        if now["state"] != "running" {
            break now;
        }
        assert!(Instant::now() < deadline, "the import did not resume: {now}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let counts = ["state", "lines", "imported", "created", "updated", "unchanged", "rejected"].map(|k| done[k].clone());
    let expected = [json!("completed"), json!(LINES), json!(LINES), json!(LINES), json!(0), json!(0), json!(0)];
    assert_eq!(counts, expected, "{done}");
    assert_eq!(get(port, "/v1/segments/all")["member_count"], json!(LINES));
    // The file goes just after the last chunk commits (or, had the kill come in between, when
    // the import's job comes back and finds it completed).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let leftover: Vec<_> = walk(&data.join("imports"));
        if leftover.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the import's file is removed once read: {leftover:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
