//! Twilio's Messages (`2010-04-01`) and Notify (`v1`) over HTTP; the translation is
//! `dialects::twilio`. Every answer, errors included, is in Twilio's shape. The caller signs in
//! with HTTP Basic as the Twilio SDKs do: the tenant id or its account SID, and a Herald key.
//!
//! The sending routes call the idempotency guard themselves rather than sit behind
//! `idempotency::sending`: that layer reads a Bearer key and a JSON body, these routes take
//! Basic credentials and a form.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::sync::Arc;

use super::with_request_id;
use crate::app::Herald;
use crate::dialects::twilio::{self as tw, TwilioError};
use crate::domain::limits::MAX_RECIPIENTS;
use crate::domain::{ContactBody, MembersBody, Phone, SegmentBody, TenantId};
use crate::http::error::ApiError;
use crate::http::extract::read_body;
use crate::http::idempotency::guarded;
use crate::http::schema::dialects as doc;
use crate::ports::RequestCursor;
use crate::service::ingest::ingest;
use crate::service::keys::authenticate;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(super) fn routes() -> OpenApiRouter<Arc<Herald>> {
    let (s, p, messages) = routes!(create_message, list_messages);
    let (s2, p2, message) = routes!(fetch_message);
    let (s3, p3, notifications) = routes!(create_notification);
    OpenApiRouter::new()
        .routes((s, p, messages.fallback(wrong_method)))
        .routes((s2, p2, message.fallback(wrong_method)))
        .routes((s3, p3, notifications.fallback(wrong_method)))
}

async fn wrong_method() -> Response {
    TwilioError::new(StatusCode::METHOD_NOT_ALLOWED, 20004, "Method not allowed").into_response()
}

fn api(e: impl Into<ApiError>) -> TwilioError {
    tw::from_api(e.into())
}

// ------------------------------------------------------------------------------------ auth

/// The tenant whose key the Basic password is, when the username names that tenant (its id or
/// its account SID) and so does the path's account, if it names one. Any mismatch is Twilio's
/// 20003, whether or not the other account exists: a key cannot probe for other tenants.
async fn authorize(h: &Herald, headers: &HeaderMap, account: Option<&str>) -> Result<TenantId, TwilioError> {
    let (user, key) = basic(headers).ok_or_else(TwilioError::unauthorized)?;
    let tenant = authenticate(h.keys.as_ref(), &key).await.map_err(api)?.ok_or_else(TwilioError::unauthorized)?;
    let names = |name: &str| name == tenant.as_str() || name.eq_ignore_ascii_case(&tw::account_sid(tenant.as_str()));
    if !names(&user) || account.is_some_and(|a| !names(a)) {
        return Err(TwilioError::unauthorized());
    }
    Ok(tenant)
}

fn basic(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let (user, key) = String::from_utf8(decoded).ok()?.split_once(':').map(|(u, k)| (u.to_string(), k.to_string()))?;
    Some((user, key))
}

/// A form body within Herald's limits; a body of another type is refused, as Twilio's API
/// takes only forms.
async fn read_form(req: Request) -> Result<axum::body::Bytes, TwilioError> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        if ct.split(';').next().unwrap_or_default().trim() != "application/x-www-form-urlencoded" {
            let m = "Twilio's API takes application/x-www-form-urlencoded bodies.";
            return Err(TwilioError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, 20001, m));
        }
    }
    read_body(req).await.map_err(api)
}

// -------------------------------------------------------------------------------- Messages

/// Creates a Message: one SMS or WhatsApp message.
#[utoipa::path(post, path = "/compat/twilio/2010-04-01/Accounts/{account_sid}/Messages.json", operation_id = "twilio_create_message", tag = "twilio",
    security(("twilio_basic" = [])),
    params(("account_sid" = String, Path, description = "The tenant's account SID or id"), ("Idempotency-Key" = Option<String>, Header)),
    request_body(content = doc::MessageForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 201, description = "Created", body = doc::Message,
            headers(("herald-request-id" = String, description = "The native request id"))),
        (status = 400, description = "A parameter Twilio would refuse, with Twilio's code", body = doc::TwilioError),
        (status = 408, description = "The body came too slowly", body = doc::TwilioError),
        (status = 409, description = "The Idempotency-Key was used with another form, or is still running", body = doc::TwilioError),
        (status = 413, description = "The body is larger than Herald takes", body = doc::TwilioError),
        (status = 415, description = "The body is not a form", body = doc::TwilioError),
        (status = 429, description = "20429: over the tenant's sending rate", body = doc::TwilioError),
        (status = 401, description = "20003: the credentials do not name this account", body = doc::TwilioError,
            headers(("WWW-Authenticate" = String))),
        (status = 404, description = "20404: no such resource", body = doc::TwilioError),
        (status = 500, description = "20500: Herald could not complete the request", body = doc::TwilioError),
        (status = 503, description = "20503: Herald's storage is briefly unavailable", body = doc::TwilioError),
    ))]
