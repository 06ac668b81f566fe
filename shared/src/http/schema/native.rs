//! The native API's bodies and answers, as `http::broadcasts`, `catalog`, `segments`, … serve them.
//! An answer's `Option` field marked `required` is always sent, `null` when empty; one not so
//! marked may be left out.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

use chrono::{DateTime, Utc};
type Object = BTreeMap<String, Value>;
type Strings = BTreeMap<String, String>;

#[derive(ToSchema)]
pub(crate) struct Health {
    /// Always `ok`.
    status: String,
}

#[derive(ToSchema, Deserialize)]
#[schema(rename_all = "snake_case")]
pub(crate) enum Channel {
    Whatsapp,
    Sms,
    Email,
    Messenger,
    Telegram,
    Slack,
    Webhook,
}

/// Where a row stands; the last six are final.
#[derive(ToSchema)]
#[schema(rename_all = "snake_case")]
pub(crate) enum RowStatus {
    Scheduled,
    Queued,
    Retrying,
    Sending,
    Sent,
    Delivered,
    Read,
    Opened,
    Played,
    Skipped,
    Failed,
    Bounced,
    Complained,
    Unsubscribed,
    Canceled,
}

// ------------------------------------------------------------------------------- broadcasts

/// `POST /v1/broadcasts`: who (`recipients` or an `audience`), what (a campaign, templates, an
/// inline template, plain `messages` or a `flow`), and when.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(as = BroadcastRequest)]
pub(crate) struct BroadcastBody {
    recipients: Option<Vec<RecipientBody>>,
    audience: Option<AudienceBody>,
    campaign_id: Option<String>,
    template_ids: Option<Vec<String>>,
    /// A stored template's id, or an inline template.
    #[schema(value_type = Option<Object>)]
    template: Option<Value>,
    messages: Option<Vec<MessageText>>,
    flow: Option<Flow>,
    variables: Option<Object>,
    header_params: Option<Vec<String>>,
    body_params: Option<Vec<String>>,
    media: Option<Media>,
    channel: Option<Channel>,
    priority: Option<Vec<Channel>>,
    messaging_tag: Option<String>,
    metadata: Option<Object>,
    /// Answer `202` at once and send from the queue.
    background: Option<bool>,
    /// RFC 3339: when the rows are due.
    send_at: Option<String>,
    /// A wall-clock time (`2026-12-24T09:00`) each row is due at in its recipient's timezone.
    send_at_local: Option<String>,
    send_window: Option<SendWindowBody>,
    throttle: Option<ThrottleBody>,
}

/// One recipient: `contact_channel_id` > `contact_id` > phone / email / a channel's user id.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(as = Recipient)]
pub(crate) struct RecipientBody {
    contact_channel_id: Option<String>,
    contact_id: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    messenger_psid: Option<String>,
    telegram_chat_id: Option<String>,
    slack_id: Option<String>,
    webhook_user_id: Option<String>,
    name: Option<String>,
    variables: Option<Object>,
}

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AudienceBody {
    segments: Option<Vec<String>>,
    exclude_segments: Option<Vec<String>>,
}

#[derive(ToSchema)]
pub(crate) struct Audience {
    segments: Vec<String>,
    exclude_segments: Option<Vec<String>>,
}

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MessageText {
    text: String,
}

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Flow {
    flow_id: String,
    close_flows: Option<bool>,
}

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Media {
    link: String,
    filename: Option<String>,
}

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SendWindowBody {
    /// `mon` … `sun`.
    days: Option<Vec<String>>,
    /// `HH:MM`, in the recipient's timezone.
    from: Option<String>,
    until: Option<String>,
}

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ThrottleBody {
    per_minute: Option<i64>,
}

#[derive(ToSchema)]
pub(crate) struct SendWindow {
    days: Vec<String>,
    from: String,
    until: String,
}

#[derive(ToSchema)]
pub(crate) struct Throttle {
    per_minute: u32,
}

