//! The tunables every use case reads: attempts, leases, timeouts, backoff, the tenant allowance.

use std::time::Duration;

/// Tunables of the send pipeline.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Provider attempts per row before it is `failed`.
    pub max_attempts: u32,
    /// How long a claimed row belongs to its worker. Longer than `provider_timeout`.
    pub lease: Duration,
    /// Longest wait for one provider call.
    pub provider_timeout: Duration,
    /// Backoff between attempts: full jitter over `base * 2^(attempt-1)`, capped.
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// How long a received job stays hidden; longer than `lease`.
    pub visibility: Duration,
    /// Receives after which the queue dead-letters a job (SQS `maxReceiveCount`).
    pub max_receives: u32,
    /// How long an idempotency key and its answer are kept.
    pub idempotency_ttl: Duration,
    /// Whether tenant URLs (webhook endpoints, media links) may point at this machine, over
    /// http too. Only for an operator developing a bot locally: any tenant could otherwise make
    /// Herald post to any local port. Off unless `herald serve --allow-loopback-urls`.
    pub allow_loopback_urls: bool,
    /// What each tenant may send (requests per second, recipients per minute).
    pub tenant_limits: super::admission::Limits,
    /// Rows of one job delivered at once (a job names up to ten). The cost benchmark sets 1: the
    /// AWS emulator's DynamoDB is not thread-safe, and its failures would count as requests.
    pub job_rows_at_once: usize,
    /// Largest CSV import file (bytes); above it the answer is `413`.
    pub max_import_bytes: u64,
    /// Waits between a status event's posts after the first: one post more than waits, then the
    /// event is a dead letter (`GET /v1/event-subscriptions/{id}/failures`).
    pub event_retry_schedule: Vec<Duration>,
    /// Longest wait for a subscriber's answer to one post.
    pub event_timeout: Duration,
}

/// Standard Webhooks' retry schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about 27 h).
pub const EVENT_RETRY_SCHEDULE: [u64; 7] = [5, 300, 1800, 7200, 18000, 36000, 36000];

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_attempts: 5,
            lease: Duration::from_secs(60),
            provider_timeout: Duration::from_secs(15),
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(300),
            visibility: Duration::from_secs(90),
            max_receives: 10,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            allow_loopback_urls: false,
            tenant_limits: Default::default(),
            job_rows_at_once: crate::domain::Job::MAX_ROWS,
            // A million lines of a dozen columns is about 100 MB.
            max_import_bytes: 1 << 30,
            event_retry_schedule: EVENT_RETRY_SCHEDULE.iter().map(|s| Duration::from_secs(*s)).collect(),
            event_timeout: Duration::from_secs(10),
        }
    }
}
