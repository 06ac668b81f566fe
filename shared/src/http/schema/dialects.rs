//! The dialects' bodies and answers, in each vendor's own shapes (`crate::dialects` builds them).
//! An answer's `Option` field marked `required` is always sent, `null` when empty; one not so
//! marked may be left out.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use utoipa::ToSchema;

use super::native::MessageText;

use chrono::{DateTime, Utc};
type Object = BTreeMap<String, Value>;

// -------------------------------------------------------------------------------------- CSML

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(as = csml::BroadcastBody)]
pub(crate) struct CsmlBody {
    payload: Option<CsmlPayload>,
    client: Option<CsmlClient>,
    metadata: Option<Object>,
}

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(as = csml::Payload)]
pub(crate) struct CsmlPayload {
    /// `flow_trigger`, the one kind the Broadcasts API documents.
    content_type: Option<String>,
    content: Option<CsmlContent>,
}

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(as = csml::Content)]
pub(crate) struct CsmlContent {
    flow_id: Option<String>,
    close_flows: Option<bool>,
}

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(as = csml::Client)]
pub(crate) struct CsmlClient {
    user_id: Option<String>,
}

#[derive(ToSchema)]
#[schema(as = csml::Broadcast)]
pub(crate) struct CsmlAnswer {
    request_id: String,
    client: CsmlAnswerClient,
    payload: CsmlAnswerPayload,
    metadata: Object,
}

#[derive(ToSchema)]
#[schema(as = csml::AnswerClient)]
pub(crate) struct CsmlAnswerClient {
    #[schema(required = true)]
    user_id: Option<String>,
    bot_id: String,
    channel_id: String,
}

#[derive(ToSchema)]
#[schema(as = csml::AnswerPayload)]
pub(crate) struct CsmlAnswerPayload {
    content_type: String,
    content: CsmlAnswerContent,
}

#[derive(ToSchema)]
#[schema(as = csml::AnswerContent)]
pub(crate) struct CsmlAnswerContent {
    flow_id: String,
    close_flows: bool,
}

// -------------------------------------------------------------------------------------- SMAX

/// SMAX's one answer shape, errors included.
#[derive(ToSchema)]
#[schema(as = smax::Answer)]
pub(crate) struct SmaxAnswer {
    success: bool,
    result: String,
}

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(as = smax::V2Body)]
pub(crate) struct SmaxV2Body {
    customer_id: Option<String>,
    customer_email: Option<String>,
    customer_phone: Option<String>,
    customer_fbid: Option<String>,
    /// Herald segment ids, in place of a customer.
    segments: Option<Vec<String>>,
    exclude_segments: Option<Vec<String>>,
    block_id: Option<String>,
    messages: Option<Vec<MessageText>>,
    notification_messages_token: Option<String>,
    one_time_notif_token: Option<String>,
    messaging_tag: Option<String>,
    priority: Option<Vec<String>>,
}

// ------------------------------------------------------------------------------------ Invent

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(as = invent::SendBody)]
pub(crate) struct InventBody {
    contact_channel_id: Option<String>,
    contact_id: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    name: Option<String>,
    variables: Option<Object>,
    template_ids: Option<Vec<String>>,
    background: Option<bool>,
}

#[derive(ToSchema)]
#[schema(as = invent::SendAnswer)]
pub(crate) struct InventAnswer {
    recipients: Vec<InventRecipient>,
}

/// Invent's `BroadcastRecipient`: exactly the fields its page documents.
#[derive(ToSchema)]
#[schema(as = invent::BroadcastRecipient)]
pub(crate) struct InventRecipient {
    id: String,
    #[schema(required = true)]
    broadcast_id: Option<String>,
    #[schema(required = true)]
    broadcast_name: Option<String>,
    #[schema(required = true)]
    template_id: Option<String>,
    #[schema(required = true)]
    user_id: Option<String>,
    #[schema(required = true)]
    name: Option<String>,
    #[schema(required = true)]
    username: Option<String>,
    #[schema(required = true)]
    phone: Option<String>,
    #[schema(required = true)]
    email: Option<String>,
    is_skipped: bool,
    #[schema(required = true)]
    is_skipped_at: Option<DateTime<Utc>>,
    is_failed: bool,
    #[schema(required = true)]
    is_failed_at: Option<DateTime<Utc>>,
    is_bounced: bool,
    #[schema(required = true)]
    is_bounced_at: Option<DateTime<Utc>>,
    is_sent: bool,
    #[schema(required = true)]
    is_sent_at: Option<DateTime<Utc>>,
    is_delivered: bool,
    #[schema(required = true)]
    is_delivered_at: Option<DateTime<Utc>>,
    is_complained: bool,
    #[schema(required = true)]
    is_complained_at: Option<DateTime<Utc>>,
    is_unsubscribed: bool,
    #[schema(required = true)]
    is_unsubscribed_at: Option<DateTime<Utc>>,
    is_opened: bool,
    #[schema(required = true)]
    is_opened_at: Option<DateTime<Utc>>,
    is_played: bool,
    #[schema(required = true)]
    is_played_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    error_message: Option<String>,
    #[schema(required = true)]
    external_message_id: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    #[schema(required = true)]
    contact: Option<InventContact>,
}

