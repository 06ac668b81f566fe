//! The native send request (`POST /v1/broadcasts`): its wire body, its validation into a
//! [`SendPlan`], and the [`SendRequest`] record that ingest stores.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

use super::address::{check_user_id, Channel, Email, Phone};
use super::catalog::{check_text, check_url, parse_variables, Media, Template, TemplateBody};
use super::error::FieldErrors;
use super::ids::{check_id, TenantId};
use super::limits::*;
use super::schedule::{SendWindow, Throttle};

/// Messenger message tags that allow a send outside the 24 h window.
pub const MESSAGING_TAGS: [&str; 4] =
    ["CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE", "ACCOUNT_UPDATE", "HUMAN_AGENT"];

/// The wire body of `POST /v1/broadcasts`. Loose types here; [`BroadcastBody::validate`] turns it
/// into a [`SendPlan`] and reports every broken rule at once.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastBody {
    pub recipients: Option<Vec<RecipientBody>>,
    /// Segments to send to instead of `recipients`: fanned out through the queue.
    pub audience: Option<AudienceBody>,
    pub campaign_id: Option<String>,
    pub template_ids: Option<Vec<String>>,
    pub template: Option<TemplateRef>,
    pub messages: Option<Vec<MessageBody>>,
    pub flow: Option<FlowBody>,
    pub variables: Option<Map<String, Value>>,
    pub header_params: Option<Vec<String>>,
    pub body_params: Option<Vec<String>>,
    pub media: Option<Media>,
    pub channel: Option<String>,
    pub priority: Option<Vec<String>>,
    pub messaging_tag: Option<String>,
    pub metadata: Option<Map<String, Value>>,
    pub background: Option<bool>,
    pub send_at: Option<String>,
    /// A wall-clock time (`2026-12-24T09:00`) each row is due at in its recipient's timezone.
    pub send_at_local: Option<String>,
    pub send_window: Option<super::schedule::SendWindowBody>,
    pub throttle: Option<ThrottleBody>,
}

/// `throttle` on the wire.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleBody {
    pub per_minute: Option<i64>,
}

/// `audience` on the wire: the segments whose members a broadcast goes to, less the members of
/// `exclude_segments`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudienceBody {
    pub segments: Option<Vec<String>>,
    pub exclude_segments: Option<Vec<String>>,
}

/// A validated audience, stored on its send request. A contact in several of `segments` gets one
/// message; a member of any of `exclude_segments` gets none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audience {
    pub segments: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_segments: Vec<String>,
}

/// One recipient on the wire. Named by the first tier present:
/// `contact_channel_id` > `contact_id` > `phone` / `email` / channel user id (find-or-create).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipientBody {
    pub contact_channel_id: Option<String>,
    pub contact_id: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub messenger_psid: Option<String>,
    pub telegram_chat_id: Option<String>,
    pub slack_id: Option<String>,
    pub webhook_user_id: Option<String>,
    pub name: Option<String>,
    pub variables: Option<Map<String, Value>>,
}

/// `template`: a stored template's id (a string) or an inline template (an object). Read by JSON
/// type, so a mistake inside an inline template is reported at its own path (`template.bdy`).
#[derive(Debug, Clone)]
pub enum TemplateRef {
    Id(String),
    Inline(Box<TemplateBody>),
}

