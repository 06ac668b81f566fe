//! The Twilio dialect end to end: form bodies in with HTTP Basic as the Twilio SDKs send them,
//! Twilio's Message and Notification resources out (every field Twilio's published spec lists),
//! each rule refused with Twilio's error code, and the sends visible natively.

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

use herald::providers::sandbox::{FailKind, SandboxBehaviour};
use herald_tests::fake::{FakeProvider, Recorded, Reply};
use herald_tests::{fast_settings, TestServer};

const WAIT: Duration = Duration::from_secs(20);
const TO: &str = "+14155550123";

/// The Message resource's fields in Twilio's published spec (`api.v2010.account.message`).
const MESSAGE_FIELDS: [&str; 20] = [
    "body",
    "num_segments",
    "direction",
    "from",
    "to",
    "date_updated",
    "price",
    "error_message",
    "uri",
    "account_sid",
    "num_media",
    "status",
    "messaging_service_sid",
    "sid",
    "date_sent",
    "date_created",
    "error_code",
    "price_unit",
    "api_version",
    "subresource_uris",
];

struct Answer {
    status: StatusCode,
    request_id: Option<String>,
    replayed: bool,
    body: Value,
}

async fn answer(rb: reqwest::RequestBuilder) -> Answer {
    let resp = rb.send().await.expect("request");
    let status = resp.status();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (request_id, replayed) = (header("herald-request-id"), header("idempotent-replayed").is_some());
    let body = resp.json().await.unwrap_or(Value::Null);
    Answer { status, request_id, replayed, body }
}

async fn account_sid(s: &TestServer) -> String {
    let (status, body) = s.get("/v1/account").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["tenant_id"], "default");
    body["twilio_account_sid"].as_str().unwrap().to_string()
}

fn messages_path(account: &str) -> String {
    format!("/compat/twilio/2010-04-01/Accounts/{account}/Messages.json")
}

/// `client.messages.create(...)` as the SDK sends it: the account SID as username.
async fn create(s: &TestServer, form: &[(&str, &str)]) -> Answer {
    let ac = account_sid(s).await;
    answer(s.http.post(s.url(&messages_path(&ac))).basic_auth(&ac, Some(&s.key)).form(form)).await
}

async fn fetch(s: &TestServer, key: &str, account: &str, sid: &str) -> Answer {
    let path = format!("/compat/twilio/2010-04-01/Accounts/{account}/Messages/{sid}.json");
    answer(s.http.get(s.url(&path)).basic_auth(account, Some(key))).await
}