#[derive(ToSchema)]
#[schema(as = invent::Contact)]
pub(crate) struct InventContact {
    id: String,
    #[schema(required = true)]
    name: Option<String>,
    blocked: bool,
    unsubscribed: bool,
    is_admin: bool,
    channels: Vec<InventChannel>,
    segments: Vec<InventSegment>,
    properties: BTreeMap<String, String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    #[schema(required = true)]
    blocked_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    unsubscribed_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    unsubscribe_reason: Option<String>,
    #[schema(required = true)]
    unsubscribe_feedback: Option<String>,
}

#[derive(ToSchema)]
#[schema(as = invent::ContactChannel)]
pub(crate) struct InventChannel {
    id: String,
    user_id: String,
    #[schema(required = true)]
    avatar: Option<String>,
    #[schema(required = true)]
    name: Option<String>,
    #[schema(required = true)]
    username: Option<String>,
    #[schema(required = true)]
    email: Option<String>,
    #[schema(required = true)]
    phone: Option<String>,
    #[schema(required = true)]
    country: Option<String>,
    #[schema(required = true)]
    agent: Option<String>,
    #[schema(required = true)]
    ip: Option<String>,
    #[schema(required = true)]
    language: Option<String>,
    platform_data: Object,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    #[schema(required = true)]
    link: Option<String>,
}

#[derive(ToSchema)]
#[schema(as = invent::Segment)]
pub(crate) struct InventSegment {
    id: String,
    name: String,
    contacts_count: u64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

// ------------------------------------------------------------------------------------ Pabbly

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(as = pabbly::SendBody, rename_all = "camelCase")]
pub(crate) struct PabblySend {
    template_name: Option<String>,
    campaign_name: Option<String>,
    destination: Option<String>,
    user_name: Option<String>,
    header_params: Option<Vec<String>>,
    body_params: Option<Vec<String>>,
    /// `manual`, `csv`, `api`, `user`, `sync` or `wa`.
    source: Option<String>,
    link: Option<String>,
    filename: Option<String>,
    default_contact_field_values: Option<Object>,
}

/// A broadcast (regular or template); with `campaignName` and `templateNames` it adds an API
/// campaign instead, as `api-campaigns` does.
#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(as = pabbly::BroadcastBody, rename_all = "camelCase")]
pub(crate) struct PabblyBroadcast {
    broadcast_name: Option<String>,
    destinations: Option<Vec<String>>,
    /// Herald segment ids, instead of `destinations`.
    segments: Option<Vec<String>>,
    exclude_segments: Option<Vec<String>>,
    message: Option<String>,
    template_name: Option<String>,
    header_params: Option<Vec<String>>,
    body_params: Option<Vec<String>>,
    link: Option<String>,
    filename: Option<String>,
    default_contact_field_values: Option<Object>,
    campaign_name: Option<String>,
    template_names: Option<Vec<String>>,
}

#[derive(ToSchema, Deserialize)]
#[serde(deny_unknown_fields)]
#[schema(as = pabbly::ApiCampaignBody, rename_all = "camelCase")]
pub(crate) struct PabblyCampaign {
    campaign_name: Option<String>,
    template_names: Option<Vec<String>>,
    default_contact_field_values: Option<Object>,
}

/// WhatsApp's send answer inside Pabbly's envelope. `success` is the string `"false"` when a
/// message ended without reaching WhatsApp, with the reason in `message`.
#[derive(ToSchema)]
#[schema(as = pabbly::SendAnswer)]
pub(crate) struct PabblyAnswer {
    success: String,
    message: Option<String>,
    data: PabblyData,
}

#[derive(ToSchema)]
#[schema(as = pabbly::SendData, rename_all = "camelCase")]
pub(crate) struct PabblyData {
    #[schema(rename = "messaging_product")]
    messaging_product: String,
    contacts: Vec<PabblyContact>,
    messages: Vec<PabblyMessage>,
    code: u16,
    /// A broadcast's: the send request's id and name, and an audience's segments.
    broadcast_id: Option<String>,
    broadcast_name: Option<String>,
    segments: Option<Vec<String>>,
    exclude_segments: Option<Vec<String>>,
}

#[derive(ToSchema)]
#[schema(as = pabbly::Contact)]
pub(crate) struct PabblyContact {
    input: String,
    wa_id: String,
}

