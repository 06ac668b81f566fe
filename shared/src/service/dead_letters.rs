//! A tenant's dead-lettered jobs: listed with why each died when Herald can tell, and redriven
//! one at a time as a fresh job. The worker drops a redriven job whose rows have ended, so a
//! redrive sends only what is still pending.

use futures::{StreamExt, TryStreamExt};
use std::time::Duration;

use crate::domain::{Job, TenantId};
use crate::ports::{DeadLetter, DeadLetterCursor, DeadLetterPage, DeadLetters, JobQueue, OutgoingJob};
use crate::ports::{StatusLookup, StoreResult};

/// Rows read at once to find the reasons of a page's dead letters.
const REASONS_AT_ONCE: usize = 8;

/// What a dead-lettered job was doing, as the API names it.
pub fn kind(job: &Job) -> &'static str {
    if job.fan_out.is_some() {
        "fan_out"
    } else if job.import {
        "import"
    } else if job.recount.is_some() {
        "recount"
    } else if job.event.is_some() {
        "event"
    } else {
        "rows"
    }
}

/// A page of the tenant's dead letters. A row job the queue kept no reason for takes its first
/// row's error: the worker writes why on the row as it gives the job up.
pub async fn list(
    dead: &dyn DeadLetters,
    rows: &dyn StatusLookup,
    tenant: &TenantId,
    cursor: Option<&DeadLetterCursor>,
    limit: u32,
) -> StoreResult<DeadLetterPage> {
    let mut page = dead.list_dead_letters(tenant, cursor, limit).await?;
    page.dead_letters = futures::stream::iter(page.dead_letters)
        .map(|d| with_reason(rows, tenant, d))
        .buffered(REASONS_AT_ONCE)
        .try_collect()
        .await?;
    Ok(page)
}

async fn with_reason(rows: &dyn StatusLookup, tenant: &TenantId, mut d: DeadLetter) -> StoreResult<DeadLetter> {
    if d.reason.is_none() && kind(&d.job) == "rows" {
        if let Some(first) = d.job.row_ids.first() {
            d.reason = rows.get_row(tenant, first).await?.and_then(|r| r.error_message);
        }
    }
    Ok(d)
}

/// Takes the tenant's dead letter `id` and queues its job again as a fresh job (no receives
/// used up); `false` when the tenant has no such dead letter. If the job cannot be queued, the
/// dead letter is kept again, so a failed redrive loses nothing.
pub async fn redrive(dead: &dyn DeadLetters, queue: &dyn JobQueue, tenant: &TenantId, id: &str) -> StoreResult<bool> {
    let Some(letter) = dead.take_dead_letter(tenant, id).await? else { return Ok(false) };
    let fresh = OutgoingJob { job: letter.job.clone(), delay: Duration::ZERO };
    if let Err(e) = queue.send_batch(&[fresh]).await {
        if let Err(kept) = dead.put_dead_letter(&letter).await {
            tracing::error!(message_id = %letter.id, error = %kept, "a dead letter taken for a failed redrive is lost");
        }
        return Err(e);
    }
    tracing::info!(message_id = %id, request_id = %letter.job.request_id, "dead letter redriven");
    Ok(true)
}
