//! Status events: when a row moves (a send outcome, a provider callback, a cancel) or a request
//! completes, each of the tenant's subscriptions that asks for it gets a job on the send queue,
//! and the worker posts the event signed per Standard Webhooks, retrying on the settings'
//! schedule until a 2xx, then keeping it as a dead letter.
//!
//! One event per subscription per move: events are emitted where the store confirmed that the
//! write moved the row. The crash window between a move and its emission is closed by emitting
//! again where the work comes again: a send job received again that finds its row already
//! terminal, and a provider's status report repeated for a row already in that status (the
//! provider got no answer). Event ids derive from (subscription, row, status), so such a repeat
//! carries the id the receiver already has and it drops it, as Standard Webhooks asks receivers to.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::events::{
    event_id, event_type, EventDelivery, EventFailure, EventJob, EventSubscription, TwilioForm, COMPLETED,
};
use crate::domain::{Job, RecipientRow, RowView, SendRequest, Status, TenantId};
use crate::net::ssrf;
use crate::ports::{ApiKeys, EventStore, JobQueue, OutgoingJob, Progress, RequestLog, StatusLookup, StoreResult};

use super::twilio_status;
use super::worker::JobResult;
use super::Settings;

/// How long a tenant's subscriptions are trusted from memory: a new subscription reaches the
/// other processes (Lambda) within this; this process forgets at once on its own writes.
const CACHE_TTL: Duration = Duration::from_secs(5);
const CACHE_MAX: usize = 1024;
/// SQS's longest delay: a longer wait hops there in steps of this.
pub(super) const MAX_HOP: Duration = Duration::from_secs(900);
/// Rows a cancel's event scan reads per job.
const SCAN_PAGE: u32 = 200;

/// What emitting and posting events needs. Built once by `app`.
pub struct Events {
    pub store: Arc<dyn EventStore>,
    pub queue: Arc<dyn JobQueue>,
    pub log: Arc<dyn RequestLog>,
    pub lookup: Arc<dyn StatusLookup>,
    /// Where the tenant's Twilio signing secret is kept (its settings).
    pub keys: Arc<dyn ApiKeys>,
    /// The Twilio dialect's status callback form.
    twilio_form: TwilioForm,
    pub(super) http: reqwest::Client,
    pub(super) allow_loopback: bool,
    pub(super) schedule: Vec<Duration>,
    subs: Mutex<HashMap<TenantId, Cached>>,
    /// Whether the tenant has a Twilio signing secret, and when that was read.
    signs: Mutex<HashMap<TenantId, (Instant, bool)>>,
    requests: Mutex<HashMap<(TenantId, String), Known>>,
}

/// A tenant's subscriptions, and when they were read.
type Cached = (Instant, Arc<Vec<EventSubscription>>);

/// A request's campaign, as a row's API view names it.
type Campaign = (Option<String>, Option<String>);

/// What emitting reads of a request, once: its campaign, and the request itself when it is a
/// Twilio message with a status callback.
#[derive(Clone, Default)]
struct Known {
    campaign: Campaign,
    twilio: Option<Arc<SendRequest>>,
}

