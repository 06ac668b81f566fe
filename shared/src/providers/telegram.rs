//! Telegram through the Bot API: `POST /bot{token}/sendMessage`. A 429 names `retry_after`.

use async_trait::async_trait;
use serde_json::json;
use std::time::Duration;

use super::config::TelegramConfig;
use super::http;
use super::{OutboundMessage, Provider, ProviderError, ProviderReceipt};

pub struct Telegram {
    http: reqwest::Client,
    config: TelegramConfig,
}

impl Telegram {
    pub fn new(http: reqwest::Client, config: TelegramConfig) -> Telegram {
        Telegram { http, config }
    }
}

#[async_trait]
impl Provider for Telegram {
    fn name(&self) -> &'static str {
        "telegram"
    }

    async fn send(&self, m: &OutboundMessage) -> Result<ProviderReceipt, ProviderError> {
        let c = &self.config;
        let url = format!("{}/bot{}/sendMessage", c.base_url, c.bot_token.expose());
        let answer =
            http::send("telegram", self.http.post(url).json(&json!({"chat_id": m.to, "text": m.text}))).await?;
        let b = &answer.body;
        if b["ok"] == json!(true) {
            return match b["result"]["message_id"].as_i64() {
                Some(id) => Ok(ProviderReceipt { external_message_id: format!("{}:{id}", m.to) }),
                None => Err(answer.unreadable("telegram")),
            };
        }
        let Some(code) = b["error_code"].as_i64() else { return Err(answer.unreadable("telegram")) };
        let message = b["description"].as_str().unwrap_or("no description").to_string();
        let retry_after = b["parameters"]["retry_after"].as_u64().map(Duration::from_secs).or(answer.retry_after);
        Err(if code == 429 || answer.transient_status() {
            ProviderError::Transient { code: Some(code.to_string()), message, retry_after }
        } else {
            ProviderError::Permanent { code: Some(code.to_string()), message }
        })
    }
}