#[derive(ToSchema)]
#[schema(as = pabbly::Message)]
pub(crate) struct PabblyMessage {
    id: String,
    /// `accepted` once WhatsApp took it; else the row's status.
    message_status: String,
}

#[derive(ToSchema)]
#[schema(as = pabbly::CampaignAnswer)]
pub(crate) struct PabblyCampaignAnswer {
    success: String,
    data: PabblyCampaignData,
}

#[derive(ToSchema)]
#[schema(as = pabbly::Campaign, rename_all = "camelCase")]
pub(crate) struct PabblyCampaignData {
    id: String,
    campaign_name: String,
    template_names: Vec<String>,
    default_contact_field_values: BTreeMap<String, String>,
    created_at: DateTime<Utc>,
}

// ------------------------------------------------------------------------------------ Twilio

/// Twilio's error body.
#[derive(ToSchema)]
#[schema(as = twilio::Error)]
pub(crate) struct TwilioError {
    code: u32,
    message: String,
    more_info: String,
    status: u16,
}

/// A Message create form. Parameters Twilio documents and Herald does not map are ignored, as
/// Twilio ignores what it does not know.
#[derive(ToSchema)]
#[schema(as = twilio::MessageCreate)]
pub(crate) struct MessageForm {
    /// E.164, or `whatsapp:+…` for WhatsApp.
    #[schema(rename = "To")]
    to: String,
    #[schema(rename = "From")]
    from: Option<String>,
    #[schema(rename = "MessagingServiceSid")]
    messaging_service_sid: Option<String>,
    #[schema(rename = "Body")]
    body: Option<String>,
    #[schema(rename = "MediaUrl")]
    media_url: Option<Vec<String>>,
    #[schema(rename = "ContentSid")]
    content_sid: Option<String>,
    /// JSON: numbered values, then named ones.
    #[schema(rename = "ContentVariables")]
    content_variables: Option<String>,
    #[schema(rename = "StatusCallback")]
    status_callback: Option<String>,
    #[schema(rename = "SendAt")]
    send_at: Option<String>,
    #[schema(rename = "ScheduleType")]
    schedule_type: Option<String>,
}

/// Twilio's Message resource.
#[derive(ToSchema)]
#[schema(as = twilio::Message)]
pub(crate) struct Message {
    sid: String,
    account_sid: String,
    #[schema(required = true)]
    messaging_service_sid: Option<String>,
    to: String,
    #[schema(required = true)]
    from: Option<String>,
    body: String,
    status: String,
    num_segments: String,
    num_media: String,
    direction: String,
    api_version: String,
    date_created: String,
    date_updated: String,
    #[schema(required = true)]
    date_sent: Option<String>,
    #[schema(required = true)]
    error_code: Option<u32>,
    #[schema(required = true)]
    error_message: Option<String>,
    #[schema(required = true)]
    price: Option<String>,
    price_unit: String,
    uri: String,
    subresource_uris: BTreeMap<String, String>,
}

#[derive(ToSchema)]
#[schema(as = twilio::MessagePage)]
pub(crate) struct MessagePage {
    messages: Vec<Message>,
    page: u32,
    page_size: u32,
    uri: String,
    first_page_uri: String,
    #[schema(required = true)]
    next_page_uri: Option<String>,
    #[schema(required = true)]
    previous_page_uri: Option<String>,
    start: u64,
    end: u64,
}

#[derive(ToSchema)]
#[schema(as = twilio::NotificationCreate)]
pub(crate) struct NotificationForm {
    /// `{"binding_type": "sms", "address": "+1…"}`, once per phone.
    #[schema(rename = "ToBinding")]
    to_binding: Vec<String>,
    #[schema(rename = "Body")]
    body: String,
}

/// Notify's Notification resource.
#[derive(ToSchema)]
#[schema(as = twilio::Notification)]
pub(crate) struct Notification {
    sid: String,
    account_sid: String,
    service_sid: String,
    date_created: String,
    identities: Vec<String>,
    tags: Vec<String>,
    segments: Vec<String>,
    priority: String,
    ttl: u64,
    #[schema(required = true)]
    title: Option<String>,
    #[schema(required = true)]
    body: Option<String>,
    #[schema(required = true)]
    sound: Option<String>,
    #[schema(required = true)]
    action: Option<String>,
    #[schema(required = true)]
    data: Option<Object>,
    #[schema(required = true)]
    apn: Option<Object>,
    #[schema(required = true)]
    gcm: Option<Object>,
    #[schema(required = true)]
    fcm: Option<Object>,
    #[schema(required = true)]
    sms: Option<Object>,
    #[schema(required = true)]
    facebook_messenger: Option<Object>,
    #[schema(required = true)]
    alexa: Option<Object>,
}
