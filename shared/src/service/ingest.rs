//! Ingest: a validated send plan → catalog resolved → rows stored `queued` → one job per row.

use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::domain::ids::IdStyle;
use crate::domain::limits::{MAX_INLINE_ROWS, MAX_ROWS};
use crate::domain::{
    Audience, FanOutStep, FieldErrors, HeaderKind, Job, MessageSource, PlannedMessage, RecipientRow, SendPlan,
    SendRequest, Template, TenantId,
};
use crate::logging::ACTIVITY;
use crate::ports::{Catalog, JobQueue, OutgoingJob, RequestLog, RowLeases, Segments, StoreError};
use crate::retry;

use super::admission::Admission;
use super::deliver::Deliver;
use super::render::positional_needed;
use super::{deliver, schedule, ServiceError, Settings};

/// What ingesting a send plan needs, and nothing more. Built once by `app`.
pub struct Ingest {
    /// When each row is due.
    pub timing: Arc<super::schedule::Timing>,
    /// Where send requests and their rows are stored.
    pub requests: Arc<dyn RequestLog>,
    /// Fails rows that were stored but could not be queued.
    pub rows: Arc<dyn RowLeases>,
    pub catalog: Arc<dyn Catalog>,
    /// Where an audience's segments are looked up.
    pub segments: Arc<dyn Segments>,
    pub queue: Arc<dyn JobQueue>,
    /// Per-tenant sending allowance.
    pub admission: Admission,
    pub settings: Settings,
    /// Delivers `background: false` requests inline, as the workers would.
    pub deliver: Arc<Deliver>,
}

/// A stored and queued send request with its rows (as they stand when the call answers).
#[derive(Debug, Clone)]
pub struct Accepted {
    pub request: Arc<SendRequest>,
    pub rows: Vec<RecipientRow>,
}

tokio::task_local! {
    /// Set while a call with an `Idempotency-Key` runs: the request it stores gets an id derived
    /// from the key, so a retry after a crash finds the request the first try stored.
    static KEYED: Keyed;
}

/// The idempotency key of the call being handled, as the id its request gets.
struct Keyed {
    id: [u8; 16],
    /// Taken by the first ingest of the call; a second one (none today) gets a fresh id.
    used: AtomicBool,
    /// The request was found already stored and answered again.
    replayed: AtomicBool,
}

/// Runs `call` (one API call carrying an `Idempotency-Key`) so that the send request it stores
/// has an id derived from (tenant, key, the call's fingerprint): the body is part of it, so a
/// key reused with another body once its record expired makes a new request. Returns the
/// call's answer and whether its request had been stored by an earlier try, which the answer
/// then replays.
pub async fn with_idempotency_key<F: std::future::Future>(
    tenant: &TenantId,
    key: &str,
    fingerprint: &str,
    call: F,
) -> (F::Output, bool) {
    let mut h = Sha256::new();
    for part in [tenant.as_str(), key, fingerprint] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.finalize()[..16]);
    let keyed = Keyed { id, used: AtomicBool::new(false), replayed: AtomicBool::new(false) };
    KEYED
        .scope(keyed, async {
            let out = call.await;
            (out, KEYED.with(|k| k.replayed.load(Ordering::Relaxed)))
        })
        .await
}

/// The id of a new send request in `style`: derived from the call's idempotency key if it has
/// one, and whether it was.
fn new_request_id(style: IdStyle) -> (String, bool) {
    let keyed = KEYED.try_with(|k| (!k.used.swap(true, Ordering::Relaxed)).then_some(k.id)).ok().flatten();
    match (keyed, style) {
        (Some(id), IdStyle::Prefixed) => (format!("req_{}", hex::encode(id)), true),
        (Some(id), IdStyle::Uuid) => (uuid::Builder::from_custom_bytes(id).into_uuid().hyphenated().to_string(), true),
        (None, style) => (crate::domain::ids::new_request_id(style), false),
    }
}

