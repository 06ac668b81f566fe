//! The real `herald` binary, broadcasting to a segment: killed with SIGKILL while it fans the
//! audience out and again while it sends, then started again, it still makes exactly one row and
//! one sandbox record per member.

use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

mod common;

use common::{free_port, serve, Server, KEY};

const MEMBERS: usize = 30_000;

fn call(port: u16, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req =
        reqwest::blocking::Client::new().request(method, format!("http://127.0.0.1:{port}{path}")).bearer_auth(KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.timeout(Duration::from_secs(120)).send().unwrap();
    let status = resp.status();
    let body: Value = resp.json().unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

fn summary(port: u16, id: &str) -> Value {
    call(port, reqwest::Method::GET, &format!("/v1/broadcasts/{id}?limit=1"), None)
}

/// Polls until `ready` holds for the request's view, then kills the server; panics if `stop`
/// holds first (the moment to kill in has passed).
fn kill_when(server: Server, port: u16, id: &str, ready: impl Fn(&Value) -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = summary(port, id);
        if ready(&now) {
            break;
        }
        assert!(now["state"] != "completed", "the broadcast finished before the kill {what}: {now}");
        assert!(Instant::now() < deadline, "no progress before the kill {what}: {now}");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut server = server;
    server.0.kill().unwrap(); // SIGKILL: no graceful shutdown
    server.0.wait().unwrap();
}

#[test]
fn killed_while_fanning_out_and_while_sending_it_still_sends_once_to_each_member() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = serve(dir.path(), port, 5);
    call(port, reqwest::Method::PUT, "/v1/segments/all", Some(json!({"name": "All"})));
    for first in (0..MEMBERS).step_by(10_000) {
        let contacts: Vec<Value> = (first..first + 10_000)
            .map(|i| json!({"phone": format!("+1{}555{:04}", [415, 212, 312][i / 10_000], i % 10_000)}))
            .collect();
        call(port, reqwest::Method::POST, "/v1/segments/all/members", Some(json!({"contacts": contacts})));
    }
    let body = json!({"audience": {"segments": ["all"]}, "messages": [{"text": "restart"}], "channel": "sms"});
    let answer = call(port, reqwest::Method::POST, "/v1/broadcasts", Some(body));
    let id = answer["request_id"].as_str().unwrap().to_string();

    // First kill: some rows made, fan-out not finished.
    let fanning = |v: &Value| v["state"] == "fanning_out" && v["summary"]["rows_made"].as_u64().unwrap_or(0) > 0;
    kill_when(server, port, &id, fanning, "during fan-out");

    // Second kill: fan-out done, some rows sent, many not.
    let port = free_port();
    let server = serve(dir.path(), port, 5);
    let sending = |v: &Value| {
        v["state"] != "fanning_out" && v["summary"]["by_status"]["sent"].as_u64().unwrap_or(0) >= (MEMBERS / 10) as u64
    };
    kill_when(server, port, &id, sending, "during sending");

    let port = free_port();
    let _server = serve(dir.path(), port, 0);
    let deadline = Instant::now() + Duration::from_secs(300);
    let done = loop {
        let now = summary(port, &id);
        if now["state"] == "completed" {
            break now;
        }
        assert!(Instant::now() < deadline, "not finished after the restarts: {now}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(done["summary"]["total"], json!(MEMBERS), "{done}");
    assert_eq!(done["summary"]["by_status"], json!({"sent": MEMBERS}), "{done}");

    let (mut rows, mut entries, mut after) = (HashSet::new(), 0, None::<String>);
    loop {
        let mut path = format!("/v1/outbox?request_id={id}&limit=1000");
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let page = call(port, reqwest::Method::GET, &path, None);
        for e in page["messages"].as_array().unwrap() {
            entries += 1;
            rows.insert(e["row_id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => after = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(rows.len(), MEMBERS, "every member's row reached the sandbox");
    assert_eq!(entries, MEMBERS, "no row reached the sandbox twice");

    let status = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["status", &id, "--url", &format!("http://127.0.0.1:{port}"), "--api-key", KEY])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let out = String::from_utf8_lossy(&status.stdout);
    let first = out.lines().next().unwrap_or_default();
    assert!(first.contains("state: completed") && first.contains(&format!("rows: {MEMBERS} ")), "{first}");
}
