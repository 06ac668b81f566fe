//! Fan-out: one page of an audience's members → recipient rows and their jobs, plus the job for
//! the next page. A broadcast to a million contacts is never held in memory nor made inside one
//! API call: each page is one job on the same queue as the rows, and memory stays flat whatever
//! the audience's size.
//!
//! A page expanded twice (a crash between its rows and its jobs, a queue that delivers a job
//! twice) makes no second row: a row's id derives from (request, contact, message), so a contact
//! in two of the audience's segments gets one message too.

use std::sync::Arc;
use std::time::Duration;

use crate::domain::{FanOutStep, Job, RecipientRow, RecipientSpec, SendRequest, TenantId};
use crate::logging::ACTIVITY;
use crate::ports::{JobQueue, MembersError, OutgoingJob, RequestLog, Segments, StoreError};

use super::deliver::backoff;
use super::worker::JobResult;
use super::Settings;

/// What fanning out needs, and nothing more. Built once by `app`.
pub struct FanOut {
    pub log: Arc<dyn RequestLog>,
    /// When each row is due.
    pub timing: Arc<super::schedule::Timing>,
    pub segments: Arc<dyn Segments>,
    pub queue: Arc<dyn JobQueue>,
    pub settings: Settings,
}

/// Pages one fan-out job expands at most, one after another, before it hands on to the next
/// job: fan-out keeps its pace whatever backlog of row jobs is queued ahead of its next job.
const PAGES_PER_JOB: u32 = 10;
/// ... or for this long, whichever comes first (well inside the queue's visibility timeout).
const JOB_BUDGET: Duration = Duration::from_secs(2);

/// Why a page was not expanded.
#[derive(Debug)]
enum PageError {
    /// The store or queue blinked: everything a page does is safe to repeat, so it comes again.
    Transient(StoreError),
    /// It would fail the same way every time (a cursor no store gave out, data that does not
    /// read back): the fan-out stops here, with this reason.
    Permanent { reason: &'static str, detail: String },
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => PageError::Transient(e),
            StoreError::Corrupt(_) => {
                PageError::Permanent { reason: "stored data it needs does not read back", detail: e.to_string() }
            }
        }
    }
}

/// Expands pages from `step` on: each page's rows are stored and their jobs queued at once; the
/// job for the page after the last one expanded takes this job's place. A crash in the middle
/// means this job comes again and expands its pages again, which makes no second row.
pub async fn expand(h: &FanOut, job: &Job, step: &FanOutStep) -> JobResult {
    let started = std::time::Instant::now();
    // A send request never changes once stored: read once for all the pages of this job.
    let request = match h.log.get_request(&job.tenant_id, &job.request_id).await {
        Ok(Some(r)) if r.audience.is_some() => r,
        Ok(_) => {
            tracing::error!(request_id = %job.request_id, "fan-out job for no stored audience request; dropped");
            return JobResult::Delete;
        }
        Err(e) => return page_failed(h, job, step, None, e.into()).await,
    };
    let mut step = step.clone();
    for _ in 0..PAGES_PER_JOB {
        let next = match expand_page(h, &request, &step).await {
            Ok(next) => next,
            Err(e) => {
                let segment = request.audience.as_ref().and_then(|a| a.segments.get(step.segment as usize));
                return page_failed(h, job, &step, segment.map(String::as_str), e).await;
            }
        };
        let Some(next) = next else { return JobResult::Delete };
        step = next;
        if started.elapsed() >= JOB_BUDGET {
            break;
        }
    }
    JobResult::Replace(vec![OutgoingJob { job: Job { fan_out: Some(step), ..job.clone() }, delay: Duration::ZERO }])
}

/// A page that failed: a transient failure comes again after a pause; a permanent one ends the
/// fan-out as failed (the rows made so far still send) and the job with it, logged once.
async fn page_failed(h: &FanOut, job: &Job, step: &FanOutStep, segment: Option<&str>, e: PageError) -> JobResult {
    let again = || {
        let job = Job { fan_out: Some(step.clone()), ..job.clone() };
        JobResult::Replace(vec![OutgoingJob { job, delay: backoff(&h.settings, 1, None) }])
    };
    let (reason, detail) = match e {
        PageError::Transient(e) => {
            tracing::warn!(request_id = %job.request_id, page = step.page, error = %e, "fan-out page failed; it comes again");
            return again();
        }
        PageError::Permanent { reason, detail } => (reason, detail),
    };
    let at = segment.map(|s| format!(" in segment \"{s}\"")).unwrap_or_default();
    let pages = if step.page == 1 { "page" } else { "pages" };
    let reason =
        format!("fan-out stopped{at} after {} {pages} of members: {reason}; the rows made still send", step.page);
    match h.log.fail_fan_out(&job.tenant_id, &job.request_id, crate::domain::now(), &reason).await {
        Ok(()) => {
            tracing::error!(request_id = %job.request_id, page = step.page, error = %detail, "{reason}");
            JobResult::Delete
        }
        Err(e) => {
            // Not recorded, so not ended: the page comes again, fails again, and is recorded then.
            tracing::warn!(request_id = %job.request_id, error = %e, "could not record a failed fan-out; it comes again");
            again()
        }
    }
}

