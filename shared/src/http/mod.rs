//! The whole HTTP API as one `axum::Router`. `herald serve` serves it on a socket; the ingest
//! Lambda serves the very same router through `lambda_http`.

mod broadcasts;
mod catalog;
pub(crate) mod compat;
mod dashboard;
mod dead_letters;
pub use crate::api::error;
mod events;
mod events_api;
pub mod extract;
mod idempotency;
mod imports;
pub mod request_target;
mod segments;
pub mod server;
mod settings;
mod webhook;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

use crate::app::Herald;
use error::ApiError;
use extract::Tenant;

pub use broadcasts::submit;
pub use compat::REQUEST_ID_HEADER;
pub use idempotency::fingerprint;

/// Builds the router over a wired [`Herald`].
pub fn router(h: Arc<Herald>) -> Router {
    // The guard takes only POSTs: the list goes straight through it.
    let send = Router::new().route("/v1/broadcasts", axum::routing::post(broadcasts::create).get(broadcasts::list));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(idempotency::sending(send, &h, idempotency::NATIVE, idempotency::Input::JsonBody { owner: None }))
        .route("/v1/broadcasts/{request_id}", get(broadcasts::get))
        .route("/v1/broadcasts/{request_id}/cancel", axum::routing::post(broadcasts::cancel))
        .route("/v1/templates", get(catalog::list_templates))
        .route(
            "/v1/templates/{id}",
            put(catalog::put_template).get(catalog::get_template).delete(catalog::delete_template),
        )
        .route("/v1/campaigns", get(catalog::list_campaigns))
        .route(
            "/v1/campaigns/{id}",
            put(catalog::put_campaign).get(catalog::get_campaign).delete(catalog::delete_campaign),
        )
        .route("/v1/contacts", axum::routing::post(catalog::upsert_contact))
        .route("/v1/contacts/{id}", put(catalog::put_contact).get(catalog::get_contact))
        .route("/v1/segments", get(segments::list))
        .route("/v1/segments/{id}", put(segments::put).get(segments::get).delete(segments::delete))
        .route(
            "/v1/segments/{id}/members",
            axum::routing::post(segments::add_members).get(segments::list_members).delete(segments::remove_members),
        )
        .route("/v1/imports", axum::routing::post(imports::create).get(imports::list))
        .route("/v1/imports/{id}", get(imports::get))
        .route("/v1/outbox", get(outbox))
        .route("/v1/account", get(account))
        .route("/v1/account/twilio-signing-secret", axum::routing::post(settings::new_twilio_secret))
        .route("/v1/webhook", put(webhook::put).get(webhook::get).delete(webhook::delete))
        .route("/v1/settings", put(settings::put).get(settings::get))
        .route("/v1/event-subscriptions", get(events_api::list))
        .route("/v1/event-subscriptions/{id}", put(events_api::put).get(events_api::get).delete(events_api::delete))
        .route("/v1/event-subscriptions/{id}/failures", get(events_api::failures))
        .route("/v1/event-subscriptions/{id}/failures/{event_id}/redeliver", axum::routing::post(events_api::redeliver))
        .route("/v1/providers/{provider}/events", get(events::verify).post(events::receive))
        .merge(dead_letters::routes())
        .merge(compat::routes(&h))
        .merge(dashboard::routes())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::map_response(error_as_json))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::Internal("a handler panicked".into()).into_response()
        }))
        .with_state(h)
}

/// Every error Herald answers is its JSON error, the ones axum writes itself in plain text too
/// (a path segment that is not UTF-8 such as `%ff`, a query it cannot read).
async fn error_as_json(resp: axum::response::Response) -> axum::response::Response {
    let status = resp.status();
    let json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if status.as_u16() < 400 || json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let message = match text.is_empty() {
        true => status.canonical_reason().unwrap_or("the request was refused").to_string(),
        false => text,
    };
    let code = match status.as_u16() {
        400 => "bad_request".to_string(),
        404 => "not_found".to_string(),
        405 => "method_not_allowed".to_string(),
        413 => "payload_too_large".to_string(),
        415 => "unsupported_media_type".to_string(),
        422 => "validation_failed".to_string(),
        s => format!("http_{s}"),
    };
    let body = json!({"error": {"code": code, "message": message, "fields": []}});
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
    axum::response::Response::from_parts(parts, axum::body::Body::from(body.to_string()))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Reads `limit` from a query string: 1..=max, `default` when absent.
pub(crate) fn limit_param(q: &HashMap<String, String>, default: u32, max: u32) -> Result<u32, ApiError> {
    match q.get("limit") {
        None => Ok(default),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::BadRequest {
                code: "invalid_query",
                message: format!("limit must be a whole number from 1 to {max}"),
                fields: vec![crate::domain::FieldError {
                    field: "limit".into(),
                    message: format!("must be 1 to {max}"),
                }],
            }),
        },
    }
}

/// `GET /v1/account`: who the key belongs to, and the account SID the Twilio dialect knows it by.
async fn account(Tenant(tenant): Tenant) -> Json<serde_json::Value> {
    let sid = crate::dialects::twilio::account_sid(tenant.as_str());
    Json(json!({"tenant_id": tenant, "twilio_account_sid": sid}))
}

/// `GET /v1/outbox`: what the sandbox provider recorded for the caller's tenant.
async fn outbox(
    State(h): State<Arc<Herald>>,
    Tenant(tenant): Tenant,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(outbox) = &h.outbox else {
        return Err(ApiError::NotFound("the outbox exists only when the sandbox provider is in use".into()));
    };
    let limit = limit_param(&q, 100, 1000)?;
    let entries = outbox
        .list_outbox(&tenant, q.get("request_id").map(String::as_str), q.get("after").map(String::as_str), limit)
        .await?;
    let next = (entries.len() as u32 == limit).then(|| entries.last().map(|e| e.id.clone())).flatten();
    Ok(Json(json!({"messages": entries, "next_cursor": next})))
}
