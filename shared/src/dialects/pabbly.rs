//! Pabbly Chatflow's Broadcasts API (seed 004). Pabbly sends WhatsApp only, so every send here
//! asks for the `whatsapp` channel and answers in WhatsApp's shape with `"success": "true"` (a
//! string, as the seed writes it).
//!
//! - `POST /compat/pabbly/api/v1/broadcasts/send` — "Send API Campaign" (the seed): one template
//!   of an API campaign to one number, delivered inline so the answer carries the message id.
//! - `POST /compat/pabbly/api/v1/broadcasts` — "Send Broadcast with Regular Message" (`message`)
//!   or "… with Template Message" (`templateName`) to up to 1,000 numbers, queued; or, with
//!   `campaignName`, "Add API Campaign" (the seed lists all three at this one path).
//! - `POST /compat/pabbly/api/v1/broadcasts/api-campaigns` — "Add API Campaign" too (an alias).
//!
//! The page lists the last three without their bodies; theirs are Herald's design in the seed's
//! camelCase (docs/dialects.md). Errors use Herald's native body (the page shows none).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::{StreamExt, TryStreamExt};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::{campaigns_named, dialling_phone, rename, required, validate, with_request_id, Renames};
use crate::app::Herald;
use crate::domain::limits::{MAX_RECIPIENTS, MAX_STRING};
use crate::domain::{check_text, parse_variables, BroadcastBody, Campaign, CampaignBody, Channel, Contact, ContactKey};
use crate::domain::{FieldErrors, HeaderKind, Media, MessageBody, Phone, RecipientBody, RecipientRow, Status};
use crate::domain::{SendPlan, Template, TemplateRef};
use crate::http::error::ApiError;
use crate::http::extract::{parse_json, JsonBytes, Tenant};
use crate::http::idempotent;
use crate::service::catalog::create_campaign;
use crate::service::ingest::{ingest, Accepted};

const SEND: &str = "/compat/pabbly/api/v1/broadcasts/send";
const BROADCASTS: &str = "/compat/pabbly/api/v1/broadcasts";
const API_CAMPAIGNS: &str = "/compat/pabbly/api/v1/broadcasts/api-campaigns";
/// "Its value must be one of the following: 'manual', 'csv', 'api', 'user', 'sync', or 'wa'."
const SOURCES: [&str; 6] = ["manual", "csv", "api", "user", "sync", "wa"];

const SEND_RENAMES: Renames = &[
    ("recipients[0].phone", "destination"),
    ("recipients[0].name", "userName"),
    ("recipients[0].variables", "defaultContactFieldValues"),
    ("recipients", "destination"),
    ("campaign_id", "campaignName"),
    ("template_ids[0]", "templateName"),
    ("template_ids", "templateName"),
    ("header_params", "headerParams"),
    ("body_params", "bodyParams"),
    ("media.link", "link"),
    ("media.filename", "filename"),
    ("media", "link"),
    ("metadata", "source"),
];
const BROADCAST_RENAMES: Renames = &[
    ("recipients", "destinations"),
    ("messages[0].text", "message"),
    ("messages", "message"),
    ("campaign_id", "message"),
    ("template", "templateName"),
    ("header_params", "headerParams"),
    ("body_params", "bodyParams"),
    ("media.link", "link"),
    ("media.filename", "filename"),
    ("media", "link"),
    ("metadata", "broadcastName"),
];
const CAMPAIGN_RENAMES: Renames =
    &[("name", "campaignName"), ("template_ids", "templateNames"), ("defaults", "defaultContactFieldValues")];

pub(super) fn routes() -> Router<Arc<Herald>> {
    Router::new().route(SEND, post(send)).route(BROADCASTS, post(broadcast)).route(API_CAMPAIGNS, post(add_campaign))
}

async fn send(
    State(h): State<Arc<Herald>>,
    Tenant(t): Tenant,
    headers: HeaderMap,
    JsonBytes(b): JsonBytes,
) -> Response {
    idempotent(&h, &t, &headers, &format!("POST {SEND}"), &b, || async {
        send_run(&h, &t, &b).await.unwrap_or_else(IntoResponse::into_response)
    })
    .await
}

async fn broadcast(
    State(h): State<Arc<Herald>>,
    Tenant(t): Tenant,
    headers: HeaderMap,
    JsonBytes(b): JsonBytes,
) -> Response {
    idempotent(&h, &t, &headers, &format!("POST {BROADCASTS}"), &b, || async {
        let run =
            if adds_a_campaign(&b) { add_campaign_run(&h, &t, &b).await } else { broadcast_run(&h, &t, &b).await };
        run.unwrap_or_else(IntoResponse::into_response)
    })
    .await
}