/// A send request: its settings, a status summary and (`GET` of one) a page of its rows.
#[derive(ToSchema)]
pub(crate) struct SendRequestView {
    request_id: String,
    created_at: DateTime<Utc>,
    /// `native`, or the dialect it came through (`twilio`, `smax_v2`, …).
    source: String,
    #[schema(required = true)]
    campaign_id: Option<String>,
    #[schema(required = true)]
    campaign_name: Option<String>,
    background: bool,
    #[schema(required = true)]
    send_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    send_at_local: Option<String>,
    #[schema(required = true)]
    send_window: Option<SendWindow>,
    #[schema(required = true)]
    throttle: Option<Throttle>,
    metadata: Object,
    #[schema(required = true)]
    recipient_count: Option<u64>,
    #[schema(required = true)]
    row_count: Option<u64>,
    #[schema(required = true)]
    audience: Option<Audience>,
    /// `fanning_out`, `queued`, `scheduled`, `sending`, `completed` or `canceled`.
    state: String,
    #[schema(required = true)]
    canceled_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    fan_out_error: Option<String>,
    summary: Summary,
    /// Absent from the list's entries.
    recipients: Option<Vec<Row>>,
    next_cursor: Option<u32>,
}

#[derive(ToSchema)]
pub(crate) struct Summary {
    /// Known once an audience's fan-out has made its last row.
    #[schema(required = true)]
    total: Option<u64>,
    rows_made: u64,
    pending: u64,
    scheduled: u64,
    terminal: u64,
    by_status: BTreeMap<String, u64>,
}

#[derive(ToSchema)]
pub(crate) struct BroadcastList {
    data: Vec<SendRequestView>,
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// One row: a recipient and one message, with every status it reached and when.
#[derive(ToSchema)]
pub(crate) struct Row {
    id: String,
    request_id: String,
    #[schema(required = true)]
    broadcast_id: Option<String>,
    #[schema(required = true)]
    broadcast_name: Option<String>,
    #[schema(required = true)]
    template_id: Option<String>,
    recipient_index: u32,
    #[schema(required = true)]
    contact_id: Option<String>,
    #[schema(required = true)]
    user_id: Option<String>,
    #[schema(required = true)]
    name: Option<String>,
    #[schema(required = true)]
    phone: Option<String>,
    #[schema(required = true)]
    email: Option<String>,
    #[schema(required = true)]
    channel: Option<Channel>,
    #[schema(required = true)]
    provider: Option<String>,
    status: RowStatus,
    attempts: u32,
    is_scheduled: bool,
    #[schema(required = true)]
    is_scheduled_at: Option<DateTime<Utc>>,
    is_queued: bool,
    #[schema(required = true)]
    is_queued_at: Option<DateTime<Utc>>,
    is_sending: bool,
    #[schema(required = true)]
    is_sending_at: Option<DateTime<Utc>>,
    is_sent: bool,
    #[schema(required = true)]
    is_sent_at: Option<DateTime<Utc>>,
    is_delivered: bool,
    #[schema(required = true)]
    is_delivered_at: Option<DateTime<Utc>>,
    is_read: bool,
    #[schema(required = true)]
    is_read_at: Option<DateTime<Utc>>,
    is_opened: bool,
    #[schema(required = true)]
    is_opened_at: Option<DateTime<Utc>>,
    is_played: bool,
    #[schema(required = true)]
    is_played_at: Option<DateTime<Utc>>,
    is_skipped: bool,
    #[schema(required = true)]
    is_skipped_at: Option<DateTime<Utc>>,
    is_failed: bool,
    #[schema(required = true)]
    is_failed_at: Option<DateTime<Utc>>,
    is_bounced: bool,
    #[schema(required = true)]
    is_bounced_at: Option<DateTime<Utc>>,
    is_complained: bool,
    #[schema(required = true)]
    is_complained_at: Option<DateTime<Utc>>,
    is_unsubscribed: bool,
    #[schema(required = true)]
    is_unsubscribed_at: Option<DateTime<Utc>>,
    is_canceled: bool,
    #[schema(required = true)]
    is_canceled_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    error_message: Option<String>,
    #[schema(required = true)]
    external_message_id: Option<String>,
    #[schema(required = true)]
    next_attempt_at: Option<DateTime<Utc>>,
    due_at: DateTime<Utc>,
    #[schema(required = true)]
    timezone: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

// ---------------------------------------------------------------------------------- catalog

#[derive(ToSchema, Deserialize)]
pub(crate) struct TemplateHeader {
    /// `text`, `image`, `video` or `document`.
    #[schema(rename = "type")]
    kind: String,
    text: Option<String>,
    link: Option<String>,
    filename: Option<String>,
}

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WhatsappTemplate {
    name: String,
    language: String,
    body_params: Option<Vec<String>>,
    header_params: Option<Vec<String>>,
}

/// `PUT /v1/templates/{id}`.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TemplateBody {
    channel: Option<Channel>,
    body: Option<String>,
    subject: Option<String>,
    header: Option<TemplateHeader>,
    language: Option<String>,
    whatsapp: Option<WhatsappTemplate>,
}

#[derive(ToSchema)]
pub(crate) struct Template {
    id: String,
    channel: Option<Channel>,
    body: String,
    subject: Option<String>,
    header: Option<TemplateHeader>,
    language: Option<String>,
    whatsapp: Option<WhatsappTemplate>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(ToSchema)]
pub(crate) struct TemplateList {
    templates: Vec<Template>,
}

/// `PUT /v1/campaigns/{id}`.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CampaignBody {
    name: Option<String>,
    template_ids: Option<Vec<String>>,
    defaults: Option<Object>,
    send_window: Option<SendWindowBody>,
}

