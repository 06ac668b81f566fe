//! Log hygiene: the logs of a whole broadcast (ingest, delivery on every channel, a provider
//! failure, callbacks) never carry a full phone number, email address, API key or provider secret.

use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::providers::config::ProviderConfig;
use herald_tests::fake::{FakeProvider, Reply};
use herald_tests::{fast_settings, TestServer};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_full_broadcast_logs_no_personal_data_or_secrets() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .json()
        .with_writer(move || writer.clone())
        .try_init()
        .expect("the only subscriber in this test binary");

    let fake = FakeProvider::start(Reply::json(201, json!({"sid": "SMlog"}))).await;
    let pairs = [
        ("TWILIO_ACCOUNT_SID", "AC1"),
        ("TWILIO_AUTH_TOKEN", "twilio-auth-token-SECRET"),
        ("TWILIO_FROM", "+15005550006"),
        ("TWILIO_BASE_URL", fake.url.as_str()),
    ];
    let m = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let s = TestServer::start_with_providers(
        fast_settings(),
        Default::default(),
        4,
        &ProviderConfig::from_map(&m).unwrap(),
    )
    .await;
    // A provider's error text may quote the recipient; it is logged masked like everything else.
    fake.script([Reply::json(
        500,
        json!({"code": 20500, "message": "Internal error sending to +14155550199 / +447911123456 / ada.lovelace@example.com"}),
    )]);

    let (_, answer) = s
        .post(
            "/v1/broadcasts",
            json!({"recipients": [
                {"phone": "+14155550199", "name": "Ada Lovelace"},
                {"email": "ada.lovelace@example.com"},
                {"phone": "+447911123456", "email": "grace@example.org"}
            ], "messages": [{"text": "hello"}], "priority": ["sms", "email"]}),
        )
        .await;
    s.wait_terminal(answer["request_id"].as_str().unwrap(), Duration::from_secs(10)).await;
    // A refused request and a bad key are logged too.
    s.post("/v1/broadcasts", json!({"recipients": [{"phone": "+14155550188"}], "messages": []})).await;
    let _ = s.http.get(s.url("/v1/templates")).bearer_auth("hk_not_a_real_key_but_long_enough_000").send().await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("sending"), "the broadcast was logged at all");
    assert!(logs.contains("+1415•••••99"), "phones appear masked");
    for secret in [
        "+14155550199",
        "14155550199",
        "+447911123456",
        "+14155550188",
        "ada.lovelace@example.com",
        "grace@example.org",
        "twilio-auth-token-SECRET",
        s.key.as_str(),
        "hk_not_a_real_key_but_long_enough_000",
    ] {
        assert!(!logs.contains(secret), "the logs carry {secret:?}");
    }
}
