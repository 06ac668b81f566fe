//! Twilio's Programmable Messaging (`2010-04-01`, the Message resource) and Notify (`v1`, the
//! Notification resource), as the official Twilio SDKs call them: form bodies in, Twilio's JSON
//! resources out, errors as `{"code", "message", "more_info", "status"}` with Twilio's codes.
//!
//! A message is one send request of one row; its `SM…` sid is the request's 32 hex digits, so
//! a sid names its request and row without a lookup table. The account is the tenant, shown as
//! an `AC…` sid derived from the tenant id. What Twilio keeps and Herald has no field for (the
//! sender, the messaging service, the status callback URL) travels in the request's metadata.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

use super::Renames;
use crate::api::error::ApiError;
use crate::domain::{AudienceBody, BroadcastBody, Channel, MessageBody, Phone, RecipientBody, RecipientRow};
use crate::domain::{SendPlan, SendRequest, Status, TemplateRef};

pub const API_VERSION: &str = "2010-04-01";
/// Notify's ceiling for `ToBinding` entries in one notification.
pub const MAX_BINDINGS: usize = 10_000;
/// Twilio's ceiling for a message body.
const MAX_BODY_CHARS: usize = 1_600;
/// Scheduling window: "between 15 minutes and 35 days before the scheduled send time".
const MIN_AHEAD_MINUTES: i64 = 15;
const MAX_AHEAD_DAYS: i64 = 35;
/// Twilio's limit for a `StatusCallback` URL.
const MAX_CALLBACK_CHARS: usize = 4_000;

/// Metadata keys holding what Twilio keeps and Herald has no field for.
pub const META_FROM: &str = "twilio_from";
pub const META_SERVICE: &str = "twilio_messaging_service_sid";
pub const META_CALLBACK: &str = crate::domain::events::TWILIO_CALLBACK;
pub const META_NOTIFY_SERVICE: &str = "twilio_notify_service_sid";

/// Native names as the caller sent them, for the native checks that run after Twilio's own.
pub(crate) const RENAMES: Renames = &[
    ("recipients[0].phone", "To"),
    ("recipients", "To"),
    ("messages[0].text", "Body"),
    ("template.body", "Body"),
    ("template.header", "MediaUrl"),
    ("media.link", "MediaUrl"),
    ("template", "ContentSid"),
    ("body_params", "ContentVariables"),
    ("variables", "ContentVariables"),
    ("send_at", "SendAt"),
];

// ------------------------------------------------------------------------------------ sids

