//! Deliver: one row of a job → claim the row → contact → suppression → channel → render →
//! provider → outcome. The send Lambda and `herald serve`'s workers both call [`deliver`].

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::{
    Channel, Contact, ContactDraft, PlannedMessage, RecipientRow, SendRequest, Status, Template, TemplateHeader,
    TenantId,
};
use crate::logging::{mask_address, Attempt, ACTIVITY};
use crate::ports::provider::{
    notification_token, OutboundMessage, Provider, ProviderError, ProviderReceipt, RenderedHeader,
};
use crate::ports::{
    Claim, Contacts, JobQueue, Outcome, Providers, RequestLog, RowLeases, StatusLookup, StoreError, StoreResult,
};
use crate::retry::Policy;

use super::render::{render, Missing};
use super::Settings;

/// What delivering a job needs, and nothing more. Built once by `app`, shared by every worker.
pub struct Deliver {
    /// Claims and outcomes of rows.
    pub requests: Arc<dyn RowLeases>,
    pub lookup: Arc<dyn StatusLookup>,
    /// Where the send requests come from (through [`Deliver::request`]'s cache).
    pub log: Arc<dyn RequestLog>,
    pub contacts: Arc<dyn Contacts>,
    /// The jobs the workers receive and settle.
    pub queue: Arc<dyn JobQueue>,
    pub providers: Providers,
    pub settings: Settings,
    pub cache: RequestCache,
    /// Jobs that carry a page of an audience rather than rows go here.
    pub fan_out: Arc<super::fanout::FanOut>,
    /// Import jobs come on the same queue.
    pub imports: Option<Arc<super::imports::ImportRun>>,
    /// Status events to tenants' subscriptions; `None` where the shape keeps no subscriptions.
    pub events: Option<Arc<super::events::Events>>,
}

/// Send requests are immutable once stored, so delivery caches them.
#[derive(Default)]
pub struct RequestCache(Mutex<HashMap<(String, String), Arc<SendRequest>>>);

const REQUEST_CACHE_MAX: usize = 512;

impl Deliver {
    /// A send request by id, from the cache when possible.
    pub async fn request(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<Arc<SendRequest>>> {
        let key = (tenant.to_string(), id.to_string());
        if let Some(r) = self.cache.0.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(Some(r.clone()));
        }
        let Some(r) = self.log.get_request(tenant, id).await? else { return Ok(None) };
        let r = Arc::new(r);
        let mut cache = self.cache.0.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= REQUEST_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, r.clone());
        Ok(Some(r))
    }
}

/// What the queue should do with the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Handled (sent, skipped, failed, or nothing left to do): delete the job.
    Done,
    /// Try again after this long (retry backoff, or the row is busy elsewhere).
    RetryAfter(Duration),
}

/// Delivers one row of a job. `Err` only when a store failed: the row's job should stay on the
/// queue.
pub async fn deliver(h: &Deliver, tenant: &TenantId, row_id: &str) -> Result<Delivery, StoreError> {
    deliver_again(h, tenant, row_id, false, None).await
}

