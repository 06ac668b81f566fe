//! SMS through Twilio's Messages API: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`,
//! form-encoded, HTTP Basic auth, with a `StatusCallback` that names the row.

use async_trait::async_trait;

use super::config::TwilioConfig;
use super::http;
use super::{OutboundMessage, Provider, ProviderError, ProviderReceipt};

pub struct Twilio {
    http: reqwest::Client,
    config: TwilioConfig,
    /// Herald's public base URL: Twilio posts status updates to it.
    public_url: Option<String>,
}

impl Twilio {
    pub fn new(http: reqwest::Client, config: TwilioConfig, public_url: Option<String>) -> Twilio {
        Twilio { http, config, public_url }
    }
}

/// The form fields of a Messages.json request.
pub fn form(m: &OutboundMessage, from: &str, public_url: Option<&str>) -> Vec<(&'static str, String)> {
    let mut f = vec![("To", m.to.clone())];
    if from.starts_with("MG") {
        f.push(("MessagingServiceSid", from.to_string()));
    } else {
        f.push(("From", from.to_string()));
    }
    f.push(("Body", m.text.clone()));
    if let Some(link) = m.header.as_ref().and_then(|h| h.link.clone()) {
        f.push(("MediaUrl", link));
    }
    if let Some(base) = public_url {
        f.push(("StatusCallback", format!("{base}/v1/providers/sms/events")));
    }
    f
}

#[async_trait]
impl Provider for Twilio {
    fn name(&self) -> &'static str {
        "sms"
    }

    async fn send(&self, m: &OutboundMessage) -> Result<ProviderReceipt, ProviderError> {
        let c = &self.config;
        let url = format!("{}/2010-04-01/Accounts/{}/Messages.json", c.base_url, c.account_sid);
        let req = self.http.post(url).basic_auth(&c.account_sid, Some(c.auth_token.expose())).form(&form(
            m,
            &c.from,
            self.public_url.as_deref(),
        ));
        let answer = http::send("twilio", req).await?;
        if (200..300).contains(&answer.status) {
            return match answer.body["sid"].as_str() {
                Some(sid) => Ok(ProviderReceipt { external_message_id: sid.to_string() }),
                None => Err(answer.unreadable("twilio")),
            };
        }
        let Some(code) = answer.body["code"].as_i64() else { return Err(answer.unreadable("twilio")) };
        let message = answer.body["message"].as_str().unwrap_or("no message").to_string();
        let code_s = Some(code.to_string());
        Err(match code {
            20429 => ProviderError::Transient { code: code_s, message, retry_after: answer.retry_after },
            _ if answer.transient_status() => {
                ProviderError::Transient { code: code_s, message, retry_after: answer.retry_after }
            }
            21610 => ProviderError::Unsubscribed { code: code_s, message },
            21211 => ProviderError::Permanent { code: code_s, message: format!("invalid phone number: {message}") },
            _ => ProviderError::Permanent { code: code_s, message },
        })
    }
}

/// Reads a Twilio callback (form fields): a message status, or an inbound SMS.
pub fn parse_callback(params: &[(String, String)]) -> (Vec<crate::domain::StatusReport>, Vec<crate::domain::Inbound>) {
    use crate::domain::{Channel, ContactKey, Inbound, Phone, Status, StatusReport};
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let now = crate::domain::now();
    if let (Some(sid), Some(status)) = (get("MessageSid"), get("MessageStatus")) {
        let error = get("ErrorCode").map(|c| format!("twilio: [{c}] {status}"));
        let status = match status {
            "sent" => Status::Sent,
            "delivered" => Status::Delivered,
            "read" => Status::Read,
            "undelivered" | "failed" => Status::Failed,
            // queued, accepted, sending, scheduled: nothing Herald's row does not already say.
            _ => return (vec![], vec![]),
        };
        return (vec![StatusReport { external_id: sid.to_string(), status, at: now, error }], vec![]);
    }
    match (get("From").and_then(|f| Phone::parse(f).ok()), get("Body")) {
        (Some(phone), Some(body)) => (
            vec![],
            vec![Inbound {
                channel: Channel::Sms,
                from: ContactKey::Phone(phone),
                at: now,
                text: Some(body.to_string()),
            }],
        ),
        _ => (vec![], vec![]),
    }
}