/// Runs ingest for one plan. `source` names the API that took it (`native`, `invent`, …).
pub async fn ingest(h: &Ingest, tenant: &TenantId, plan: SendPlan, source: &str) -> Result<Accepted, ServiceError> {
    let (request_id, keyed) = new_request_id(plan.id_style);
    if keyed {
        let found = super::retry_store("looking up a keyed request", 3, || h.requests.get_request(tenant, &request_id));
        if let Some(stored) = found.await? {
            return resume(h, stored).await;
        }
    }
    let (messages, campaign) = resolve_messages(h, tenant, &plan.source).await?;
    check_plan(&plan, &messages)?;
    check_media_links(h, &plan, &messages).await?;
    if let Some(audience) = &plan.audience {
        check_segments(h, tenant, audience).await?;
    }
    // An audience's size is known only once it is fanned out: the request itself is admitted.
    let admitted = if plan.audience.is_some() { 1 } else { plan.recipients.len() as u64 };
    match h.admission.admit(tenant, admitted) {
        Ok(()) => {}
        Err(super::admission::Refusal::Later(wait)) => return Err(ServiceError::RateLimited(wait)),
        Err(super::admission::Refusal::TooMany { cap }) => {
            let mut errs = FieldErrors::new();
            errs.push("recipients", format!("more than this tenant's cap of {cap} recipients a minute"));
            return Err(errs.into());
        }
    }
    let now = crate::domain::now();
    let request = SendRequest {
        id: request_id,
        tenant_id: tenant.clone(),
        created_at: now,
        source: source.to_string(),
        campaign_id: campaign.as_ref().map(|c| c.id.clone()),
        campaign_name: campaign.as_ref().map(|c| c.name.clone()),
        // A send's own window and defaults are more specific than its campaign's, so they win.
        send_window: plan.send_window.or_else(|| campaign.as_ref().and_then(|c| c.send_window.clone())),
        defaults: campaign.map(|c| c.defaults).unwrap_or_default().into_iter().chain(plan.defaults).collect(),
        recipient_count: plan.recipients.len() as u32,
        row_count: (plan.recipients.len() * messages.len()) as u32,
        messages,
        variables: plan.variables,
        header_params: plan.header_params,
        body_params: plan.body_params,
        media: plan.media,
        channel: plan.channel,
        priority: plan.priority,
        messaging_tag: plan.messaging_tag,
        metadata: plan.metadata,
        background: plan.background,
        send_at: plan.send_at,
        send_at_local: plan.send_at_local,
        throttle: plan.throttle,
        audience: plan.audience,
        ordered_member_ids: true,
    };
    if request.audience.is_some() {
        store_and_fan_out(h, &request, keyed).await?;
        tracing::debug!(request_id = %request.id, source, "audience broadcast queued for fan-out");
        return Ok(Accepted { request: Arc::new(request), rows: Vec::new() });
    }
    let mut rows = Vec::with_capacity(request.row_count as usize);
    for (ri, recipient) in plan.recipients.into_iter().enumerate() {
        for (mi, message) in request.messages.iter().enumerate() {
            let seq = rows.len() as u32;
            let mut row = RecipientRow::new(tenant, &request.id, seq, ri as u32, mi as u32);
            row.template_id = message.template_id.clone();
            row.recipient = recipient.clone();
            rows.push(row);
        }
    }
    h.timing.plan(&request, &mut rows, now).await?;
    store_and_queue(h, &request, &rows, keyed, now).await?;
    tracing::debug!(request_id = %request.id, rows = rows.len(), source, "send request queued");
    ACTIVITY.accepted(rows.len());

    if !request.background {
        deliver_inline(h, &rows).await?;
        rows = h.requests.list_rows(tenant, &request.id, None, rows.len() as u32).await?;
    }
    Ok(Accepted { request: Arc::new(request), rows })
}

/// How long storing and queueing a request may take, retries included, before the call is
/// answered `503`: well inside API Gateway's 30 s with the idempotency key's own steps around it.
const STORE_BUDGET: Duration = Duration::from_secs(10);
/// How long failing the rows of a request that could not be queued may take.
const FAIL_BUDGET: Duration = Duration::from_secs(5);