/// Whether a `POST /broadcasts` body is "Add API Campaign": it names `campaignName`, which no
/// broadcast body has, and nothing only a broadcast has. Anything else is read (and refused, if
/// need be) as a broadcast.
fn adds_a_campaign(body: &[u8]) -> bool {
    const BROADCAST_ONLY: [&str; 4] = ["broadcastName", "destinations", "message", "templateName"];
    serde_json::from_slice::<Map<String, Value>>(body)
        .is_ok_and(|m| m.contains_key("campaignName") && !BROADCAST_ONLY.iter().any(|k| m.contains_key(*k)))
}

async fn add_campaign(
    State(h): State<Arc<Herald>>,
    Tenant(t): Tenant,
    headers: HeaderMap,
    JsonBytes(b): JsonBytes,
) -> Response {
    idempotent(&h, &t, &headers, &format!("POST {API_CAMPAIGNS}"), &b, || async {
        add_campaign_run(&h, &t, &b).await.unwrap_or_else(IntoResponse::into_response)
    })
    .await
}

// ---------------------------------------------------------------------------- send API campaign

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SendBody {
    template_name: Option<String>,
    campaign_name: Option<String>,
    destination: Option<String>,
    user_name: Option<String>,
    header_params: Option<Vec<String>>,
    body_params: Option<Vec<String>>,
    source: Option<String>,
    link: Option<String>,
    filename: Option<String>,
    default_contact_field_values: Option<Map<String, Value>>,
}

async fn send_run(h: &Herald, tenant: &str, body: &[u8]) -> Result<Response, ApiError> {
    let (plan, contacts) = send_plan(h, tenant, body).await?;
    let accepted = ingest(&h.ingest, tenant, plan, "pabbly").await.map_err(|e| rename(e.into(), SEND_RENAMES))?;
    Ok(whatsapp_answer(&accepted, contacts, Map::new()))
}

/// A "send message" body as a native plan, with the `contacts` its answer lists.
pub(crate) async fn send_plan(h: &Herald, tenant: &str, body: &[u8]) -> Result<(SendPlan, Vec<Value>), ApiError> {
    let b = parse_json::<SendBody>(body)?;
    let mut errs = FieldErrors::new();
    let destination = required(&mut errs, "destination", b.destination);
    let phone = destination.as_deref().and_then(|d| errs.take("destination", dialling_phone(d)));
    let user_name = required_text(&mut errs, "userName", b.user_name);
    let source = required(&mut errs, "source", b.source);
    if source.as_deref().is_some_and(|s| !SOURCES.contains(&s)) {
        errs.push("source", format!("must be one of {}", SOURCES.join(", ")));
    }
    let defaults = parse_variables(&mut errs, "defaultContactFieldValues", b.default_contact_field_values.as_ref());
    let campaign = match required(&mut errs, "campaignName", b.campaign_name) {
        Some(name) => api_campaign(h, tenant, &mut errs, &name).await?,
        None => None,
    };
    let template_name = required(&mut errs, "templateName", b.template_name);
    let template = match &template_name {
        Some(name) => template_named(h, tenant, &mut errs, "templateName", name).await?,
        None => None,
    };
    if let (Some(c), Some(t)) = (&campaign, &template) {
        if !c.template_ids.contains(&t.id) {
            errs.push("templateName", format!("\"{}\" is not a template of API campaign \"{}\"", t.id, c.name));
        }
    }
    let media = template.as_ref().and_then(|t| media_for(&mut errs, t, b.link, b.filename));
    let recipient = match &phone {
        Some(p) => Some(recipient_for(h, tenant, p, user_name, &defaults).await?),
        None => None,
    };
    let contacts: Vec<Value> = destination.iter().zip(&phone).map(|(input, p)| contact_json(input, p)).collect();
    let native = BroadcastBody {
        recipients: recipient.map(|r| vec![r]),
        template_ids: campaign.as_ref().and(template_name).map(|t| vec![t]),
        campaign_id: campaign.map(|c| c.id),
        header_params: b.header_params,
        body_params: b.body_params,
        media,
        channel: Some(Channel::Whatsapp.to_string()),
        // Herald's contacts keep no creation source; the request keeps it.
        metadata: source.map(|s| Map::from_iter([("source".to_string(), Value::String(s))])),
        // Pabbly answers with WhatsApp's message id, so the message is sent before answering.
        background: Some(false),
        ..Default::default()
    };
    let mut plan = validate(native, errs, SEND_RENAMES)?;
    plan.defaults = defaults;
    Ok((plan, contacts))
}

