//! Admission control per tenant, before anything is stored: a request rate and a cap on
//! recipients per minute (SMS pumping and cost abuse). Buckets live in the process: one
//! `herald serve`, or each ingest Lambda instance (API Gateway throttling bounds the fleet).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::domain::TenantId;

/// What a tenant may send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Send requests per second, sustained, and how many may come at once.
    pub requests_per_second: f64,
    pub request_burst: f64,
    /// Recipients per minute across the tenant's requests.
    pub recipients_per_minute: f64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { requests_per_second: 50.0, request_burst: 100.0, recipients_per_minute: 60_000.0 }
    }
}

/// The lowest request rate that admits anything: the burst is twice the rate, and a bucket that
/// can never hold one whole request would answer every send `429` forever.
pub const MIN_REQUESTS_PER_SECOND: f64 = 0.5;

impl Limits {
    /// Limits from a sustained rate (the burst is twice it) and a recipient allowance; refused,
    /// naming the setting (`rate_name`, `recipients_name`), when they could admit no send at all.
    pub fn per_tenant(
        requests_per_second: f64,
        recipients_per_minute: f64,
        (rate_name, recipients_name): (&str, &str),
    ) -> Result<Limits, String> {
        if !(requests_per_second >= MIN_REQUESTS_PER_SECOND && requests_per_second.is_finite()) {
            return Err(format!(
                "{rate_name} must be at least {MIN_REQUESTS_PER_SECOND} (got {requests_per_second}): a tenant may send a burst of twice the rate, and a burst under one request admits no send at all"
            ));
        }
        if !(recipients_per_minute >= 1.0 && recipients_per_minute.is_finite()) {
            return Err(format!(
                "{recipients_name} must be at least 1 (got {recipients_per_minute}): below one recipient a minute no send is admitted"
            ));
        }
        Ok(Limits { requests_per_second, request_burst: requests_per_second * 2.0, recipients_per_minute })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Try again after this long.
    Later(Duration),
    /// This many recipients can never fit in a minute.
    TooMany { cap: u64 },
}

struct Buckets {
    requests: f64,
    recipients: f64,
    at: Instant,
}

pub struct Admission {
    limits: Limits,
    tenants: Mutex<HashMap<TenantId, Buckets>>,
}

impl Admission {
    pub fn new(limits: Limits) -> Admission {
        Admission { limits, tenants: Mutex::new(HashMap::new()) }
    }

    /// Takes one request and `recipients` from the tenant's allowance, or says why not.
    pub fn admit(&self, tenant: &TenantId, recipients: u64) -> Result<(), Refusal> {
        let l = self.limits;
        if recipients as f64 > l.recipients_per_minute {
            return Err(Refusal::TooMany { cap: l.recipients_per_minute as u64 });
        }
        let now = Instant::now();
        let mut all = self.tenants.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() > 100_000 {
            all.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
        }
        let b = all.entry(tenant.clone()).or_insert(Buckets {
            requests: l.request_burst,
            recipients: l.recipients_per_minute,
            at: now,
        });
        let elapsed = now.duration_since(b.at).as_secs_f64();
        b.requests = (b.requests + elapsed * l.requests_per_second).min(l.request_burst);
        b.recipients = (b.recipients + elapsed * l.recipients_per_minute / 60.0).min(l.recipients_per_minute);
        b.at = now;
        let wait_requests = if b.requests >= 1.0 { 0.0 } else { (1.0 - b.requests) / l.requests_per_second };
        let need = recipients as f64;
        let wait_recipients =
            if b.recipients >= need { 0.0 } else { (need - b.recipients) / (l.recipients_per_minute / 60.0) };
        let wait = wait_requests.max(wait_recipients);
        if wait > 0.0 {
            return Err(Refusal::Later(Duration::from_secs_f64(wait)));
        }
        b.requests -= 1.0;
        b.recipients -= need;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_recipients_are_metered_per_tenant() {
        let a = Admission::new(Limits { requests_per_second: 1.0, request_burst: 2.0, recipients_per_minute: 10.0 });
        assert!(a.admit(&"t1".into(), 4).is_ok());
        assert!(a.admit(&"t1".into(), 4).is_ok());
        assert!(matches!(a.admit(&"t1".into(), 1), Err(Refusal::Later(_))), "the burst of two is spent");
        assert!(a.admit(&"t2".into(), 4).is_ok(), "tenants are metered apart");
        assert_eq!(a.admit(&"t2".into(), 11), Err(Refusal::TooMany { cap: 10 }));
        let b =
            Admission::new(Limits { requests_per_second: 100.0, request_burst: 100.0, recipients_per_minute: 10.0 });
        assert!(b.admit(&"t".into(), 8).is_ok());
        match b.admit(&"t".into(), 8) {
            // 6 more recipients at 10 a minute: 36 s.
            Err(Refusal::Later(d)) => assert!((35.5..36.5).contains(&d.as_secs_f64()), "{d:?}"),
            other => panic!("{other:?}"),
        }
    }
}