/// Stores the request and its rows, then queues one job per row; both are retried (each is safe
/// to repeat) within [`STORE_BUDGET`]. When that fails, rows that may have been stored are failed,
/// so nothing sends them behind the back of a caller told to send again — unless the call has an
/// idempotency key, whose retry finds the stored request and queues it instead.
async fn store_and_queue(
    h: &Ingest,
    request: &SendRequest,
    rows: &[RecipientRow],
    keyed: bool,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), ServiceError> {
    let tenant = &request.tenant_id;
    // Writing the same request again changes nothing, so a write whose answer was lost is retried.
    let stored =
        store_within(STORE_BUDGET, "storing a send request", || h.requests.insert_request(request, rows)).await;
    if let Err(e) = stored {
        // A try may have landed although its answer was lost.
        if !keyed {
            let landed = retry::within(FAIL_BUDGET, async {
                let found = super::retry_store("reading back a send request", 3, || {
                    h.requests.get_request(tenant, &request.id)
                });
                if !matches!(found.await, Ok(None)) {
                    fail_rows(h, tenant, rows, "Herald could not store this request; send it again").await;
                }
            });
            landed.await;
        }
        return Err(e.into());
    }

    // `background: false` delivers inline after this; its jobs wait one lease as a safety net, so a
    // row left `retrying` (or a process that dies mid-call) is still finished by the workers.
    let jobs: Vec<OutgoingJob> = match request.background {
        true => schedule::jobs_for(rows, now),
        false => Job::for_rows(rows).into_iter().map(|job| OutgoingJob { job, delay: h.settings.lease }).collect(),
    };
    // A second copy of a job is harmless (a row is claimed once), so a failed enqueue is retried.
    let queued = store_within(STORE_BUDGET, "queueing jobs", || h.queue.send_batch(&jobs)).await;
    if let Err(e) = queued {
        // Say so on every row rather than leave them `queued` with no job behind them.
        if !keyed {
            let failing = fail_rows(h, tenant, rows, "Herald could not queue this message; send it again");
            retry::within(FAIL_BUDGET, failing).await;
        }
        return Err(e.into());
    }
    Ok(())
}

/// Every segment an audience names must be the tenant's: another tenant's is as unknown as one
/// that never was.
async fn check_segments(h: &Ingest, tenant: &TenantId, audience: &Audience) -> Result<(), ServiceError> {
    for id in audience.segments.iter().chain(&audience.exclude_segments) {
        if h.segments.get_segment(tenant, id).await?.is_none() {
            return Err(ServiceError::NotFound("segment"));
        }
    }
    Ok(())
}

/// Stores an audience request and queues the first page of its fan-out. When queueing fails the
/// request is canceled, so it never waits for a fan-out that will not come — unless the call has
/// an idempotency key, whose retry finds the stored request and queues its fan-out instead.
async fn store_and_fan_out(h: &Ingest, request: &SendRequest, keyed: bool) -> Result<(), ServiceError> {
    store_within(STORE_BUDGET, "storing a send request", || h.requests.insert_request(request, &[])).await?;
    let jobs = [fan_out_job(request)];
    let queued = store_within(STORE_BUDGET, "queueing a fan-out job", || h.queue.send_batch(&jobs)).await;
    if let Err(e) = queued {
        if !keyed {
            let cancel = super::retry_store("canceling an unqueued request", 5, || {
                h.requests.cancel_request(&request.tenant_id, &request.id, crate::domain::now())
            });
            let error = match retry::within(FAIL_BUDGET, cancel).await {
                Some(Ok(_)) => None,
                Some(Err(e)) => Some(e.to_string()),
                None => Some("it did not finish in time".to_string()),
            };
            if let Some(error) = error {
                tracing::error!(request_id = %request.id, %error, "could not cancel a request whose fan-out was not queued");
            }
        }
        return Err(e.into());
    }
    Ok(())
}

/// The job for the first page of an audience request.
fn fan_out_job(request: &SendRequest) -> OutgoingJob {
    let job = Job {
        tenant_id: request.tenant_id.clone(),
        request_id: request.id.clone(),
        row_ids: Vec::new(),
        fan_out: Some(FanOutStep::first()),
        import: false,
        recount: None,
        event: None,
    };
    OutgoingJob { job, delay: Duration::ZERO }
}

