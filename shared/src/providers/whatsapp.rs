//! WhatsApp through Meta's Cloud API: `POST /{version}/{phone_number_id}/messages`, bearer token.
//! Template messages carry header and body parameters; free-form text is only allowed inside the
//! 24 h customer service window, which `deliver` checks before calling.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::config::WhatsappConfig;
use super::graph::classify_graph_error;
use super::http;
use super::{OutboundMessage, Provider, ProviderError, ProviderReceipt};
use crate::domain::HeaderKind;

pub struct WhatsApp {
    http: reqwest::Client,
    config: WhatsappConfig,
}

impl WhatsApp {
    pub fn new(http: reqwest::Client, config: WhatsappConfig) -> WhatsApp {
        WhatsApp { http, config }
    }
}

/// The Cloud API request body for a message.
pub fn request_body(m: &OutboundMessage) -> Value {
    let to = m.to.trim_start_matches('+');
    let Some(t) = &m.whatsapp_template else {
        return json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"preview_url": false, "body": m.text},
        });
    };
    let mut components = Vec::new();
    if let Some(h) = &m.header {
        let parameters: Vec<Value> = match h.kind {
            HeaderKind::Text => m.header_params.iter().map(|p| json!({"type": "text", "text": p})).collect(),
            kind => {
                let mut media = json!({"link": h.link});
                if kind == HeaderKind::Document {
                    if let Some(f) = &h.filename {
                        media["filename"] = json!(f);
                    }
                }
                let kind = match kind {
                    HeaderKind::Image => "image",
                    HeaderKind::Video => "video",
                    _ => "document",
                };
                vec![json!({"type": kind, kind: media})]
            }
        };
        if !parameters.is_empty() {
            components.push(json!({"type": "header", "parameters": parameters}));
        }
    }
    if !m.body_params.is_empty() {
        let parameters: Vec<Value> = m.body_params.iter().map(|p| json!({"type": "text", "text": p})).collect();
        components.push(json!({"type": "body", "parameters": parameters}));
    }
    let mut template = json!({"name": t.name, "language": {"code": t.language}});
    if !components.is_empty() {
        template["components"] = json!(components);
    }
    json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": to, "type": "template", "template": template})
}

#[async_trait]
impl Provider for WhatsApp {
    fn name(&self) -> &'static str {
        "whatsapp"
    }

    async fn send(&self, m: &OutboundMessage) -> Result<ProviderReceipt, ProviderError> {
        let c = &self.config;
        let url = format!("{}/{}/{}/messages", c.base_url, c.api_version, c.phone_number_id);
        let req = self.http.post(url).bearer_auth(c.token.expose()).json(&request_body(m));
        let answer = http::send("whatsapp", req).await?;
        if (200..300).contains(&answer.status) {
            return match answer.body["messages"][0]["id"].as_str() {
                Some(id) => Ok(ProviderReceipt { external_message_id: id.to_string() }),
                None => Err(answer.unreadable("whatsapp")),
            };
        }
        // 130429 rate limit, 131056 pair rate limit, 80007 WABA rate limit, 4 app rate limit;
        // 131047: more than 24 h since the customer last wrote.
        Err(classify_graph_error("whatsapp", &answer, &[130429, 131056, 80007, 4], &[131047]))
    }
}

/// Reads a WhatsApp Cloud API webhook: message statuses and inbound messages.
pub fn parse_webhook(v: &Value) -> (Vec<crate::domain::StatusReport>, Vec<crate::domain::Inbound>) {
    use crate::domain::{Channel, ContactKey, Inbound, Phone, Status, StatusReport};
    let at = |ts: &Value| {
        ts.as_str()
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
            .unwrap_or_else(crate::domain::now)
    };
    let (mut reports, mut inbound) = (Vec::new(), Vec::new());
    let values =
        v["entry"].as_array().into_iter().flatten().flat_map(|e| e["changes"].as_array().into_iter().flatten());
    for change in values {
        let value = &change["value"];
        for st in value["statuses"].as_array().into_iter().flatten() {
            let status = match st["status"].as_str() {
                Some("sent") => Status::Sent,
                Some("delivered") => Status::Delivered,
                Some("read") => Status::Read,
                Some("failed") => Status::Failed,
                _ => continue,
            };
            let Some(id) = st["id"].as_str() else { continue };
            let error = st["errors"][0].as_object().map(|e| {
                let code = e.get("code").and_then(Value::as_i64).unwrap_or_default();
                let text = e.get("message").or(e.get("title")).and_then(Value::as_str).unwrap_or("failed");
                format!("whatsapp: [{code}] {text}")
            });
            reports.push(StatusReport { external_id: id.to_string(), status, at: at(&st["timestamp"]), error });
        }
        for m in value["messages"].as_array().into_iter().flatten() {
            let Some(phone) = m["from"].as_str().and_then(|f| Phone::parse(&format!("+{f}")).ok()) else { continue };
            inbound.push(Inbound {
                channel: Channel::Whatsapp,
                from: ContactKey::Phone(phone),
                at: at(&m["timestamp"]),
                text: m["text"]["body"].as_str().map(String::from),
            });
        }
    }
    (reports, inbound)
}
