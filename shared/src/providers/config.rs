//! Provider configuration: which channels have a real provider, their credentials and base URLs.
//! Read from `HERALD_*` environment variables (local and Lambda alike). Credentials are kept in
//! [`Secret`], whose `Debug` never shows them, so they cannot reach a log line.

use crate::domain::TenantId;
use std::collections::HashMap;
use std::fmt;

/// A credential. Printing it prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Debug, Clone)]
pub struct WhatsappConfig {
    pub base_url: String,
    pub api_version: String,
    pub phone_number_id: String,
    pub token: Secret,
    /// Meta app secret: verifies `X-Hub-Signature-256` on status callbacks.
    pub app_secret: Option<Secret>,
    /// Answers Meta's `hub.challenge` subscription check.
    pub verify_token: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct TwilioConfig {
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: Secret,
    /// `From` number, or a Messaging Service SID (`MG…`).
    pub from: String,
}

#[derive(Debug, Clone)]
pub struct MessengerConfig {
    pub base_url: String,
    pub api_version: String,
    pub page_token: Secret,
    pub app_secret: Option<Secret>,
    pub verify_token: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct TelegramConfig {
    pub base_url: String,
    pub bot_token: Secret,
}

#[derive(Debug, Clone)]
pub struct SlackConfig {
    pub base_url: String,
    pub bot_token: Secret,
}

/// The bot backend that `webhook` sends (and CSML flow triggers) go to.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: String,
    /// `whsec_<base64>`, per the Standard Webhooks spec.
    pub secret: Secret,
}

/// Every provider's configuration; a channel whose block is absent uses the sandbox.
#[derive(Debug, Clone, Default)]
pub struct ProviderConfig {
    /// Herald's public base URL, for callbacks providers are told about (Twilio `StatusCallback`).
    pub public_url: Option<String>,
    /// The tenant inbound events (messages, opt-outs) belong to.
    pub inbound_tenant: TenantId,
    pub whatsapp: Option<WhatsappConfig>,
    pub sms: Option<TwilioConfig>,
    pub messenger: Option<MessengerConfig>,
    pub telegram: Option<TelegramConfig>,
    pub slack: Option<SlackConfig>,
    pub webhook: Option<WebhookConfig>,
    /// Sender address for email through SES (feature `aws`): `HERALD_EMAIL_FROM`.
    pub email_from: Option<String>,
    /// Pacing per provider (`HERALD_<PROVIDER>_RATE`, `_BURST`, `_RECIPIENT_SPACING_MS`), over
    /// the defaults of [`super::pacing::Pace::default_for`].
    pub paces: HashMap<&'static str, super::pacing::Pace>,
}

/// The `HERALD_*` environment variables, named without the prefix.
pub fn env_settings() -> HashMap<String, String> {
    std::env::vars().filter_map(|(k, v)| k.strip_prefix("HERALD_").map(|k| (k.to_string(), v))).collect()
}

/// A required key of a provider block is missing.
#[derive(Debug, thiserror::Error)]
#[error("{0} must be set: {1}")]
pub struct MissingSetting(pub String, pub String);

impl ProviderConfig {
    /// The pace of a provider: its settings, else the defaults of its published limits.
    pub fn pace(&self, provider: &str) -> super::pacing::Pace {
        self.paces.get(provider).copied().unwrap_or_else(|| super::pacing::Pace::default_for(provider))
    }

    /// From `HERALD_*` environment variables.
    pub fn from_env() -> Result<ProviderConfig, MissingSetting> {
        ProviderConfig::from_map(&env_settings())
    }

    /// From a map of settings named without the `HERALD_` prefix (`WHATSAPP_TOKEN`, …). A
    /// provider is on once its first key is set; its other required keys must then be set too.
    pub fn from_map(m: &HashMap<String, String>) -> Result<ProviderConfig, MissingSetting> {
        let k = Keys(m);
        Ok(ProviderConfig {
            public_url: k.get("PUBLIC_URL").map(|u| u.trim_end_matches('/').to_string()),
            inbound_tenant: TenantId::new(k.or("INBOUND_TENANT", "default")),
            whatsapp: whatsapp(&k)?,
            sms: twilio(&k)?,
            messenger: messenger(&k),
            telegram: telegram(&k),
            slack: slack(&k),
            webhook: webhook(&k)?,
            email_from: k.get("EMAIL_FROM"),
            paces: paces(&k)?,
        })
    }
}

/// The settings map, read with the rules every key shares: an empty value is no value.
struct Keys<'a>(&'a HashMap<String, String>);

