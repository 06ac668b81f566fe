//! The in-process worker pool of `herald serve`: receives jobs from a [`JobQueue`] and runs
//! [`deliver`] on each row they name, with bounded concurrency. The send Lambda does the same per
//! SQS batch.

use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinError;

use crate::domain::Job;
use crate::ports::{OutgoingJob, ReceivedJob, StoreError};
use crate::retry::Policy;

use super::deliver::{backoff, deliver_again, Deliver, Delivery};

/// What the queue should do with one received job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobResult {
    /// Delete it: every row it names is done.
    Delete,
    /// Remove it and put these jobs in its place (no receive used up): each row that must come
    /// again, alone, so it neither holds up nor re-sends its siblings.
    Replace(Vec<OutgoingJob>),
    /// Leave it: it comes back after its visibility timeout (and is dead-lettered after
    /// `max_receives`).
    Leave,
}

/// A job naming more rows than one delivery takes on (a schedule sends up to a hundred in one
/// message) goes back as jobs of [`Job::MAX_ROWS`], due at once.
fn split(job: &Job) -> Vec<OutgoingJob> {
    job.row_ids
        .chunks(Job::MAX_ROWS)
        .map(|ids| OutgoingJob { job: Job { row_ids: ids.to_vec(), ..job.clone() }, delay: Duration::ZERO })
        .collect()
}

/// The jobs that are not a request's rows to deliver (fan-out, recount, an event, an import), and
/// a row job too large for one delivery: what becomes of them, or `None` for a row job.
async fn not_rows(h: &Arc<Deliver>, job: &Job) -> Option<JobResult> {
    if let Some(step) = &job.fan_out {
        let expanded = super::fanout::expand(&h.fan_out, job, step).await;
        // An audience that made no row (or whose rows all went before fan-out was over) completes
        // here: no row's job would look again.
        if let Some(events) = &h.events {
            events.check_completed(&job.tenant_id, &job.request_id).await;
        }
        return Some(expanded);
    }
    if let Some(step) = &job.recount {
        return Some(super::recount::run(h, job, step).await);
    }
    if let Some(step) = &job.event {
        let Some(events) = &h.events else {
            tracing::error!(request_id = %job.request_id, "event job where events are not set up; left to dead-letter");
            return Some(JobResult::Leave);
        };
        return Some(super::events::run(events, job, step).await);
    }
    if job.import {
        let Some(imports) = &h.imports else {
            tracing::error!(import_id = %job.request_id, "import job where imports are not set up; left to dead-letter");
            return Some(JobResult::Leave);
        };
        return Some(super::imports::run(imports, job).await);
    }
    if job.row_ids.len() > Job::MAX_ROWS {
        return Some(JobResult::Replace(split(job)));
    }
    None
}

/// How one row's delivery ended.
enum RowEnd {
    Done,
    /// Come again after this long: a retry's backoff, a row not due or paced.
    Wait(Duration),
    /// A store blinked: come again shortly.
    Blinked(String),
    /// Crashed, or failed without saying when to come again.
    Failed(String),
}

/// Handles one received job end to end, panics included: its rows are delivered at once, each
/// claimed on its own. Shared with the send Lambda.
pub async fn handle_job(h: Arc<Deliver>, received: &ReceivedJob) -> JobResult {
    handle_job_within(h, received, None).await
}