/// [`deliver`], told whether the job was received before (its worker may have died between
/// moving the row and emitting the row's status event), holding `slot` (a permit of the worker
/// pool's slots, which bound provider calls) until the provider call is over: recording the
/// outcome needs no slot, so the next row's call need not wait for this row's write.
pub async fn deliver_again(
    h: &Deliver,
    tenant: &TenantId,
    row_id: &str,
    redelivered: bool,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<Delivery, StoreError> {
    let now = crate::domain::now();
    let lease_until = now + chrono::Duration::from_std(h.settings.lease).unwrap_or_default();
    let (row, reclaimed) = match claim(h, tenant, row_id, now, lease_until).await? {
        Claim::Claimed(row) => (row, false),
        Claim::Reclaimed(row) => (row, true),
        Claim::Busy(until) | Claim::NotDue(until) => return Ok(Delivery::RetryAfter(until_from(now, until))),
        Claim::Done(row) => {
            // The claim itself canceled the row (its request was canceled), or a job came again
            // after a crash: the event goes out, with the same id if it went out before.
            let canceled_now = row.status == Status::Canceled && row.times.get(&Status::Canceled) == Some(&now);
            if let (Some(ev), true) = (&h.events, canceled_now || redelivered) {
                ev.row_moved(&row).await;
            }
            return Ok(Delivery::Done);
        }
        Claim::Missing => {
            tracing::warn!(%row_id, "job names a row that does not exist; dropping it");
            return Ok(Delivery::Done);
        }
    };
    let attempt = row.attempts;
    let attempted = match h.request(tenant, &row.request_id).await {
        Ok(Some(request)) => attempt_row(h, &request, &row, reclaimed, now).await,
        Ok(None) => Ok((failed(format!("send request {} no longer exists", row.request_id)), Delivery::Done)),
        Err(e) => Err(e),
    };
    drop(slot);
    let (outcome, delivery) = match attempted {
        Ok(x) => x,
        Err(e) => {
            // A store failed before the provider was called: hand the row back (the attempt did not
            // count) so the job's retry need not wait out the lease.
            let release = Outcome {
                status: Some(Status::Retrying),
                error_message: Some("Herald's store was unavailable; retrying".into()),
                refund_attempt: true,
                ..Default::default()
            };
            if let Err(e) = h.requests.finish_row(tenant, row_id, attempt, release).await {
                tracing::warn!(%row_id, error = %e, "could not release the row; it waits for its lease");
            }
            return Err(e);
        }
    };
    let status = outcome.status;
    if !finish_with_retries(h, tenant, row_id, attempt, outcome).await? {
        tracing::warn!(row_id = %row.id, attempt, "lost the row's lease before recording the outcome");
        return Ok(Delivery::Done);
    }
    tracing::debug!(row_id = %row.id, attempt, status = ?status, "attempt recorded");
    if let (Some(ev), Some(s)) = (&h.events, status) {
        ev.row_id_moved(tenant, row_id, s).await;
    }
    if let Some(end) = status.and_then(attempt_end) {
        ACTIVITY.attempt(end);
    }
    Ok(delivery)
}

/// How the activity summary counts an attempt that ended in `status`.
fn attempt_end(status: Status) -> Option<Attempt> {
    match status {
        Status::Scheduled | Status::Queued | Status::Sending => None,
        Status::Retrying => Some(Attempt::Retrying),
        Status::Failed | Status::Bounced | Status::Complained => Some(Attempt::Failed),
        Status::Skipped | Status::Unsubscribed | Status::Canceled => Some(Attempt::Skipped),
        Status::Sent | Status::Delivered | Status::Read | Status::Opened | Status::Played => Some(Attempt::Sent),
    }
}

/// Claims the job's row. A claim that failed may have committed before the error reached us: a
/// second claim then finds the row busy under our own lease, and the row is ours after all.
async fn claim(
    h: &Deliver,
    tenant: &TenantId,
    row_id: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Claim, StoreError> {
    let mut uncertain = None;
    for _ in 0..3 {
        let claimed = match h.requests.claim_row(tenant, row_id, now, lease_until).await {
            Err(e @ StoreError::Unavailable(_)) => {
                tracing::warn!(%row_id, error = %e, "could not claim the row; asking again");
                uncertain = Some(e);
                continue;
            }
            other => other?,
        };
        return match claimed {
            Claim::Busy(until) if until == lease_until && uncertain.is_some() => {
                match h.lookup.get_row(tenant, row_id).await? {
                    Some(row) if row.status == Status::Sending && row.lease_until == Some(lease_until) => {
                        Ok(Claim::Claimed(row))
                    }
                    _ => Ok(Claim::Busy(until)),
                }
            }
            other => Ok(other),
        };
    }
    Err(uncertain.unwrap_or_else(|| StoreError::Unavailable("could not claim the row".into())))
}

/// Records an attempt's outcome, retrying a failed write a few times: after a provider accepted
/// the message, giving up here would leave the row to be reclaimed and, with a provider that
/// cannot be asked, sent again. A write that failed may still have landed: if a later try finds
/// the row no longer ours, the earlier write is taken to have landed, and the job is kept or
/// deleted as planned (an extra job is harmless; a missing one would strand the row).
async fn finish_with_retries(
    h: &Deliver,
    tenant: &TenantId,
    row_id: &str,
    attempt: u32,
    outcome: Outcome,
) -> Result<bool, StoreError> {
    let calls = std::sync::atomic::AtomicU32::new(0);
    let owned = super::retry_store("recording the outcome", 7, || {
        calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        h.requests.finish_row(tenant, row_id, attempt, outcome.clone())
    })
    .await?;
    if !owned && calls.into_inner() > 1 {
        // Only a failed try is ever repeated, and that try may have landed before its error.
        tracing::info!(%row_id, "an earlier try at recording the outcome had landed");
        return Ok(true);
    }
    Ok(owned)
}

fn until_from(now: DateTime<Utc>, until: DateTime<Utc>) -> Duration {
    (until - now).to_std().unwrap_or_default() + Duration::from_millis(50)
}

fn failed(message: String) -> Outcome {
    Outcome { status: Some(Status::Failed), error_message: Some(message), ..Default::default() }
}

fn skipped(message: String) -> Outcome {
    Outcome { status: Some(Status::Skipped), error_message: Some(message), ..Default::default() }
}

fn sent(receipt: ProviderReceipt) -> Outcome {
    Outcome { status: Some(Status::Sent), external_message_id: Some(receipt.external_message_id), ..Default::default() }
}

/// A step's verdict: go on with what it found, or stop with the outcome to record and what the
/// queue should do.
enum Step<T> {
    Go(T),
    Stop(Outcome, Delivery),
}

impl<T> Step<T> {
    /// Stops with `outcome`; the job is done.
    fn done(outcome: Outcome) -> Self {
        Step::Stop(outcome, Delivery::Done)
    }

    fn map<U>(self, f: impl FnOnce(T) -> U) -> Step<U> {
        match self {
            Step::Go(value) => Step::Go(f(value)),
            Step::Stop(outcome, delivery) => Step::Stop(outcome, delivery),
        }
    }
}

/// Stamps an outcome with what the attempt had learnt by the time it ended (contact, channel,
/// address, provider), so the row shows how far the attempt got.
fn learnt(known: &Outcome, o: Outcome) -> Outcome {
    Outcome {
        status: o.status,
        error_message: o.error_message,
        external_message_id: o.external_message_id,
        next_attempt_at: o.next_attempt_at,
        refund_attempt: o.refund_attempt,
        ..known.clone()
    }
}

/// A message ready for its provider, and what the attempt has learnt on the way.
struct Ready<'h> {
    contact: Contact,
    outbound: OutboundMessage,
    provider: &'h dyn Provider,
    known: Outcome,
}

/// One attempt at one claimed row: get it ready (suppression, channel, rendering), reconcile an
/// earlier attempt, call the provider, and map its answer to an outcome. Returns the outcome to
/// record and what the queue should do.
async fn attempt_row(
    h: &Deliver,
    request: &SendRequest,
    row: &RecipientRow,
    reclaimed: bool,
    now: DateTime<Utc>,
) -> Result<(Outcome, Delivery), StoreError> {
    // Quiet hours: a row outside its send window (a job that came late, a retry) waits for the
    // window's next opening, and the attempt does not count.
    let window = request.send_window.as_ref();
    let open = super::schedule::in_window(window, row, now);
    if open > now {
        let o = Outcome {
            status: Some(Status::Scheduled),
            next_attempt_at: Some(open),
            refund_attempt: true,
            ..Default::default()
        };
        return Ok((o, Delivery::RetryAfter(until_from(now, open))));
    }
    let ready = match prepare(h, request, row, now).await? {
        Step::Go(ready) => ready,
        Step::Stop(outcome, delivery) => return Ok((outcome, delivery)),
    };
    // An earlier attempt may have reached the provider before its worker died or timed out.
    if reclaimed || row.attempts > 1 {
        if let Step::Stop(outcome, delivery) = reconcile(h, row, &ready, now).await {
            return Ok((learnt(&ready.known, outcome), delivery));
        }
    }
    let answer = call_provider(h, row, &ready).await;
    let (mut outcome, mut delivery) = to_outcome(h, row, &ready, answer, now).await;
    // A retry due outside the window waits for its next opening too.
    if let (Some(Status::Retrying), Some(next)) = (outcome.status, outcome.next_attempt_at) {
        let open = super::schedule::in_window(window, row, next);
        if open > next {
            outcome.next_attempt_at = Some(open);
            delivery = Delivery::RetryAfter(until_from(now, open));
        }
    }
    Ok((learnt(&ready.known, outcome), delivery))
}

/// Everything before the provider is called: the row's message and contact, suppression, the
/// channel and address, the rendering, the provider. Each stop carries what was learnt by then.
async fn prepare<'h>(
    h: &'h Deliver,
    request: &SendRequest,
    row: &RecipientRow,
    now: DateTime<Utc>,
) -> Result<Step<Ready<'h>>, StoreError> {
    if row.attempts > h.settings.max_attempts {
        let last = row.error_message.as_deref().map(|m| format!(": {m}")).unwrap_or_default();
        return Ok(Step::done(failed(format!("gave up after {} attempts{last}", h.settings.max_attempts))));
    }
    let Some(message) = request.messages.get(row.message_index as usize) else {
        return Ok(Step::done(failed("the request has no message for this row".into())));
    };
    let (contact, fixed_channel) = match resolve_contact(h, row).await? {
        Step::Go(found) => found,
        Step::Stop(outcome, delivery) => return Ok(Step::Stop(outcome, delivery)),
    };
    let mut known = Outcome {
        contact_id: Some(contact.id.clone()),
        name: row.recipient.name.clone().or(contact.name.clone()),
        ..Default::default()
    };
    if let Some(reason) = suppressed(&contact) {
        return Ok(Step::done(learnt(&known, skipped(reason.into()))));
    }
    let (channel, address) = match choose_channel(request, message, row, &contact, fixed_channel, now) {
        Step::Go(chosen) => chosen,
        Step::Stop(outcome, delivery) => return Ok(Step::Stop(learnt(&known, outcome), delivery)),
    };
    known.channel = Some(channel);
    known.address = Some(address.clone());
    let outbound = match build_message(request, row, &contact, channel, &address).and_then(within_limits) {
        Ok(m) => m,
        Err(reason) => return Ok(Step::done(learnt(&known, failed(reason)))),
    };
    let Some(provider) = h.providers.get(channel) else {
        return Ok(Step::done(learnt(&known, failed(format!("no provider is configured for {channel}")))));
    };
    known.provider = Some(provider.name().to_string());
    Ok(Step::Go(Ready { contact, outbound, provider: provider.as_ref(), known }))
}