impl<'de> Deserialize<'de> for TemplateRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TemplateRef;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a stored template's id (a string) or an inline template (an object)")
            }
            fn visit_str<E>(self, v: &str) -> Result<TemplateRef, E> {
                Ok(TemplateRef::Id(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<TemplateRef, A::Error> {
                TemplateBody::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|t| TemplateRef::Inline(Box::new(t)))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageBody {
    pub text: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowBody {
    pub flow_id: String,
    pub close_flows: Option<bool>,
}

/// A validated recipient, stored on its rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_channel_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Phone>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<Email>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messenger_psid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram_chat_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// Contact fields stored on the contact before rendering (SMAX V1's query attributes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set_fields: BTreeMap<String, String>,
    /// Whether the recipient's identifiers and name update the contact it resolves to (SMAX V2:
    /// "extra ones update the contact"). Natively they apply to this send only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub update_contact: bool,
    /// Whether a `contact_channel_id` / `contact_id` that names no contact falls through to
    /// find-or-create by the recipient's other identifiers (Invent's and SMAX V2's pages say it
    /// does). Natively the named contact must exist.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fall_back_to_keys: bool,
}

/// A CSML-style flow trigger, carried to the bot backend by the webhook provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowTrigger {
    pub flow_id: String,
    pub close_flows: bool,
}

/// Where a request's content comes from, before the catalog is consulted.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageSource {
    Campaign { id: String, template_ids: Option<Vec<String>> },
    TemplateId(String),
    Inline(Box<Template>),
    Messages(Vec<String>),
    Flow(FlowTrigger),
}

/// One message fired to every recipient of a request: a template snapshot or a flow trigger.
/// Snapshotting at ingest means a template edited mid-broadcast cannot mix two versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Template>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowTrigger>,
}

/// A validated send request, ready for ingest to resolve against the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct SendPlan {
    /// Empty when the plan has an audience.
    pub recipients: Vec<RecipientSpec>,
    pub audience: Option<Audience>,
    pub source: MessageSource,
    pub variables: BTreeMap<String, String>,
    pub header_params: Vec<String>,
    pub body_params: Vec<String>,
    pub media: Option<Media>,
    pub channel: Option<Channel>,
    pub priority: Vec<Channel>,
    pub messaging_tag: Option<String>,
    pub metadata: Map<String, Value>,
    pub background: bool,
    pub send_at: Option<DateTime<Utc>>,
    pub send_at_local: Option<NaiveDateTime>,
    /// The request's own window; the campaign's applies when it has none.
    pub send_window: Option<SendWindow>,
    pub throttle: Option<Throttle>,
    /// Fallback field values for this send, layered over the campaign's `defaults` (Pabbly's
    /// `defaultContactFieldValues`). The native body has no such field: it stays empty there.
    pub defaults: BTreeMap<String, String>,
    /// How the stored request's id is written: a dialect whose vendor answers a bare UUID asks
    /// for one. The native body has no such field.
    pub id_style: super::ids::IdStyle,
}

/// The stored send request: everything delivery needs besides the recipient row itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendRequest {
    pub id: String,
    pub tenant_id: TenantId,
    pub created_at: DateTime<Utc>,
    /// Which API took the request: `native`, or a dialect's name.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign_name: Option<String>,
    pub messages: Vec<PlannedMessage>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
    #[serde(default)]
    pub header_params: Vec<String>,
    #[serde(default)]
    pub body_params: Vec<String>,
    #[serde(default)]
    pub media: Option<Media>,
    #[serde(default)]
    pub channel: Option<Channel>,
    #[serde(default)]
    pub priority: Vec<Channel>,
    #[serde(default)]
    pub messaging_tag: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    pub background: bool,
    #[serde(default)]
    pub send_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_at_local: Option<NaiveDateTime>,
    /// The window the rows are sent in (the request's, else its campaign's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_window: Option<SendWindow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<Throttle>,
    /// 0 for an audience: its rows are made by fan-out, and counted by the request's counters.
    pub recipient_count: u32,
    pub row_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<Audience>,
    /// How fan-out names this request's rows ([`RecipientRow::id_for_member`]): set on every
    /// request made since audience rows keep their contact's ordered id. A request stored before
    /// (absent, `false`) keeps hashed ids ([`RecipientRow::hashed_member_id`]), so a page it
    /// expands again after an upgrade names the rows it already made.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ordered_member_ids: bool,
}

