//! Recipient rows: one message to one contact on one channel for one template.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

use super::address::Channel;
use super::ids::TenantId;
use super::request::RecipientSpec;
use super::status::Status;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientRow {
    pub id: String,
    pub tenant_id: TenantId,
    pub request_id: String,
    /// Position in the request (recipient-major, then message), for stable paging.
    pub seq: u32,
    pub recipient_index: u32,
    pub message_index: u32,
    #[serde(default)]
    pub template_id: Option<String>,
    pub recipient: RecipientSpec,
    pub status: Status,
    /// Provider attempts started so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the row reached each status.
    #[serde(default)]
    pub times: BTreeMap<Status, DateTime<Utc>>,
    #[serde(default)]
    pub error_message: Option<String>,
    #[serde(default)]
    pub external_message_id: Option<String>,
    #[serde(default)]
    pub channel: Option<Channel>,
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub contact_id: Option<String>,
    /// Display name used for this send (override, else the contact's).
    #[serde(default)]
    pub name: Option<String>,
    /// The address the message went to (phone, email or channel user id).
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// While `sending`: until when the claiming worker owns the row.
    #[serde(default)]
    pub lease_until: Option<DateTime<Utc>>,
    /// When the row was due to go out when it was made (`send_at`, `send_at_local`, the throttle
    /// and the send window applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
    /// The recipient's timezone, where the request's schedule or send window depends on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl RecipientRow {
    pub fn new(tenant_id: &TenantId, request_id: &str, seq: u32, recipient_index: u32, message_index: u32) -> Self {
        let now = super::now();
        RecipientRow {
            id: RecipientRow::id_for(request_id, seq),
            tenant_id: tenant_id.clone(),
            request_id: request_id.to_string(),
            seq,
            recipient_index,
            message_index,
            template_id: None,
            recipient: RecipientSpec::default(),
            status: Status::Queued,
            attempts: 0,
            times: BTreeMap::from([(Status::Queued, now)]),
            error_message: None,
            external_message_id: None,
            channel: None,
            provider: None,
            contact_id: None,
            name: None,
            address: None,
            next_attempt_at: None,
            lease_until: None,
            due_at: None,
            timezone: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// A row's id follows from its request and position (`rcp_{request uuid}_{seq}`), so a store
    /// can find a request's rows without an index.
    pub fn id_for(request_id: &str, seq: u32) -> String {
        format!("rcp_{}_{seq}", request_id.strip_prefix("req_").unwrap_or(request_id))
    }

    /// An audience row's id follows from its request, contact and message, so a page fanned out
    /// twice, or a contact in two of the audience's segments, names the same row.
    ///
    /// A contact id Herald made (`ct_` and a time-ordered UUID) is kept whole (`_c{uuid}x{message}`):
    /// members are paged in contact-id order, so a fan-out page's rows land side by side in the
    /// store's row index rather than at a thousand random places, and their jobs claim rows that
    /// sit together. Any other contact id is hashed (`_m{digest}`); the two forms cannot meet.
    pub fn id_for_member(request_id: &str, contact_id: &str, message_index: u32) -> String {
        let request = request_id.strip_prefix("req_").unwrap_or(request_id);
        match Self::herald_contact_uuid(contact_id) {
            Some(uuid) => format!("rcp_{request}_c{uuid}x{message_index}"),
            None => Self::hashed_member_id(request_id, contact_id, message_index),
        }
    }

    /// An audience row's id from a hash of its contact and message (`_m{digest}`): every audience
    /// row's id before ids kept the contact's, and still the id for a contact Herald did not make.
    pub fn hashed_member_id(request_id: &str, contact_id: &str, message_index: u32) -> String {
        let request = request_id.strip_prefix("req_").unwrap_or(request_id);
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(contact_id.as_bytes());
        h.update([0]);
        h.update(message_index.to_be_bytes());
        let digest = hex::encode(&h.finalize()[..12]);
        format!("rcp_{request}_m{digest}")
    }

    /// The 32 lowercase hex digits of a contact id Herald made (`ct_…`), if it is one.
    fn herald_contact_uuid(contact_id: &str) -> Option<&str> {
        let hex = contact_id.strip_prefix("ct_")?;
        (hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(hex)
    }

    /// Makes the row due at `due`: `scheduled` until then if that is later than `now`.
    pub fn schedule(&mut self, due: DateTime<Utc>, now: DateTime<Utc>) {
        self.due_at = Some(due);
        if due > now {
            self.next_attempt_at = Some(due);
            self.status = Status::Scheduled;
            self.times = BTreeMap::from([(Status::Scheduled, self.created_at)]);
        }
    }

    /// Moves the row to `status` at `at`, stamping the main-line statuses it implies.
    pub fn set_status(&mut self, status: Status, at: DateTime<Utc>) {
        for s in status.implied() {
            self.times.entry(*s).or_insert(at);
        }
        self.times.insert(status, at);
        self.status = status;
        self.updated_at = at;
    }

    /// A job for this row alone (a row that must wait, or one the sweeper finds without a job).
    pub fn job(&self) -> Job {
        Job {
            tenant_id: self.tenant_id.clone(),
            request_id: self.request_id.clone(),
            row_ids: vec![self.id.clone()],
            fan_out: None,
            import: false,
            recount: None,
            event: None,
        }
    }
}

// The row's state machine. Every store applies these, so SQLite and DynamoDB cannot disagree:
// a store only has to make each read-decide-write atomic.

/// The outcome of trying to claim a row for sending.
#[derive(Debug, Clone)]
pub enum Claim {
    /// The row was `queued` or `retrying` and is now `sending`, owned by the caller.
    Claimed(RecipientRow),
    /// The row was `sending` under an expired lease: a worker died mid-send, so the provider may
    /// or may not have the message. The caller owns it now and must reconcile before sending.
    Reclaimed(RecipientRow),
    /// Another worker holds the row's lease until the given time.
    Busy(DateTime<Utc>),
    /// The row is `retrying` and its next attempt is not due yet.
    NotDue(DateTime<Utc>),
    /// The row is already past sending: nothing to do.
    Done(RecipientRow),
    /// No such row.
    Missing,
}

impl Claim {
    /// The caller now holds the row's lease, so the changed row must be written back.
    pub fn took_lease(&self) -> bool {
        matches!(self, Claim::Claimed(_) | Claim::Reclaimed(_))
    }
}

/// The final word of one attempt, written only if the writer still owns the row.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub status: Option<Status>,
    pub error_message: Option<String>,
    pub external_message_id: Option<String>,
    pub channel: Option<Channel>,
    pub provider: Option<String>,
    pub contact_id: Option<String>,
    pub name: Option<String>,
    pub address: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The attempt did not reach the provider (Herald's own pacing held it): do not count it.
    pub refund_attempt: bool,
}

impl RecipientRow {
    /// Whether the row may be claimed at `now`, and how, without changing it.
    fn claim_decision(&self, now: DateTime<Utc>) -> Claim {
        match self.status {
            // A waiting row's next_attempt_at is its due time: a job that arrives early waits.
            Status::Scheduled | Status::Queued | Status::Retrying => match self.next_attempt_at {
                Some(t) if t > now => Claim::NotDue(t),
                _ => Claim::Claimed(self.clone()),
            },
            Status::Sending => match self.lease_until {
                Some(t) if t > now => Claim::Busy(t),
                _ => Claim::Reclaimed(self.clone()),
            },
            _ => Claim::Done(self.clone()),
        }
    }

    /// Claims the row in place (`sending`, one more attempt, leased until `lease_until`) if the
    /// rules allow; returns the claim to answer, which carries the row as changed.
    pub fn claim(&mut self, now: DateTime<Utc>, lease_until: DateTime<Utc>) -> Claim {
        let decision = self.claim_decision(now);
        if !decision.took_lease() {
            return decision;
        }
        self.attempts += 1;
        self.set_status(Status::Sending, now);
        self.lease_until = Some(lease_until);
        self.next_attempt_at = None;
        match decision {
            Claim::Reclaimed(_) => Claim::Reclaimed(self.clone()),
            _ => Claim::Claimed(self.clone()),
        }
    }

    /// Applies an attempt's outcome if the writer still owns the row (`sending` at `attempt`);
    /// `false`, and the row untouched, if it does not.
    pub fn finish(&mut self, attempt: u32, o: Outcome, at: DateTime<Utc>) -> bool {
        if self.status != Status::Sending || self.attempts != attempt {
            return false;
        }
        if let Some(s) = o.status {
            self.set_status(s, at);
        }
        if o.refund_attempt {
            self.attempts = self.attempts.saturating_sub(1);
        }
        self.error_message = match o.status {
            Some(Status::Sent) => None,
            _ => o.error_message,
        };
        self.external_message_id = o.external_message_id.or(self.external_message_id.take());
        self.channel = o.channel.or(self.channel);
        self.provider = o.provider.or(self.provider.take());
        self.contact_id = o.contact_id.or(self.contact_id.take());
        self.name = o.name.or(self.name.take());
        self.address = o.address.or(self.address.take());
        self.next_attempt_at = o.next_attempt_at;
        self.lease_until = None;
        self.updated_at = at;
        true
    }

    /// Ends a `sending` row's lease just before `at`, so that the next claim reclaims it (after a
    /// restart nobody holds a lease); `false` if the row was not sending.
    pub fn expire_lease(&mut self, at: DateTime<Utc>) -> bool {
        if self.status != Status::Sending {
            return false;
        }
        self.lease_until = Some(at - chrono::Duration::milliseconds(1));
        true
    }

    /// Fails a pending row, whoever holds it; `false` if it was no longer pending.
    pub fn fail_pending(&mut self, message: &str, at: DateTime<Utc>) -> bool {
        if !self.status.is_pending() {
            return false;
        }
        self.set_status(Status::Failed, at);
        self.error_message = Some(message.to_string());
        self.lease_until = None;
        self.next_attempt_at = None;
        true
    }

    /// Cancels a row no worker holds (`scheduled`, `queued` or `retrying`): its broadcast was
    /// canceled. `false`, and the row untouched, otherwise (a row inside a provider call finishes it).
    pub fn cancel(&mut self, at: DateTime<Utc>) -> bool {
        if !matches!(self.status, Status::Scheduled | Status::Queued | Status::Retrying) {
            return false;
        }
        self.set_status(Status::Canceled, at);
        self.lease_until = None;
        self.next_attempt_at = None;
        true
    }

    /// A provider's report moves the row forward only; `false` if `status` would not.
    pub fn advance(&mut self, status: Status, at: DateTime<Utc>, error: Option<String>) -> bool {
        if !self.status.can_advance_to(status) {
            return false;
        }
        self.set_status(status, at);
        if error.is_some() {
            self.error_message = error;
        }
        self.lease_until = None;
        self.next_attempt_at = None;
        true
    }
}

/// The API view of a row: Invent's `BroadcastRecipient` shape plus Herald's own fields.
#[derive(Debug, Clone)]
pub struct RowView<'a> {
    pub row: &'a RecipientRow,
    pub broadcast_id: Option<&'a str>,
    pub broadcast_name: Option<&'a str>,
}

impl RowView<'_> {
    pub fn to_json(&self) -> Value {
        let r = self.row;
        let mut m = Map::new();
        m.insert("id".into(), json!(r.id));
        m.insert("request_id".into(), json!(r.request_id));
        m.insert("broadcast_id".into(), json!(self.broadcast_id));
        m.insert("broadcast_name".into(), json!(self.broadcast_name));
        m.insert("template_id".into(), json!(r.template_id));
        m.insert("recipient_index".into(), json!(r.recipient_index));
        m.insert("contact_id".into(), json!(r.contact_id.as_ref().or(r.recipient.contact_id.as_ref())));
        m.insert("user_id".into(), json!(r.contact_id.as_ref().or(r.recipient.contact_id.as_ref())));
        m.insert("name".into(), json!(r.name.as_ref().or(r.recipient.name.as_ref())));
        let phone = r.recipient.phone.as_ref().map(|p| p.to_string()).or_else(|| match r.channel {
            Some(Channel::Whatsapp | Channel::Sms) => r.address.clone(),
            _ => None,
        });
        let email = r.recipient.email.as_ref().map(|e| e.to_string()).or_else(|| match r.channel {
            Some(Channel::Email) => r.address.clone(),
            _ => None,
        });
        m.insert("phone".into(), json!(phone));
        m.insert("email".into(), json!(email));
        m.insert("channel".into(), json!(r.channel));
        m.insert("provider".into(), json!(r.provider));
        m.insert("status".into(), json!(r.status));
        m.insert("attempts".into(), json!(r.attempts));
        for s in Status::ALL {
            if s == Status::Retrying {
                continue;
            }
            let at = r.times.get(&s);
            m.insert(format!("is_{s}"), json!(at.is_some()));
            m.insert(format!("is_{s}_at"), json!(at));
        }
        m.insert("error_message".into(), json!(r.error_message));
        m.insert("external_message_id".into(), json!(r.external_message_id));
        m.insert("next_attempt_at".into(), json!(r.next_attempt_at));
        m.insert("due_at".into(), json!(r.due_at.unwrap_or(r.created_at)));
        m.insert("timezone".into(), json!(r.timezone));
        m.insert("created_at".into(), json!(r.created_at));
        m.insert("updated_at".into(), json!(r.updated_at));
        Value::Object(m)
    }
}

/// What the queue carries: pointers to up to [`Job::MAX_ROWS`] rows of one request, so a queue
/// request moves ten recipients. Small by design (SQS allows 1 MiB). Each row is still claimed
/// on its own; the job only saves queue requests.
///
/// A job with `fan_out` names no rows: it is the next page of an audience broadcast's members,
/// which the worker turns into rows and their jobs. A job with `import` is the next chunk of a
/// CSV import. A job with `event` posts a status event to a subscription, or takes a step that
/// finds events to emit (`domain::events::EventJob`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "JobBody")]
pub struct Job {
    pub tenant_id: TenantId,
    pub request_id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub row_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fan_out: Option<FanOutStep>,
    /// A CSV import's next chunk: `request_id` is then the import's id.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub import: bool,
    /// The next slice of a recount of the request's rows (see `RequestLog::recount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recount: Option<RecountStep>,
    /// A status event for a tenant's subscription, or a step that finds events to emit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<super::events::EventJob>,
}

/// Where a recount of a request's rows stands: a store whose counters are written apart from its
/// rows (DynamoDB) can fall behind them when a process dies between the two, and a recount
/// carries its running totals from job to job until it has read every row.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecountStep {
    /// The last `seq` counted; `None` before the first slice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u32>,
    /// Rows per status counted so far.
    #[serde(default)]
    pub counts: BTreeMap<Status, u64>,
    /// When the recount last renewed its claim (ms): each slice renews it, and the correction
    /// lands only while it holds.
    pub claimed: i64,
    /// When each counter last moved as the recount began (ms, 0 if never): the correction lands
    /// only if none has moved since, or it would undo moves made while the rows were read.
    #[serde(default)]
    pub seen: Vec<i64>,
    /// Set once every row is read: the correction waits until then (ms), so that a move noted
    /// before its row was read has been written (and stops the correction) or dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_at: Option<i64>,
}

