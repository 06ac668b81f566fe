//! The real `herald` binary, killed with SIGKILL after it stored a request but before it answered:
//! the client's retry with the same `Idempotency-Key` answers the stored request (replayed) and
//! nothing is sent twice.

use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

mod common;

use common::{free_port, serve, KEY};

fn outbox(port: u16) -> Vec<Value> {
    let page: Value = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{port}/v1/outbox?limit=1000"))
        .bearer_auth(KEY)
        .send()
        .unwrap()
        .json()
        .unwrap();
    page["messages"].as_array().unwrap().clone()
}

fn post(port: u16, body: &Value) -> reqwest::Result<reqwest::blocking::Response> {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
        .post(format!("http://127.0.0.1:{port}/v1/broadcasts"))
        .bearer_auth(KEY)
        .header("idempotency-key", "k1")
        .json(body)
        .send()
}

#[test]
fn a_retry_after_a_crash_answers_the_stored_request_and_sends_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = serve(dir.path(), port, 1000);

    // Inline delivery (background: false) holds the answer back while rows go out one second
    // each, eight at a time: the request is stored long before the answer would be.
    let recipients: Vec<Value> = (0..100).map(|i| json!({"phone": format!("+1415555{i:04}")})).collect();
    let body = json!({"recipients": recipients, "messages": [{"text": "crash test"}], "background": false});
    let first = {
        let body = body.clone();
        std::thread::spawn(move || post(port, &body))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while outbox(port).len() < 8 {
        assert!(Instant::now() < deadline, "no message went out before the kill");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut server = server;
    server.0.kill().unwrap(); // SIGKILL: the answer is never written
    server.0.wait().unwrap();
    assert!(first.join().unwrap().is_err(), "the first call got no answer");

    let port = free_port();
    let _server = serve(dir.path(), port, 0);
    let retry = post(port, &body).unwrap();
    assert!(retry.status().is_success(), "the retry is answered: {}", retry.status());
    assert_eq!(retry.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    let answer: Value = retry.json().unwrap();
    let id = answer["request_id"].as_str().unwrap().to_string();
    assert_eq!(answer["row_count"], json!(100), "{answer}");

    let deadline = Instant::now() + Duration::from_secs(60);
    let sent = loop {
        let sent = outbox(port);
        if sent.len() >= 100 {
            // Give a second copy, if any, the time to show up.
            std::thread::sleep(Duration::from_millis(500));
            break outbox(port);
        }
        assert!(Instant::now() < deadline, "only {} of 100 messages went out after the restart", sent.len());
        std::thread::sleep(Duration::from_millis(50));
    };
    let requests: HashSet<&str> = sent.iter().map(|e| e["request_id"].as_str().unwrap()).collect();
    assert_eq!(requests, HashSet::from([id.as_str()]), "every message belongs to the one stored request");
    let rows: HashSet<&str> = sent.iter().map(|e| e["row_id"].as_str().unwrap()).collect();
    assert_eq!(rows.len(), 100, "every row went out");
    assert_eq!(sent.len(), 100, "no row went out twice");
}