impl BroadcastBody {
    pub fn validate(self) -> Result<SendPlan, FieldErrors> {
        let mut errs = FieldErrors::new();
        let (recipients, audience) = match (self.recipients, self.audience) {
            (Some(_), Some(_)) => {
                errs.push("audience", "give either recipients or audience, not both");
                (None, None)
            }
            (None, Some(a)) => (Some(Vec::new()), validate_audience(&mut errs, a)),
            (list, None) => (validate_recipients(&mut errs, list), None),
        };
        let source =
            validate_source(&mut errs, self.campaign_id, self.template_ids, self.template, self.messages, self.flow);
        let variables = parse_variables(&mut errs, "variables", self.variables.as_ref());
        let header_params = validate_params(&mut errs, "header_params", self.header_params);
        let body_params = validate_params(&mut errs, "body_params", self.body_params);
        if let Some(m) = &self.media {
            errs.take("media.link", check_url(&m.link));
            check_text(&mut errs, "media.filename", m.filename.as_deref(), MAX_STRING);
        }
        let channel = self.channel.as_deref().and_then(|c| errs.take("channel", Channel::parse(c)));
        let priority = validate_priority(&mut errs, self.priority);
        if channel.is_some() && !priority.is_empty() {
            errs.push("priority", "give either channel or priority, not both");
        }
        if let Some(tag) = &self.messaging_tag {
            if !MESSAGING_TAGS.contains(&tag.as_str()) {
                errs.push("messaging_tag", format!("must be one of {}", MESSAGING_TAGS.join(", ")));
            }
        }
        let metadata = validate_metadata(&mut errs, self.metadata);
        let send_at = self.send_at.as_deref().and_then(|s| errs.take("send_at", parse_send_at(s)));
        let send_at_local =
            self.send_at_local.as_deref().and_then(|s| errs.take("send_at_local", parse_send_at_local(s)));
        if self.send_at.is_some() && self.send_at_local.is_some() {
            errs.push("send_at_local", "give either send_at or send_at_local, not both");
        }
        let send_window = self.send_window.and_then(|w| w.validate(&mut errs, "send_window"));
        let throttle = self.throttle.and_then(|t| validate_throttle(&mut errs, t));
        let (Some(recipients), Some(source)) = (recipients, source) else {
            return Err(errs);
        };
        errs.finish(SendPlan {
            recipients,
            audience,
            source,
            variables,
            header_params,
            body_params,
            media: self.media,
            channel,
            priority,
            messaging_tag: self.messaging_tag,
            metadata,
            background: self.background.unwrap_or(true),
            send_at,
            send_at_local,
            send_window,
            throttle,
            defaults: BTreeMap::new(),
            id_style: Default::default(),
        })
    }
}

/// Segments an audience may name, to send to and to exclude.
pub const MAX_AUDIENCE_SEGMENTS: usize = 10;

fn validate_audience(errs: &mut FieldErrors, a: AudienceBody) -> Option<Audience> {
    let before = errs.0.len();
    let mut list = |field: &str, ids: Option<Vec<String>>, required: bool| -> Vec<String> {
        let ids = ids.unwrap_or_default();
        if (required && ids.is_empty()) || ids.len() > MAX_AUDIENCE_SEGMENTS {
            let least = if required { 1 } else { 0 };
            errs.push(format!("audience.{field}"), format!("must name {least} to {MAX_AUDIENCE_SEGMENTS} segments"));
            return ids;
        }
        for (i, id) in ids.iter().enumerate() {
            if let Err(e) = check_id(id) {
                errs.push(format!("audience.{field}[{i}]"), e);
            } else if ids[..i].contains(id) {
                errs.push(format!("audience.{field}[{i}]"), format!("names \"{id}\" twice"));
            }
        }
        ids
    };
    let segments = list("segments", a.segments, true);
    let exclude_segments = list("exclude_segments", a.exclude_segments, false);
    for (i, id) in exclude_segments.iter().enumerate() {
        if segments.contains(id) {
            errs.push(format!("audience.exclude_segments[{i}]"), format!("\"{id}\" is also in audience.segments"));
        }
    }
    (errs.0.len() == before).then_some(Audience { segments, exclude_segments })
}

fn validate_recipients(errs: &mut FieldErrors, list: Option<Vec<RecipientBody>>) -> Option<Vec<RecipientSpec>> {
    let Some(list) = list else {
        errs.push("recipients", "is required: a list of 1 to 1000 recipients (or an audience)");
        return None;
    };
    if list.is_empty() || list.len() > MAX_RECIPIENTS {
        errs.push("recipients", format!("must hold 1 to {MAX_RECIPIENTS} recipients (got {})", list.len()));
        return None;
    }
    let before = errs.0.len();
    let specs: Vec<RecipientSpec> =
        list.into_iter().enumerate().map(|(i, r)| validate_recipient(errs, &format!("recipients[{i}]"), r)).collect();
    (errs.0.len() == before).then_some(specs)
}