/// Expands one page of `request`'s audience: its rows stored, their jobs queued. The step after
/// it, or `None` once the audience is done (or the request canceled).
async fn expand_page(h: &FanOut, request: &SendRequest, step: &FanOutStep) -> Result<Option<FanOutStep>, PageError> {
    let tenant = &request.tenant_id;
    let Some(audience) = &request.audience else { return Ok(None) };
    if h.log.progress(tenant, &request.id).await?.canceled_at.is_some() {
        return Ok(None);
    }
    let Some(segment) = audience.segments.get(step.segment as usize) else {
        h.log.finish_fan_out(tenant, &request.id, crate::domain::now()).await?;
        return Ok(None);
    };
    let (members, next_cursor) =
        match h.segments.list_members(tenant, segment, step.cursor.as_deref(), FanOutStep::PAGE as u32).await {
            Ok(page) => (page.contact_ids, page.next_cursor),
            // A segment deleted while its broadcast fans out has no more members to give.
            Err(MembersError::NoSegment) => (Vec::new(), None),
            Err(MembersError::BadCursor(e)) => {
                let reason = "the store refused the cursor to its members";
                return Err(PageError::Permanent { reason, detail: format!("cursor {e}") });
            }
            Err(MembersError::Store(e)) => return Err(e.into()),
        };
    let members = without_excluded(h, tenant, &audience.exclude_segments, members).await?;
    let mut rows = rows_for(request, step.page, &members);
    if !rows.is_empty() {
        let now = crate::domain::now();
        h.timing.plan(request, &mut rows, now).await?;
        let queued = h.log.add_rows(tenant, &request.id, &rows).await?;
        let jobs = super::schedule::jobs_for(rows.iter().filter(|r| queued.contains(&r.id)), now);
        if !jobs.is_empty() {
            h.queue.send_batch(&jobs).await?;
        }
        ACTIVITY.accepted(queued.len());
    }
    let next = match next_cursor {
        Some(cursor) => FanOutStep { segment: step.segment, cursor: Some(cursor), page: step.page + 1 },
        None => FanOutStep { segment: step.segment + 1, cursor: None, page: step.page + 1 },
    };
    if next.segment as usize >= audience.segments.len() {
        h.log.finish_fan_out(tenant, &request.id, crate::domain::now()).await?;
        tracing::info!(request_id = %request.id, pages = step.page + 1, "fan-out finished");
        return Ok(None);
    }
    Ok(Some(next))
}

/// `members` less those in any of `excluded`.
async fn without_excluded(
    h: &FanOut,
    tenant: &TenantId,
    excluded: &[String],
    members: Vec<String>,
) -> Result<Vec<String>, StoreError> {
    if excluded.is_empty() {
        return Ok(members);
    }
    let mut kept = Vec::with_capacity(members.len());
    for contact in members {
        let of = h.segments.segments_of(tenant, &contact).await?;
        if !of.iter().any(|s| excluded.contains(s)) {
            kept.push(contact);
        }
    }
    Ok(kept)
}

/// The rows of one page: one per member and message, in the page's own band of `seq`s.
fn rows_for(request: &SendRequest, page: u32, members: &[String]) -> Vec<RecipientRow> {
    let per = request.messages.len().max(1) as u32;
    let mut rows = Vec::with_capacity(members.len() * per as usize);
    for (i, contact) in members.iter().enumerate() {
        for (mi, message) in request.messages.iter().enumerate() {
            let seq = page * FanOutStep::SEQ_STRIDE + i as u32 * per + mi as u32;
            let index = page * FanOutStep::PAGE as u32 + i as u32;
            let mut row = RecipientRow::new(&request.tenant_id, &request.id, seq, index, mi as u32);
            row.id = match request.ordered_member_ids {
                true => RecipientRow::id_for_member(&request.id, contact, mi as u32),
                false => RecipientRow::hashed_member_id(&request.id, contact, mi as u32),
            };
            row.template_id = message.template_id.clone();
            row.recipient = RecipientSpec { contact_id: Some(contact.clone()), ..Default::default() };
            rows.push(row);
        }
    }
    rows
}