/// Where fan-out of an audience stands: the page of members to expand next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOutStep {
    /// Index into the audience's `segments`.
    pub segment: u32,
    /// The members' cursor within that segment; `None` at its first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Pages expanded before this one, over every segment: rows of page `p` get `seq`s from
    /// `p * FanOutStep::SEQ_STRIDE`, so a request's rows keep a stable order.
    pub page: u32,
}

impl FanOutStep {
    /// Members a page holds at most; also the spacing of their rows' `seq`s (times the messages).
    pub const PAGE: usize = 1_000;
    pub const SEQ_STRIDE: u32 = (FanOutStep::PAGE * crate::domain::limits::MAX_TEMPLATES) as u32;

    /// The first page of an audience.
    pub fn first() -> FanOutStep {
        FanOutStep { segment: 0, cursor: None, page: 0 }
    }
}

impl Job {
    pub const MAX_ROWS: usize = 10;

    /// Jobs for rows of one request, [`Job::MAX_ROWS`] per job, in the rows' order.
    pub fn for_rows<'a>(rows: impl IntoIterator<Item = &'a RecipientRow>) -> Vec<Job> {
        let mut jobs: Vec<Job> = Vec::new();
        for row in rows {
            match jobs.last_mut() {
                Some(j)
                    if j.row_ids.len() < Job::MAX_ROWS
                        && j.request_id == row.request_id
                        && j.tenant_id == row.tenant_id =>
                {
                    j.row_ids.push(row.id.clone())
                }
                _ => jobs.push(row.job()),
            }
        }
        jobs
    }

    /// The job that reads an import's next chunk.
    pub fn import(tenant: &TenantId, import_id: &str) -> Job {
        Job {
            tenant_id: tenant.clone(),
            request_id: import_id.into(),
            row_ids: vec![],
            fan_out: None,
            import: true,
            recount: None,
            event: None,
        }
    }

    /// The job that counts the next slice of a request's rows.
    pub fn recount(tenant: &TenantId, request_id: &str, step: RecountStep) -> Job {
        Job {
            tenant_id: tenant.clone(),
            request_id: request_id.into(),
            row_ids: vec![],
            fan_out: None,
            import: false,
            recount: Some(step),
            event: None,
        }
    }

    /// An event job about `request_id` (a delivery, or a step that finds events to emit).
    pub fn event(tenant: &TenantId, request_id: &str, event: super::events::EventJob) -> Job {
        Job {
            tenant_id: tenant.clone(),
            request_id: request_id.into(),
            row_ids: vec![],
            fan_out: None,
            import: false,
            recount: None,
            event: Some(event),
        }
    }

    /// The same request's job for one of these rows alone.
    pub fn only(&self, row_id: &str) -> Job {
        Job {
            tenant_id: self.tenant_id.clone(),
            request_id: self.request_id.clone(),
            row_ids: vec![row_id.into()],
            fan_out: None,
            import: false,
            recount: None,
            event: None,
        }
    }
}