/// Why the contact may not be sent anything, if it may not.
fn suppressed(contact: &Contact) -> Option<&'static str> {
    match (contact.blocked, contact.unsubscribed) {
        (true, _) => Some("contact is blocked"),
        (_, true) => Some("contact has unsubscribed"),
        _ => None,
    }
}

/// The channel and address to send on: the one the recipient, the request or the template names
/// (if the template and the channel agree and the channel's rules allow the message); else the
/// bot's webhook for a flow trigger; else the first usable channel in the request's priority.
fn choose_channel(
    request: &SendRequest,
    message: &PlannedMessage,
    row: &RecipientRow,
    contact: &Contact,
    fixed_channel: Option<Channel>,
    now: DateTime<Utc>,
) -> Step<(Channel, String)> {
    let template = message.template.as_ref();
    let wanted = fixed_channel.or(request.channel).or(template.and_then(|t| t.channel));
    if let (Some(w), Some(t)) = (wanted, template) {
        if let Some(tc) = t.channel.filter(|tc| *tc != w) {
            return Step::done(failed(format!("template \"{}\" is for {tc}, but the send asked for {w}", t.id)));
        }
    }
    let address_of = |c: Channel| address_for(row, contact, c);
    // The channel's own rules (messaging windows) make a channel unusable for this message.
    let is_whatsapp_template = template.is_some_and(|t| t.whatsapp.is_some());
    let rules = |c: Channel| channel_rules(c, contact, is_whatsapp_template, request, now);
    let found = match (wanted, message.flow.is_some()) {
        (Some(c), _) => match address_of(c) {
            None => Err(format!("contact has no {c} address")),
            Some(a) => match rules(c) {
                Ok(()) => Ok((c, a)),
                Err(reason) => return Step::done(failed(reason)),
            },
        },
        (None, true) => address_of(Channel::Webhook).map(|a| (Channel::Webhook, a)).ok_or_else(|| {
            "a flow trigger goes to the bot's webhook, and the contact has no webhook_user_id".to_string()
        }),
        (None, false) => first_usable(request, address_of, rules),
    };
    match found {
        Ok(chosen) => Step::Go(chosen),
        Err(reason) => Step::done(skipped(reason)),
    }
}

