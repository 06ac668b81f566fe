//! SMAX.bot's Broadcasting API (seed 002), V1 and V2. Every answer, errors included, is
//! `{"success": bool, "result": "…"}`. The bot is the tenant: `{bot_id}` must be the id of the
//! tenant the token belongs to.
//!
//! - V1 `POST /compat/smax/bots/{bot_id}/users/{user_id}/send?bot_token=…`: everything is in the
//!   query string. `block_name` / `block_id` picks a campaign; every other parameter is a user
//!   attribute stored on the contact before rendering; at most 25 requests per second per bot.
//! - V2 `POST /compat/smax/public/bots/{bot_id}/send` with `Authorization: Bearer`: a JSON body
//!   naming the customer by any of four identifiers; extra ones update the contact.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{campaigns_named, dialling_phone, rename, validate, with_request_id, Renames};
use crate::app::Herald;
use crate::domain::ids::check_field_name;
use crate::domain::limits::{MAX_VARIABLES, MAX_VARIABLE_VALUE};
use crate::domain::{
    check_message_chars, check_text, check_user_id, BroadcastBody, Campaign, Channel, ContactDraft, FieldErrors,
};
use crate::domain::{MessageBody, RecipientBody, SendPlan};
use crate::http::error::ApiError;
use crate::http::extract::{parse_json, JsonBytes, Tenant};
use crate::http::idempotent_with;
use crate::service::ingest::ingest;
use crate::service::keys::authenticate;
use crate::service::ServiceError;

const V1_PATH: &str = "/compat/smax/bots/{bot_id}/users/{user_id}/send";
const V2_PATH: &str = "/compat/smax/public/bots/{bot_id}/send";
/// SMAX's ceiling for V1: "up to 25 RPS per bot".
const V1_PER_SECOND: usize = 25;
/// The tags V1 lists (V2 adds `HUMAN_AGENT`, which the native validation accepts).
const V1_TAGS: [&str; 3] = ["CONFIRMED_EVENT_UPDATE", "POST_PURCHASE_UPDATE", "ACCOUNT_UPDATE"];
/// "All parameters starting with chatfuel_ are reserved and should not be used."
const RESERVED_PREFIX: &str = "chatfuel_";
/// V2's channel order when the body gives no `priority`: the seed's own example, fbid first.
const DEFAULT_PRIORITY: [Channel; 4] = [Channel::Messenger, Channel::Whatsapp, Channel::Sms, Channel::Email];

const V1_RENAMES: Renames = &[("recipients[0].messenger_psid", "user_id"), ("campaign_id", "block_id")];
const V2_RENAMES: Renames = &[
    ("recipients[0].contact_id", "customer_id"),
    ("recipients[0].email", "customer_email"),
    ("recipients[0].phone", "customer_phone"),
    ("recipients[0].messenger_psid", "customer_fbid"),
    ("recipients", "customer_id"),
    ("campaign_id", "block_id"),
];

pub(super) fn routes() -> Router<Arc<Herald>> {
    let limiter = Arc::new(RateLimiter::new(V1_PER_SECOND, Duration::from_secs(1)));
    Router::new()
        .route(V1_PATH, post(v1_send).fallback(wrong_method))
        .route(V2_PATH, post(v2_send).fallback(wrong_method))
        .layer(Extension(limiter))
}

/// SMAX's one answer shape.
fn answer(status: StatusCode, success: bool, result: impl Into<String>) -> Response {
    (status, Json(json!({"success": success, "result": result.into()}))).into_response()
}

/// Any Herald error in SMAX's shape. A broken rule is a `400` (SMAX has no `422`).
fn error(e: ApiError) -> Response {
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

async fn wrong_method() -> Response {
    answer(StatusCode::METHOD_NOT_ALLOWED, false, "the Broadcasting API takes POST")
}

fn no_bot(bot_id: &str) -> Response {
    // The same answer whether or not such a tenant exists: a token cannot probe for others.
    answer(StatusCode::NOT_FOUND, false, format!("no bot \"{bot_id}\" for this token"))
}

// ------------------------------------------------------------------------------------------ V1

async fn v1_send(
    State(h): State<Arc<Herald>>,
    Extension(limiter): Extension<Arc<RateLimiter>>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Ok(Path((bot_id, user_id))) = path else {
        return answer(StatusCode::BAD_REQUEST, false, "the path must be /bots/<BOT_ID>/users/<USER_ID>/send");
    };
    let query = V1Query::parse(query.as_deref().unwrap_or_default());
    let tenant = match tenant_of_token(&h, query.token.as_deref()).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if bot_id != tenant {
        return no_bot(&bot_id);
    }
    if let Err(wait) = limiter.admit(&bot_id, Instant::now()) {
        return too_many(wait);
    }
    let (h, tenant, user_id) = (&h, &tenant, &user_id);
    let route = format!("POST /compat/smax/bots/{bot_id}/users/{user_id}/send");
    let fingerprint = query.canonical();
    idempotent_with(h, tenant, &headers, &route, &fingerprint, error, || async move {
        v1_run(h, tenant, user_id, query).await.unwrap_or_else(error)
    })
    .await
}

async fn tenant_of_token(h: &Herald, token: Option<&str>) -> Result<String, Response> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(answer(StatusCode::UNAUTHORIZED, false, "bot_token is required"));
    };
    match authenticate(h.keys.as_ref(), token).await {
        Ok(Some(tenant)) => Ok(tenant),
        Ok(None) => Err(answer(StatusCode::UNAUTHORIZED, false, "bot_token is not valid")),
        Err(e) => Err(error(e.into())),
    }
}

