//! Invent's "Send a Transactional Broadcast" (seed 003):
//! `POST /compat/invent/orgs/{org_id}/broadcasts/{broadcast_id}/send` with a Bearer key. The org
//! is the tenant, the broadcast a campaign. One recipient, fanned out over the campaign's
//! templates; `background: false` (Invent's default) delivers inline and answers each row with
//! its `external_message_id`. Errors use Herald's native body (the page shows none of its own).

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{dialling_phone, validate, Renames};
use crate::api::error::ApiError;
use crate::api::parse_json;
use crate::domain::{BroadcastBody, Channel, Contact, ContactChannel, FieldErrors, Phone};
use crate::domain::{RecipientBody, RecipientRow, RowView, Segment, SendPlan, SendRequest};

pub(crate) const RENAMES: Renames = &[
    ("recipients[0].contact_channel_id", "contact_channel_id"),
    ("recipients[0].contact_id", "contact_id"),
    ("recipients[0].phone", "phone"),
    ("recipients[0].email", "email"),
    ("recipients[0].name", "name"),
    ("recipients[0]", "contact_id"),
    ("campaign_id", "broadcast_id"),
];

/// "Recipient identifier fields are at the root."
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Body {
    contact_channel_id: Option<String>,
    contact_id: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    name: Option<String>,
    variables: Option<Map<String, Value>>,
    template_ids: Option<Vec<String>>,
    background: Option<bool>,
}

/// A request body, read strictly.
pub(crate) fn read(body: &[u8]) -> Result<Body, ApiError> {
    parse_json::<Body>(body)
}

/// The body as a native plan for the campaign `campaign_id` (Invent's broadcast).
pub(crate) fn plan(b: Body, campaign_id: String) -> Result<SendPlan, ApiError> {
    let mut errs = FieldErrors::new();
    if [&b.contact_channel_id, &b.contact_id, &b.phone, &b.email].iter().all(|v| v.is_none()) {
        errs.push("contact_id", "give contact_channel_id, contact_id, phone or email: who to send to");
    }
    // "Raw phone": with or without the `+`. One that cannot be placed goes on as written, so
    // the native check fails on it too and nothing else is mistaken for the recipient.
    let phone = b.phone.map(|p| match errs.take("phone", dialling_phone(&p)) {
        Some(ok) => ok.to_string(),
        None => p,
    });
    let native = BroadcastBody {
        recipients: Some(vec![RecipientBody {
            contact_channel_id: b.contact_channel_id,
            contact_id: b.contact_id,
            phone,
            email: b.email,
            name: b.name,
            ..Default::default()
        }]),
        campaign_id: Some(campaign_id),
        template_ids: b.template_ids,
        variables: b.variables,
        background: Some(b.background.unwrap_or(false)),
        ..Default::default()
    };
    let mut plan = validate(native, errs, RENAMES)?;
    // "When no contact is resolved by contact_channel_id/contact_id, it find-or-creates a
    // contact by phone" (or email).
    for r in &mut plan.recipients {
        r.fall_back_to_keys = true;
    }
    Ok(plan)
}

/// The fields of seed 003's `BroadcastRecipient`, in its order.
const DOCUMENTED: [&str; 32] = [
    "id",
    "broadcast_id",
    "broadcast_name",
    "template_id",
    "user_id",
    "name",
    "username",
    "phone",
    "email",
    "is_skipped",
    "is_skipped_at",
    "is_failed",
    "is_failed_at",
    "is_bounced",
    "is_bounced_at",
    "is_sent",
    "is_sent_at",
    "is_delivered",
    "is_delivered_at",
    "is_complained",
    "is_complained_at",
    "is_unsubscribed",
    "is_unsubscribed_at",
    "is_opened",
    "is_opened_at",
    "is_played",
    "is_played_at",
    "error_message",
    "external_message_id",
    "created_at",
    "updated_at",
    "contact",
];

