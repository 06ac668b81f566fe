//! Templates and campaigns: the catalog a tenant keeps and broadcasts refer to.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::address::Channel;
use super::error::FieldErrors;
use super::ids::check_id;
use super::limits::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderKind {
    Text,
    Image,
    Video,
    Document,
}

/// A template's header: text (may hold `{{1}}` placeholders) or a media file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateHeader {
    #[serde(rename = "type")]
    pub kind: HeaderKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// The template name and language approved on Meta's side, for WhatsApp template messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhatsappTemplate {
    pub name: String,
    pub language: String,
    /// The parameters Meta's template takes in its body, in order, each bound to the send's
    /// positional values (`{{1}}`) and to named values (`{{Country}}`: variables, contact fields,
    /// defaults). Empty: the send's `body_params` as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body_params: Vec<String>,
    /// The same for the template's text header.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header_params: Vec<String>,
}

/// A media file given at send time; it fills a template's media header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Media {
    pub link: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// One message body for one channel, with `{{field}}` and `{{1}}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub channel: Option<Channel>,
    pub body: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub header: Option<TemplateHeader>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub whatsapp: Option<WhatsappTemplate>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The body of `PUT /v1/templates/{id}` and of an inline `template` in a broadcast.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    pub channel: Option<String>,
    pub body: Option<String>,
    pub subject: Option<String>,
    pub header: Option<TemplateHeader>,
    pub language: Option<String>,
    pub whatsapp: Option<WhatsappTemplate>,
}

impl TemplateBody {
    /// Validates into a template; field paths are prefixed with `at` (e.g. `template.`).
    pub fn validate(self, id: &str, at: &str, errs: &mut FieldErrors) -> Option<Template> {
        let before = errs.0.len();
        let channel = self.channel.as_deref().and_then(|c| errs.take(format!("{at}channel"), Channel::parse(c)));
        let body = self.body.unwrap_or_default();
        if body.trim().is_empty() {
            errs.push(format!("{at}body"), "is required and must not be blank");
        } else if body.chars().count() > MAX_TEXT {
            errs.push(format!("{at}body"), format!("must be at most {MAX_TEXT} characters"));
        }
        check_text(errs, &format!("{at}subject"), self.subject.as_deref(), MAX_STRING);
        check_text(errs, &format!("{at}language"), self.language.as_deref(), 16);
        if let Some(h) = &self.header {
            match h.kind {
                HeaderKind::Text => {
                    if h.text.as_deref().is_none_or(|t| t.trim().is_empty()) {
                        errs.push(format!("{at}header.text"), "is required for a text header");
                    }
                    check_text(errs, &format!("{at}header.text"), h.text.as_deref(), 60 * 4);
                    if h.link.is_some() || h.filename.is_some() {
                        errs.push(format!("{at}header"), "a text header takes no link or filename");
                    }
                }
                kind => {
                    if h.text.is_some() {
                        errs.push(format!("{at}header.text"), "only a text header has text");
                    }
                    if let Some(link) = &h.link {
                        errs.take(format!("{at}header.link"), check_url(link));
                    }
                    if h.filename.is_some() && kind != HeaderKind::Document {
                        errs.push(format!("{at}header.filename"), "only a document header has a filename");
                    }
                    check_text(errs, &format!("{at}header.filename"), h.filename.as_deref(), MAX_STRING);
                }
            }
        }
        if let Some(w) = &self.whatsapp {
            if w.name.is_empty() || w.name.len() > 512 {
                errs.push(format!("{at}whatsapp.name"), "must be 1–512 characters");
            }
            check_text(errs, &format!("{at}whatsapp.language"), Some(&w.language), 16);
            if w.language.is_empty() {
                errs.push(format!("{at}whatsapp.language"), "must not be empty");
            }
            for (name, params) in [("body_params", &w.body_params), ("header_params", &w.header_params)] {
                if params.len() > MAX_PARAMS {
                    errs.push(format!("{at}whatsapp.{name}"), format!("must hold at most {MAX_PARAMS} values"));
                }
                for (i, p) in params.iter().enumerate() {
                    check_text(errs, &format!("{at}whatsapp.{name}[{i}]"), Some(p), MAX_VARIABLE_VALUE);
                }
            }
        }
        if errs.0.len() > before {
            return None;
        }
        let now = super::now();
        Some(Template {
            id: id.to_string(),
            channel,
            body,
            subject: self.subject,
            header: self.header,
            language: self.language,
            whatsapp: self.whatsapp,
            created_at: now,
            updated_at: now,
        })
    }
}