/// Asserts a Twilio error body with its code and status.
fn assert_twilio_error(a: &Answer, status: u16, code: u64) {
    assert_eq!(a.status.as_u16(), status, "{}", a.body);
    assert_eq!(a.body["code"], json!(code), "{}", a.body);
    assert_eq!(a.body["status"], json!(status));
    assert_eq!(a.body["more_info"], json!(format!("https://www.twilio.com/docs/errors/{code}")));
    assert!(a.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", a.body);
}

fn rfc2822(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc2822(v.as_str().unwrap_or_default()).unwrap_or_else(|_| panic!("{v} is RFC 2822"))
}

#[tokio::test]
async fn an_sms_answers_twilios_message_resource_and_is_fetched_once_sent() {
    let s = TestServer::start().await;
    let ac = account_sid(&s).await;
    assert!(ac.starts_with("AC") && ac.len() == 34 && ac[2..].bytes().all(|b| b.is_ascii_hexdigit()), "{ac}");
    let callback = format!("http://127.0.0.1:{}/status", s.addr.port());
    let form = [("To", TO), ("From", "+15005550006"), ("Body", "Hello from Herald"), ("StatusCallback", &callback)];
    let a = create(&s, &form).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let m = &a.body;
    let keys: Vec<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
    for field in MESSAGE_FIELDS {
        assert!(keys.contains(&field), "{field} missing from {m}");
    }
    let sid = m["sid"].as_str().unwrap();
    assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
    assert_eq!(
        (m["account_sid"].as_str(), m["to"].as_str(), m["from"].as_str()),
        (Some(&*ac), Some(TO), Some("+15005550006"))
    );
    assert_eq!((m["status"].as_str(), m["direction"].as_str()), (Some("queued"), Some("outbound-api")));
    assert_eq!((m["api_version"].as_str(), m["body"].as_str()), (Some("2010-04-01"), Some("Hello from Herald")));
    assert_eq!((m["num_segments"].as_str(), m["num_media"].as_str()), (Some("1"), Some("0")));
    assert_eq!((m["price"].clone(), m["price_unit"].as_str()), (Value::Null, Some("USD")));
    assert_eq!((m["error_code"].clone(), m["date_sent"].clone()), (Value::Null, Value::Null));
    assert_eq!(m["uri"], json!(format!("/2010-04-01/Accounts/{ac}/Messages/{sid}.json")));
    rfc2822(&m["date_created"]);
    rfc2822(&m["date_updated"]);

    // Natively, the callback URL and the sender travel with the request.
    let request_id = a.request_id.expect("herald-request-id");
    let native = s.wait_terminal(&request_id, WAIT).await;
    assert_eq!(native["source"], "twilio");
    assert_eq!(native["metadata"]["twilio_status_callback"], json!(callback));
    assert_eq!(native["metadata"]["twilio_from"], "+15005550006");
    let outbox = s.outbox(&request_id).await;
    assert_eq!((outbox[0]["channel"].as_str(), outbox[0]["to"].as_str()), (Some("sms"), Some(TO)));

    let f = fetch(&s, &s.key, &ac, sid).await;
    assert_eq!(f.status, StatusCode::OK, "{}", f.body);
    assert_eq!(f.body["sid"], json!(sid), "the sid is stable for its row");
    assert!(["sent", "delivered", "read"].contains(&f.body["status"].as_str().unwrap()), "{}", f.body);
    rfc2822(&f.body["date_sent"]);
}

#[tokio::test]
async fn a_whatsapp_to_goes_by_whatsapp_and_the_tenant_id_signs_in_too() {
    let s = TestServer::start().await;
    let wa = format!("whatsapp:{TO}");
    let form = [("To", wa.as_str()), ("From", "whatsapp:+15005550006"), ("Body", "Hola")];
    let a = answer(s.http.post(s.url(&messages_path("default"))).basic_auth("default", Some(&s.key)).form(&form)).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["to"], json!(wa));
    // Free-form WhatsApp text needs the 24 h window, which a new number lacks (on Twilio too):
    // WhatsApp's rule refusing it shows the message went by WhatsApp, and how a failure reads.
    s.wait_terminal(&a.request_id.unwrap(), WAIT).await;
    let f = fetch(&s, &s.key, "default", a.body["sid"].as_str().unwrap()).await;
    assert_eq!((f.body["status"].as_str(), f.body["error_code"].as_u64()), (Some("failed"), Some(30008)), "{}", f.body);
    assert!(f.body["error_message"].as_str().unwrap().contains("WhatsApp"), "{}", f.body);
    assert_eq!(f.body["to"], json!(wa));
}

#[tokio::test]
async fn each_bad_form_gets_twilios_code() {
    let s = TestServer::start().await;
    let from = ("From", "+15005550006");
    assert_twilio_error(&create(&s, &[from, ("Body", "x")]).await, 400, 21604);
    assert_twilio_error(&create(&s, &[("To", "555-0123"), from, ("Body", "x")]).await, 400, 21211);
    assert_twilio_error(&create(&s, &[("To", TO), from]).await, 400, 21602);
    assert_twilio_error(&create(&s, &[("To", TO), ("Body", "x")]).await, 400, 21603);
    let long = "a".repeat(1601);
    assert_twilio_error(&create(&s, &[("To", TO), from, ("Body", &long)]).await, 400, 21617);
    let two_media = [
        ("To", TO),
        from,
        ("Body", "x"),
        ("MediaUrl", "https://a.example/1.jpg"),
        ("MediaUrl", "https://a.example/2.jpg"),
    ];
    assert_twilio_error(&create(&s, &two_media).await, 400, 21623);
    assert_twilio_error(
        &create(&s, &[("To", TO), from, ("Body", "x"), ("MediaUrl", "ftp://a/1.jpg")]).await,
        400,
        21620,
    );
    for bad in ["ftp://example.com/cb", "http://example.com/cb", "not a url"] {
        let a = create(&s, &[("To", TO), from, ("Body", "x"), ("StatusCallback", bad)]).await;
        assert_twilio_error(&a, 400, 21609);
    }
    let (status, body) = s.get("/v1/outbox?limit=10").await;
    assert_eq!((status, body["messages"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)), "nothing was sent");
}

