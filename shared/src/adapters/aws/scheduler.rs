//! Waits longer than SQS's 15 minutes, on EventBridge Scheduler: the jobs due in one minute for
//! one request share a one-time schedule (`at(...)`) whose target puts them on the queue as one
//! message, then deletes itself. A 30-day `send_at` thus costs about one `CreateSchedule` per
//! hundred rows instead of a message hop every 15 minutes (about 5,800 SQS requests per row).
//!
//! A schedule's name follows from its time and its message, so enqueuing the same jobs twice (a
//! retried request, a fan-out page expanded again) finds the schedule made the first time. The
//! job that arrives may name more than [`Job::MAX_ROWS`] rows; the worker splits it.

use aws_sdk_scheduler::types::{
    ActionAfterCompletion, DeadLetterConfig, FlexibleTimeWindow, FlexibleTimeWindowMode, RetryPolicy, Target,
};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

use super::sdk_text;
use crate::domain::Job;
use crate::ports::{OutgoingJob, StoreError, StoreResult};
use crate::retry::Policy;

/// A schedule's `Input` is at most 8,192 characters; this leaves room for the fields' framing.
const INPUT_MAX: usize = 8_000;
/// A target delivery the queue refuses is retried for a day, then goes to the dead-letter queue.
const TARGET_RETRY_SECONDS: i32 = 86_400;
const TARGET_RETRIES: i32 = 185;

/// Where schedules go and what they may do.
#[derive(Debug, Clone)]
pub struct ScheduleTarget {
    /// `SCHEDULE_GROUP`: the stack's schedule group.
    pub group: String,
    /// `QUEUE_ARN`: the jobs queue the schedules send to.
    pub queue_arn: String,
    /// `SCHEDULER_ROLE_ARN`: the role the scheduler sends with (`sqs:SendMessage` on the queues).
    pub role_arn: String,
    /// `DEAD_LETTER_QUEUE_ARN`: where a delivery the queue keeps refusing ends (optional).
    pub dead_letter_arn: Option<String>,
}

/// One-time schedules that put jobs on the queue when due.
#[derive(Clone)]
pub struct Schedules {
    client: aws_sdk_scheduler::Client,
    target: ScheduleTarget,
}

/// One schedule to create: when, and the job it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub at: DateTime<Utc>,
    pub job: Job,
}

impl Schedules {
    pub fn new(client: aws_sdk_scheduler::Client, target: ScheduleTarget) -> Schedules {
        Schedules { client, target }
    }

    /// Schedules `jobs` (each due after its delay from `now`), a few creates in flight at once.
    pub async fn put(&self, jobs: &[OutgoingJob], now: DateTime<Utc>) -> StoreResult<()> {
        let planned = plan(jobs, now);
        for group in planned.chunks(8) {
            let results = futures::future::join_all(group.iter().map(|p| self.create(p))).await;
            results.into_iter().collect::<StoreResult<Vec<()>>>()?;
        }
        Ok(())
    }

    async fn create(&self, planned: &Planned) -> StoreResult<()> {
        let input = serde_json::to_string(&planned.job).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let expression = format!("at({})", planned.at.format("%Y-%m-%dT%H:%M:%S"));
        let name = schedule_name(&expression, &input);
        let target = self.target_for(input)?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let mut attempts = Policy::STORE.attempts();
        while attempts.next().await {
            let sent = self
                .client
                .create_schedule()
                .name(&name)
                .group_name(&self.target.group)
                .schedule_expression(&expression)
                .schedule_expression_timezone("UTC")
                .flexible_time_window(window.clone())
                .action_after_completion(ActionAfterCompletion::Delete)
                .target(target.clone())
                .send()
                .await;
            match sent {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let text = sdk_text(&e);
                    match e.into_service_error() {
                        // Made by an earlier try of this same call: same time, same jobs.
                        s if s.is_conflict_exception() => return Ok(()),
                        s if s.is_validation_exception() || s.is_resource_not_found_exception() => {
                            return Err(StoreError::Unavailable(format!("the scheduler refused a schedule: {text}")));
                        }
                        _ => {
                            tracing::warn!(error = %text, attempt = attempts.tried(), "CreateSchedule failed; retrying")
                        }
                    }
                }
            }
        }
        Err(StoreError::Unavailable(format!("CreateSchedule failed {} times", attempts.tried())))
    }

    fn target_for(&self, input: String) -> StoreResult<Target> {
        let retry = RetryPolicy::builder()
            .maximum_event_age_in_seconds(TARGET_RETRY_SECONDS)
            .maximum_retry_attempts(TARGET_RETRIES)
            .build();
        let mut target = Target::builder()
            .arn(&self.target.queue_arn)
            .role_arn(&self.target.role_arn)
            .input(input)
            .retry_policy(retry);
        if let Some(arn) = &self.target.dead_letter_arn {
            target = target.dead_letter_config(DeadLetterConfig::builder().arn(arn).build());
        }
        target.build().map_err(|e| StoreError::Unavailable(e.to_string()))
    }
}

/// A name unique to the schedule's time and message (64 characters at most, as the API allows).
pub fn schedule_name(expression: &str, input: &str) -> String {
    let mut h = Sha256::new();
    h.update(expression.as_bytes());
    h.update([0]);
    h.update(input.as_bytes());
    format!("herald-{}", hex::encode(&h.finalize()[..24]))
}

