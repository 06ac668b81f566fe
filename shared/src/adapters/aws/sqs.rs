//! The job queue on SQS: `SendMessageBatch` in groups of 10 with the failed entries retried,
//! `DelaySeconds` up to 900 s, waits re-sent as fresh messages (`SendMessageBatch`, then the
//! received one deleted) so they use up no receives. Longer waits go to EventBridge Scheduler
//! when the stack has a schedule group ([`Schedules`]); without one they hop, 15 minutes at a time.

use async_trait::async_trait;
use aws_sdk_sqs::types::{MessageSystemAttributeName, SendMessageBatchRequestEntry};
use std::time::Duration;

use super::scheduler::Schedules;
use super::sdk_text;
use crate::ports::{JobQueue, OutgoingJob, ReceivedJob, StoreError, StoreResult};
use crate::retry::Policy;

/// SQS's largest delay and batch.
const MAX_DELAY_SECONDS: u64 = 900;
const BATCH: usize = 10;

/// SQS counts whole seconds: round up, so a short backoff is never zero.
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A delay as SQS's `DelaySeconds`: rounded up, at most 15 minutes.
fn delay_seconds(d: Duration) -> i32 {
    whole_seconds(d).min(MAX_DELAY_SECONDS) as i32
}

pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    schedules: Option<Schedules>,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: String) -> SqsQueue {
        SqsQueue { client, url, schedules: None }
    }

    /// Jobs due more than 15 minutes ahead go on one-time schedules instead of hopping.
    pub fn with_schedules(mut self, schedules: Schedules) -> SqsQueue {
        self.schedules = Some(schedules);
        self
    }

    /// Ten entries per call; a few calls in flight at once.
    async fn send_now(&self, jobs: &[OutgoingJob]) -> StoreResult<()> {
        let chunks: Vec<&[OutgoingJob]> = jobs.chunks(BATCH).collect();
        for group in chunks.chunks(8) {
            let results = futures::future::join_all(group.iter().map(|c| self.send_chunk(c))).await;
            results.into_iter().collect::<StoreResult<Vec<()>>>()?;
        }
        Ok(())
    }

    async fn send_chunk(&self, chunk: &[OutgoingJob]) -> StoreResult<()> {
        let mut pending: Vec<(String, String, i32)> = chunk
            .iter()
            .enumerate()
            .map(|(i, j)| {
                let body = serde_json::to_string(&j.job).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                Ok((i.to_string(), body, delay_seconds(j.delay)))
            })
            .collect::<StoreResult<_>>()?;
        // The entries SQS did not take are re-sent: those rounds are this call's own retries,
        // under the one policy and within the caller's deadline.
        let mut attempts = Policy::STORE.attempts();
        while attempts.next().await {
            let attempt = attempts.tried();
            let entries = pending
                .iter()
                .map(|(id, body, delay)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(id)
                        .message_body(body)
                        .delay_seconds(*delay)
                        .build()
                        .map_err(|e| StoreError::Unavailable(e.to_string()))
                })
                .collect::<StoreResult<Vec<_>>>()?;
            let out =
                match self.client.send_message_batch().queue_url(&self.url).set_entries(Some(entries)).send().await {
                    Ok(out) => out,
                    Err(e) => {
                        tracing::warn!(error = %sdk_text(&e), attempt, "SendMessageBatch failed; retrying");
                        continue;
                    }
                };
            if let Some(bad) = out.failed().iter().find(|f| f.sender_fault()) {
                return Err(StoreError::Unavailable(format!(
                    "SQS refused a job: {} {}",
                    bad.code(),
                    bad.message().unwrap_or_default()
                )));
            }
            let failed: Vec<&str> = out.failed().iter().map(|f| f.id()).collect();
            pending.retain(|(id, ..)| failed.contains(&id.as_str()));
            if pending.is_empty() {
                return Ok(());
            }
            tracing::warn!(failed = pending.len(), attempt, "SQS did not take every job; retrying those");
        }
        Err(StoreError::Unavailable(format!(
            "SQS did not take {} job(s) after {} tries",
            pending.len(),
            attempts.tried()
        )))
    }
}

#[async_trait]
impl JobQueue for SqsQueue {
    async fn send_batch(&self, jobs: &[OutgoingJob]) -> StoreResult<()> {
        let Some(schedules) = &self.schedules else {
            return self.send_now(jobs).await;
        };
        let (later, soon): (Vec<OutgoingJob>, Vec<OutgoingJob>) =
            jobs.iter().cloned().partition(|j| whole_seconds(j.delay) > MAX_DELAY_SECONDS);
        self.send_now(&soon).await?;
        if !later.is_empty() {
            schedules.put(&later, crate::domain::now()).await?;
        }
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration) -> StoreResult<Vec<ReceivedJob>> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, BATCH) as i32)
            .visibility_timeout(visibility.as_secs().clamp(0, 43_200) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(sdk_text(&e)))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| ReceivedJob {
                message_id: m.message_id().unwrap_or_default().to_string(),
                receipt: m.receipt_handle().unwrap_or_default().to_string(),
                body: m.body().unwrap_or_default().to_string(),
                receive_count: m
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1),
            })
            .collect())
    }

    async fn delete(&self, receipt: &str) -> StoreResult<()> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(sdk_text(&e)))?;
        Ok(())
    }

    async fn replace(&self, received: &ReceivedJob, jobs: &[OutgoingJob]) -> StoreResult<()> {
        // Fresh messages, so the waits use up none of the job's receives (SQS cannot reset a
        // message's receive count); a wait beyond 15 minutes is scheduled, or without a schedule
        // group hops: it comes back early, finds its row not due, and goes back again. If the
        // delete fails, two copies are out, which is harmless: a row is claimed once.
        self.send_batch(jobs).await?;
        self.delete(&received.receipt).await
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> StoreResult<()> {
        let secs = whole_seconds(timeout);
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(secs.min(43_200) as i32)
            .send()
            .await
            .map_err(|e| StoreError::Unavailable(sdk_text(&e)))?;
        Ok(())
    }
}
