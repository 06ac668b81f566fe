//! What every HTTP provider shares: one client (timeouts, no redirects), reading answers, and
//! turning transport failures and status codes into [`ProviderError`]s.

use std::time::Duration;

use super::ProviderError;

/// The client all providers use: built once, no redirects (a provider never needs one, and a
/// webhook URL must not be bounced elsewhere), bounded connect time.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the HTTP client configuration is valid")
}

/// An answer read to the end.
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: serde_json::Value,
    pub text: String,
}

/// Sends the request; a transport failure (refused, reset, timeout) is transient.
pub async fn send(provider: &str, req: reqwest::RequestBuilder) -> Result<Answer, ProviderError> {
    let resp = req.send().await.map_err(|e| ProviderError::Transient {
        code: Some(if e.is_timeout() { "timeout" } else { "unreachable" }.into()),
        message: format!("{provider} could not be reached: {}", transport_reason(&e)),
        retry_after: None,
    })?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = resp.text().await.map_err(|e| ProviderError::Transient {
        code: Some("reset".into()),
        message: format!("{provider}'s answer was cut off: {}", transport_reason(&e)),
        retry_after: None,
    })?;
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Ok(Answer { status, retry_after, body, text })
}

fn transport_reason(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "connection reset"
    }
}

impl Answer {
    /// 429 and 5xx are worth retrying whatever the body says.
    pub fn transient_status(&self) -> bool {
        self.status == 429 || self.status >= 500
    }

    /// An answer whose body Herald could not read: transient if the status says so, otherwise
    /// permanent (retrying a 2xx that may have sent would risk a duplicate).
    pub fn unreadable(&self, provider: &str) -> ProviderError {
        // Control characters would break the sentence the row's error_message shows.
        let snippet: String = self.text.chars().take(120).map(|c| if c.is_control() { ' ' } else { c }).collect();
        let message =
            format!("{provider} answered HTTP {} with a body Herald could not read: \"{snippet}\"", self.status);
        if self.transient_status() {
            ProviderError::Transient {
                code: Some(format!("http_{}", self.status)),
                message,
                retry_after: self.retry_after,
            }
        } else {
            ProviderError::Permanent { code: Some(format!("http_{}", self.status)), message }
        }
    }
}