/// The recipient's own phone or email for `channel`, else the contact's address on it.
fn address_for(row: &RecipientRow, contact: &Contact, channel: Channel) -> Option<String> {
    let spec = &row.recipient;
    match channel {
        Channel::Whatsapp | Channel::Sms => spec.phone.as_ref().map(|p| p.to_string()),
        Channel::Email => spec.email.as_ref().map(|e| e.to_string()),
        _ => None,
    }
    .or_else(|| contact.address(channel))
}

/// The first channel in the request's priority (every channel if it names none) that the contact
/// has an address on and whose rules take the message; else why none would do.
fn first_usable(
    request: &SendRequest,
    address_of: impl Fn(Channel) -> Option<String>,
    rules: impl Fn(Channel) -> Result<(), String>,
) -> Result<(Channel, String), String> {
    let order = if request.priority.is_empty() { Channel::ALL.to_vec() } else { request.priority.clone() };
    let mut refused = Vec::new();
    for c in order {
        let Some(a) = address_of(c) else { continue };
        match rules(c) {
            Ok(()) => return Ok((c, a)),
            Err(reason) => refused.push(reason),
        }
    }
    Err(match refused.is_empty() {
        true => "contact has no usable channel".to_string(),
        false => format!("contact has no usable channel: {}", refused.join("; ")),
    })
}

