//! Provider status callbacks: signatures verified (valid, invalid, missing), statuses applied
//! forward-only and out of order, inbound messages opening the window, STOP unsubscribing.

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

use herald::net::signatures::{hub_signature, twilio_signature};
use herald::providers::config::ProviderConfig;
use herald_tests::fake::{FakeProvider, Reply};
use herald_tests::{fast_settings, TestServer};

const APP_SECRET: &str = "meta-app-secret";
const TWILIO_TOKEN: &str = "tw-secret";
const PUBLIC: &str = "https://herald.example.com";

async fn server(fake: &FakeProvider) -> TestServer {
    server_with(fake, &[]).await
}

/// As [`server`], with more `HERALD_*` settings (named without the prefix).
async fn server_with(fake: &FakeProvider, more: &[(&str, &str)]) -> TestServer {
    let m: HashMap<String, String> = [
        ("WHATSAPP_TOKEN", "wa-token"),
        ("WHATSAPP_PHONE_NUMBER_ID", "1055"),
        ("WHATSAPP_BASE_URL", fake.url.as_str()),
        ("WHATSAPP_APP_SECRET", APP_SECRET),
        ("WHATSAPP_VERIFY_TOKEN", "verify-me"),
        ("TWILIO_ACCOUNT_SID", "AC1"),
        ("TWILIO_AUTH_TOKEN", TWILIO_TOKEN),
        ("TWILIO_FROM", "+15005550006"),
        ("TWILIO_BASE_URL", fake.url.as_str()),
        ("PUBLIC_URL", PUBLIC),
    ]
    .iter()
    .chain(more)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    TestServer::start_with_providers(fast_settings(), Default::default(), 4, &ProviderConfig::from_map(&m).unwrap())
        .await
}

fn wa_status(id: &str, status: &str, ts: i64) -> Value {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550001111", "phone_number_id": "1055"},
        "statuses": [{"id": id, "status": status, "timestamp": ts.to_string(), "recipient_id": "14155550123"}]}}]}]})
}

async fn post_meta(s: &TestServer, body: &Value, signature: Option<String>) -> (StatusCode, Value) {
    let raw = body.to_string();
    let mut req =
        s.http.post(s.url("/v1/providers/whatsapp/events")).header("content-type", "application/json").body(raw);
    if let Some(sig) = signature {
        req = req.header("x-hub-signature-256", sig);
    }
    herald_tests::read(req.send().await.unwrap()).await
}

async fn sent_row(s: &TestServer, body: Value) -> Value {
    let (_, answer) = s.post("/v1/broadcasts", body).await;
    let id = answer["request_id"].as_str().unwrap().to_string();
    s.wait_terminal(&id, Duration::from_secs(10)).await["recipients"][0].clone()
}

