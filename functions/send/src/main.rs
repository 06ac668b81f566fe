//! Herald's send Lambda: an SQS batch → `deliver` each job → `SqsBatchResponse` naming only the
//! jobs that must come back (transient failures after their backoff, and store errors).
//!
//! Until the AWS adapters land, it runs on the embedded adapters in `HERALD_DATA_DIR`
//! (default `/tmp/herald`), which is what `cargo lambda watch` uses locally.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::StreamExt;
use lambda_runtime::{service_fn, LambdaEvent};
use std::path::PathBuf;
use std::sync::Arc;
use tracing::Instrument;

use herald::adapters::embedded;
use herald::app::{Herald, Settings, Stores};
use herald::ports::ReceivedJob;
use herald::providers::{sandbox::Sandbox, Providers};
use herald::service::worker::{handle_job, JobResult};

/// Jobs of one batch delivered at once.
const CONCURRENCY: usize = 10;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt().json().with_target(false).without_time().init();
    let dir = PathBuf::from(std::env::var("HERALD_DATA_DIR").unwrap_or_else(|_| "/tmp/herald".into()));
    let settings = Settings::default();
    let (store, queue) = embedded::open(&dir, settings.max_receives)?;
    let sandbox = Arc::new(Sandbox::new(store.clone(), Default::default()));
    let h = Arc::new(Herald::new(Stores::from_one(store), queue, Providers::all(sandbox), settings));
    lambda_runtime::run(service_fn(|event: LambdaEvent<SqsEvent>| {
        let h = h.clone();
        async move { Ok::<_, lambda_runtime::Error>(handle_batch(h, event.payload).await) }
    }))
    .await
}

/// Delivers every record; a failed record never fails the batch, it is named in the response.
async fn handle_batch(h: Arc<Herald>, event: SqsEvent) -> SqsBatchResponse {
    let failures: Vec<String> = futures::stream::iter(event.records)
        .map(|m| {
            let h = h.clone();
            async move { handle_record(h, m).await }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|failed| async move { failed })
        .collect()
        .await;
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
        match handle_job(h.clone(), &received).await {
            JobResult::Delete => None,
            JobResult::Retry(after) => {
                // Back off by pushing the message's visibility out, then report it so SQS keeps it.
                if let Err(e) = h.queue.change_visibility(&received.receipt, after).await {
                    tracing::warn!(error = %e, "could not delay the retry; it returns after the visibility timeout");
                }
                Some(message_id)
            }
            JobResult::Leave => Some(message_id),
        }
    }
    .instrument(span)
    .await
}