/// Asks the provider whether an earlier attempt reached it; stops if it did (the row is sent) or
/// if it could not be asked (retry later).
async fn reconcile(h: &Deliver, row: &RecipientRow, ready: &Ready<'_>, now: DateTime<Utc>) -> Step<()> {
    match ready.provider.lookup(&ready.outbound).await {
        Ok(Some(receipt)) => {
            tracing::info!(row_id = %row.id, "an earlier attempt had reached the provider; not sending again");
            Step::done(sent(receipt))
        }
        Ok(None) => Step::Go(()),
        Err(e) => {
            let (outcome, delivery) = retry_or_fail(&h.settings, row, e, now);
            Step::Stop(outcome, delivery)
        }
    }
}

/// Sends the message; a provider that does not answer within the timeout failed transiently.
async fn call_provider(h: &Deliver, row: &RecipientRow, ready: &Ready<'_>) -> Result<ProviderReceipt, ProviderError> {
    let (m, provider, timeout) = (&ready.outbound, ready.provider, h.settings.provider_timeout);
    tracing::debug!(
        row_id = %row.id, channel = %m.channel, provider = provider.name(),
        to = %mask_address(Some(m.channel), &m.to), attempt = row.attempts, "sending"
    );
    match tokio::time::timeout(timeout, provider.send(m)).await {
        Ok(answer) => answer,
        Err(_) => Err(ProviderError::Transient {
            code: Some("timeout".into()),
            message: format!("{} did not answer within {} s", provider.name(), timeout.as_secs_f64()),
            retry_after: None,
        }),
    }
}

/// What the provider's answer means for the row, and for the job.
async fn to_outcome(
    h: &Deliver,
    row: &RecipientRow,
    ready: &Ready<'_>,
    answer: Result<ProviderReceipt, ProviderError>,
    now: DateTime<Utc>,
) -> (Outcome, Delivery) {
    let provider = ready.provider.name();
    match answer {
        Ok(receipt) => (sent(receipt), Delivery::Done),
        Err(e @ ProviderError::Permanent { .. }) => (failed(format!("{provider}: {e}")), Delivery::Done),
        Err(e @ ProviderError::Unsubscribed { .. }) => {
            mark_unsubscribed(h, row, &ready.contact).await;
            let o = Outcome {
                status: Some(Status::Unsubscribed),
                error_message: Some(format!("{provider}: recipient has opted out: {e}")),
                ..Default::default()
            };
            (o, Delivery::Done)
        }
        Err(ProviderError::Throttled { message, retry_after }) => {
            // Herald's own pacing: the row waits its turn; the attempt is given back.
            let o = Outcome {
                status: Some(Status::Retrying),
                error_message: Some(message),
                next_attempt_at: Some(now + chrono::Duration::from_std(retry_after).unwrap_or_default()),
                refund_attempt: true,
                ..Default::default()
            };
            (o, Delivery::RetryAfter(retry_after))
        }
        Err(e) => retry_or_fail(&h.settings, row, e, now),
    }
}

