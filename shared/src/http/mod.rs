//! The whole HTTP API as one `axum::Router`. `herald serve` serves it on a socket; the ingest
//! Lambda serves the very same router through `lambda_http`.

mod broadcasts;
mod catalog;
pub mod error;
mod events;
pub mod extract;
mod idempotency;
pub mod request_target;
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
pub use idempotency::fingerprint;
pub(crate) use idempotency::{idempotent, idempotent_with};

/// Builds the router over a wired [`Herald`].
pub fn router(h: Arc<Herald>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/broadcasts", axum::routing::post(broadcasts::create))
        .route("/v1/broadcasts/{request_id}", get(broadcasts::get))
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
        .route("/v1/outbox", get(outbox))
        .route("/v1/webhook", put(webhook::put).get(webhook::get).delete(webhook::delete))
        .route("/v1/providers/{provider}/events", get(events::verify).post(events::receive))
        .merge(crate::dialects::routes())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::Internal("a handler panicked".into()).into_response()
        }))
        .with_state(h)
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