/// The API campaign named `name`: a campaign of the tenant with that name, exactly one.
async fn api_campaign(
    h: &Herald,
    tenant: &str,
    errs: &mut FieldErrors,
    name: &str,
) -> Result<Option<Campaign>, ApiError> {
    let mut found = campaigns_named(h, tenant, name).await?;
    match found.len() {
        0 => errs.push(
            "campaignName",
            format!("no API campaign named \"{name}\"; add it with POST {BROADCASTS} and campaignName"),
        ),
        1 => return Ok(found.pop()),
        n => errs.push("campaignName", format!("{n} campaigns are named \"{name}\"; rename all but one")),
    }
    Ok(None)
}

// -------------------------------------------------------------- broadcast (regular or template)

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Broadcast {
    broadcast_name: Option<String>,
    destinations: Option<Vec<String>>,
    message: Option<String>,
    template_name: Option<String>,
    header_params: Option<Vec<String>>,
    body_params: Option<Vec<String>>,
    link: Option<String>,
    filename: Option<String>,
    default_contact_field_values: Option<Map<String, Value>>,
}

async fn broadcast_run(h: &Herald, tenant: &str, body: &[u8]) -> Result<Response, ApiError> {
    let b = parse_json::<Broadcast>(body)?;
    let mut errs = FieldErrors::new();
    let name = required_text(&mut errs, "broadcastName", b.broadcast_name);
    let destinations = required(&mut errs, "destinations", b.destinations).unwrap_or_default();
    if destinations.len() > MAX_RECIPIENTS
        || (destinations.is_empty() && errs.0.iter().all(|e| e.field != "destinations"))
    {
        errs.push("destinations", format!("must list 1 to {MAX_RECIPIENTS} numbers (got {})", destinations.len()));
    }
    let phones: Vec<Option<Phone>> = destinations
        .iter()
        .enumerate()
        .map(|(i, d)| errs.take(format!("destinations[{i}]"), dialling_phone(d)))
        .collect();
    match (&b.message, &b.template_name) {
        (None, None) => errs.push("message", "give message (a regular message) or templateName (a template message)"),
        (Some(_), Some(_)) => errs.push("message", "give message or templateName, not both"),
        _ => {}
    }
    let template = match &b.template_name {
        Some(t) => template_named(h, tenant, &mut errs, "templateName", t).await?,
        None => None,
    };
    let media = template.as_ref().and_then(|t| media_for(&mut errs, t, b.link, b.filename));
    let defaults = parse_variables(&mut errs, "defaultContactFieldValues", b.default_contact_field_values.as_ref());
    // Known numbers are looked up a few at a time: a broadcast may name a thousand.
    let fallbacks = &defaults;
    let recipients: Vec<RecipientBody> = futures::stream::iter(phones.iter().flatten().cloned())
        .map(|p| async move { recipient_for(h, tenant, &p, None, fallbacks).await })
        .buffered(16)
        .try_collect()
        .await?;
    let contacts: Vec<Value> =
        destinations.iter().zip(&phones).filter_map(|(d, p)| p.as_ref().map(|p| contact_json(d, p))).collect();
    let native = BroadcastBody {
        recipients: (!recipients.is_empty()).then_some(recipients),
        messages: b.message.map(|text| vec![MessageBody { text }]),
        template: b.template_name.map(TemplateRef::Id),
        header_params: b.header_params,
        body_params: b.body_params,
        media,
        channel: Some(Channel::Whatsapp.to_string()),
        metadata: name.clone().map(|n| Map::from_iter([("broadcastName".to_string(), Value::String(n))])),
        background: Some(true),
        ..Default::default()
    };
    let mut plan = validate(native, errs, BROADCAST_RENAMES)?;
    plan.defaults = defaults;
    let accepted = ingest(&h.ingest, tenant, plan, "pabbly").await.map_err(|e| rename(e.into(), BROADCAST_RENAMES))?;
    let extra = Map::from_iter([
        ("broadcastId".to_string(), json!(accepted.request.id)),
        ("broadcastName".to_string(), json!(name)),
    ]);
    Ok(whatsapp_answer(&accepted, contacts, extra))
}