/// [`super::retry_store`] (5 tries) with every retry inside it, however deep, bounded by `budget`.
async fn store_within<T, F, Fut>(budget: Duration, what: &str, call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let run = retry::within(budget, super::retry_store(what, 5, call));
    run.await.unwrap_or_else(|| Err(StoreError::Unavailable(format!("{what} did not finish in time"))))
}

/// Answers again a request that an earlier try under the same idempotency key stored, whatever
/// became of that try (its process may have died before queueing or answering): every row still
/// pending gets a job again. A second job for a row is harmless, since a row is claimed once.
async fn resume(h: &Ingest, request: SendRequest) -> Result<Accepted, ServiceError> {
    let _ = KEYED.try_with(|k| k.replayed.store(true, Ordering::Relaxed));
    let tenant = request.tenant_id.clone();
    if request.audience.is_some() {
        // Its rows' jobs go with the pages that made them; a fan-out that may never have been
        // queued starts again (pages already expanded make no second row).
        let progress = h.requests.progress(&tenant, &request.id).await?;
        if progress.fanned_out_at.is_none() && progress.canceled_at.is_none() {
            let jobs = [fan_out_job(&request)];
            super::retry_store("queueing a fan-out job", 5, || h.queue.send_batch(&jobs)).await?;
        }
        return Ok(Accepted { request: Arc::new(request), rows: Vec::new() });
    }
    let listed = super::retry_store("reading a stored request's rows", 3, || {
        h.requests.list_rows(&tenant, &request.id, None, request.row_count.max(1))
    });
    let rows = listed.await?;
    let now = crate::domain::now();
    let pending: Vec<&RecipientRow> = rows.iter().filter(|r| r.status.is_pending()).collect();
    let jobs = schedule::jobs_for(pending.iter().copied(), now);
    if !jobs.is_empty() {
        super::retry_store("queueing jobs", 5, || h.queue.send_batch(&jobs)).await?;
    }
    tracing::info!(request_id = %request.id, requeued = pending.len(), "idempotency key answered with its stored request");
    Ok(Accepted { request: Arc::new(request), rows })
}

/// Fails rows that were stored but will not be sent (each only while it is still pending).
async fn fail_rows(h: &Ingest, tenant: &TenantId, rows: &[RecipientRow], message: &str) {
    for row in rows {
        let r = super::retry_store("failing an unqueued row", 5, || h.rows.fail_pending(tenant, &row.id, message));
        match (r.await, &h.deliver.events) {
            (Err(e), _) => tracing::error!(row_id = %row.id, error = %e, "could not fail a row that will not be sent"),
            (Ok(true), Some(ev)) => ev.row_id_moved(tenant, &row.id, crate::domain::Status::Failed).await,
            (Ok(_), _) => {}
        }
    }
    if let Err(e) = h.rows.flush_counts().await {
        tracing::warn!(error = %e, "status counts not written; a recount repairs them");
    }
}

/// Delivers rows now, a few at a time, through the same code path as the workers.
async fn deliver_inline(h: &Ingest, rows: &[RecipientRow]) -> Result<(), ServiceError> {
    const CONCURRENCY: usize = 8;
    for chunk in rows.chunks(CONCURRENCY) {
        let results =
            futures::future::join_all(chunk.iter().map(|r| deliver::deliver(&h.deliver, &r.tenant_id, &r.id))).await;
        for r in results {
            if let Err(e) = r {
                super::worker::flush_counts(&h.deliver).await;
                return Err(e.into());
            }
        }
    }
    super::worker::flush_counts(&h.deliver).await;
    if let (Some(ev), Some(first)) = (&h.deliver.events, rows.first()) {
        ev.check_completed(&first.tenant_id, &first.request_id).await;
    }
    Ok(())
}

