//! The small traits the use cases depend on. Each has an embedded (SQLite) adapter, and the AWS
//! adapters implement the same traits; the contract suites in `tests/` run against every one.

pub mod provider;

pub use provider::{OutboundMessage, Provider, ProviderError, ProviderReceipt, Providers, RenderedHeader};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::domain::{
    Campaign, Channel, Contact, ContactDraft, ContactKey, Job, RecipientRow, RecountStep, SendRequest, Status,
    Template, TenantId,
};

/// A store or queue failed. Never shown to API callers (they get an opaque 500).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

// ---------------------------------------------------------------- queue

/// A job to enqueue, optionally delayed (SQS `DelaySeconds`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingJob {
    pub job: Job,
    pub delay: Duration,
}

/// A job handed out by [`JobQueue::receive`]: hidden from other consumers until its visibility
/// timeout runs out, unless deleted first.
#[derive(Debug, Clone)]
pub struct ReceivedJob {
    pub message_id: String,
    pub receipt: String,
    /// Kept raw: a poison message must still be representable.
    pub body: String,
    /// How many times the job has been received, this time included.
    pub receive_count: u32,
}

/// A queue with SQS semantics: at-least-once, visibility timeout, receive count, dead-letter.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Enqueues every job or fails; implementations batch as their backend allows. A failure may
    /// still have enqueued some or all of the jobs.
    async fn send_batch(&self, jobs: &[OutgoingJob]) -> StoreResult<()>;
    /// Up to `max` visible jobs, each hidden for `visibility` afterwards.
    async fn receive(&self, max: usize, visibility: Duration) -> StoreResult<Vec<ReceivedJob>>;
    /// Removes a received job (it was handled).
    async fn delete(&self, receipt: &str) -> StoreResult<()>;
    /// Makes a received job visible again after `timeout` (retry with backoff).
    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> StoreResult<()>;
    /// Puts `jobs` on the queue in place of a received job, which is removed: the rows of a job
    /// that must wait go back each as a job of its own, so they neither hold up nor re-send their
    /// siblings. Fresh jobs use up no receives, so `max_receives` counts only receives that ended
    /// without a word (a crash, a poison body). Once this succeeds the received copy is gone; a
    /// failure may still have enqueued some of `jobs` (a second job for a row is harmless).
    async fn replace(&self, received: &ReceivedJob, jobs: &[OutgoingJob]) -> StoreResult<()>;
    /// Hands a received job back to come again after `delay`, as a fresh job: a deliberate wait
    /// (a retry's backoff, a row not yet due, a store that blinked) never uses up the job's
    /// receives.
    async fn defer(&self, received: &ReceivedJob, delay: Duration) -> StoreResult<()> {
        let job: Job = serde_json::from_str(&received.body).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.replace(received, &[OutgoingJob { job, delay }]).await
    }
}

// ---------------------------------------------------------------- requests and rows

// Claims and outcomes belong to the row's state machine (`domain::row`); the row ports speak them.
pub use crate::domain::{Claim, Outcome};