impl Events {
    pub fn new(
        store: Arc<dyn EventStore>,
        queue: Arc<dyn JobQueue>,
        log: Arc<dyn RequestLog>,
        lookup: Arc<dyn StatusLookup>,
        keys: Arc<dyn ApiKeys>,
        twilio_form: TwilioForm,
        settings: &Settings,
    ) -> Events {
        // The webhook channel's client: no redirects, and names resolved to public addresses only.
        let http = reqwest::Client::builder()
            .timeout(settings.event_timeout)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(ssrf::PublicResolver { allow_loopback: settings.allow_loopback_urls }))
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Events {
            store,
            queue,
            log,
            lookup,
            keys,
            twilio_form,
            http,
            allow_loopback: settings.allow_loopback_urls,
            schedule: settings.event_retry_schedule.clone(),
            subs: Mutex::default(),
            signs: Mutex::default(),
            requests: Mutex::default(),
        }
    }

    /// Drops the tenant's cached subscriptions and signing secret (after this process changed them).
    pub fn forget(&self, tenant: &TenantId) {
        self.subs.lock().unwrap_or_else(|p| p.into_inner()).remove(tenant);
        self.signs.lock().unwrap_or_else(|p| p.into_inner()).remove(tenant);
    }

    /// Whether the tenant has a Twilio signing secret (so its Twilio messages' status callbacks
    /// are posted), from memory for a few seconds; `false` when it cannot be read (logged).
    async fn twilio_signs(&self, tenant: &TenantId) -> bool {
        if let Some((at, signs)) = self.signs.lock().unwrap_or_else(|p| p.into_inner()).get(tenant) {
            if at.elapsed() < CACHE_TTL {
                return *signs;
            }
        }
        let signs = match self.keys.get_settings(tenant).await {
            Ok(s) => s.twilio_signing_secret.is_some(),
            Err(e) => {
                tracing::error!(%tenant, error = %e, "could not read tenant settings; Twilio status callbacks not posted");
                return false;
            }
        };
        let mut cache = self.signs.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(tenant.clone(), (Instant::now(), signs));
        signs
    }

    /// The tenant's subscriptions, from memory for a few seconds.
    async fn subscriptions(&self, tenant: &TenantId) -> StoreResult<Arc<Vec<EventSubscription>>> {
        if let Some((at, subs)) = self.subs.lock().unwrap_or_else(|p| p.into_inner()).get(tenant) {
            if at.elapsed() < CACHE_TTL {
                return Ok(subs.clone());
            }
        }
        let subs = Arc::new(self.store.list_subscriptions(tenant).await?);
        let mut cache = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(tenant.clone(), (Instant::now(), subs.clone()));
        Ok(subs)
    }

    /// The tenant's subscriptions that ask for `kind`; none when they cannot be read (logged).
    async fn wanting(&self, tenant: &TenantId, kind: &str) -> Vec<EventSubscription> {
        match self.subscriptions(tenant).await {
            Ok(subs) => subs.iter().filter(|s| s.wants(kind)).cloned().collect(),
            Err(e) => {
                tracing::error!(%tenant, error = %e, "could not read event subscriptions; events not emitted");
                Vec::new()
            }
        }
    }

    /// Emits the event of the row's current status (the store confirmed the move to it).
    pub async fn row_moved(&self, row: &RecipientRow) {
        self.rows_moved(&row.tenant_id, &row.request_id, std::slice::from_ref(row)).await
    }

    /// [`Events::row_moved`] for a row known by id: read only if someone listens.
    pub async fn row_id_moved(&self, tenant: &TenantId, row_id: &str, status: Status) {
        self.emit_by_id(tenant, row_id, status, false).await
    }

    /// A report of `status` came again for a row already in it. A provider repeats a report it got
    /// no answer to, and this process may have died between moving the row and queueing its
    /// event: the event goes out again, with the id it had, which receivers that have it drop.
    /// A row that has since moved on emits nothing (its later move emitted its own event).
    pub async fn row_id_reported_again(&self, tenant: &TenantId, row_id: &str, status: Status) {
        self.emit_by_id(tenant, row_id, status, true).await
    }

    async fn emit_by_id(&self, tenant: &TenantId, row_id: &str, status: Status, only_if_still: bool) {
        let Some(kind) = event_type(status) else { return };
        if self.wanting(tenant, kind).await.is_empty() && !self.twilio_signs(tenant).await {
            return;
        }
        match self.lookup.get_row(tenant, row_id).await {
            Ok(Some(row)) if !only_if_still || row.status == status => self.row_moved(&row).await,
            Ok(_) => {}
            Err(e) => tracing::error!(%row_id, error = %e, "could not read a moved row; its event is not emitted"),
        }
    }

    /// Emits the events of rows of one request that moved, with one subscription lookup.
    pub async fn rows_moved(&self, tenant: &TenantId, request_id: &str, rows: &[RecipientRow]) {
        if self.twilio_signs(tenant).await {
            if let Some(request) = self.known(tenant, request_id).await.twilio {
                self.enqueue(&twilio_status::jobs(self.twilio_form, &request, rows)).await;
            }
        }
        let subs = match self.subscriptions(tenant).await {
            Ok(s) if !s.is_empty() => s,
            Ok(_) => return,
            Err(e) => {
                tracing::error!(%tenant, error = %e, "could not read event subscriptions; events not emitted");
                return;
            }
        };
        let campaign = self.known(tenant, request_id).await.campaign;
        let mut jobs = Vec::new();
        for row in rows {
            let Some(kind) = event_type(row.status) else { continue };
            let view = RowView { row, broadcast_id: campaign.0.as_deref(), broadcast_name: campaign.1.as_deref() };
            let at = row.times.get(&row.status).copied().unwrap_or_else(crate::domain::now);
            let body = json!({"type": kind, "timestamp": at, "data": view.to_json()}).to_string();
            for sub in subs.iter().filter(|s| s.wants(kind)) {
                let id = event_id(tenant, &sub.id, &row.id, row.status.as_str());
                jobs.push(delivery_job(tenant, request_id, &sub.id, id, kind, &body));
            }
        }
        self.enqueue(&jobs).await;
    }

    /// What emitting needs of a request, cached (requests never change).
    async fn known(&self, tenant: &TenantId, request_id: &str) -> Known {
        let key = (tenant.clone(), request_id.to_string());
        if let Some(c) = self.requests.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return c.clone();
        }
        let found = match self.log.get_request(tenant, request_id).await {
            Ok(Some(r)) => {
                let twilio = twilio_status::callback_url(&r).is_some().then(|| Arc::new(r.clone()));
                Known { campaign: (r.campaign_id, r.campaign_name), twilio }
            }
            _ => return Known::default(),
        };
        let mut cache = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, found.clone());
        found
    }

    async fn enqueue(&self, jobs: &[OutgoingJob]) {
        for chunk in jobs.chunks(10) {
            let sent = super::retry_store("queueing status events", 5, || self.queue.send_batch(chunk)).await;
            if let Err(e) = sent {
                tracing::error!(events = chunk.len(), error = %e, "could not queue status events; they are lost");
            }
        }
    }

    /// After a cancel that `at` made: its rows' events go out from a paged job.
    pub async fn canceled(&self, tenant: &TenantId, request_id: &str, at: DateTime<Utc>) {
        if self.wanting(tenant, "message.canceled").await.is_empty()
            && self.wanting(tenant, COMPLETED).await.is_empty()
            && !self.twilio_signs(tenant).await
        {
            return;
        }
        let job = Job::event(tenant, request_id, EventJob::Canceled { at, after: None });
        self.enqueue(&[OutgoingJob { job, delay: Duration::ZERO }]).await;
    }

    /// After rows of the request moved: if every row is terminal and fan-out is over, emits
    /// `broadcast.completed` once (a mark in the store decides who emits). Counts kept apart from
    /// the rows are flushed first, so the moves just made are counted.
    pub async fn check_completed(&self, tenant: &TenantId, request_id: &str) {
        if self.wanting(tenant, COMPLETED).await.is_empty() {
            return;
        }
        if let Err(e) = self.complete(tenant, request_id).await {
            tracing::warn!(%request_id, error = %e, "could not check whether the request completed");
        }
    }

    async fn complete(&self, tenant: &TenantId, request_id: &str) -> StoreResult<()> {
        self.log.flush_counts().await?;
        let Some(request) = self.log.get_request(tenant, request_id).await? else { return Ok(()) };
        // Progress before counts: once fan-out is seen over, every row it made is counted.
        let progress = self.log.progress(tenant, request_id).await?;
        let counts = self.log.count_rows(tenant, request_id).await?.by_status;
        if counts.iter().any(|(s, n)| s.is_pending() && *n > 0) {
            return Ok(());
        }
        let fanning_out = request.audience.is_some() && progress.fanned_out_at.is_none();
        if fanning_out && progress.canceled_at.is_none() {
            // The last rows went before fan-out wrote that it is over: look again shortly.
            let job = Job::event(tenant, request_id, EventJob::Completion);
            self.enqueue(&[OutgoingJob { job, delay: Duration::from_secs(1) }]).await;
            return Ok(());
        }
        if !self.store.mark_completed(tenant, request_id).await? {
            return Ok(());
        }
        let at = crate::domain::now();
        let data = completed_json(&request, &counts, &progress);
        let body = json!({"type": COMPLETED, "timestamp": at, "data": data}).to_string();
        let jobs: Vec<OutgoingJob> = self
            .wanting(tenant, COMPLETED)
            .await
            .iter()
            .map(|s| {
                let id = event_id(tenant, &s.id, request_id, "completed");
                delivery_job(tenant, request_id, &s.id, id, COMPLETED, &body)
            })
            .collect();
        self.enqueue(&jobs).await;
        Ok(())
    }
}