impl Keys<'_> {
    fn get(&self, k: &str) -> Option<String> {
        self.0.get(k).filter(|v| !v.is_empty()).cloned()
    }

    fn or(&self, k: &str, default: &str) -> String {
        self.get(k).unwrap_or_else(|| default.into())
    }

    /// A key its provider cannot do without, once `trigger` turned the provider on.
    fn need(&self, k: &str, trigger: &str) -> Result<String, MissingSetting> {
        self.get(k).ok_or_else(|| {
            MissingSetting(format!("HERALD_{k}"), format!("it is required when HERALD_{trigger} is set"))
        })
    }

    /// A positive number, if set at all.
    fn positive(&self, k: &str) -> Result<Option<f64>, MissingSetting> {
        let Some(v) = self.get(k) else { return Ok(None) };
        let n = v.parse::<f64>().ok().filter(|n| *n > 0.0);
        n.map(Some).ok_or_else(|| MissingSetting(format!("HERALD_{k}"), "a positive number".into()))
    }
}

fn whatsapp(k: &Keys) -> Result<Option<WhatsappConfig>, MissingSetting> {
    let Some(token) = k.get("WHATSAPP_TOKEN") else { return Ok(None) };
    Ok(Some(WhatsappConfig {
        base_url: k.or("WHATSAPP_BASE_URL", "https://graph.facebook.com"),
        api_version: k.or("WHATSAPP_API_VERSION", "v23.0"),
        phone_number_id: k.need("WHATSAPP_PHONE_NUMBER_ID", "WHATSAPP_TOKEN")?,
        token: Secret::new(token),
        app_secret: k.get("WHATSAPP_APP_SECRET").map(Secret::new),
        verify_token: k.get("WHATSAPP_VERIFY_TOKEN").map(Secret::new),
    }))
}

fn twilio(k: &Keys) -> Result<Option<TwilioConfig>, MissingSetting> {
    let Some(sid) = k.get("TWILIO_ACCOUNT_SID") else { return Ok(None) };
    Ok(Some(TwilioConfig {
        base_url: k.or("TWILIO_BASE_URL", "https://api.twilio.com"),
        account_sid: sid,
        auth_token: Secret::new(k.need("TWILIO_AUTH_TOKEN", "TWILIO_ACCOUNT_SID")?),
        from: k.need("TWILIO_FROM", "TWILIO_ACCOUNT_SID")?,
    }))
}

fn messenger(k: &Keys) -> Option<MessengerConfig> {
    Some(MessengerConfig {
        page_token: Secret::new(k.get("MESSENGER_PAGE_TOKEN")?),
        base_url: k.or("MESSENGER_BASE_URL", "https://graph.facebook.com"),
        api_version: k.or("MESSENGER_API_VERSION", "v23.0"),
        app_secret: k.get("MESSENGER_APP_SECRET").map(Secret::new),
        verify_token: k.get("MESSENGER_VERIFY_TOKEN").map(Secret::new),
    })
}

fn telegram(k: &Keys) -> Option<TelegramConfig> {
    Some(TelegramConfig {
        bot_token: Secret::new(k.get("TELEGRAM_BOT_TOKEN")?),
        base_url: k.or("TELEGRAM_BASE_URL", "https://api.telegram.org"),
    })
}

fn slack(k: &Keys) -> Option<SlackConfig> {
    Some(SlackConfig {
        bot_token: Secret::new(k.get("SLACK_BOT_TOKEN")?),
        base_url: k.or("SLACK_BASE_URL", "https://slack.com"),
    })
}

fn webhook(k: &Keys) -> Result<Option<WebhookConfig>, MissingSetting> {
    let Some(url) = k.get("WEBHOOK_URL") else { return Ok(None) };
    Ok(Some(WebhookConfig { url, secret: Secret::new(k.need("WEBHOOK_SECRET", "WEBHOOK_URL")?) }))
}