pub fn validate_recipient(errs: &mut FieldErrors, at: &str, r: RecipientBody) -> RecipientSpec {
    let f = |name: &str| format!("{at}.{name}");
    let id = |errs: &mut FieldErrors, name: &str, v: Option<String>| {
        v.and_then(|v| errs.take(f(name), check_id(&v).map(|_| v.clone())))
    };
    let contact_channel_id =
        r.contact_channel_id.and_then(|v| errs.take(f("contact_channel_id"), check_contact_channel_id(&v).map(|_| v)));
    let contact_id = id(errs, "contact_id", r.contact_id);
    let phone = r.phone.and_then(|p| errs.take(f("phone"), Phone::parse(&p)));
    let email = r.email.and_then(|e| errs.take(f("email"), Email::parse(&e)));
    let mut user = |name: &str, v: Option<String>| v.and_then(|v| errs.take(f(name), check_user_id(&v)));
    let messenger_psid = user("messenger_psid", r.messenger_psid);
    let telegram_chat_id = user("telegram_chat_id", r.telegram_chat_id);
    let slack_id = user("slack_id", r.slack_id);
    let webhook_user_id = user("webhook_user_id", r.webhook_user_id);
    check_text(errs, &f("name"), r.name.as_deref(), MAX_STRING);
    let variables = parse_variables(errs, &f("variables"), r.variables.as_ref());
    let spec = RecipientSpec {
        contact_channel_id,
        contact_id,
        phone,
        email,
        messenger_psid,
        telegram_chat_id,
        slack_id,
        webhook_user_id,
        name: r.name,
        variables,
        set_fields: BTreeMap::new(),
        update_contact: false,
        fall_back_to_keys: false,
    };
    let named = spec.contact_channel_id.is_some()
        || spec.contact_id.is_some()
        || spec.phone.is_some()
        || spec.email.is_some()
        || spec.messenger_psid.is_some()
        || spec.telegram_chat_id.is_some()
        || spec.slack_id.is_some()
        || spec.webhook_user_id.is_some();
    let any_given_invalid = errs.0.iter().any(|e| e.field.starts_with(&format!("{at}.")));
    if !named && !any_given_invalid {
        errs.push(
            at,
            "names no one: give contact_channel_id, contact_id, phone, email, messenger_psid, telegram_chat_id, slack_id or webhook_user_id",
        );
    }
    spec
}

/// `<contact_id>~<channel>`, its contact id held to the same rule as `contact_id` itself.
fn check_contact_channel_id(v: &str) -> Result<(), String> {
    let Some((contact, _)) = super::contact::Contact::parse_channel_id(v) else {
        return Err("is not a contact channel id (`<contact_id>~<channel>`)".into());
    };
    check_id(contact).map_err(|m| format!("is not a contact channel id: its contact id {m}"))
}

