//! Pabbly Chatflow's Broadcasts API (seed 004). Pabbly sends WhatsApp only, so every send here
//! asks for the `whatsapp` channel and answers in WhatsApp's shape with `"success": "true"` (a
//! string, as the seed writes it).
//!
//! - `POST /compat/pabbly/api/v1/broadcasts/send` — "Send API Campaign" (the seed): one template
//!   of an API campaign to one number, delivered inline so the answer carries the message id.
//! - `POST /compat/pabbly/api/v1/broadcasts` — "Send Broadcast with Regular Message" (`message`)
//!   or "… with Template Message" (`templateName`) to up to 1,000 numbers, or to the members of
//!   Herald segments (`segments`, fanned out through the queue), queued; or, with `campaignName`,
//!   "Add API Campaign" (the seed lists all three at this one path).
//! - `POST /compat/pabbly/api/v1/broadcasts/api-campaigns` — "Add API Campaign" too (an alias).
//!
//! The page lists the last three without their bodies; theirs are Herald's design in the seed's
//! camelCase (docs/dialects.md). Errors use Herald's native body (the page shows none).

use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

use super::{dialling_phone, required, validate, Renames};
use crate::api::error::ApiError;
use crate::api::parse_json;
use crate::domain::limits::{MAX_RECIPIENTS, MAX_STRING};
use crate::domain::{
    check_text, parse_variables, AudienceBody, BroadcastBody, Campaign, CampaignBody, Channel, Contact,
};
use crate::domain::{FieldErrors, HeaderKind, Media, MessageBody, Phone, RecipientBody, RecipientRow, Status};
use crate::domain::{SendPlan, Template, TemplateRef};
use crate::service::ingest::Accepted;

/// Where an API campaign is added (the error for a send naming an unknown one points there).
const BROADCASTS: &str = "/compat/pabbly/api/v1/broadcasts";
/// "Its value must be one of the following: 'manual', 'csv', 'api', 'user', 'sync', or 'wa'."
const SOURCES: [&str; 6] = ["manual", "csv", "api", "user", "sync", "wa"];