async fn row_status(s: &TestServer, row: &Value) -> String {
    let (_, b) = s.get(&format!("/v1/broadcasts/{}", row["request_id"].as_str().unwrap())).await;
    b["recipients"][0]["status"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn whatsapp_statuses_move_rows_forward_only_and_need_a_valid_signature() {
    let fake = FakeProvider::start(Reply::json(200, json!({"messages": [{"id": "wamid.CB"}]}))).await;
    let s = server(&fake).await;
    s.put(
        "/v1/templates/t",
        json!({"channel": "whatsapp", "body": "hi", "whatsapp": {"name": "hello", "language": "en"}}),
    )
    .await;
    let row = sent_row(&s, json!({"recipients": [{"phone": "+14155550123"}], "template": "t"})).await;
    assert_eq!(row["external_message_id"], "wamid.CB");

    let delivered = wa_status("wamid.CB", "delivered", 1_795_284_000);
    let good = hub_signature(APP_SECRET, delivered.to_string().as_bytes());
    // Missing and wrong signatures change nothing.
    assert_eq!(post_meta(&s, &delivered, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(post_meta(&s, &delivered, Some("sha256=00".into())).await.0, StatusCode::UNAUTHORIZED);
    let other = hub_signature("another-secret", delivered.to_string().as_bytes());
    assert_eq!(post_meta(&s, &delivered, Some(other)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(row_status(&s, &row).await, "sent");

    let (status, answer) = post_meta(&s, &delivered, Some(good)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["applied"]["moved"], 1);
    assert_eq!(row_status(&s, &row).await, "delivered");

    // Out of order: a late "sent" after "delivered" is acknowledged and ignored.
    let late = wa_status("wamid.CB", "sent", 1_795_283_990);
    let (_, answer) = post_meta(&s, &late, Some(hub_signature(APP_SECRET, late.to_string().as_bytes()))).await;
    assert_eq!(answer["applied"]["ignored"], 1);
    assert_eq!(row_status(&s, &row).await, "delivered");
    let read = wa_status("wamid.CB", "read", 1_795_284_100);
    post_meta(&s, &read, Some(hub_signature(APP_SECRET, read.to_string().as_bytes()))).await;
    let (_, b) = s.get(&format!("/v1/broadcasts/{}", row["request_id"].as_str().unwrap())).await;
    let r = &b["recipients"][0];
    assert_eq!(
        (r["status"].clone(), r["is_delivered"].clone(), r["is_read"].clone()),
        (json!("read"), json!(true), json!(true))
    );
    let delivered_at = chrono::DateTime::from_timestamp(1_795_284_000, 0).unwrap();
    assert_eq!(r["is_delivered_at"], json!(delivered_at), "the provider's own time is kept");

    // An unknown message id is acknowledged, not an error.
    let unknown = wa_status("wamid.UNKNOWN", "delivered", 1_795_284_000);
    let (status, answer) =
        post_meta(&s, &unknown, Some(hub_signature(APP_SECRET, unknown.to_string().as_bytes()))).await;
    assert_eq!((status, answer["applied"]["unknown"].clone()), (StatusCode::OK, json!(1)));
}

#[tokio::test]
async fn an_inbound_whatsapp_message_opens_the_window_for_free_form_text() {
    let fake = FakeProvider::start(Reply::json(200, json!({"messages": [{"id": "wamid.FREE"}]}))).await;
    let s = server(&fake).await;
    let body =
        json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "hello"}], "channel": "whatsapp"});
    assert_eq!(sent_row(&s, body.clone()).await["status"], "failed", "no window yet");

    let now = chrono::Utc::now().timestamp();
    let inbound = json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"phone_number_id": "1055"},
        "contacts": [{"profile": {"name": "Ada"}, "wa_id": "14155550123"}],
        "messages": [{"from": "14155550123", "id": "wamid.IN", "timestamp": now.to_string(), "type": "text", "text": {"body": "hi"}}]}}]}]});
    let (status, answer) =
        post_meta(&s, &inbound, Some(hub_signature(APP_SECRET, inbound.to_string().as_bytes()))).await;
    assert_eq!((status, answer["applied"]["inbound"].clone()), (StatusCode::OK, json!(1)));
    let row = sent_row(&s, body).await;
    assert_eq!((row["status"].clone(), row["external_message_id"].clone()), (json!("sent"), json!("wamid.FREE")));
}

#[tokio::test]
async fn metas_subscription_check_needs_the_verify_token() {
    let fake = FakeProvider::start(Reply::json(200, json!({}))).await;
    let s = server(&fake).await;
    let get = |token: &str| {
        s.http
            .get(s.url(&format!(
                "/v1/providers/whatsapp/events?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
            )))
            .send()
    };
    let ok = get("verify-me").await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    assert_eq!(get("wrong").await.unwrap().status(), StatusCode::UNAUTHORIZED);
}

async fn post_twilio(s: &TestServer, params: &[(&str, &str)], sign_with: Option<&str>) -> StatusCode {
    let owned: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let body: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(&owned).finish();
    let mut req = s
        .http
        .post(s.url("/v1/providers/sms/events"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(token) = sign_with {
        req = req.header(
            "x-twilio-signature",
            twilio_signature(token, &format!("{PUBLIC}/v1/providers/sms/events"), &owned),
        );
    }
    req.send().await.unwrap().status()
}

#[tokio::test]
async fn twilio_status_callbacks_and_inbound_stop() {
    let fake = FakeProvider::start(Reply::json(201, json!({"sid": "SMcb1"}))).await;
    let s = server(&fake).await;
    let row =
        sent_row(&s, json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "x"}], "channel": "sms"}))
            .await;
    assert_eq!(row["external_message_id"], "SMcb1");

    let delivered = [("MessageSid", "SMcb1"), ("MessageStatus", "delivered"), ("AccountSid", "AC1")];
    assert_eq!(post_twilio(&s, &delivered, None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(post_twilio(&s, &delivered, Some("wrong-token")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(row_status(&s, &row).await, "sent");
    assert_eq!(post_twilio(&s, &delivered, Some(TWILIO_TOKEN)).await, StatusCode::OK);
    assert_eq!(row_status(&s, &row).await, "delivered");
    let late = [("MessageSid", "SMcb1"), ("MessageStatus", "sent"), ("AccountSid", "AC1")];
    assert_eq!(post_twilio(&s, &late, Some(TWILIO_TOKEN)).await, StatusCode::OK);
    assert_eq!(row_status(&s, &row).await, "delivered", "a late sent never overwrites delivered");

    let stop = [("MessageSid", "SMin1"), ("From", "+14155550123"), ("To", "+15005550006"), ("Body", " stop ")];
    assert_eq!(post_twilio(&s, &stop, Some(TWILIO_TOKEN)).await, StatusCode::OK);
    let next =
        sent_row(&s, json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "x"}], "channel": "sms"}))
            .await;
    assert_eq!(next["status"], "skipped");
    assert_eq!(next["error_message"], "contact has unsubscribed");
}