/// Status counts a store may keep apart from its rows. SQLite counts inside every row write; the
/// DynamoDB adapter adds up each row's move in memory and writes the sums in one update per
/// request when asked, so a send job of ten rows costs one counter write, not ten.
#[async_trait]
pub trait RowCounters: Send + Sync {
    /// Writes the status moves made since the last flush. Callers flush once their unit of work
    /// (a job, a batch of jobs, a callback) has written its rows. Moves whose write fails are
    /// dropped, not kept for later, and [`RequestLog::recount`] repairs the counts they miss.
    async fn flush_counts(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// A request's rows per status, from its counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RowCounts {
    pub by_status: BTreeMap<Status, u64>,
    /// The counters look stuck behind the rows (rows still pending, or a count below zero, with
    /// no move for a while): ask for a [`RequestLog::recount`].
    pub stalled: bool,
}

/// The request log: send requests and their rows as ingest wrote them, and what status pages read.
#[async_trait]
pub trait RequestLog: RowCounters {
    /// Stores a send request and all its rows, `queued`. Storing the same request again (a retry
    /// whose first try's answer was lost) changes nothing and succeeds.
    async fn insert_request(&self, request: &SendRequest, rows: &[RecipientRow]) -> StoreResult<()>;
    async fn get_request(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<SendRequest>>;
    /// Rows of a request in `seq` order, starting after `after` (a `seq`), at most `limit`.
    async fn list_rows(
        &self,
        tenant: &TenantId,
        request_id: &str,
        after: Option<u32>,
        limit: u32,
    ) -> StoreResult<Vec<RecipientRow>>;
    /// Rows per status for a request, from counters kept with the row writes (never by reading
    /// the rows: an audience broadcast has a million). Moves not yet flushed are not counted.
    async fn count_rows(&self, tenant: &TenantId, request_id: &str) -> StoreResult<RowCounts>;
    /// Recounts a request whose counters fell behind its rows (a process that died between its
    /// row writes and their flush), a slice of rows at a time. With `None` it claims the recount
    /// (one at a time per request) and returns its first step, or `None` if there is nothing to
    /// recount; with a step it counts the next slice and returns the step after it, or `None`
    /// once the counters are corrected (or left alone because they moved meanwhile). Stores that
    /// count inside their row writes never fall behind and have nothing to recount.
    async fn recount(
        &self,
        _tenant: &TenantId,
        _request_id: &str,
        _step: Option<RecountStep>,
    ) -> StoreResult<Option<RecountStep>> {
        Ok(None)
    }
    /// Stores rows that fan-out made for a stored request, each only if no row has its id yet, and
    /// none once the request is canceled. Returns the ids of the given rows that are `queued`
    /// afterwards: the new ones, and any that an earlier try at the same page stored but may not
    /// have queued (a second job for a row is harmless, a row without one is lost).
    async fn add_rows(&self, tenant: &TenantId, request_id: &str, rows: &[RecipientRow]) -> StoreResult<Vec<String>>;
    /// Records that fan-out has made every row of the request; the first call's time stays.
    async fn finish_fan_out(&self, tenant: &TenantId, request_id: &str, at: DateTime<Utc>) -> StoreResult<()>;
    /// Records that fan-out stopped for good before making every row (a page that can never be
    /// read): it is over at `at` as [`RequestLog::finish_fan_out`] records, the rows made so far
    /// still send, and `reason` says why the rest were not made. A fan-out already over (finished
    /// or failed) keeps its time and reason.
    async fn fail_fan_out(
        &self,
        tenant: &TenantId,
        request_id: &str,
        at: DateTime<Utc>,
        reason: &str,
    ) -> StoreResult<()>;
    /// Cancels a stored request: from the moment this returns no row of it is claimed again (rows
    /// inside a provider call finish that call), rows no worker holds end `canceled`, and
    /// fan-out adds no row. Returns when it was canceled (the first call's time).
    async fn cancel_request(
        &self,
        tenant: &TenantId,
        request_id: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<DateTime<Utc>>;
    /// What has happened to a request since it was stored.
    async fn progress(&self, tenant: &TenantId, request_id: &str) -> StoreResult<Progress>;
    /// The tenant's send requests newest first (by `created_at`, then id), only those whose
    /// `source` is `source` when given: at most `limit` after `cursor`. A page may hold fewer
    /// than `limit` with more behind it; only a `next_cursor` of `None` says the list is done.
    async fn list_requests(
        &self,
        tenant: &TenantId,
        source: Option<&str>,
        cursor: Option<&RequestCursor>,
        limit: u32,
    ) -> StoreResult<RequestPage>;
}

/// A place in a tenant's newest-first list of send requests: the last request a page held. It
/// names a time and an id, not a store's key, so a cursor means the same in every store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestCursor {
    /// `created_at` in milliseconds since the epoch.
    pub created_ms: i64,
    pub id: String,
}

impl RequestCursor {
    const TAG: &'static str = "r1.";

    /// The cursor of the page that ends with `request`.
    pub fn after(request: &SendRequest) -> RequestCursor {
        RequestCursor { created_ms: request.created_at.timestamp_millis(), id: request.id.clone() }
    }