#[tokio::test]
async fn a_media_url_rides_with_the_body() {
    let s = TestServer::start().await;
    let form =
        [("To", TO), ("From", "+15005550006"), ("Body", "Look"), ("MediaUrl", "https://cdn.example.com/cat.jpg")];
    let a = create(&s, &form).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["num_media"], "1");
}

#[tokio::test]
async fn credentials_and_accounts_that_do_not_match_are_20003() {
    let s = TestServer::start().await;
    let other_key = s.key_for("other").await;
    let ac = account_sid(&s).await;
    let form = [("To", TO), ("From", "+15005550006"), ("Body", "x")];
    let post = |user: &str, key: &str, account: &str| {
        s.http.post(s.url(&messages_path(account))).basic_auth(user, Some(key)).form(&form)
    };
    assert_twilio_error(&answer(post(&ac, "not-a-key", &ac)).await, 401, 20003);
    assert_twilio_error(&answer(post(&ac, &other_key, &ac)).await, 401, 20003);
    assert_twilio_error(&answer(post("other", &other_key, &ac)).await, 401, 20003);
    assert_twilio_error(
        &answer(s.http.post(s.url(&messages_path(&ac))).bearer_auth(&s.key).form(&form)).await,
        401,
        20003,
    );
    let a = answer(post("other", &other_key, "other")).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_ne!(a.body["account_sid"], json!(ac), "each tenant has its own account SID");

    // A message is found only in its own account.
    let sid = a.body["sid"].as_str().unwrap();
    assert_eq!(fetch(&s, &other_key, "other", sid).await.status, StatusCode::OK);
    assert_twilio_error(&fetch(&s, &s.key, &ac, sid).await, 404, 20404);
    assert_twilio_error(&fetch(&s, &s.key, &ac, "SM00000000000000000000000000000000").await, 404, 20404);
    assert_twilio_error(&fetch(&s, &s.key, &ac, "nope").await, 404, 20404);
}

#[tokio::test]
async fn a_content_sid_sends_that_template_with_its_variables() {
    let s = TestServer::start().await;
    let (status, body) = s.put("/v1/templates/HX0001", json!({"body": "Hi {{1}}, your code is {{2}}"})).await;
    assert!(status.is_success(), "{body}");
    let vars = r#"{"1":"Ada","2":"4242"}"#;
    let form = [("To", TO), ("MessagingServiceSid", "MG0001"), ("ContentSid", "HX0001"), ("ContentVariables", vars)];
    let a = create(&s, &form).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["body"], "Hi Ada, your code is 4242");
    assert_eq!(a.body["messaging_service_sid"], "MG0001");
    let request_id = a.request_id.unwrap();
    s.wait_terminal(&request_id, WAIT).await;
    assert_eq!(s.outbox(&request_id).await[0]["message"]["text"], "Hi Ada, your code is 4242");

    let unknown = [("To", TO), ("MessagingServiceSid", "MG0001"), ("ContentSid", "HX9999")];
    assert_twilio_error(&create(&s, &unknown).await, 400, 21655);
    let gap = [
        ("To", TO),
        ("MessagingServiceSid", "MG0001"),
        ("ContentSid", "HX0001"),
        ("ContentVariables", r#"{"1":"a","3":"c"}"#),
    ];
    assert_twilio_error(&create(&s, &gap).await, 400, 21656);
    let not_json =
        [("To", TO), ("MessagingServiceSid", "MG0001"), ("ContentSid", "HX0001"), ("ContentVariables", "1=a")];
    assert_twilio_error(&create(&s, &not_json).await, 400, 21656);
}