/// Media links go to providers, which fetch them: https to a public address, so a tenant cannot
/// aim a provider at internal hosts. Loopback (http too) only where the operator allows it.
async fn check_media_links(h: &Ingest, plan: &SendPlan, messages: &[PlannedMessage]) -> Result<(), ServiceError> {
    let header_links = messages.iter().filter_map(|m| m.template.as_ref()?.header.as_ref()?.link.as_deref());
    let links = plan
        .media
        .iter()
        .map(|m| ("media.link", m.link.as_str()))
        .chain(header_links.map(|l| ("template.header.link", l)));
    let mut errs = FieldErrors::new();
    for (field, link) in links {
        if let Err(e) = crate::net::ssrf::check_fetch_url(link, h.settings.allow_loopback_urls).await {
            errs.push(field, e.0);
        }
    }
    errs.finish(()).map_err(Into::into)
}

/// The messages a plan fires, snapshotted from the catalog, and the campaign if one was named.
async fn resolve_messages(
    h: &Ingest,
    tenant: &TenantId,
    source: &MessageSource,
) -> Result<(Vec<PlannedMessage>, Option<crate::domain::Campaign>), ServiceError> {
    let template_msg = |t: Template| PlannedMessage { template_id: Some(t.id.clone()), template: Some(t), flow: None };
    let mut errs = FieldErrors::new();
    let out = match source {
        MessageSource::Campaign { id, template_ids } => {
            let Some(campaign) = h.catalog.get_campaign(tenant, id).await? else {
                errs.push("campaign_id", format!("no campaign with id \"{id}\""));
                return Err(errs.into());
            };
            let chosen: Vec<String> = match template_ids {
                Some(ids) => {
                    for (i, t) in ids.iter().enumerate() {
                        if !campaign.template_ids.contains(t) {
                            errs.push(
                                format!("template_ids[{i}]"),
                                format!("\"{t}\" is not a template of campaign \"{id}\""),
                            );
                        }
                    }
                    ids.clone()
                }
                None => campaign.template_ids.clone(),
            };
            let mut messages = Vec::new();
            // A chosen id outside the campaign is reported above, not as a missing template.
            for t in chosen.iter().filter(|t| campaign.template_ids.contains(t)) {
                match h.catalog.get_template(tenant, t).await? {
                    Some(t) => messages.push(template_msg(t)),
                    None => errs.push(
                        "campaign_id",
                        format!("campaign \"{id}\" lists template \"{t}\", which no longer exists"),
                    ),
                }
            }
            return errs.finish((messages, Some(campaign))).map_err(Into::into);
        }
        MessageSource::TemplateId(id) => match h.catalog.get_template(tenant, id).await? {
            Some(t) => vec![template_msg(t)],
            None => {
                errs.push("template", format!("no template with id \"{id}\""));
                return Err(errs.into());
            }
        },
        MessageSource::Inline(t) => {
            vec![PlannedMessage { template_id: None, template: Some((**t).clone()), flow: None }]
        }
        MessageSource::Messages(texts) => texts
            .iter()
            .map(|text| {
                let now = crate::domain::now();
                let t = Template {
                    id: "message".into(),
                    channel: None,
                    body: text.clone(),
                    subject: None,
                    header: None,
                    language: None,
                    whatsapp: None,
                    created_at: now,
                    updated_at: now,
                };
                PlannedMessage { template_id: None, template: Some(t), flow: None }
            })
            .collect(),
        MessageSource::Flow(f) => vec![PlannedMessage { template_id: None, template: None, flow: Some(f.clone()) }],
    };
    Ok((out, None))
}