fn sid_hex(tag: &str, tenant: &str) -> String {
    let mut h = Sha256::new();
    h.update(tag.as_bytes());
    h.update([0]);
    h.update(tenant.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// The tenant's Twilio-style account SID: `AC` and 32 hex digits of a hash of the tenant id,
/// the same wherever Herald runs (no secret, no store), and distinct for distinct tenants.
pub fn account_sid(tenant: &str) -> String {
    format!("AC{}", sid_hex("herald twilio account", tenant))
}

/// A resource sid (`SM…`, `NT…`) for a send request: its id's 32 hex digits. Twilio requests
/// always get `req_` ids; any other id is hashed, so the sid keeps its shape.
pub fn request_sid(prefix: &str, request_id: &str) -> String {
    match request_id.strip_prefix("req_").filter(|h| is_hex32(h)) {
        Some(hex) => format!("{prefix}{hex}"),
        None => format!("{prefix}{}", sid_hex("herald twilio request", request_id)),
    }
}

/// The send request a sid names, when it has a sid's shape.
pub fn request_of_sid(prefix: &str, sid: &str) -> Option<String> {
    let hex = sid.strip_prefix(prefix)?.to_ascii_lowercase();
    is_hex32(&hex).then(|| format!("req_{hex}"))
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

// ---------------------------------------------------------------------------------- errors

/// An error in Twilio's body, with Twilio's code.
#[derive(Debug, Clone, PartialEq)]
pub struct TwilioError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
}

impl TwilioError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> TwilioError {
        TwilioError { status, code, message: message.into() }
    }

    fn bad(code: u32, message: impl Into<String>) -> TwilioError {
        TwilioError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized() -> TwilioError {
        TwilioError::new(StatusCode::UNAUTHORIZED, 20003, "Authenticate")
    }

    pub fn not_found(what: &str) -> TwilioError {
        TwilioError::new(StatusCode::NOT_FOUND, 20404, format!("The requested resource {what} was not found"))
    }
}

impl IntoResponse for TwilioError {
    fn into_response(self) -> Response {
        let body = json!({
            "code": self.code,
            "message": self.message,
            "more_info": format!("https://www.twilio.com/docs/errors/{}", self.code),
            "status": self.status.as_u16(),
        });
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"Twilio API\""));
        }
        if matches!(self.code, 20429 | 20503) {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// Any Herald error in Twilio's body: a field's problem takes the code Twilio has for that
/// field, the rest Twilio's general codes.
pub fn from_api(e: ApiError) -> TwilioError {
    let e = super::rename(e, RENAMES);
    let status = e.status();
    let code = match &e {
        ApiError::Unauthorized(_) => return TwilioError::unauthorized(),
        ApiError::NotFound(_) => 20404,
        ApiError::MethodNotAllowed => 20004,
        ApiError::TooManyRequests { .. } => 20429,
        ApiError::Unavailable(_) => 20503,
        ApiError::Internal(_) => 20500,
        _ => 0,
    };
    let (_, message, fields) = e.describe();
    let code = match (code, fields.first()) {
        (0, Some(f)) => field_code(&f.field),
        (0, None) => 20001,
        (c, _) => c,
    };
    let message = match fields.is_empty() {
        true => message,
        false => fields.iter().map(|f| format!("{} {}", f.field, f.message)).collect::<Vec<_>>().join("; "),
    };
    // Twilio refuses what it cannot take with a 400; it has no 422.
    let status = if status == StatusCode::UNPROCESSABLE_ENTITY { StatusCode::BAD_REQUEST } else { status };
    TwilioError::new(status, code, message)
}

/// The idempotency layer's error shape for the Twilio routes.
pub fn shape(e: ApiError) -> Response {
    from_api(e).into_response()
}

fn field_code(field: &str) -> u32 {
    match field.split(['.', '[']).next().unwrap_or_default() {
        "To" => 21211,
        "Body" => 21617,
        "MediaUrl" => 21620,
        "ContentSid" => 21655,
        "ContentVariables" => 21656,
        "SendAt" => 35114,
        "StatusCallback" => 21609,
        _ => 20001,
    }
}

// -------------------------------------------------------------------------- Message create

/// A Message resource's create form, as read. An empty value counts as absent, as Twilio takes it.
#[derive(Debug, Default)]
pub struct MessageForm {
    pub to: Option<String>,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub body: Option<String>,
    pub media_urls: Vec<String>,
    pub content_sid: Option<String>,
    pub content_variables: Option<String>,
    pub status_callback: Option<String>,
    pub send_at: Option<String>,
    pub schedule_type: Option<String>,
}

/// Reads a form body. Parameters Twilio documents and Herald does not map (`MaxPrice`,
/// `ValidityPeriod`, …) and unknown ones are ignored, as Twilio ignores what it does not know.
pub fn read_message_form(body: &[u8]) -> MessageForm {
    let mut f = MessageForm::default();
    for (k, v) in url::form_urlencoded::parse(body) {
        let v = v.trim().to_string();
        if v.is_empty() {
            continue;
        }
        let slot = match k.as_ref() {
            "To" => &mut f.to,
            "From" => &mut f.from,
            "MessagingServiceSid" => &mut f.messaging_service_sid,
            "Body" => &mut f.body,
            "ContentSid" => &mut f.content_sid,
            "ContentVariables" => &mut f.content_variables,
            "StatusCallback" => &mut f.status_callback,
            "SendAt" => &mut f.send_at,
            "ScheduleType" => &mut f.schedule_type,
            "MediaUrl" => {
                f.media_urls.push(v);
                continue;
            }
            _ => continue,
        };
        slot.get_or_insert(v);
    }
    f
}

/// `To` as a channel and a phone: `whatsapp:+1…` is WhatsApp, any other number SMS.
pub fn read_to(to: Option<&str>) -> Result<(Channel, Phone), TwilioError> {
    let to = to.ok_or_else(|| TwilioError::bad(21604, "A 'To' phone number is required."))?;
    let (channel, number) = match to.strip_prefix("whatsapp:") {
        Some(n) => (Channel::Whatsapp, n),
        None => (Channel::Sms, to),
    };
    // The number itself stays out of the message: error bodies end up in callers' logs.
    let phone = Phone::parse(number.trim())
        .map_err(|_| TwilioError::bad(21211, "The 'To' number is not a valid phone number in E.164 form."))?;
    Ok((channel, phone))
}

/// A create form as a native plan: Twilio's own rules first, in Twilio's codes, then the
/// native ones under Twilio's names. `now` is when the request came, for `SendAt`'s window;
/// `allow_loopback` is the deployment's rule for tenant URLs (tests' receivers are local).
pub fn message_plan(f: MessageForm, now: DateTime<Utc>, allow_loopback: bool) -> Result<SendPlan, TwilioError> {
    let (channel, phone) = read_to(f.to.as_deref())?;
    if f.from.is_none() && f.messaging_service_sid.is_none() {
        return Err(TwilioError::bad(21603, "A 'From' phone number or a 'MessagingServiceSid' is required."));
    }
    for (name, v) in [("From", &f.from), ("MessagingServiceSid", &f.messaging_service_sid)] {
        if v.as_ref().is_some_and(|v| v.chars().count() > 64) {
            return Err(TwilioError::bad(20001, format!("{name} must be at most 64 characters.")));
        }
    }
    let send_at = schedule(&f, now)?;
    let mut native = content(&f)?;
    native.recipients = Some(vec![RecipientBody { phone: Some(phone.to_string()), ..Default::default() }]);
    native.channel = Some(channel.as_str().to_string());
    native.send_at = send_at.map(|t| t.to_rfc3339());
    native.background = Some(true);
    native.metadata = Some(metadata(&f, allow_loopback)?);
    super::validate(native, Default::default(), RENAMES).map_err(from_api)
}

/// What the message says: `Body` (with its one `MediaUrl` as a media header), or `ContentSid`
/// (a Herald template of that id) with `ContentVariables`.
fn content(f: &MessageForm) -> Result<BroadcastBody, TwilioError> {
    if f.media_urls.len() > 1 {
        return Err(TwilioError::bad(21623, "Herald sends at most 1 MediaUrl with a message."));
    }
    let media = f.media_urls.first().map(|u| check_media(u)).transpose()?;
    if f.content_variables.is_some() && f.content_sid.is_none() {
        return Err(TwilioError::bad(21656, "ContentVariables fill a ContentSid: give ContentSid too."));
    }
    if let Some(sid) = &f.content_sid {
        if f.body.is_some() {
            return Err(TwilioError::bad(20001, "Give Body or ContentSid, not both."));
        }
        let (body_params, variables) = content_variables(f.content_variables.as_deref())?;
        return Ok(BroadcastBody {
            template: Some(TemplateRef::Id(sid.clone())),
            body_params: Some(body_params),
            variables: Some(variables),
            media: media.map(|link| crate::domain::Media { link, filename: None }),
            ..Default::default()
        });
    }
    let Some(text) = f.body.clone() else {
        let why = match media {
            Some(_) => "Herald sends a MediaUrl with a Body: give Body too.",
            None => "A text message Body, a MediaUrl or a ContentSid is required.",
        };
        return Err(TwilioError::bad(21602, why));
    };
    if text.chars().count() > MAX_BODY_CHARS {
        return Err(TwilioError::bad(21617, "The concatenated message body exceeds the 1600 character limit."));
    }
    Ok(match media {
        None => BroadcastBody { messages: Some(vec![MessageBody { text }]), ..Default::default() },
        Some(link) => BroadcastBody { template: Some(media_template(text, link)), ..Default::default() },
    })
}

fn check_media(url: &str) -> Result<String, TwilioError> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(url.to_string()),
        _ => Err(TwilioError::bad(21620, "Invalid media URL: MediaUrl must be an http or https URL.")),
    }
}

