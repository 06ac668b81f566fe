//! The drop-in dialects end to end: each seed document's request example sent as written (only
//! the host, the prefix and the vendor's placeholders changed), answered in the documented shape
//! (field names and JSON types checked against the seed's own example), visible natively at
//! `GET /v1/broadcasts/{request_id}`, and each validation rule refused in the vendor's terms.

use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

use herald::providers::sandbox::SandboxBehaviour;
use herald_tests::{error_fields, fast_settings, TestServer};

const WAIT: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------------------------ helpers

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn request_id(&self) -> String {
        self.headers["herald-request-id"].to_str().unwrap().to_string()
    }
    fn replayed(&self) -> bool {
        self.headers.get("idempotent-replayed").is_some_and(|v| v == "true")
    }
}

async fn answer(rb: RequestBuilder) -> Answer {
    let resp = rb.send().await.expect("request");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer { status, headers, body }
}

/// A POST with a JSON body written out as text (seed examples are sent byte for byte).
fn post_text(s: &TestServer, path: &str, body: &str) -> RequestBuilder {
    s.http.post(s.url(path)).header("content-type", "application/json").body(body.to_string())
}

async fn bearer(s: &TestServer, path: &str, body: Value) -> Answer {
    answer(s.http.post(s.url(path)).bearer_auth(&s.key).json(&body)).await
}

/// How a response compares with a vendor's documented example.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// Exactly the documented keys, each of the documented type.
    Exact,
    /// Exactly the documented keys, each of the documented type or null (a value not set yet,
    /// such as `is_failed_at` on a row that did not fail).
    ExactKeys,
    /// Every documented key with the documented type (a documented string may be null: a value
    /// not set yet); Herald may add keys of its own.
    Documented,
}

/// Checks `got` against the vendor's example `doc`, recursing into objects and into every
/// element of arrays (each against the example's first element).
fn assert_shape(doc: &Value, got: &Value, shape: Shape, at: &str) {
    match (doc, got) {
        // A documented `{}` is a free-form object (Invent's `properties`, `platform_data`).
        (Value::Object(d), Value::Object(_)) if d.is_empty() => {}
        (Value::Object(d), Value::Object(g)) => {
            for (k, dv) in d {
                let gv = g.get(k).unwrap_or_else(|| panic!("{at}.{k} is missing from {got}"));
                assert_shape(dv, gv, shape, &format!("{at}.{k}"));
            }
            if shape != Shape::Documented {
                let extra: Vec<&String> = g.keys().filter(|k| !d.contains_key(*k)).collect();
                assert!(extra.is_empty(), "{at} has keys the vendor does not: {extra:?}");
            }
        }
        (Value::Array(d), Value::Array(g)) => {
            if let Some(d0) = d.first() {
                for (i, gi) in g.iter().enumerate() {
                    assert_shape(d0, gi, shape, &format!("{at}[{i}]"));
                }
            }
        }
        (Value::String(_), Value::String(_)) | (Value::Bool(_), Value::Bool(_)) => {}
        (Value::Number(_), Value::Number(_)) => {}
        (Value::String(_), Value::Null) if shape != Shape::Exact => {}
        _ => panic!("{at}: the vendor documents {doc}, Herald answered {got}"),
    }
}

fn rows(done: &Value) -> Vec<Value> {
    done["recipients"].as_array().cloned().unwrap_or_default()
}

async fn put_ok(s: &TestServer, path: &str, body: Value) {
    let (status, b) = s.put(path, body).await;
    assert!(status.is_success(), "PUT {path}: {status} {b}");
}

// ----------------------------------------------------------------------------- CSML Studio

const CSML: &str = "/compat/csml/v1/api/broadcasts";

/// Seed 000's request example, byte for byte.
const CSML_REQUEST: &str = r#"{
  "payload": {
    "content": {
      "flow_id": "myflow"
    },
    "content_type": "flow_trigger"
  },
  "client": {
    "user_id": "some-user-id"
  },
  "metadata": {
    "somekey": "somevalue"
  }
}"#;

/// Seed 000's response example.
const CSML_RESPONSE: &str = r#"{
  "request_id": "57d2d4ab-6994-4449-82bf-206619d9d063",
  "client": {
    "user_id": "some-user-id",
    "bot_id": "bc5de819-e4c5-463e-9090-5648fac3a570",
    "channel_id": "b1f74f8d-99b6-40b2-ad64-00ec364bae23"
  },
  "payload": {
    "content_type": "flow_trigger",
    "content": {
      "flow_id": "myflow",
      "close_flows": true
    }
  },
  "metadata": {
    "somekey": "somevalue"
  }
}"#;

async fn csml(s: &TestServer, body: &str) -> Answer {
    answer(post_text(s, CSML, body).header("accept", "application/json").header("x-api-key", &s.key)).await
}

#[tokio::test]
async fn csml_seed_example_triggers_the_flow_through_the_webhook() {
    let s = TestServer::start().await;
    let a = csml(&s, CSML_REQUEST).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_shape(&serde_json::from_str(CSML_RESPONSE).unwrap(), &a.body, Shape::Exact, "answer");
    assert_eq!(
        (&a.body["client"]["user_id"], &a.body["payload"]["content"], &a.body["metadata"]),
        (&json!("some-user-id"), &json!({"flow_id": "myflow", "close_flows": true}), &json!({"somekey": "somevalue"}))
    );
    let id = a.body["request_id"].as_str().unwrap();
    assert_eq!(a.request_id(), id);
    // UUIDs, written as the seed writes them, like CSML's own.
    for at in [&a.body["request_id"], &a.body["client"]["bot_id"], &a.body["client"]["channel_id"]] {
        let text = at.as_str().unwrap();
        assert_eq!(uuid::Uuid::parse_str(text).unwrap().hyphenated().to_string(), text, "{}", a.body);
    }

    let done = s.wait_terminal(id, WAIT).await;
    assert_eq!((done["source"].clone(), done["row_count"].clone()), (json!("csml"), json!(1)));
    let row = &rows(&done)[0];
    assert_eq!((row["status"].clone(), row["channel"].clone()), (json!("sent"), json!("webhook")));
    let sent = s.outbox(id).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["to"], "some-user-id");
    assert_eq!(sent[0]["message"]["flow"], json!({"flow_id": "myflow", "close_flows": true}));
    assert_eq!(sent[0]["message"]["metadata"], json!({"somekey": "somevalue"}));
    let (_, contact) = s.get(&format!("/v1/contacts/{}", row["contact_id"].as_str().unwrap())).await;
    assert_eq!(contact["webhook_user_id"], "some-user-id", "client.user_id names the contact");
}

#[tokio::test]
async fn csml_bot_and_channel_ids_are_stable_uuids_per_tenant() {
    let s = TestServer::start().await;
    let other = s.key_for("other").await;
    let first = csml(&s, CSML_REQUEST).await;
    let again = csml(&s, CSML_REQUEST).await;
    let theirs = answer(post_text(&s, CSML, CSML_REQUEST).header("x-api-key", &other)).await;
    let client = |a: &Answer| (a.body["client"]["bot_id"].clone(), a.body["client"]["channel_id"].clone());
    assert_eq!(client(&first), client(&again), "the same tenant's bot and channel every time");
    assert_ne!(client(&first).0, client(&theirs).0, "another tenant is another bot");
    assert_ne!(client(&first).1, client(&theirs).1, "and has another channel");
    assert_ne!(client(&first).0, client(&first).1);
    assert_ne!(first.body["request_id"], again.body["request_id"]);
    for a in [&first, &again] {
        let (status, native) = s.get(&format!("/v1/broadcasts/{}", a.body["request_id"].as_str().unwrap())).await;
        assert_eq!((status, native["source"].clone()), (StatusCode::OK, json!("csml")), "{native}");
    }
}