fn validate_source(
    errs: &mut FieldErrors,
    campaign_id: Option<String>,
    template_ids: Option<Vec<String>>,
    template: Option<TemplateRef>,
    messages: Option<Vec<MessageBody>>,
    flow: Option<FlowBody>,
) -> Option<MessageSource> {
    let given: Vec<&str> = [
        campaign_id.is_some().then_some("campaign_id"),
        template.is_some().then_some("template"),
        messages.is_some().then_some("messages"),
        flow.is_some().then_some("flow"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() != 1 {
        let msg = if given.is_empty() {
            "give the content: one of campaign_id, template, messages or flow".to_string()
        } else {
            format!("give only one of campaign_id, template, messages or flow (got {})", given.join(", "))
        };
        errs.push(given.get(1).copied().unwrap_or("campaign_id"), msg);
        return None;
    }
    if template_ids.is_some() && campaign_id.is_none() {
        errs.push("template_ids", "selects templates of a campaign: give campaign_id too");
    }
    let before = errs.0.len();
    let source = if let Some(id) = campaign_id {
        errs.take("campaign_id", check_id(&id));
        if let Some(ids) = &template_ids {
            if ids.is_empty() || ids.len() > MAX_TEMPLATES {
                errs.push("template_ids", format!("must list 1 to {MAX_TEMPLATES} template ids"));
            }
            for (i, t) in ids.iter().enumerate() {
                errs.take(format!("template_ids[{i}]"), check_id(t));
            }
        }
        MessageSource::Campaign { id, template_ids }
    } else if let Some(t) = template {
        match t {
            TemplateRef::Id(id) => {
                errs.take("template", check_id(&id));
                MessageSource::TemplateId(id)
            }
            TemplateRef::Inline(body) => match body.validate("inline", "template.", errs) {
                Some(t) => MessageSource::Inline(Box::new(t)),
                None => return None,
            },
        }
    } else if let Some(messages) = messages {
        if messages.is_empty() || messages.len() > MAX_TEMPLATES {
            errs.push("messages", format!("must hold 1 to {MAX_TEMPLATES} messages"));
        }
        for (i, m) in messages.iter().enumerate() {
            if m.text.trim().is_empty() {
                errs.push(format!("messages[{i}].text"), "must not be blank");
            }
            check_text(errs, &format!("messages[{i}].text"), Some(&m.text), MAX_TEXT);
        }
        MessageSource::Messages(messages.into_iter().map(|m| m.text).collect())
    } else {
        let flow = flow?;
        errs.take("flow.flow_id", check_id(&flow.flow_id));
        MessageSource::Flow(FlowTrigger { flow_id: flow.flow_id, close_flows: flow.close_flows.unwrap_or(true) })
    };
    (errs.0.len() == before).then_some(source)
}

fn validate_params(errs: &mut FieldErrors, at: &str, params: Option<Vec<String>>) -> Vec<String> {
    let params = params.unwrap_or_default();
    if params.len() > MAX_PARAMS {
        errs.push(at, format!("must hold at most {MAX_PARAMS} values"));
    }
    for (i, p) in params.iter().enumerate() {
        check_text(errs, &format!("{at}[{i}]"), Some(p), MAX_VARIABLE_VALUE);
    }
    params
}

fn validate_priority(errs: &mut FieldErrors, list: Option<Vec<String>>) -> Vec<Channel> {
    let mut out = Vec::new();
    let Some(list) = list else { return out };
    if list.is_empty() {
        errs.push("priority", "must list at least one channel when given");
    }
    for (i, c) in list.iter().enumerate() {
        if let Some(ch) = errs.take(format!("priority[{i}]"), Channel::parse(c)) {
            if out.contains(&ch) {
                errs.push(format!("priority[{i}]"), "is listed twice");
            }
            out.push(ch);
        }
    }
    out
}

pub fn validate_metadata(errs: &mut FieldErrors, metadata: Option<Map<String, Value>>) -> Map<String, Value> {
    let metadata = metadata.unwrap_or_default();
    if metadata.len() > MAX_METADATA_KEYS {
        errs.push("metadata", format!("must have at most {MAX_METADATA_KEYS} keys"));
    }
    for (k, v) in &metadata {
        if k.is_empty() || k.chars().count() > 64 {
            errs.push(format!("metadata.{k}"), "keys must be 1–64 characters");
        }
        if 1 + nesting(v) > MAX_METADATA_DEPTH {
            errs.push(
                format!("metadata.{k}"),
                format!("nests too deep: metadata may hold at most {MAX_METADATA_DEPTH} levels of objects and arrays"),
            );
        }
    }
    let size = serde_json::to_vec(&metadata).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        errs.push("metadata", format!("must serialize to at most {MAX_METADATA_BYTES} bytes (got {size})"));
    }
    metadata
}

/// Levels of objects and arrays in a value (a scalar has none). The parser already stopped at
/// serde_json's recursion limit, so this recursion is bounded.
fn nesting(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(nesting).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(nesting).max().unwrap_or(0),
        _ => 0,
    }
}