#[tokio::test]
async fn send_at_schedules_within_twilios_window() {
    let s = TestServer::start().await;
    let at = |mins: i64| (chrono::Utc::now() + chrono::Duration::minutes(mins)).to_rfc3339();
    let (hour, soon) = (at(60), at(5));
    let service = ("MessagingServiceSid", "MG0001");
    let fixed = ("ScheduleType", "fixed");
    let a = create(&s, &[("To", TO), service, ("Body", "later"), ("SendAt", &hour), fixed]).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    assert_eq!(a.body["status"], "scheduled");
    let (_, native) = s.get(&format!("/v1/broadcasts/{}", a.request_id.unwrap())).await;
    assert_eq!(rfc3339(&native["send_at"]), rfc3339(&json!(hour)));

    let no_service = [("To", TO), ("From", "+15005550006"), ("Body", "x"), ("SendAt", &hour), fixed];
    assert_twilio_error(&create(&s, &no_service).await, 400, 35118);
    assert_twilio_error(&create(&s, &[("To", TO), service, ("Body", "x"), ("SendAt", &soon), fixed]).await, 400, 35114);
    assert_twilio_error(&create(&s, &[("To", TO), service, ("Body", "x"), ("SendAt", &hour)]).await, 400, 35114);
    assert_twilio_error(
        &create(&s, &[("To", TO), service, ("Body", "x"), ("SendAt", "tomorrow"), fixed]).await,
        400,
        35114,
    );
    let far = at(36 * 24 * 60);
    assert_twilio_error(&create(&s, &[("To", TO), service, ("Body", "x"), ("SendAt", &far), fixed]).await, 400, 35114);
}

fn rfc3339(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap().with_timezone(&chrono::Utc)
}

#[tokio::test]
async fn an_idempotency_key_answers_the_same_message_again() {
    let s = TestServer::start().await;
    let ac = account_sid(&s).await;
    let form = [("To", TO), ("From", "+15005550006"), ("Body", "once")];
    let post = || {
        s.http
            .post(s.url(&messages_path(&ac)))
            .basic_auth(&ac, Some(&s.key))
            .header("idempotency-key", "k-1")
            .form(&form)
    };
    let (first, second) = (answer(post()).await, answer(post()).await);
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!((second.status, second.replayed), (StatusCode::CREATED, true));
    assert_eq!(first.body["sid"], second.body["sid"]);
}

// ---------------------------------------------------------------------------------- Notify

fn binding(i: usize) -> String {
    json!({"binding_type": "sms", "address": format!("+1415555{i:04}")}).to_string()
}

async fn notify(s: &TestServer, form: &[(String, String)]) -> Answer {
    let ac = account_sid(s).await;
    let url = s.url("/compat/twilio/v1/Services/IS0001/Notifications");
    answer(s.http.post(url).basic_auth(&ac, Some(&s.key)).form(form)).await
}

fn notify_form(n: usize, body: Option<&str>) -> Vec<(String, String)> {
    let mut form: Vec<(String, String)> = (0..n).map(|i| ("ToBinding".to_string(), binding(i))).collect();
    form.extend(body.map(|b| ("Body".to_string(), b.to_string())));
    form
}

#[tokio::test]
async fn a_notification_answers_notifys_resource_and_sends_to_every_binding() {
    let s = TestServer::start().await;
    let a = notify(&s, &notify_form(3, Some("Doors open at 9"))).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let n = &a.body;
    assert!(n["sid"].as_str().is_some_and(|sid| sid.starts_with("NT") && sid.len() == 34), "{n}");
    assert_eq!((n["service_sid"].as_str(), n["body"].as_str()), (Some("IS0001"), Some("Doors open at 9")));
    assert_eq!(n["account_sid"], json!(account_sid(&s).await));
    assert_eq!((n["identities"].clone(), n["tags"].clone()), (json!([]), json!([])));
    chrono::DateTime::parse_from_rfc3339(n["date_created"].as_str().unwrap()).unwrap();
    let native = s.wait_terminal(&a.request_id.unwrap(), WAIT).await;
    assert_eq!(native["summary"]["total"], 3);
    assert_eq!(native["source"], "twilio_notify");
}

#[tokio::test]
async fn past_a_thousand_bindings_a_notification_fans_out_as_an_audience() {
    let s = TestServer::start().await;
    let a = notify(&s, &notify_form(1_001, Some("Big news"))).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let native = s.wait_terminal(&a.request_id.unwrap(), Duration::from_secs(120)).await;
    assert!(
        native["audience"]["segments"][0].as_str().unwrap().starts_with("twilio-notify-"),
        "{}",
        native["audience"]
    );
    assert_eq!(native["summary"]["total"], 1_001, "{}", native["summary"]);
    assert_eq!(native["summary"]["by_status"]["failed"], Value::Null, "{}", native["summary"]);
}