#[tokio::test]
async fn csml_an_unavailable_target_is_no_error_and_its_row_is_skipped() {
    let s = TestServer::start().await;
    put_ok(&s, "/v1/contacts/away", json!({"webhook_user_id": "away-user", "blocked": true})).await;
    let a = csml(
        &s,
        r#"{"payload": {"content_type": "flow_trigger", "content": {"flow_id": "reminder", "close_flows": false}}, "client": {"user_id": "away-user"}}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["payload"]["content"]["close_flows"], false);
    assert_eq!(a.body["metadata"], json!({}));
    let done = s.wait_terminal(a.body["request_id"].as_str().unwrap(), WAIT).await;
    let row = &rows(&done)[0];
    assert_eq!((row["status"].clone(), row["error_message"].clone()), (json!("skipped"), json!("contact is blocked")));
    assert!(s.outbox(a.body["request_id"].as_str().unwrap()).await.is_empty());
}

#[tokio::test]
async fn csml_refuses_bad_requests_naming_the_csml_field() {
    let s = TestServer::start().await;
    let cases: &[(&str, StatusCode, &[&str])] = &[
        (
            r#"{"payload": {"content_type": "text", "content": {"text": "hi"}}, "client": {"user_id": "u"}}"#,
            StatusCode::BAD_REQUEST,
            &["payload.content_type"],
        ),
        (
            r#"{"payload": {"content": {"flow_id": "f"}}, "client": {"user_id": "u"}}"#,
            StatusCode::BAD_REQUEST,
            &["payload.content_type"],
        ),
        (
            r#"{"payload": {"content_type": "flow_trigger", "content": {}}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            &["payload.content.flow_id", "client.user_id"],
        ),
        (
            r#"{"payload": {"content_type": "flow_trigger", "content": {"flow_id": "bad id!"}}, "client": {"user_id": "u"}}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            &["payload.content.flow_id"],
        ),
        (
            r#"{"payload": {"content_type": "flow_trigger", "content": {"flow_id": "f", "flow": 1}}, "client": {"user_id": "u"}}"#,
            StatusCode::BAD_REQUEST,
            &["payload.content.flow"],
        ),
        (
            r#"{"payload": {"content_type": "flow_trigger", "content": {"flow_id": "f"}}, "client": {"user_id": "u", "bot_id": "b"}}"#,
            StatusCode::BAD_REQUEST,
            &["client.bot_id"],
        ),
    ];
    for (body, status, fields) in cases {
        let a = csml(&s, body).await;
        assert_eq!(a.status, *status, "{body}: {}", a.body);
        assert_eq!(error_fields(&a.body), *fields, "{body}: {}", a.body);
    }
    let unsupported = csml(&s, cases[0].0).await;
    assert_eq!(unsupported.body["error"]["code"], "unsupported_content_type");
    let no_key = answer(post_text(&s, CSML, CSML_REQUEST)).await;
    assert_eq!(no_key.status, StatusCode::UNAUTHORIZED);
    assert_eq!(s.local.store.counts().await.unwrap().requests, 0, "nothing was queued");
}

// -------------------------------------------------------------------------------- SMAX V1

/// Seed 002's V1 URL with its placeholders filled: `<BOT_ID>` is the tenant, `<USER_ID>` a
/// messenger user id, `<TOKEN>` the key, two user attributes, and the tag in double quotes as
/// the seed writes it.
fn smax_v1_seed_url(s: &TestServer) -> String {
    format!(
        "/compat/smax/bots/default/users/1234567890/send?bot_token={}&block_name=Order%20shipped&order_id=A-1&city=Hanoi&messaging_tag=\"CONFIRMED_EVENT_UPDATE\"",
        s.key
    )
}

async fn smax_v1(s: &TestServer, path_and_query: &str) -> Answer {
    answer(s.http.post(s.url(path_and_query)).header("content-type", "application/json")).await
}

/// SMAX's one answer shape: `{"success": bool, "result": string}` and nothing else.
fn assert_smax(a: &Answer, success: bool) {
    assert_shape(&json!({"success": true, "result": "…"}), &a.body, Shape::Exact, "answer");
    assert_eq!(a.body["success"], success, "{}", a.body);
}

fn request_in(result: &Value) -> String {
    let text = result.as_str().unwrap();
    text.split("(request ").nth(1).and_then(|r| r.split(')').next()).expect("a request id in result").to_string()
}

async fn seed_smax_block(s: &TestServer) {
    put_ok(s, "/v1/templates/shipped", json!({"body": "Hi, order {{order_id}} left for {{city}}"})).await;
    put_ok(s, "/v1/campaigns/blk-1", json!({"name": "Order shipped", "template_ids": ["shipped"]})).await;
}

#[tokio::test]
async fn smax_v1_seed_example_sets_attributes_and_sends_the_block() {
    let s = TestServer::start().await;
    seed_smax_block(&s).await;
    let a = smax_v1(&s, &smax_v1_seed_url(&s)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_smax(&a, true);
    let id = request_in(&a.body["result"]);
    assert_eq!(a.request_id(), id);

    let done = s.wait_terminal(&id, WAIT).await;
    assert_eq!(done["source"], "smax_v1");
    assert_eq!(done["campaign_name"], "Order shipped");
    let row = &rows(&done)[0];
    assert_eq!((row["status"].clone(), row["channel"].clone()), (json!("sent"), json!("messenger")));
    let sent = s.outbox(&id).await;
    assert_eq!(sent[0]["to"], "1234567890");
    assert_eq!(sent[0]["message"]["text"], "Hi, order A-1 left for Hanoi", "attributes are set before rendering");
    assert_eq!(sent[0]["message"]["messaging_tag"], "CONFIRMED_EVENT_UPDATE");
    let (_, contact) = s.get(&format!("/v1/contacts/{}", row["contact_id"].as_str().unwrap())).await;
    assert_eq!(contact["messenger_psid"], "1234567890");
    assert_eq!(contact["fields"], json!({"order_id": "A-1", "city": "Hanoi"}));

    // block_id instead of block_name, and the tag without its quotes.
    let q = format!("/compat/smax/bots/default/users/1234567890/send?bot_token={}&block_id=blk-1&order_id=A-2&messaging_tag=POST_PURCHASE_UPDATE", s.key);
    let a = smax_v1(&s, &q).await;
    assert_smax(&a, true);
    let id = request_in(&a.body["result"]);
    s.wait_terminal(&id, WAIT).await;
    assert_eq!(s.outbox(&id).await[0]["message"]["text"], "Hi, order A-2 left for Hanoi", "stored city, new order");
}

/// Sends `head` (a request line and headers, as written) on a fresh socket and reads the whole
/// answer, as curl, PHP or Go put a URL with raw double quotes on the wire.
async fn raw_http(s: &TestServer, head: &str) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    socket.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::String(text.clone())))
}

