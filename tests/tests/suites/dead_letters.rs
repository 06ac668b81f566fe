//! `GET /v1/dead-letters` and `POST /v1/dead-letters/{id}/redrive` on the local shape: jobs whose
//! worker died on every receive, listed to their tenant alone and put back to send their rows.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

use herald::ports::{JobQueue, RowLeases};
use herald::providers::sandbox::SandboxBehaviour;
use herald::Settings;
use herald_tests::{error_fields, fast_settings, tenant, TestServer};

const MAX_RECEIVES: u32 = 3;

/// A server without workers, so the test plays a worker that dies on every receive.
async fn server() -> TestServer {
    let settings = Settings { max_receives: MAX_RECEIVES, ..fast_settings() };
    TestServer::start_with(settings, SandboxBehaviour::default(), 0).await
}

/// Sends one recipient as `key`'s tenant and has its job received `MAX_RECEIVES` times, never
/// handled, so the next receive dead-letters it. Returns the request id and the row id.
async fn dead_lettered(s: &TestServer, key: &str, phone: &str) -> (String, String) {
    let body = json!({"recipients": [{"phone": phone}], "messages": [{"text": "hi"}]});
    let (status, answer) = s.call_as(key, Method::POST, "/v1/broadcasts", Some(body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let queue = &s.local.queue;
    for _ in 0..MAX_RECEIVES {
        let got = queue.receive(1, Duration::from_secs(60)).await.unwrap();
        assert_eq!(got.len(), 1, "the job is received");
        queue.change_visibility(&got[0].receipt, Duration::ZERO).await.unwrap();
    }
    assert!(queue.receive(1, Duration::from_secs(60)).await.unwrap().is_empty(), "dead-lettered");
    let row = answer["recipients"][0]["id"].as_str().unwrap().to_string();
    (answer["request_id"].as_str().unwrap().to_string(), row)
}

async fn list(s: &TestServer, key: &str, query: &str) -> (StatusCode, Value) {
    s.call_as(key, Method::GET, &format!("/v1/dead-letters{query}"), None).await
}

#[tokio::test]
async fn a_dead_lettered_job_is_listed_and_redriven_and_its_row_is_sent() {
    let s = server().await;
    let (request_id, row_id) = dead_lettered(&s, &s.key, "+14155550101").await;

    let (status, page) = list(&s, &s.key, "").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let dead = page["dead_letters"].as_array().unwrap();
    assert_eq!(dead.len(), 1, "{page}");
    let d = &dead[0];
    assert_eq!(d["request_id"], request_id.as_str());
    assert_eq!(d["row_ids"], json!([row_id]));
    assert_eq!(d["kind"], "rows");
    assert_eq!(d["receive_count"], MAX_RECEIVES);
    assert_eq!(d["reason"], Value::Null, "the worker died before it could say why");
    assert!(d["dead_at"].as_str().is_some_and(|t| t.parse::<chrono::DateTime<chrono::Utc>>().is_ok()), "{d}");
    assert_eq!(page["next_cursor"], Value::Null);
    let id = d["id"].as_str().unwrap().to_string();

    let (status, answer) = s.call(Method::POST, &format!("/v1/dead-letters/{id}/redrive"), None).await;
    assert_eq!((status, &answer), (StatusCode::ACCEPTED, &json!({"id": id, "requeued": true})));
    assert!(list(&s, &s.key, "").await.1["dead_letters"].as_array().unwrap().is_empty(), "no longer dead");
    let (status, again) = s.call(Method::POST, &format!("/v1/dead-letters/{id}/redrive"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{again}");
    assert_eq!(again["error"]["code"], "not_found");

    // Workers now: the redriven job sends its row.
    let (_stop, stop) = tokio::sync::watch::channel(false);
    s.local.spawn_workers(2, stop);
    let done = s.wait_terminal(&request_id, Duration::from_secs(20)).await;
    assert_eq!(done["recipients"][0]["status"], "sent", "{done}");
    assert_eq!(s.outbox(&request_id).await.len(), 1);
}

#[tokio::test]
async fn one_tenant_never_sees_or_redrives_anothers_dead_letters() {
    let s = server().await;
    let rival = s.key_for("rival").await;
    dead_lettered(&s, &s.key, "+14155550102").await;
    let (theirs, _) = dead_lettered(&s, &rival, "+14155550103").await;

    let (_, mine) = list(&s, &s.key, "").await;
    let (_, seen) = list(&s, &rival, "").await;
    let ids = |page: &Value| -> Vec<String> {
        page["dead_letters"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!((ids(&mine).len(), ids(&seen).len()), (1, 1), "{mine} {seen}");
    assert_eq!(seen["dead_letters"][0]["request_id"], theirs.as_str());
    let redrive = format!("/v1/dead-letters/{}/redrive", ids(&mine)[0]);
    let (status, body) = s.call_as(&rival, Method::POST, &redrive, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(ids(&list(&s, &s.key, "").await.1), ids(&mine), "still there for its own tenant");
    let (status, _) = s.call(Method::POST, "/v1/dead-letters/no-such-id/redrive", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn dead_letters_page_by_cursor_with_the_reason_their_rows_give() {
    let s = server().await;
    let mut rows = Vec::new();
    for i in 0..3 {
        rows.push(dead_lettered(&s, &s.key, &format!("+1415555020{i}")).await.1);
        // Apart in time, so "oldest first" has one answer.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    // The worker writes why on the row as it gives a job up; the list shows it.
    s.local
        .store
        .fail_pending(&tenant("default"), &rows[1], "could not be delivered after 3 tries: boom")
        .await
        .unwrap();

    let (status, first) = list(&s, &s.key, "?limit=2").await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["dead_letters"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"].as_str().expect("a cursor").to_string();
    let (_, second) = list(&s, &s.key, &format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(second["dead_letters"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["next_cursor"], Value::Null);
    let all: Vec<Value> = [first, second].iter().flat_map(|p| p["dead_letters"].as_array().unwrap().clone()).collect();
    let listed: Vec<&str> = all.iter().map(|d| d["row_ids"][0].as_str().unwrap()).collect();
    assert_eq!(listed, rows.iter().map(String::as_str).collect::<Vec<_>>(), "oldest first");
    assert_eq!(all[1]["reason"], "could not be delivered after 3 tries: boom");
    assert_eq!(all[0]["reason"], Value::Null);

    for (query, field) in [("?limit=0", "limit"), ("?limit=201", "limit"), ("?cursor=nope", "cursor")] {
        let (status, body) = list(&s, &s.key, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(error_fields(&body), [field], "{query}: {body}");
    }
}