fn validate_throttle(errs: &mut FieldErrors, t: ThrottleBody) -> Option<Throttle> {
    match t.per_minute {
        Some(n) if (1..=i64::from(Throttle::MAX_PER_MINUTE)).contains(&n) => Some(Throttle { per_minute: n as u32 }),
        _ => {
            errs.push("throttle.per_minute", format!("must be a whole number from 1 to {}", Throttle::MAX_PER_MINUTE));
            None
        }
    }
}

/// A wall-clock time with no offset, at most [`MAX_SCHEDULE_DAYS`] ahead wherever it falls (the
/// earliest timezone is 14 hours ahead of UTC).
fn parse_send_at_local(s: &str) -> Result<NaiveDateTime, String> {
    let t = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s.trim(), f).ok())
        .ok_or_else(|| "must be a local time with no offset, such as 2026-12-24T09:00".to_string())?;
    let latest = super::now().naive_utc() + chrono::Duration::days(MAX_SCHEDULE_DAYS) + chrono::Duration::hours(14);
    if t > latest {
        return Err(format!("must be at most {MAX_SCHEDULE_DAYS} days ahead"));
    }
    Ok(t)
}

fn parse_send_at(s: &str) -> Result<DateTime<Utc>, String> {
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|_| "must be an RFC 3339 time such as 2026-12-01T09:00:00Z".to_string())?
        .with_timezone(&Utc);
    if t > super::now() + chrono::Duration::days(MAX_SCHEDULE_DAYS) {
        return Err(format!("must be at most {MAX_SCHEDULE_DAYS} days ahead"));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> BroadcastBody {
        serde_json::from_value(v).unwrap()
    }

    fn fields(e: FieldErrors) -> Vec<String> {
        e.0.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_minimal_request_validates() {
        let plan = body(serde_json::json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "hi"}]}))
            .validate()
            .unwrap();
        assert_eq!(plan.recipients[0].phone.as_ref().unwrap().as_str(), "+14155550123");
        assert!(plan.background);
        assert_eq!(plan.source, MessageSource::Messages(vec!["hi".into()]));
    }

    #[test]
    fn every_bad_field_is_named_in_one_answer() {
        let e = body(serde_json::json!({
            "recipients": [{"phone": "12"}, {"email": "x"}, {}],
            "messages": [{"text": " "}],
            "channel": "fax",
            "messaging_tag": "NOPE",
            "send_at": "tomorrow",
            "variables": {"1bad": "x"}
        }))
        .validate()
        .unwrap_err();
        assert_eq!(
            fields(e),
            vec![
                "recipients[0].phone",
                "recipients[1].email",
                "recipients[2]",
                "messages[0].text",
                "variables.1bad",
                "channel",
                "messaging_tag",
                "send_at"
            ]
        );
    }

    #[test]
    fn content_must_be_exactly_one_source() {
        let none = body(serde_json::json!({"recipients": [{"phone": "+14155550123"}]})).validate().unwrap_err();
        assert_eq!(fields(none), vec!["campaign_id"]);
        let two = body(serde_json::json!({"recipients": [{"phone": "+14155550123"}], "messages": [{"text": "a"}], "flow": {"flow_id": "f"}}))
            .validate()
            .unwrap_err();
        assert_eq!(fields(two), vec!["flow"]);
    }

    #[test]
    fn recipient_counts_are_bounded() {
        let many: Vec<Value> = (0..1001).map(|_| serde_json::json!({"phone": "+14155550123"})).collect();
        let e = body(serde_json::json!({"recipients": many, "messages": [{"text": "a"}]})).validate().unwrap_err();
        assert_eq!(fields(e), vec!["recipients"]);
        let e = body(serde_json::json!({"recipients": [], "messages": [{"text": "a"}]})).validate().unwrap_err();
        assert_eq!(fields(e), vec!["recipients"]);
    }

    #[test]
    fn long_strings_are_refused() {
        let e = body(serde_json::json!({"recipients": [{"contact_id": "c", "name": "n".repeat(257)}], "messages": [{"text": "a"}]}))
            .validate()
            .unwrap_err();
        assert_eq!(fields(e), vec!["recipients[0].name"]);
    }
}