/// A job body as read: jobs enqueued before multi-row jobs name a single `row_id`, and may still
/// be on a queue during an upgrade.
#[derive(Deserialize)]
struct JobBody {
    tenant_id: TenantId,
    request_id: String,
    #[serde(default)]
    row_ids: Vec<String>,
    row_id: Option<String>,
    #[serde(default)]
    fan_out: Option<FanOutStep>,
    #[serde(default)]
    import: bool,
    #[serde(default)]
    recount: Option<RecountStep>,
    #[serde(default)]
    event: Option<super::events::EventJob>,
}

impl TryFrom<JobBody> for Job {
    type Error = String;

    fn try_from(b: JobBody) -> Result<Job, String> {
        let mut row_ids = b.row_ids;
        row_ids.extend(b.row_id);
        let kinds = usize::from(!row_ids.is_empty())
            + usize::from(b.fan_out.is_some())
            + usize::from(b.import)
            + usize::from(b.recount.is_some())
            + usize::from(b.event.is_some());
        if kinds != 1 {
            return Err("a job names rows, a fan-out step, an import, a recount or an event".into());
        }
        Ok(Job {
            tenant_id: b.tenant_id,
            request_id: b.request_id,
            row_ids,
            fan_out: b.fan_out,
            import: b.import,
            recount: b.recount,
            event: b.event,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_row_ids_keep_herald_contact_ids_in_order_and_hash_others() {
        let (a, b) = (crate::domain::ids::new_id("ct"), crate::domain::ids::new_id("ct"));
        let (ra, rb) = (RecipientRow::id_for_member("req_1", &a, 0), RecipientRow::id_for_member("req_1", &b, 0));
        assert_eq!(ra, format!("rcp_1_c{}x0", &a[3..]));
        assert!(a < b && ra < rb, "rows sort as their contacts do");
        assert_ne!(ra, RecipientRow::id_for_member("req_1", &a, 1), "one row per message");
        assert_ne!(ra, RecipientRow::id_for_member("req_2", &a, 0), "one row per request");
        let other = RecipientRow::id_for_member("req_1", "crm-42", 0);
        assert!(other.starts_with("rcp_1_m") && other.len() == "rcp_1_m".len() + 24, "{other}");
        assert_eq!(other, RecipientRow::id_for_member("req_1", "crm-42", 0), "the same contact, the same row");
        let upper = RecipientRow::id_for_member("req_1", &a.to_uppercase().replace("CT_", "ct_"), 0);
        assert!(upper.starts_with("rcp_1_m"), "only Herald's own lowercase form is kept: {upper}");
        assert_eq!(
            RecipientRow::hashed_member_id("req_1", &a, 0).len(),
            other.len(),
            "the older form, for old requests"
        );
    }

    #[test]
    fn a_job_serialises_as_it_did_when_its_tenant_was_a_string() {
        let job = Job {
            tenant_id: TenantId::new("acme"),
            request_id: "req_1".into(),
            row_ids: vec!["rcp_1_0".into()],
            fan_out: None,
            import: false,
            recount: None,
            event: None,
        };
        let body = r#"{"tenant_id":"acme","request_id":"req_1","row_ids":["rcp_1_0"]}"#;
        assert_eq!(serde_json::to_string(&job).unwrap(), body);
        assert_eq!(serde_json::from_str::<Job>(body).unwrap(), job);
    }

    #[test]
    fn a_job_reads_both_its_own_body_and_the_single_row_one() {
        let job = Job {
            tenant_id: TenantId::new("t"),
            request_id: "r".into(),
            row_ids: vec!["a".into(), "b".into()],
            fan_out: None,
            import: false,
            recount: None,
            event: None,
        };
        let body = serde_json::to_string(&job).unwrap();
        assert_eq!(body, r#"{"tenant_id":"t","request_id":"r","row_ids":["a","b"]}"#);
        assert_eq!(serde_json::from_str::<Job>(&body).unwrap(), job);
        let old: Job = serde_json::from_str(r#"{"tenant_id":"t","request_id":"r","row_id":"a"}"#).unwrap();
        assert_eq!(old, job.only("a"));
        assert!(serde_json::from_str::<Job>(r#"{"tenant_id":"t","request_id":"r"}"#).is_err());
        assert!(serde_json::from_str::<Job>(r#"{"tenant_id":"t","request_id":"r","row_ids":[]}"#).is_err());
    }

    #[test]
    fn a_fan_out_job_names_a_step_and_no_rows() {
        let step = FanOutStep { segment: 1, cursor: Some("c".into()), page: 7 };
        let job = Job {
            tenant_id: TenantId::new("t"),
            request_id: "r".into(),
            row_ids: vec![],
            fan_out: Some(step),
            import: false,
            recount: None,
            event: None,
        };
        let body = serde_json::to_string(&job).unwrap();
        assert_eq!(body, r#"{"tenant_id":"t","request_id":"r","fan_out":{"segment":1,"cursor":"c","page":7}}"#);
        assert_eq!(serde_json::from_str::<Job>(&body).unwrap(), job);
        let both = r#"{"tenant_id":"t","request_id":"r","row_ids":["a"],"fan_out":{"segment":0,"page":0}}"#;
        assert!(serde_json::from_str::<Job>(both).is_err(), "a job is rows or a step, never both");
    }

    #[test]
    fn a_recount_job_carries_its_totals_and_nothing_else() {
        let step = RecountStep {
            after: Some(999),
            counts: BTreeMap::from([(Status::Sent, 990), (Status::Queued, 10)]),
            claimed: 1_700_000_000_000,
            seen: vec![0, 5],
            settle_at: None,
        };
        let job = Job::recount(&TenantId::new("t"), "r", step);
        let body = serde_json::to_string(&job).unwrap();
        assert_eq!(
            body,
            r#"{"tenant_id":"t","request_id":"r","recount":{"after":999,"counts":{"queued":10,"sent":990},"claimed":1700000000000,"seen":[0,5]}}"#
        );
        assert_eq!(serde_json::from_str::<Job>(&body).unwrap(), job);
        let both = r#"{"tenant_id":"t","request_id":"r","import":true,"recount":{"claimed":1}}"#;
        assert!(serde_json::from_str::<Job>(both).is_err(), "a job is one kind of work");
    }

    #[test]
    fn rows_go_ten_to_a_job_and_never_across_requests() {
        let mut rows: Vec<RecipientRow> =
            (0..23).map(|i| RecipientRow::new(&TenantId::new("t"), "req_1", i, 0, 0)).collect();
        rows.push(RecipientRow::new(&TenantId::new("t"), "req_2", 0, 0, 0));
        let jobs = Job::for_rows(&rows);
        let sizes: Vec<usize> = jobs.iter().map(|j| j.row_ids.len()).collect();
        assert_eq!(sizes, vec![10, 10, 3, 1]);
        assert_eq!(jobs[3].request_id, "req_2");
        let named: Vec<&String> = jobs[..3].iter().flat_map(|j| &j.row_ids).collect();
        assert_eq!(named, rows[..23].iter().map(|r| &r.id).collect::<Vec<_>>());
    }

    #[test]
    fn delivered_implies_sent_in_the_view() {
        let mut row = RecipientRow::new(&TenantId::new("t"), "req_1", 0, 0, 0);
        let t = super::super::now();
        row.set_status(Status::Delivered, t);
        let v = RowView { row: &row, broadcast_id: None, broadcast_name: None }.to_json();
        assert_eq!(v["is_sent"], json!(true));
        assert_eq!(v["is_delivered"], json!(true));
        assert_eq!(v["is_failed"], json!(false));
        assert_eq!(v["is_failed_at"], Value::Null);
        assert_eq!(v["status"], json!("delivered"));
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn row_in(status: Status) -> RecipientRow {
        let mut row = RecipientRow::new(&TenantId::new("t"), "req_1", 0, 0, 0);
        row.set_status(status, at(0));
        row
    }

    /// A row claimed at `at(0)`, leased until `at(30)`.
    fn sending() -> RecipientRow {
        let mut row = row_in(Status::Queued);
        assert!(matches!(row.claim(at(0), at(30)), Claim::Claimed(_)));
        row
    }

    #[test]
    fn claiming_a_queued_row_leases_it_for_one_more_attempt() {
        let mut row = row_in(Status::Queued);
        row.next_attempt_at = Some(at(-1));
        let Claim::Claimed(answer) = row.claim(at(0), at(30)) else { panic!("not claimed") };
        assert_eq!(answer, row, "the claim carries the row as written");
        assert_eq!(
            (row.status, row.attempts, row.lease_until, row.next_attempt_at),
            (Status::Sending, 1, Some(at(30)), None)
        );
        assert_eq!(row.times.get(&Status::Sending), Some(&at(0)));
    }

    #[test]
    fn a_row_not_yet_due_is_left_alone() {
        for status in [Status::Queued, Status::Retrying] {
            let mut row = row_in(status);
            row.next_attempt_at = Some(at(10));
            let before = row.clone();
            assert!(matches!(row.claim(at(0), at(30)), Claim::NotDue(t) if t == at(10)));
            assert_eq!(row, before);
        }
        let mut due = row_in(Status::Retrying);
        due.next_attempt_at = Some(at(10));
        assert!(matches!(due.claim(at(10), at(40)), Claim::Claimed(_)), "due at its own time");
    }

    #[test]
    fn a_leased_row_is_busy_until_the_lease_runs_out_then_reclaimed() {
        let mut row = sending();
        let before = row.clone();
        assert!(matches!(row.claim(at(29), at(59)), Claim::Busy(t) if t == at(30)));
        assert_eq!(row, before);
        let Claim::Reclaimed(answer) = row.claim(at(30), at(60)) else { panic!("not reclaimed") };
        assert_eq!(answer, row);
        assert_eq!((row.status, row.attempts, row.lease_until), (Status::Sending, 2, Some(at(60))));
    }

    #[test]
    fn an_expired_lease_is_reclaimed_at_once() {
        let mut row = sending();
        assert!(row.expire_lease(at(1)));
        assert!(matches!(row.claim(at(1), at(31)), Claim::Reclaimed(_)));
        let mut queued = row_in(Status::Queued);
        let before = queued.clone();
        assert!(!queued.expire_lease(at(1)), "only a sending row holds a lease");
        assert_eq!(queued, before);
    }

    #[test]
    fn a_row_past_sending_is_done() {
        for status in [Status::Sent, Status::Delivered, Status::Failed, Status::Skipped, Status::Unsubscribed] {
            let mut row = row_in(status);
            let before = row.clone();
            assert!(matches!(row.claim(at(0), at(30)), Claim::Done(r) if r == before));
            assert_eq!(row, before);
        }
        assert!(!Claim::Missing.took_lease());
    }

    #[test]
    fn finishing_records_the_outcome_and_ends_the_lease() {
        let mut row = sending();
        row.error_message = Some("an earlier try failed".into());
        let o = Outcome {
            status: Some(Status::Sent),
            error_message: Some("ignored on a send".into()),
            external_message_id: Some("wamid.1".into()),
            channel: Some(Channel::Whatsapp),
            provider: Some("whatsapp".into()),
            contact_id: Some("c1".into()),
            name: Some("Ada".into()),
            address: Some("+15550100".into()),
            ..Default::default()
        };
        assert!(row.finish(1, o, at(5)));
        assert_eq!((row.status, row.attempts, row.lease_until, row.updated_at), (Status::Sent, 1, None, at(5)));
        assert_eq!(row.error_message, None, "a sent row carries no error");
        assert_eq!(row.external_message_id.as_deref(), Some("wamid.1"));
        assert_eq!(row.channel, Some(Channel::Whatsapp));
        assert_eq!(
            (row.provider.as_deref(), row.contact_id.as_deref(), row.name.as_deref(), row.address.as_deref()),
            (Some("whatsapp"), Some("c1"), Some("Ada"), Some("+15550100"))
        );
    }

    #[test]
    fn finishing_keeps_what_the_outcome_does_not_say() {
        let mut row = sending();
        row.external_message_id = Some("wamid.0".into());
        row.provider = Some("whatsapp".into());
        let retry = Outcome {
            status: Some(Status::Retrying),
            error_message: Some("503".into()),
            next_attempt_at: Some(at(20)),
            ..Default::default()
        };
        assert!(row.finish(1, retry, at(5)));
        assert_eq!((row.status, row.next_attempt_at), (Status::Retrying, Some(at(20))));
        assert_eq!(row.error_message.as_deref(), Some("503"));
        assert_eq!((row.external_message_id.as_deref(), row.provider.as_deref()), (Some("wamid.0"), Some("whatsapp")));
    }

    #[test]
    fn a_refunded_attempt_is_not_counted() {
        let mut row = sending();
        let paced = Outcome { status: Some(Status::Retrying), refund_attempt: true, ..Default::default() };
        assert!(row.finish(1, paced, at(5)));
        assert_eq!((row.status, row.attempts), (Status::Retrying, 0));
    }

    #[test]
    fn only_the_lease_holder_may_finish() {
        let mut row = sending();
        let sent = || Outcome { status: Some(Status::Sent), ..Default::default() };
        let before = row.clone();
        assert!(!row.finish(2, sent(), at(5)), "another attempt's outcome");
        assert_eq!(row, before);
        let mut reclaimed = sending();
        assert!(matches!(reclaimed.claim(at(31), at(61)), Claim::Reclaimed(_)));
        assert!(!reclaimed.finish(1, sent(), at(40)), "the first worker lost the row");
        assert!(reclaimed.finish(2, sent(), at(40)));
        let mut done = row_in(Status::Failed);
        assert!(!done.finish(0, sent(), at(5)), "not sending");
        assert_eq!(done.status, Status::Failed);
    }

    #[test]
    fn failing_a_pending_row_takes_it_from_whoever_holds_it() {
        for mut row in [row_in(Status::Queued), row_in(Status::Retrying), sending()] {
            row.next_attempt_at = Some(at(9));
            assert!(row.fail_pending("poison job", at(5)));
            assert_eq!((row.status, row.error_message.as_deref()), (Status::Failed, Some("poison job")));
            assert_eq!((row.lease_until, row.next_attempt_at), (None, None));
        }
        let mut sent = row_in(Status::Sent);
        let before = sent.clone();
        assert!(!sent.fail_pending("poison job", at(5)));
        assert_eq!(sent, before);
    }

    #[test]
    fn reports_move_a_row_forward_only() {
        let mut row = row_in(Status::Sent);
        row.error_message = Some("kept".into());
        assert!(row.advance(Status::Delivered, at(5), None));
        assert_eq!((row.status, row.error_message.as_deref()), (Status::Delivered, Some("kept")));
        let before = row.clone();
        assert!(!row.advance(Status::Sent, at(6), None), "a late sent");
        assert!(!row.advance(Status::Failed, at(6), Some("bounced".into())), "a failure after delivery");
        assert_eq!(row, before);
        assert!(row.advance(Status::Read, at(7), None));
        assert_eq!(row.times.get(&Status::Delivered), Some(&at(5)));
        assert_eq!(row.times.get(&Status::Read), Some(&at(7)));
    }

    #[test]
    fn a_report_on_a_sending_row_ends_the_lease_and_keeps_its_error() {
        let mut row = sending();
        assert!(row.advance(Status::Failed, at(5), Some("undeliverable".into())));
        assert_eq!((row.status, row.lease_until), (Status::Failed, None));
        assert_eq!(row.error_message.as_deref(), Some("undeliverable"));
    }
}
