//! SMAX.bot's Broadcasting API (seed 002), V1 and V2. Every answer, errors included, is
//! `{"success": bool, "result": "…"}`. The bot is the tenant: `{bot_id}` must be the id of the
//! tenant the token belongs to.
//!
//! - V1 `POST /compat/smax/bots/{bot_id}/users/{user_id}/send?bot_token=…`: everything is in the
//!   query string. `block_name` / `block_id` picks a campaign; every other parameter is a user
//!   attribute stored on the contact before rendering; at most 25 requests per second per bot.
//! - V2 `POST /compat/smax/public/bots/{bot_id}/send` with `Authorization: Bearer`: a JSON body
//!   naming the customer by any of four identifiers; extra ones update the contact. Or, in their
//!   place, `segments` (Herald segment ids): the block goes to every member, fanned out through
//!   the queue (SMAX broadcasts to an audience from its dashboard; this is where its API meets one).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

use super::{dialling_phone, validate, Renames};
use crate::api::error::ApiError;
use crate::api::parse_json;
use crate::domain::ids::check_field_name;
use crate::domain::limits::{MAX_VARIABLES, MAX_VARIABLE_VALUE};
use crate::domain::{check_message_chars, check_text, check_user_id, BroadcastBody, Channel, FieldErrors};
use crate::domain::{Audience, AudienceBody, MessageBody, RecipientBody, SendPlan};

/// SMAX's ceiling for V1: "up to 25 RPS per bot".
pub(crate) const V1_PER_SECOND: usize = 25;
/// The tags V1 lists (V2 adds `HUMAN_AGENT`, which the native validation accepts).
const V1_TAGS: [&str; 3] = ["CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE", "ACCOUNT_UPDATE"];
/// "All parameters starting with chatfuel_ are reserved and should not be used."
const RESERVED_PREFIX: &str = "chatfuel_";
/// V2's channel order when the body gives no `priority`: the seed's own example, fbid first.
const DEFAULT_PRIORITY: [Channel; 4] = [Channel::Messenger, Channel::Whatsapp, Channel::Sms, Channel::Email];

pub(crate) const V1_RENAMES: Renames = &[("recipients[0].messenger_psid", "user_id"), ("campaign_id", "block_id")];
pub(crate) const V2_RENAMES: Renames = &[
    ("recipients[0].contact_id", "customer_id"),
    ("recipients[0].email", "customer_email"),
    ("recipients[0].phone", "customer_phone"),
    ("recipients[0].messenger_psid", "customer_fbid"),
    ("recipients", "customer_id"),
    ("campaign_id", "block_id"),
    ("audience.segments", "segments"),
    ("audience.exclude_segments", "exclude_segments"),
    ("audience", "segments"),
];

/// SMAX's one answer shape.
pub(crate) fn answer(status: StatusCode, success: bool, result: impl Into<String>) -> Response {
    (status, Json(json!({"success": success, "result": result.into()}))).into_response()
}

