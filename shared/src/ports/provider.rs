//! The provider port: a rendered message goes out, a receipt or a classified error comes back.
//! `service` delivers through it; each module of `providers` implements it for one API.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::domain::{Channel, FlowTrigger, HeaderKind, TenantId, WhatsappTemplate};

/// A rendered message, ready for a provider.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OutboundMessage {
    pub tenant_id: TenantId,
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

/// A notification token the person granted (recurring or one-time notifications), if the send
/// carries one in its metadata: it addresses a Messenger message instead of the PSID, and needs
/// no tag outside the 24 h window. Part of the port because delivery and the Messenger provider
/// must read the metadata the same way.
pub fn notification_token(metadata: &serde_json::Map<String, serde_json::Value>) -> Option<(&'static str, &str)> {
    ["notification_messages_token", "one_time_notif_token"]
        .into_iter()
        .find_map(|k| metadata.get(k).and_then(serde_json::Value::as_str).filter(|t| !t.is_empty()).map(|t| (k, t)))
}