/// Refuses a text longer than its channel takes, where the channel is known now (the send's
/// `channel`, or the template's). Placeholders for named values count as empty here: they are
/// only known per recipient, and a row whose rendered text is too long fails before sending.
fn check_lengths(plan: &SendPlan, messages: &[PlannedMessage], errs: &mut FieldErrors) {
    let empty = |_: &str| Some(String::new());
    // A positional value that names fields (`{{first_name}}`) is as short as those may be.
    let params: Vec<String> =
        plan.body_params.iter().map(|p| super::render::render(p, empty, &[]).unwrap_or_default()).collect();
    for (i, t) in messages.iter().enumerate().filter_map(|(i, m)| Some((i, m.template.as_ref()?))) {
        let Some(channel) = plan.channel.or(t.channel) else { continue };
        let Some(max) = crate::domain::limits::max_text_chars(channel) else { continue };
        // A WhatsApp template's text stays with Meta; only its parameters travel.
        if channel == crate::domain::Channel::Whatsapp && t.whatsapp.is_some() {
            continue;
        }
        let Ok(least) = super::render::render(&t.body, empty, &params) else { continue };
        let len = least.chars().count();
        if len > max {
            let field = match &plan.source {
                MessageSource::Messages(_) => format!("messages[{i}].text"),
                MessageSource::Inline(_) => "template.body".to_string(),
                MessageSource::TemplateId(_) => "template".to_string(),
                MessageSource::Campaign { .. } => "campaign_id".to_string(),
                MessageSource::Flow(_) => continue,
            };
            let subject = match &plan.source {
                MessageSource::Messages(_) | MessageSource::Inline(_) => "is".to_string(),
                _ => format!("template \"{}\" is", t.id),
            };
            let named = super::render::render(&t.body, |_| Some("x".into()), &params).ok() != Some(least);
            let note = if named { ", not counting its named placeholders" } else { "" };
            errs.push(field, format!("{subject} {len} characters long{note}; {channel} takes at most {max}"));
        }
    }
}

/// Rules that need the resolved templates: positional values, media headers, sizes.
fn check_plan(plan: &SendPlan, messages: &[PlannedMessage]) -> Result<(), ServiceError> {
    let mut errs = FieldErrors::new();
    for t in messages.iter().filter_map(|m| m.template.as_ref()) {
        let name = if t.id == "message" || t.id == "inline" {
            "the template".to_string()
        } else {
            format!("template \"{}\"", t.id)
        };
        // A WhatsApp template's parameter bindings take positional values too.
        let bound = |pick: fn(&crate::domain::WhatsappTemplate) -> &Vec<String>| {
            t.whatsapp.as_ref().map(|w| pick(w).iter().map(|p| positional_needed(p)).max().unwrap_or(0)).unwrap_or(0)
        };
        let body_needs = positional_needed(&t.body).max(bound(|w| &w.body_params));
        if plan.body_params.len() < body_needs {
            errs.push(
                "body_params",
                format!("{name} uses {{{{{body_needs}}}}}: give at least {body_needs} body_params"),
            );
        }
        if let Some(h) = &t.header {
            if h.kind == HeaderKind::Text {
                let needs = h.text.as_deref().map(positional_needed).unwrap_or(0).max(bound(|w| &w.header_params));
                if plan.header_params.len() < needs {
                    errs.push(
                        "header_params",
                        format!("{name} has {{{{{needs}}}}} in its header: give at least {needs} header_params"),
                    );
                }
            } else if h.link.is_none() && plan.media.is_none() {
                let kind =
                    serde_json::to_value(h.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
                let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
                errs.push("media.link", format!("{name} has {article} {kind} header: give media.link"));
            }
        }
    }
    check_lengths(plan, messages, &mut errs);
    let rows = plan.recipients.len() * messages.len();
    if rows > MAX_ROWS {
        errs.push(
            "recipients",
            format!("{rows} recipient rows (recipients × templates) exceed the limit of {MAX_ROWS}"),
        );
    }
    if plan.audience.is_some() && !plan.background {
        errs.push("background", "must be true for an audience: its rows are made through the queue");
    }
    if !plan.background {
        if rows > MAX_INLINE_ROWS {
            errs.push(
                "background",
                format!("must be true for more than {MAX_INLINE_ROWS} rows (inline delivery takes at most {MAX_INLINE_ROWS}; this request has {rows})"),
            );
        }
        if plan.send_at.is_some_and(|t| t > crate::domain::now()) {
            errs.push("send_at", "a scheduled send needs background: true");
        }
        for (field, set) in [
            ("send_at_local", plan.send_at_local.is_some()),
            ("send_window", plan.send_window.is_some()),
            ("throttle", plan.throttle.is_some()),
        ] {
            if set {
                errs.push(field, "a scheduled send needs background: true");
            }
        }
    }
    errs.finish(()).map_err(Into::into)
}
