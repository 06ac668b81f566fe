//! The in-process worker pool of `herald serve`: receives jobs from a [`JobQueue`] and runs
//! [`deliver`] on each, with bounded concurrency. The send Lambda does the same per SQS batch.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify, Semaphore};

use crate::domain::Job;
use crate::ports::{ReceivedJob, StoreError};
use crate::retry::Policy;

use super::deliver::{backoff, deliver, Deliver, Delivery};

/// What the queue should do with one received job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobResult {
    /// Delete it.
    Delete,
    /// Hand it back to come again after this long, as a fresh job (no receive used up).
    Retry(Duration),
    /// Leave it: it comes back after its visibility timeout (and is dead-lettered after
    /// `max_receives`).
    Leave,
}

/// Handles one received job end to end, panics included. Shared with the send Lambda.
pub async fn handle_job(h: Arc<Deliver>, received: &ReceivedJob) -> JobResult {
    let job: Job = match serde_json::from_str(&received.body) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(message_id = %received.message_id, error = %e, "poison job: body is not a Herald job");
            return JobResult::Leave;
        }
    };
    let task = {
        let h = h.clone();
        let job = job.clone();
        tokio::spawn(async move { deliver(&h, &job).await })
    };
    let (error, transient) = match task.await {
        Ok(Ok(Delivery::Done)) => return JobResult::Delete,
        Ok(Ok(Delivery::RetryAfter(d))) => return JobResult::Retry(d),
        Ok(Err(e)) => (e.to_string(), matches!(e, StoreError::Unavailable(_))),
        Err(join) => (format!("delivery crashed: {join}"), false),
    };
    tracing::error!(row_id = %job.row_id, receive_count = received.receive_count, %error, "delivery failed");
    if received.receive_count >= h.settings.max_receives {
        // This was the last receive before the dead-letter queue: say so on the row. If even that
        // fails, the job still goes to the dead-letter queue, and the local shape's sweeper
        // fails the row it finds pending with its only job dead-lettered.
        let msg = format!("could not be delivered after {} tries: {error}", received.receive_count);
        let marked = super::retry_store("marking a dead-lettered row failed", 5, || {
            h.requests.fail_pending(&job.tenant_id, &job.row_id, &msg)
        })
        .await;
        if let Err(e) = marked {
            tracing::error!(row_id = %job.row_id, error = %e, "could not mark a dead-lettered row failed");
        }
        return JobResult::Leave;
    }
    if transient {
        // A store blinked: come back soon, as a fresh job, rather than after the whole visibility
        // timeout, and without using up a receive (an outage is not the job's fault). Only a
        // job that also crashed before can reach its last receive here.
        return JobResult::Retry(backoff(&h.settings, 1, None));
    }
    JobResult::Leave
}

/// Runs workers until `shutdown` turns true, then waits for the jobs in hand to finish.
/// `wake` is notified by the queue when jobs arrive, so idle workers need not poll often.
pub async fn run_pool(h: Arc<Deliver>, workers: usize, wake: Option<Arc<Notify>>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(workers.max(1)));
    let mut idle = Duration::from_millis(5);
    let mut receive_failures = 0;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let free = slots.available_permits().min(10);
        if free == 0 {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p,
                _ = shutdown.changed() => continue,
            };
            drop(permit);
            continue;
        }
        let batch = match h.queue.receive(free, h.settings.visibility).await {
            Ok(b) => {
                receive_failures = 0;
                b
            }
            Err(e) => {
                // Every worker waits on this loop: back off from a short pause, not a long one.
                tracing::error!(error = %e, "could not receive jobs; retrying");
                receive_failures += 1;
                tokio::time::sleep(Policy::STORE.backoff(receive_failures)).await;
                continue;
            }
        };
        if batch.is_empty() {
            let nap = tokio::time::sleep(idle);
            tokio::select! {
                _ = nap => {}
                _ = async { if let Some(w) = &wake { w.notified().await } else { std::future::pending::<()>().await } } => {}
                _ = shutdown.changed() => {}
            }
            idle = (idle * 2).min(Duration::from_millis(250));
            continue;
        }
        idle = Duration::from_millis(5);
        for received in batch {
            let Ok(permit) = slots.clone().acquire_owned().await else { break };
            let h = h.clone();
            tokio::spawn(async move {
                let result = handle_job(h.clone(), &received).await;
                // Settling is safe to repeat; a failure left alone would park the job for its whole
                // visibility timeout.
                let done = match result {
                    JobResult::Delete => {
                        super::retry_store("deleting a job", 5, || h.queue.delete(&received.receipt)).await
                    }
                    JobResult::Retry(d) => {
                        super::retry_store("delaying a job's retry", 5, || h.queue.defer(&received, d)).await
                    }
                    JobResult::Leave => Ok(()),
                };
                if let Err(e) = done {
                    tracing::error!(message_id = %received.message_id, error = %e, "could not settle a job; it will be redelivered");
                }
                drop(permit);
            });
        }
    }
    // Drain: every permit back means every job in hand has settled.
    let _ = slots.acquire_many(workers.max(1) as u32).await;
}