/// Any Herald error in SMAX's shape. A broken rule is a `400` (SMAX has no `422`).
pub(crate) fn error(e: ApiError) -> Response {
    let status = match e.status() {
        StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
        s => s,
    };
    let retry_after = match &e {
        ApiError::Conflict { retry_after, .. } => *retry_after,
        ApiError::Unavailable(_) => Some(1),
        _ => None,
    };
    let (_, message, fields) = e.describe();
    let result = if fields.is_empty() {
        message
    } else {
        fields.iter().map(|f| format!("{} {}", f.field, f.message)).collect::<Vec<_>>().join("; ")
    };
    let mut r = answer(status, false, result);
    if let Some(secs) = retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

pub(crate) fn no_bot(bot_id: &str) -> Response {
    // The same answer whether or not such a tenant exists: a token cannot probe for others.
    answer(StatusCode::NOT_FOUND, false, format!("no bot \"{bot_id}\" for this token"))
}

// ------------------------------------------------------------------------------------------ V1

pub(crate) fn too_many(wait: Duration) -> Response {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    let mut r = answer(
        StatusCode::TOO_MANY_REQUESTS,
        false,
        format!("at most {V1_PER_SECOND} requests per second per bot; retry in {secs} s"),
    );
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// Which block (campaign) V1 sends.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Block {
    Name(String),
    Id(String),
}

/// V1's query string, read in one pass; its problems wait in `errors` until the caller is
/// authenticated (a bad token answers `401` whatever else is wrong).
#[derive(Debug, Default)]
pub(crate) struct V1Query {
    pub(crate) token: Option<String>,
    pub(crate) block: Option<Block>,
    messaging_tag: Option<String>,
    pub(crate) attributes: BTreeMap<String, String>,
    /// Every parameter but the token, for the idempotency fingerprint.
    others: BTreeMap<String, String>,
    errors: FieldErrors,
}

impl V1Query {
    pub(crate) fn parse(raw: &str) -> V1Query {
        let mut q = V1Query::default();
        let (mut block_name, mut block_id) = (None, None);
        let mut seen = std::collections::BTreeSet::new();
        for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
            let (k, v) = (k.into_owned(), v.into_owned());
            if !seen.insert(k.clone()) {
                q.errors.push(k, "is given twice");
                continue;
            }
            if k != "bot_token" {
                q.others.insert(k.clone(), v.clone());
            }
            match k.as_str() {
                "bot_token" => q.token = Some(v),
                "block_name" => block_name = Some(v),
                "block_id" => block_id = Some(v),
                "messaging_tag" => q.messaging_tag = q.errors.take("messaging_tag", parse_v1_tag(&v)),
                _ if k.to_ascii_lowercase().starts_with(RESERVED_PREFIX) => {
                    q.errors.push(k, format!("is reserved: parameters starting with {RESERVED_PREFIX} cannot be used"))
                }
                _ => q.attribute(k, v),
            }
        }
        q.block = match (block_name, block_id) {
            (Some(_), Some(_)) => {
                q.errors.push("block_id", "give block_name or block_id, not both");
                None
            }
            (Some(name), None) => Some(Block::Name(name)),
            (None, Some(id)) => Some(Block::Id(id)),
            (None, None) => None,
        };
        q
    }

    /// A user attribute: it becomes a contact field, so it must be usable as `{{name}}`.
    fn attribute(&mut self, name: String, value: String) {
        if let Err(m) = check_field_name(&name) {
            self.errors.push(name, format!("is not a usable attribute name: it {m}"));
        } else if value.chars().count() > MAX_VARIABLE_VALUE {
            self.errors.push(name, format!("must be at most {MAX_VARIABLE_VALUE} characters"));
        } else if let Err(m) = check_message_chars(&value) {
            self.errors.push(name, m);
        } else if self.attributes.len() == MAX_VARIABLES {
            self.errors.push(name, format!("is one attribute too many: at most {MAX_VARIABLES} per call"));
        } else {
            self.attributes.insert(name, value);
        }
    }

    /// The request without its token, canonically: what an Idempotency-Key is bound to.
    pub(crate) fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(&self.others).unwrap_or_default()
    }
}

/// The seed's URL wraps the tag in double quotes (`messaging_tag="CONFIRMED_EVENT_UPDATE"`);
/// both that and the bare tag are read.
fn parse_v1_tag(raw: &str) -> Result<String, String> {
    let tag = raw.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(raw);
    if V1_TAGS.contains(&tag) {
        Ok(tag.to_string())
    } else {
        Err(format!("must be one of {}", V1_TAGS.join(", ")))
    }
}

/// The V1 user as a Messenger PSID, once neither the query nor the user id holds an error.
pub(crate) fn v1_user(user_id: &str, q: &mut V1Query) -> Result<String, ApiError> {
    let mut errs = std::mem::take(&mut q.errors);
    let psid = errs.take("user_id", check_user_id(user_id));
    if q.block.is_none() && q.attributes.is_empty() {
        errs.push("block_name", "give block_name or block_id to send a block, or user attributes to set");
    }
    match (psid, errs.is_empty()) {
        (Some(psid), true) => Ok(psid),
        _ => Err(errs.into()),
    }
}

/// V1's send of the block `campaign_id` to the Messenger user `psid`, as a native plan: the
/// query's attributes are set on the contact before rendering.
pub(crate) fn v1_plan(psid: &str, campaign_id: &str, q: V1Query) -> Result<SendPlan, ApiError> {
    let native = BroadcastBody {
        recipients: Some(vec![RecipientBody { messenger_psid: Some(psid.to_string()), ..Default::default() }]),
        campaign_id: Some(campaign_id.to_string()),
        // The user is a Messenger user; a block whose templates name a channel keeps it.
        priority: Some(vec![Channel::Messenger.to_string()]),
        messaging_tag: q.messaging_tag,
        ..Default::default()
    };
    let mut plan = validate(native, FieldErrors::new(), V1_RENAMES)?;
    for r in &mut plan.recipients {
        r.set_fields = q.attributes.clone();
    }
    Ok(plan)
}

/// V1's answer for a block Herald queued for `psid` as the request `id`.
pub(crate) fn v1_sent(block_name: &str, psid: &str, id: &str) -> Response {
    answer(StatusCode::OK, true, format!("block \"{block_name}\" queued for user {psid} (request {id})"))
}