/// A body with a media file: an inline template whose header is the file, its kind read from
/// the URL's extension (Twilio's MMS reads the file's content type; Herald does not fetch it).
fn media_template(text: String, link: String) -> TemplateRef {
    use crate::domain::{HeaderKind, TemplateBody, TemplateHeader};
    let path = url::Url::parse(&link).map(|u| u.path().to_ascii_lowercase()).unwrap_or_default();
    let kind = match path.rsplit('.').next().unwrap_or_default() {
        "mp4" | "3gp" | "mov" => HeaderKind::Video,
        "pdf" | "doc" | "docx" | "xls" | "xlsx" | "txt" | "csv" => HeaderKind::Document,
        _ => HeaderKind::Image,
    };
    let header = TemplateHeader { kind, text: None, link: Some(link), filename: None };
    TemplateRef::Inline(Box::new(TemplateBody { body: Some(text), header: Some(header), ..Default::default() }))
}

/// `ContentVariables`: a JSON object. Its keys `"1"`, `"2"`, … are the template's positional
/// values (`{{1}}`), in order and without a gap; any other key is a named value (`{{name}}`).
fn content_variables(raw: Option<&str>) -> Result<(Vec<String>, Map<String, Value>), TwilioError> {
    let bad = |m: &str| TwilioError::bad(21656, format!("The ContentVariables Parameter is invalid: {m}."));
    let Some(raw) = raw else { return Ok((Vec::new(), Map::new())) };
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(raw) else {
        return Err(bad("it must be a JSON object such as {\"1\":\"Ada\"}"));
    };
    let mut positional = BTreeMap::new();
    let mut named = Map::new();
    for (k, v) in map {
        let text = match v {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            _ => return Err(bad(&format!("\"{k}\" must be a string"))),
        };
        match k.parse::<usize>() {
            Ok(i) if i >= 1 => {
                positional.insert(i, text);
            }
            _ => {
                named.insert(k, Value::String(text));
            }
        }
    }
    if positional.keys().enumerate().any(|(at, i)| *i != at + 1) {
        return Err(bad("its numbered keys must run 1, 2, 3, … without a gap"));
    }
    Ok((positional.into_values().collect(), named))
}