async fn create_message(
    State(h): State<Arc<Herald>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let Ok(Path(account)) = path else { return TwilioError::not_found("Account").into_response() };
    let tenant = match authorize(&h, &headers, Some(&account)).await {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let body = match read_form(req).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let route = format!("POST /compat/twilio/{}/Accounts/{account}/Messages.json", tw::API_VERSION);
    let run = async { create_run(&h, &tenant, &body).await.unwrap_or_else(IntoResponse::into_response) };
    guarded(&h, &tenant, &headers, &route, &body, tw::shape, run).await
}

async fn create_run(h: &Herald, tenant: &TenantId, body: &[u8]) -> Result<Response, TwilioError> {
    let form = tw::read_message_form(body);
    let content_sid = form.content_sid.clone();
    let plan = tw::message_plan(form, crate::domain::now(), h.settings.allow_loopback_urls)?;
    if let Some(sid) = content_sid {
        if h.catalog.get_template(tenant, &sid).await.map_err(api)?.is_none() {
            let m = format!("The ContentSid is Invalid: Herald has no template \"{sid}\" for this account.");
            return Err(TwilioError::new(StatusCode::BAD_REQUEST, 21655, m));
        }
    }
    if let Some(url) = plan.metadata.get(tw::META_CALLBACK).and_then(|v| v.as_str()) {
        let url = check_callback(h, url).await?;
        note_unsigned(h, tenant, &url).await;
    }
    let accepted = ingest(&h.ingest, tenant, plan, "twilio").await.map_err(api)?;
    let row = accepted.rows.first().ok_or_else(|| api(ApiError::Internal("a message stored no row".into())))?;
    let json = tw::message_json(&accepted.request, row, crate::domain::now());
    Ok(with_request_id((StatusCode::CREATED, Json(json)).into_response(), &accepted.request.id))
}

/// A `StatusCallback` must resolve to public addresses only, as the webhook channel's URL must.
async fn check_callback(h: &Herald, raw: &str) -> Result<url::Url, TwilioError> {
    let bad = |m: String| TwilioError::new(StatusCode::BAD_REQUEST, 21609, format!("Invalid 'StatusCallback': {m}"));
    let url = url::Url::parse(raw).map_err(|e| bad(e.to_string()))?;
    crate::net::ssrf::check_resolved(&url, h.settings.allow_loopback_urls).await.map_err(|e| bad(e.0))?;
    Ok(url)
}

/// Says once, when a message names a `StatusCallback`, that the tenant has no signing secret
/// to sign callbacks with, so none will be posted. The URL's query may hold the customer's
/// tokens: it stays out of the log.
async fn note_unsigned(h: &Herald, tenant: &TenantId, url: &url::Url) {
    let signs = h.keys.get_settings(tenant).await.map(|s| s.twilio_signing_secret.is_some());
    if matches!(signs, Ok(false)) {
        let url = format!("{}{}", url.origin().ascii_serialization(), url.path());
        tracing::info!(%tenant, %url, "StatusCallback given but no Twilio signing secret is set (POST /v1/account/twilio-signing-secret): status callbacks are not posted");
    }
}

/// Fetches a Message the Messages API created.
#[utoipa::path(get, path = "/compat/twilio/2010-04-01/Accounts/{account_sid}/Messages/{sid}", operation_id = "twilio_fetch_message", tag = "twilio",
    security(("twilio_basic" = [])),
    params(("account_sid" = String, Path, description = "The tenant's account SID or id"),
        ("sid" = String, Path, description = "`SM….json`")),
    responses((status = 200, description = "The Message", body = doc::Message),
        (status = 401, description = "20003: the credentials do not name this account", body = doc::TwilioError,
            headers(("WWW-Authenticate" = String))),
        (status = 404, description = "20404: no such resource", body = doc::TwilioError),
        (status = 500, description = "20500: Herald could not complete the request", body = doc::TwilioError),
        (status = 503, description = "20503: Herald's storage is briefly unavailable", body = doc::TwilioError),
    ))]