/// A named broadcast definition: templates fired together plus default field values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    pub template_ids: Vec<String>,
    #[serde(default)]
    pub defaults: BTreeMap<String, String>,
    /// When its sends may reach a recipient, in the recipient's timezone; a request's own
    /// `send_window` replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_window: Option<super::schedule::SendWindow>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The body of `PUT /v1/campaigns/{id}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignBody {
    pub name: Option<String>,
    pub template_ids: Option<Vec<String>>,
    pub defaults: Option<serde_json::Map<String, serde_json::Value>>,
    pub send_window: Option<super::schedule::SendWindowBody>,
}

impl CampaignBody {
    pub fn validate(self, id: &str) -> Result<Campaign, FieldErrors> {
        let mut errs = FieldErrors::new();
        let name = self.name.unwrap_or_default();
        if name.trim().is_empty() {
            errs.push("name", "is required");
        }
        check_text(&mut errs, "name", Some(&name), MAX_STRING);
        let template_ids = self.template_ids.unwrap_or_default();
        if template_ids.is_empty() || template_ids.len() > MAX_TEMPLATES {
            errs.push("template_ids", format!("must list 1 to {MAX_TEMPLATES} template ids"));
        }
        for (i, t) in template_ids.iter().enumerate() {
            errs.take(format!("template_ids[{i}]"), check_id(t));
            if template_ids[..i].contains(t) {
                errs.push(format!("template_ids[{i}]"), "is listed twice");
            }
        }
        let defaults = parse_variables(&mut errs, "defaults", self.defaults.as_ref());
        let send_window = self.send_window.and_then(|w| w.validate(&mut errs, "send_window"));
        let now = super::now();
        let (created_at, updated_at) = (now, now);
        errs.finish(Campaign { id: id.to_string(), name, template_ids, defaults, send_window, created_at, updated_at })
    }
}

/// Checks an optional string's length (characters) and [`check_message_chars`].
pub(crate) fn check_text(errs: &mut FieldErrors, field: &str, value: Option<&str>, max: usize) {
    if let Some(v) = value {
        if v.chars().count() > max {
            errs.push(field, format!("must be at most {max} characters"));
        } else if let Err(m) = check_message_chars(v) {
            errs.push(field, m);
        }
    }
}

/// The one rule for every value that can end up in a rendered message (texts, variables,
/// contact fields, defaults, attributes): no control characters but newlines and tabs. A NUL,
/// ESC or BEL is refused where it comes in, whichever field carries it, rather than reaching a
/// phone or a terminal.
pub(crate) fn check_message_chars(v: &str) -> Result<(), String> {
    match v.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r')) {
        true => Err("must not contain control characters".into()),
        false => Ok(()),
    }
}

/// An absolute `http(s)` URL of at most 2,048 characters.
pub(crate) fn check_url(link: &str) -> Result<(), String> {
    if link.len() > 2048 {
        return Err("must be at most 2048 characters".into());
    }
    let parsed = url::Url::parse(link).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err("must be an absolute http(s) URL".into());
    }
    Ok(())
}

/// Named values (`variables`, `fields`, `defaults`): field-name keys, scalar values kept as text.
pub(crate) fn parse_variables(
    errs: &mut FieldErrors,
    at: &str,
    map: Option<&serde_json::Map<String, serde_json::Value>>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(map) = map else { return out };
    if map.len() > MAX_VARIABLES {
        errs.push(at, format!("must have at most {MAX_VARIABLES} keys"));
        return out;
    }
    for (k, v) in map {
        let field = format!("{at}.{k}");
        if let Err(m) = super::ids::check_field_name(k) {
            errs.push(field, format!("key {m}"));
            continue;
        }
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Null => continue,
            _ => {
                errs.push(field, "must be a string, number or boolean");
                continue;
            }
        };
        if text.chars().count() > MAX_VARIABLE_VALUE {
            errs.push(field, format!("must be at most {MAX_VARIABLE_VALUE} characters"));
            continue;
        }
        if let Err(m) = check_message_chars(&text) {
            errs.push(field, m);
            continue;
        }
        out.insert(k.clone(), text);
    }
    out
}
