//! Email through Amazon SES v2 `SendEmail` (feature `aws`). The client comes from `aws_config`
//! (so `AWS_ENDPOINT_URL` points it at an emulator); the row id rides along as a message tag.
//! Delivery, bounce, complaint and open events come back through EventBridge ([`parse_event`]).

use async_trait::async_trait;
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message, MessageTag};

use super::{OutboundMessage, Provider, ProviderError, ProviderReceipt};

pub struct Ses {
    client: aws_sdk_sesv2::Client,
    from: String,
}

impl Ses {
    pub fn new(client: aws_sdk_sesv2::Client, from: String) -> Ses {
        Ses { client, from }
    }
}

fn content(text: &str) -> Result<Content, ProviderError> {
    Content::builder()
        .data(text)
        .charset("UTF-8")
        .build()
        .map_err(|e| ProviderError::Permanent { code: None, message: e.to_string() })
}

#[async_trait]
impl Provider for Ses {
    fn name(&self) -> &'static str {
        "email"
    }

    async fn send(&self, m: &OutboundMessage) -> Result<ProviderReceipt, ProviderError> {
        let subject =
            m.subject.clone().unwrap_or_else(|| m.text.lines().next().unwrap_or_default().chars().take(78).collect());
        let message = Message::builder()
            .subject(content(&subject)?)
            .body(Body::builder().text(content(&m.text)?).build())
            .build();
        let tag = MessageTag::builder()
            .name("herald_row")
            .value(&m.row_id)
            .build()
            .map_err(|e| ProviderError::Permanent { code: None, message: e.to_string() })?;
        let result = self
            .client
            .send_email()
            .from_email_address(&self.from)
            .destination(Destination::builder().to_addresses(&m.to).build())
            .content(EmailContent::builder().simple(message).build())
            .email_tags(tag)
            .send()
            .await;
        match result {
            Ok(out) => match out.message_id {
                Some(id) => Ok(ProviderReceipt { external_message_id: id }),
                None => Err(ProviderError::Permanent {
                    code: None,
                    message: "SES accepted the email without a message id".into(),
                }),
            },
            Err(e) => Err(classify(e)),
        }
    }
}

fn classify(e: aws_sdk_sesv2::error::SdkError<aws_sdk_sesv2::operation::send_email::SendEmailError>) -> ProviderError {
    use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
    let text = aws_sdk_sesv2::error::DisplayErrorContext(&e).to_string();
    let SdkError::ServiceError(se) = &e else {
        // Timeouts, dispatch and response failures: worth another try.
        return ProviderError::Transient { code: Some("unreachable".into()), message: text, retry_after: None };
    };
    let code = se.err().code().unwrap_or("Unknown").to_string();
    let message = se.err().message().unwrap_or("no message").to_string();
    let status = se.raw().status().as_u16();
    if code == "TooManyRequestsException" || code == "LimitExceededException" || code == "Throttling" || status >= 500 {
        ProviderError::Transient { code: Some(code), message, retry_after: None }
    } else {
        ProviderError::Permanent { code: Some(code), message }
    }
}

/// Reads an SES event delivered by EventBridge (`source: aws.ses`).
pub fn parse_event(event: &serde_json::Value) -> Option<crate::domain::StatusReport> {
    use crate::domain::Status;
    let d = &event["detail"];
    let status = match d["eventType"].as_str()? {
        "Send" => Status::Sent,
        "Delivery" => Status::Delivered,
        "Open" => Status::Opened,
        "Bounce" => Status::Bounced,
        "Complaint" => Status::Complained,
        "Reject" | "Rendering Failure" => Status::Failed,
        _ => return None,
    };
    let at = event["time"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(crate::domain::now);
    let error = match status {
        Status::Bounced => Some(format!("bounced: {}", d["bounce"]["bounceType"].as_str().unwrap_or("unknown"))),
        Status::Failed => d["reject"]["reason"].as_str().map(|r| format!("rejected: {r}")),
        _ => None,
    };
    Some(crate::domain::StatusReport { external_id: d["mail"]["messageId"].as_str()?.to_string(), status, at, error })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Status;
    use serde_json::json;

    fn ses(event_type: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut detail = json!({"eventType": event_type, "mail": {"messageId": "0100-abc"}});
        detail.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        json!({"source": "aws.ses", "time": "2026-11-21T20:00:05Z", "detail": detail})
    }

    #[test]
    fn ses_events_map_to_statuses() {
        let r = parse_event(&ses("Bounce", json!({"bounce": {"bounceType": "Permanent"}}))).unwrap();
        assert_eq!(
            (r.external_id.as_str(), r.status, r.error.as_deref()),
            ("0100-abc", Status::Bounced, Some("bounced: Permanent"))
        );
        assert_eq!(parse_event(&ses("Complaint", json!({}))).unwrap().status, Status::Complained);
        assert_eq!(parse_event(&ses("Open", json!({}))).unwrap().status, Status::Opened);
        assert_eq!(parse_event(&ses("Delivery", json!({}))).unwrap().at.to_rfc3339(), "2026-11-21T20:00:05+00:00");
        assert!(parse_event(&ses("Click", json!({}))).is_none(), "clicks are not a row status");
        assert!(parse_event(&json!({"detail": {"eventType": "Delivery"}})).is_none(), "no message id");
    }
}
