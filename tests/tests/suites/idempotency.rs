//! Idempotency keys and the job queue's receive budget, through the front door: a key whose
//! request was stored answers that request; a refusal leaves the key free; retries and waits never
//! use up a job's receives.

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

use herald::domain::Status;
use herald::providers::sandbox::{FailKind, SandboxBehaviour};
use herald::Settings;
use herald_tests::{fast_settings, read, TestServer};

async fn post_keyed(s: &TestServer, key: &str, body: &Value) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let resp = s
        .http
        .post(s.url("/v1/broadcasts"))
        .bearer_auth(&s.key)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let headers = resp.headers().clone();
    let (status, body) = read(resp).await;
    (status, headers, body)
}

fn one_recipient() -> Value {
    json!({"recipients": [{"phone": "+14155550100"}], "messages": [{"text": "hi"}]})
}

#[tokio::test]
async fn a_key_whose_request_was_stored_answers_that_request_after_the_answer_was_lost() {
    let s = TestServer::start().await;
    herald_tests::a_lost_answer_is_answered_again(&s.local.herald, &s.url(""), &s.key, "default").await;
}

#[tokio::test]
async fn a_refused_request_leaves_its_key_free() {
    let settings = Settings {
        tenant_limits: herald::service::admission::Limits {
            requests_per_second: 1.0,
            request_burst: 2.0,
            recipients_per_minute: 60_000.0,
        },
        ..fast_settings()
    };
    let s = TestServer::start_with(settings, SandboxBehaviour::default(), 4).await;
    let body = one_recipient();
    for key in ["k0", "k1"] {
        let (status, _, answer) = post_keyed(&s, key, &body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{key}: {answer}");
    }
    let (status, headers, answer) = post_keyed(&s, "k2", &body).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (status, headers, answer) = post_keyed(&s, "k2", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "the retry after Retry-After is taken: {answer}");
    assert!(headers.get("idempotent-replayed").is_none(), "nothing was replayed");
    // The accepted answer is kept under the key from now on.
    let id = answer["request_id"].clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (status, headers, again) = post_keyed(&s, "k2", &body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(again["request_id"], id);
}

#[tokio::test]
async fn an_invalid_request_leaves_its_key_free_for_the_corrected_body() {
    let s = TestServer::start().await;
    let (status, _, answer) =
        post_keyed(&s, "k-fix", &json!({"recipients": [{"phone": "not a phone"}], "messages": [{"text": "hi"}]})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let (status, headers, answer) = post_keyed(&s, "k-fix", &one_recipient()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "the corrected body is a new request under the same key: {answer}");
    assert!(headers.get("idempotent-replayed").is_none());
}

#[tokio::test]
async fn provider_retries_never_use_up_the_jobs_receives() {
    // Every attempt fails transiently: the row must use all of its 12 attempts, although the
    // queue dead-letters a job after 3 receives that end without an answer.
    let settings = Settings { max_attempts: 12, max_receives: 3, ..fast_settings() };
    let sandbox = SandboxBehaviour { fail_rate: 1.0, fail_kind: FailKind::Transient, ..Default::default() };
    let s = TestServer::start_with(settings, sandbox, 4).await;
    let (status, answer) = s.post("/v1/broadcasts", one_recipient()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let id = answer["request_id"].as_str().unwrap().to_string();
    let done = s.wait_terminal(&id, Duration::from_secs(60)).await;
    let row = &done["recipients"][0];
    assert_eq!(row["status"], json!(Status::Failed.to_string()), "{row}");
    let error = row["error_message"].as_str().unwrap();
    assert!(error.starts_with("gave up after 12 attempts"), "the row used every attempt: {error}");
    assert_eq!(s.local.queue.depth().await.unwrap().2, 0, "nothing was dead-lettered");
}
