//! SMAX.bot's Broadcasting API over HTTP, V1 and V2; the translation is `dialects::smax`. Every
//! answer, errors included, is in SMAX's shape.

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, RawQuery, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::Extension;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{campaigns_named, require_segments, with_request_id};
use crate::app::Herald;
use crate::dialects::rename;
use crate::dialects::smax::{answer, error, no_bot, too_many, Block, V1Query, V1_PER_SECOND, V1_RENAMES, V2_RENAMES};
use crate::dialects::smax::{v1_attributes_set, v1_plan, v1_sent, v1_user, v2_answer, V2Plan};
use crate::domain::TenantId;
use crate::domain::{Campaign, ContactDraft, SendPlan};
use crate::http::error::ApiError;
use crate::http::extract::{JsonBytes, Tenant};
use crate::http::idempotency::{sending, Input};
use crate::http::schema::dialects as doc;
use crate::service::ingest::ingest;
use crate::service::keys::authenticate;
use crate::service::ServiceError;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(super) fn routes(h: &Arc<Herald>) -> OpenApiRouter<Arc<Herald>> {
    let limiter = Arc::new(RateLimiter::new(V1_PER_SECOND, Duration::from_secs(1)));
    let (schemas, paths, v1) = routes!(v1_send);
    let v1 = OpenApiRouter::new().routes((schemas, paths, v1.fallback(wrong_method)));
    let (schemas, paths, v2) = routes!(v2_send);
    let v2 = OpenApiRouter::new().routes((schemas, paths, v2.fallback(wrong_method)));
    // Admission runs before the idempotency layer: a replayed V1 call counts against the bot's
    // rate too, and a call for another bot is refused before it takes a key.
    let admission = axum::middleware::from_fn_with_state(Admission { h: h.clone(), limiter }, admit_v1);
    sending(v1, h, error, Input::SmaxQuery).route_layer(admission).merge(sending(
        v2,
        h,
        error,
        Input::JsonBody { owner: Some("bot_id") },
    ))
}

#[derive(Clone)]
struct Admission {
    h: Arc<Herald>,
    limiter: Arc<RateLimiter>,
}

/// Admits a V1 call from its bot's own token within the bot's rate, and hands its tenant on. A
/// call it cannot place (no such token, another bot's path) goes on without one, for the handler
/// to refuse in SMAX's words.
async fn admit_v1(State(a): State<Admission>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let bot = Path::<(String, String)>::from_request_parts(&mut parts, &()).await.ok().map(|Path((bot, _))| bot);
    let token = V1Query::parse(parts.uri.query().unwrap_or_default()).token.filter(|t| !t.is_empty());
    let tenant = match token {
        Some(token) => authenticate(a.h.keys.as_ref(), &token).await.ok().flatten(),
        None => None,
    };
    if let (Some(bot), Some(tenant)) = (bot, tenant) {
        if bot == tenant {
            if let Err(wait) = a.limiter.admit(&bot, Instant::now()) {
                return too_many(wait);
            }
            parts.extensions.insert(Tenant(tenant));
        }
    }
    next.run(Request::from_parts(parts, body)).await
}

async fn wrong_method() -> Response {
    answer(StatusCode::METHOD_NOT_ALLOWED, false, "the Broadcasting API takes POST")
}

// ------------------------------------------------------------------------------------------ V1

/// A V1 call; [`admit_v1`] has admitted it (and named its tenant) unless it is to be refused.
/// Every query parameter but the token, the block and the tag is a user attribute.
#[utoipa::path(post, path = "/compat/smax/bots/{bot_id}/users/{user_id}/send", operation_id = "smax_v1_send", tag = "smax", security(("smax_bot_token" = [])),
    params(("bot_id" = String, Path, description = "The tenant id"), ("user_id" = String, Path, description = "The user's PSID"),
        ("block_name" = Option<String>, Query), ("block_id" = Option<String>, Query),
        ("messaging_tag" = Option<String>, Query), ("Idempotency-Key" = Option<String>, Header)),
    responses(
        (status = 200, description = "The block queued for the user, or (no block) the attributes set", body = doc::SmaxAnswer,
            headers(("herald-request-id" = String, description = "The native request id, when a block was sent"))),
        (status = 400, description = "A rule broken, in SMAX's words", body = doc::SmaxAnswer),
        (status = 401, description = "No token, or one that is not valid", body = doc::SmaxAnswer),
        (status = 404, description = "No such bot for this token, or no such block or customer", body = doc::SmaxAnswer),
        (status = 409, description = "The Idempotency-Key was used with another request, or is still running", body = doc::SmaxAnswer),
        (status = 429, description = "Over the rate; see Retry-After", body = doc::SmaxAnswer),
        (status = 500, description = "Herald could not complete the request", body = doc::SmaxAnswer),
        (status = 503, description = "Herald's storage is briefly unavailable; see Retry-After", body = doc::SmaxAnswer),
        (status = 408, description = "The request came too slowly", body = doc::SmaxAnswer)))]
async fn v1_send(
    State(h): State<Arc<Herald>>,
    path: Result<Path<(String, String)>, PathRejection>,
    RawQuery(query): RawQuery,
    admitted: Option<Extension<Tenant>>,
) -> Response {
    let Ok(Path((bot_id, user_id))) = path else {
        return answer(StatusCode::BAD_REQUEST, false, "the path must be /bots/<BOT_ID>/users/<USER_ID>/send");
    };
    let query = V1Query::parse(query.as_deref().unwrap_or_default());
    let Some(Extension(Tenant(tenant))) = admitted else {
        return match tenant_of_token(&h, query.token.as_deref()).await {
            Err(refused) => refused,
            Ok(tenant) if tenant != bot_id => no_bot(&bot_id),
            // The key store failed admission's read a moment ago: a blink, safe to retry.
            Ok(_) => error(ApiError::Unavailable("the API key store failed a V1 admission".into())),
        };
    };
    v1_run(&h, &tenant, &user_id, query).await.unwrap_or_else(error)
}