async fn fetch_message(
    State(h): State<Arc<Herald>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let Ok(Path((account, sid))) = path else { return TwilioError::not_found("Message").into_response() };
    match fetch_run(&h, &headers, &account, &sid).await {
        Ok(json) => Json(json).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn fetch_run(
    h: &Herald,
    headers: &HeaderMap,
    account: &str,
    sid: &str,
) -> Result<serde_json::Value, TwilioError> {
    let tenant = authorize(h, headers, Some(account)).await?;
    let not_found = || TwilioError::not_found(&format!("/{}/Accounts/{account}/Messages/{sid}", tw::API_VERSION));
    let request_id = sid.strip_suffix(".json").and_then(|s| tw::request_of_sid("SM", s)).ok_or_else(not_found)?;
    let request = h.requests.get_request(&tenant, &request_id).await.map_err(api)?;
    // Only what the Messages API sent is a Message: a native broadcast's rows are not.
    let request = request.filter(|r| r.source == "twilio").ok_or_else(not_found)?;
    let rows = h.requests.list_rows(&tenant, &request_id, None, 1).await.map_err(api)?;
    let row = rows.first().ok_or_else(not_found)?;
    Ok(tw::message_json(&request, row, crate::domain::now()))
}

/// Messages whose rows are read at once for one page of the list.
const ROWS_AT_ONCE: usize = 8;

/// Lists the Messages the Messages API created, newest first.
#[utoipa::path(get, path = "/compat/twilio/2010-04-01/Accounts/{account_sid}/Messages.json", operation_id = "twilio_list_messages", tag = "twilio",
    security(("twilio_basic" = [])),
    params(("account_sid" = String, Path, description = "The tenant's account SID or id"),
        ("PageSize" = Option<u32>, Query, minimum = 1, description = "Messages a page (50, at most 1000)"),
        ("Page" = Option<u32>, Query, description = "The page's number; past 0 it needs `PageToken`"),
        ("PageToken" = Option<String>, Query, description = "From the previous page's `next_page_uri`")),
    responses((status = 200, description = "A page of Messages", body = doc::MessagePage),
        (status = 400, description = "A paging value Herald cannot read, or a filter it does not apply", body = doc::TwilioError),
        (status = 401, description = "20003: the credentials do not name this account", body = doc::TwilioError,
            headers(("WWW-Authenticate" = String))),
        (status = 404, description = "20404: no such resource", body = doc::TwilioError),
        (status = 500, description = "20500: Herald could not complete the request", body = doc::TwilioError),
        (status = 503, description = "20503: Herald's storage is briefly unavailable", body = doc::TwilioError),
    ))]
async fn list_messages(
    State(h): State<Arc<Herald>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let Ok(Path(account)) = path else { return TwilioError::not_found("Account").into_response() };
    match list_run(&h, &headers, &account, query.as_deref().unwrap_or_default()).await {
        Ok(json) => Json(json).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The messages the Messages API sent, newest first: the tenant's requests of source `twilio`
/// (one row each), as the fetch endpoint answers each.
async fn list_run(
    h: &Herald,
    headers: &HeaderMap,
    account: &str,
    query: &str,
) -> Result<serde_json::Value, TwilioError> {
    use futures::{StreamExt, TryStreamExt};
    let tenant = authorize(h, headers, Some(account)).await?;
    let q = tw::read_list_query(query)?;
    let cursor = match q.page_token.as_deref() {
        None => None,
        Some(t) => Some(RequestCursor::decode(t).ok_or_else(|| {
            TwilioError::new(
                StatusCode::BAD_REQUEST,
                20001,
                format!("Invalid PageToken '{t}': use the next_page_uri of a page."),
            )
        })?),
    };
    let page = h.requests.list_requests(&tenant, Some("twilio"), cursor.as_ref(), q.page_size).await.map_err(api)?;
    let (now, tenant) = (crate::domain::now(), &tenant);
    // Owned requests: a stream of borrowed ones trips the handler's `Send` bound.
    let messages: Vec<Option<serde_json::Value>> = futures::stream::iter(page.requests)
        .map(|request| async move {
            let rows = h.requests.list_rows(tenant, &request.id, None, 1).await?;
            Ok::<_, crate::ports::StoreError>(rows.first().map(|row| tw::message_json(&request, row, now)))
        })
        .buffered(ROWS_AT_ONCE)
        .try_collect()
        .await
        .map_err(api)?;
    let ac = tw::account_sid(tenant.as_str());
    let next = page.next_cursor.map(|c| c.encode());
    Ok(tw::message_page_json(&ac, &q, messages.into_iter().flatten().collect(), next))
}

// ---------------------------------------------------------------------------------- Notify

/// Creates a Notification: one SMS to every `ToBinding`.
#[utoipa::path(post, path = "/compat/twilio/v1/Services/{service_sid}/Notifications", operation_id = "twilio_create_notification", tag = "twilio",
    security(("twilio_basic" = [])),
    params(("service_sid" = String, Path, description = "Any Notify service SID; it is echoed"),
        ("Idempotency-Key" = Option<String>, Header)),
    request_body(content = doc::NotificationForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 201, description = "Created", body = doc::Notification,
            headers(("herald-request-id" = String, description = "The native request id"))),
        (status = 400, description = "A parameter Twilio would refuse, with Twilio's code", body = doc::TwilioError),
        (status = 408, description = "The body came too slowly", body = doc::TwilioError),
        (status = 409, description = "The Idempotency-Key was used with another form, or is still running", body = doc::TwilioError),
        (status = 413, description = "The body is larger than Herald takes", body = doc::TwilioError),
        (status = 415, description = "The body is not a form", body = doc::TwilioError),
        (status = 429, description = "20429: over the tenant's sending rate", body = doc::TwilioError),
        (status = 401, description = "20003: the credentials do not name this account", body = doc::TwilioError,
            headers(("WWW-Authenticate" = String))),
        (status = 404, description = "20404: no such resource", body = doc::TwilioError),
        (status = 500, description = "20500: Herald could not complete the request", body = doc::TwilioError),
        (status = 503, description = "20503: Herald's storage is briefly unavailable", body = doc::TwilioError),
    ))]