/// `SendAt` with `ScheduleType=fixed`, under Twilio's rules: a messaging service, and 15
/// minutes to 35 days ahead.
fn schedule(f: &MessageForm, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, TwilioError> {
    let window = "SendAt must be an ISO 8601 UTC time between 15 minutes and 35 days ahead, with ScheduleType=fixed.";
    let at = match (&f.send_at, f.schedule_type.as_deref()) {
        (None, None) => return Ok(None),
        (Some(at), Some("fixed")) => at,
        (None, Some(_)) => return Err(TwilioError::bad(35114, format!("ScheduleType needs SendAt: {window}"))),
        (Some(_), _) => return Err(TwilioError::bad(35114, format!("SendAt needs ScheduleType=fixed: {window}"))),
    };
    if f.messaging_service_sid.is_none() {
        return Err(TwilioError::bad(35118, "MessagingServiceSid is required to schedule a message."));
    }
    let t = DateTime::parse_from_rfc3339(at).map_err(|_| TwilioError::bad(35114, window))?.with_timezone(&Utc);
    let ahead = t - now;
    if ahead < chrono::Duration::minutes(MIN_AHEAD_MINUTES) || ahead > chrono::Duration::days(MAX_AHEAD_DAYS) {
        return Err(TwilioError::bad(35114, format!("Scheduling does not support this timestamp: {window}")));
    }
    Ok(Some(t))
}

/// What Twilio keeps with a message and Herald has no field for. The callback URL's form is
/// checked here, by the webhook channel's rules; the handler checks where it resolves to.
fn metadata(f: &MessageForm, allow_loopback: bool) -> Result<Map<String, Value>, TwilioError> {
    let mut m = Map::new();
    if let Some(url) = &f.status_callback {
        if url.chars().count() > MAX_CALLBACK_CHARS {
            return Err(TwilioError::bad(21609, "Invalid 'StatusCallback': at most 4000 characters."));
        }
        let checked = crate::net::ssrf::check_url(url, allow_loopback)
            .map_err(|e| TwilioError::bad(21609, format!("Invalid 'StatusCallback': {}", e.0)))?;
        m.insert(META_CALLBACK.into(), Value::String(checked.to_string()));
    }
    for (key, v) in [(META_FROM, &f.from), (META_SERVICE, &f.messaging_service_sid)] {
        if let Some(v) = v {
            m.insert(key.into(), Value::String(v.clone()));
        }
    }
    Ok(m)
}

// ------------------------------------------------------------------------ Message resource

/// A row's status in Twilio's words. A row waiting for its `send_at` is `scheduled`; one Herald
/// skipped (an unsubscribed or blocked contact) `failed`, as Twilio fails a send to an opted-out
/// number; one a provider bounced after taking it `undelivered`.
pub fn status_word(row: &RecipientRow, send_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> &'static str {
    match row.status {
        Status::Scheduled => "scheduled",
        Status::Queued | Status::Retrying if send_at.is_some_and(|t| t > now) => "scheduled",
        Status::Queued | Status::Retrying => "queued",
        Status::Sending => "sending",
        Status::Sent => "sent",
        Status::Delivered | Status::Complained | Status::Unsubscribed => "delivered",
        Status::Read | Status::Opened | Status::Played => "read",
        Status::Skipped | Status::Failed => "failed",
        Status::Bounced => "undelivered",
        Status::Canceled => "canceled",
    }
}

/// Twilio's error code for a row that did not arrive: 21610 for a contact who opted out,
/// 30008 ("Unknown error") for any other failure.
fn error_code(row: &RecipientRow) -> Option<u32> {
    match row.status {
        Status::Skipped => Some(21610),
        Status::Failed | Status::Bounced => Some(30008),
        _ => None,
    }
}

/// A send request's one row as Twilio's Message resource: every field the spec lists.
pub fn message_json(request: &SendRequest, row: &RecipientRow, now: DateTime<Utc>) -> Value {
    let account = account_sid(request.tenant_id.as_str());
    let sid = request_sid("SM", &request.id);
    let uri = format!("/{API_VERSION}/Accounts/{account}/Messages/{sid}");
    let meta = |k: &str| request.metadata.get(k).cloned().unwrap_or(Value::Null);
    let body = message_text(request);
    let num_media = request.messages.first().and_then(|m| m.template.as_ref()).and_then(|t| t.header.as_ref());
    let num_media = num_media.map(|h| h.link.is_some() as u8).unwrap_or(0).max(request.media.is_some() as u8);
    json!({
        "sid": sid,
        "account_sid": account,
        "messaging_service_sid": meta(META_SERVICE),
        "to": to_address(request, row),
        "from": meta(META_FROM),
        "body": body,
        "status": status_word(row, request.send_at, now),
        "num_segments": segments(&body).to_string(),
        "num_media": num_media.to_string(),
        "direction": "outbound-api",
        "api_version": API_VERSION,
        "date_created": row.created_at.to_rfc2822(),
        "date_updated": row.updated_at.to_rfc2822(),
        "date_sent": row.times.get(&Status::Sent).map(|t| t.to_rfc2822()),
        "error_code": error_code(row),
        "error_message": if error_code(row).is_some() { row.error_message.clone() } else { None },
        "price": null,
        "price_unit": "USD",
        "uri": format!("{uri}.json"),
        "subresource_uris": {"media": format!("{uri}/Media.json"), "feedback": format!("{uri}/Feedback.json")},
    })
}

/// The status callback form Twilio posts for a message's row, its values as the Message
/// resource shows them (`GET …/Messages/{Sid}.json`). `From` and `MessagingServiceSid` come only
/// when the message had them, `ErrorCode` only when it did not arrive.
pub fn status_callback_form(request: &SendRequest, row: &RecipientRow, now: DateTime<Utc>) -> Vec<(String, String)> {
    let m = message_json(request, row, now);
    let text = |k: &str| match &m[k] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let mut form = Vec::new();
    let mut put = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            form.push((name.to_string(), v));
        }
    };
    put("MessageSid", text("sid"));
    put("SmsSid", text("sid"));
    put("AccountSid", text("account_sid"));
    put("MessagingServiceSid", text("messaging_service_sid"));
    put("From", text("from"));
    put("To", text("to"));
    put("MessageStatus", text("status"));
    put("SmsStatus", text("status"));
    put("ErrorCode", text("error_code"));
    put("ApiVersion", Some(API_VERSION.to_string()));
    form
}

