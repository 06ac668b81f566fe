//! Entry points for the fuzz targets (`fuzz/`) and the corpus regression test that replays their
//! corpus in `scripts/test.sh`: every parser Herald exposes to the outside must answer any input
//! without a panic, and the HTTP API never with a 5xx.

use axum::body::Body;
use axum::http::{Method, Request};
use std::path::Path;
use std::sync::Arc;
use tower::ServiceExt;

use crate::local::Local;
use crate::providers::config::ProviderConfig;

/// Every endpoint that reads a body, and how the harness authenticates to it.
const ENDPOINTS: [(&str, &str); 12] = [
    ("POST", "/v1/broadcasts"),
    ("PUT", "/v1/templates/fuzz"),
    ("PUT", "/v1/campaigns/fuzz"),
    ("PUT", "/v1/contacts/fuzz"),
    ("POST", "/v1/contacts"),
    ("POST", "/compat/csml/v1/api/broadcasts"),
    ("POST", "/compat/smax/public/bots/default/send"),
    ("POST", "/compat/invent/orgs/default/broadcasts/welcome/send"),
    ("POST", "/compat/pabbly/api/v1/broadcasts/send"),
    ("POST", "/compat/pabbly/api/v1/broadcasts"),
    ("POST", "/v1/providers/whatsapp/events"),
    ("POST", "/v1/providers/sms/events"),
];

const KEY: &str = "hk_fuzzing_key_0123456789abcdef0123";

/// A Herald on the embedded store with a template, a campaign and a contact, so inputs reach deep.
pub struct Harness {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    _local: Local,
}

impl Harness {
    pub fn new(dir: &Path) -> Harness {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let config = ProviderConfig::from_map(
            &[
                ("WHATSAPP_TOKEN", "t"),
                ("WHATSAPP_PHONE_NUMBER_ID", "1"),
                ("WHATSAPP_BASE_URL", "http://127.0.0.1:9"),
                ("WHATSAPP_APP_SECRET", "fuzz"),
                ("TWILIO_ACCOUNT_SID", "AC1"),
                ("TWILIO_AUTH_TOKEN", "fuzz"),
                ("TWILIO_FROM", "+15005550006"),
                ("TWILIO_BASE_URL", "http://127.0.0.1:9"),
                ("PUBLIC_URL", "https://herald.example.com"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        )
        .expect("config");
        let local =
            rt.block_on(Local::open_with(dir, crate::Settings::default(), Default::default(), &config)).expect("open");
        let router = crate::http::router(local.herald.clone());
        let h: Arc<crate::Herald> = local.herald.clone();
        rt.block_on(async {
            crate::service::keys::create_key(h.keys.as_ref(), "default", Some(KEY)).await.expect("key");
            let seed = |m: &str, p: &str, b: &str| {
                Request::builder()
                    .method(m)
                    .uri(p)
                    .header("authorization", format!("Bearer {KEY}"))
                    .body(Body::from(b.to_string()))
                    .unwrap()
            };
            for (m, p, b) in [
                ("PUT", "/v1/templates/welcome", r#"{"body": "Hi {{name}}", "channel": "sms"}"#),
                ("PUT", "/v1/campaigns/welcome", r#"{"name": "welcome", "template_ids": ["welcome"]}"#),
                ("PUT", "/v1/contacts/ct-1", r#"{"phone": "+14155550123", "email": "a@example.com"}"#),
            ] {
                let _ = router.clone().oneshot(seed(m, p, b)).await;
            }
        });
        Harness { rt, router, _local: local }
    }

    /// Sends `data` to the endpoint its first byte picks; returns the status code.
    pub fn run(&self, data: &[u8]) -> u16 {
        let Some((&pick, body)) = data.split_first() else { return 0 };
        let (method, path) = ENDPOINTS[pick as usize % ENDPOINTS.len()];
        let req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("method"))
            .uri(path)
            .header("authorization", format!("Bearer {KEY}"))
            .header(
                "content-type",
                if path.contains("/sms/") { "application/x-www-form-urlencoded" } else { "application/json" },
            )
            .body(Body::from(body.to_vec()))
            .expect("request");
        let router = self.router.clone();
        self.rt.block_on(async move { router.oneshot(req).await.map(|r| r.status().as_u16()).unwrap_or(0) })
    }
}

/// Runs every pure parser on `data`: strict JSON, phones, emails, template rendering, provider
/// callbacks, SES events and provider answers.
pub fn parsers(data: &[u8]) {
    let _ = crate::domain::json::parse_value(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::domain::Phone::parse(text);
        let _ = crate::domain::Email::parse(text);
        let _ = crate::net::ssrf::check_url(text, false);
        let (template, values) = text.split_once('\0').unwrap_or((text, ""));
        let positional: Vec<String> = values.split('\u{1}').map(String::from).collect();
        let _ = crate::service::render::render(template, |n| (n.len() % 2 == 0).then(|| n.to_string()), &positional);
        let _ = crate::service::render::positional_needed(template);
    }
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(data).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let _ = crate::providers::twilio::parse_callback(&params);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = crate::providers::whatsapp::parse_webhook(&v);
        let _ = crate::providers::messenger::parse_webhook(&v);
        let status = data.first().map(|b| 200 + u16::from(*b) % 400).unwrap_or(200);
        let answer = crate::providers::http::Answer {
            status,
            retry_after: None,
            body: v,
            text: String::from_utf8_lossy(data).into_owned(),
        };
        let _ = crate::providers::graph::classify_graph_error("fuzz", &answer, &[4], &[131047]);
        let _ = answer.unreadable("fuzz");
    }
}
