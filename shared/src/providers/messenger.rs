//! Messenger through Meta's Send API: `POST /{version}/me/messages`. Outside the 24 h window a
//! message must be a `MESSAGE_TAG` with a tag; `deliver` refuses untagged sends there.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::config::MessengerConfig;
use super::graph::classify_graph_error;
use super::http;
use super::{OutboundMessage, Provider, ProviderError, ProviderReceipt};
pub use crate::ports::provider::notification_token;

pub struct Messenger {
    http: reqwest::Client,
    config: MessengerConfig,
}

impl Messenger {
    pub fn new(http: reqwest::Client, config: MessengerConfig) -> Messenger {
        Messenger { http, config }
    }
}

pub fn request_body(m: &OutboundMessage) -> Value {
    if let Some((kind, token)) = notification_token(&m.metadata) {
        // Meta's notification messages: the token is the recipient, and no tag is needed.
        return json!({"recipient": {kind: token}, "message": {"text": m.text}});
    }
    let mut body = json!({"recipient": {"id": m.to}, "message": {"text": m.text}});
    match &m.messaging_tag {
        Some(tag) => {
            body["messaging_type"] = json!("MESSAGE_TAG");
            body["tag"] = json!(tag);
        }
        None => body["messaging_type"] = json!("RESPONSE"),
    }
    body
}

#[async_trait]
impl Provider for Messenger {
    fn name(&self) -> &'static str {
        "messenger"
    }

    async fn send(&self, m: &OutboundMessage) -> Result<ProviderReceipt, ProviderError> {
        let c = &self.config;
        let url = format!("{}/{}/me/messages", c.base_url, c.api_version);
        let req = self.http.post(url).bearer_auth(c.page_token.expose()).json(&request_body(m));
        let answer = http::send("messenger", req).await?;
        if (200..300).contains(&answer.status) {
            return match answer.body["message_id"].as_str() {
                Some(id) => Ok(ProviderReceipt { external_message_id: id.to_string() }),
                None => Err(answer.unreadable("messenger")),
            };
        }
        // 4, 32, 613: rate limits; 10 with subcode 2018278: outside the allowed window.
        Err(classify_graph_error("messenger", &answer, &[4, 32, 613], &[]))
    }
}

/// Reads a Messenger webhook: deliveries (by message id) and inbound messages. Read receipts name
/// only a watermark time, not message ids, so they are not mapped to rows.
pub fn parse_webhook(v: &Value) -> (Vec<crate::domain::StatusReport>, Vec<crate::domain::Inbound>) {
    use crate::domain::{Channel, ContactKey, Inbound, Status, StatusReport};
    let at =
        |ms: &Value| ms.as_i64().and_then(chrono::DateTime::from_timestamp_millis).unwrap_or_else(crate::domain::now);
    let (mut reports, mut inbound) = (Vec::new(), Vec::new());
    let events =
        v["entry"].as_array().into_iter().flatten().flat_map(|e| e["messaging"].as_array().into_iter().flatten());
    for ev in events {
        if let Some(mids) = ev["delivery"]["mids"].as_array() {
            for mid in mids.iter().filter_map(Value::as_str) {
                reports.push(StatusReport {
                    external_id: mid.to_string(),
                    status: Status::Delivered,
                    at: at(&ev["delivery"]["watermark"]),
                    error: None,
                });
            }
        }
        if ev["message"].is_object() && ev["message"]["is_echo"] != json!(true) {
            if let Some(psid) = ev["sender"]["id"].as_str() {
                inbound.push(Inbound {
                    channel: Channel::Messenger,
                    from: ContactKey::User(Channel::Messenger, psid.to_string()),
                    at: at(&ev["timestamp"]),
                    text: ev["message"]["text"].as_str().map(String::from),
                });
            }
        }
    }
    (reports, inbound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(metadata: Value, tag: Option<&str>) -> OutboundMessage {
        OutboundMessage {
            tenant_id: "t".into(),
            request_id: "r".into(),
            row_id: "row".into(),
            channel: crate::domain::Channel::Messenger,
            to: "psid-1".into(),
            name: None,
            text: "hi".into(),
            subject: None,
            header: None,
            whatsapp_template: None,
            header_params: vec![],
            body_params: vec![],
            flow: None,
            messaging_tag: tag.map(String::from),
            metadata: metadata.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn a_notification_token_addresses_the_message() {
        let m = message(
            json!({"notification_messages_token": "NTN", "one_time_notif_token": "OTN"}),
            Some("ACCOUNT_UPDATE"),
        );
        assert_eq!(
            request_body(&m),
            json!({"recipient": {"notification_messages_token": "NTN"}, "message": {"text": "hi"}})
        );
        let m = message(json!({"one_time_notif_token": "OTN"}), None);
        assert_eq!(request_body(&m), json!({"recipient": {"one_time_notif_token": "OTN"}, "message": {"text": "hi"}}));
        let m = message(json!({}), None);
        assert_eq!(
            request_body(&m),
            json!({"recipient": {"id": "psid-1"}, "messaging_type": "RESPONSE", "message": {"text": "hi"}})
        );
    }
}