/// [`handle_job`], each row waiting for a permit of `gate` (the pool's slots) before its
/// delivery and giving it back as soon as its provider call is over, so a job's slow row holds
/// one slot, not ten, and a row recording its outcome holds none.
pub async fn handle_job_within(h: Arc<Deliver>, received: &ReceivedJob, gate: Option<Arc<Semaphore>>) -> JobResult {
    let job: Job = match serde_json::from_str(&received.body) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(message_id = %received.message_id, error = %e, "poison job: body is not a Herald job");
            return JobResult::Leave;
        }
    };
    if let Some(result) = not_rows(&h, &job).await {
        return result;
    }
    let at_once = h.settings.job_rows_at_once.max(1);
    let (hd, tenant) = (h.clone(), job.tenant_id.clone());
    let redelivered = received.receive_count > 1;
    let ends: Vec<RowEnd> = futures::stream::iter(job.row_ids.clone())
        .map(move |row_id| {
            let (h, tenant, gate) = (hd.clone(), tenant.clone(), gate.clone());
            tokio::spawn(async move {
                let slot = match gate {
                    Some(g) => {
                        Some(g.acquire_owned().await.map_err(|_| StoreError::Unavailable("shutting down".into()))?)
                    }
                    None => None,
                };
                deliver_again(&h, &tenant, &row_id, redelivered, slot).await
            })
        })
        .buffered(at_once)
        .map(row_end)
        .collect()
        .await;
    if let Some(events) = &h.events {
        events.check_completed(&job.tenant_id, &job.request_id).await;
    }
    if let [end] = &ends[..] {
        return single(&h, received, &job, end).await;
    }
    let mut back = Vec::new();
    for (row_id, end) in job.row_ids.iter().zip(ends) {
        let delay = match end {
            RowEnd::Done => continue,
            RowEnd::Wait(d) => d,
            RowEnd::Blinked(_) => backoff(&h.settings, 1, None),
            RowEnd::Failed(error) => {
                // Alone and at once: if it fails again, only its own job counts the receives.
                tracing::error!(%row_id, %error, "delivery failed; the row goes back on its own");
                Duration::ZERO
            }
        };
        back.push(OutgoingJob { job: job.only(row_id), delay });
    }
    if back.is_empty() {
        JobResult::Delete
    } else {
        JobResult::Replace(back)
    }
}

fn row_end(result: Result<Result<Delivery, StoreError>, JoinError>) -> RowEnd {
    match result {
        Ok(Ok(Delivery::Done)) => RowEnd::Done,
        Ok(Ok(Delivery::RetryAfter(d))) => RowEnd::Wait(d),
        Ok(Err(e @ StoreError::Unavailable(_))) => RowEnd::Blinked(e.to_string()),
        Ok(Err(e)) => RowEnd::Failed(e.to_string()),
        Err(join) => RowEnd::Failed(format!("delivery crashed: {join}")),
    }
}

/// A job of one row: a crash leaves it to come back, so it counts towards `max_receives`.
async fn single(h: &Deliver, received: &ReceivedJob, job: &Job, end: &RowEnd) -> JobResult {
    let row_id = &job.row_ids[0];
    let again = |delay| JobResult::Replace(vec![OutgoingJob { job: job.clone(), delay }]);
    let last = received.receive_count >= h.settings.max_receives;
    let error = match end {
        RowEnd::Done => return JobResult::Delete,
        RowEnd::Wait(d) => return again(*d),
        // A store blinked: come back soon rather than after the whole visibility timeout, and
        // without using up a receive (an outage is not the job's fault). Only a job that also
        // crashed before can reach its last receive here.
        RowEnd::Blinked(e) if !last => {
            tracing::warn!(%row_id, error = %e, "a store failed during delivery; the job comes again shortly");
            return again(backoff(&h.settings, 1, None));
        }
        RowEnd::Blinked(e) | RowEnd::Failed(e) => e.clone(),
    };
    tracing::error!(%row_id, receive_count = received.receive_count, %error, "delivery failed");
    if last {
        // This was the last receive before the dead-letter queue: say so on the row. If even that
        // fails, the job still goes to the dead-letter queue, and the local shape's sweeper
        // fails the row it finds pending with its only job dead-lettered.
        let msg = format!("could not be delivered after {} tries: {error}", received.receive_count);
        let marked = super::retry_store("marking a dead-lettered row failed", 5, || {
            h.requests.fail_pending(&job.tenant_id, row_id, &msg)
        })
        .await;
        match (marked, &h.events) {
            (Err(e), _) => tracing::error!(%row_id, error = %e, "could not mark a dead-lettered row failed"),
            (Ok(true), Some(ev)) => {
                ev.row_id_moved(&job.tenant_id, row_id, crate::domain::Status::Failed).await;
                ev.check_completed(&job.tenant_id, &job.request_id).await;
            }
            (Ok(_), _) => {}
        }
    }
    JobResult::Leave
}