/// V1's answer for attributes set on the contact `contact_id`.
pub(crate) fn v1_attributes_set(psid: &str, contact_id: &str) -> Response {
    answer(StatusCode::OK, true, format!("attributes set for user {psid} (contact {contact_id})"))
}

// ------------------------------------------------------------------------------------------ V2

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct V2Body {
    customer_id: Option<String>,
    customer_email: Option<String>,
    customer_phone: Option<String>,
    customer_fbid: Option<String>,
    /// Herald segment ids, in place of a customer: everyone in them (less `exclude_segments`).
    segments: Option<Vec<String>>,
    exclude_segments: Option<Vec<String>>,
    block_id: Option<String>,
    messages: Option<Vec<MessageBody>>,
    notification_messages_token: Option<String>,
    one_time_notif_token: Option<String>,
    messaging_tag: Option<String>,
    priority: Option<Vec<String>>,
}

/// A V2 body as a native plan, with what must exist for it to be sent.
pub(crate) struct V2Plan {
    pub(crate) plan: SendPlan,
    /// Its `messages` were dropped for its `block_id`.
    pub(crate) dropped_messages: bool,
    /// The `customer_id` that must name a contact: the only identifier given.
    pub(crate) customer: Option<String>,
    /// The `block_id` that must name a campaign.
    pub(crate) block: Option<String>,
}

/// A V2 body as a native plan.
pub(crate) fn v2_plan(body: &[u8]) -> Result<V2Plan, ApiError> {
    let b = parse_json::<V2Body>(body)?;
    let (customer_id, block) = (b.customer_id.clone(), b.block_id.clone());
    let other_ids = b.customer_email.is_some() || b.customer_phone.is_some() || b.customer_fbid.is_some();
    let dropped_messages = b.block_id.is_some() && b.messages.is_some();
    let mut plan = v2_native(b)?;
    // "If there are more, the system updates them": every identifier given lands on the contact,
    // and an unknown customer_id leaves the others to find or create it.
    for r in &mut plan.recipients {
        r.update_contact = true;
        r.fall_back_to_keys = true;
    }
    let customer = customer_id.filter(|_| !other_ids);
    Ok(V2Plan { plan, dropped_messages, customer, block })
}

/// V2's answer for the request `id` Herald took, to one customer or to an audience.
pub(crate) fn v2_answer(
    campaign_name: Option<&str>,
    audience: Option<&Audience>,
    id: &str,
    dropped_messages: bool,
) -> Response {
    let what = match campaign_name {
        Some(name) => format!("block \"{name}\""),
        None => "message".to_string(),
    };
    let whom = match audience {
        Some(a) => format!(" for the members of segments {}", a.segments.join(", ")),
        None => String::new(),
    };
    let note = if dropped_messages { "; messages were not sent, since block_id was given" } else { "" };
    answer(StatusCode::OK, true, format!("{what} queued{whom} (request {id}){note}"))
}

/// V2's body as a native plan: the customer's identifiers as one recipient, the block or the
/// messages as content, the notification tokens in the metadata for the Messenger provider.
fn v2_native(b: V2Body) -> Result<SendPlan, ApiError> {
    let mut errs = FieldErrors::new();
    let ids = [&b.customer_id, &b.customer_email, &b.customer_phone, &b.customer_fbid];
    let named = ids.iter().any(|v| v.is_some());
    let audience = v2_audience(&mut errs, named, &b);
    if b.block_id.is_none() && b.messages.is_none() {
        errs.push("block_id", "give block_id (a block to send) or messages (text to send)");
    }
    // The page's own example carries both: the block is what is sent, as a block is the fuller
    // content; the answer says the messages were not sent.
    let messages = if b.block_id.is_some() { None } else { b.messages };
    // A phone that cannot be placed goes on as written, so the native check names it too.
    let phone = b.customer_phone.map(|p| match errs.take("customer_phone", dialling_phone(&p)) {
        Some(ok) => ok.to_string(),
        None => p,
    });
    let priority = priority_channels(&mut errs, b.priority);
    let mut metadata = Map::new();
    for (key, token) in [
        ("notification_messages_token", b.notification_messages_token),
        ("one_time_notif_token", b.one_time_notif_token),
    ] {
        // Bounded one by one, so the metadata they make never outgrows its own limit.
        check_text(&mut errs, key, token.as_deref(), MAX_VARIABLE_VALUE);
        if let Some(t) = token {
            metadata.insert(key.into(), Value::String(t));
        }
    }
    let native = BroadcastBody {
        recipients: named.then(|| {
            vec![RecipientBody {
                contact_id: b.customer_id,
                email: b.customer_email,
                phone,
                messenger_psid: b.customer_fbid,
                ..Default::default()
            }]
        }),
        campaign_id: b.block_id,
        messages,
        priority: (!priority.is_empty()).then(|| priority.iter().map(|c| c.to_string()).collect()),
        audience,
        messaging_tag: b.messaging_tag,
        metadata: Some(metadata),
        ..Default::default()
    };
    validate(native, errs, V2_RENAMES)
}

