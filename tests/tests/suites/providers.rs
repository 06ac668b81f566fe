//! Each channel provider against a loopback fake: the exact request (method, path, auth header,
//! body) for text, template and media sends, and each error class (throttle, permanent, 5xx,
//! timeout, malformed body) ending in the right row status.

use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

use herald::providers::config::ProviderConfig;
use herald_tests::fake::{FakeProvider, Reply};
use herald_tests::{fast_settings, tenant, TestServer};

const WAIT: Duration = Duration::from_secs(20);

fn config(pairs: &[(&str, &str)]) -> ProviderConfig {
    let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    ProviderConfig::from_map(&m).unwrap()
}

async fn server(pairs: &[(&str, &str)], timeout: Duration) -> TestServer {
    let mut settings = fast_settings();
    settings.provider_timeout = timeout;
    // Room for the longest scripted run of failures (five) before the attempt that succeeds.
    settings.max_attempts = 8;
    TestServer::start_with_providers(settings, Default::default(), 4, &config(pairs)).await
}

async fn send(s: &TestServer, body: Value) -> Value {
    let (status, answer) = s.post("/v1/broadcasts", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let done = s.wait_terminal(answer["request_id"].as_str().unwrap(), WAIT).await;
    done["recipients"][0].clone()
}

/// Waits until the first row of the request shows `status`.
async fn wait_status(s: &TestServer, body: Value, status: &str) -> Value {
    let (_, answer) = s.post("/v1/broadcasts", body).await;
    let id = answer["request_id"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, b) = s.get(&format!("/v1/broadcasts/{id}")).await;
        if b["recipients"][0]["status"] == status {
            return b["recipients"][0].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "never reached {status}: {}", b["recipients"][0]);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ------------------------------------------------------------------ WhatsApp

async fn whatsapp(fake: &FakeProvider, timeout: Duration) -> TestServer {
    let s = server(
        &[
            ("WHATSAPP_TOKEN", "wa-token"),
            ("WHATSAPP_PHONE_NUMBER_ID", "1055"),
            ("WHATSAPP_BASE_URL", &fake.url),
            // Retries of one row go to one number; the default 6 s spacing would slow the test.
            ("WHATSAPP_RECIPIENT_SPACING_MS", "10"),
        ],
        timeout,
    )
    .await;
    s.put("/v1/templates/offer", json!({"channel": "whatsapp", "body": "{{1}} off until {{2}}", "header": {"type": "image"}, "whatsapp": {"name": "festival_offer", "language": "en_US"}})).await;
    s.put("/v1/templates/invoice", json!({"channel": "whatsapp", "body": "Invoice {{1}}", "header": {"type": "document"}, "whatsapp": {"name": "invoice", "language": "en"}})).await;
    s
}

fn wa_ok(id: &str) -> Reply {
    Reply::json(
        200,
        json!({"messaging_product": "whatsapp", "contacts": [{"input": "14155550123", "wa_id": "14155550123"}], "messages": [{"id": id}]}),
    )
}

fn wa_error(status: u16, code: i64, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "A1"}}),
    )
}

#[tokio::test]
async fn whatsapp_template_with_media_header_is_the_documented_request() {
    let fake = FakeProvider::start(wa_ok("wamid.HBgL1")).await;
    let s = whatsapp(&fake, Duration::from_secs(2)).await;
    let row = send(
        &s,
        json!({"recipients": [{"phone": "+14155550123"}], "template": "offer", "body_params": ["20%", "Friday"], "media": {"link": "https://example.com/o.png"}}),
    )
    .await;
    assert_eq!((row["status"].clone(), row["external_message_id"].clone()), (json!("sent"), json!("wamid.HBgL1")));
    assert_eq!(row["provider"], "whatsapp");
    let r = &fake.requests()[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/v23.0/1055/messages"));
    assert_eq!(r.headers["authorization"], "Bearer wa-token");
    assert_eq!(
        r.json(),
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "14155550123", "type": "template",
               "template": {"name": "festival_offer", "language": {"code": "en_US"}, "components": [
                   {"type": "header", "parameters": [{"type": "image", "image": {"link": "https://example.com/o.png"}}]},
                   {"type": "body", "parameters": [{"type": "text", "text": "20%"}, {"type": "text", "text": "Friday"}]}]}})
    );

    send(&s, json!({"recipients": [{"phone": "+14155550123"}], "template": "invoice", "body_params": ["42"], "media": {"link": "https://example.com/i.pdf", "filename": "invoice-42.pdf"}})).await;
    assert_eq!(
        fake.requests()[1].json()["template"]["components"][0],
        json!({"type": "header", "parameters": [{"type": "document", "document": {"link": "https://example.com/i.pdf", "filename": "invoice-42.pdf"}}]})
    );
}

