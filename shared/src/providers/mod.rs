//! Channel providers: one module per provider, all behind the [`Provider`] port (`ports::provider`).

pub mod config;
#[cfg(feature = "aws")]
pub mod email;
pub mod graph;
pub mod http;
pub mod messenger;
pub mod pacing;
pub mod sandbox;
pub mod slack;
pub mod telegram;
pub mod twilio;
pub mod webhook;
pub mod whatsapp;

use std::sync::Arc;

use crate::domain::Channel;
pub use crate::ports::provider::{
    OutboundMessage, Provider, ProviderError, ProviderReceipt, Providers, RenderedHeader,
};

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
}