    /// The cursor as callers pass it on: `base64url("r1.{millis}.{id}")`.
    pub fn encode(&self) -> String {
        use base64::Engine as _;
        let raw = format!("{}{}.{}", Self::TAG, self.created_ms, self.id);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    /// A cursor [`RequestCursor::encode`] made; `None` for anything else.
    pub fn decode(text: &str) -> Option<RequestCursor> {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()?;
        let (ms, id) = String::from_utf8(raw)
            .ok()?
            .strip_prefix(Self::TAG)?
            .split_once('.')
            .map(|(m, i)| (m.to_string(), i.to_string()))?;
        let digits = !ms.is_empty() && ms.len() <= 18 && ms.bytes().all(|b| b.is_ascii_digit());
        let created_ms: i64 = ms.parse().ok().filter(|_| digits)?;
        let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        let sane = !id.is_empty() && id.len() <= 128 && id.chars().all(plain);
        sane.then_some(RequestCursor { created_ms, id })
    }
}

/// One page of [`RequestLog::list_requests`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestPage {
    pub requests: Vec<SendRequest>,
    /// Where the next page starts; `None` once the list is done.
    pub next_cursor: Option<RequestCursor>,
}

/// The changing part of a send request, kept beside the request itself (which never changes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// When fan-out made the last row of an audience broadcast (or stopped for good).
    pub fanned_out_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    /// Why fan-out stopped before making every row, when it did.
    pub fan_out_error: Option<String>,
}

/// Row leases: who may send a row now, and what its attempts came to. Deliver's side of the rows.
#[async_trait]
pub trait RowLeases: RowCounters {
    /// Conditionally moves a row to `sending` (attempts + 1, leased until `lease_until`).
    async fn claim_row(
        &self,
        tenant: &TenantId,
        row_id: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> StoreResult<Claim>;
    /// Writes an attempt's outcome if the row is still `sending` at `attempt`; `false` if not
    /// (the lease was lost to another worker).
    async fn finish_row(&self, tenant: &TenantId, row_id: &str, attempt: u32, outcome: Outcome) -> StoreResult<bool>;
    /// Marks a row `failed` with `message` if it is still pending (queued, retrying or sending),
    /// whoever holds it: for jobs that can never be delivered. `false` if it was not pending.
    async fn fail_pending(&self, tenant: &TenantId, row_id: &str, message: &str) -> StoreResult<bool>;
    /// Moves a row to `status` if that is forward (a late `sent` never overwrites `delivered`);
    /// `Ok(false)` when the row is already at or past it.
    async fn advance_row(
        &self,
        tenant: &TenantId,
        row_id: &str,
        status: Status,
        at: DateTime<Utc>,
        error: Option<String>,
    ) -> StoreResult<bool>;
}

/// Status lookup: one row by id, or by the provider's message id (status callbacks name only that).
#[async_trait]
pub trait StatusLookup: Send + Sync {
    async fn get_row(&self, tenant: &TenantId, row_id: &str) -> StoreResult<Option<RecipientRow>>;
    /// The row a provider's message id belongs to, as (tenant, row id): status callbacks name
    /// only the provider's id.
    async fn find_by_external_id(&self, provider: &str, external_id: &str) -> StoreResult<Option<(TenantId, String)>>;
}

/// Every capability over requests and rows; each store adapter has all of them. Use cases take
/// only the capability they need (`RequestLog`, `RowLeases`, `StatusLookup`).
pub trait Requests: RequestLog + RowLeases + StatusLookup {}

impl<T: RequestLog + RowLeases + StatusLookup + ?Sized> Requests for T {}

// ---------------------------------------------------------------- contacts

/// Why a contact write was refused.
#[derive(Debug, thiserror::Error)]
pub enum ContactWriteError {
    /// Another contact already holds this phone, email or channel id.
    #[error("{field} already belongs to contact {other}")]
    KeyTaken { field: &'static str, other: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[async_trait]
pub trait Contacts: Send + Sync {
    async fn get_contact(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<Contact>>;
    async fn find_contact(&self, tenant: &TenantId, key: &ContactKey) -> StoreResult<Option<Contact>>;
    /// Creates or replaces the contact, keeping its keys unique within the tenant.
    async fn put_contact(&self, tenant: &TenantId, contact: &Contact) -> Result<(), ContactWriteError>;
    /// Finds the contact holding any of the draft's keys (phone first, then email, then channel
    /// ids), applies the draft to it, or creates one; race-free. Returns it and whether it is new.
    /// With `merge: false` an existing contact is returned unchanged (find-or-create).
    async fn upsert_contact(
        &self,
        tenant: &TenantId,
        draft: &ContactDraft,
        merge: bool,
    ) -> Result<(Contact, bool), ContactWriteError>;
}

// ---------------------------------------------------------------- segments

use crate::domain::Segment;

/// Why a call on a segment's members was refused.
#[derive(Debug, thiserror::Error)]
pub enum MembersError {
    /// No segment with this id in the tenant.
    #[error("no such segment")]
    NoSegment,
    /// The cursor is not one `list_members` gave out.
    #[error("cursor {0}")]
    BadCursor(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One page of a segment's members, in the store's stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberPage {
    pub contact_ids: Vec<String>,
    /// Where the next page starts; `None` once every member was listed.
    pub next_cursor: Option<String>,
}

/// Segments and their members. Fan-out pages a segment's members through `list_members`, so a
/// cursor stays valid while members are added or removed (each member is listed once unless it
/// leaves and comes back meanwhile).
#[async_trait]
pub trait Segments: Send + Sync {
    /// Creates the segment or renames it (keeping its members and `created_at`); returns it as
    /// stored and whether it is new.
    async fn put_segment(&self, tenant: &TenantId, segment: &Segment) -> StoreResult<(Segment, bool)>;
    async fn get_segment(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<Segment>>;
    /// The tenant's segments, by id.
    async fn list_segments(&self, tenant: &TenantId) -> StoreResult<Vec<Segment>>;
    /// Deletes the segment and its members: one created again under the id starts empty.
    async fn delete_segment(&self, tenant: &TenantId, id: &str) -> StoreResult<bool>;
    /// Adds the contacts (not checked to exist: the caller does that); how many were not members.
    async fn add_members(&self, tenant: &TenantId, segment: &str, contact_ids: &[String]) -> Result<u64, MembersError>;
    /// Removes the contacts; how many were members.
    async fn remove_members(
        &self,
        tenant: &TenantId,
        segment: &str,
        contact_ids: &[String],
    ) -> Result<u64, MembersError>;
    /// Up to `limit` members from `cursor` (a token an earlier page gave, or `None` to start).
    async fn list_members(
        &self,
        tenant: &TenantId,
        segment: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<MemberPage, MembersError>;
    /// The exact number of members.
    async fn member_count(&self, tenant: &TenantId, segment: &str) -> Result<u64, MembersError>;
    /// The ids of the segments the contact is in, sorted.
    async fn segments_of(&self, tenant: &TenantId, contact_id: &str) -> StoreResult<Vec<String>>;
}

// ---------------------------------------------------------------- imports

use crate::domain::import::{Chunk, Import};

/// CSV imports and the contacts and members they write.
#[async_trait]
pub trait Imports: Send + Sync {
    async fn create_import(&self, import: &Import) -> StoreResult<()>;
    async fn get_import(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<Import>>;
    /// The tenant's imports, newest first, at most `limit`.
    async fn list_imports(&self, tenant: &TenantId, limit: u32) -> StoreResult<Vec<Import>>;
    /// Applies a chunk read at `chunk.from`: each draft finds its contact by its keys (merging
    /// what it sets) or creates one, each becomes a member of the import's segment, and the
    /// import's counters and offset move to `chunk.to`. A line whose keys belong to two contacts
    /// is refused. `None` when the import no longer stands at `chunk.from` (applied already, or
    /// ended): a chunk applied twice counts once.
    async fn apply_chunk(&self, import: &Import, chunk: Chunk) -> Result<Option<Import>, MembersError>;
    /// Whether `apply_chunk` uses the drafts' new contacts made ahead ([`Chunk::prepare`]): the
    /// reader then makes them while the chunk before is applied. A store that makes its own (or
    /// has no single writer to spare) says no and pays nothing for them.
    fn takes_new_contacts(&self) -> bool {
        false
    }
    /// Bytes of the file one chunk reads: as many lines as `apply_chunk` writes well inside a
    /// job's time.
    fn chunk_bytes(&self) -> usize {
        crate::domain::import::CHUNK_BYTES
    }
    /// Ends a running import as failed, with why; false when it was not running.
    async fn fail_import(&self, tenant: &TenantId, id: &str, reason: &str, at: DateTime<Utc>) -> StoreResult<bool>;
}

/// A stream of a request body's bytes.
pub type ByteStream = futures::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>;

/// Why an import file was not stored.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the file is larger than {0} bytes")]
    TooLarge(u64),
    /// The body broke off while it was read.
    #[error("reading the body failed: {0}")]
    Body(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where import files wait while they are read, chunk by chunk.
#[async_trait]
pub trait ImportFiles: Send + Sync {
    /// Stores the file, refusing one over `max` bytes; its size.
    async fn store(&self, tenant: &TenantId, id: &str, body: ByteStream, max: u64) -> Result<u64, FileError>;
    /// Up to `len` bytes from `offset` (fewer at the end of the file).
    async fn read_at(&self, tenant: &TenantId, id: &str, offset: u64, len: usize) -> StoreResult<Vec<u8>>;
    /// Deletes the file; nothing when it is gone already.
    async fn remove(&self, tenant: &TenantId, id: &str) -> StoreResult<()>;
    /// Takes a file put in the store by other means (an S3 object key, a path beside the data
    /// directory) as the import's file, moving it; its size. Adopting again after the move
    /// answers the size of the file already moved.
    async fn adopt(&self, tenant: &TenantId, id: &str, source: &str) -> StoreResult<u64>;
}

// ---------------------------------------------------------------- catalog

#[async_trait]
pub trait Catalog: Send + Sync {
    async fn put_template(&self, tenant: &TenantId, template: &Template) -> StoreResult<()>;
    async fn get_template(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<Template>>;
    async fn delete_template(&self, tenant: &TenantId, id: &str) -> StoreResult<bool>;
    async fn list_templates(&self, tenant: &TenantId) -> StoreResult<Vec<Template>>;
    async fn put_campaign(&self, tenant: &TenantId, campaign: &Campaign) -> StoreResult<()>;
    /// Stores `campaign` only if no campaign has its id: `false` when one had (it is unchanged).
    /// Of racing creators of one id, exactly one gets `true`.
    async fn create_campaign(&self, tenant: &TenantId, campaign: &Campaign) -> StoreResult<bool>;
    async fn get_campaign(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<Campaign>>;
    async fn delete_campaign(&self, tenant: &TenantId, id: &str) -> StoreResult<bool>;
    async fn list_campaigns(&self, tenant: &TenantId) -> StoreResult<Vec<Campaign>>;
}

// ---------------------------------------------------------------- tenants and keys

/// A stored API key: never the key itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// The first 8 bytes of the hash, hex: the lookup index.
    pub lookup: String,
    /// The full SHA-256 of the key.
    pub hash: [u8; 32],
    /// The key's first characters, for `herald keys list`.
    pub display_prefix: String,
    pub tenant_id: TenantId,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait ApiKeys: Send + Sync {
    /// Creates the tenant if it does not exist; `true` if it was created.
    async fn ensure_tenant(&self, tenant: &TenantId) -> StoreResult<bool>;
    async fn count_tenants(&self) -> StoreResult<u64>;
    async fn insert_key(&self, key: &ApiKeyRecord) -> StoreResult<()>;
    async fn find_key(&self, lookup: &str) -> StoreResult<Option<ApiKeyRecord>>;
    async fn list_keys(&self, tenant: &TenantId) -> StoreResult<Vec<ApiKeyRecord>>;
    /// Revokes the tenant's key with this lookup id; `false` if it has none such or it was
    /// revoked already. A revoked key authenticates nothing.
    async fn revoke_key(&self, tenant: &TenantId, lookup: &str, at: DateTime<Utc>) -> StoreResult<bool>;
    /// The tenant's settings; the defaults if it never set any.
    async fn get_settings(&self, tenant: &TenantId) -> StoreResult<TenantSettings>;
    /// Replaces the tenant's settings whole.
    async fn put_settings(&self, tenant: &TenantId, settings: &TenantSettings) -> StoreResult<()>;
}

/// What a tenant sets for itself (`PUT /v1/settings`).
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TenantSettings {
    /// The timezone of recipients Herald knows no timezone for (IANA name); UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// What Twilio status callbacks are signed with (`X-Twilio-Signature`), as Twilio signs with
    /// an account's auth token; shown once, on creation, and never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub twilio_signing_secret: Option<String>,
}

/// Without the signing secret: settings may end up in a log or a failed assertion.
impl std::fmt::Debug for TenantSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantSettings")
            .field("timezone", &self.timezone)
            .field("updated_at", &self.updated_at)
            .field("twilio_signing_secret", &self.twilio_signing_secret.as_ref().map(|_| "(set)"))
            .finish()
    }
}

impl TenantSettings {
    /// The tenant's timezone (UTC unless set).
    pub fn tz(&self) -> chrono_tz::Tz {
        self.timezone.as_deref().and_then(|t| t.parse().ok()).unwrap_or(chrono_tz::UTC)
    }
}

// ---------------------------------------------------------------- idempotency

/// A response kept for an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First use of the key: go ahead, then call `complete` (or `abandon`).
    New,
    /// The same key and body were seen and answered: answer the same again.
    Replay(StoredResponse),
    /// The same key came with another body.
    Mismatch,
    /// The same key and body are being handled right now.
    InProgress,
}

#[async_trait]
pub trait Idempotency: Send + Sync {
    /// Records the key with the body's fingerprint unless present. An in-progress record older
    /// than `lock` is taken over (its request died).
    async fn begin(
        &self,
        tenant: &TenantId,
        key: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        lock: Duration,
    ) -> StoreResult<Begin>;
    async fn complete(
        &self,
        tenant: &TenantId,
        key: &str,
        response: &StoredResponse,
        expires_at: DateTime<Utc>,
    ) -> StoreResult<()>;
    async fn abandon(&self, tenant: &TenantId, key: &str) -> StoreResult<()>;
}

// ---------------------------------------------------------------- tenant webhook endpoints

/// Where a tenant's `webhook` channel posts, and the secret it signs with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WebhookEndpoint {
    pub url: String,
    /// `whsec_<base64>`; shown to the tenant once, when set or rotated.
    pub secret: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[async_trait]
pub trait WebhookEndpoints: Send + Sync {
    async fn get_webhook(&self, tenant: &TenantId) -> StoreResult<Option<WebhookEndpoint>>;
    async fn put_webhook(&self, tenant: &TenantId, endpoint: &WebhookEndpoint) -> StoreResult<()>;
    async fn delete_webhook(&self, tenant: &TenantId) -> StoreResult<bool>;
}

// ---------------------------------------------------------------- outbox (sandbox provider)

/// What the sandbox provider would have sent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutboxEntry {
    pub id: String,
    pub tenant_id: TenantId,
    pub request_id: String,
    pub row_id: String,
    pub channel: Channel,
    pub to: String,
    pub message: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[async_trait]
pub trait Outbox: Send + Sync {
    async fn record(&self, entry: &OutboxEntry) -> StoreResult<()>;
    /// The entry recorded for a row, if any (the sandbox's answer to "did you get this?").
    async fn find_by_row(&self, tenant: &TenantId, row_id: &str) -> StoreResult<Option<OutboxEntry>>;
    async fn list_outbox(
        &self,
        tenant: &TenantId,
        request_id: Option<&str>,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxEntry>>;
}

// ---------------------------------------------------------------- status event subscriptions

use crate::domain::events::{EventFailure, EventSubscription};

/// Tenants' event subscriptions, the events that used up their retries, and the one-time mark
/// that a request's `broadcast.completed` was emitted.
#[async_trait]
pub trait EventStore: Send + Sync {
    /// Creates the subscription, or replaces its URL and events keeping its secret and
    /// `created_at`; returns it as stored and whether it is new. Of racing creators of one id,
    /// exactly one gets `true` and every one the same secret.
    async fn put_subscription(
        &self,
        tenant: &TenantId,
        sub: &EventSubscription,
    ) -> StoreResult<(EventSubscription, bool)>;
    async fn get_subscription(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<EventSubscription>>;
    /// The tenant's subscriptions, by id.
    async fn list_subscriptions(&self, tenant: &TenantId) -> StoreResult<Vec<EventSubscription>>;
    /// Deletes the subscription and its failures; `false` if there was none.
    async fn delete_subscription(&self, tenant: &TenantId, id: &str) -> StoreResult<bool>;
    /// Records a dead letter (replacing one with the same event id).
    async fn put_failure(&self, tenant: &TenantId, failure: &EventFailure) -> StoreResult<()>;
    /// A subscription's failures, oldest last attempt first, at most `limit`.
    async fn list_failures(&self, tenant: &TenantId, subscription: &str, limit: u32) -> StoreResult<Vec<EventFailure>>;
    /// Removes a failure and returns it; `None` if there was none. Of racing takers, one gets it.
    async fn take_failure(
        &self,
        tenant: &TenantId,
        subscription: &str,
        event_id: &str,
    ) -> StoreResult<Option<EventFailure>>;
    /// Marks the request's completion event emitted: `true` for the first call only.
    async fn mark_completed(&self, tenant: &TenantId, request_id: &str) -> StoreResult<bool>;
}

// ---------------------------------------------------------------- dead-lettered jobs

/// A job the queue gave up on: received `max_receives` times and never handled (a crash each
/// time, a poison body). Kept per tenant until it is redriven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The queue's message id: what a redrive names.
    pub id: String,
    pub job: Job,
    /// Why the queue gave up, when it knows; a row's own error usually says more.
    pub reason: Option<String>,
    pub receive_count: u32,
    pub dead_at: DateTime<Utc>,
}

/// A place in a tenant's oldest-first list of dead letters: the last one a page held. Like
/// [`RequestCursor`] it names a time and an id, so it means the same in every store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterCursor {
    /// `dead_at` in milliseconds since the epoch.
    pub dead_ms: i64,
    pub id: String,
}

impl DeadLetterCursor {
    const TAG: &'static str = "d1.";

    pub fn after(dead: &DeadLetter) -> DeadLetterCursor {
        DeadLetterCursor { dead_ms: dead.dead_at.timestamp_millis(), id: dead.id.clone() }
    }

    /// `base64url("d1.{millis}.{id}")`.
    pub fn encode(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}{}.{}", Self::TAG, self.dead_ms, self.id))
    }

    /// A cursor [`DeadLetterCursor::encode`] made; `None` for anything else.
    pub fn decode(text: &str) -> Option<DeadLetterCursor> {
        use base64::Engine as _;
        let raw = String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()?).ok()?;
        let (ms, id) = raw.strip_prefix(Self::TAG)?.split_once('.')?;
        let digits = !ms.is_empty() && ms.len() <= 18 && ms.bytes().all(|b| b.is_ascii_digit());
        let sane = !id.is_empty() && id.len() <= 128 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        (digits && sane).then(|| DeadLetterCursor { dead_ms: ms.parse().unwrap_or_default(), id: id.to_string() })
    }
}

/// One page of [`DeadLetters::list_dead_letters`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeadLetterPage {
    pub dead_letters: Vec<DeadLetter>,
    /// Where the next page starts; `None` once the list is done.
    pub next_cursor: Option<DeadLetterCursor>,
}

/// Each tenant's dead-lettered jobs. The embedded queue keeps its own; on AWS the send function
/// records what SQS moves to the dead-letter queue.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Keeps a dead letter; one already kept under its id stays as it is.
    async fn put_dead_letter(&self, dead: &DeadLetter) -> StoreResult<()>;
    /// The tenant's dead letters oldest first (by `dead_at`, then id), at most `limit` after
    /// `cursor`. Only a `next_cursor` of `None` says the list is done.
    async fn list_dead_letters(
        &self,
        tenant: &TenantId,
        cursor: Option<&DeadLetterCursor>,
        limit: u32,
    ) -> StoreResult<DeadLetterPage>;
    /// Removes the tenant's dead letter and returns it; `None` if it has none such. Of racing
    /// takers one gets it.
    async fn take_dead_letter(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<DeadLetter>>;
}