/// The recipient opted out with the provider: no channel of this tenant may reach them. A failed
/// write is logged, not retried: the row's outcome is recorded either way.
async fn mark_unsubscribed(h: &Deliver, row: &RecipientRow, contact: &Contact) {
    let mut c = contact.clone();
    c.unsubscribed = true;
    c.updated_at = crate::domain::now();
    if let Err(err) = h.contacts.put_contact(&row.tenant_id, &c).await {
        tracing::error!(contact_id = %c.id, error = %err, "could not mark an opted-out contact unsubscribed");
    }
}

/// How long a customer's last message keeps WhatsApp's and Messenger's window open.
const WINDOW: chrono::Duration = chrono::Duration::hours(24);

/// The messaging-window rules of a channel for this message: WhatsApp takes free-form text only
/// inside the 24 h window (a template approved on Meta's side goes any time); Messenger outside it
/// needs a message tag.
fn channel_rules(
    channel: Channel,
    contact: &Contact,
    is_whatsapp_template: bool,
    request: &SendRequest,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let open = contact.last_inbound.get(&channel).is_some_and(|t| now - *t < WINDOW);
    match channel {
        Channel::Whatsapp if !open && !is_whatsapp_template => Err(
            "WhatsApp takes free-form text only within 24 h of the contact's last message; send a template approved on Meta's side"
                .into(),
        ),
        Channel::Messenger
            if !open
                && request.messaging_tag.is_none()
                && notification_token(&request.metadata).is_none() =>
        {
            Err(
            "outside Messenger's 24 h window a message needs a messaging_tag (CONFIRMED_EVENT_UPDATE, POST_PURCHASE_UPDATE, ACCOUNT_UPDATE or HUMAN_AGENT) or a notification token"
                .into(),
        )
        }
        _ => Ok(()),
    }
}

/// The row's contact, named by the first tier present (`contact_channel_id` > `contact_id` >
/// phone / email / channel ids, found or created), with the updates the recipient asks for
/// applied. A named contact that does not exist falls through to find-or-create when the
/// recipient asks for it and carries other identifiers (Invent, SMAX V2). Stops (the row fails)
/// when the contact cannot be found or updated.
async fn resolve_contact(h: &Deliver, row: &RecipientRow) -> Result<Step<(Contact, Option<Channel>)>, StoreError> {
    let spec = &row.recipient;
    // The recipient's own identifiers, as a draft; applied to the contact only when asked.
    let keys = ContactDraft {
        name: spec.name.clone(),
        phone: spec.phone.clone(),
        email: spec.email.clone(),
        messenger_psid: spec.messenger_psid.clone(),
        telegram_chat_id: spec.telegram_chat_id.clone(),
        slack_id: spec.slack_id.clone(),
        webhook_user_id: spec.webhook_user_id.clone(),
        ..Default::default()
    };
    let can_fall_back = spec.fall_back_to_keys && keys.has_key();
    let (named, channel, missing) = if let Some(cc) = &spec.contact_channel_id {
        let Some((contact_id, channel)) = Contact::parse_channel_id(cc) else {
            return Ok(Step::done(failed(format!("\"{cc}\" is not a contact channel id"))));
        };
        (Some(contact_id), Some(channel), format!("contact channel {cc} not found"))
    } else {
        (spec.contact_id.as_deref(), None, format!("contact {} not found", spec.contact_id.as_deref().unwrap_or("")))
    };
    let found = match named {
        Some(id) => h.contacts.get_contact(&row.tenant_id, id).await?,
        None => None,
    };
    let contact = match found {
        Some(c) => c,
        None if named.is_some() && !can_fall_back => return Ok(Step::done(failed(missing))),
        None => match h.contacts.upsert_contact(&row.tenant_id, &keys, spec.update_contact).await {
            Ok((c, _)) => c,
            Err(crate::ports::ContactWriteError::Store(e)) => return Err(e),
            Err(e) => return Ok(Step::done(failed(e.to_string()))),
        },
    };
    let own_keys = (spec.update_contact && named.is_some_and(|id| id == contact.id)).then_some(&keys);
    Ok(update_contact(h, row, contact, own_keys).await?.map(|contact| (contact, channel)))
}