/// The address as the caller wrote it: WhatsApp numbers keep Twilio's `whatsapp:` prefix.
fn to_address(request: &SendRequest, row: &RecipientRow) -> Value {
    let phone = row.recipient.phone.as_ref().map(|p| p.as_str().to_string()).or_else(|| row.address.clone());
    match (phone, request.channel) {
        (Some(p), Some(Channel::Whatsapp)) => Value::String(format!("whatsapp:{p}")),
        (Some(p), _) => Value::String(p),
        (None, _) => Value::Null,
    }
}

/// The message's text: the body as sent, a content template's with its numbered values put in
/// (Herald renders named values per recipient at send time; those show as written).
fn message_text(request: &SendRequest) -> String {
    let Some(t) = request.messages.first().and_then(|m| m.template.as_ref()) else { return String::new() };
    let mut text = t.body.clone();
    for (i, v) in request.body_params.iter().enumerate() {
        text = text.replace(&format!("{{{{{}}}}}", i + 1), v);
    }
    text
}

/// SMS segments the text takes: 160 GSM-7 characters in one, 153 in each of several; 70 and
/// 67 once any character needs UCS-2.
pub fn segments(text: &str) -> usize {
    const GSM: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€";
    let gsm = text.chars().all(|c| GSM.contains(c));
    let len = match gsm {
        // The extension table's characters take two septets each.
        true => text.chars().map(|c| if "^{}\\[~]|€".contains(c) { 2 } else { 1 }).sum(),
        false => text.encode_utf16().count(),
    };
    let (one, each) = if gsm { (160, 153) } else { (70, 67) };
    match len {
        0 => 1,
        n if n <= one => 1,
        n => n.div_ceil(each),
    }
}