/// A campaign's stored send window: days numbered from Monday (0), times `HH:MM:SS`.
#[derive(ToSchema)]
pub(crate) struct CampaignWindow {
    days: Vec<u8>,
    from: String,
    until: String,
}

#[derive(ToSchema)]
pub(crate) struct Campaign {
    id: String,
    name: String,
    template_ids: Vec<String>,
    defaults: Strings,
    send_window: Option<CampaignWindow>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(ToSchema)]
pub(crate) struct CampaignList {
    campaigns: Vec<Campaign>,
}

/// `PUT /v1/contacts/{id}` and `POST /v1/contacts`: every field optional, merged onto the contact.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContactBody {
    name: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    messenger_psid: Option<String>,
    telegram_chat_id: Option<String>,
    slack_id: Option<String>,
    webhook_user_id: Option<String>,
    timezone: Option<String>,
    fields: Option<Object>,
    blocked: Option<bool>,
    unsubscribed: Option<bool>,
}

#[derive(ToSchema)]
pub(crate) struct ContactChannel {
    /// `{contact_id}~{channel}`: a send may name it as `contact_channel_id`.
    id: String,
    channel: Channel,
    address: String,
}

#[derive(ToSchema)]
pub(crate) struct Contact {
    id: String,
    #[schema(required = true)]
    name: Option<String>,
    #[schema(required = true)]
    phone: Option<String>,
    #[schema(required = true)]
    email: Option<String>,
    #[schema(required = true)]
    messenger_psid: Option<String>,
    #[schema(required = true)]
    telegram_chat_id: Option<String>,
    #[schema(required = true)]
    slack_id: Option<String>,
    #[schema(required = true)]
    webhook_user_id: Option<String>,
    timezone: Option<String>,
    fields: Strings,
    blocked: bool,
    unsubscribed: bool,
    /// When each channel last heard from the contact.
    last_inbound: BTreeMap<String, DateTime<Utc>>,
    channels: Vec<ContactChannel>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

// ------------------------------------------------------------------------- segments, imports

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SegmentBody {
    name: Option<String>,
}

#[derive(ToSchema)]
pub(crate) struct Segment {
    id: String,
    name: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(ToSchema)]
pub(crate) struct SegmentView {
    id: String,
    name: String,
    member_count: u64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(ToSchema)]
pub(crate) struct SegmentList {
    segments: Vec<SegmentView>,
}

/// `POST` and `DELETE /v1/segments/{id}/members`: contacts by id, or by identifiers.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MembersBody {
    contact_ids: Option<Vec<String>>,
    contacts: Option<Vec<ContactBody>>,
}

