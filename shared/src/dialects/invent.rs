//! Invent's "Send a Transactional Broadcast" (seed 003):
//! `POST /compat/invent/orgs/{org_id}/broadcasts/{broadcast_id}/send` with a Bearer key. The org
//! is the tenant, the broadcast a campaign. One recipient, fanned out over the campaign's
//! templates; `background: false` (Invent's default) delivers inline and answers each row with
//! its `external_message_id`. Errors use Herald's native body (the page shows none of its own).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

use super::{dialling_phone, rename, validate, with_request_id, Renames};
use crate::app::Herald;
use crate::domain::{BroadcastBody, Channel, Contact, ContactChannel, ContactKey, FieldErrors, Phone};
use crate::domain::{RecipientBody, RecipientRow, RowView, SendPlan};
use crate::http::error::ApiError;
use crate::http::extract::{parse_json, JsonBytes, Tenant};
use crate::http::idempotent;
use crate::service::ingest::{ingest, Accepted};

const PATH: &str = "/compat/invent/orgs/{org_id}/broadcasts/{broadcast_id}/send";

const RENAMES: Renames = &[
    ("recipients[0].contact_channel_id", "contact_channel_id"),
    ("recipients[0].contact_id", "contact_id"),
    ("recipients[0].phone", "phone"),
    ("recipients[0].email", "email"),
    ("recipients[0].name", "name"),
    ("recipients[0]", "contact_id"),
    ("campaign_id", "broadcast_id"),
];

pub(super) fn routes() -> Router<Arc<Herald>> {
    Router::new().route(PATH, post(send))
}

/// "Recipient identifier fields are at the root."
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    contact_channel_id: Option<String>,
    contact_id: Option<String>,
    phone: Option<String>,
    email: Option<String>,
    name: Option<String>,
    variables: Option<Map<String, Value>>,
    template_ids: Option<Vec<String>>,
    background: Option<bool>,
}

async fn send(
    State(h): State<Arc<Herald>>,
    Tenant(tenant): Tenant,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> Response {
    // A path axum cannot read (bad percent-encoding) is answered in JSON like every other error.
    let Ok(Path((org_id, broadcast_id))) = path else {
        return ApiError::NotFound("no such org or broadcast".into()).into_response();
    };
    if org_id != tenant {
        // The same answer whether or not the org exists: a key cannot probe for other tenants.
        return ApiError::NotFound(format!("no org \"{org_id}\"")).into_response();
    }
    let route = format!("POST /compat/invent/orgs/{org_id}/broadcasts/{broadcast_id}/send");
    idempotent(&h, &tenant, &headers, &route, &body, || async {
        run(&h, &tenant, &broadcast_id, &body).await.unwrap_or_else(IntoResponse::into_response)
    })
    .await
}

async fn run(h: &Herald, tenant: &str, broadcast_id: &str, body: &[u8]) -> Result<Response, ApiError> {
    let plan = plan(h, tenant, broadcast_id, body).await?;
    let accepted = ingest(&h.ingest, tenant, plan, "invent").await.map_err(|e| rename(e.into(), RENAMES))?;
    let recipients = broadcast_recipients(h, tenant, &accepted).await?;
    let answer = (StatusCode::OK, Json(json!({ "recipients": recipients }))).into_response();
    Ok(with_request_id(answer, &accepted.request.id))
}

/// The body as a native plan for the broadcast (campaign) `broadcast_id`.
pub(crate) async fn plan(h: &Herald, tenant: &str, broadcast_id: &str, body: &[u8]) -> Result<SendPlan, ApiError> {
    let b = parse_json::<Body>(body)?;
    let Some(campaign) = h.catalog.get_campaign(tenant, broadcast_id).await? else {
        return Err(ApiError::NotFound(format!("no broadcast \"{broadcast_id}\"")));
    };
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
        campaign_id: Some(campaign.id),
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

/// Each row as Invent's `BroadcastRecipient`: the native row view (which already carries
/// Invent's documented fields, `username` and the `contact` the row resolved to.
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

async fn broadcast_recipients(h: &Herald, tenant: &str, accepted: &Accepted) -> Result<Vec<Value>, ApiError> {
    let request = &accepted.request;
    let mut contacts: HashMap<String, Option<Contact>> = HashMap::new();
    let mut out = Vec::with_capacity(accepted.rows.len());
    for row in &accepted.rows {
        let view = RowView {
            row,
            broadcast_id: request.campaign_id.as_deref(),
            broadcast_name: request.campaign_name.as_deref(),
        };
        let mut v = view.to_json();
        let contact = match contact_id_of(h, tenant, row).await? {
            Some(id) => match contacts.get(&id) {
                Some(c) => c.clone(),
                None => {
                    let c = h.contacts.get_contact(tenant, &id).await?;
                    contacts.insert(id, c.clone());
                    c
                }
            },
            None => None,
        };
        // Herald keeps no user names: the row's `user_id` and the channels' `user_id` name people.
        v["username"] = Value::Null;
        v["contact"] = contact.as_ref().map(contact_json).unwrap_or(Value::Null);
        // Exactly Invent's documented fields: Herald's own (status, request_id, …) stay native.
        if let Value::Object(m) = &mut v {
            m.retain(|k, _| DOCUMENTED.contains(&k.as_str()));
        }
        out.push(v);
    }
    Ok(out)
}

/// The contact a row is for. A queued row (`background: true`) may not have resolved a new
/// phone or email yet; then an existing contact holding it is shown, else none.
async fn contact_id_of(h: &Herald, tenant: &str, row: &RecipientRow) -> Result<Option<String>, ApiError> {
    if row.contact_id.is_some() {
        return Ok(row.contact_id.clone());
    }
    let spec = &row.recipient;
    let named = spec.contact_id.clone().or_else(|| {
        spec.contact_channel_id.as_deref().and_then(Contact::parse_channel_id).map(|(id, _)| id.to_string())
    });
    // A named contact that does not exist (yet) leaves the row to find-or-create by phone or email.
    if let Some(id) = named {
        if h.contacts.get_contact(tenant, &id).await?.is_some() {
            return Ok(Some(id));
        }
    }
    let keys = spec.phone.clone().map(ContactKey::Phone).into_iter().chain(spec.email.clone().map(ContactKey::Email));
    for key in keys {
        if let Some(c) = h.contacts.find_contact(tenant, &key).await? {
            return Ok(Some(c.id));
        }
    }
    Ok(None)
}

/// Invent's `Contact`: Herald's fields are its `properties`; Herald has no segments, admins, or
/// block/unsubscribe times and reasons, so those are empty or null.
fn contact_json(c: &Contact) -> Value {
    let channels: Vec<Value> = c.channels().iter().map(|ch| channel_json(c, ch)).collect();
    json!({
        "id": c.id,
        "name": c.name,
        "blocked": c.blocked,
        "unsubscribed": c.unsubscribed,
        "is_admin": false,
        "channels": channels,
        "segments": [],
        "properties": c.fields,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "blocked_at": null,
        "unsubscribed_at": null,
        "unsubscribe_reason": null,
        "unsubscribe_feedback": null,
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
    fn a_contact_has_invents_fields_with_channels_and_no_segments() {
        let mut c = Contact::new("ct-1".into());
        c.name = Some("Ada".into());
        c.phone = Some(Phone::parse("+14155550123").unwrap());
        c.email = Some(crate::domain::Email::parse("ada@example.com").unwrap());
        c.fields.insert("city".into(), "Lyon".into());
        let v = contact_json(&c);
        assert_eq!(v["segments"], json!([]));
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