fn delivery_job(tenant: &TenantId, request_id: &str, sub: &str, id: String, kind: &str, body: &str) -> OutgoingJob {
    let d = EventDelivery {
        subscription_id: sub.to_string(),
        event_id: id,
        kind: kind.to_string(),
        body: body.to_string(),
        attempts: 0,
        first_attempt_at: None,
        due_at: None,
    };
    OutgoingJob { job: Job::event(tenant, request_id, EventJob::Deliver(d)), delay: Duration::ZERO }
}

/// `broadcast.completed`'s data: the request's summary as `GET /v1/broadcasts/{id}` shows it,
/// without a page of rows.
fn completed_json(req: &SendRequest, counts: &BTreeMap<Status, u64>, progress: &Progress) -> Value {
    let made: u64 = counts.values().sum();
    let by_status: serde_json::Map<String, Value> = counts.iter().map(|(s, n)| (s.to_string(), json!(n))).collect();
    json!({
        "request_id": req.id,
        "created_at": req.created_at,
        "source": req.source,
        "campaign_id": req.campaign_id,
        "campaign_name": req.campaign_name,
        "metadata": req.metadata,
        "audience": req.audience,
        "state": if progress.canceled_at.is_some() { "canceled" } else { "completed" },
        "canceled_at": progress.canceled_at,
        "fan_out_error": progress.fan_out_error,
        "summary": {
            "total": made,
            "rows_made": made,
            "pending": 0,
            "scheduled": 0,
            "terminal": made,
            "by_status": by_status,
        },
    })
}