// ---------------------------------------------------------------------------------- Notify

/// A Notification create form: `ToBinding` entries and `Body`. Notify's `Identity` and `Tag`
/// name bindings registered with Twilio; Herald has no such registry and refuses them.
#[derive(Debug, Default)]
pub struct NotifyForm {
    pub bindings: Vec<String>,
    pub body: Option<String>,
    pub unsupported: Option<String>,
}

pub fn read_notify_form(body: &[u8]) -> NotifyForm {
    let mut f = NotifyForm::default();
    for (k, v) in url::form_urlencoded::parse(body) {
        match k.as_ref() {
            "ToBinding" => f.bindings.push(v.into_owned()),
            "Body" if !v.trim().is_empty() => f.body = Some(v.into_owned()),
            "Identity" | "Tag" | "Segment" => f.unsupported = Some(k.into_owned()),
            _ => {}
        }
    }
    f
}

/// The phones a notification goes to: each `ToBinding` an SMS binding (`{"binding_type":
/// "sms", "address": "+1…"}`), a number named twice counted once.
pub fn notify_phones(f: &NotifyForm) -> Result<Vec<Phone>, TwilioError> {
    if let Some(name) = &f.unsupported {
        let m = format!("{name} names bindings registered with Notify; Herald takes ToBinding entries only.");
        return Err(TwilioError::bad(20001, m));
    }
    if f.bindings.is_empty() || f.bindings.len() > MAX_BINDINGS {
        return Err(TwilioError::bad(20001, format!("Give 1 to {MAX_BINDINGS} ToBinding entries.")));
    }
    let mut phones = Vec::with_capacity(f.bindings.len());
    let mut seen = std::collections::HashSet::new();
    for (i, raw) in f.bindings.iter().enumerate() {
        let phone = binding_phone(raw).map_err(|m| TwilioError::bad(20001, format!("ToBinding[{i}] {m}.")))?;
        if seen.insert(phone.as_str().to_string()) {
            phones.push(phone);
        }
    }
    Ok(phones)
}

