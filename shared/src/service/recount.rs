//! Status counts that fell behind their rows, repaired. A store that writes its counters apart
//! from its rows (DynamoDB) loses the moves of a process that died in between; a status page
//! that finds the counters stalled asks for a recount, which reads the rows a slice at a time in
//! jobs on the same queue and corrects the counters at the end (`RequestLog::recount`).

use std::time::{Duration, Instant};

use crate::domain::{Job, RecountStep, TenantId};
use crate::ports::{JobQueue, OutgoingJob, RequestLog, RowCounts, StoreError, StoreResult};

use super::deliver::{backoff, Deliver};
use super::worker::JobResult;

/// How long one recount job reads slices before it hands on to the next job.
const JOB_BUDGET: Duration = Duration::from_secs(2);

/// The request's counts; if they look stalled, a recount is asked for on the way (one at a time
/// per request). The counts are answered as they stand either way.
pub async fn counts(
    log: &dyn RequestLog,
    queue: &dyn JobQueue,
    tenant: &TenantId,
    request_id: &str,
) -> StoreResult<RowCounts> {
    let counts = log.count_rows(tenant, request_id).await?;
    if counts.stalled {
        if let Err(e) = ask(log, queue, tenant, request_id).await {
            tracing::warn!(%request_id, error = %e, "could not ask for a recount of stalled status counts");
        }
    }
    Ok(counts)
}

async fn ask(log: &dyn RequestLog, queue: &dyn JobQueue, tenant: &TenantId, request_id: &str) -> StoreResult<()> {
    let Some(step) = log.recount(tenant, request_id, None).await? else { return Ok(()) };
    tracing::info!(%request_id, "status counts stalled with rows pending; recounting");
    queue.send_batch(&[OutgoingJob { job: Job::recount(tenant, request_id, step), delay: Duration::ZERO }]).await
}

/// A recount job: slices for up to [`JOB_BUDGET`], then the job for the next slice takes its
/// place. A store blink puts the same step back after a backoff; a slice read twice is counted
/// once, as the step only moves once the slice is in it.
pub async fn run(h: &Deliver, job: &Job, step: &RecountStep) -> JobResult {
    let started = Instant::now();
    let mut step = step.clone();
    let again = |step: RecountStep, delay| {
        JobResult::Replace(vec![OutgoingJob { job: Job::recount(&job.tenant_id, &job.request_id, step), delay }])
    };
    while started.elapsed() < JOB_BUDGET {
        match h.log.recount(&job.tenant_id, &job.request_id, Some(step.clone())).await {
            Ok(Some(next)) => {
                // Every row read: the correction waits for moves still in flight to settle.
                let wait = next.settle_at.map(|at| at - chrono::Utc::now().timestamp_millis()).filter(|w| *w > 0);
                if let Some(wait) = wait {
                    return again(next, Duration::from_millis(wait as u64));
                }
                step = next;
            }
            Ok(None) => return JobResult::Delete,
            Err(e @ StoreError::Unavailable(_)) => {
                tracing::warn!(request_id = %job.request_id, error = %e, "recount slice failed; it comes again");
                return again(step, backoff(&h.settings, 1, None));
            }
            Err(e) => {
                // Its claim expires and a later status page asks again.
                tracing::error!(request_id = %job.request_id, error = %e, "recount stopped");
                return JobResult::Delete;
            }
        }
    }
    again(step, Duration::ZERO)
}
