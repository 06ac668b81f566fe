//! The one retry policy of every path that retries (store and queue calls, provider attempts,
//! DynamoDB's unprocessed items, SQS's failed entries, the workers' receive loop): exponential
//! backoff with full jitter under a cap, at most a number of tries, and a **deadline**.
//!
//! Retries nest — ingest retries a queue call whose adapter re-sends failed entries, on top of the
//! SDK's own retries — so counts alone multiply. A deadline does not: an API call runs
//! [`within`] a budget, and every retry inside it, however deep, stops at that budget, and every
//! try is cut off when the budget runs out, so a store that never answers still gets an answer
//! (a `503`) in time.

use rand::Rng;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;

tokio::task_local! {
    /// When the API call being handled must have answered by.
    static CALL_DEADLINE: Instant;
}

/// Runs `call` with a deadline `budget` from now for every retry inside it; `None` if `call` did
/// not finish within the budget (it is dropped then).
pub async fn within<F: Future>(budget: Duration, call: F) -> Option<F::Output> {
    let deadline = Instant::now() + budget;
    let deadline = CALL_DEADLINE.try_with(|outer| (*outer).min(deadline)).unwrap_or(deadline);
    CALL_DEADLINE.scope(deadline, tokio::time::timeout_at(deadline, call)).await.ok()
}

/// How a path retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The first retry waits up to this long; each next one up to twice as long...
    pub base: Duration,
    /// ...but never longer than this.
    pub cap: Duration,
    /// Tries in all, the first included.
    pub tries: u32,
    /// How long all the tries together may take (bounded again by the call's deadline).
    pub deadline: Duration,
}

impl Policy {
    /// A store or queue call that is safe to repeat: a store blinks, so a write that matters
    /// should not give up at the first error, nor hold its caller long.
    pub const STORE: Policy = Policy {
        base: Duration::from_millis(25),
        cap: Duration::from_secs(1),
        tries: 5,
        deadline: Duration::from_secs(5),
    };

    /// The same policy with another number of tries.
    pub const fn tries(self, tries: u32) -> Policy {
        Policy { tries, ..self }
    }

    /// The wait before retry `n` (1 for the first retry): a random time up to `base × 2^(n-1)`,
    /// capped (full jitter, so many callers retrying at once spread out).
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.base.saturating_mul(1u32 << retry.saturating_sub(1).min(20)).min(self.cap);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    /// When a run starting now must stop: its own deadline, or the call's if that is sooner.
    pub fn deadline(&self) -> Instant {
        let own = Instant::now() + self.deadline;
        CALL_DEADLINE.try_with(|call| (*call).min(own)).unwrap_or(own)
    }

    /// A run of tries under this policy starting now, for loops that keep their own state
    /// between tries (a batch whose failed entries are re-sent).
    pub fn attempts(&self) -> Attempts {
        Attempts { policy: *self, deadline: self.deadline(), tried: 0 }
    }

    /// Runs `call` until it succeeds, fails with an error `retryable` refuses, runs out of tries,
    /// or the deadline would pass before the next try; a try still running at the deadline is cut
    /// off and answered with `timed_out`. Callers must only retry calls that are safe to repeat.
    pub async fn run<T, E, F, Fut>(
        &self,
        what: &str,
        mut call: F,
        retryable: impl Fn(&E) -> bool,
        timed_out: impl FnOnce(String) -> E,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: std::fmt::Display,
    {
        let mut attempts = self.attempts();
        attempts.next().await;
        loop {
            let result = match tokio::time::timeout_at(attempts.deadline, call()).await {
                Ok(r) => r,
                Err(_) => return Err(timed_out(format!("{what} did not finish in time"))),
            };
            match result {
                Err(e) if retryable(&e) => {
                    if !attempts.next().await {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, "{what} failed; retrying");
                }
                other => return other,
            }
        }
    }
}

/// The tries of one run under a [`Policy`].
#[derive(Debug)]
pub struct Attempts {
    policy: Policy,
    deadline: Instant,
    tried: u32,
}

impl Attempts {
    /// Waits out the backoff before the next try (none before the first) and counts it; `false`,
    /// at once, when no try is left: out of tries, or the deadline would pass first.
    pub async fn next(&mut self) -> bool {
        if self.tried > 0 {
            if self.tried >= self.policy.tries.max(1) {
                return false;
            }
            let wait = self.policy.backoff(self.tried);
            if Instant::now() + wait >= self.deadline {
                return false;
            }
            tokio::time::sleep(wait).await;
        }
        self.tried += 1;
        true
    }

    /// Tries made so far.
    pub fn tried(&self) -> u32 {
        self.tried
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn always_fails(n: &AtomicU32) -> impl Future<Output = Result<(), String>> + '_ {
        n.fetch_add(1, Ordering::Relaxed);
        async { Err("down".to_string()) }
    }

    #[test]
    fn backoff_grows_and_stays_under_the_cap() {
        let p = Policy {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(50),
            tries: 9,
            deadline: Duration::MAX,
        };
        for _ in 0..200 {
            assert!(p.backoff(1) <= Duration::from_millis(10));
            assert!(p.backoff(3) <= Duration::from_millis(40));
            assert!(p.backoff(30) <= Duration::from_millis(50));
        }
    }

    /// [`Policy::STORE`] scaled down to milliseconds, so the tests run in real time (the Lambda
    /// builds share their dependencies with the test build only if no test needs tokio's
    /// `test-util`).
    const QUICK: Policy = Policy {
        base: Duration::from_millis(1),
        cap: Duration::from_millis(4),
        tries: 5,
        deadline: Duration::from_millis(200),
    };

    #[tokio::test]
    async fn tries_are_counted() {
        let n = AtomicU32::new(0);
        let r = QUICK.tries(4).run("x", || always_fails(&n), |_| true, |m| m).await;
        assert_eq!(r, Err("down".to_string()));
        assert_eq!(n.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn a_call_that_never_answers_is_cut_off_at_the_deadline() {
        let start = Instant::now();
        let r: Result<(), String> = QUICK.run("hanging", std::future::pending, |_| true, |m| m).await;
        assert_eq!(r, Err("hanging did not finish in time".to_string()));
        assert!(start.elapsed() >= QUICK.deadline);
        assert!(start.elapsed() < QUICK.deadline * 10, "{:?}", start.elapsed());
    }

    #[tokio::test]
    async fn the_calls_deadline_bounds_every_retry_inside_it() {
        let start = Instant::now();
        let slow = Policy { tries: 1000, deadline: Duration::from_secs(3600), ..QUICK };
        let n = AtomicU32::new(0);
        let out = within(Duration::from_millis(100), slow.run("nested", || always_fails(&n), |_| true, |m| m)).await;
        assert_eq!(out, Some(Err("down".to_string())), "the retry loop gives up before the call's deadline");
        assert!(start.elapsed() < Duration::from_millis(500), "{:?}", start.elapsed());
        assert!(n.load(Ordering::Relaxed) > 1);
    }
}
