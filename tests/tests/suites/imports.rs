//! CSV imports through the front door: a file streams in, its lines become contacts and members
//! of a segment in the background, refused lines are named with their line numbers, and the
//! same file imported again changes nothing.

use herald::providers::sandbox::SandboxBehaviour;
use herald::Settings;
use herald_tests::{error_fields, fast_settings, read, TestServer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

/// A phone number for line `i` (100,000 distinct ones).
fn phone(i: usize) -> String {
    const AREAS: [u32; 10] = [415, 212, 312, 617, 206, 303, 512, 702, 404, 305];
    format!("+1{}555{:04}", AREAS[i / 10_000 % AREAS.len()], i % 10_000)
}

async fn upload_as(s: &TestServer, key: &str, query: &str, content_type: &str, body: String) -> (StatusCode, Value) {
    let req = s
        .http
        .post(s.url(&format!("/v1/imports{query}")))
        .bearer_auth(key)
        .header("content-type", content_type)
        .body(body);
    read(req.send().await.expect("upload")).await
}

async fn upload(s: &TestServer, segment: &str, csv: String) -> (StatusCode, Value) {
    upload_as(s, &s.key, &format!("?segment_id={segment}"), "text/csv", csv).await
}

/// Polls the import until it is no longer running.
async fn finished(s: &TestServer, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let (status, body) = s.get(&format!("/v1/imports/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["state"] != "running" {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "import still running: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn import(s: &TestServer, segment: &str, csv: String) -> Value {
    let (status, answer) = upload(s, segment, csv).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    finished(s, answer["import_id"].as_str().expect("import_id")).await
}

async fn segment(s: &TestServer, id: &str) {
    let (status, body) = s.put(&format!("/v1/segments/{id}"), json!({"name": id})).await;
    assert!(status.is_success(), "{status} {body}");
}

async fn member_count(s: &TestServer, id: &str) -> u64 {
    let (_, body) = s.get(&format!("/v1/segments/{id}")).await;
    body["member_count"].as_u64().expect("member_count")
}

/// `lines` good lines, with names that need quoting (commas, quotes, a newline) so that records
/// span chunk boundaries in every way.
fn good_file(lines: usize) -> String {
    let mut csv = String::from("phone,email,name,timezone,plan\n");
    for i in 0..lines {
        let name = match i % 4 {
            0 => format!("Ada {i}"),
            1 => format!("\"Lovelace, Ada {i}\""),
            2 => format!("\"Ada \"\"The Countess\"\" {i}\""),
            _ => format!("\"Ada\n{i}\""),
        };
        csv.push_str(&format!("{},ada{i}@example.com,{name},Europe/London,gold\n", phone(i)));
    }
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_sixty_thousand_lines_is_imported_once_and_again_changes_nothing() {
    const LINES: usize = 60_000;
    let s = TestServer::start().await;
    segment(&s, "customers").await;
    let csv = good_file(LINES);
    assert!(csv.len() > 2 * herald::domain::import::CHUNK_BYTES, "the file spans several chunks");

    let first = import(&s, "customers", csv.clone()).await;
    assert_eq!(first["state"], "completed", "{first}");
    let counts = |v: &Value| ["lines", "imported", "created", "updated", "unchanged", "rejected"].map(|k| v[k].clone());
    assert_eq!(counts(&first), [LINES, LINES, LINES, 0, 0, 0].map(|n| json!(n)), "{first}");
    assert_eq!(first["bytes_done"], first["bytes"]);
    assert_eq!(member_count(&s, "customers").await, LINES as u64);
    let before = s.stored().await;

    let again = import(&s, "customers", csv).await;
    assert_eq!(counts(&again), [LINES, LINES, 0, 0, LINES, 0].map(|n| json!(n)), "{again}");
    assert_eq!(member_count(&s, "customers").await, LINES as u64);
    let after = s.stored().await;
    assert_eq!(after.counts.contacts, before.counts.contacts, "no contact made twice");

    // A line that spanned two file lines kept its newline, and its fields came along.
    let (_, page) = s.get("/v1/segments/customers/members?limit=1").await;
    let id = page["contact_ids"][0].as_str().unwrap();
    let (_, contact) = s.get(&format!("/v1/contacts/{id}")).await;
    assert_eq!(contact["timezone"], "Europe/London", "{contact}");
    assert_eq!(contact["fields"]["plan"], "gold", "{contact}");
    assert!(contact["name"].as_str().unwrap().starts_with("Ada"), "{contact}");
}

#[tokio::test]
async fn refused_lines_are_named_by_line_number_and_the_rest_imported() {
    let s = TestServer::start().await;
    segment(&s, "s1").await;
    // The contacts API checks a timezone as the import does.
    let (status, body) = s.post("/v1/contacts", json!({"phone": phone(91), "timezone": "Nowhere/City"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_fields(&body), vec!["timezone"]);
    // Two contacts whose keys line 7 tries to join.
    let (status, _) = s.post("/v1/contacts", json!({"phone": phone(90), "name": "Taken"})).await;
    assert!(status.is_success());
    let (status, _) = s.post("/v1/contacts", json!({"email": "other@example.com"})).await;
    assert!(status.is_success());
    let csv = format!(
        "phone,email,name,timezone\n\
         {},a@example.com,Ann,America/New_York\n\
         12345,b@example.com,Bob,\n\
         ,,Nobody,\n\
         {},c@example.com,Cy,Mars/Olympus\n\
         {},d@example.com,Di,UTC,extra\n\
         {},other@example.com,Clash,\n\
         {},,Updated name,\n",
        phone(1),
        phone(2),
        phone(3),
        phone(90),
        phone(90)
    );
    let done = import(&s, "s1", csv).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!((done["lines"].clone(), done["rejected"].clone()), (json!(7), json!(5)), "{done}");
    assert_eq!((done["created"].clone(), done["updated"].clone()), (json!(1), json!(1)), "{done}");
    let errors: Vec<(u64, String)> = done["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["reason"].as_str().unwrap().to_string()))
        .collect();
    let lines: Vec<u64> = errors.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, vec![3, 4, 5, 6, 7], "{errors:?}");
    assert!(errors[0].1.starts_with("phone:"), "{errors:?}");
    assert!(errors[1].1.contains("no phone, email or channel id"), "{errors:?}");
    assert!(errors[2].1.starts_with("timezone:"), "{errors:?}");
    assert!(errors[3].1.contains("5 values"), "{errors:?}");
    assert!(errors[4].1.contains("already belongs to contact"), "{errors:?}");
    assert_eq!(member_count(&s, "s1").await, 2);
}

#[tokio::test]
async fn bad_uploads_are_refused_with_the_reason() {
    let settings = Settings { max_import_bytes: 1_000, ..fast_settings() };
    let s = TestServer::start_with(settings, SandboxBehaviour::default(), 2).await;
    segment(&s, "s1").await;
    let ok = "phone\n+14155550100\n".to_string();

    let (status, body) = upload_as(&s, &s.key, "", "text/csv", ok.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_fields(&body), vec!["segment_id"]);
    let (status, body) = upload(&s, "nope", ok.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = upload_as(&s, &s.key, "?segment_id=s1", "application/json", ok.clone()).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{body}");
    for (csv, says) in [("", "empty"), ("name,plan\nAda,gold\n", "find contacts by"), ("phone,phone\n", "twice")] {
        let (status, body) = upload(&s, "s1", csv.to_string()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(error_fields(&body), vec!["header"], "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(says), "{body}");
    }
    let (status, body) = upload(&s, "s1", format!("phone\n{}", "+14155550100\n".repeat(100))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    let (status, body) = upload_as(&s, "not-a-key", "?segment_id=s1", "text/csv", ok.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // A header alone is an import of nothing, done at once.
    let (status, body) = upload(&s, "s1", "phone,name\n".into()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!((body["state"].clone(), body["lines"].clone()), (json!("completed"), json!(0)), "{body}");

    // Another tenant sees neither the import nor the segment.
    let (status, body) = upload(&s, "s1", ok).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["import_id"].as_str().unwrap();
    let other = s.key_for("other").await;
    let (status, _) = s.call_as(&other, reqwest::Method::GET, &format!("/v1/imports/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = upload_as(&s, &other, "?segment_id=s1", "text/csv", "phone\n".into()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = s.call_as(&other, reqwest::Method::GET, "/v1/imports", None).await;
    assert_eq!(list["imports"], json!([]));
    let (_, list) = s.get("/v1/imports").await;
    assert_eq!(list["imports"].as_array().unwrap().len(), 2, "{list}");
}

#[tokio::test]
async fn an_imported_segment_is_a_broadcast_audience() {
    let s = TestServer::start().await;
    segment(&s, "vip").await;
    let done = import(&s, "vip", good_file(250)).await;
    assert_eq!(done["imported"], json!(250), "{done}");
    let body = json!({"audience": {"segments": ["vip"]}, "messages": [{"text": "Hi {{name}}"}], "channel": "sms"});
    let (status, answer) = s.post("/v1/broadcasts", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["request_id"].as_str().unwrap();
    let done = s.wait_terminal(id, Duration::from_secs(60)).await;
    assert_eq!(done["summary"]["by_status"], json!({"sent": 250}), "{done}");
}