#[tokio::test]
async fn whatsapp_free_form_text_inside_the_window_is_a_text_message() {
    let fake = FakeProvider::start(wa_ok("wamid.T1")).await;
    let s = whatsapp(&fake, Duration::from_secs(2)).await;
    let mut c = herald::domain::Contact::new("ada".into());
    c.phone = Some(herald::domain::Phone::parse("+14155550123").unwrap());
    c.last_inbound.insert(herald::domain::Channel::Whatsapp, chrono::Utc::now() - chrono::Duration::hours(2));
    s.herald().contacts.put_contact(&tenant("default"), &c).await.unwrap();
    let row = send(
        &s,
        json!({"recipients": [{"contact_id": "ada"}], "messages": [{"text": "Hello Ada"}], "channel": "whatsapp"}),
    )
    .await;
    assert_eq!(row["status"], "sent");
    assert_eq!(
        fake.requests()[0].json(),
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "14155550123", "type": "text", "text": {"preview_url": false, "body": "Hello Ada"}})
    );
}

#[tokio::test]
async fn whatsapp_errors_are_classified_by_metas_code() {
    let fake = FakeProvider::start(wa_ok("wamid.OK")).await;
    let s = whatsapp(&fake, Duration::from_millis(300)).await;
    // A number per send: WhatsApp's per-recipient spacing would otherwise pace the sends.
    let body = |n: u32| json!({"recipients": [{"phone": format!("+1415555{n:04}")}], "template": "invoice", "body_params": ["1"], "media": {"link": "https://example.com/i.pdf"}});

    // Window closed: final, with the reason.
    fake.script([wa_error(400, 131047, "Re-engagement message")]);
    let row = send(&s, body(1)).await;
    assert_eq!(row["status"], "failed");
    assert!(row["error_message"].as_str().unwrap().contains("template required"), "{row}");

    // Throttles, a 5xx, a timeout and an unreadable 502 are retried until the send goes through.
    fake.script([
        wa_error(400, 130429, "Rate limit hit"),
        wa_error(400, 131056, "Pair rate limit"),
        wa_error(500, 1, "Unknown"),
        wa_ok("wamid.SLOW").after(Duration::from_secs(1)),
        Reply::raw(502, "<html>bad gateway</html>"),
    ]);
    let row = send(&s, body(2)).await;
    assert_eq!((row["status"].clone(), row["external_message_id"].clone()), (json!("sent"), json!("wamid.OK")));
    assert_eq!(row["attempts"], 6);

    // Another 4xx is final and keeps Meta's code and message.
    fake.script([wa_error(400, 132001, "Template name does not exist in the translation")]);
    let row = send(&s, body(3)).await;
    assert_eq!(row["status"], "failed");
    assert_eq!(row["error_message"], "whatsapp: [132001] Template name does not exist in the translation");

    // A 200 Herald cannot read may have been sent: it is not retried (no duplicate).
    fake.script([Reply::raw(200, "{\"messages\": []}")]);
    let row = send(&s, body(4)).await;
    assert_eq!((row["status"].clone(), row["attempts"].clone()), (json!("failed"), json!(1)));
}

// ------------------------------------------------------------------ SMS (Twilio)

async fn twilio(fake: &FakeProvider) -> TestServer {
    server(
        &[
            ("TWILIO_ACCOUNT_SID", "AC123"),
            ("TWILIO_AUTH_TOKEN", "tw-secret"),
            ("TWILIO_FROM", "+15005550006"),
            ("TWILIO_BASE_URL", &fake.url),
            ("PUBLIC_URL", "https://herald.example.com"),
        ],
        Duration::from_secs(2),
    )
    .await
}

fn tw_error(status: u16, code: i64, message: &str) -> Reply {
    Reply::json(
        status,
        json!({"code": code, "message": message, "more_info": "https://www.twilio.com/docs/errors", "status": status}),
    )
}

