//! WhatsApp through Meta's Cloud API: `POST /{version}/{phone_number_id}/messages`, bearer token.
//! Template messages carry header and body parameters; free-form text is only allowed inside the
//! 24 h customer service window, which `deliver` checks before calling.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::config::WhatsappConfig;
use super::http::{self, Answer};
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

/// Meta's error codes: throttling is retried, a closed window needs a template, the rest is final.
pub fn classify_graph_error(provider: &str, answer: &Answer, throttle: &[i64], window: &[i64]) -> ProviderError {
    let err = &answer.body["error"];
    let Some(code) = err["code"].as_i64() else { return answer.unreadable(provider) };
    let message = err["message"].as_str().unwrap_or("no message").to_string();
    let details = err["error_data"]["details"].as_str().map(|d| format!(" ({d})")).unwrap_or_default();
    if throttle.contains(&code) || answer.transient_status() {
        return ProviderError::Transient {
            code: Some(code.to_string()),
            message: format!("{message}{details}"),
            retry_after: answer.retry_after,
        };
    }
    if window.contains(&code) {
        return ProviderError::Permanent {
            code: Some(code.to_string()),
            message: format!("template required: the 24 h window is closed ({message})"),
        };
    }
    ProviderError::Permanent { code: Some(code.to_string()), message: format!("{message}{details}") }
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