#[derive(ToSchema)]
pub(crate) struct MembersAdded {
    added: u64,
    already_members: u64,
    created_contacts: u64,
    member_count: u64,
}

#[derive(ToSchema)]
pub(crate) struct MembersRemoved {
    removed: u64,
}

#[derive(ToSchema)]
pub(crate) struct MemberPage {
    contact_ids: Vec<String>,
    #[schema(required = true)]
    next_cursor: Option<String>,
}

#[derive(ToSchema)]
pub(crate) struct LineError {
    line: u64,
    reason: String,
}

#[derive(ToSchema)]
pub(crate) struct Import {
    import_id: String,
    segment_id: String,
    /// `running`, `completed` or `failed`.
    state: String,
    lines: u64,
    imported: u64,
    created: u64,
    updated: u64,
    unchanged: u64,
    rejected: u64,
    errors: Vec<LineError>,
    #[schema(required = true)]
    failure: Option<String>,
    bytes: u64,
    bytes_done: u64,
    created_at: DateTime<Utc>,
    #[schema(required = true)]
    finished_at: Option<DateTime<Utc>>,
}

#[derive(ToSchema)]
pub(crate) struct ImportList {
    imports: Vec<Import>,
}

// --------------------------------------------------------------------- account and settings

#[derive(ToSchema)]
pub(crate) struct OutboxEntry {
    id: String,
    tenant_id: String,
    request_id: String,
    row_id: String,
    channel: Channel,
    to: String,
    /// What the provider would have been sent.
    message: Value,
    created_at: DateTime<Utc>,
}

#[derive(ToSchema)]
pub(crate) struct Outbox {
    messages: Vec<OutboxEntry>,
    #[schema(required = true)]
    next_cursor: Option<String>,
}

#[derive(ToSchema)]
pub(crate) struct Account {
    tenant_id: String,
    /// The account SID the Twilio dialect knows the tenant by.
    twilio_account_sid: String,
}

#[derive(ToSchema)]
pub(crate) struct TwilioSigningSecret {
    /// Shown this once.
    twilio_signing_secret: String,
}

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookBody {
    url: String,
}

#[derive(ToSchema)]
pub(crate) struct Webhook {
    url: String,
    /// Shown once: when the endpoint is first set, and when `rotate_secret=true` makes a new one.
    secret: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettingsBody {
    /// An IANA zone; left out, it goes back to its default.
    timezone: Option<String>,
}

#[derive(ToSchema)]
pub(crate) struct Settings {
    timezone: String,
    #[schema(required = true)]
    updated_at: Option<DateTime<Utc>>,
}

// ------------------------------------------------------------------------------ status events

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubscriptionBody {
    url: String,
    /// Event types (`message.delivered`, …), `message.*` or `*`.
    events: Vec<String>,
}

#[derive(ToSchema)]
pub(crate) struct Subscription {
    id: String,
    url: String,
    events: Vec<String>,
    /// `whsec_…`, shown once: in the answer that creates the subscription.
    secret: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(ToSchema)]
pub(crate) struct SubscriptionList {
    subscriptions: Vec<Subscription>,
}

#[derive(ToSchema)]
pub(crate) struct EventFailure {
    event_id: String,
    #[schema(rename = "type")]
    kind: String,
    /// The event as it was posted.
    event: Value,
    attempts: u32,
    last_error: String,
    #[schema(required = true)]
    last_status: Option<u16>,
    first_attempt_at: DateTime<Utc>,
    last_attempt_at: DateTime<Utc>,
}

#[derive(ToSchema)]
pub(crate) struct FailureList {
    failures: Vec<EventFailure>,
}

#[derive(ToSchema)]
pub(crate) struct Redelivered {
    event_id: String,
    queued: bool,
}

// ---------------------------------------------------------------------------------- callbacks

#[derive(ToSchema)]
pub(crate) struct Applied {
    moved: u32,
    ignored: u32,
    unknown: u32,
    inbound: u32,
    unsubscribed: u32,
}

#[derive(ToSchema)]
pub(crate) struct CallbackAnswer {
    ok: bool,
    applied: Applied,
}
