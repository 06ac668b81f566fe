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
mod schema;
mod segments;
pub mod server;
mod settings;
mod webhook;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::{Extension, Json, Router};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::Herald;
use error::ApiError;
use extract::Tenant;
use schema::native as doc;
use schema::Refusals;

pub use broadcasts::submit;
pub use compat::REQUEST_ID_HEADER;
pub use idempotency::fingerprint;

/// Builds the router over a wired [`Herald`].
pub fn router(h: Arc<Herald>) -> Router {
    let (routes, document) = api(&h).split_for_parts();
    let document = Arc::new(Document { api: document, json: std::sync::OnceLock::new() });
    routes
        .layer(Extension(document))
        // The dashboard's page and files: not API operations, so not in the document.
        .merge(dashboard::routes())
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::middleware::map_response(error_as_json))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::Internal("a handler panicked".into()).into_response()
        }))
        .with_state(h)
}

/// The OpenAPI document of [`router`]'s API, as `GET /openapi.json` serves it.
pub fn openapi(h: &Arc<Herald>) -> String {
    api(h).into_openapi().to_pretty_json().unwrap_or_default()
}

/// Every route, each with its description: `routes!` takes only handlers that carry a
/// `#[utoipa::path]`, so no route goes undocumented. A module of routes is one `merge` line.
fn api(h: &Arc<Herald>) -> OpenApiRouter<Arc<Herald>> {
    OpenApiRouter::with_openapi(schema::frame())
        .routes(routes!(healthz))
        .routes(routes!(openapi_json))
        .merge(broadcasts::routes(h))
        .merge(catalog::routes())
        .merge(segments::routes())
        .merge(imports::routes())
        .merge(account_routes())
        .merge(webhook::routes())
        .merge(settings::routes())
        .merge(events_api::routes())
        .merge(events::routes())
        .merge(dead_letters::routes())
        .merge(compat::routes(h))
}

fn account_routes() -> OpenApiRouter<Arc<Herald>> {
    OpenApiRouter::new().routes(routes!(outbox)).routes(routes!(account))
}

/// The served document, built with the router and written out on its first request: a Lambda
/// cold start does not pay for a text no one may ask for.
struct Document {
    api: utoipa::openapi::OpenApi,
    json: std::sync::OnceLock<String>,
}

/// `GET /openapi.json`: this document. No key: it describes the API, it holds nothing of a tenant.
#[utoipa::path(get, path = "/openapi.json", tag = "native",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = serde_json::Value)))]
async fn openapi_json(Extension(d): Extension<Arc<Document>>) -> impl IntoResponse {
    let json = d.json.get_or_init(|| d.api.to_pretty_json().unwrap_or_default());
    ([(axum::http::header::CONTENT_TYPE, "application/json")], json.clone())
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

/// `GET /healthz`: Herald is up. No key.
#[utoipa::path(get, path = "/healthz", tag = "native", responses((status = 200, description = "Up", body = doc::Health)))]
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
#[utoipa::path(get, path = "/v1/account", tag = "native", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The caller's tenant", body = doc::Account), Refusals))]
async fn account(Tenant(tenant): Tenant) -> Json<serde_json::Value> {
    let sid = crate::dialects::twilio::account_sid(tenant.as_str());
    Json(json!({"tenant_id": tenant, "twilio_account_sid": sid}))
}

/// `GET /v1/outbox`: what the sandbox provider recorded for the caller's tenant.
#[utoipa::path(get, path = "/v1/outbox", tag = "native", security(("bearer" = []), ("api_key" = [])),
    params(
        ("request_id" = Option<String>, Query, description = "Only this send request's messages"),
        ("after" = Option<String>, Query, description = "The `next_cursor` of the previous page"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "At most this many (100)"),
    ),
    responses((status = 200, description = "A page of the outbox, oldest first", body = doc::Outbox),
        Refusals, (status = 404, description = "This deployment has no sandbox outbox", body = schema::ErrorBody)))]
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