#[tokio::test]
async fn sms_is_a_form_encoded_twilio_message_with_basic_auth_and_status_callback() {
    let fake = FakeProvider::start(Reply::json(201, json!({"sid": "SM1", "status": "queued"}))).await;
    let s = twilio(&fake).await;
    let row = send(
        &s,
        json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "Code 123 & more"}], "channel": "sms"}),
    )
    .await;
    assert_eq!((row["status"].clone(), row["external_message_id"].clone()), (json!("sent"), json!("SM1")));
    let r = &fake.requests()[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/2010-04-01/Accounts/AC123/Messages.json"));
    assert_eq!(r.headers["authorization"], format!("Basic {}", base64_of("AC123:tw-secret")));
    assert_eq!(r.headers["content-type"], "application/x-www-form-urlencoded");
    assert_eq!(
        r.form(),
        vec![
            ("To".into(), "+14155550123".into()),
            ("From".into(), "+15005550006".into()),
            ("Body".into(), "Code 123 & more".into()),
            ("StatusCallback".into(), "https://herald.example.com/v1/providers/sms/events".into())
        ]
    );
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn a_body_longer_than_its_channel_takes_is_refused_at_ingest_or_fails_before_the_provider() {
    let fake = FakeProvider::start(Reply::json(201, json!({"sid": "SM1"}))).await;
    let s = twilio(&fake).await;
    let to = json!([{"phone": "+14155550123"}]);
    // Known at ingest: the send's channel, or the template's.
    let (status, body) = s
        .post("/v1/broadcasts", json!({"recipients": to, "messages": [{"text": "x".repeat(1601)}], "channel": "sms"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["fields"][0]["field"], "messages[0].text");
    assert_eq!(body["error"]["fields"][0]["message"], "is 1601 characters long; sms takes at most 1600");
    s.put(
        "/v1/templates/long-dm",
        json!({"channel": "messenger", "body": format!("{} {{{{name}}}}", "y".repeat(2001))}),
    )
    .await;
    let (status, body) =
        s.post("/v1/broadcasts", json!({"recipients": [{"messenger_psid": "p1"}], "template": "long-dm"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["fields"][0]["field"], "template");
    let message = body["error"]["fields"][0]["message"].as_str().unwrap();
    assert!(message.contains("2002 characters") && message.contains("messenger takes at most 2000"), "{message}");
    let fits = s
        .post("/v1/broadcasts", json!({"recipients": to, "messages": [{"text": "x".repeat(1600)}], "channel": "sms"}))
        .await;
    assert_eq!(fits.0, StatusCode::ACCEPTED, "exactly the limit is fine: {}", fits.1);
    s.wait_terminal(fits.1["request_id"].as_str().unwrap(), WAIT).await;
    assert_eq!(fake.requests().len(), 1);

    // Known only once the recipient's values fill the text: the row fails, and Twilio is not asked.
    let long = "z".repeat(1000);
    let row = send(
        &s,
        json!({"recipients": [{"phone": "+14155550123", "variables": {"a": long, "b": long}}], "messages": [{"text": "{{a}}{{b}}"}], "channel": "sms"}),
    )
    .await;
    assert_eq!(row["status"], "failed", "{row}");
    assert_eq!(row["error_message"], "the message is 2000 characters long once filled in; sms takes at most 1600");
    assert_eq!(fake.requests().len(), 1, "the provider was not called for the long one");
}

#[tokio::test]
async fn twilio_errors_retry_fail_or_unsubscribe() {
    let fake = FakeProvider::start(Reply::json(201, json!({"sid": "SM9"}))).await;
    let s = twilio(&fake).await;
    s.put("/v1/contacts/opted-out", json!({"phone": "+14155550124"})).await;

    fake.script([tw_error(429, 20429, "Too Many Requests"), tw_error(503, 20003, "Service unavailable")]);
    let row =
        send(&s, json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "x"}], "channel": "sms"}))
            .await;
    assert_eq!((row["status"].clone(), row["attempts"].clone()), (json!("sent"), json!(3)));

    fake.script([tw_error(400, 21211, "The 'To' number is not a valid phone number.")]);
    let row =
        send(&s, json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "x"}], "channel": "sms"}))
            .await;
    assert_eq!(row["status"], "failed");
    assert!(row["error_message"].as_str().unwrap().contains("21211"));

    fake.script([tw_error(400, 21610, "Attempt to send to unsubscribed recipient")]);
    let row =
        send(&s, json!({"recipients": [{"contact_id": "opted-out"}], "messages": [{"text": "x"}], "channel": "sms"}))
            .await;
    assert_eq!(row["status"], "unsubscribed");
    assert_eq!(s.get("/v1/contacts/opted-out").await.1["unsubscribed"], true, "the contact is marked too");
    let row = send(
        &s,
        json!({"recipients": [{"contact_id": "opted-out"}], "messages": [{"text": "again"}], "channel": "sms"}),
    )
    .await;
    assert_eq!(row["status"], "skipped", "an unsubscribed contact is not sent to again");
}

