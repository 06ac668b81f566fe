//! Status events (`/v1/event-subscriptions`): subscriptions through the API, events posted to a
//! loopback receiver and their Standard Webhooks signatures verified here by hand, one event per
//! row move, retries with one `webhook-id`, dead letters and their redelivery, wildcards, the
//! SSRF rule and tenant isolation.

use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

use herald::net::signatures::hub_signature;
use herald::providers::config::ProviderConfig;
use herald_tests::fake::{FakeProvider, Recorded, Reply};
use herald_tests::{error_fields, fast_settings, TestServer};

/// Subscribes `id` to `events` at the receiver; returns the secret shown on creation.
async fn subscribe(s: &TestServer, id: &str, url: &str, events: Value) -> String {
    let (status, body) = s.put(&format!("/v1/event-subscriptions/{id}"), json!({"url": url, "events": events})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["secret"].as_str().expect("the secret is shown on creation").to_string()
}

/// Checks a post's Standard Webhooks signature with the subscription's secret.
fn verify(r: &Recorded, secret: &str) {
    let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let (id, ts) = (&r.headers["webhook-id"], &r.headers["webhook-timestamp"]);
    assert!(id.starts_with("msg_"), "{id}");
    let age = chrono::Utc::now().timestamp() - ts.parse::<i64>().expect("unix seconds");
    assert!((0..60).contains(&age), "timestamp {ts} is now");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{}", r.body).as_bytes());
    let expected = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    let sent: Vec<&str> = r.headers["webhook-signature"].split(' ').collect();
    assert!(sent.contains(&expected.as_str()), "signature {sent:?} is not {expected}");
}

/// Waits until the receiver has `n` posts (or panics after 10 s), then a little longer to see
/// that no more come.
async fn posts(rx: &FakeProvider, n: usize) -> Vec<Recorded> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rx.requests().len() < n {
        assert!(tokio::time::Instant::now() < deadline, "{} of {n} posts: {:?}", rx.requests().len(), types(rx));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    rx.requests()
}

fn types(rx: &FakeProvider) -> Vec<String> {
    rx.requests().iter().map(|r| r.json()["type"].as_str().unwrap_or_default().to_string()).collect()
}

async fn broadcast(s: &TestServer, body: Value) -> String {
    let (status, answer) = s.post("/v1/broadcasts", body).await;
    assert!(status.is_success(), "{answer}");
    answer["request_id"].as_str().unwrap().to_string()
}

fn two_phones() -> Value {
    json!({"recipients": [{"phone": "+14155550101"}, {"phone": "+14155550102"}], "messages": [{"text": "hi"}]})
}

#[tokio::test]
async fn a_broadcast_posts_signed_events_for_its_rows_and_its_completion() {
    let s = TestServer::start().await;
    let rx = FakeProvider::start(Reply::raw(204, "")).await;
    let secret = subscribe(&s, "all", &rx.url, json!(["*"])).await;
    // Replacing keeps the secret and does not show it.
    let (status, body) =
        s.put("/v1/event-subscriptions/all", json!({"url": format!("{}/hooks", rx.url), "events": ["*"]})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("secret").is_none(), "{body}");
    assert_eq!(body["events"], json!(["*"]));

    let request_id = broadcast(&s, two_phones()).await;
    let got = posts(&rx, 3).await;
    assert_eq!(got.len(), 3, "{:?}", types(&rx));
    for r in &got {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/hooks"));
        verify(r, &secret);
    }
    let mut sent: Vec<Value> = got.iter().map(Recorded::json).filter(|e| e["type"] == "message.sent").collect();
    sent.sort_by_key(|e| e["data"]["phone"].as_str().unwrap().to_string());
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["data"]["phone"], "+14155550101");
    assert_eq!(sent[0]["data"]["request_id"], json!(request_id));
    assert_eq!(sent[0]["data"]["status"], "sent");
    assert!(chrono::DateTime::parse_from_rfc3339(sent[0]["timestamp"].as_str().unwrap()).is_ok());
    let completed = got.iter().map(Recorded::json).find(|e| e["type"] == "broadcast.completed").expect("completed");
    assert_eq!(completed["data"]["request_id"], json!(request_id));
    assert_eq!(completed["data"]["summary"]["by_status"]["sent"], 2, "{completed}");
    // Three events, three ids.
    let mut ids: Vec<&String> = got.iter().map(|r| &r.headers["webhook-id"]).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);

    let (_, listed) = s.get("/v1/event-subscriptions").await;
    assert_eq!(listed["subscriptions"][0]["id"], "all");
    assert!(listed["subscriptions"][0].get("secret").is_none());
    let (status, one) = s.get("/v1/event-subscriptions/all").await;
    assert_eq!((status, one["url"].clone()), (StatusCode::OK, json!(format!("{}/hooks", rx.url))));
    assert_eq!(s.call(Method::DELETE, "/v1/event-subscriptions/all", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(s.get("/v1/event-subscriptions/all").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn wildcards_and_named_types_filter_what_each_subscription_gets() {
    let s = TestServer::start().await;
    let (messages, done) =
        (FakeProvider::start(Reply::raw(200, "")).await, FakeProvider::start(Reply::raw(200, "")).await);
    subscribe(&s, "messages", &messages.url, json!(["message.*"])).await;
    subscribe(&s, "done", &done.url, json!(["broadcast.completed"])).await;
    broadcast(&s, two_phones()).await;
    posts(&done, 1).await;
    posts(&messages, 2).await;
    assert_eq!(types(&messages), ["message.sent", "message.sent"]);
    assert_eq!(types(&done), ["broadcast.completed"]);
}

#[tokio::test]
async fn a_receiver_that_fails_three_times_gets_the_event_four_times_with_one_id() {
    let s = TestServer::start_with_event_schedule(&[20, 40, 80, 160]).await;
    let rx = FakeProvider::start(Reply::raw(200, "")).await;
    rx.script([Reply::raw(500, ""), Reply::raw(500, ""), Reply::raw(500, "")]);
    let secret = subscribe(&s, "sent", &rx.url, json!(["message.sent"])).await;
    broadcast(&s, json!({"recipients": [{"phone": "+14155550101"}], "messages": [{"text": "hi"}]})).await;
    let got = posts(&rx, 4).await;
    assert_eq!(got.len(), 4, "{:?}", types(&rx));
    let id = &got[0].headers["webhook-id"];
    for r in &got {
        assert_eq!(&r.headers["webhook-id"], id, "every attempt carries the event's id");
        assert_eq!(r.body, got[0].body, "every attempt posts the same event");
        verify(r, &secret);
    }
    let (_, failures) = s.get("/v1/event-subscriptions/sent/failures").await;
    assert_eq!(failures["failures"], json!([]), "taken in the end: no failure");
}

#[tokio::test]
async fn an_event_that_uses_up_its_schedule_is_a_failure_until_redelivered() {
    let s = TestServer::start_with_event_schedule(&[10, 20]).await;
    let rx = FakeProvider::start(Reply::raw(503, "")).await;
    let secret = subscribe(&s, "down", &rx.url, json!(["message.sent"])).await;
    broadcast(&s, json!({"recipients": [{"phone": "+14155550101"}], "messages": [{"text": "hi"}]})).await;
    let got = posts(&rx, 3).await;
    assert_eq!(got.len(), 3, "one post and two retries");
    let failure = wait_failure(&s, "down").await;
    assert_eq!(failure["event_id"], json!(got[0].headers["webhook-id"]));
    assert_eq!(failure["type"], "message.sent");
    assert_eq!((failure["attempts"].clone(), failure["last_status"].clone()), (json!(3), json!(503)));
    assert_eq!(failure["event"], got[0].json());
    assert!(failure["first_attempt_at"].is_string() && failure["last_attempt_at"].is_string(), "{failure}");

    rx.script([Reply::raw(200, "")]);
    let event_id = failure["event_id"].as_str().unwrap();
    let path = format!("/v1/event-subscriptions/down/failures/{event_id}/redeliver");
    let (status, body) = s.post(&path, json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let got = posts(&rx, 4).await;
    assert_eq!(got[3].headers["webhook-id"], event_id);
    verify(&got[3], &secret);
    let (_, failures) = s.get("/v1/event-subscriptions/down/failures").await;
    assert_eq!(failures["failures"], json!([]));
    assert_eq!(s.post(&path, json!({})).await.0, StatusCode::NOT_FOUND, "redelivered already");
}

async fn wait_failure(s: &TestServer, sub: &str) -> Value {
    for _ in 0..200 {
        let (status, body) = s.get(&format!("/v1/event-subscriptions/{sub}/failures")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if let Some(f) = body["failures"].get(0) {
            return f.clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no failure listed");
}

#[tokio::test]
async fn bad_subscriptions_are_refused_with_the_field_named() {
    let s = TestServer::start().await;
    let put = |id: &str, body: Value| {
        let (s, path) = (&s, format!("/v1/event-subscriptions/{id}"));
        async move { s.put(&path, body).await }
    };
    let (status, body) = put("a", json!({"url": "https://10.0.0.7/hook", "events": ["*"]})).await;
    assert_eq!((status, error_fields(&body)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["url".to_string()]), "{body}");
    let (status, body) = put("a", json!({"url": "http://169.254.169.254/latest", "events": ["*"]})).await;
    assert_eq!((status, error_fields(&body)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["url".to_string()]), "{body}");
    let (status, body) =
        put("a", json!({"url": "https://example.com", "events": ["message.sent", "message.bogus"]})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_fields(&body), ["events[1]"]);
    assert!(body["error"]["message"].is_string());
    let (status, body) = put("a", json!({"url": "https://example.com", "events": []})).await;
    assert_eq!((status, error_fields(&body)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["events".to_string()]));
    let (status, body) = put("bad%20id", json!({"url": "https://example.com", "events": ["*"]})).await;
    assert_eq!((status, error_fields(&body)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["id".to_string()]), "{body}");
    let (status, body) = put("a", json!({"url": "https://example.com"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = put("a", json!({"url": "https://example.com", "events": ["*"], "extra": 1})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(s.get("/v1/event-subscriptions").await.1["subscriptions"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn another_tenant_cannot_see_or_touch_a_subscription() {
    let s = TestServer::start_with_event_schedule(&[10]).await;
    let rx = FakeProvider::start(Reply::raw(500, "")).await;
    subscribe(&s, "mine", &rx.url, json!(["message.sent"])).await;
    broadcast(&s, json!({"recipients": [{"phone": "+14155550101"}], "messages": [{"text": "hi"}]})).await;
    let failure = wait_failure(&s, "mine").await;
    let other = s.key_for("other").await;
    let redeliver =
        format!("/v1/event-subscriptions/mine/failures/{}/redeliver", failure["event_id"].as_str().unwrap());
    for (method, path) in [
        (Method::GET, "/v1/event-subscriptions/mine".to_string()),
        (Method::DELETE, "/v1/event-subscriptions/mine".to_string()),
        (Method::GET, "/v1/event-subscriptions/mine/failures".to_string()),
        (Method::POST, redeliver.clone()),
    ] {
        let (status, body) = s.call_as(&other, method.clone(), &path, Some(json!({}))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
    }
    assert_eq!(s.call_as(&other, Method::GET, "/v1/event-subscriptions", None).await.1["subscriptions"], json!([]));
    // The other tenant's broadcast posts nothing to this tenant's subscription.
    let before = rx.requests().len();
    let (status, _) = s.call_as(&other, Method::POST, "/v1/broadcasts", Some(two_phones())).await;
    assert!(status.is_success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.requests().len(), before);
    assert_eq!(s.get("/v1/event-subscriptions/mine/failures").await.1["failures"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn canceled_rows_post_message_canceled_and_the_request_completes() {
    let s = TestServer::start().await;
    let rx = FakeProvider::start(Reply::raw(200, "")).await;
    let secret = subscribe(&s, "c", &rx.url, json!(["message.canceled", "broadcast.completed"])).await;
    let later = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let mut body = two_phones();
    body["send_at"] = json!(later);
    let request_id = broadcast(&s, body).await;
    let (status, canceled) = s.post(&format!("/v1/broadcasts/{request_id}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{canceled}");
    let got = posts(&rx, 3).await;
    assert_eq!(got.len(), 3, "{:?}", types(&rx));
    got.iter().for_each(|r| verify(r, &secret));
    let mut kinds = types(&rx);
    kinds.sort();
    assert_eq!(kinds, ["broadcast.completed", "message.canceled", "message.canceled"]);
    let completed = got.iter().map(Recorded::json).find(|e| e["type"] == "broadcast.completed").unwrap();
    assert_eq!(completed["data"]["state"], "canceled");
    // Canceling again moves nothing and emits nothing.
    s.post(&format!("/v1/broadcasts/{request_id}/cancel"), json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.requests().len(), 3);
}

/// A WhatsApp fake provider and its callbacks, so rows reach `delivered`.
async fn whatsapp_server(fake: &FakeProvider) -> TestServer {
    let m: HashMap<String, String> = [
        ("WHATSAPP_TOKEN", "wa-token"),
        ("WHATSAPP_PHONE_NUMBER_ID", "1055"),
        ("WHATSAPP_BASE_URL", fake.url.as_str()),
        ("WHATSAPP_APP_SECRET", "meta-app-secret"),
        ("PUBLIC_URL", "https://herald.example.com"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    TestServer::start_with_providers(fast_settings(), Default::default(), 4, &ProviderConfig::from_map(&m).unwrap())
        .await
}

#[tokio::test]
async fn a_callback_that_arrives_twice_posts_its_event_again_with_its_id() {
    let fake = FakeProvider::start(Reply::json(200, json!({"messages": [{"id": "wamid.EV"}]}))).await;
    let s = whatsapp_server(&fake).await;
    let rx = FakeProvider::start(Reply::raw(200, "")).await;
    let secret = subscribe(&s, "d", &rx.url, json!(["message.sent", "message.delivered"])).await;
    s.put(
        "/v1/templates/t",
        json!({"channel": "whatsapp", "body": "hi", "whatsapp": {"name": "hello", "language": "en"}}),
    )
    .await;
    let request_id = broadcast(&s, json!({"recipients": [{"phone": "+14155550123"}], "template": "t"})).await;
    s.wait_terminal(&request_id, Duration::from_secs(10)).await;
    posts(&rx, 1).await;
    let callback = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550001111", "phone_number_id": "1055"},
        "statuses": [{"id": "wamid.EV", "status": "delivered", "timestamp": "1795284000", "recipient_id": "14155550123"}]}}]}]});
    let raw = callback.to_string();
    for _ in 0..2 {
        let req = s
            .http
            .post(s.url("/v1/providers/whatsapp/events"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", hub_signature("meta-app-secret", raw.as_bytes()))
            .body(raw.clone());
        assert_eq!(req.send().await.unwrap().status(), StatusCode::OK);
    }
    // The provider repeats a report it got no answer to: Herald may have died between moving
    // the row and queueing its event, so the event goes out again, with the id it had.
    let got = posts(&rx, 3).await;
    assert_eq!(types(&rx), ["message.sent", "message.delivered", "message.delivered"]);
    assert_eq!(got[2].headers["webhook-id"], got[1].headers["webhook-id"], "the same event, the same id");
    assert_eq!(got[2].body, got[1].body);
    verify(&got[1], &secret);
    verify(&got[2], &secret);
    let answer = s.get(&format!("/v1/broadcasts/{request_id}")).await.1;
    assert_eq!(answer["summary"]["by_status"], json!({"delivered": 1}), "the repeat moved nothing: {answer}");
    // A report the row has moved past (a late `sent` after `delivered`) emits nothing.
    let late = raw.replace("\"delivered\"", "\"sent\"");
    let req = s
        .http
        .post(s.url("/v1/providers/whatsapp/events"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", hub_signature("meta-app-secret", late.as_bytes()))
        .body(late);
    assert_eq!(req.send().await.unwrap().status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(types(&rx).len(), 3, "a report behind the row's status posts nothing");
    let delivered = got[1].json();
    assert_eq!(delivered["data"]["status"], "delivered");
    assert_eq!(delivered["data"]["request_id"], json!(request_id));
    assert_eq!(delivered["timestamp"], json!(chrono::DateTime::from_timestamp(1_795_284_000, 0).unwrap()));
}

#[tokio::test]
async fn a_send_job_received_again_after_a_crash_posts_the_event_again_with_its_id() {
    let s = TestServer::start().await;
    let rx = FakeProvider::start(Reply::raw(200, "")).await;
    let secret = subscribe(&s, "sent", &rx.url, json!(["message.sent"])).await;
    let request_id =
        broadcast(&s, json!({"recipients": [{"phone": "+14155550101"}], "messages": [{"text": "hi"}]})).await;
    let first = posts(&rx, 1).await;
    let row = s.wait_terminal(&request_id, Duration::from_secs(10)).await["recipients"][0].clone();
    // The row's job comes back after its worker died between moving the row and queueing the
    // event: the row is final, so nothing is sent, but the event goes out again, with its id.
    let job = json!({"tenant_id": "default", "request_id": request_id, "row_ids": [row["id"]]});
    let received = herald::ports::ReceivedJob {
        message_id: "m-again".into(),
        receipt: "r-again".into(),
        body: job.to_string(),
        receive_count: 2,
    };
    let done = herald::service::worker::handle_job(s.herald().deliver.clone(), &received).await;
    assert_eq!(done, herald::service::worker::JobResult::Delete);
    let got = posts(&rx, 2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].headers["webhook-id"], first[0].headers["webhook-id"], "the same event, the same id");
    assert_eq!(got[1].body, first[0].body);
    verify(&got[1], &secret);
    assert_eq!(s.outbox(&request_id).await.len(), 1, "the message itself went once");
}

#[tokio::test]
async fn an_audience_broadcast_completes_once_fan_out_is_over_even_with_no_member() {
    let s = TestServer::start().await;
    let rx = FakeProvider::start(Reply::raw(200, "")).await;
    subscribe(&s, "done", &rx.url, json!(["broadcast.completed"])).await;
    for (segment, members) in [("empty", 0), ("three", 3)] {
        assert!(s.put(&format!("/v1/segments/{segment}"), json!({"name": segment})).await.0.is_success());
        if members > 0 {
            let contacts: Vec<Value> = (0..members).map(|i| json!({"phone": format!("+1415555{i:04}")})).collect();
            let (status, body) =
                s.post(&format!("/v1/segments/{segment}/members"), json!({"contacts": contacts})).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
    let mut ids = Vec::new();
    for segment in ["empty", "three"] {
        let body = json!({"audience": {"segments": [segment]}, "messages": [{"text": "Hi"}]});
        ids.push(broadcast(&s, body).await);
    }
    let got = posts(&rx, 2).await;
    assert_eq!(got.len(), 2, "one completion each");
    let mut done: Vec<(String, Value)> = got
        .iter()
        .map(|r| r.json())
        .map(|e| (e["data"]["request_id"].as_str().unwrap().to_string(), e["data"]["summary"]["total"].clone()))
        .collect();
    done.sort_by_key(|(id, _)| ids.iter().position(|i| i == id));
    assert_eq!(done, [(ids[0].clone(), json!(0)), (ids[1].clone(), json!(3))]);
}

#[tokio::test]
async fn a_cancel_of_more_rows_than_a_page_posts_every_rows_event_once() {
    let s = TestServer::start().await;
    let rx = FakeProvider::start(Reply::raw(200, "")).await;
    subscribe(&s, "c", &rx.url, json!(["message.canceled"])).await;
    let recipients: Vec<Value> = (0..450).map(|i| json!({"phone": format!("+1415555{i:04}")})).collect();
    let later = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let body = json!({"recipients": recipients, "messages": [{"text": "hi"}], "send_at": later});
    let request_id = broadcast(&s, body).await;
    assert_eq!(s.post(&format!("/v1/broadcasts/{request_id}/cancel"), json!({})).await.0, StatusCode::OK);
    let got = posts(&rx, 450).await;
    let mut rows: Vec<String> = got.iter().map(|r| r.json()["data"]["id"].as_str().unwrap().to_string()).collect();
    rows.sort();
    rows.dedup();
    assert_eq!((got.len(), rows.len()), (450, 450), "each of three pages' rows once");
}