fn binding_phone(raw: &str) -> Result<Phone, String> {
    let Ok(Value::Object(b)) = serde_json::from_str::<Value>(raw) else {
        return Err("must be a JSON object such as {\"binding_type\":\"sms\",\"address\":\"+14155550123\"}".into());
    };
    match b.get("binding_type").and_then(Value::as_str) {
        Some("sms") => {}
        Some(other) => return Err(format!("has binding_type \"{other}\"; Herald sends sms bindings only")),
        None => return Err("needs a binding_type".into()),
    }
    let address = b.get("address").and_then(Value::as_str).ok_or("needs an address")?;
    Phone::parse(address).map_err(|_| "has an address that is not a phone number in E.164 form".to_string())
}

/// The body of a notification's send: its phones as recipients, or (past what one request
/// may name) the segment `segment` holding them as contacts, fanned out through the queue.
pub fn notify_body(f: &NotifyForm, phones: &[Phone], segment: Option<String>, service: &str) -> BroadcastBody {
    let (recipients, audience) = match segment {
        Some(id) => (None, Some(AudienceBody { segments: Some(vec![id]), exclude_segments: None })),
        None => {
            let list = phones.iter().map(|p| RecipientBody { phone: Some(p.to_string()), ..Default::default() });
            (Some(list.collect()), None)
        }
    };
    let mut metadata = Map::new();
    metadata.insert(META_NOTIFY_SERVICE.into(), Value::String(service.to_string()));
    BroadcastBody {
        recipients,
        audience,
        messages: f.body.clone().map(|text| vec![MessageBody { text }]),
        channel: Some(Channel::Sms.as_str().into()),
        metadata: Some(metadata),
        background: Some(true),
        ..Default::default()
    }
}

/// A notification's plan; its only rule of Twilio's own besides the bindings is `Body`.
pub fn notify_plan(native: BroadcastBody) -> Result<SendPlan, TwilioError> {
    if native.messages.is_none() {
        return Err(TwilioError::bad(21602, "Body is required: Herald sends a notification's Body by SMS."));
    }
    super::validate(native, Default::default(), RENAMES).map_err(from_api)
}

/// A stored notification as Notify's Notification resource.
pub fn notification_json(request: &SendRequest, service: &str, body: Option<&str>) -> Value {
    json!({
        "sid": request_sid("NT", &request.id),
        "account_sid": account_sid(request.tenant_id.as_str()),
        "service_sid": service,
        "date_created": request.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "identities": [],
        "tags": [],
        "segments": [],
        "priority": "high",
        "ttl": 2_419_200,
        "title": null,
        "body": body,
        "sound": null,
        "action": null,
        "data": null,
        "apn": null,
        "gcm": null,
        "fcm": null,
        "sms": null,
        "facebook_messenger": null,
        "alexa": null,
    })
}

// ------------------------------------------------------------------------- Messages list

/// The page size Twilio lists by unless `PageSize` says otherwise, and the most it lists at
/// once (a larger `PageSize`, as `messages.list(limit=5000)` sends, gets pages of this many).
const LIST_DEFAULT: u32 = 50;
const LIST_MAX: u32 = 1_000;
/// Filters of Twilio's Messages list that Herald does not apply (docs/dialects.md).
const LIST_FILTERS: [&str; 5] = ["To", "From", "DateSent", "DateSent<", "DateSent>"];

/// A `GET …/Messages.json` query: Twilio pages by `PageToken`, and `Page` only numbers the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub page_size: u32,
    pub page: u32,
    /// The `PageToken` of a `next_page_uri`, as given.
    pub page_token: Option<String>,
}

