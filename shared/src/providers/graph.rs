//! What Meta's Graph API providers (WhatsApp Cloud API, Messenger) share: one error shape,
//! `{"error": {"code", "message", "error_data": {"details"}}}`, read the same way for both.

use super::http::Answer;
use super::ProviderError;

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
