//! Herald's send Lambda: an SQS batch → `deliver` each job's rows → `SqsBatchResponse` naming only
//! the jobs that must come back as they are (a crash of a one-row job or a poison body, which count
//! towards the dead-letter queue, or rows that could not be put back). A row that must wait (retry
//! backoff, not yet due, a store error) goes back as a fresh delayed message of its own instead, so
//! it never uses up the job's receives nor brings its siblings back.
//!
//! The same function consumes the dead-letter queue: a record from it (its `eventSourceARN` is
//! `DEAD_LETTER_QUEUE_ARN`) is a job SQS gave up on, which is kept in the table for its tenant
//! (`GET /v1/dead-letters`) and then deleted from the queue.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt;
use std::sync::Arc;
use tracing::Instrument;

use herald::app::Herald;
use herald::domain::Job;
use herald::ports::{DeadLetter, ReceivedJob};
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
    // Read per batch, not per process: cheap, and a test can point it at its own queue.
    let dead_letter_arn = std::env::var("DEAD_LETTER_QUEUE_ARN").ok().filter(|a| !a.is_empty());
    let failures: Vec<String> = futures::stream::iter(event.records)
        .map(|m| {
            let dead = dead_letter_arn.is_some() && m.event_source_arn == dead_letter_arn;
            let h = h.clone();
            async move {
                match dead {
                    true => keep_dead_letter(&h, m).await,
                    false => handle_record(h, m).await,
                }
            }
        })
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

/// Keeps a record of the dead-letter queue as its tenant's dead letter; returns the message id if
/// it must come back (the table could not take it). A body that is not a Herald job names no
/// tenant to keep it for: it is logged and let go.
async fn keep_dead_letter(h: &Herald, m: SqsMessage) -> Option<String> {
    let message_id = m.message_id.clone().unwrap_or_default();
    let Some(store) = &h.dead_letters else {
        tracing::error!(%message_id, "a dead-lettered job where dead letters are not kept; left on the queue");
        return Some(message_id);
    };
    let Ok(job) = serde_json::from_str::<Job>(m.body.as_deref().unwrap_or_default()) else {
        tracing::error!(%message_id, "a dead-lettered message is not a Herald job; dropped");
        return None;
    };
    // The first time the dead-letter queue handed it out: about when it died, and the same on
    // every retry of this record.
    let dead_at = m
        .attributes
        .get("ApproximateFirstReceiveTimestamp")
        .and_then(|t| t.parse().ok())
        .and_then(chrono::DateTime::from_timestamp_millis)
        .unwrap_or_else(herald::domain::now);
    let (tenant_id, request_id) = (job.tenant_id.clone(), job.request_id.clone());
    // SQS moved it after this many receives (the queue's maxReceiveCount).
    let receive_count = h.settings.max_receives;
    let letter = DeadLetter { id: message_id.clone(), job, reason: None, receive_count, dead_at };
    match store.put_dead_letter(&letter).await {
        Ok(()) => {
            tracing::warn!(%message_id, %tenant_id, %request_id, "job dead-lettered; kept for GET /v1/dead-letters");
            None
        }
        Err(e) => {
            tracing::warn!(%message_id, error = %e, "could not keep a dead letter; it comes back");
            Some(message_id)
        }
    }
}