/// The schedules for `jobs`: due at `now` + delay, rounded down to the minute (a row that comes
/// early is not yet due, and waits out the seconds left on the queue). Row jobs of one request due
/// in the same minute merge into one job as long as its message stays under the input limit;
/// other jobs keep a schedule each.
pub fn plan(jobs: &[OutgoingJob], now: DateTime<Utc>) -> Vec<Planned> {
    let mut planned: Vec<(Planned, usize)> = Vec::new();
    // The schedule still taking rows for each (tenant, request, minute).
    let mut open: HashMap<(&str, &str, DateTime<Utc>), usize> = HashMap::new();
    for OutgoingJob { job, delay } in jobs {
        let wait = TimeDelta::from_std(*delay).unwrap_or(TimeDelta::MAX);
        let due = now.checked_add_signed(wait).unwrap_or(DateTime::<Utc>::MAX_UTC);
        let at = due.duration_trunc(TimeDelta::minutes(1)).unwrap_or(due);
        let key = (job.tenant_id.as_str(), job.request_id.as_str(), at);
        let added: usize = job.row_ids.iter().map(|id| id.len() + 3).sum();
        if is_rows_only(job) {
            if let Some((p, size)) = open.get(&key).map(|&i| &mut planned[i]) {
                if *size + added <= INPUT_MAX {
                    p.job.row_ids.extend(job.row_ids.iter().cloned());
                    *size += added;
                    continue;
                }
            }
            open.insert(key, planned.len());
        }
        let size = serde_json::to_string(job).map(|s| s.len()).unwrap_or(INPUT_MAX);
        planned.push((Planned { at, job: job.clone() }, size));
    }
    planned.into_iter().map(|(p, _)| p).collect()
}

fn is_rows_only(job: &Job) -> bool {
    !job.row_ids.is_empty() && job.fan_out.is_none() && !job.import && job.recount.is_none() && job.event.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn job(request: &str, rows: &[&str]) -> Job {
        Job {
            tenant_id: "t".into(),
            request_id: request.into(),
            row_ids: rows.iter().map(|r| r.to_string()).collect(),
            fan_out: None,
            import: false,
            recount: None,
            event: None,
        }
    }

    fn out(job: Job, secs: u64) -> OutgoingJob {
        OutgoingJob { job, delay: Duration::from_secs(secs) }
    }

    #[test]
    fn jobs_of_one_request_due_in_one_minute_share_a_schedule_at_its_start() {
        let now = DateTime::parse_from_rfc3339("2026-12-01T10:00:30Z").unwrap().to_utc();
        let day = 86_400;
        let plans = plan(
            &[
                out(job("r1", &["a", "b"]), day),
                out(job("r2", &["c"]), day),
                out(job("r1", &["d"]), day + 20),
                out(job("r1", &["e"]), day + 40),
            ],
            now,
        );
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        assert_eq!(
            plans,
            vec![
                Planned { at: at("2026-12-02T10:00:00Z"), job: job("r1", &["a", "b", "d"]) },
                Planned { at: at("2026-12-02T10:00:00Z"), job: job("r2", &["c"]) },
                Planned { at: at("2026-12-02T10:01:00Z"), job: job("r1", &["e"]) },
            ]
        );
    }

    #[test]
    fn a_merged_job_stays_under_the_input_limit() {
        let now = Utc::now();
        // An audience row's id as fan-out makes it, with a bare-UUID request id: the longest there is.
        let ids: Vec<String> = (0..1_000).map(|i| format!("rcp_{}_c{:032x}x0", "0".repeat(36), i)).collect();
        let jobs: Vec<OutgoingJob> = ids.iter().map(|id| out(job("r", &[id]), 7 * 86_400)).collect();
        let plans = plan(&jobs, now);
        assert!(plans.len() > 1, "a thousand rows do not fit one input");
        for p in &plans {
            assert!(serde_json::to_string(&p.job).unwrap().len() <= 8_192);
        }
        let rows: Vec<String> = plans.iter().flat_map(|p| p.job.row_ids.clone()).collect();
        assert_eq!(rows, ids, "every row once, in order");
        assert!(plans[0].job.row_ids.len() >= 100, "about a hundred rows per schedule");
    }

    #[test]
    fn only_row_jobs_merge() {
        let now = Utc::now();
        let mut recount = job("r1", &[]);
        recount.recount = Some(Default::default());
        let plans = plan(&[out(recount.clone(), 3_600), out(job("r1", &["a"]), 3_600)], now);
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].job, recount);
    }

    #[test]
    fn a_wait_beyond_the_calendar_is_planned_not_a_panic() {
        let plans = plan(&[OutgoingJob { job: job("r", &["a"]), delay: Duration::MAX }], Utc::now());
        assert_eq!(plans.len(), 1);
    }

    #[test]
    fn names_follow_from_time_and_message() {
        let a = schedule_name("at(2026-12-02T10:00:00)", "{}");
        assert_eq!(a, schedule_name("at(2026-12-02T10:00:00)", "{}"));
        assert_ne!(a, schedule_name("at(2026-12-02T10:01:00)", "{}"));
        assert!(a.len() <= 64 && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