/// Runs an event job: posts an event, or takes the next step of a cancel's event scan.
pub async fn run(ev: &Events, job: &Job, step: &EventJob) -> JobResult {
    match step {
        EventJob::Deliver(d) => post(ev, job, d).await,
        EventJob::Completion => {
            ev.check_completed(&job.tenant_id, &job.request_id).await;
            JobResult::Delete
        }
        EventJob::Canceled { at, after } => scan_canceled(ev, job, *at, *after).await,
        EventJob::Twilio(c) => twilio_status::post(ev, job, c).await,
    }
}

/// One page of a canceled request's rows: those the cancel at `at` ended get their events.
async fn scan_canceled(ev: &Events, job: &Job, at: DateTime<Utc>, after: Option<u32>) -> JobResult {
    let (tenant, request_id) = (&job.tenant_id, &job.request_id);
    let rows = match ev.log.list_rows(tenant, request_id, after, SCAN_PAGE).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(%request_id, error = %e, "could not read canceled rows; trying again");
            return JobResult::Replace(vec![OutgoingJob { job: job.clone(), delay: Duration::from_secs(1) }]);
        }
    };
    let ended: Vec<RecipientRow> = rows
        .iter()
        .filter(|r| r.status == Status::Canceled && r.times.get(&Status::Canceled) == Some(&at))
        .cloned()
        .collect();
    ev.rows_moved(tenant, request_id, &ended).await;
    // A row still waiting after the cancel means this store ends rows as their jobs claim them
    // (DynamoDB), and each such claim emits its row's event: reading on would find none.
    let lazy = rows.iter().any(|r| r.status.is_waiting() || r.status == Status::Retrying);
    match rows.last() {
        Some(last) if rows.len() as u32 == SCAN_PAGE && !lazy => {
            let next = Job::event(tenant, request_id, EventJob::Canceled { at, after: Some(last.seq) });
            JobResult::Replace(vec![OutgoingJob { job: next, delay: Duration::ZERO }])
        }
        _ => {
            ev.check_completed(tenant, request_id).await;
            JobResult::Delete
        }
    }
}

/// How one post went.
struct Posted {
    ok: bool,
    status: Option<u16>,
    error: String,
}

/// Posts the event once it is due; on anything but a 2xx waits its turn in the schedule, and
/// after the last post keeps it as a dead letter.
async fn post(ev: &Events, job: &Job, d: &EventDelivery) -> JobResult {
    let tenant = &job.tenant_id;
    let now = crate::domain::now();
    if let Some(due) = d.due_at.filter(|due| *due > now) {
        // Longer than the queue can delay: hop towards it without posting.
        let wait = (due - now).to_std().unwrap_or_default().min(MAX_HOP);
        return JobResult::Replace(vec![OutgoingJob { job: job.clone(), delay: wait }]);
    }
    let sub = match ev.store.get_subscription(tenant, &d.subscription_id).await {
        Ok(Some(s)) => s,
        Ok(None) => return JobResult::Delete,
        Err(e) => {
            tracing::warn!(subscription_id = %d.subscription_id, error = %e, "could not read a subscription; trying again");
            return JobResult::Replace(vec![OutgoingJob { job: job.clone(), delay: Duration::from_secs(1) }]);
        }
    };
    let posted = send(ev, &sub, d).await;
    if posted.ok {
        return JobResult::Delete;
    }
    let mut next = d.clone();
    next.attempts += 1;
    next.first_attempt_at.get_or_insert(now);
    let Some(wait) = ev.schedule.get(next.attempts as usize - 1).copied() else {
        return dead_letter(ev, job, &next, posted, now).await;
    };
    tracing::info!(event_id = %d.event_id, attempt = next.attempts, status = ?posted.status, "status event not taken; will retry");
    next.due_at = Some(now + chrono::Duration::from_std(wait).unwrap_or_default());
    let again = Job::event(tenant, &job.request_id, EventJob::Deliver(next));
    JobResult::Replace(vec![OutgoingJob { job: again, delay: wait.min(MAX_HOP) }])
}

