//! The real `herald` binary: killed with SIGKILL in the middle of a 1,000-recipient broadcast and
//! started again, it finishes every row, and the sandbox holds no duplicate. `herald status`
//! then shows the finished request.

use serde_json::{json, Value};
use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{free_port, serve, KEY};

fn get(port: u16, path: &str) -> Value {
    reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(KEY)
        .send()
        .unwrap()
        .json()
        .unwrap()
}

#[test]
fn a_killed_server_finishes_the_broadcast_after_restart_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = serve(dir.path(), port, 5);

    let recipients: Vec<Value> = (0..1000).map(|i| json!({"phone": format!("+1415555{i:04}")})).collect();
    let answer: Value = reqwest::blocking::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/broadcasts"))
        .bearer_auth(KEY)
        .json(&json!({"recipients": recipients, "messages": [{"text": "restart test"}]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = answer["request_id"].as_str().expect("request_id").to_string();

    // Kill it mid-broadcast: some rows sent, many not.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let terminal = get(port, &format!("/v1/broadcasts/{id}?limit=1"))["summary"]["terminal"].as_u64().unwrap();
        if terminal >= 100 {
            assert!(terminal < 1000, "the broadcast finished before the kill; slow the sandbox down");
            break;
        }
        assert!(Instant::now() < deadline, "no progress before the kill");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut server = server;
    server.0.kill().unwrap(); // SIGKILL: no graceful shutdown
    server.0.wait().unwrap();

    let port = free_port();
    let _server = serve(dir.path(), port, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let page = get(port, &format!("/v1/broadcasts/{id}"));
        if page["summary"]["pending"] == json!(0) {
            break page;
        }
        assert!(Instant::now() < deadline, "rows still pending after the restart: {}", page["summary"]);
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(done["summary"]["by_status"], json!({"sent": 1000}), "every row sent");

    let mut row_ids = HashSet::new();
    let mut after: Option<String> = None;
    let mut entries = 0;
    loop {
        let mut path = format!("/v1/outbox?request_id={id}&limit=1000");
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let page = get(port, &path);
        for e in page["messages"].as_array().unwrap() {
            entries += 1;
            row_ids.insert(e["row_id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => after = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(row_ids.len(), 1000, "every row reached the sandbox");
    assert_eq!(entries, 1000, "no row reached the sandbox twice");

    let status = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["status", &id, "--url", &format!("http://127.0.0.1:{port}"), "--api-key", KEY])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(out.contains("state: completed") && out.contains("sent: 1000"), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("rcp_")).count(), 1000, "a table line per row");
}