/// `<PROVIDER>_RATE`, `_BURST` and `_RECIPIENT_SPACING_MS` over each provider's default pace; a
/// burst left unset follows the rate.
fn paces(k: &Keys) -> Result<HashMap<&'static str, super::pacing::Pace>, MissingSetting> {
    let mut paces = HashMap::new();
    for provider in ["whatsapp", "sms", "messenger", "telegram", "slack", "email"] {
        let up = provider.to_ascii_uppercase();
        let rate = k.positive(&format!("{up}_RATE"))?;
        let burst = k.positive(&format!("{up}_BURST"))?;
        let spacing = k.positive(&format!("{up}_RECIPIENT_SPACING_MS"))?;
        if rate.is_none() && burst.is_none() && spacing.is_none() {
            continue;
        }
        let mut pace = super::pacing::Pace::default_for(provider);
        pace.rate = rate.unwrap_or(pace.rate);
        pace.burst = burst.or(rate).unwrap_or(pace.burst);
        if let Some(ms) = spacing {
            pace.per_recipient = Some(std::time::Duration::from_millis(ms as u64));
        }
        paces.insert(provider, pace);
    }
    Ok(paces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_and_missing_keys_are_named() {
        let m: HashMap<String, String> = [("WHATSAPP_TOKEN", "EAAG-secret"), ("WHATSAPP_PHONE_NUMBER_ID", "1055")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let c = ProviderConfig::from_map(&m).unwrap();
        assert!(!format!("{c:?}").contains("EAAG-secret"));
        assert_eq!(c.whatsapp.unwrap().token.expose(), "EAAG-secret");
        let partial: HashMap<String, String> = [("TWILIO_ACCOUNT_SID".to_string(), "AC1".to_string())].into();
        let err = ProviderConfig::from_map(&partial).unwrap_err();
        assert_eq!(
            err.to_string(),
            "HERALD_TWILIO_AUTH_TOKEN must be set: it is required when HERALD_TWILIO_ACCOUNT_SID is set"
        );
    }

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn each_provider_turns_on_with_its_first_key_and_takes_the_published_defaults() {
        let c = ProviderConfig::from_map(&map(&[
            ("PUBLIC_URL", "https://herald.example/"),
            ("MESSENGER_PAGE_TOKEN", "p"),
            ("TELEGRAM_BOT_TOKEN", "t"),
            ("SLACK_BOT_TOKEN", "s"),
            ("SLACK_BASE_URL", "http://127.0.0.1:9"),
            ("WEBHOOK_URL", "https://bot.example/hook"),
            ("WEBHOOK_SECRET", "whsec_x"),
            ("EMAIL_FROM", ""),
        ]))
        .unwrap();
        assert_eq!(c.public_url.as_deref(), Some("https://herald.example"));
        assert_eq!(c.inbound_tenant, "default");
        assert!(c.whatsapp.is_none() && c.sms.is_none(), "no first key, no provider");
        let m = c.messenger.unwrap();
        assert_eq!((m.base_url.as_str(), m.api_version.as_str()), ("https://graph.facebook.com", "v23.0"));
        assert_eq!(c.telegram.unwrap().base_url, "https://api.telegram.org");
        assert_eq!(c.slack.unwrap().base_url, "http://127.0.0.1:9");
        assert_eq!(c.webhook.unwrap().url, "https://bot.example/hook");
        assert_eq!(c.email_from, None, "an empty value is no value");
        assert!(c.paces.is_empty());
    }

    #[test]
    fn the_first_provider_missing_a_key_is_named_and_paces_must_be_positive() {
        let err = ProviderConfig::from_map(&map(&[("WHATSAPP_TOKEN", "w"), ("WEBHOOK_URL", "https://b.example")]));
        assert_eq!(err.unwrap_err().0, "HERALD_WHATSAPP_PHONE_NUMBER_ID");
        let err = ProviderConfig::from_map(&map(&[("WEBHOOK_URL", "https://b.example")])).unwrap_err();
        assert_eq!(err.to_string(), "HERALD_WEBHOOK_SECRET must be set: it is required when HERALD_WEBHOOK_URL is set");
        let err = ProviderConfig::from_map(&map(&[("SMS_RATE", "0")])).unwrap_err();
        assert_eq!(err.to_string(), "HERALD_SMS_RATE must be set: a positive number");
        let err = ProviderConfig::from_map(&map(&[("EMAIL_BURST", "many")])).unwrap_err();
        assert_eq!(err.0, "HERALD_EMAIL_BURST");
    }

    #[test]
    fn a_burst_left_unset_follows_the_rate() {
        let c =
            ProviderConfig::from_map(&map(&[("TELEGRAM_RATE", "3"), ("SLACK_RECIPIENT_SPACING_MS", "250")])).unwrap();
        let t = c.pace("telegram");
        assert_eq!((t.rate, t.burst), (3.0, 3.0));
        let s = c.pace("slack");
        assert_eq!(s.per_recipient, Some(std::time::Duration::from_millis(250)));
        assert_eq!(
            (s.rate, s.burst),
            (
                super::super::pacing::Pace::default_for("slack").rate,
                super::super::pacing::Pace::default_for("slack").burst
            )
        );
        assert_eq!(c.pace("whatsapp"), super::super::pacing::Pace::default_for("whatsapp"));
    }
}