/// Whom a V2 body addresses: one customer (none of this), or the members of `segments`. A
/// notification token is one person's, so it goes with a customer only.
fn v2_audience(errs: &mut FieldErrors, named: bool, b: &V2Body) -> Option<AudienceBody> {
    if b.segments.is_none() {
        if b.exclude_segments.is_some() {
            errs.push("exclude_segments", "is only taken with segments");
        }
        if !named {
            errs.push(
                "customer_id",
                "give at least one of customer_id, customer_email, customer_phone, customer_fbid (or segments)",
            );
        }
        return None;
    }
    if named {
        errs.push("segments", "give one customer (customer_id, _email, _phone, _fbid) or segments, not both");
    }
    for (key, token) in [
        ("notification_messages_token", &b.notification_messages_token),
        ("one_time_notif_token", &b.one_time_notif_token),
    ] {
        if token.is_some() {
            errs.push(key, "addresses one customer; it cannot go with segments");
        }
    }
    Some(AudienceBody { segments: b.segments.clone(), exclude_segments: b.exclude_segments.clone() })
}

/// SMAX's `priority` names identifiers; Herald's names channels. A phone reaches WhatsApp, then SMS.
fn priority_channels(errs: &mut FieldErrors, list: Option<Vec<String>>) -> Vec<Channel> {
    let Some(list) = list else { return DEFAULT_PRIORITY.to_vec() };
    if list.is_empty() {
        errs.push("priority", "must list at least one of fbid, phone, email when given");
    }
    let mut out = Vec::new();
    for (i, p) in list.iter().enumerate() {
        let channels: &[Channel] = match p.as_str() {
            "fbid" => &[Channel::Messenger],
            "phone" => &[Channel::Whatsapp, Channel::Sms],
            "email" => &[Channel::Email],
            _ => {
                errs.push(format!("priority[{i}]"), "must be fbid, phone or email");
                continue;
            }
        };
        if channels.iter().any(|c| out.contains(c)) {
            errs.push(format!("priority[{i}]"), "is listed twice");
            continue;
        }
        out.extend_from_slice(channels);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_v1_query_splits_into_token_block_tag_and_attributes() {
        let q = V1Query::parse(
            "bot_token=t&block_name=Order%20shipped&order_id=A-1&city=Hanoi&messaging_tag=%22CONFIRMED_EVENT_UPDATE%22",
        );
        assert!(q.errors.is_empty(), "{}", q.errors);
        assert_eq!(q.token.as_deref(), Some("t"));
        assert_eq!(q.block, Some(Block::Name("Order shipped".into())));
        assert_eq!(q.messaging_tag.as_deref(), Some("CONFIRMED_EVENT_UPDATE"));
        assert_eq!(q.attributes.keys().collect::<Vec<_>>(), vec!["city", "order_id"]);
        assert!(!String::from_utf8(q.canonical()).unwrap().contains("bot_token"));
    }

    #[test]
    fn the_v1_query_refuses_reserved_duplicate_and_unknown_values() {
        let q = V1Query::parse("chatfuel_block=x&a=1&a=2&messaging_tag=HUMAN_AGENT&block_id=1&block_name=b&1st=x");
        let named: Vec<&str> = q.errors.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(named, vec!["chatfuel_block", "a", "messaging_tag", "1st", "block_id"]);
        assert_eq!(parse_v1_tag("ACCOUNT_UPDATE"), Ok("ACCOUNT_UPDATE".into()));
    }

    #[test]
    fn v2_priority_maps_identifiers_to_channels() {
        let mut errs = FieldErrors::new();
        let got = priority_channels(&mut errs, Some(vec!["email".into(), "phone".into()]));
        assert_eq!(got, vec![Channel::Email, Channel::Whatsapp, Channel::Sms]);
        priority_channels(&mut errs, Some(vec!["fbid".into(), "fax".into(), "fbid".into()]));
        let named: Vec<&str> = errs.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(named, vec!["priority[1]", "priority[2]"]);
        assert_eq!(priority_channels(&mut FieldErrors::new(), None), DEFAULT_PRIORITY.to_vec());
    }
}