#[tokio::test]
async fn an_inbound_stop_unsubscribes_the_contact_of_the_inbound_tenant_only() {
    let fake = FakeProvider::start(Reply::json(201, json!({"sid": "SMacme"}))).await;
    let s = server_with(&fake, &[("INBOUND_TENANT", "acme")]).await;
    let acme = s.key_for("acme").await;
    let stop = [("MessageSid", "SMin2"), ("From", "+14155550123"), ("To", "+15005550006"), ("Body", "STOP")];
    assert_eq!(post_twilio(&s, &stop, Some(TWILIO_TOKEN)).await, StatusCode::OK);

    let body = json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "x"}], "channel": "sms"});
    let mut inline = body.clone();
    inline["background"] = json!(false);
    let (status, answer) = s.call_as(&acme, reqwest::Method::POST, "/v1/broadcasts", Some(inline)).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let row = &answer["recipients"][0];
    assert_eq!(
        (row["status"].clone(), row["error_message"].clone()),
        (json!("skipped"), json!("contact has unsubscribed"))
    );
    assert_eq!(sent_row(&s, body).await["status"], "sent", "another tenant's contact is not touched");
}

#[tokio::test]
async fn messenger_deliveries_move_rows_and_inbound_messages_open_the_window() {
    let fake = FakeProvider::start(Reply::json(200, json!({"recipient_id": "psid-7", "message_id": "m_777"}))).await;
    let m: HashMap<String, String> = [
        ("MESSENGER_PAGE_TOKEN", "page"),
        ("MESSENGER_BASE_URL", fake.url.as_str()),
        ("MESSENGER_APP_SECRET", APP_SECRET),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let s = TestServer::start_with_providers(
        fast_settings(),
        Default::default(),
        4,
        &ProviderConfig::from_map(&m).unwrap(),
    )
    .await;
    let body =
        json!({"recipients": [{"messenger_psid": "psid-7"}], "messages": [{"text": "hello"}], "channel": "messenger"});
    assert_eq!(sent_row(&s, body.clone()).await["status"], "failed", "outside the window without a tag");

    let now = chrono::Utc::now().timestamp_millis();
    let inbound = json!({"object": "page", "entry": [{"id": "PAGE", "time": now, "messaging": [
        {"sender": {"id": "psid-7"}, "recipient": {"id": "PAGE"}, "timestamp": now, "message": {"mid": "m_in", "text": "hi"}}]}]});
    let post = |v: &Value, sig: Option<String>| {
        let mut req = s.http.post(s.url("/v1/providers/messenger/events")).body(v.to_string());
        if let Some(sig) = sig {
            req = req.header("x-hub-signature-256", sig);
        }
        req.send()
    };
    assert_eq!(post(&inbound, None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let ok = post(&inbound, Some(hub_signature(APP_SECRET, inbound.to_string().as_bytes()))).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);

    let row = sent_row(&s, body).await;
    assert_eq!((row["status"].clone(), row["external_message_id"].clone()), (json!("sent"), json!("m_777")));
    let delivery = json!({"object": "page", "entry": [{"id": "PAGE", "time": now, "messaging": [
        {"sender": {"id": "psid-7"}, "recipient": {"id": "PAGE"}, "delivery": {"mids": ["m_777"], "watermark": now}}]}]});
    let answer: Value = post(&delivery, Some(hub_signature(APP_SECRET, delivery.to_string().as_bytes())))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["applied"]["moved"], 1, "{answer}");
    assert_eq!(row_status(&s, &row).await, "delivered");
}