/// Reads the list's query. A filter Herald does not apply is refused rather than ignored: the
/// caller would otherwise take every message for the ones it asked for.
pub fn read_list_query(query: &str) -> Result<ListQuery, TwilioError> {
    let mut q = ListQuery { page_size: LIST_DEFAULT, page: 0, page_token: None };
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "PageSize" => match v.trim().parse::<u32>() {
                Ok(n) if n >= 1 => q.page_size = n.min(LIST_MAX),
                _ => {
                    return Err(TwilioError::bad(
                        20001,
                        format!("Invalid PageSize '{v}': it must be a whole number from 1."),
                    ))
                }
            },
            "Page" => {
                q.page = v.trim().parse().map_err(|_| TwilioError::bad(20001, format!("Invalid Page '{v}'.")))?;
            }
            "PageToken" if !v.trim().is_empty() => q.page_token = Some(v.trim().to_string()),
            name if LIST_FILTERS.contains(&name) => {
                let m = format!(
                    "Herald's Messages list does not filter by {name}: list without it and filter the messages."
                );
                return Err(TwilioError::bad(20001, m));
            }
            _ => {}
        }
    }
    if q.page > 0 && q.page_token.is_none() {
        return Err(TwilioError::bad(20001, "A Page past 0 needs the PageToken of the previous page's next_page_uri."));
    }
    Ok(q)
}

/// A page of the Messages list as Twilio answers it. Herald pages forwards only, so
/// `previous_page_uri` is null; `next_page_uri` carries `next_token` when there is more.
pub fn message_page_json(account: &str, q: &ListQuery, messages: Vec<Value>, next_token: Option<String>) -> Value {
    let uri = |page: u32, token: Option<&str>| {
        let token = token.map(|t| format!("&PageToken={t}")).unwrap_or_default();
        format!("/{API_VERSION}/Accounts/{account}/Messages.json?PageSize={}&Page={page}{token}", q.page_size)
    };
    let start = u64::from(q.page) * u64::from(q.page_size);
    let end = start + (messages.len() as u64).saturating_sub(1);
    json!({
        "messages": messages,
        "page": q.page,
        "page_size": q.page_size,
        "uri": uri(q.page, q.page_token.as_deref()),
        "first_page_uri": uri(0, None),
        "next_page_uri": next_token.map(|t| uri(q.page + 1, Some(&t))),
        "previous_page_uri": null,
        "start": start,
        "end": end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_query_reads_twilios_paging_and_refuses_filters_it_would_not_apply() {
        let q = read_list_query("PageSize=5000&Page=2&PageToken=abc").unwrap();
        assert_eq!(q, ListQuery { page_size: 1_000, page: 2, page_token: Some("abc".into()) });
        assert_eq!(read_list_query("").unwrap().page_size, 50);
        for bad in ["PageSize=0", "PageSize=x", "Page=-1", "Page=3", "To=%2B14155550123", "DateSent%3E=2026-01-01"] {
            assert_eq!(read_list_query(bad).unwrap_err().code, 20001, "{bad}");
        }
    }

    #[test]
    fn sids_have_twilios_shape_and_name_their_request() {
        let ac = account_sid("default");
        assert_eq!((ac.len(), &ac[..2]), (34, "AC"));
        assert_eq!(ac, account_sid("default"), "stable");
        assert_ne!(ac, account_sid("other"));
        let id = "req_0192f3a4b5c6d7e8f90a1b2c3d4e5f60";
        let sm = request_sid("SM", id);
        assert_eq!(sm.len(), 34);
        assert_eq!(request_of_sid("SM", &sm).as_deref(), Some(id));
        assert_eq!(request_of_sid("SM", "SMnothex"), None);
        assert_eq!(request_of_sid("NT", &sm), None);
    }

    #[test]
    fn segments_count_as_twilio_counts() {
        assert_eq!(segments("hi"), 1);
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"é".repeat(160)), 1, "é is GSM-7");
        assert_eq!(segments(&"ü".repeat(70)), 1);
        assert_eq!(segments(&"你".repeat(71)), 2);
    }

    #[test]
    fn content_variables_are_numbered_values_then_named_ones() {
        let (pos, named) = content_variables(Some(r#"{"2":"b","1":"a","city":"Lyon"}"#)).unwrap();
        assert_eq!(pos, vec!["a", "b"]);
        assert_eq!(named["city"], "Lyon");
        assert_eq!(content_variables(Some(r#"{"1":"a","3":"c"}"#)).unwrap_err().code, 21656);
        assert_eq!(content_variables(Some("[1]")).unwrap_err().code, 21656);
    }
}