/// Runs workers until `shutdown` turns true, then waits for the jobs in hand to finish.
/// `wake` is notified by the queue when jobs arrive, so idle workers need not poll often.
/// `workers` bounds concurrent deliveries (provider calls), not jobs: a job takes a slot per row.
pub async fn run_pool(h: Arc<Deliver>, workers: usize, wake: Option<Arc<Notify>>, mut shutdown: watch::Receiver<bool>) {
    let workers = workers.max(1);
    let slots = Arc::new(Semaphore::new(workers));
    // Rows of the jobs received and not yet settled: the pool receives more only while fewer
    // than twice `workers` are in hand (a row gives its slot back once its provider call is over,
    // and its outcome is written meanwhile), so a job waits for slots briefly, never for long.
    let most_in_hand = workers * 2;
    let in_hand = Arc::new(InHand::default());
    let mut idle = Duration::from_millis(5);
    let mut receive_failures = 0;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let held = in_hand.rows();
        if held >= most_in_hand {
            tokio::select! {
                _ = in_hand.settled.notified() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let wanted = (most_in_hand - held).div_ceil(Job::MAX_ROWS).clamp(1, 10);
        let batch = match h.queue.receive(wanted, h.settings.visibility).await {
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
            // A fan-out job holds one slot while it expands its page.
            let rows = serde_json::from_str::<Job>(&received.body).map_or(1, |j| j.row_ids.len().max(1));
            in_hand.take(rows);
            let (h, slots, in_hand) = (h.clone(), slots.clone(), in_hand.clone());
            tokio::spawn(async move {
                let result = handle_job_within(h.clone(), &received, Some(slots)).await;
                flush_counts(&h).await;
                settle(&h, &received, result).await;
                in_hand.settle(rows);
            });
        }
    }
    // Drain: nothing in hand means every job received has settled.
    while in_hand.rows() > 0 {
        let _ = tokio::time::timeout(Duration::from_millis(50), in_hand.settled.notified()).await;
    }
}

/// The rows of the jobs a pool holds, and a wake-up each time a job settles.
#[derive(Default)]
struct InHand {
    rows: std::sync::atomic::AtomicUsize,
    settled: Notify,
}

impl InHand {
    fn rows(&self) -> usize {
        self.rows.load(std::sync::atomic::Ordering::Acquire)
    }

    fn take(&self, rows: usize) {
        self.rows.fetch_add(rows, std::sync::atomic::Ordering::AcqRel);
    }

    fn settle(&self, rows: usize) {
        self.rows.fetch_sub(rows, std::sync::atomic::Ordering::AcqRel);
        // notify_one keeps the wake-up if the pool is not waiting yet, so none is lost.
        self.settled.notify_one();
    }
}

/// Writes the status moves of the jobs handled so far (`RowCounters`): after a job's rows, before
/// the job is settled. The send Lambda flushes once per batch.
pub async fn flush_counts(h: &Deliver) {
    if let Err(e) = h.log.flush_counts().await {
        tracing::warn!(error = %e, "status counts not written; a recount repairs them");
    }
}

/// Does what [`handle_job`] decided. Settling is safe to repeat; a failure left alone would park
/// the job for its whole visibility timeout.
async fn settle(h: &Deliver, received: &ReceivedJob, result: JobResult) {
    let done = match result {
        JobResult::Delete => super::retry_store("deleting a job", 5, || h.queue.delete(&received.receipt)).await,
        JobResult::Replace(jobs) => {
            super::retry_store("putting a job's waiting rows back", 5, || h.queue.replace(received, &jobs)).await
        }
        JobResult::Leave => Ok(()),
    };
    if let Err(e) = done {
        tracing::error!(message_id = %received.message_id, error = %e, "could not settle a job; it will be redelivered");
    }
}