async fn create_notification(
    State(h): State<Arc<Herald>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    req: Request,
) -> Response {
    let Ok(Path(service)) = path else { return TwilioError::not_found("Service").into_response() };
    let tenant = match authorize(&h, &headers, None).await {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let body = match read_form(req).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let route = format!("POST /compat/twilio/v1/Services/{service}/Notifications");
    let run = async { notify_run(&h, &tenant, &service, &body).await.unwrap_or_else(IntoResponse::into_response) };
    guarded(&h, &tenant, &headers, &route, &body, tw::shape, run).await
}

/// One broadcast to every binding. Up to what one request may name, the phones are its
/// recipients; past that they become the members of a segment of their own and the broadcast
/// goes to it as an audience, fanned out through the queue as any audience is.
async fn notify_run(h: &Herald, tenant: &TenantId, service: &str, body: &[u8]) -> Result<Response, TwilioError> {
    if service.is_empty() || service.chars().count() > 64 {
        return Err(TwilioError::new(StatusCode::BAD_REQUEST, 20001, "ServiceSid must be 1 to 64 characters."));
    }
    let form = tw::read_notify_form(body);
    let phones = tw::notify_phones(&form)?;
    let segment = match phones.len() > MAX_RECIPIENTS {
        true => Some(notify_segment(h, tenant, &phones, body).await?),
        false => None,
    };
    let plan = tw::notify_plan(tw::notify_body(&form, &phones, segment, service))?;
    let accepted = ingest(&h.ingest, tenant, plan, "twilio_notify").await.map_err(api)?;
    let json = tw::notification_json(&accepted.request, service, form.body.as_deref());
    Ok(with_request_id((StatusCode::CREATED, Json(json)).into_response(), &accepted.request.id))
}

/// The segment holding a notification's phones as contacts (found or made). Its id follows
/// from the body, so a retried notification fills the same segment again.
async fn notify_segment(h: &Herald, tenant: &TenantId, phones: &[Phone], body: &[u8]) -> Result<String, TwilioError> {
    use crate::service::segments as uc;
    let id = format!("twilio-notify-{}", hex::encode(&Sha256::digest(body)[..16]));
    let name = Some(format!("Twilio Notify: {} ToBinding entries", phones.len()));
    uc::put_segment(h.segments.as_ref(), tenant, &id, SegmentBody { name }).await.map_err(api)?;
    let contacts =
        phones.iter().map(|p| ContactBody { phone: Some(p.to_string()), ..Default::default() }).collect::<Vec<_>>();
    let members = MembersBody { contact_ids: Vec::new(), contacts };
    uc::add_members(h.segments.as_ref(), h.contacts.as_ref(), tenant, &id, members).await.map_err(api)?;
    Ok(id)
}