#[tokio::test]
async fn smax_v1_takes_the_seeds_raw_double_quotes_on_the_wire() {
    let s = TestServer::start().await;
    seed_smax_block(&s).await;
    let target = smax_v1_seed_url(&s);
    assert!(target.contains("messaging_tag=\"CONFIRMED_EVENT_UPDATE\""), "quotes as the seed writes them");
    let encoded = target.replace('"', "%22");
    for (how, target) in [("raw", target.as_str()), ("percent-encoded", encoded.as_str())] {
        let head = format!(
            "POST {target} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            s.addr
        );
        let (status, body) = raw_http(&s, &head).await;
        assert_eq!(status, 200, "{how} quotes: {body}");
        assert_eq!(body["success"], true, "{how}: {body}");
        let id = request_in(&body["result"]);
        s.wait_terminal(&id, WAIT).await;
        assert_eq!(s.outbox(&id).await[0]["message"]["messaging_tag"], "CONFIRMED_EVENT_UPDATE", "{how}");
    }
    // A keep-alive connection carrying a body and then a second raw request: both are read.
    let second = format!(
        "POST {target} HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\n{{\"a\":1}}POST {target} HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = raw_http(&s, &second).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.local.store.counts().await.unwrap().requests, 4, "two raw sends, then two on one connection");
}

#[tokio::test]
async fn smax_v1_without_a_block_only_sets_user_attributes() {
    let s = TestServer::start().await;
    let a = smax_v1(&s, &format!("/compat/smax/bots/default/users/555/send?bot_token={}&plan=gold", s.key)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_smax(&a, true);
    assert_eq!(s.local.store.counts().await.unwrap().requests, 0, "no message, no send request");
    let (_, c) = s.post("/v1/contacts", json!({"messenger_psid": "555"})).await;
    assert_eq!(c["fields"], json!({"plan": "gold"}));
}

#[tokio::test]
async fn smax_v1_refuses_bad_calls_in_smax_shape() {
    let s = TestServer::start().await;
    seed_smax_block(&s).await;
    let other = s.key_for("other-bot").await;
    let k = &s.key;
    let base = "/compat/smax/bots/default/users/1234567890/send";
    let cases: Vec<(String, StatusCode, &str)> = vec![
        (format!("{base}?block_id=blk-1"), StatusCode::UNAUTHORIZED, "bot_token"),
        (
            format!("{base}?bot_token=hk_wrong_token_0000000000000000&block_id=blk-1"),
            StatusCode::UNAUTHORIZED,
            "bot_token",
        ),
        (
            format!("/compat/smax/bots/other-bot/users/1/send?bot_token={k}&block_id=blk-1"),
            StatusCode::NOT_FOUND,
            "no bot",
        ),
        (format!("{base}?bot_token={other}&block_id=blk-1"), StatusCode::NOT_FOUND, "no bot"),
        (format!("{base}?bot_token={k}&block_id=blk-1&chatfuel_block_id=x"), StatusCode::BAD_REQUEST, "chatfuel_"),
        (format!("{base}?bot_token={k}&block_id=blk-1&CHATFUEL_token=x"), StatusCode::BAD_REQUEST, "reserved"),
        (
            format!("{base}?bot_token={k}&block_id=blk-1&messaging_tag=HUMAN_AGENT"),
            StatusCode::BAD_REQUEST,
            "messaging_tag",
        ),
        (
            format!("{base}?bot_token={k}&block_id=blk-1&messaging_tag=%22NOPE%22"),
            StatusCode::BAD_REQUEST,
            "messaging_tag",
        ),
        (
            format!("{base}?bot_token={k}&block_id=blk-1&block_name=Order%20shipped"),
            StatusCode::BAD_REQUEST,
            "not both",
        ),
        (format!("{base}?bot_token={k}"), StatusCode::BAD_REQUEST, "block_name"),
        (format!("{base}?bot_token={k}&block_name=Nope"), StatusCode::NOT_FOUND, "no block named"),
        (format!("{base}?bot_token={k}&block_id=nope"), StatusCode::NOT_FOUND, "no block with id"),
        (format!("{base}?bot_token={k}&block_id=blk-1&my%20attr=1"), StatusCode::BAD_REQUEST, "my attr"),
        (format!("{base}?bot_token={k}&block_id=blk-1&city=a&city=b"), StatusCode::BAD_REQUEST, "twice"),
        (
            format!("/compat/smax/bots/default/users/has%20space/send?bot_token={k}&block_id=blk-1"),
            StatusCode::BAD_REQUEST,
            "user_id",
        ),
    ];
    for (url, status, says) in &cases {
        let a = smax_v1(&s, url).await;
        assert_eq!(a.status, *status, "{url}: {}", a.body);
        assert_smax(&a, false);
        assert!(a.body["result"].as_str().unwrap().contains(says), "{url}: {}", a.body);
    }
    let get = answer(s.http.get(s.url(&format!("{base}?bot_token={k}&block_id=blk-1")))).await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_smax(&get, false);
    assert_eq!(s.local.store.counts().await.unwrap().requests, 0, "nothing was queued");
}

#[tokio::test]
async fn smax_v1_allows_25_requests_per_second_per_bot() {
    let s = TestServer::start_with(fast_settings(), SandboxBehaviour::default(), 0).await;
    seed_smax_block(&s).await;
    let url = format!("/compat/smax/bots/default/users/42/send?bot_token={}&block_id=blk-1&order_id=1&city=c", s.key);
    // All at once: each call is admitted (or not) as soon as its token is checked.
    let calls: Vec<_> = (0..30)
        .map(|_| tokio::spawn(answer(s.http.post(s.url(&url)).header("content-type", "application/json"))))
        .collect();
    let mut burst = Vec::new();
    for c in calls {
        burst.push(c.await.unwrap());
    }
    let ok = burst.iter().filter(|a| a.status == StatusCode::OK).count();
    let limited: Vec<&Answer> = burst.iter().filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS).collect();
    assert_eq!((ok, limited.len()), (25, 5));
    for a in &limited {
        assert_smax(a, false);
        assert!(a.headers.contains_key("retry-after"));
    }
    // Another bot has its own budget.
    let other = s.key_for("bot-2").await;
    let a = smax_v1(&s, &format!("/compat/smax/bots/bot-2/users/42/send?bot_token={other}&plan=x")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    // And the first bot gets its budget back once the second has passed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(smax_v1(&s, &url).await.status, StatusCode::OK);
}

/// The rate is counted before the idempotency layer answers: calls under one key, replayed or
/// not, each take one of the bot's 25 a second.
#[tokio::test]
async fn smax_v1_calls_under_one_key_count_against_the_rate() {
    let s = TestServer::start_with(fast_settings(), SandboxBehaviour::default(), 0).await;
    seed_smax_block(&s).await;
    let url = format!("/compat/smax/bots/default/users/42/send?bot_token={}&block_id=blk-1&order_id=1&city=c", s.key);
    let calls: Vec<_> =
        (0..30).map(|_| tokio::spawn(answer(s.http.post(s.url(&url)).header("idempotency-key", "one")))).collect();
    let mut burst = Vec::new();
    for c in calls {
        burst.push(c.await.unwrap());
    }
    let limited = burst.iter().filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!(limited, 5, "{:?}", burst.iter().map(|a| a.status).collect::<Vec<_>>());
    assert_eq!(s.local.store.counts().await.unwrap().requests, 1, "one send under the key");
}

// -------------------------------------------------------------------------------- SMAX V2

const SMAX_V2: &str = "/compat/smax/public/bots/default/send";

/// Seed 002's V2 body, its placeholders filled and its `//` comments dropped (JSON has none).
/// The seed lists `block_id` ("if you want to send a block") and `messages` ("if you want to
/// send content directly") as alternatives, so each is sent on its own.
fn smax_v2_seed(content: Value) -> Value {
    let mut body = json!({
        "customer_id": "cus-1",
        "customer_email": "lan@example.com",
        "customer_phone": "84912345678",
        "customer_fbid": "2345678901",
        "notification_messages_token": "token NTN",
        "one_time_notif_token": "token OTN",
        "messaging_tag": "CONFIRMED_EVENT_UPDATE",
        "priority": ["fbid", "phone", "email"]
    });
    body.as_object_mut().unwrap().extend(content.as_object().unwrap().clone());
    body
}

#[tokio::test]
async fn smax_v2_seed_example_sends_a_block_or_messages_and_updates_the_customer() {
    let s = TestServer::start().await;
    put_ok(&s, "/v1/contacts/cus-1", json!({"name": "Lan"})).await;
    put_ok(&s, "/v1/templates/voucher", json!({"body": "Hi {{name}}, your voucher is ready"})).await;
    put_ok(&s, "/v1/campaigns/promo", json!({"name": "Promo", "template_ids": ["voucher"]})).await;

    let a = bearer(&s, SMAX_V2, smax_v2_seed(json!({"block_id": "promo"}))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_smax(&a, true);
    let id = request_in(&a.body["result"]);
    let done = s.wait_terminal(&id, WAIT).await;
    assert_eq!(done["source"], "smax_v2");
    let row = &rows(&done)[0];
    assert_eq!((row["status"].clone(), row["channel"].clone()), (json!("sent"), json!("messenger")), "fbid first");
    assert_eq!(row["contact_id"], "cus-1");
    let sent = &s.outbox(&id).await[0]["message"];
    assert_eq!(sent["text"], "Hi Lan, your voucher is ready");
    assert_eq!(
        sent["metadata"],
        json!({"notification_messages_token": "token NTN", "one_time_notif_token": "token OTN"})
    );
    let (_, c) = s.get("/v1/contacts/cus-1").await;
    assert_eq!(
        (c["email"].clone(), c["phone"].clone(), c["messenger_psid"].clone()),
        (json!("lan@example.com"), json!("+84912345678"), json!("2345678901")),
        "extra identifiers update the contact"
    );

    let a = bearer(&s, SMAX_V2, smax_v2_seed(json!({"messages": [{"text": "Noi dung tin nhan"}]}))).await;
    assert_smax(&a, true);
    let id = request_in(&a.body["result"]);
    s.wait_terminal(&id, WAIT).await;
    assert_eq!(s.outbox(&id).await[0]["message"]["text"], "Noi dung tin nhan");
}

#[tokio::test]
async fn smax_v2_priority_orders_the_channels_and_a_phone_finds_its_contact() {
    let s = TestServer::start().await;
    put_ok(&s, "/v1/contacts/dual", json!({"phone": "+14155550199", "messenger_psid": "psid-dual"})).await;
    // No tag: Messenger would need one. `phone` tries WhatsApp, whose free-form text needs an
    // open window, then SMS.
    let a = bearer(
        &s,
        SMAX_V2,
        json!({"customer_phone": "+14155550199", "customer_email": "dual@example.com", "messages": [{"text": "hi"}], "priority": ["phone"]}),
    )
    .await;
    assert_smax(&a, true);
    let done = s.wait_terminal(&request_in(&a.body["result"]), WAIT).await;
    let row = &rows(&done)[0];
    assert_eq!((row["contact_id"].clone(), row["channel"].clone()), (json!("dual"), json!("sms")));
    assert_eq!(s.get("/v1/contacts/dual").await.1["email"], "dual@example.com");
}

#[tokio::test]
async fn smax_v2_an_unknown_customer_id_with_a_phone_finds_or_creates_by_the_phone() {
    let s = TestServer::start().await;
    put_ok(&s, "/v1/contacts/known", json!({"phone": "+14155550188"})).await;
    let send = |customer_phone: &str| json!({"customer_id": "nobody", "customer_phone": customer_phone, "messages": [{"text": "hi"}], "priority": ["phone"]});
    // A phone some contact holds: that contact.
    let a = bearer(&s, SMAX_V2, send("+14155550188")).await;
    assert_smax(&a, true);
    let row = &rows(&s.wait_terminal(&request_in(&a.body["result"]), WAIT).await)[0];
    assert_eq!((row["status"].clone(), row["contact_id"].clone()), (json!("sent"), json!("known")), "{row}");
    // A phone no contact holds: a new contact with it.
    let a = bearer(&s, SMAX_V2, send("+14155550177")).await;
    assert_smax(&a, true);
    let row = &rows(&s.wait_terminal(&request_in(&a.body["result"]), WAIT).await)[0];
    assert_eq!(row["status"], "sent", "{row}");
    let (status, c) = s.get(&format!("/v1/contacts/{}", row["contact_id"].as_str().unwrap())).await;
    assert_eq!((status, c["phone"].clone()), (StatusCode::OK, json!("+14155550177")));
    assert_eq!(s.get("/v1/contacts/nobody").await.0, StatusCode::NOT_FOUND, "no contact takes the unknown id");
}

#[tokio::test]
async fn smax_v2_refuses_bad_calls_in_smax_shape() {
    let s = TestServer::start().await;
    put_ok(&s, "/v1/contacts/cus-1", json!({"name": "Lan"})).await;
    let text = json!([{"text": "hi"}]);
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (json!({"messages": text}), StatusCode::BAD_REQUEST, "customer_id"),
        (json!({"customer_id": "cus-1"}), StatusCode::BAD_REQUEST, "block_id"),
        (
            json!({"customer_id": "cus-1", "messages": text, "messaging_tag": "NOPE"}),
            StatusCode::BAD_REQUEST,
            "messaging_tag",
        ),
        (
            json!({"customer_id": "cus-1", "messages": text, "priority": ["fax"]}),
            StatusCode::BAD_REQUEST,
            "priority[0]",
        ),
        (json!({"customer_phone": "0912345678", "messages": text}), StatusCode::BAD_REQUEST, "customer_phone"),
        (json!({"customer_email": "nope", "messages": text}), StatusCode::BAD_REQUEST, "customer_email"),
        (json!({"customer_id": "cus-1", "messages": [{"text": " "}]}), StatusCode::BAD_REQUEST, "messages[0].text"),
        (json!({"customer_id": "cus-1", "messages": text, "extra": 1}), StatusCode::BAD_REQUEST, "extra"),
        (json!({"customer_id": "nobody", "messages": text}), StatusCode::NOT_FOUND, "no customer"),
        (json!({"customer_id": "cus-1", "block_id": "nope"}), StatusCode::NOT_FOUND, "no block"),
    ];
    for (body, status, says) in &cases {
        let a = bearer(&s, SMAX_V2, body.clone()).await;
        assert_eq!(a.status, *status, "{body}: {}", a.body);
        assert_smax(&a, false);
        assert!(a.body["result"].as_str().unwrap().contains(says), "{body}: {}", a.body);
    }
    let ok_body = json!({"customer_id": "cus-1", "messages": text});
    let wrong_key =
        answer(s.http.post(s.url(SMAX_V2)).bearer_auth("hk_not_a_key_00000000000000000").json(&ok_body)).await;
    assert_eq!(wrong_key.status, StatusCode::UNAUTHORIZED);
    assert_smax(&wrong_key, false);
    let other_bot = bearer(&s, "/compat/smax/public/bots/someone-else/send", ok_body).await;
    assert_eq!(other_bot.status, StatusCode::NOT_FOUND);
    assert_smax(&other_bot, false);
    let not_json = answer(post_text(&s, SMAX_V2, "{nope").bearer_auth(&s.key)).await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    assert_smax(&not_json, false);
    assert_eq!(s.local.store.counts().await.unwrap().requests, 0, "nothing was queued");
}

// ------------------------------------------------------------------------------------ Invent

/// Seed 003's response example: the `BroadcastRecipient` shape.
const INVENT_RESPONSE: &str = r#"{
  "recipients": [
    {
      "id": "<string>",
      "broadcast_id": "<string>",
      "broadcast_name": "<string>",
      "template_id": "<string>",
      "user_id": "<string>",
      "name": "<string>",
      "username": "<string>",
      "phone": "<string>",
      "email": "<string>",
      "is_skipped": true,
      "is_skipped_at": "2023-11-07T05:31:56Z",
      "is_failed": true,
      "is_failed_at": "2023-11-07T05:31:56Z",
      "is_bounced": true,
      "is_bounced_at": "2023-11-07T05:31:56Z",
      "is_sent": true,
      "is_sent_at": "2023-11-07T05:31:56Z",
      "is_delivered": true,
      "is_delivered_at": "2023-11-07T05:31:56Z",
      "is_complained": true,
      "is_complained_at": "2023-11-07T05:31:56Z",
      "is_unsubscribed": true,
      "is_unsubscribed_at": "2023-11-07T05:31:56Z",
      "is_opened": true,
      "is_opened_at": "2023-11-07T05:31:56Z",
      "is_played": true,
      "is_played_at": "2023-11-07T05:31:56Z",
      "error_message": "<string>",
      "external_message_id": "<string>",
      "created_at": "2023-11-07T05:31:56Z",
      "updated_at": "2023-11-07T05:31:56Z",
      "contact": {
        "id": "<string>",
        "name": "<string>",
        "blocked": true,
        "unsubscribed": true,
        "is_admin": true,
        "channels": [
          {
            "id": "<string>",
            "user_id": "<string>",
            "avatar": "<string>",
            "name": "<string>",
            "username": "<string>",
            "email": "<string>",
            "phone": "<string>",
            "country": "<string>",
            "agent": "<string>",
            "ip": "<string>",
            "language": "<string>",
            "platform_data": {},
            "created_at": "2023-11-07T05:31:56Z",
            "updated_at": "2023-11-07T05:31:56Z",
            "link": "<string>"
          }
        ],
        "segments": [
          {
            "id": "<string>",
            "name": "<string>",
            "contacts_count": 123,
            "created_at": "2023-11-07T05:31:56Z",
            "updated_at": "2023-11-07T05:31:56Z"
          }
        ],
        "properties": {},
        "created_at": "2023-11-07T05:31:56Z",
        "updated_at": "2023-11-07T05:31:56Z",
        "blocked_at": "2023-11-07T05:31:56Z",
        "unsubscribed_at": "2023-11-07T05:31:56Z",
        "unsubscribe_reason": "<string>",
        "unsubscribe_feedback": "<string>"
      }
    }
  ]
}"#;

const INVENT: &str = "/compat/invent/orgs/default/broadcasts/onboarding/send";

async fn seed_invent(s: &TestServer) {
    put_ok(
        s,
        "/v1/templates/welcome",
        json!({"channel": "sms", "body": "Hi {{name}}, welcome to {{shop}} in {{city}}"}),
    )
    .await;
    put_ok(
        s,
        "/v1/templates/welcome-mail",
        json!({"channel": "email", "subject": "Welcome", "body": "Hello {{first_name}}"}),
    )
    .await;
    put_ok(
        s,
        "/v1/campaigns/onboarding",
        json!({"name": "Onboarding", "template_ids": ["welcome", "welcome-mail"], "defaults": {"shop": "Herald Coffee", "city": "Paris"}}),
    )
    .await;
    put_ok(
        s,
        "/v1/contacts/ct-1",
        json!({"name": "Ada Lovelace", "phone": "+14155550123", "email": "ada@example.com", "fields": {"city": "Lyon"}}),
    )
    .await;
}

/// The rows of a native `GET /v1/broadcasts/{request_id}`, once terminal.
async fn native_rows(s: &TestServer, request_id: &str) -> Vec<Value> {
    rows(&s.wait_terminal(request_id, WAIT).await)
}

#[tokio::test]
async fn invent_seed_example_answers_broadcast_recipients() {
    let s = TestServer::start().await;
    seed_invent(&s).await;
    // Invent's `contact.segments` are the segments the contact is in.
    for (id, name) in [("vip", "VIP"), ("newsletter", "Newsletter")] {
        let (status, body) = s.put(&format!("/v1/segments/{id}"), json!({"name": name})).await;
        assert!(status.is_success(), "{body}");
        let (status, body) = s.post(&format!("/v1/segments/{id}/members"), json!({"contact_ids": ["ct-1"]})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // Seed 003's request example with its `<string>` placeholders filled.
    let a = bearer(
        &s,
        INVENT,
        json!({
            "contact_channel_id": "ct-1~sms",
            "contact_id": "ct-1",
            "phone": "+14155550123",
            "email": "ada@example.com",
            "name": "Ada",
            "variables": {},
            "template_ids": ["welcome"],
            "background": true
        }),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_shape(&serde_json::from_str(INVENT_RESPONSE).unwrap(), &a.body, Shape::ExactKeys, "answer");
    let row = &a.body["recipients"][0];
    assert_eq!(a.body["recipients"].as_array().unwrap().len(), 1, "one row per template fired");
    assert_eq!(
        (row["broadcast_id"].clone(), row["broadcast_name"].clone()),
        (json!("onboarding"), json!("Onboarding"))
    );
    assert_eq!((row["template_id"].clone(), row["name"].clone()), (json!("welcome"), json!("Ada")));
    assert_eq!(row["is_sent"], false, "background: true answers before sending");
    let contact = &row["contact"];
    assert_eq!((contact["id"].clone(), contact["properties"].clone()), (json!("ct-1"), json!({"city": "Lyon"})));
    let segments: Vec<(&str, &str, u64)> = contact["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["id"].as_str().unwrap(), g["name"].as_str().unwrap(), g["contacts_count"].as_u64().unwrap()))
        .collect();
    assert_eq!(segments, vec![("newsletter", "Newsletter", 1), ("vip", "VIP", 1)]);
    let channel_ids: Vec<&str> =
        contact["channels"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(channel_ids, vec!["ct-1~whatsapp", "ct-1~sms", "ct-1~email"]);
    assert_eq!(contact["channels"][1]["country"], "US");

    let native = native_rows(&s, &a.request_id()).await;
    assert_eq!(native[0]["id"], row["id"]);
    assert_eq!((native[0]["status"].clone(), native[0]["channel"].clone()), (json!("sent"), json!("sms")));
    let text = &s.outbox(&a.request_id()).await[0]["message"]["text"];
    assert_eq!(text, "Hi Ada, welcome to Herald Coffee in Lyon", "name override, stored field, campaign default");
}

#[tokio::test]
async fn invent_background_false_is_the_default_and_answers_external_message_ids() {
    let s = TestServer::start_with(fast_settings(), SandboxBehaviour::default(), 0).await;
    seed_invent(&s).await;
    let a = bearer(&s, INVENT, json!({"contact_id": "ct-1"})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_shape(&serde_json::from_str(INVENT_RESPONSE).unwrap(), &a.body, Shape::ExactKeys, "inline answer");
    let answered = rows(&a.body);
    assert_eq!(answered.len(), 2, "every template of the broadcast");
    for row in &answered {
        assert_eq!(row["is_sent"], true, "{row}");
        assert!(row["is_sent_at"].is_string());
        assert!(row["external_message_id"].as_str().unwrap().starts_with("sbx_"), "{row}");
    }
    // The same rows, natively (no workers run: they were delivered inline).
    let native = native_rows(&s, &a.request_id()).await;
    let key =
        |r: &Value| (r["id"].clone(), r["is_sent"].clone(), r["external_message_id"].clone(), r["template_id"].clone());
    assert_eq!(native.iter().map(key).collect::<Vec<_>>(), answered.iter().map(key).collect::<Vec<_>>());
    let texts: Vec<Value> = s.outbox(&a.request_id()).await.iter().map(|e| e["message"]["text"].clone()).collect();
    assert!(texts.contains(&json!("Hi Ada Lovelace, welcome to Herald Coffee in Lyon")), "{texts:?}");
    assert!(texts.contains(&json!("Hello Ada")), "{texts:?}");
}

#[tokio::test]
async fn invent_an_unresolved_contact_falls_through_to_the_phone_or_email() {
    let s = TestServer::start_with(fast_settings(), SandboxBehaviour::default(), 0).await;
    seed_invent(&s).await;
    let cases = [
        (json!({"contact_id": "ghost", "phone": "14155550123", "template_ids": ["welcome"]}), "ct-1"),
        (
            json!({"contact_channel_id": "ghost~email", "email": "ada@example.com", "template_ids": ["welcome-mail"]}),
            "ct-1",
        ),
        (
            json!({"contact_id": "ghost", "email": "new@example.com", "name": "Neo", "template_ids": ["welcome-mail"]}),
            "",
        ),
    ];
    for (body, contact) in cases {
        let a = bearer(&s, INVENT, body.clone()).await;
        assert_eq!(a.status, StatusCode::OK, "{body}: {}", a.body);
        let row = &a.body["recipients"][0];
        assert_eq!((row["is_sent"].clone(), row["error_message"].clone()), (json!(true), Value::Null), "{body}: {row}");
        let found = row["contact"]["id"].as_str().unwrap();
        if contact.is_empty() {
            assert!(found != "ghost" && found != "ct-1", "{body}: a new contact, {row}");
            assert_eq!(row["contact"]["channels"][0]["user_id"], "new@example.com");
        } else {
            assert_eq!(found, contact, "{body}");
        }
    }
    // Named alone, an unknown contact still fails its row.
    let a = bearer(&s, INVENT, json!({"contact_id": "ghost", "template_ids": ["welcome"]})).await;
    let row = &a.body["recipients"][0];
    assert_eq!(
        (row["is_failed"].clone(), row["error_message"].clone()),
        (json!(true), json!("contact ghost not found"))
    );
}

#[tokio::test]
async fn invent_variables_override_fields_which_override_defaults() {
    let s = TestServer::start_with(fast_settings(), SandboxBehaviour::default(), 0).await;
    seed_invent(&s).await;
    let external_id = |a: &Answer| a.body["recipients"][0]["external_message_id"].clone();
    let cases = [
        (
            json!({"contact_id": "ct-1", "template_ids": ["welcome"], "variables": {"city": "Rome"}}),
            "Hi Ada Lovelace, welcome to Herald Coffee in Rome",
        ),
        (
            json!({"contact_id": "ct-1", "template_ids": ["welcome"], "name": "Countess"}),
            "Hi Countess, welcome to Herald Coffee in Lyon",
        ),
        (
            json!({"phone": "14155550177", "name": "Grace", "template_ids": ["welcome"]}),
            "Hi Grace, welcome to Herald Coffee in Paris",
        ),
    ];
    for (body, expected) in cases {
        let a = bearer(&s, INVENT, body.clone()).await;
        assert_eq!(a.status, StatusCode::OK, "{body}: {}", a.body);
        let sent = s.outbox(&a.request_id()).await;
        assert_eq!(sent[0]["id"], external_id(&a));
        assert_eq!(sent[0]["message"]["text"], expected, "{body}");
    }
}

#[tokio::test]
async fn invent_refuses_bad_requests_and_other_orgs() {
    let s = TestServer::start_with(fast_settings(), SandboxBehaviour::default(), 0).await;
    seed_invent(&s).await;
    let long = "x".repeat(257);
    let cases: Vec<(Value, StatusCode, Vec<&str>)> = vec![
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY, vec!["contact_id"]),
        (json!({"contact_id": "ct-1", "name": long}), StatusCode::UNPROCESSABLE_ENTITY, vec!["name"]),
        (json!({"phone": format!("+1{}", "5".repeat(255))}), StatusCode::UNPROCESSABLE_ENTITY, vec!["phone"]),
        (json!({"email": format!("{}@example.com", "a".repeat(250))}), StatusCode::UNPROCESSABLE_ENTITY, vec!["email"]),
        (
            json!({"contact_channel_id": format!("{long}~sms")}),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["contact_channel_id"],
        ),
        (json!({"phone": "12"}), StatusCode::UNPROCESSABLE_ENTITY, vec!["phone"]),
        (
            json!({"contact_id": "ct-1", "template_ids": ["nope"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["template_ids[0]"],
        ),
        (
            json!({"contact_id": "ct-1", "variables": {"1bad": "x"}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["variables.1bad"],
        ),
        (json!({"contact_id": "ct-1", "segment": "vip"}), StatusCode::BAD_REQUEST, vec!["segment"]),
        (json!({"contact_id": "ct-1", "background": "no"}), StatusCode::BAD_REQUEST, vec!["background"]),
    ];
    for (body, status, fields) in &cases {
        let a = bearer(&s, INVENT, body.clone()).await;
        assert_eq!(a.status, *status, "{body}: {}", a.body);
        assert_eq!(error_fields(&a.body), *fields, "{body}: {}", a.body);
    }
    let missing = bearer(&s, "/compat/invent/orgs/default/broadcasts/nope/send", json!({"contact_id": "ct-1"})).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let other_org =
        bearer(&s, "/compat/invent/orgs/acme/broadcasts/onboarding/send", json!({"contact_id": "ct-1"})).await;
    assert_eq!(other_org.status, StatusCode::NOT_FOUND, "{}", other_org.body);
    let acme = s.key_for("acme").await;
    let (status, _) = s.call_as(&acme, reqwest::Method::POST, INVENT, Some(json!({"contact_id": "ct-1"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another tenant's key");
    let (status, _) = s
        .call_as(
            &acme,
            reqwest::Method::POST,
            "/compat/invent/orgs/acme/broadcasts/onboarding/send",
            Some(json!({"contact_id": "ct-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the broadcast belongs to another tenant");
    assert_eq!(s.local.store.counts().await.unwrap().requests, 0, "nothing was queued");
}

// --------------------------------------------------------------------------- Pabbly Chatflow

const PABBLY_SEND: &str = "/compat/pabbly/api/v1/broadcasts/send";
const PABBLY_BROADCASTS: &str = "/compat/pabbly/api/v1/broadcasts";
const PABBLY_CAMPAIGNS: &str = "/compat/pabbly/api/v1/broadcasts/api-campaigns";

/// Seed 004's request example, byte for byte but for the number: the seed masks its last five
/// digits (`9176978xxxxx`), so they are filled in, as the key placeholder is.
const PABBLY_REQUEST: &str = r#"{
    "templateName": "festival_offer_template",
    "campaignName": "festival offer",
    "destination": "917697812345",
    "userName": "Jon",
    "headerParams": [
        "Sir"
    ],
    "bodyParams": [
        "Christmas",
        "Thank You"
    ],
    "source": "api",
    "link": "https://placehold.co/600x400/EEE/31343C.png",
    "filename": "filename",
    "defaultContactFieldValues": {
        "Country": "India"
    }
}"#;

/// Seed 004's response example.
const PABBLY_RESPONSE: &str = r#"{
    "success": "true",
    "data": {
        "messaging_product": "whatsapp",
        "contacts": [
            {
                "input": "9176978xxxxx",
                "wa_id": "9176978xxxxx"
            }
        ],
        "messages": [
            {
                "id": "wamid.HBgMOTE3Njk3ODYyMTE1FQIAERgSNzI5RDAyQUJBRUNBxxxxxxxxxx==",
                "message_status": "accepted"
            }
        ],
        "code": 200
    }
}"#;

/// A WhatsApp template approved on Meta's side (it may go outside the 24 h window).
fn whatsapp_template(header: Value, body: &str, name: &str) -> Value {
    json!({"channel": "whatsapp", "header": header, "body": body, "whatsapp": {"name": name, "language": "en"}})
}

async fn add_api_campaign(s: &TestServer, name: &str, templates: &[&str], defaults: Value) -> Answer {
    bearer(
        s,
        PABBLY_CAMPAIGNS,
        json!({"campaignName": name, "templateNames": templates, "defaultContactFieldValues": defaults}),
    )
    .await
}

async fn seed_pabbly(s: &TestServer) {
    let t = whatsapp_template(
        json!({"type": "text", "text": "Dear {{1}}"}),
        "Happy {{1}} from all of us in {{Country}}! {{2}}",
        "festival_offer_template",
    );
    put_ok(s, "/v1/templates/festival_offer_template", t).await;
    let a = add_api_campaign(s, "festival offer", &["festival_offer_template"], json!({})).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
}

async fn pabbly_send(s: &TestServer, body: &str) -> Answer {
    answer(post_text(s, PABBLY_SEND, body).bearer_auth(&s.key)).await
}

#[tokio::test]
async fn pabbly_seed_example_sends_the_template_and_answers_whatsapp_style() {
    let s = TestServer::start().await;
    seed_pabbly(&s).await;
    let a = pabbly_send(&s, PABBLY_REQUEST).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_shape(&serde_json::from_str(PABBLY_RESPONSE).unwrap(), &a.body, Shape::Exact, "answer");
    assert_eq!(a.body["success"], json!("true"), "a string, as the seed writes it");
    assert_eq!(a.body["data"]["contacts"], json!([{"input": "917697812345", "wa_id": "917697812345"}]));
    assert_eq!(a.body["data"]["messages"][0]["message_status"], "accepted");
    assert_eq!(a.body["data"]["code"], 200);

    let native = native_rows(&s, &a.request_id()).await;
    assert_eq!(native.len(), 1);
    assert_eq!(native[0]["external_message_id"], a.body["data"]["messages"][0]["id"]);
    assert_eq!((native[0]["channel"].clone(), native[0]["phone"].clone()), (json!("whatsapp"), json!("+917697812345")));
    let sent = &s.outbox(&a.request_id()).await[0]["message"];
    assert_eq!(sent["header"], json!({"type": "text", "text": "Dear Sir"}), "no media for a text header");
    assert_eq!(sent["text"], "Happy Christmas from all of us in India! Thank You");
    assert_eq!(sent["whatsapp_template"]["name"], "festival_offer_template");
    let (_, done) = s.get(&format!("/v1/broadcasts/{}", a.request_id())).await;
    assert_eq!((done["source"].clone(), done["campaign_name"].clone()), (json!("pabbly"), json!("festival offer")));
    assert_eq!(done["metadata"], json!({"source": "api"}));

    // userName named the new contact; it does not rename a known one.
    let contact_id = native[0]["contact_id"].as_str().unwrap().to_string();
    assert_eq!(s.get(&format!("/v1/contacts/{contact_id}")).await.1["name"], "Jon");
    let again = pabbly_send(&s, &PABBLY_REQUEST.replace("\"Jon\"", "\"Jonathan\"")).await;
    assert_eq!(again.body["success"], "true", "{}", again.body);
    let row = &native_rows(&s, &again.request_id()).await[0];
    assert_eq!((row["contact_id"].as_str(), row["name"].as_str()), (Some(contact_id.as_str()), Some("Jon")));
    assert_eq!(s.get(&format!("/v1/contacts/{contact_id}")).await.1["name"], "Jon");
}

#[tokio::test]
async fn pabbly_fallbacks_fill_missing_or_empty_fields_over_the_campaigns() {
    let s = TestServer::start().await;
    put_ok(&s, "/v1/templates/ship_note", whatsapp_template(Value::Null, "Shipping to {{Country}}", "ship_note")).await;
    add_api_campaign(&s, "notes", &["ship_note"], json!({"Country": "Nowhere"})).await;
    put_ok(&s, "/v1/contacts/empty", json!({"phone": "+14155550181", "fields": {"Country": ""}})).await;
    put_ok(&s, "/v1/contacts/set", json!({"phone": "+14155550182", "fields": {"Country": "France"}})).await;
    let send = |to: &str, defaults: Option<Value>| {
        let mut b = json!({"templateName": "ship_note", "campaignName": "notes", "destination": to, "userName": "N", "source": "api"});
        if let Some(d) = defaults {
            b["defaultContactFieldValues"] = d;
        }
        b
    };
    let cases = [
        (send("14155550181", Some(json!({"Country": "India"}))), "Shipping to India"),
        (send("14155550182", Some(json!({"Country": "India"}))), "Shipping to France"),
        (send("14155550183", Some(json!({"Country": "India"}))), "Shipping to India"),
        (send("14155550184", None), "Shipping to Nowhere"),
    ];
    for (body, expected) in cases {
        let a = bearer(&s, PABBLY_SEND, body.clone()).await;
        assert_eq!(a.body["success"], "true", "{body}: {}", a.body);
        assert_eq!(s.outbox(&a.request_id()).await[0]["message"]["text"], expected, "{body}");
    }
}

#[tokio::test]
async fn pabbly_fallbacks_and_variables_fill_whatsapp_parameters() {
    let s = TestServer::start().await;
    // A template binding Meta's three parameters: two positional values and a contact field.
    let mut bound = whatsapp_template(Value::Null, "Happy {{1}} from {{Country}}! {{2}}", "festival_bound");
    bound["whatsapp"]["body_params"] = json!(["{{1}}", "{{Country}}", "{{2}}"]);
    put_ok(&s, "/v1/templates/festival_bound", bound).await;
    // A template whose parameters are all positional, filled with fields by the caller.
    put_ok(&s, "/v1/templates/plain", whatsapp_template(Value::Null, "Hi {{1}} in {{2}}", "plain")).await;
    add_api_campaign(&s, "fest", &["festival_bound", "plain"], json!({})).await;
    let send = |template: &str, params: Value| {
        json!({"templateName": template, "campaignName": "fest", "destination": "917697812345", "userName": "Jon Snow",
               "bodyParams": params, "source": "api", "defaultContactFieldValues": {"Country": "India"}})
    };
    let cases = [
        (send("festival_bound", json!(["Christmas", "Thank You"])), json!(["Christmas", "India", "Thank You"])),
        (send("plain", json!(["{{first_name}}", "{{Country}}"])), json!(["Jon", "India"])),
    ];
    for (body, params) in cases {
        let a = bearer(&s, PABBLY_SEND, body.clone()).await;
        assert_eq!(a.body["success"], "true", "{body}: {}", a.body);
        let sent = &s.outbox(&a.request_id()).await[0]["message"];
        assert_eq!(sent["body_params"], params, "what Meta's template receives: {body}");
    }
    // Herald's own variables fill them too, over the fallback.
    let (status, answer) = s
        .post(
            "/v1/broadcasts",
            json!({"recipients": [{"phone": "+917697812345", "variables": {"Country": "Nepal"}}], "template": "plain",
                   "body_params": ["{{first_name}}", "{{Country}}"], "background": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let sent = &s.outbox(answer["request_id"].as_str().unwrap()).await[0]["message"];
    assert_eq!(
        (sent["body_params"].clone(), sent["text"].clone()),
        (json!(["Jon", "Nepal"]), json!("Hi Jon in Nepal"))
    );
    // A binding that needs more positional values than the send gives is refused at once.
    let a = bearer(&s, PABBLY_SEND, send("festival_bound", json!(["Christmas"]))).await;
    assert_eq!((a.status, error_fields(&a.body)), (StatusCode::UNPROCESSABLE_ENTITY, vec!["bodyParams".to_string()]));
}

#[tokio::test]
async fn pabbly_add_api_campaign_at_the_seeds_path_creates_one_campaign_per_name() {
    let s = TestServer::start().await;
    put_ok(&s, "/v1/templates/t1", whatsapp_template(Value::Null, "Hi", "t1")).await;
    let add = |name: &str| json!({"campaignName": name, "templateNames": ["t1"], "defaultContactFieldValues": {"Country": "India"}});
    let a = bearer(&s, PABBLY_BROADCASTS, add("seed path")).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(
        (a.body["success"].clone(), a.body["data"]["campaignName"].clone()),
        (json!("true"), json!("seed path"))
    );
    assert_eq!(
        bearer(&s, PABBLY_CAMPAIGNS, add("seed path")).await.status,
        StatusCode::CONFLICT,
        "one name, both paths"
    );

    // Ten adds of one name at once: exactly one campaign.
    let adds: Vec<_> = (0..10)
        .map(|_| {
            let request = s.http.post(s.url(PABBLY_BROADCASTS)).bearer_auth(&s.key).json(&add("raced"));
            tokio::spawn(async move { request.send().await.expect("request").status() })
        })
        .collect();
    let mut statuses = Vec::new();
    for add in adds {
        statuses.push(add.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT), "{statuses:?}");
    let (_, list) = s.get("/v1/campaigns").await;
    let named = list["campaigns"].as_array().unwrap().iter().filter(|c| c["name"] == "raced").count();
    assert_eq!(named, 1);
}

#[tokio::test]
async fn pabbly_link_and_filename_fill_a_media_header() {
    let s = TestServer::start().await;
    let doc = whatsapp_template(json!({"type": "document"}), "Your invoice", "invoice_doc");
    put_ok(&s, "/v1/templates/invoice_doc", doc).await;
    put_ok(&s, "/v1/templates/promo_image", whatsapp_template(json!({"type": "image"}), "Look!", "promo_image")).await;
    add_api_campaign(&s, "billing", &["invoice_doc", "promo_image"], json!({})).await;
    let body = |t: &str| {
        json!({"templateName": t, "campaignName": "billing", "destination": "14155550190", "userName": "Bo", "source": "csv",
               "link": "https://example.com/f.pdf", "filename": "f.pdf"})
    };
    let a = bearer(&s, PABBLY_SEND, body("invoice_doc")).await;
    assert_eq!(a.body["success"], "true", "{}", a.body);
    let header = &s.outbox(&a.request_id()).await[0]["message"]["header"];
    assert_eq!(header, &json!({"type": "document", "link": "https://example.com/f.pdf", "filename": "f.pdf"}));
    let a = bearer(&s, PABBLY_SEND, body("promo_image")).await;
    let header = &s.outbox(&a.request_id()).await[0]["message"]["header"];
    assert_eq!(header, &json!({"type": "image", "link": "https://example.com/f.pdf"}), "filename is for documents");
}

#[tokio::test]
async fn pabbly_send_refuses_bad_requests() {
    let s = TestServer::start().await;
    seed_pabbly(&s).await;
    put_ok(&s, "/v1/templates/promo_image", whatsapp_template(json!({"type": "image"}), "Look!", "promo_image")).await;
    put_ok(&s, "/v1/templates/other", whatsapp_template(Value::Null, "Other", "other")).await;
    add_api_campaign(&s, "promo", &["promo_image"], json!({})).await;
    let base: Value = serde_json::from_str(PABBLY_REQUEST).unwrap();
    let with = |patch: Value| {
        let mut b = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b
    };
    let cases: Vec<(Value, StatusCode, Vec<&str>)> = vec![
        (
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["destination", "userName", "source", "campaignName", "templateName"],
        ),
        (with(json!({"source": "email"})), StatusCode::UNPROCESSABLE_ENTITY, vec!["source"]),
        (with(json!({"destination": "0912345678"})), StatusCode::UNPROCESSABLE_ENTITY, vec!["destination"]),
        (with(json!({"userName": " "})), StatusCode::UNPROCESSABLE_ENTITY, vec!["userName"]),
        (with(json!({"campaignName": "nope"})), StatusCode::UNPROCESSABLE_ENTITY, vec!["campaignName"]),
        (with(json!({"templateName": "missing"})), StatusCode::UNPROCESSABLE_ENTITY, vec!["templateName"]),
        (with(json!({"templateName": "other"})), StatusCode::UNPROCESSABLE_ENTITY, vec!["templateName"]),
        (with(json!({"bodyParams": ["only one"]})), StatusCode::UNPROCESSABLE_ENTITY, vec!["bodyParams"]),
        (with(json!({"headerParams": null})), StatusCode::UNPROCESSABLE_ENTITY, vec!["headerParams"]),
        (
            with(json!({"defaultContactFieldValues": {"bad key": "x"}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["defaultContactFieldValues.bad key"],
        ),
        (
            with(json!({"campaignName": "promo", "templateName": "promo_image", "link": null})),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["link"],
        ),
        (
            with(json!({"campaignName": "promo", "templateName": "promo_image", "link": "not a url"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            vec!["link"],
        ),
        (with(json!({"priority": 1})), StatusCode::BAD_REQUEST, vec!["priority"]),
        (with(json!({"bodyParams": "Christmas"})), StatusCode::BAD_REQUEST, vec!["bodyParams"]),
    ];
    for (body, status, fields) in &cases {
        let a = bearer(&s, PABBLY_SEND, body.clone()).await;
        assert_eq!(a.status, *status, "{body}: {}", a.body);
        let mut got = error_fields(&a.body);
        let mut want: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{body}: {}", a.body);
    }
    let lead = bearer(&s, PABBLY_SEND, with(json!({"bodyParams": ["only one"]}))).await;
    assert!(lead.body["error"]["message"].as_str().unwrap().contains("bodyParams"), "messages use Pabbly's names too");
    assert_eq!(s.local.store.counts().await.unwrap().requests, 0, "nothing was queued");
}

#[tokio::test]
async fn pabbly_template_and_regular_broadcasts_reach_many_numbers() {
    let s = TestServer::start().await;
    seed_pabbly(&s).await;
    let a = bearer(
        &s,
        PABBLY_BROADCASTS,
        json!({"broadcastName": "Diwali", "templateName": "festival_offer_template", "destinations": ["917697812345", "+14155550123"],
               "headerParams": ["Sir"], "bodyParams": ["Diwali", "Thanks"], "defaultContactFieldValues": {"Country": "India"}}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["success"], "true");
    let data = &a.body["data"];
    assert_eq!((data["messaging_product"].clone(), data["code"].clone()), (json!("whatsapp"), json!(200)));
    assert_eq!(data["broadcastId"], json!(a.request_id()));
    assert_eq!(data["contacts"][1], json!({"input": "+14155550123", "wa_id": "14155550123"}));
    let queued: Vec<Value> = data["messages"].as_array().unwrap().iter().map(|m| m["id"].clone()).collect();
    let native = native_rows(&s, &a.request_id()).await;
    assert_eq!(native.iter().map(|r| r["id"].clone()).collect::<Vec<_>>(), queued, "the same rows, natively");
    assert!(native.iter().all(|r| r["status"] == "sent" && r["channel"] == "whatsapp"), "{native:?}");

    // A regular (free-form) message: WhatsApp takes it only inside the 24 h window.
    let a = bearer(
        &s,
        PABBLY_BROADCASTS,
        json!({"broadcastName": "Hours", "message": "We open at 9", "destinations": ["14155550123"]}),
    )
    .await;
    assert_eq!(a.body["success"], "true", "{}", a.body);
    assert_eq!(a.body["data"]["messages"][0]["message_status"], "queued");
    let row = &native_rows(&s, &a.request_id()).await[0];
    assert_eq!(row["status"], "failed");
    assert!(row["error_message"].as_str().unwrap().contains("24 h"), "{row}");

    let cases: Vec<(Value, Vec<&str>)> = vec![
        (json!({"broadcastName": "x", "destinations": ["14155550123"]}), vec!["message"]),
        (
            json!({"broadcastName": "x", "destinations": ["14155550123"], "message": "m", "templateName": "festival_offer_template"}),
            vec!["message"],
        ),
        (json!({"broadcastName": "x", "destinations": [], "message": "m"}), vec!["destinations"]),
        (json!({"broadcastName": "x", "destinations": ["14155550123", "12"], "message": "m"}), vec!["destinations[1]"]),
        (json!({"destinations": ["14155550123"], "message": "m"}), vec!["broadcastName"]),
        (json!({"broadcastName": "x", "destinations": ["14155550123"], "templateName": "nope"}), vec!["templateName"]),
    ];
    for (body, fields) in &cases {
        let a = bearer(&s, PABBLY_BROADCASTS, body.clone()).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", a.body);
        assert_eq!(error_fields(&a.body), *fields, "{body}: {}", a.body);
    }
}

#[tokio::test]
async fn pabbly_api_campaigns_are_added_once_by_name() {
    let s = TestServer::start().await;
    seed_pabbly(&s).await;
    let (_, list) = s.get("/v1/campaigns").await;
    let stored = &list["campaigns"][0];
    assert_eq!(
        (stored["name"].clone(), stored["template_ids"].clone()),
        (json!("festival offer"), json!(["festival_offer_template"]))
    );
    let again = add_api_campaign(&s, "festival offer", &["festival_offer_template"], json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.body["error"]["code"], "campaign_exists");
    let a = add_api_campaign(&s, "second", &["festival_offer_template"], json!({"Country": "India"})).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.body["success"], "true");
    assert_eq!(a.body["data"]["defaultContactFieldValues"], json!({"Country": "India"}));
    let bad = add_api_campaign(&s, "third", &["missing"], json!({})).await;
    assert_eq!(
        (bad.status, error_fields(&bad.body)),
        (StatusCode::UNPROCESSABLE_ENTITY, vec!["templateNames[0]".to_string()])
    );
    let bad = bearer(&s, PABBLY_CAMPAIGNS, json!({"templateNames": ["festival_offer_template"]})).await;
    assert_eq!(error_fields(&bad.body), vec!["campaignName"]);
}

// ------------------------------------------------------------------------------ idempotency

/// Every sending endpoint of every dialect honours `Idempotency-Key`: the same key and body
/// answer the first response again; another body is a conflict, in the dialect's error shape.
#[tokio::test]
async fn every_dialect_honours_idempotency_keys() {
    let s = TestServer::start().await;
    seed_smax_block(&s).await;
    seed_invent(&s).await;
    seed_pabbly(&s).await;
    put_ok(&s, "/v1/contacts/cus-1", json!({"name": "Lan"})).await;
    let v1 = |order: &str| {
        format!("/compat/smax/bots/default/users/77/send?bot_token={}&block_id=blk-1&order_id={order}&city=c", s.key)
    };
    let csml_body = |flow: &str| {
        format!(
            r#"{{"payload": {{"content_type": "flow_trigger", "content": {{"flow_id": "{flow}"}}}}, "client": {{"user_id": "u1"}}}}"#
        )
    };
    type Build<'a> = Box<dyn Fn(&str, &str) -> RequestBuilder + 'a>;
    let endpoints: Vec<(&str, Build)> = vec![
        (
            "csml",
            Box::new(|key, v| {
                post_text(&s, CSML, &csml_body(v)).header("x-api-key", &s.key).header("idempotency-key", key)
            }),
        ),
        ("smax_v1", Box::new(|key, v| s.http.post(s.url(&v1(v))).header("idempotency-key", key))),
        (
            "smax_v2",
            Box::new(|key, v| {
                s.http.post(s.url(SMAX_V2)).bearer_auth(&s.key).header("idempotency-key", key).json(
                    &json!({"customer_id": "cus-1", "messages": [{"text": v}], "messaging_tag": "ACCOUNT_UPDATE"}),
                )
            }),
        ),
        (
            "invent",
            Box::new(|key, v| {
                s.http
                    .post(s.url(INVENT))
                    .bearer_auth(&s.key)
                    .header("idempotency-key", key)
                    .json(&json!({"contact_id": "ct-1", "variables": {"city": v}}))
            }),
        ),
        (
            "pabbly send",
            Box::new(|key, v| {
                post_text(&s, PABBLY_SEND, &PABBLY_REQUEST.replace("Christmas", v))
                    .bearer_auth(&s.key)
                    .header("idempotency-key", key)
            }),
        ),
        (
            "pabbly broadcast",
            Box::new(|key, v| {
                s.http
                    .post(s.url(PABBLY_BROADCASTS))
                    .bearer_auth(&s.key)
                    .header("idempotency-key", key)
                    .json(&json!({"broadcastName": v, "message": "m", "destinations": ["14155550123"]}))
            }),
        ),
    ];
    for (name, build) in &endpoints {
        let before = s.local.store.counts().await.unwrap().requests;
        let key = format!("key-{}", name.replace(' ', "-"));
        let first = answer(build(&key, "one")).await;
        assert!(first.status.is_success(), "{name}: {}", first.body);
        let again = answer(build(&key, "one")).await;
        assert!(again.replayed(), "{name}");
        assert_eq!((again.status, &again.body), (first.status, &first.body), "{name}");
        let other = answer(build(&key, "two")).await;
        assert_eq!(other.status, StatusCode::CONFLICT, "{name}: {}", other.body);
        if name.starts_with("smax") {
            assert_smax(&other, false);
        } else {
            assert_eq!(other.body["error"]["code"], "idempotency_key_reused", "{name}");
        }
        assert_eq!(s.local.store.counts().await.unwrap().requests, before + 1, "{name} sent once");
    }
}

/// One idempotency layer sits in front of every sending route, the native one included: a
/// malformed key is refused in the route's own error shape, a caller the route cannot
/// authenticate (or one naming another tenant's org or bot) is refused by the route without
/// taking the key, and an "Add API Campaign" answer is kept and replayed like a send's.
#[tokio::test]
async fn one_idempotency_layer_guards_every_sending_route() {
    let s = TestServer::start().await;
    seed_smax_block(&s).await;
    seed_pabbly(&s).await;
    let v1 = |token: &str| format!("/compat/smax/bots/default/users/77/send?bot_token={token}&block_id=blk-1");
    let json_routes = ["/v1/broadcasts", CSML, SMAX_V2, INVENT, PABBLY_SEND, PABBLY_BROADCASTS, PABBLY_CAMPAIGNS];
    let mut malformed: Vec<(&str, RequestBuilder)> = json_routes
        .iter()
        .map(|p| {
            (*p, s.http.post(s.url(p)).bearer_auth(&s.key).header("idempotency-key", "has space").json(&json!({})))
        })
        .collect();
    malformed.push(("smax v1", s.http.post(s.url(&v1(&s.key))).header("idempotency-key", "has space")));
    for (route, request) in malformed {
        let a = answer(request).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{route}: {}", a.body);
        if route.contains("smax") {
            assert_smax(&a, false);
            assert!(a.body["result"].as_str().unwrap().contains("Idempotency-Key"), "{route}: {}", a.body);
        } else {
            assert_eq!(a.body["error"]["code"], "invalid_idempotency_key", "{route}");
        }
    }
    assert_eq!(s.local.store.counts().await.unwrap().requests, 0, "nothing was sent");
    // A call for another tenant's org or bot is refused as such, before the key is looked at.
    for path in ["/compat/invent/orgs/other/broadcasts/onboarding/send", "/compat/smax/public/bots/other/send"] {
        let a = answer(
            s.http.post(s.url(path)).bearer_auth(&s.key).header("idempotency-key", "has space").json(&json!({})),
        )
        .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}: {}", a.body);
    }

    let refused = answer(s.http.post(s.url(&v1("not-a-token"))).header("idempotency-key", "k-v1")).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert_smax(&refused, false);
    let sent = answer(s.http.post(s.url(&v1(&s.key))).header("idempotency-key", "k-v1")).await;
    assert_eq!(sent.status, StatusCode::OK, "the key is still free: {}", sent.body);
    assert!(!sent.replayed());

    let add = |name: &str| {
        s.http
            .post(s.url(PABBLY_CAMPAIGNS))
            .bearer_auth(&s.key)
            .header("idempotency-key", "k-add")
            .json(&json!({"campaignName": name, "templateNames": ["festival_offer_template"]}))
    };
    let first = answer(add("Diwali")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let again = answer(add("Diwali")).await;
    assert!(again.replayed(), "without the key this would be campaign_exists: {}", again.body);
    assert_eq!((again.status, &again.body), (first.status, &first.body));
    let other = answer(add("Holi")).await;
    assert_eq!(other.status, StatusCode::CONFLICT, "{}", other.body);
    assert_eq!(other.body["error"]["code"], "idempotency_key_reused");
}

#[tokio::test]
async fn smax_v2_seed_body_unsplit_sends_the_block() {
    let s = TestServer::start().await;
    put_ok(&s, "/v1/contacts/cus-1", json!({"name": "Lan"})).await;
    put_ok(&s, "/v1/templates/voucher", json!({"body": "Hi {{name}}, your voucher is ready"})).await;
    put_ok(&s, "/v1/campaigns/promo", json!({"name": "Promo", "template_ids": ["voucher"]})).await;
    // The page's example exactly as it lists it: both block_id and messages.
    let body = smax_v2_seed(json!({"block_id": "promo", "messages": [{"text": "Noi dung tin nhan"}]}));
    let a = bearer(&s, SMAX_V2, body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["success"], true);
    assert!(a.body["result"].as_str().unwrap().contains("messages were not sent"), "{}", a.body);
    let done = s.wait_terminal(&a.request_id(), std::time::Duration::from_secs(10)).await;
    assert_eq!(done["row_count"], 1);
    assert_eq!(done["recipients"][0]["template_id"], "voucher");
}