#[tokio::test]
async fn a_bad_notification_gets_twilios_code() {
    let s = TestServer::start().await;
    assert_twilio_error(&notify(&s, &notify_form(2, None)).await, 400, 21602);
    assert_twilio_error(&notify(&s, &notify_form(0, Some("x"))).await, 400, 20001);
    let mut form = notify_form(1, Some("x"));
    form.push(("ToBinding".into(), json!({"binding_type": "apn", "address": "abc"}).to_string()));
    assert_twilio_error(&notify(&s, &form).await, 400, 20001);
    form.truncate(1);
    form.push(("ToBinding".into(), "{not json".into()));
    assert_twilio_error(&notify(&s, &form).await, 400, 20001);
    let tag = vec![("Tag".to_string(), "all".to_string()), ("Body".to_string(), "x".to_string())];
    assert_twilio_error(&notify(&s, &tag).await, 400, 20001);
}

#[tokio::test]
async fn what_the_dialect_does_not_serve_is_refused_in_twilios_shape() {
    let s = TestServer::start().await;
    let ac = account_sid(&s).await;
    let json_body = s.http.post(s.url(&messages_path(&ac))).basic_auth(&ac, Some(&s.key)).json(&json!({"To": TO}));
    assert_twilio_error(&answer(json_body).await, 415, 20001);
    let put = s.http.put(s.url(&messages_path(&ac))).basic_auth(&ac, Some(&s.key));
    assert_twilio_error(&answer(put).await, 405, 20004);
    let one = format!("/compat/twilio/2010-04-01/Accounts/{ac}/Messages/SM00000000000000000000000000000000.json");
    assert_twilio_error(&answer(s.http.delete(s.url(&one)).basic_auth(&ac, Some(&s.key))).await, 405, 20004);
    let too_many = notify_form(10_001, Some("x"));
    assert_twilio_error(&notify(&s, &too_many).await, 400, 20001);
}

/// `client.messages.list(...)` as the SDK reads it: the page at `uri` (a Twilio path, as
/// `next_page_uri` gives it).
async fn list_page(s: &TestServer, account: &str, uri: &str) -> Answer {
    let path = format!("/compat/twilio{uri}");
    answer(s.http.get(s.url(&path)).basic_auth(account, Some(&s.key))).await
}

