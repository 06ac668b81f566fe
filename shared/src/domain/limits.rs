//! The input limits, in one place so docs, validation and tests agree.

/// Largest request body accepted by any endpoint (bytes); above it the answer is `413`.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Recipients per `POST /v1/broadcasts`.
pub const MAX_RECIPIENTS: usize = 1_000;
/// Recipient rows (recipients × templates) per send request.
pub const MAX_ROWS: usize = 10_000;
/// Identifier fields, names, phones and emails (Invent's limit).
pub const MAX_STRING: usize = 256;
/// Ids chosen by the caller for templates, campaigns and contacts.
pub const MAX_ID: usize = 128;
/// Keys in `metadata`, and its serialized size.
pub const MAX_METADATA_KEYS: usize = 50;
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
/// Levels of nesting in `metadata` (the object itself is the first). Stored values are read
/// back inside other JSON (outbox entries, stored answers, webhook events), and serde_json stops
/// at 128 levels: this keeps every reader far from that.
pub const MAX_METADATA_DEPTH: usize = 16;
/// Keys in `variables` / contact `fields` / campaign `defaults`, and one value's length.
pub const MAX_VARIABLES: usize = 100;
pub const MAX_VARIABLE_VALUE: usize = 1_024;
/// Positional `header_params` / `body_params`.
pub const MAX_PARAMS: usize = 20;
/// Message and template bodies (characters).
pub const MAX_TEXT: usize = 4_096;
/// Templates a campaign may hold; messages a request may carry.
pub const MAX_TEMPLATES: usize = 10;
/// `background: false` delivers inline; beyond this many rows the call must be queued.
pub const MAX_INLINE_ROWS: usize = 100;
/// How far ahead `send_at` may be.
pub const MAX_SCHEDULE_DAYS: i64 = 365;
/// `Idempotency-Key` header length.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The longest text a channel's provider takes (characters), from their published limits:
/// Twilio's SMS body 1,600, Messenger 2,000, WhatsApp text 4,096, Telegram 4,096, Slack 40,000.
/// Email and webhooks have none Herald must respect.
pub fn max_text_chars(channel: super::Channel) -> Option<usize> {
    use super::Channel::*;
    match channel {
        Sms => Some(1_600),
        Messenger => Some(2_000),
        Whatsapp | Telegram => Some(4_096),
        Slack => Some(40_000),
        Email | Webhook => None,
    }
}

/// The longest value of one WhatsApp template parameter (Meta's limit).
pub const MAX_WHATSAPP_PARAM: usize = 1_024;