async fn tenant_of_token(h: &Herald, token: Option<&str>) -> Result<TenantId, Response> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(answer(StatusCode::UNAUTHORIZED, false, "bot_token is required"));
    };
    match authenticate(h.keys.as_ref(), token).await {
        Ok(Some(tenant)) => Ok(tenant),
        Ok(None) => Err(answer(StatusCode::UNAUTHORIZED, false, "bot_token is not valid")),
        Err(e) => Err(error(e.into())),
    }
}

async fn v1_run(h: &Herald, tenant: &TenantId, user_id: &str, mut q: V1Query) -> Result<Response, ApiError> {
    let psid = v1_user(user_id, &mut q)?;
    let Some(block) = q.block.take() else { return set_attributes(h, tenant, psid, q.attributes).await };
    let campaign = find_block(h, tenant, &block).await?;
    let plan = v1_plan(&psid, &campaign.id, q)?;
    let accepted = ingest(&h.ingest, tenant, plan, "smax_v1").await.map_err(|e| rename(e.into(), V1_RENAMES))?;
    let id = &accepted.request.id;
    Ok(with_request_id(v1_sent(&campaign.name, &psid, id), id))
}

/// V1 without a block: "set user attributes via an API call". No message, so no send request.
async fn set_attributes(
    h: &Herald,
    tenant: &TenantId,
    psid: String,
    fields: BTreeMap<String, String>,
) -> Result<Response, ApiError> {
    let draft = ContactDraft { messenger_psid: Some(psid.clone()), fields, ..Default::default() };
    let (contact, _) = h.contacts.upsert_contact(tenant, &draft, true).await.map_err(ServiceError::from)?;
    Ok(v1_attributes_set(&psid, &contact.id))
}

async fn find_block(h: &Herald, tenant: &TenantId, block: &Block) -> Result<Campaign, ApiError> {
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

/// A V2 call: a block or messages to one customer, or to the members of segments.
#[utoipa::path(post, path = "/compat/smax/public/bots/{bot_id}/send", operation_id = "smax_v2_send", tag = "smax", security(("bearer" = []), ("api_key" = [])),
    params(("bot_id" = String, Path, description = "The tenant id"), ("Idempotency-Key" = Option<String>, Header)),
    request_body = doc::SmaxV2Body,
    responses(
        (status = 200, description = "Queued", body = doc::SmaxAnswer,
            headers(("herald-request-id" = String, description = "The native request id"))),
        (status = 400, description = "A rule broken, in SMAX's words", body = doc::SmaxAnswer),
        (status = 401, description = "No token, or one that is not valid", body = doc::SmaxAnswer),
        (status = 404, description = "No such bot for this token, or no such block or customer", body = doc::SmaxAnswer),
        (status = 409, description = "The Idempotency-Key was used with another request, or is still running", body = doc::SmaxAnswer),
        (status = 429, description = "Over the rate; see Retry-After", body = doc::SmaxAnswer),
        (status = 500, description = "Herald could not complete the request", body = doc::SmaxAnswer),
        (status = 503, description = "Herald's storage is briefly unavailable; see Retry-After", body = doc::SmaxAnswer),
        (status = 408, description = "The body came too slowly", body = doc::SmaxAnswer),
        (status = 413, description = "The body is larger than Herald takes", body = doc::SmaxAnswer),
        (status = 415, description = "The body is not JSON", body = doc::SmaxAnswer)))]
async fn v2_send(
    State(h): State<Arc<Herald>>,
    path: Result<Path<String>, PathRejection>,
    tenant: Result<Tenant, ApiError>,
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
    v2_run(&h, &tenant, &body).await.unwrap_or_else(error)
}

async fn v2_run(h: &Herald, tenant: &TenantId, body: &[u8]) -> Result<Response, ApiError> {
    let (plan, dropped_messages) = v2_plan(h, tenant, body).await?;
    let accepted = ingest(&h.ingest, tenant, plan, "smax_v2").await.map_err(|e| rename(e.into(), V2_RENAMES))?;
    let (id, audience) = (&accepted.request.id, accepted.request.audience.as_ref());
    let campaign = accepted.request.campaign_name.as_deref();
    Ok(with_request_id(v2_answer(campaign, audience, id, dropped_messages), id))
}

/// A V2 body as a native plan whose customer and block exist, and whether its `messages` were
/// dropped for its `block_id`.
pub(crate) async fn v2_plan(h: &Herald, tenant: &TenantId, body: &[u8]) -> Result<(SendPlan, bool), ApiError> {
    let V2Plan { plan, dropped_messages, customer, block } = crate::dialects::smax::v2_plan(body)?;
    if let Some(id) = &customer {
        if h.contacts.get_contact(tenant, id).await?.is_none() {
            return Err(ApiError::NotFound(format!("no customer with id \"{id}\"")));
        }
    }
    if let Some(id) = &block {
        if h.catalog.get_campaign(tenant, id).await?.is_none() {
            return Err(ApiError::NotFound(format!("no block with id \"{id}\"")));
        }
    }
    if let Some(audience) = &plan.audience {
        require_segments(h, tenant, audience).await?;
    }
    Ok((plan, dropped_messages))
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
}