/// Applies the updates the recipient asks for and saves the contact if anything changed:
/// `own_keys` (the recipient's identifiers, when it named this contact and asked to update it)
/// and its `set_fields`.
async fn update_contact(
    h: &Deliver,
    row: &RecipientRow,
    mut contact: Contact,
    own_keys: Option<&ContactDraft>,
) -> Result<Step<Contact>, StoreError> {
    let set_fields = &row.recipient.set_fields;
    if own_keys.is_none() && set_fields.is_empty() {
        return Ok(Step::Go(contact));
    }
    if let Some(keys) = own_keys {
        contact.apply(keys);
    }
    contact.fields.extend(set_fields.clone());
    contact.updated_at = crate::domain::now();
    match h.contacts.put_contact(&row.tenant_id, &contact).await {
        Ok(()) => Ok(Step::Go(contact)),
        Err(crate::ports::ContactWriteError::Store(e)) => Err(e),
        Err(e) => Ok(Step::done(failed(format!("could not update the contact: {e}")))),
    }
}

/// A transient failure: back off and retry, or fail once the attempts are used up.
fn retry_or_fail(settings: &Settings, row: &RecipientRow, e: ProviderError, now: DateTime<Utc>) -> (Outcome, Delivery) {
    if row.attempts >= settings.max_attempts {
        let o = failed(format!("gave up after {} attempts: {e}", row.attempts));
        return (o, Delivery::Done);
    }
    let retry_after = match &e {
        ProviderError::Transient { retry_after, .. } => *retry_after,
        _ => None,
    };
    let wait = backoff(settings, row.attempts, retry_after);
    let next = now + chrono::Duration::from_std(wait).unwrap_or_default();
    // A provider's message may quote the recipient's number or address.
    let error = crate::logging::mask_text(&e.to_string());
    tracing::debug!(row_id = %row.id, attempt = row.attempts, wait_ms = wait.as_millis() as u64, %error, "will retry");
    let o = Outcome {
        status: Some(Status::Retrying),
        error_message: Some(e.to_string()),
        next_attempt_at: Some(next),
        ..Default::default()
    };
    (o, Delivery::RetryAfter(wait))
}

/// The wait before a row's next attempt: the one retry policy over the settings' base and cap,
/// at least 100 ms, and never sooner than the provider asked.
pub fn backoff(settings: &Settings, attempt: u32, retry_after: Option<Duration>) -> Duration {
    let policy = Policy { base: settings.backoff_base, cap: settings.backoff_cap, ..Policy::STORE };
    // A provider's Retry-After is honoured up to SQS's longest delay (15 minutes).
    let asked = retry_after.unwrap_or_default().min(Duration::from_secs(900));
    policy.backoff(attempt).max(Duration::from_millis(100)).max(asked)
}

/// Refuses a rendered message longer than its channel takes, so the provider is never asked to
/// send what it would refuse (ingest checks what it can before the rendering).
fn within_limits(m: OutboundMessage) -> Result<OutboundMessage, String> {
    use crate::domain::limits::{max_text_chars, MAX_WHATSAPP_PARAM};
    if m.channel == Channel::Whatsapp && m.whatsapp_template.is_some() {
        for (name, params) in [("body_params", &m.body_params), ("header_params", &m.header_params)] {
            let mut lengths = params.iter().map(|p| p.chars().count()).enumerate();
            if let Some((i, n)) = lengths.find(|(_, n)| *n > MAX_WHATSAPP_PARAM) {
                return Err(format!(
                    "{name}[{i}] is {n} characters long once filled in; WhatsApp takes at most {MAX_WHATSAPP_PARAM} per template parameter"
                ));
            }
        }
        return Ok(m);
    }
    let n = m.text.chars().count();
    match max_text_chars(m.channel) {
        Some(max) if n > max => {
            Err(format!("the message is {n} characters long once filled in; {} takes at most {max}", m.channel))
        }
        _ => Ok(m),
    }
}

/// Renders each of `texts` with the same values.
fn render_all(
    texts: &[String],
    named: &impl Fn(&str) -> Option<String>,
    positional: &[String],
) -> Result<Vec<String>, Missing> {
    texts.iter().map(|t| render(t, named, positional)).collect()
}