// ------------------------------------------------------------------------------ add API campaign

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ApiCampaign {
    campaign_name: Option<String>,
    template_names: Option<Vec<String>>,
    default_contact_field_values: Option<Map<String, Value>>,
}

/// An API campaign is a Herald campaign: the templates `broadcasts/send` may fire under its
/// name, and the fallbacks they render with. Its name must be unique, since sends find it by name:
/// its id is derived from the name and created only if free, so of racing adds of one name
/// exactly one creates it.
async fn add_campaign_run(h: &Herald, tenant: &str, body: &[u8]) -> Result<Response, ApiError> {
    let b = parse_json::<ApiCampaign>(body)?;
    let exists = |name: &str| ApiError::Conflict {
        code: "campaign_exists",
        message: format!("an API campaign named \"{name}\" already exists"),
        retry_after: None,
    };
    let name = b.campaign_name.clone().unwrap_or_default();
    if b.campaign_name.is_some() && !campaigns_named(h, tenant, &name).await?.is_empty() {
        return Err(exists(&name));
    }
    let native = CampaignBody {
        name: b.campaign_name,
        template_ids: b.template_names,
        defaults: b.default_contact_field_values,
    };
    let id = api_campaign_id(&name);
    let created = create_campaign(h.catalog.as_ref(), tenant, &id, native)
        .await
        .map_err(|e| rename(e.into(), CAMPAIGN_RENAMES))?;
    let Some(c) = created else { return Err(exists(&name)) };
    let data = json!({
        "id": c.id,
        "campaignName": c.name,
        "templateNames": c.template_ids,
        "defaultContactFieldValues": c.defaults,
        "createdAt": c.created_at,
    });
    Ok((StatusCode::CREATED, Json(json!({"success": "true", "data": data}))).into_response())
}

/// The id of the API campaign named `name`: the same name always gives the same id.
fn api_campaign_id(name: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("cmp_{}", hex::encode(&Sha256::digest(name.as_bytes())[..16]))
}

// ------------------------------------------------------------------------------------- shared

/// A required string that must not be blank, at most [`MAX_STRING`] characters.
fn required_text(errs: &mut FieldErrors, field: &str, value: Option<String>) -> Option<String> {
    let value = required(errs, field, value)?;
    if value.trim().is_empty() {
        errs.push(field, "must not be blank");
        return None;
    }
    let before = errs.0.len();
    check_text(errs, field, Some(&value), MAX_STRING);
    (errs.0.len() == before).then_some(value)
}

async fn template_named(
    h: &Herald,
    tenant: &str,
    errs: &mut FieldErrors,
    field: &str,
    name: &str,
) -> Result<Option<Template>, ApiError> {
    let found = h.catalog.get_template(tenant, name).await?;
    if found.is_none() {
        errs.push(field, format!("no template named \"{name}\""));
    }
    Ok(found)
}

/// The media for a template's file header: `link` (and `filename`, for a document) from the
/// body, required unless the template stores a link of its own. A template without a file
/// header ignores both, as the seed's example sends them whatever the template.
fn media_for(errs: &mut FieldErrors, t: &Template, link: Option<String>, filename: Option<String>) -> Option<Media> {
    let header = t.header.as_ref().filter(|hd| hd.kind != HeaderKind::Text)?;
    let Some(link) = link else {
        if header.link.is_none() {
            let kind = match header.kind {
                HeaderKind::Image => "an image",
                HeaderKind::Video => "a video",
                _ => "a document",
            };
            errs.push("link", format!("is required: template \"{}\" has {kind} header", t.id));
        }
        return None;
    };
    Some(Media { link, filename: filename.filter(|_| header.kind == HeaderKind::Document) })
}

/// The native recipient for a number. A number Herald knows names its contact by id, so its
/// stored name stands (`userName` only names a contact being created) and a stored field left
/// empty still takes its fallback; a new number carries `userName` for the contact to create.
async fn recipient_for(
    h: &Herald,
    tenant: &str,
    phone: &Phone,
    user_name: Option<String>,
    defaults: &BTreeMap<String, String>,
) -> Result<RecipientBody, ApiError> {
    let phone_text = Some(phone.to_string());
    Ok(match h.contacts.find_contact(tenant, &ContactKey::Phone(phone.clone())).await? {
        Some(c) => RecipientBody {
            contact_id: Some(c.id.clone()),
            phone: phone_text,
            variables: empty_field_fallbacks(&c, defaults),
            ..Default::default()
        },
        None => RecipientBody { phone: phone_text, name: user_name, ..Default::default() },
    })
}

