//! The `webhook` channel: a signed JSON `POST` to the bot backend's URL, per the Standard
//! Webhooks spec (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`).
//! It carries plain messages and CSML-style flow triggers. The URL is SSRF-checked and the
//! client never follows redirects.

use async_trait::async_trait;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::json;

use std::sync::Arc;

use super::config::WebhookConfig;
use super::http;
use super::{OutboundMessage, Provider, ProviderError, ProviderReceipt};
use crate::domain::TenantId;
use crate::ports::WebhookEndpoints;

/// Posts to the tenant's own endpoint (`PUT /v1/webhook`), else to the deployment's
/// (`HERALD_WEBHOOK_URL`); a tenant with neither gets the sandbox, as every unconfigured channel does.
pub struct Webhook {
    http: reqwest::Client,
    allow_loopback: bool,
    endpoints: Arc<dyn WebhookEndpoints>,
    default: Option<(url::Url, Vec<u8>)>,
    fallback: Arc<dyn Provider>,
}

/// The signing key of a `whsec_…` secret (base64 after the prefix).
pub fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "HERALD_WEBHOOK_SECRET must be whsec_ followed by base64".to_string())
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

impl Webhook {
    pub fn new(
        default: Option<&WebhookConfig>,
        endpoints: Arc<dyn WebhookEndpoints>,
        fallback: Arc<dyn Provider>,
        allow_loopback: bool,
        timeout: std::time::Duration,
    ) -> Result<Webhook, String> {
        let default = match default {
            Some(c) => Some((
                crate::net::ssrf::check_url(&c.url, allow_loopback).map_err(|e| format!("HERALD_WEBHOOK_URL: {e}"))?,
                signing_key(c.secret.expose())?,
            )),
            None => None,
        };
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(std::time::Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(crate::net::ssrf::PublicResolver { allow_loopback }))
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Webhook { http, allow_loopback, endpoints, default, fallback })
    }

    /// The URL and signing key for a tenant, if it or the deployment has one.
    async fn endpoint(&self, tenant: &TenantId) -> Result<Option<(url::Url, Vec<u8>)>, ProviderError> {
        let own = self.endpoints.get_webhook(tenant).await.map_err(|e| ProviderError::Transient {
            code: Some("store".into()),
            message: e.to_string(),
            retry_after: None,
        })?;
        let Some(e) = own else { return Ok(self.default.clone()) };
        let refused = |m: String| ProviderError::Permanent {
            code: Some("ssrf".into()),
            message: format!("webhook URL refused: {m}"),
        };
        let url = crate::net::ssrf::check_url(&e.url, self.allow_loopback).map_err(|r| refused(r.0))?;
        let key = signing_key(&e.secret).map_err(|m| ProviderError::Permanent { code: None, message: m })?;
        Ok(Some((url, key)))
    }
}

/// A new signing secret: `whsec_` and 24 random bytes in base64.
pub fn new_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The event body: what the bot backend receives.
pub fn event(m: &OutboundMessage) -> serde_json::Value {
    let (kind, mut data) = match &m.flow {
        Some(f) => ("flow.trigger", json!({"flow_id": f.flow_id, "close_flows": f.close_flows})),
        None => ("message.send", json!({"text": m.text})),
    };
    data["user_id"] = json!(m.to);
    data["request_id"] = json!(m.request_id);
    data["row_id"] = json!(m.row_id);
    data["tenant_id"] = json!(m.tenant_id);
    if !m.metadata.is_empty() {
        data["metadata"] = json!(m.metadata);
    }
    json!({"type": kind, "timestamp": crate::domain::now(), "data": data})
}

#[async_trait]
impl Provider for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, m: &OutboundMessage) -> Result<ProviderReceipt, ProviderError> {
        let Some((url, key)) = self.endpoint(&m.tenant_id).await? else { return self.fallback.send(m).await };
        // DNS can change: check where the host points now (the client's resolver checks the
        // connection again).
        crate::net::ssrf::check_resolved(&url, self.allow_loopback).await.map_err(|e| ProviderError::Permanent {
            code: Some("ssrf".into()),
            message: format!("webhook URL refused: {e}"),
        })?;
        let body = event(m).to_string();
        // The row id is the webhook id: stable across retries, so the receiver can drop a repeat.
        let ts = crate::domain::now().timestamp();
        let req = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &m.row_id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sign(&key, &m.row_id, ts, &body))
            .body(body);
        let answer = http::send("webhook", req).await?;
        match answer.status {
            200..=299 => Ok(ProviderReceipt { external_message_id: m.row_id.clone() }),
            300..=399 => Err(ProviderError::Permanent {
                code: Some(format!("http_{}", answer.status)),
                message: "the webhook answered with a redirect, which Herald does not follow".into(),
            }),
            s if answer.transient_status() => Err(ProviderError::Transient {
                code: Some(format!("http_{s}")),
                message: format!("the webhook answered HTTP {s}"),
                retry_after: answer.retry_after,
            }),
            s => Err(ProviderError::Permanent {
                code: Some(format!("http_{s}")),
                message: format!("the webhook answered HTTP {s}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        let key = signing_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, r#"{"test": 2432232314}"#),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(signing_key("whsec_***").is_err());
    }
}