// ------------------------------------------------------------------ Messenger, Telegram, Slack

#[tokio::test]
async fn messenger_sends_a_tagged_message_outside_the_window() {
    let fake = FakeProvider::start(Reply::json(200, json!({"recipient_id": "psid-1", "message_id": "m_1"}))).await;
    let s =
        server(&[("MESSENGER_PAGE_TOKEN", "page-token"), ("MESSENGER_BASE_URL", &fake.url)], Duration::from_secs(2))
            .await;
    let row = send(
        &s,
        json!({"recipients": [{"messenger_psid": "psid-1"}], "messages": [{"text": "Your order shipped"}], "messaging_tag": "POST_PURCHASE_UPDATE"}),
    )
    .await;
    assert_eq!((row["status"].clone(), row["external_message_id"].clone()), (json!("sent"), json!("m_1")));
    let r = &fake.requests()[0];
    assert_eq!(r.path, "/v23.0/me/messages");
    assert_eq!(r.headers["authorization"], "Bearer page-token");
    assert_eq!(
        r.json(),
        json!({"recipient": {"id": "psid-1"}, "messaging_type": "MESSAGE_TAG", "tag": "POST_PURCHASE_UPDATE", "message": {"text": "Your order shipped"}})
    );
}

#[tokio::test]
async fn telegram_sends_and_honours_retry_after() {
    let fake =
        FakeProvider::start(Reply::json(200, json!({"ok": true, "result": {"message_id": 77, "chat": {"id": 9001}}})))
            .await;
    let s =
        server(&[("TELEGRAM_BOT_TOKEN", "123:ABC"), ("TELEGRAM_BASE_URL", &fake.url)], Duration::from_secs(2)).await;
    let row = send(&s, json!({"recipients": [{"telegram_chat_id": "9001"}], "messages": [{"text": "hi"}]})).await;
    assert_eq!((row["status"].clone(), row["external_message_id"].clone()), (json!("sent"), json!("9001:77")));
    let r = &fake.requests()[0];
    assert_eq!(r.path, "/bot123:ABC/sendMessage");
    assert_eq!(r.json(), json!({"chat_id": "9001", "text": "hi"}));

    fake.script([Reply::json(429, json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 7", "parameters": {"retry_after": 7}}))]);
    let before = chrono::Utc::now();
    let row = wait_status(
        &s,
        json!({"recipients": [{"telegram_chat_id": "9002"}], "messages": [{"text": "again"}]}),
        "retrying",
    )
    .await;
    let next = chrono::DateTime::parse_from_rfc3339(row["next_attempt_at"].as_str().unwrap()).unwrap();
    assert!(next >= before + chrono::Duration::seconds(7), "retry_after honoured: {next} vs {before}: {row}");

    fake.script([Reply::json(
        400,
        json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"}),
    )]);
    let row = send(&s, json!({"recipients": [{"telegram_chat_id": "404"}], "messages": [{"text": "x"}]})).await;
    assert_eq!(row["status"], "failed");
    assert_eq!(row["error_message"], "telegram: [400] Bad Request: chat not found");
}

#[tokio::test]
async fn slack_posts_a_form_with_the_bot_token_and_honours_retry_after() {
    let fake =
        FakeProvider::start(Reply::json(200, json!({"ok": true, "channel": "C123", "ts": "1700000000.000100"}))).await;
    let s = server(&[("SLACK_BOT_TOKEN", "xoxb-1"), ("SLACK_BASE_URL", &fake.url)], Duration::from_secs(2)).await;
    let row = send(&s, json!({"recipients": [{"slack_id": "C123"}], "messages": [{"text": "deploy done"}]})).await;
    assert_eq!(
        (row["status"].clone(), row["external_message_id"].clone()),
        (json!("sent"), json!("C123:1700000000.000100"))
    );
    let r = &fake.requests()[0];
    assert_eq!(r.path, "/api/chat.postMessage");
    assert_eq!(r.headers["authorization"], "Bearer xoxb-1");
    assert_eq!(r.form(), vec![("channel".into(), "C123".into()), ("text".into(), "deploy done".into())]);

    fake.script([Reply::raw(429, "").header("retry-after", "9")]);
    let before = chrono::Utc::now();
    let row =
        wait_status(&s, json!({"recipients": [{"slack_id": "C124"}], "messages": [{"text": "x"}]}), "retrying").await;
    let next = chrono::DateTime::parse_from_rfc3339(row["next_attempt_at"].as_str().unwrap()).unwrap();
    assert!(next >= before + chrono::Duration::seconds(9));

    fake.script([Reply::json(200, json!({"ok": false, "error": "channel_not_found"}))]);
    let row = send(&s, json!({"recipients": [{"slack_id": "C404"}], "messages": [{"text": "x"}]})).await;
    assert_eq!(
        (row["status"].clone(), row["error_message"].clone()),
        (json!("failed"), json!("slack: [channel_not_found] Slack: channel_not_found"))
    );
}

#[tokio::test]
async fn slack_rate_limited_with_http_200_is_retried() {
    let fake =
        FakeProvider::start(Reply::json(200, json!({"ok": true, "channel": "C9", "ts": "1700000000.000200"}))).await;
    let s = server(&[("SLACK_BOT_TOKEN", "xoxb-1"), ("SLACK_BASE_URL", &fake.url)], Duration::from_secs(2)).await;
    // Slack answers a too-fast post to one channel with HTTP 200 and `rate_limited`.
    fake.script([
        Reply::json(200, json!({"ok": false, "error": "rate_limited"})),
        Reply::json(200, json!({"ok": false, "error": "ratelimited"})),
    ]);
    let row = send(&s, json!({"recipients": [{"slack_id": "C9"}], "messages": [{"text": "x"}]})).await;
    assert_eq!((row["status"].clone(), row["attempts"].clone()), (json!("sent"), json!(3)), "{row}");
    assert_eq!(fake.requests().len(), 3);
}

// ------------------------------------------------------------------ pacing

#[tokio::test]
async fn a_provider_is_paced_to_its_rate_and_throttled_rows_keep_their_attempts() {
    let fake = FakeProvider::start(Reply::json(201, json!({"sid": "SMp"}))).await;
    let s = server(
        &[
            ("TWILIO_ACCOUNT_SID", "AC1"),
            ("TWILIO_AUTH_TOKEN", "t"),
            ("TWILIO_FROM", "+15005550006"),
            ("TWILIO_BASE_URL", &fake.url),
            ("SMS_RATE", "2"),
            ("SMS_BURST", "1"),
        ],
        Duration::from_secs(2),
    )
    .await;
    let recipients: Vec<Value> = (0..6).map(|i| json!({"phone": format!("+1415555{:04}", 100 + i)})).collect();
    let (_, answer) = s
        .post("/v1/broadcasts", json!({"recipients": recipients, "messages": [{"text": "x"}], "channel": "sms"}))
        .await;
    let done = s.wait_terminal(answer["request_id"].as_str().unwrap(), WAIT).await;
    assert_eq!(done["summary"]["by_status"], json!({"sent": 6}), "throttling is never a failure");
    for r in done["recipients"].as_array().unwrap() {
        assert_eq!(r["attempts"], 1, "a throttled turn does not use up an attempt: {r}");
    }
    let mut at: Vec<std::time::Instant> = fake.requests().iter().map(|r| r.at).collect();
    at.sort();
    let span = at[5].duration_since(at[0]).as_secs_f64();
    let rate = 5.0 / span;
    // Never faster than the setting (with the burst's slack); the lower bound only says the rows
    // were paced rather than stuck: a throttled row's job comes back through the queue, which on
    // a loaded machine (this binary runs every embedded suite at once) adds its own delay.
    assert!((1.0..=2.2).contains(&rate), "achieved {rate:.2} msg/s against a setting of 2/s");
}

#[tokio::test]
async fn whatsapp_spaces_messages_to_one_number() {
    let fake = FakeProvider::start(wa_ok("wamid.S")).await;
    let s = server(
        &[
            ("WHATSAPP_TOKEN", "t"),
            ("WHATSAPP_PHONE_NUMBER_ID", "1"),
            ("WHATSAPP_BASE_URL", &fake.url),
            ("WHATSAPP_RECIPIENT_SPACING_MS", "600"),
        ],
        Duration::from_secs(2),
    )
    .await;
    s.put(
        "/v1/templates/t",
        json!({"channel": "whatsapp", "body": "hi", "whatsapp": {"name": "hello", "language": "en"}}),
    )
    .await;
    let (_, answer) = s
        .post(
            "/v1/broadcasts",
            json!({"recipients": [{"phone": "+14155550123"}, {"phone": "+14155550123"}], "template": "t"}),
        )
        .await;
    let done = s.wait_terminal(answer["request_id"].as_str().unwrap(), WAIT).await;
    assert_eq!(done["summary"]["by_status"], json!({"sent": 2}));
    let r = fake.requests();
    let gap = r[1].at.duration_since(r[0].at);
    assert!(gap >= Duration::from_millis(590), "two messages to one number {gap:?} apart");
}

// ------------------------------------------------------------------ webhook (Standard Webhooks)

const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test]
async fn a_flow_trigger_is_a_signed_standard_webhook() {
    let fake = FakeProvider::start(Reply::json(204, json!(null))).await;
    let s = server(
        &[("WEBHOOK_URL", &format!("{}/bot/events", fake.url)), ("WEBHOOK_SECRET", WHSEC)],
        Duration::from_secs(2),
    )
    .await;
    let row = send(&s, json!({"recipients": [{"webhook_user_id": "user-42"}], "flow": {"flow_id": "onboarding"}, "metadata": {"k": "v"}})).await;
    assert_eq!((row["status"].clone(), row["channel"].clone()), (json!("sent"), json!("webhook")));
    let r = &fake.requests()[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/bot/events"));
    assert_eq!(r.headers["webhook-id"], row["id"].as_str().unwrap(), "the row id: stable across retries");
    let ts: i64 = r.headers["webhook-timestamp"].parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 10);
    let key = herald::providers::webhook::signing_key(WHSEC).unwrap();
    assert_eq!(
        r.headers["webhook-signature"],
        herald::providers::webhook::sign(&key, &r.headers["webhook-id"], ts, &r.body)
    );
    let body = r.json();
    assert_eq!(body["type"], "flow.trigger");
    assert_eq!(body["data"]["flow_id"], "onboarding");
    assert_eq!(body["data"]["close_flows"], true);
    assert_eq!(body["data"]["user_id"], "user-42");
    assert_eq!(body["data"]["metadata"], json!({"k": "v"}));
}

#[tokio::test]
async fn a_webhook_redirect_is_not_followed() {
    let fake =
        FakeProvider::start(Reply::raw(302, "").header("location", "http://169.254.169.254/latest/meta-data")).await;
    let s = server(&[("WEBHOOK_URL", &fake.url), ("WEBHOOK_SECRET", WHSEC)], Duration::from_secs(2)).await;
    let row = send(&s, json!({"recipients": [{"webhook_user_id": "u"}], "messages": [{"text": "x"}]})).await;
    assert_eq!(row["status"], "failed");
    assert!(row["error_message"].as_str().unwrap().contains("redirect"));
    assert_eq!(fake.requests().len(), 1, "one request, and no second one to the redirect target");
}

#[tokio::test]
async fn webhook_urls_are_checked_against_ssrf() {
    use herald::providers::config::{Secret, WebhookConfig};
    use herald::providers::webhook::Webhook;
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = herald::adapters::embedded::open(dir.path(), 10).unwrap();
    let sandbox = std::sync::Arc::new(herald::providers::sandbox::Sandbox::new(store.clone(), Default::default()));
    let build = |url: &str| {
        let cfg = WebhookConfig { url: url.into(), secret: Secret::new(WHSEC) };
        Webhook::new(Some(&cfg), store.clone(), sandbox.clone(), false, Duration::from_secs(1))
    };
    for bad in [
        "http://bot.example.com/hook",
        "https://10.0.0.8/hook",
        "https://169.254.169.254/",
        "https://[::1]/",
        "http://127.0.0.1:9/",
    ] {
        let err = build(bad).err().unwrap_or_else(|| panic!("{bad} accepted"));
        assert!(err.starts_with("HERALD_WEBHOOK_URL"), "{err}");
    }
    // A name that resolves to loopback is refused when it is sent to, with the reason.
    let hook = build("https://localhost:9/hook").unwrap();
    let m = herald::providers::OutboundMessage {
        tenant_id: "t".into(),
        request_id: "r".into(),
        row_id: "rcp_1".into(),
        channel: herald::domain::Channel::Webhook,
        to: "u".into(),
        name: None,
        text: "x".into(),
        subject: None,
        header: None,
        whatsapp_template: None,
        header_params: vec![],
        body_params: vec![],
        flow: None,
        messaging_tag: None,
        metadata: Default::default(),
    };
    use herald::providers::Provider;
    match hook.send(&m).await {
        Err(herald::providers::ProviderError::Permanent { code, message }) => {
            assert_eq!(code.as_deref(), Some("ssrf"));
            assert!(message.contains("not a public address"), "{message}");
        }
        other => panic!("a loopback name must be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn each_tenant_sets_its_own_webhook_endpoint_and_secret() {
    let fake_a = FakeProvider::start(Reply::json(200, json!({}))).await;
    let fake_b = FakeProvider::start(Reply::json(200, json!({}))).await;
    let s = TestServer::start().await;
    let key_b = s.key_for("tenant-b").await;

    // Checked against SSRF: http only to loopback (and only in local mode), no private address.
    for bad in ["http://bot.example.com/hook", "https://10.1.2.3/hook", "https://169.254.169.254/x", "not a url"] {
        let (status, body) = s.put("/v1/webhook", json!({"url": bad})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {body}");
        assert_eq!(body["error"]["fields"][0]["field"], "url");
    }
    let (status, a) = s.put("/v1/webhook", json!({"url": format!("{}/a", fake_a.url)})).await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    let secret_a = a["secret"].as_str().unwrap().to_string();
    assert!(secret_a.starts_with("whsec_"));
    let (_, shown) = s.get("/v1/webhook").await;
    assert!(shown.get("secret").is_none(), "the secret is shown once: {shown}");
    let (status, b) =
        s.call_as(&key_b, reqwest::Method::PUT, "/v1/webhook", Some(json!({"url": format!("{}/b", fake_b.url)}))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(b["secret"], a["secret"], "each tenant signs with its own secret");

    let row = send(&s, json!({"recipients": [{"webhook_user_id": "u1"}], "flow": {"flow_id": "welcome"}})).await;
    assert_eq!((row["status"].clone(), row["provider"].clone()), (json!("sent"), json!("webhook")));
    assert!(fake_b.requests().is_empty(), "tenant A's send went to tenant B's endpoint");
    let r = &fake_a.requests()[0];
    assert_eq!(r.path, "/a");
    let key = herald::providers::webhook::signing_key(&secret_a).unwrap();
    let ts: i64 = r.headers["webhook-timestamp"].parse().unwrap();
    assert_eq!(
        r.headers["webhook-signature"],
        herald::providers::webhook::sign(&key, &r.headers["webhook-id"], ts, &r.body)
    );

    // Rotating the secret answers the new one; deleting the endpoint falls back to the sandbox.
    let (status, rotated) = s.put("/v1/webhook?rotate_secret=true", json!({"url": format!("{}/a", fake_a.url)})).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(rotated["secret"], a["secret"]);
    assert_eq!(s.call(reqwest::Method::DELETE, "/v1/webhook", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(s.get("/v1/webhook").await.0, StatusCode::NOT_FOUND);
    let row = send(&s, json!({"recipients": [{"webhook_user_id": "u1"}], "flow": {"flow_id": "welcome"}})).await;
    assert!(row["external_message_id"].as_str().unwrap().starts_with("sbx_"), "{row}");
    assert_eq!(fake_a.requests().len(), 1);
}

// ------------------------------------------------------------------ every error class, every provider

/// One provider's fake-pointing settings, a recipient it serves, its success answer, and a
/// permanent refusal in its own words.
struct Case {
    name: &'static str,
    settings: Vec<(&'static str, String)>,
    recipient: Value,
    /// Fields the channel's rules need (Messenger outside the window: a tag).
    extra: Value,
    ok: Reply,
    permanent: Reply,
}

fn cases(url: &str) -> Vec<Case> {
    let u = url.to_string();
    vec![
        Case {
            name: "sms",
            settings: vec![
                ("TWILIO_ACCOUNT_SID", "AC1".into()),
                ("TWILIO_AUTH_TOKEN", "t".into()),
                ("TWILIO_FROM", "+15005550006".into()),
                ("TWILIO_BASE_URL", u.clone()),
            ],
            recipient: json!({"phone": "+14155550123"}),
            extra: json!({}),
            ok: Reply::json(201, json!({"sid": "SMok"})),
            permanent: tw_error(400, 21408, "Permission to send an SMS has not been enabled for the region"),
        },
        Case {
            name: "messenger",
            settings: vec![("MESSENGER_PAGE_TOKEN", "p".into()), ("MESSENGER_BASE_URL", u.clone())],
            recipient: json!({"messenger_psid": "psid-1"}),
            extra: json!({"messaging_tag": "ACCOUNT_UPDATE"}),
            ok: Reply::json(200, json!({"recipient_id": "psid-1", "message_id": "m_ok"})),
            permanent: wa_error(400, 100, "Invalid parameter"),
        },
        Case {
            name: "telegram",
            settings: vec![("TELEGRAM_BOT_TOKEN", "1:A".into()), ("TELEGRAM_BASE_URL", u.clone())],
            recipient: json!({"telegram_chat_id": "9001"}),
            extra: json!({}),
            ok: Reply::json(200, json!({"ok": true, "result": {"message_id": 1}})),
            permanent: Reply::json(
                403,
                json!({"ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}),
            ),
        },
        Case {
            name: "slack",
            settings: vec![("SLACK_BOT_TOKEN", "xoxb".into()), ("SLACK_BASE_URL", u.clone())],
            recipient: json!({"slack_id": "C1"}),
            extra: json!({}),
            ok: Reply::json(200, json!({"ok": true, "channel": "C1", "ts": "1.2"})),
            permanent: Reply::json(200, json!({"ok": false, "error": "not_in_channel"})),
        },
        Case {
            name: "webhook",
            settings: vec![("WEBHOOK_URL", format!("{u}/hook")), ("WEBHOOK_SECRET", WHSEC.into())],
            recipient: json!({"webhook_user_id": "u1"}),
            extra: json!({}),
            ok: Reply::json(200, json!({})),
            permanent: Reply::raw(410, "gone"),
        },
    ]
}

#[tokio::test]
async fn every_provider_retries_5xx_timeouts_and_resets_and_stops_on_a_refusal() {
    for case in cases("http://placeholder") {
        let fake = FakeProvider::start(Reply::raw(500, "unused")).await;
        let Case { name, settings, recipient, extra, ok, permanent } =
            cases(&fake.url).into_iter().find(|c| c.name == case.name).unwrap();
        let mut pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (*k, v.as_str())).collect();
        // Retries of one row go to one recipient: keep per-recipient spacing out of the way.
        let spacing = format!("{}_RECIPIENT_SPACING_MS", name.to_uppercase());
        pairs.push((&spacing, "1"));
        let s = server(&pairs, Duration::from_millis(300)).await;
        let body = |r: &Value| {
            let mut b = json!({"recipients": [r], "messages": [{"text": "x"}], "channel": name});
            b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            b
        };

        // 5xx, a timeout and a garbled 5xx are retried until the provider takes the message.
        fake.script([
            Reply::raw(503, "Service Unavailable"),
            ok.clone().after(Duration::from_secs(1)),
            Reply::raw(502, "<html>"),
            ok.clone(),
        ]);
        let row = send(&s, body(&recipient)).await;
        assert_eq!((row["status"].clone(), row["attempts"].clone()), (json!("sent"), json!(4)), "{name}: {row}");
        assert!(row["external_message_id"].is_string(), "{name}");

        // A refusal in the provider's own words is final at once.
        fake.script([permanent.clone()]);
        let row = send(&s, body(&recipient)).await;
        assert_eq!((row["status"].clone(), row["attempts"].clone()), (json!("failed"), json!(1)), "{name}: {row}");

        // A 2xx Herald cannot read is not retried: the message may have gone.
        if name != "webhook" {
            fake.script([Reply::raw(200, "not json at all")]);
            let row = send(&s, body(&recipient)).await;
            assert_eq!((row["status"].clone(), row["attempts"].clone()), (json!("failed"), json!(1)), "{name}: {row}");
        }
    }
}

#[tokio::test]
async fn an_unreachable_provider_is_retried_then_failed_with_the_reason() {
    // A port nothing listens on: every connection is refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let s = server(
        &[
            ("TELEGRAM_BOT_TOKEN", "1:A"),
            ("TELEGRAM_BASE_URL", &format!("http://{dead}")),
            ("TELEGRAM_RECIPIENT_SPACING_MS", "1"),
        ],
        Duration::from_millis(300),
    )
    .await;
    let row = send(&s, json!({"recipients": [{"telegram_chat_id": "1"}], "messages": [{"text": "x"}]})).await;
    assert_eq!((row["status"].clone(), row["attempts"].clone()), (json!("failed"), json!(8)), "{row}");
    assert!(row["error_message"].as_str().unwrap().contains("could not be reached"), "{row}");
}

#[tokio::test]
async fn an_sms_with_a_media_header_sends_its_media_url() {
    let fake = FakeProvider::start(Reply::json(201, json!({"sid": "SMm"}))).await;
    let s = twilio(&fake).await;
    s.put("/v1/templates/mms", json!({"channel": "sms", "body": "Your ticket", "header": {"type": "image"}})).await;
    let row = send(&s, json!({"recipients": [{"phone": "+14155550123"}], "template": "mms", "media": {"link": "https://example.com/t.png"}})).await;
    assert_eq!(row["status"], "sent");
    let form = fake.requests()[0].form();
    assert!(form.contains(&("MediaUrl".into(), "https://example.com/t.png".into())), "{form:?}");
}
