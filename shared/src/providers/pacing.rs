//! Pacing: a token bucket per provider account, and a minimum spacing between two messages to
//! one recipient (WhatsApp: 1 message every 6 s to a number). A short wait is slept; a longer one
//! hands the row back as throttled, so it shows `retrying` with its next attempt time and does not
//! count as a failed attempt.
//!
//! The state lives in the process: one `herald serve`, or each send Lambda instance on its own
//! (SendMaximumConcurrency bounds how many there are).

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{OutboundMessage, Provider, ProviderError, ProviderReceipt};

/// Waits up to this long in process rather than handing the row back to the queue.
const SLEEP_AT_MOST: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// Messages per second, sustained.
    pub rate: f64,
    /// Messages that may go at once after a quiet spell.
    pub burst: f64,
    /// Least time between two messages to one recipient.
    pub per_recipient: Option<Duration>,
}

impl Pace {
    /// Defaults from the providers' published limits.
    pub fn default_for(provider: &str) -> Pace {
        let (rate, burst, per_recipient) = match provider {
            "whatsapp" => (80.0, 80.0, Some(Duration::from_secs(6))),
            "sms" => (1.0, 1.0, None),
            "telegram" => (30.0, 30.0, Some(Duration::from_secs(1))),
            "slack" => (20.0, 20.0, Some(Duration::from_secs(1))),
            "messenger" => (100.0, 100.0, None),
            // SES's default sending rate for an account out of the sandbox.
            "email" => (14.0, 14.0, None),
            _ => (50.0, 50.0, None),
        };
        Pace { rate, burst, per_recipient }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct Paced {
    inner: Arc<dyn Provider>,
    pace: Pace,
    bucket: Mutex<Bucket>,
    last_to: Mutex<HashMap<String, Instant>>,
}

impl Paced {
    pub fn new(inner: Arc<dyn Provider>, pace: Pace) -> Paced {
        let bucket = Bucket { tokens: pace.burst.max(1.0), at: Instant::now() };
        Paced { inner, pace, bucket: Mutex::new(bucket), last_to: Mutex::new(HashMap::new()) }
    }

    /// Takes a token now, or says how long until one is free (and reserves it).
    fn take(&self) -> Duration {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let rate = self.pace.rate.max(0.001);
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(self.pace.burst.max(1.0));
        b.at = now;
        b.tokens -= 1.0;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / rate)
        }
    }

    /// Gives back a reserved token when the send will not happen now.
    fn give_back(&self) {
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        b.tokens += 1.0;
    }

    /// How long until `to` may get another message; records the send if it may go now.
    fn recipient_wait(&self, to: &str) -> Duration {
        let Some(spacing) = self.pace.per_recipient else { return Duration::ZERO };
        let mut last = self.last_to.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if let Some(t) = last.get(to) {
            let due = *t + spacing;
            if due > now {
                return due - now;
            }
        }
        last.insert(to.to_string(), now);
        if last.len() > 100_000 {
            last.retain(|_, t| now.duration_since(*t) < spacing);
        }
        Duration::ZERO
    }

    fn throttled(&self, wait: Duration, what: &str) -> ProviderError {
        ProviderError::Throttled {
            message: format!("{} {what}; next attempt in {} ms", self.inner.name(), wait.as_millis()),
            retry_after: wait,
        }
    }
}

#[async_trait]
impl Provider for Paced {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn send(&self, m: &OutboundMessage) -> Result<ProviderReceipt, ProviderError> {
        let wait = self.recipient_wait(&m.to);
        if !wait.is_zero() {
            return Err(self.throttled(wait, "spaces messages to one recipient"));
        }
        let wait = self.take();
        if wait > SLEEP_AT_MOST {
            self.give_back();
            self.last_to.lock().unwrap_or_else(|p| p.into_inner()).remove(&m.to);
            return Err(self.throttled(wait, "is at its rate limit"));
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        self.inner.send(m).await
    }

    async fn lookup(&self, m: &OutboundMessage) -> Result<Option<ProviderReceipt>, ProviderError> {
        self.inner.lookup(m).await
    }
}
