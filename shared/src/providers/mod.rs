//! Channel providers: one module per provider, all behind the [`Provider`] port.

pub mod config;
#[cfg(feature = "aws")]
pub mod email;
pub mod http;
pub mod messenger;
pub mod pacing;
pub mod sandbox;
pub mod signatures;
pub mod slack;
pub mod ssrf;
pub mod telegram;
pub mod twilio;
pub mod webhook;
pub mod whatsapp;

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::{Channel, FlowTrigger, HeaderKind, WhatsappTemplate};

/// A rendered message, ready for a provider.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OutboundMessage {
    pub tenant_id: String,
    pub request_id: String,
    /// The recipient row: providers that accept an idempotency key get this one.
    pub row_id: String,
    pub channel: Channel,
    /// Phone (E.164), email or channel user id.
    pub to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<RenderedHeader>,
    /// Set when the template is approved on Meta's side: send as a WhatsApp template message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whatsapp_template: Option<WhatsappTemplate>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header_params: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub body_params: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowTrigger>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messaging_tag: Option<String>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RenderedHeader {
    #[serde(rename = "type")]
    pub kind: HeaderKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// The provider accepted the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderReceipt {
    pub external_message_id: String,
}

/// The provider refused or could not be reached. `code` and `message` are the provider's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying (throttling, 5xx, timeouts); `retry_after` when the provider named a time.
    #[error("{}{message}", code.as_deref().map(|c| format!("[{c}] ")).unwrap_or_default())]
    Transient { code: Option<String>, message: String, retry_after: Option<Duration> },
    /// Retrying cannot help (invalid number, bad template).
    #[error("{}{message}", code.as_deref().map(|c| format!("[{c}] ")).unwrap_or_default())]
    Permanent { code: Option<String>, message: String },
    /// Herald's own pacing held the message back: not a failure, and no attempt is used up.
    #[error("{message}")]
    Throttled { message: String, retry_after: Duration },
    /// The recipient opted out with the provider (Twilio 21610): the contact is marked too.
    #[error("{}{message}", code.as_deref().map(|c| format!("[{c}] ")).unwrap_or_default())]
    Unsubscribed { code: Option<String>, message: String },
}

#[async_trait]
pub trait Provider: Send + Sync {
    fn name(&self) -> &'static str;
    async fn send(&self, message: &OutboundMessage) -> Result<ProviderReceipt, ProviderError>;
    /// Whether an earlier attempt of this row already reached the provider. Providers that cannot
    /// tell answer `Ok(None)`, and the row is sent again (see README "Guarantees").
    async fn lookup(&self, _message: &OutboundMessage) -> Result<Option<ProviderReceipt>, ProviderError> {
        Ok(None)
    }
}

/// Which provider serves each channel.
#[derive(Clone, Default)]
pub struct Providers {
    by_channel: HashMap<Channel, Arc<dyn Provider>>,
}

impl Providers {
    /// The configured providers, with `fallback` (the sandbox) for every channel left unconfigured.
    /// `allow_loopback`: webhooks may go to this machine (`herald serve --allow-loopback-urls`).
    pub fn from_config(
        c: &config::ProviderConfig,
        http: reqwest::Client,
        fallback: Arc<dyn Provider>,
        endpoints: Arc<dyn crate::ports::WebhookEndpoints>,
        allow_loopback: bool,
    ) -> Result<Providers, String> {
        let mut p = Providers::all(fallback.clone());
        let paced = |provider: Arc<dyn Provider>| -> Arc<dyn Provider> {
            let pace = c.pace(provider.name());
            Arc::new(pacing::Paced::new(provider, pace))
        };
        if let Some(w) = &c.whatsapp {
            p.set(Channel::Whatsapp, paced(Arc::new(whatsapp::WhatsApp::new(http.clone(), w.clone()))));
        }
        if let Some(t) = &c.sms {
            p.set(Channel::Sms, paced(Arc::new(twilio::Twilio::new(http.clone(), t.clone(), c.public_url.clone()))));
        }
        if let Some(m) = &c.messenger {
            p.set(Channel::Messenger, paced(Arc::new(messenger::Messenger::new(http.clone(), m.clone()))));
        }
        if let Some(t) = &c.telegram {
            p.set(Channel::Telegram, paced(Arc::new(telegram::Telegram::new(http.clone(), t.clone()))));
        }
        if let Some(s) = &c.slack {
            p.set(Channel::Slack, paced(Arc::new(slack::Slack::new(http.clone(), s.clone()))));
        }
        // Tenants may set their own endpoint at any time, so the webhook channel always goes
        // through the webhook provider; it falls back to the sandbox for a tenant without one.
        let timeout = std::time::Duration::from_secs(15);
        let hook = webhook::Webhook::new(c.webhook.as_ref(), endpoints, fallback, allow_loopback, timeout)?;
        p.set(Channel::Webhook, paced(Arc::new(hook)));
        Ok(p)
    }

    /// Adds SES email to configured providers when `HERALD_EMAIL_FROM` is set (feature `aws`).
    #[cfg(feature = "aws")]
    pub fn with_ses(mut self, c: &config::ProviderConfig, sdk: &aws_config::SdkConfig) -> Providers {
        if let Some(from) = &c.email_from {
            let ses = email::Ses::new(aws_sdk_sesv2::Client::new(sdk), from.clone());
            self.set(Channel::Email, Arc::new(pacing::Paced::new(Arc::new(ses), c.pace("email"))));
        }
        self
    }

    /// Every channel served by one provider (the local default: the sandbox).
    pub fn all(provider: Arc<dyn Provider>) -> Providers {
        Providers { by_channel: Channel::ALL.into_iter().map(|c| (c, provider.clone())).collect() }
    }

    pub fn set(&mut self, channel: Channel, provider: Arc<dyn Provider>) {
        self.by_channel.insert(channel, provider);
    }

    pub fn get(&self, channel: Channel) -> Option<&Arc<dyn Provider>> {
        self.by_channel.get(&channel)
    }
}