fn too_many(wait: Duration) -> Response {
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
enum Block {
    Name(String),
    Id(String),
}

/// V1's query string, read in one pass; its problems wait in `errors` until the caller is
/// authenticated (a bad token answers `401` whatever else is wrong).
#[derive(Debug, Default)]
struct V1Query {
    token: Option<String>,
    block: Option<Block>,
    messaging_tag: Option<String>,
    attributes: BTreeMap<String, String>,
    /// Every parameter but the token, for the idempotency fingerprint.
    others: BTreeMap<String, String>,
    errors: FieldErrors,
}

impl V1Query {
    fn parse(raw: &str) -> V1Query {
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
    fn canonical(&self) -> Vec<u8> {
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

async fn v1_run(h: &Herald, tenant: &str, user_id: &str, q: V1Query) -> Result<Response, ApiError> {
    let mut errs = q.errors;
    let psid = errs.take("user_id", check_user_id(user_id));
    if q.block.is_none() && q.attributes.is_empty() {
        errs.push("block_name", "give block_name or block_id to send a block, or user attributes to set");
    }
    let (Some(psid), true) = (psid, errs.is_empty()) else { return Err(errs.into()) };
    let Some(block) = q.block else { return set_attributes(h, tenant, psid, q.attributes).await };
    let campaign = find_block(h, tenant, &block).await?;
    let native = BroadcastBody {
        recipients: Some(vec![RecipientBody { messenger_psid: Some(psid.clone()), ..Default::default() }]),
        campaign_id: Some(campaign.id.clone()),
        // The user is a Messenger user; a block whose templates name a channel keeps it.
        priority: Some(vec![Channel::Messenger.to_string()]),
        messaging_tag: q.messaging_tag,
        ..Default::default()
    };
    let mut plan = validate(native, FieldErrors::new(), V1_RENAMES)?;
    for r in &mut plan.recipients {
        r.set_fields = q.attributes.clone();
    }
    let accepted = ingest(&h.ingest, tenant, plan, "smax_v1").await.map_err(|e| rename(e.into(), V1_RENAMES))?;
    let id = &accepted.request.id;
    let result = format!("block \"{}\" queued for user {psid} (request {id})", campaign.name);
    Ok(with_request_id(answer(StatusCode::OK, true, result), id))
}

/// V1 without a block: "set user attributes via an API call". No message, so no send request.
async fn set_attributes(
    h: &Herald,
    tenant: &str,
    psid: String,
    fields: BTreeMap<String, String>,
) -> Result<Response, ApiError> {
    let draft = ContactDraft { messenger_psid: Some(psid.clone()), fields, ..Default::default() };
    let (contact, _) = h.contacts.upsert_contact(tenant, &draft, true).await.map_err(ServiceError::from)?;
    Ok(answer(StatusCode::OK, true, format!("attributes set for user {psid} (contact {})", contact.id)))
}

async fn find_block(h: &Herald, tenant: &str, block: &Block) -> Result<Campaign, ApiError> {
    match block {
        Block::Id(id) => h
            .catalog
            .get_campaign(tenant, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no block with id \"{id}\""))),
        Block::Name(name) => {
            let mut found = campaigns_named(h, tenant, name).await?;
            match found.len() {
                0 => Err(ApiError::NotFound(format!("no block named \"{name}\""))),
                1 => Ok(found.remove(0)),
                n => Err(ApiError::field("block_name", format!("names {n} blocks; send by block_id instead"))),
            }
        }
    }
}

// ------------------------------------------------------------------------------------------ V2

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct V2Body {
    customer_id: Option<String>,
    customer_email: Option<String>,
    customer_phone: Option<String>,
    customer_fbid: Option<String>,
    block_id: Option<String>,
    messages: Option<Vec<MessageBody>>,
    notification_messages_token: Option<String>,
    one_time_notif_token: Option<String>,
    messaging_tag: Option<String>,
    priority: Option<Vec<String>>,
}

async fn v2_send(
    State(h): State<Arc<Herald>>,
    path: Result<Path<String>, PathRejection>,
    tenant: Result<Tenant, ApiError>,
    headers: HeaderMap,
    body: Result<JsonBytes, ApiError>,
) -> Response {
    let Ok(Path(bot_id)) = path else {
        return answer(StatusCode::BAD_REQUEST, false, "the path must be /public/bots/<botID>/send");
    };
    let Tenant(tenant) = match tenant {
        Ok(t) => t,
        Err(e) => return error(e),
    };
    if bot_id != tenant {
        return no_bot(&bot_id);
    }
    let JsonBytes(body) = match body {
        Ok(b) => b,
        Err(e) => return error(e),
    };
    let (h, tenant, body) = (&h, &tenant, &body);
    let route = format!("POST /compat/smax/public/bots/{bot_id}/send");
    idempotent_with(h, tenant, &headers, &route, body, error, || async move {
        v2_run(h, tenant, body).await.unwrap_or_else(error)
    })
    .await
}

async fn v2_run(h: &Herald, tenant: &str, body: &[u8]) -> Result<Response, ApiError> {
    let (plan, dropped_messages) = v2_plan(h, tenant, body).await?;
    let accepted = ingest(&h.ingest, tenant, plan, "smax_v2").await.map_err(|e| rename(e.into(), V2_RENAMES))?;
    let id = &accepted.request.id;
    let what = match &accepted.request.campaign_name {
        Some(name) => format!("block \"{name}\""),
        None => "message".to_string(),
    };
    let note = if dropped_messages { "; messages were not sent, since block_id was given" } else { "" };
    Ok(with_request_id(answer(StatusCode::OK, true, format!("{what} queued (request {id}){note}")), id))
}

/// A V2 body as a native plan, and whether its `messages` were dropped for its `block_id`.
pub(crate) async fn v2_plan(h: &Herald, tenant: &str, body: &[u8]) -> Result<(SendPlan, bool), ApiError> {
    let b = parse_json::<V2Body>(body)?;
    let (customer_id, block_id) = (b.customer_id.clone(), b.block_id.clone());
    let other_ids = b.customer_email.is_some() || b.customer_phone.is_some() || b.customer_fbid.is_some();
    let dropped_messages = b.block_id.is_some() && b.messages.is_some();
    let mut plan = v2_native(b)?;
    // "If there are more, the system updates them": every identifier given lands on the contact,
    // and an unknown customer_id leaves the others to find or create it.
    for r in &mut plan.recipients {
        r.update_contact = true;
        r.fall_back_to_keys = true;
    }
    if let Some(id) = customer_id.as_ref().filter(|_| !other_ids) {
        if h.contacts.get_contact(tenant, id).await?.is_none() {
            return Err(ApiError::NotFound(format!("no customer with id \"{id}\"")));
        }
    }
    if let Some(id) = &block_id {
        if h.catalog.get_campaign(tenant, id).await?.is_none() {
            return Err(ApiError::NotFound(format!("no block with id \"{id}\"")));
        }
    }
    Ok((plan, dropped_messages))
}

/// V2's body as a native plan: the customer's identifiers as one recipient, the block or the
/// messages as content, the notification tokens in the metadata for the Messenger provider.
fn v2_native(b: V2Body) -> Result<SendPlan, ApiError> {
    let mut errs = FieldErrors::new();
    let ids = [&b.customer_id, &b.customer_email, &b.customer_phone, &b.customer_fbid];
    let named = ids.iter().any(|v| v.is_some());
    if !named {
        errs.push("customer_id", "give at least one of customer_id, customer_email, customer_phone, customer_fbid");
    }
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
        messaging_tag: b.messaging_tag,
        metadata: Some(metadata),
        ..Default::default()
    };
    validate(native, errs, V2_RENAMES)
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

// ------------------------------------------------------------------------------- rate limiting

/// At most `limit` admissions per `window` for each key: a sliding log of recent admissions.
/// It lives in the process, so each `herald serve` (or warm Lambda instance) counts its own.
/// The clock is the caller's, so tests can step through time.
struct RateLimiter {
    limit: usize,
    window: Duration,
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    fn new(limit: usize, window: Duration) -> RateLimiter {
        RateLimiter { limit, window, recent: Mutex::new(HashMap::new()) }
    }

    /// Admits one request for `key` at `now`, or says how long until one would be admitted.
    fn admit(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() > 10_000 {
            // Forget keys that have been quiet for a window, so the map stays small.
            recent.retain(|_, log| log.back().is_some_and(|t| now.duration_since(*t) < self.window));
        }
        let log = recent.entry(key.to_string()).or_default();
        while log.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            log.pop_front();
        }
        match log.front() {
            Some(oldest) if log.len() >= self.limit => Err(self.window - now.duration_since(*oldest)),
            _ => {
                log.push_back(now);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_admits_25_per_second_per_bot() {
        let l = RateLimiter::new(25, Duration::from_secs(1));
        let t0 = Instant::now();
        for i in 0..25 {
            assert!(l.admit("bot-a", t0 + Duration::from_millis(i * 10)).is_ok(), "request {i}");
        }
        let wait = l.admit("bot-a", t0 + Duration::from_millis(500)).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500), "until the first admission leaves the window");
        assert!(l.admit("bot-b", t0 + Duration::from_millis(500)).is_ok(), "bots are counted apart");
        assert!(l.admit("bot-a", t0 + Duration::from_millis(1000)).is_ok(), "the window slid");
        assert!(l.admit("bot-a", t0 + Duration::from_millis(1005)).is_err());
    }

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
