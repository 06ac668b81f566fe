//! Slack through the Web API: `POST /api/chat.postMessage`, form-encoded (as Slack's spec
//! defines it), bot token as a bearer. A 429 names `Retry-After`.

use async_trait::async_trait;
use serde_json::json;

use super::config::SlackConfig;
use super::http;
use super::{OutboundMessage, Provider, ProviderError, ProviderReceipt};

pub struct Slack {
    http: reqwest::Client,
    config: SlackConfig,
}

impl Slack {
    pub fn new(http: reqwest::Client, config: SlackConfig) -> Slack {
        Slack { http, config }
    }
}

#[async_trait]
impl Provider for Slack {
    fn name(&self) -> &'static str {
        "slack"
    }

    async fn send(&self, m: &OutboundMessage) -> Result<ProviderReceipt, ProviderError> {
        let c = &self.config;
        let req = self
            .http
            .post(format!("{}/api/chat.postMessage", c.base_url))
            .bearer_auth(c.bot_token.expose())
            .form(&[("channel", m.to.as_str()), ("text", m.text.as_str())]);
        let answer = http::send("slack", req).await?;
        if answer.status == 429 {
            return Err(ProviderError::Transient {
                code: Some("ratelimited".into()),
                message: "Slack is rate limiting this app".into(),
                retry_after: answer.retry_after,
            });
        }
        let b = &answer.body;
        if b["ok"] == json!(true) {
            return match (b["channel"].as_str(), b["ts"].as_str()) {
                (Some(ch), Some(ts)) => Ok(ProviderReceipt { external_message_id: format!("{ch}:{ts}") }),
                _ => Err(answer.unreadable("slack")),
            };
        }
        let Some(error) = b["error"].as_str() else { return Err(answer.unreadable("slack")) };
        Err(match error {
            // Slack documents both spellings: `ratelimited` for most methods, `rate_limited`
            // (HTTP 200, `ok: false`) when the app posts too fast to one channel.
            "ratelimited"
            | "rate_limited"
            | "internal_error"
            | "fatal_error"
            | "service_unavailable"
            | "request_timeout" => ProviderError::Transient {
                code: Some(error.into()),
                message: format!("Slack: {error}"),
                retry_after: answer.retry_after,
            },
            _ if answer.transient_status() => ProviderError::Transient {
                code: Some(error.into()),
                message: format!("Slack: {error}"),
                retry_after: answer.retry_after,
            },
            _ => ProviderError::Permanent { code: Some(error.into()), message: format!("Slack: {error}") },
        })
    }
}