/// One signed post of the event to the subscription's URL, checked against SSRF first.
async fn send(ev: &Events, sub: &EventSubscription, d: &EventDelivery) -> Posted {
    let fail = |status: Option<u16>, error: String| Posted { ok: false, status, error };
    let url = match ssrf::check_url(&sub.url, ev.allow_loopback) {
        Ok(u) => u,
        Err(e) => return fail(None, format!("URL refused: {}", e.0)),
    };
    // DNS can change: check where the host points now (the client's resolver checks again).
    if let Err(e) = ssrf::check_resolved(&url, ev.allow_loopback).await {
        return fail(None, format!("URL refused: {}", e.0));
    }
    let Some(key) = signing_key(&sub.secret) else {
        return fail(None, "the subscription's secret is not usable".into());
    };
    let ts = chrono::Utc::now().timestamp();
    let signature = sign(&key, &d.event_id, ts, &d.body);
    let answer = ev
        .http
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &d.event_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(d.body.clone())
        .send()
        .await;
    match answer {
        Ok(r) if r.status().is_success() => {
            Posted { ok: true, status: Some(r.status().as_u16()), error: String::new() }
        }
        Ok(r) => fail(Some(r.status().as_u16()), format!("answered {}", r.status())),
        Err(e) if e.is_timeout() => fail(None, "no answer within the timeout".into()),
        Err(e) => fail(None, format!("could not post: {}", crate::logging::mask_text(&e.to_string()))),
    }
}

/// The key of a `whsec_<base64>` secret.
fn signing_key(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_")?).ok()
}

/// Standard Webhooks' signature: `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    use base64::Engine;
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

async fn dead_letter(ev: &Events, job: &Job, d: &EventDelivery, posted: Posted, now: DateTime<Utc>) -> JobResult {
    let failure = EventFailure {
        subscription_id: d.subscription_id.clone(),
        event_id: d.event_id.clone(),
        kind: d.kind.clone(),
        body: d.body.clone(),
        attempts: d.attempts,
        last_error: posted.error,
        last_status: posted.status,
        first_attempt_at: d.first_attempt_at.unwrap_or(now),
        last_attempt_at: now,
        request_id: job.request_id.clone(),
    };
    let kept =
        super::retry_store("keeping a failed status event", 5, || ev.store.put_failure(&job.tenant_id, &failure));
    match kept.await {
        Ok(()) => {
            tracing::warn!(event_id = %d.event_id, attempts = d.attempts, "status event failed for good; kept as a failure");
            JobResult::Delete
        }
        Err(e) => {
            tracing::error!(event_id = %d.event_id, error = %e, "could not keep a failed status event; trying again");
            JobResult::Replace(vec![OutgoingJob { job: job.clone(), delay: Duration::from_secs(5) }])
        }
    }
}

/// Queues a dead letter again from its first attempt, and removes it from the failures; `false`
/// if the subscription has no such failure.
pub async fn redeliver(ev: &Events, tenant: &TenantId, sub: &str, event_id: &str) -> StoreResult<bool> {
    let Some(f) = ev.store.take_failure(tenant, sub, event_id).await? else { return Ok(false) };
    let job = delivery_job(tenant, &f.request_id, sub, f.event_id.clone(), &f.kind, &f.body);
    let queued = super::retry_store("queueing a redelivery", 5, || ev.queue.send_batch(std::slice::from_ref(&job)));
    if let Err(e) = queued.await {
        // Put it back, so the failure stays visible and can be redelivered again.
        let _ = ev.store.put_failure(tenant, &f).await;
        return Err(e);
    }
    Ok(true)
}