/// `defaultContactFieldValues` apply "when a contact's attribute is missing or empty". The
/// native defaults layer covers a missing field; an empty one would win over it, so its
/// fallback rides as a variable for this recipient.
fn empty_field_fallbacks(c: &Contact, defaults: &BTreeMap<String, String>) -> Option<Map<String, Value>> {
    let m: Map<String, Value> = defaults
        .iter()
        .filter(|(k, _)| c.fields.get(*k).is_some_and(|v| v.trim().is_empty()))
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    (!m.is_empty()).then_some(m)
}

/// WhatsApp's `contacts` entry: the number as given, and its WhatsApp id (E.164 digits).
fn contact_json(input: &str, phone: &Phone) -> Value {
    json!({"input": input, "wa_id": phone.as_str().trim_start_matches('+')})
}

/// WhatsApp's `messages` entry. A message the provider took is `accepted` under the provider's
/// id; one Herald still holds (queued, retrying) or gave up on shows its row id and status.
fn message_json(row: &RecipientRow) -> Value {
    match (&row.external_message_id, reached_provider(row.status)) {
        (Some(id), true) => json!({"id": id, "message_status": "accepted"}),
        _ => json!({"id": row.id, "message_status": row.status}),
    }
}

fn reached_provider(s: Status) -> bool {
    matches!(s, Status::Sent | Status::Delivered | Status::Read | Status::Opened | Status::Played)
}

/// The seed's answer. `success` is `"false"` when a message ended without reaching WhatsApp
/// (skipped or failed), with the reason in `message`.
fn whatsapp_answer(accepted: &Accepted, contacts: Vec<Value>, extra: Map<String, Value>) -> Response {
    let refused = accepted.rows.iter().find(|r| r.status.is_terminal() && !reached_provider(r.status));
    let mut data = extra;
    data.insert("messaging_product".into(), json!("whatsapp"));
    data.insert("contacts".into(), json!(contacts));
    data.insert("messages".into(), accepted.rows.iter().map(message_json).collect());
    data.insert("code".into(), json!(200));
    let mut body = json!({"success": if refused.is_some() { "false" } else { "true" }, "data": data});
    if let Some(row) = refused {
        body["message"] = json!(row.error_message);
    }
    with_request_id((StatusCode::OK, Json(body)).into_response(), &accepted.request.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(header: Option<HeaderKind>) -> Template {
        let now = crate::domain::now();
        Template {
            id: "t".into(),
            channel: None,
            body: "b".into(),
            subject: None,
            header: header.map(|kind| crate::domain::TemplateHeader {
                kind,
                text: (kind == HeaderKind::Text).then(|| "Dear {{1}}".into()),
                link: None,
                filename: None,
            }),
            language: None,
            whatsapp: None,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn link_and_filename_follow_the_templates_header() {
        let mut errs = FieldErrors::new();
        let (link, file) = (Some("https://x.example/a.pdf".to_string()), Some("a.pdf".to_string()));
        assert_eq!(media_for(&mut errs, &template(Some(HeaderKind::Text)), link.clone(), file.clone()), None);
        assert_eq!(media_for(&mut errs, &template(None), link.clone(), file.clone()), None);
        let doc = media_for(&mut errs, &template(Some(HeaderKind::Document)), link.clone(), file.clone()).unwrap();
        assert_eq!(doc.filename.as_deref(), Some("a.pdf"));
        let image = media_for(&mut errs, &template(Some(HeaderKind::Image)), link, file).unwrap();
        assert_eq!(image.filename, None, "filename is only for documents");
        assert!(errs.is_empty());
        assert_eq!(media_for(&mut errs, &template(Some(HeaderKind::Image)), None, None), None);
        assert_eq!(errs.0[0].field, "link");
    }

    #[test]
    fn an_empty_stored_field_takes_its_fallback() {
        let mut c = Contact::new("c".into());
        c.fields.insert("Country".into(), " ".into());
        c.fields.insert("City".into(), "Pune".into());
        let defaults = BTreeMap::from([
            ("Country".to_string(), "India".to_string()),
            ("City".to_string(), "Delhi".to_string()),
            ("Zip".to_string(), "1".to_string()),
        ]);
        let m = empty_field_fallbacks(&c, &defaults).unwrap();
        assert_eq!(
            m,
            Map::from_iter([("Country".to_string(), json!("India"))]),
            "missing ones are the defaults layer's"
        );
    }
}