/// A row as Invent's `BroadcastRecipient`: the native row view (which already carries Invent's
/// documented fields), `username`, and the `contact` the row resolved to (when known) with the
/// segments it is in (each as [`segment_json`]).
pub(crate) fn recipient_json(
    request: &SendRequest,
    row: &RecipientRow,
    contact: Option<(&Contact, &[Value])>,
) -> Value {
    let view =
        RowView { row, broadcast_id: request.campaign_id.as_deref(), broadcast_name: request.campaign_name.as_deref() };
    let mut v = view.to_json();
    // Herald keeps no user names: the row's `user_id` and the channels' `user_id` name people.
    v["username"] = Value::Null;
    v["contact"] = contact.map(|(c, segments)| contact_json(c, segments)).unwrap_or(Value::Null);
    // Exactly Invent's documented fields: Herald's own (status, request_id, …) stay native.
    if let Value::Object(m) = &mut v {
        m.retain(|k, _| DOCUMENTED.contains(&k.as_str()));
    }
    v
}

/// Invent's `Contact`: Herald's fields are its `properties`, its segments Herald's segments it
/// is in; Herald has no admins, or block/unsubscribe times and reasons, so those are null.
fn contact_json(c: &Contact, segments: &[Value]) -> Value {
    let channels: Vec<Value> = c.channels().iter().map(|ch| channel_json(c, ch)).collect();
    json!({
        "id": c.id,
        "name": c.name,
        "blocked": c.blocked,
        "unsubscribed": c.unsubscribed,
        "is_admin": false,
        "channels": channels,
        "segments": segments,
        "properties": c.fields,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "blocked_at": null,
        "unsubscribed_at": null,
        "unsubscribe_reason": null,
        "unsubscribe_feedback": null,
    })
}

/// Invent's `Segment`: a Herald segment and its member count.
pub(crate) fn segment_json(segment: &Segment, members: u64) -> Value {
    json!({
        "id": segment.id,
        "name": segment.name,
        "contacts_count": members,
        "created_at": segment.created_at,
        "updated_at": segment.updated_at,
    })
}

/// Invent's `ContactChannel`: its id is the `contact_channel_id` a later send can name; its
/// `user_id` is the address on that channel.
fn channel_json(c: &Contact, ch: &ContactChannel) -> Value {
    let phone = matches!(ch.channel, Channel::Whatsapp | Channel::Sms).then_some(ch.address.as_str());
    let email = (ch.channel == Channel::Email).then_some(ch.address.as_str());
    let country = phone.and_then(|p| Phone::parse(p).ok()).and_then(|p| country_of(&p));
    json!({
        "id": ch.id,
        "user_id": ch.address,
        "avatar": null,
        "name": c.name,
        "username": null,
        "email": email,
        "phone": phone,
        "country": country,
        "agent": null,
        "ip": null,
        "language": null,
        "platform_data": {"channel": ch.channel},
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "link": email.map(|e| format!("mailto:{e}")),
    })
}

/// The ISO 3166 country of a phone number (`US`), when its dialling code names one.
fn country_of(phone: &Phone) -> Option<String> {
    let parsed = phonenumber::parse(None, phone.as_str()).ok()?;
    parsed.country().id().map(|id| id.as_ref().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contact_has_invents_fields_with_channels_and_its_segments() {
        let mut c = Contact::new("ct-1".into());
        c.name = Some("Ada".into());
        c.phone = Some(Phone::parse("+14155550123").unwrap());
        c.email = Some(crate::domain::Email::parse("ada@example.com").unwrap());
        c.fields.insert("city".into(), "Lyon".into());
        let vip = Segment { id: "vip".into(), name: "VIP".into(), created_at: c.created_at, updated_at: c.created_at };
        let v = contact_json(&c, &[segment_json(&vip, 3)]);
        assert_eq!(v["segments"][0]["id"], json!("vip"));
        assert_eq!(v["segments"][0]["contacts_count"], json!(3));
        assert_eq!(v["properties"], json!({"city": "Lyon"}));
        let channels = v["channels"].as_array().unwrap();
        assert_eq!(channels.len(), 3, "whatsapp, sms and email");
        assert_eq!(channels[0]["id"], "ct-1~whatsapp");
        assert_eq!(channels[0]["phone"], "+14155550123");
        assert_eq!(channels[0]["country"], "US");
        assert_eq!(channels[2]["email"], "ada@example.com");
        assert_eq!(channels[2]["phone"], Value::Null);
    }
}