/// Renders the row's message for its channel.
fn build_message(
    request: &SendRequest,
    row: &RecipientRow,
    contact: &Contact,
    channel: Channel,
    address: &str,
) -> Result<OutboundMessage, String> {
    let message = &request.messages[row.message_index as usize];
    let name = row.recipient.name.clone().or_else(|| contact.name.clone());
    let lookup = |field: &str| value_of(field, request, row, contact, name.as_deref());
    // A positional value may name fields itself (`"{{first_name}}"`), rendered per recipient.
    let body_params = render_all(&request.body_params, &lookup, &[]).map_err(|m| explain(m, "body_params"))?;
    let header_params = render_all(&request.header_params, &lookup, &[]).map_err(|m| explain(m, "header_params"))?;
    let mut out = OutboundMessage {
        tenant_id: row.tenant_id.clone(),
        request_id: row.request_id.clone(),
        row_id: row.id.clone(),
        channel,
        to: address.to_string(),
        name: name.clone(),
        text: String::new(),
        subject: None,
        header: None,
        whatsapp_template: None,
        header_params: header_params.clone(),
        body_params: body_params.clone(),
        flow: message.flow.clone(),
        messaging_tag: request.messaging_tag.clone(),
        metadata: request.metadata.clone(),
    };
    if let Some(t) = &message.template {
        fill_template(&mut out, t, request, &lookup, &body_params, &header_params)?;
    }
    Ok(out)
}

/// A placeholder's value for this recipient: its own variables, the request's, the contact's
/// fields, the contact's name, phone and email, and last the campaign's defaults.
fn value_of(
    field: &str,
    request: &SendRequest,
    row: &RecipientRow,
    contact: &Contact,
    name: Option<&str>,
) -> Option<String> {
    row.recipient
        .variables
        .get(field)
        .or_else(|| request.variables.get(field))
        .or_else(|| contact.fields.get(field))
        .cloned()
        .or_else(|| match field {
            "name" => name.map(String::from),
            "first_name" => name.and_then(|n| n.split_whitespace().next()).map(String::from),
            "phone" => contact.phone.as_ref().map(|p| p.to_string()),
            "email" => contact.email.as_ref().map(|e| e.to_string()),
            _ => None,
        })
        .or_else(|| request.defaults.get(field).cloned())
}

/// Says which placeholder `part` lacks, and where to give it.
fn explain(m: Missing, part: &str) -> String {
    match m {
        Missing::Named(n) => {
            format!("{part} needs {{{{{n}}}}}: give it in variables, the contact's fields or the campaign defaults")
        }
        Missing::Positional(i) => format!("{part} needs {{{{{i}}}}}: give more positional params"),
    }
}

/// Fills in the template's parts for this recipient: body, subject, header, and Meta's parameters
/// where the template binds them. `body_params` and `header_params` are the request's, rendered.
fn fill_template(
    out: &mut OutboundMessage,
    t: &Template,
    request: &SendRequest,
    lookup: &impl Fn(&str) -> Option<String>,
    body_params: &[String],
    header_params: &[String],
) -> Result<(), String> {
    out.text = render(&t.body, lookup, body_params).map_err(|m| explain(m, "the body"))?;
    let subject = t.subject.as_deref().map(|s| render(s, lookup, body_params)).transpose();
    out.subject = subject.map_err(|m| explain(m, "the subject"))?;
    out.whatsapp_template = t.whatsapp.clone();
    // A template that binds Meta's parameters sends those, rendered for this recipient.
    if let Some(w) = t.whatsapp.as_ref().filter(|w| !w.body_params.is_empty()) {
        let bound = render_all(&w.body_params, lookup, body_params);
        out.body_params = bound.map_err(|m| explain(m, "the template's whatsapp.body_params"))?;
    }
    if let Some(w) = t.whatsapp.as_ref().filter(|w| !w.header_params.is_empty()) {
        let bound = render_all(&w.header_params, lookup, header_params);
        out.header_params = bound.map_err(|m| explain(m, "the template's whatsapp.header_params"))?;
    }
    out.header = t.header.as_ref().map(|hd| render_header(hd, request, lookup, header_params)).transpose()?;
    Ok(())
}

/// The template's header for this recipient; a media header without a link or filename of its
/// own takes the request's media.
fn render_header(
    hd: &TemplateHeader,
    request: &SendRequest,
    lookup: &impl Fn(&str) -> Option<String>,
    header_params: &[String],
) -> Result<RenderedHeader, String> {
    let text = hd.text.as_deref().map(|x| render(x, lookup, header_params)).transpose();
    Ok(RenderedHeader {
        kind: hd.kind,
        text: text.map_err(|m| explain(m, "the header"))?,
        link: hd.link.clone().or_else(|| request.media.as_ref().map(|m| m.link.clone())),
        filename: hd.filename.clone().or_else(|| request.media.as_ref().and_then(|m| m.filename.clone())),
    })
}