pub(crate) const SEND_RENAMES: Renames = &[
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
pub(crate) const BROADCAST_RENAMES: Renames = &[
    ("recipients", "destinations"),
    ("audience.segments", "segments"),
    ("audience.exclude_segments", "excludeSegments"),
    ("audience", "segments"),
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
pub(crate) const CAMPAIGN_RENAMES: Renames =
    &[("name", "campaignName"), ("template_ids", "templateNames"), ("defaults", "defaultContactFieldValues")];

/// Whether a `POST /broadcasts` body is "Add API Campaign": it names `campaignName`, which no
/// broadcast body has, and nothing only a broadcast has. Anything else is read (and refused, if
/// need be) as a broadcast.
pub(crate) fn adds_a_campaign(body: &[u8]) -> bool {
    const BROADCAST_ONLY: [&str; 6] =
        ["broadcastName", "destinations", "segments", "excludeSegments", "message", "templateName"];
    serde_json::from_slice::<Map<String, Value>>(body)
        .is_ok_and(|m| m.contains_key("campaignName") && !BROADCAST_ONLY.iter().any(|k| m.contains_key(*k)))
}

// ---------------------------------------------------------------------------- send API campaign

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SendBody {
    pub(crate) template_name: Option<String>,
    pub(crate) campaign_name: Option<String>,
    pub(crate) destination: Option<String>,
    user_name: Option<String>,
    header_params: Option<Vec<String>>,
    body_params: Option<Vec<String>>,
    source: Option<String>,
    link: Option<String>,
    filename: Option<String>,
    default_contact_field_values: Option<Map<String, Value>>,
}

/// A "send message" body, read strictly.
pub(crate) fn read_send(body: &[u8]) -> Result<SendBody, ApiError> {
    parse_json::<SendBody>(body)
}

/// What a "send message" body names, as the stores hold it.
pub(crate) struct SendFound {
    /// The tenant's campaigns named `campaignName`.
    pub(crate) campaigns: Vec<Campaign>,
    /// The template named `templateName`.
    pub(crate) template: Option<Template>,
    /// The contact holding `destination`.
    pub(crate) contact: Option<Contact>,
}

/// A "send message" body as a native plan, with the `contacts` its answer lists.
pub(crate) fn send_plan(b: SendBody, found: SendFound) -> Result<(SendPlan, Vec<Value>), ApiError> {
    let mut errs = FieldErrors::new();
    let destination = required(&mut errs, "destination", b.destination);
    let phone = destination.as_deref().and_then(|d| errs.take("destination", dialling_phone(d)));
    let user_name = required_text(&mut errs, "userName", b.user_name);
    let source = required(&mut errs, "source", b.source);
    if source.as_deref().is_some_and(|s| !SOURCES.contains(&s)) {
        errs.push("source", format!("must be one of {}", SOURCES.join(", ")));
    }
    let defaults = parse_variables(&mut errs, "defaultContactFieldValues", b.default_contact_field_values.as_ref());
    let campaign = required(&mut errs, "campaignName", b.campaign_name)
        .and_then(|name| api_campaign(&mut errs, &name, found.campaigns));
    let template_name = required(&mut errs, "templateName", b.template_name);
    let template = template_name.as_deref().and_then(|name| known(&mut errs, "templateName", name, found.template));
    if let (Some(c), Some(t)) = (&campaign, &template) {
        if !c.template_ids.contains(&t.id) {
            errs.push("templateName", format!("\"{}\" is not a template of API campaign \"{}\"", t.id, c.name));
        }
    }
    let media = template.as_ref().and_then(|t| media_for(&mut errs, t, b.link, b.filename));
    let recipient = phone.as_ref().map(|p| recipient_for(p, found.contact.as_ref(), user_name, &defaults));
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

/// The API campaign named `name`, of the tenant's campaigns with that name: exactly one.
fn api_campaign(errs: &mut FieldErrors, name: &str, mut found: Vec<Campaign>) -> Option<Campaign> {
    match found.len() {
        0 => errs.push(
            "campaignName",
            format!("no API campaign named \"{name}\"; add it with POST {BROADCASTS} and campaignName"),
        ),
        1 => return found.pop(),
        n => errs.push("campaignName", format!("{n} campaigns are named \"{name}\"; rename all but one")),
    }
    None
}

// -------------------------------------------------------------- broadcast (regular or template)

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Broadcast {
    broadcast_name: Option<String>,
    destinations: Option<Vec<String>>,
    /// Herald segment ids, instead of `destinations`: Pabbly's broadcasts go to a contact list.
    segments: Option<Vec<String>>,
    exclude_segments: Option<Vec<String>>,
    message: Option<String>,
    pub(crate) template_name: Option<String>,
    header_params: Option<Vec<String>>,
    body_params: Option<Vec<String>>,
    link: Option<String>,
    filename: Option<String>,
    default_contact_field_values: Option<Map<String, Value>>,
}

/// A broadcast body, read strictly.
pub(crate) fn read_broadcast(body: &[u8]) -> Result<Broadcast, ApiError> {
    parse_json::<Broadcast>(body)
}

/// The numbers of a broadcast that can be placed, in order: the ones whose contacts to look up.
pub(crate) fn broadcast_phones(b: &Broadcast) -> Vec<Phone> {
    b.destinations.iter().flatten().filter_map(|d| dialling_phone(d).ok()).collect()
}

/// A broadcast as a native plan, given its template (when named and found) and the contact of
/// each of [`broadcast_phones`] (when known); with the `contacts` its answer lists and the
/// broadcast's name.
pub(crate) fn broadcast_plan(
    b: Broadcast,
    template: Option<Template>,
    contacts: Vec<Option<Contact>>,
) -> Result<(SendPlan, Vec<Value>, Option<String>), ApiError> {
    let mut errs = FieldErrors::new();
    let name = required_text(&mut errs, "broadcastName", b.broadcast_name);
    let audience = audience(&mut errs, b.destinations.is_some(), b.segments, b.exclude_segments);
    let destinations = match audience {
        Some(_) => Vec::new(),
        None => destinations(&mut errs, b.destinations),
    };
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
    let template = b.template_name.as_deref().and_then(|t| known(&mut errs, "templateName", t, template));
    let media = template.as_ref().and_then(|t| media_for(&mut errs, t, b.link, b.filename));
    let defaults = parse_variables(&mut errs, "defaultContactFieldValues", b.default_contact_field_values.as_ref());
    let recipients: Vec<RecipientBody> = phones
        .iter()
        .flatten()
        .zip(&contacts)
        .map(|(p, contact)| recipient_for(p, contact.as_ref(), None, &defaults))
        .collect();
    let shown: Vec<Value> =
        destinations.iter().zip(&phones).filter_map(|(d, p)| p.as_ref().map(|p| contact_json(d, p))).collect();
    let native = BroadcastBody {
        recipients: (!recipients.is_empty()).then_some(recipients),
        audience,
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
    Ok((plan, shown, name))
}

/// `destinations`, required when no segment is named: 1 to [`MAX_RECIPIENTS`] numbers.
fn destinations(errs: &mut FieldErrors, given: Option<Vec<String>>) -> Vec<String> {
    let Some(list) = given else {
        errs.push("destinations", format!("is required: 1 to {MAX_RECIPIENTS} numbers, or segments instead"));
        return Vec::new();
    };
    if list.is_empty() || list.len() > MAX_RECIPIENTS {
        errs.push("destinations", format!("must list 1 to {MAX_RECIPIENTS} numbers (got {})", list.len()));
    }
    list
}

/// `segments` (and `excludeSegments`) as the native audience, when named instead of
/// `destinations`; the native validation checks the ids.
fn audience(
    errs: &mut FieldErrors,
    has_destinations: bool,
    segments: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
) -> Option<AudienceBody> {
    match (&segments, has_destinations) {
        (Some(_), true) => errs.push("segments", "give destinations or segments, not both"),
        (None, _) if exclude.is_some() => errs.push("excludeSegments", "is only taken with segments"),
        (None, _) => {}
        (Some(_), false) => return Some(AudienceBody { segments, exclude_segments: exclude }),
    }
    None
}

/// The extra `data` of a broadcast's answer: the send request's id and name, and the segments
/// an audience broadcast goes to (its `contacts` and `messages` are made later, by fan-out).
pub(crate) fn broadcast_data(accepted: &Accepted, name: Option<String>) -> Map<String, Value> {
    let mut data = Map::from_iter([
        ("broadcastId".to_string(), json!(accepted.request.id)),
        ("broadcastName".to_string(), json!(name)),
    ]);
    if let Some(a) = &accepted.request.audience {
        data.insert("segments".into(), json!(a.segments));
        data.insert("excludeSegments".into(), json!(a.exclude_segments));
    }
    data
}

// ------------------------------------------------------------------------------ add API campaign

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ApiCampaign {
    pub(crate) campaign_name: Option<String>,
    template_names: Option<Vec<String>>,
    default_contact_field_values: Option<Map<String, Value>>,
}

/// An "Add API Campaign" body, read strictly.
pub(crate) fn read_campaign(body: &[u8]) -> Result<ApiCampaign, ApiError> {
    parse_json::<ApiCampaign>(body)
}

/// An API campaign is a Herald campaign: the templates `broadcasts/send` may fire under its
/// name, and the fallbacks they render with.
pub(crate) fn campaign_body(b: ApiCampaign) -> CampaignBody {
    CampaignBody {
        name: b.campaign_name,
        template_ids: b.template_names,
        defaults: b.default_contact_field_values,
        send_window: None,
    }
}

/// The refusal of a second API campaign of one name: sends find it by name.
pub(crate) fn campaign_exists(name: &str) -> ApiError {
    ApiError::Conflict {
        code: "campaign_exists",
        message: format!("an API campaign named \"{name}\" already exists"),
        retry_after: None,
    }
}

/// The answer's body for an API campaign added.
pub(crate) fn campaign_answer(c: &Campaign) -> Value {
    let data = json!({
        "id": c.id,
        "campaignName": c.name,
        "templateNames": c.template_ids,
        "defaultContactFieldValues": c.defaults,
        "createdAt": c.created_at,
    });
    json!({"success": "true", "data": data})
}

/// The id of the API campaign named `name`: the same name always gives the same id.
pub(crate) fn api_campaign_id(name: &str) -> String {
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

/// A template the body names, or an error naming the field when there is none.
fn known(errs: &mut FieldErrors, field: &str, name: &str, found: Option<Template>) -> Option<Template> {
    if found.is_none() {
        errs.push(field, format!("no template named \"{name}\""));
    }
    found
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

/// The native recipient for a number, with its contact when Herald knows one. A known number
/// names its contact by id, so its stored name stands (`userName` only names a contact being
/// created) and a stored field left empty still takes its fallback; a new number carries
/// `userName` for the contact to create.
fn recipient_for(
    phone: &Phone,
    contact: Option<&Contact>,
    user_name: Option<String>,
    defaults: &BTreeMap<String, String>,
) -> RecipientBody {
    let phone_text = Some(phone.to_string());
    match contact {
        Some(c) => RecipientBody {
            contact_id: Some(c.id.clone()),
            phone: phone_text,
            variables: empty_field_fallbacks(c, defaults),
            ..Default::default()
        },
        None => RecipientBody { phone: phone_text, name: user_name, ..Default::default() },
    }
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
pub(crate) fn whatsapp_answer(accepted: &Accepted, contacts: Vec<Value>, extra: Map<String, Value>) -> Value {
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
    body
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
