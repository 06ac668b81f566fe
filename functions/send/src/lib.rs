//! Herald's send Lambda: an SQS batch → `deliver` each job's rows → `SqsBatchResponse` naming only
//! the jobs that must come back as they are (a crash of a one-row job or a poison body, which count
//! towards the dead-letter queue, or rows that could not be put back). A row that must wait (retry
//! backoff, not yet due, a store error) goes back as a fresh delayed message of its own instead, so
//! it never uses up the job's receives nor brings its siblings back.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt;
use std::sync::Arc;
use tracing::Instrument;

use herald::app::Herald;
use herald::ports::ReceivedJob;
use herald::service::worker::{handle_job, JobResult};

/// Jobs of one batch delivered at once.
pub const CONCURRENCY: usize = 10;

/// Delivers every record; a failed record never fails the batch, it is named in the response.
pub async fn handle_batch(h: Arc<Herald>, event: SqsEvent) -> SqsBatchResponse {
    handle_batch_with(h, event, CONCURRENCY).await
}

/// [`handle_batch`] with `concurrency` records at once (the cost benchmark's emulator takes one
/// at a time).
pub async fn handle_batch_with(h: Arc<Herald>, event: SqsEvent, concurrency: usize) -> SqsBatchResponse {
    let failures: Vec<String> = futures::stream::iter(event.records)
        .map(|m| handle_record(h.clone(), m))
        .buffer_unordered(concurrency.max(1))
        .filter_map(|failed| async move { failed })
        .collect()
        .await;
    // The batch's row moves, in one counter write per request.
    herald::service::worker::flush_counts(&h.deliver).await;
    let mut response = SqsBatchResponse::default();
    for id in failures {
        let mut item = BatchItemFailure::default();
        item.item_identifier = id;
        response.batch_item_failures.push(item);
    }
    response
}

/// Returns the message id if the record must come back.
async fn handle_record(h: Arc<Herald>, m: SqsMessage) -> Option<String> {
    let message_id = m.message_id.clone().unwrap_or_default();
    let span = tracing::info_span!("job", %message_id);
    async move {
        let received = ReceivedJob {
            message_id: message_id.clone(),
            receipt: m.receipt_handle.clone().unwrap_or_default(),
            body: m.body.clone().unwrap_or_default(),
            receive_count: m.attributes.get("ApproximateReceiveCount").and_then(|n| n.parse().ok()).unwrap_or(1),
        };
        match handle_job(h.deliver.clone(), &received).await {
            JobResult::Delete => None,
            JobResult::Replace(jobs) => match h.queue.replace(&received, &jobs).await {
                // The rows that must wait travel as fresh messages, each alone, so they use up none
                // of this one's receives and its finished rows are not received again.
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "could not put the waiting rows back; the job returns after the visibility timeout");
                    Some(message_id)
                }
            },
            JobResult::Leave => Some(message_id),
        }
    }
    .instrument(span)
    .await
}