#[tokio::test]
async fn the_messages_list_pages_newest_first_as_twilio_pages() {
    let s = TestServer::start().await;
    let ac = account_sid(&s).await;
    let mut sids = Vec::new();
    for i in 0..5 {
        let a = create(&s, &[("To", TO), ("From", "+15005550006"), ("Body", &format!("message {i}"))]).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        sids.push(a.body["sid"].as_str().unwrap().to_string());
        // A message made in the same millisecond as another would list by id instead.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    sids.reverse();
    // Neither a native broadcast nor a Notify notification is a Message.
    let (status, native) =
        s.post("/v1/broadcasts", json!({"recipients": [{"phone": TO}], "messages": [{"text": "native"}]})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{native}");
    assert_eq!(notify(&s, &notify_form(2, Some("notify"))).await.status, StatusCode::CREATED);

    let base = format!("/2010-04-01/Accounts/{ac}/Messages.json");
    let first = list_page(&s, &ac, &format!("{base}?PageSize=2")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let b = &first.body;
    assert_eq!(
        (b["page"].clone(), b["page_size"].clone(), b["start"].clone(), b["end"].clone()),
        (json!(0), json!(2), json!(0), json!(1))
    );
    assert_eq!(b["uri"], json!(format!("{base}?PageSize=2&Page=0")));
    assert_eq!(b["first_page_uri"], json!(format!("{base}?PageSize=2&Page=0")));
    assert_eq!(b["previous_page_uri"], Value::Null);
    let keys: Vec<&str> = b["messages"][0].as_object().unwrap().keys().map(String::as_str).collect();
    for field in MESSAGE_FIELDS {
        assert!(keys.contains(&field), "{field} missing from a listed message");
    }
    // A listed message is the one fetch answers.
    let one = fetch(&s, &s.key, &ac, &sids[0]).await;
    assert_eq!(b["messages"][0]["sid"], one.body["sid"]);
    assert_eq!((b["messages"][0]["to"].as_str(), b["messages"][0]["body"].as_str()), (Some(TO), Some("message 4")));

    let (mut listed, mut page, mut next) = (Vec::new(), first, None::<String>);
    for n in 0.. {
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert_eq!(page.body["page"], json!(n));
        assert_eq!(page.body["start"], json!(n * 2));
        if let Some(uri) = &next {
            assert_eq!(page.body["uri"].as_str(), Some(uri.as_str()), "a page's uri is the link that led to it");
        }
        listed.extend(page.body["messages"].as_array().unwrap().iter().map(|m| m["sid"].as_str().unwrap().to_string()));
        let Some(uri) = page.body["next_page_uri"].as_str().map(str::to_string) else { break };
        assert!(uri.starts_with(&format!("{base}?PageSize=2&Page={}&PageToken=", n + 1)), "{uri}");
        page = list_page(&s, &ac, &uri).await;
        next = Some(uri);
        assert!(n < 10, "the list never ended");
    }
    assert_eq!(listed, sids, "every message once, newest first, and nothing else");

    let all = list_page(&s, &ac, &base).await;
    assert_eq!(all.body["page_size"], json!(50), "50 a page unless PageSize says otherwise");
    assert_eq!(all.body["messages"].as_array().unwrap().len(), 5);
    assert_eq!(all.body["next_page_uri"], Value::Null);
    // Another tenant lists only its own, and cannot list this account.
    let other = s.key_for("twilio-other").await;
    let theirs = tw_account(&s, &other).await;
    let empty = answer(s.http.get(s.url(&messages_path(&theirs))).basic_auth(&theirs, Some(&other))).await;
    assert_eq!((empty.status, empty.body["messages"].clone()), (StatusCode::OK, json!([])));
    let probe = answer(s.http.get(s.url(&messages_path(&ac))).basic_auth(&theirs, Some(&other))).await;
    assert_twilio_error(&probe, 401, 20003);
}

async fn tw_account(s: &TestServer, key: &str) -> String {
    let (status, body) = s.call_as(key, reqwest::Method::GET, "/v1/account", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["twilio_account_sid"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_list_query_herald_cannot_answer_is_refused_in_twilios_shape() {
    let s = TestServer::start().await;
    let ac = account_sid(&s).await;
    assert_eq!(create(&s, &[("To", TO), ("From", "+15005550006"), ("Body", "hi")]).await.status, StatusCode::CREATED);
    let base = format!("/2010-04-01/Accounts/{ac}/Messages.json");
    for query in [
        "PageSize=0",
        "PageSize=many",
        "Page=1",
        "PageToken=not-a-token",
        "To=%2B14155550123",
        "From=x",
        "DateSent%3E=2026-01-01",
    ] {
        assert_twilio_error(&list_page(&s, &ac, &format!("{base}?{query}")).await, 400, 20001);
    }
    let big = list_page(&s, &ac, &format!("{base}?PageSize=5000")).await;
    assert_eq!((big.status, big.body["page_size"].clone()), (StatusCode::OK, json!(1000)), "{}", big.body);
}

// ------------------------------------------------------------------- status callbacks

/// Makes the tenant's Twilio signing secret; answers it.
async fn signing_secret(s: &TestServer) -> String {
    let (status, body) = s.post("/v1/account/twilio-signing-secret", json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let secret = body["twilio_signing_secret"].as_str().expect("the secret is shown").to_string();
    assert!(secret.len() == 32 && secret.bytes().all(|b| b.is_ascii_hexdigit()), "{secret}");
    secret
}

/// `X-Twilio-Signature` as Twilio documents it, computed here apart from Herald's code: the
/// base64 HMAC-SHA1 of the URL and each parameter's name and value, sorted by name.
fn twilio_signature(secret: &str, url: &str, form: &[(String, String)]) -> String {
    use base64::Engine;
    use hmac::Mac;
    let mut sorted = form.to_vec();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in &sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(data.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Waits for `n` posts at the receiver (10 s at most), then a little longer to see no more come.
async fn callbacks(rx: &FakeProvider, n: usize) -> Vec<Recorded> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while rx.requests().len() < n {
        assert!(tokio::time::Instant::now() < deadline, "{} of {n} callbacks", rx.requests().len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    rx.requests()
}

/// Checks a callback's form shape and its signature; answers its fields by name.
fn checked(r: &Recorded, secret: &str, url: &str) -> std::collections::HashMap<String, String> {
    assert_eq!((r.method.as_str(), r.headers["content-type"].as_str()), ("POST", "application/x-www-form-urlencoded"));
    let form = r.form();
    assert_eq!(r.headers["x-twilio-signature"], twilio_signature(secret, url, &form), "{form:?}");
    form.into_iter().collect()
}

#[tokio::test]
async fn a_status_callback_posts_twilios_form_signed_with_the_signing_secret() {
    let s = TestServer::start().await;
    let rx = FakeProvider::start(Reply::raw(200, "")).await;
    let secret = signing_secret(&s).await;
    // Replacing the settings keeps the secret.
    let (status, body) = s.put("/v1/settings", json!({"timezone": "Europe/Paris"})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!body.to_string().contains(&secret), "{body}");
    let ac = account_sid(&s).await;
    let url = format!("{}/twilio/status?token=abc", rx.url);
    let form = [("To", TO), ("From", "+15005550006"), ("Body", "hi"), ("StatusCallback", url.as_str())];
    let a = create(&s, &form).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    s.wait_terminal(&a.request_id.unwrap(), WAIT).await;

    let got = callbacks(&rx, 1).await;
    assert_eq!(got.len(), 1, "one post for the one move: {got:?}");
    assert_eq!(got[0].path, "/twilio/status?token=abc");
    let f = checked(&got[0], &secret, &url);
    let sid = a.body["sid"].as_str().unwrap();
    let fetched = fetch(&s, &s.key, &ac, sid).await.body;
    assert_eq!((f["MessageSid"].as_str(), f["SmsSid"].as_str()), (sid, sid));
    assert_eq!(f["MessageStatus"], fetched["status"].as_str().unwrap());
    assert_eq!((f["MessageStatus"].as_str(), f["SmsStatus"].as_str()), ("sent", "sent"));
    assert_eq!((f["To"].as_str(), f["From"].as_str()), (TO, "+15005550006"));
    assert_eq!((f["AccountSid"].as_str(), f["ApiVersion"].as_str()), (ac.as_str(), "2010-04-01"));
    assert!(!f.contains_key("ErrorCode") && !f.contains_key("MessagingServiceSid"), "{f:?}");

    // A new secret replaces the old one, and the next callback is signed with it.
    let newer = signing_secret(&s).await;
    assert_ne!(newer, secret);
    let form = [("To", TO), ("MessagingServiceSid", "MG0001"), ("Body", "again"), ("StatusCallback", url.as_str())];
    let a = create(&s, &form).await;
    s.wait_terminal(&a.request_id.unwrap(), WAIT).await;
    let got = callbacks(&rx, 2).await;
    let f = checked(&got[1], &newer, &url);
    assert_eq!((f["MessagingServiceSid"].as_str(), f.get("From")), ("MG0001", None));
}

#[tokio::test]
async fn a_failed_message_calls_back_with_its_error_code_and_a_refused_post_is_retried() {
    let settings = herald::app::Settings { event_retry_schedule: vec![Duration::from_millis(20)], ..fast_settings() };
    let sandbox = SandboxBehaviour { fail_rate: 1.0, fail_kind: FailKind::Permanent, ..Default::default() };
    let s = TestServer::start_with(settings, sandbox, 4).await;
    let rx = FakeProvider::start(Reply::raw(200, "")).await;
    rx.script([Reply::raw(500, "")]);
    let secret = signing_secret(&s).await;
    let url = format!("{}/cb", rx.url);
    let a = create(&s, &[("To", TO), ("From", "+15005550006"), ("Body", "hi"), ("StatusCallback", url.as_str())]).await;
    s.wait_terminal(&a.request_id.unwrap(), WAIT).await;
    let got = callbacks(&rx, 2).await;
    assert_eq!(got.len(), 2, "the refused post once more, then no more: {got:?}");
    assert_eq!(
        (&got[0].body, &got[0].headers["x-twilio-signature"]),
        (&got[1].body, &got[1].headers["x-twilio-signature"])
    );
    let f = checked(&got[1], &secret, &url);
    assert_eq!((f["MessageStatus"].as_str(), f["ErrorCode"].as_str()), ("failed", "30008"));
}

#[tokio::test]
async fn a_canceled_message_calls_back_canceled() {
    let s = TestServer::start().await;
    let rx = FakeProvider::start(Reply::raw(204, "")).await;
    let secret = signing_secret(&s).await;
    let url = format!("{}/cb", rx.url);
    let later = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let form = [
        ("To", TO),
        ("MessagingServiceSid", "MG0001"),
        ("Body", "later"),
        ("SendAt", later.as_str()),
        ("ScheduleType", "fixed"),
        ("StatusCallback", url.as_str()),
    ];
    let a = create(&s, &form).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let (status, body) = s.post(&format!("/v1/broadcasts/{}/cancel", a.request_id.unwrap()), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let got = callbacks(&rx, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(checked(&got[0], &secret, &url)["MessageStatus"], "canceled");
}

#[tokio::test]
async fn without_a_signing_secret_no_status_callback_is_posted() {
    let s = TestServer::start().await;
    let rx = FakeProvider::start(Reply::raw(200, "")).await;
    let url = format!("{}/cb", rx.url);
    let a = create(&s, &[("To", TO), ("From", "+15005550006"), ("Body", "hi"), ("StatusCallback", url.as_str())]).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    s.wait_terminal(&a.request_id.unwrap(), WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.requests().is_empty(), "{:?}", rx.requests());
    // The secret is made with a native key only.
    let r = s.http.post(s.url("/v1/account/twilio-signing-secret")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_provider_callback_that_arrives_twice_calls_back_delivered_again() {
    use herald::net::signatures::hub_signature;
    let fake = FakeProvider::start(Reply::json(200, json!({"messages": [{"id": "wamid.TW"}]}))).await;
    let config: std::collections::HashMap<String, String> = [
        ("WHATSAPP_TOKEN", "wa-token"),
        ("WHATSAPP_PHONE_NUMBER_ID", "1055"),
        ("WHATSAPP_BASE_URL", fake.url.as_str()),
        ("WHATSAPP_APP_SECRET", "meta-app-secret"),
        ("PUBLIC_URL", "https://herald.example.com"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let config = herald::providers::config::ProviderConfig::from_map(&config).unwrap();
    let s = TestServer::start_with_providers(fast_settings(), Default::default(), 4, &config).await;
    let rx = FakeProvider::start(Reply::raw(200, "")).await;
    let secret = signing_secret(&s).await;
    let url = format!("{}/cb", rx.url);
    let to = format!("whatsapp:{TO}");
    // Free-form WhatsApp text goes only within 24 h of the contact's message: send a template.
    let template = json!({"channel": "whatsapp", "body": "hi", "whatsapp": {"name": "hello", "language": "en"}});
    assert!(s.put("/v1/templates/HXhello", template).await.0.is_success());
    let form =
        [("To", to.as_str()), ("From", "whatsapp:+15005550006"), ("ContentSid", "HXhello"), ("StatusCallback", &url)];
    let a = create(&s, &form).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    s.wait_terminal(&a.request_id.unwrap(), WAIT).await;
    callbacks(&rx, 1).await;
    let status =
        json!({"id": "wamid.TW", "status": "delivered", "timestamp": "1795284000", "recipient_id": "14155550123"});
    let raw = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550001111",
        "phone_number_id": "1055"}, "statuses": [status]}}]}]})
    .to_string();
    for _ in 0..2 {
        let req = s
            .http
            .post(s.url("/v1/providers/whatsapp/events"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", hub_signature("meta-app-secret", raw.as_bytes()))
            .body(raw.clone());
        assert_eq!(req.send().await.unwrap().status(), StatusCode::OK);
    }
    // The repeat may mean Herald died before queuing the first callback: it calls back again,
    // as Twilio itself may, and the message stays delivered.
    let got = callbacks(&rx, 3).await;
    let statuses: Vec<String> = got.iter().map(|r| checked(r, &secret, &url)["MessageStatus"].clone()).collect();
    assert_eq!(statuses, ["sent", "delivered", "delivered"]);
    assert_eq!(checked(&got[1], &secret, &url)["To"], to);
    assert_eq!(got[2].body, got[1].body, "the same callback again");
}
