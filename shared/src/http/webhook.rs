//! `PUT/GET/DELETE /v1/webhook`: the tenant's own endpoint for the `webhook` channel (bot
//! backends, CSML flow triggers). The signing secret is shown once, when it is made.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

use super::error::ApiError;
use super::extract::{parse_json, JsonBytes, Tenant};
use super::schema::{native as doc, BodyRefusals, Missing, Refusals};
use crate::app::Herald;
use crate::net::ssrf;
use crate::ports::WebhookEndpoint;
use crate::providers::webhook::new_secret;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(super) fn routes() -> OpenApiRouter<Arc<Herald>> {
    OpenApiRouter::new().routes(routes!(put, get, delete))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    url: String,
}

#[utoipa::path(put, path = "/v1/webhook", operation_id = "put_webhook", tag = "native", security(("bearer" = []), ("api_key" = [])),
    params(("rotate_secret" = Option<bool>, Query, description = "`true` makes a new signing secret")),
    request_body = doc::WebhookBody,
    responses((status = 200, description = "Updated", body = doc::Webhook), (status = 201, description = "Set", body = doc::Webhook),
        Refusals, BodyRefusals))]
pub async fn put(
    State(h): State<Arc<Herald>>,
    Tenant(tenant): Tenant,
    Query(q): Query<HashMap<String, String>>,
    JsonBytes(b): JsonBytes,
) -> Result<Response, ApiError> {
    let body: Body = parse_json(&b)?;
    if body.url.len() > 2048 {
        return Err(ApiError::field("url", "must be at most 2048 characters"));
    }
    let url = ssrf::check_url(&body.url, h.settings.allow_loopback_urls).map_err(|e| ApiError::field("url", e.0))?;
    if let Err(e) = ssrf::check_resolved(&url, h.settings.allow_loopback_urls).await {
        return Err(ApiError::field("url", e.0));
    }
    let rotate = q.get("rotate_secret").is_some_and(|v| v == "true");
    let now = crate::domain::now();
    let existing = h.webhooks.get_webhook(&tenant).await?;
    let (secret, created_at, new_secret_made) = match existing {
        Some(e) if !rotate => (e.secret, e.created_at, false),
        Some(e) => (new_secret(), e.created_at, true),
        None => (new_secret(), now, true),
    };
    let endpoint = WebhookEndpoint { url: url.to_string(), secret, created_at, updated_at: now };
    h.webhooks.put_webhook(&tenant, &endpoint).await?;
    let mut answer = json!({"url": endpoint.url, "created_at": endpoint.created_at, "updated_at": endpoint.updated_at});
    if new_secret_made {
        // Shown once: Herald keeps it to sign with, and never returns it again.
        answer["secret"] = json!(endpoint.secret);
    }
    let status = if created_at == now { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(answer)).into_response())
}

#[utoipa::path(get, path = "/v1/webhook", operation_id = "get_webhook", tag = "native", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The endpoint (never its secret)", body = doc::Webhook), Refusals, Missing))]
pub async fn get(State(h): State<Arc<Herald>>, Tenant(tenant): Tenant) -> Result<Response, ApiError> {
    match h.webhooks.get_webhook(&tenant).await? {
        Some(e) => {
            Ok(Json(json!({"url": e.url, "created_at": e.created_at, "updated_at": e.updated_at})).into_response())
        }
        None => Err(ApiError::NotFound("no webhook endpoint is set; PUT /v1/webhook sets one".into())),
    }
}

#[utoipa::path(delete, path = "/v1/webhook", operation_id = "delete_webhook", tag = "native", security(("bearer" = []), ("api_key" = [])),
    responses((status = 204, description = "Removed"), Refusals, Missing))]
pub async fn delete(State(h): State<Arc<Herald>>, Tenant(tenant): Tenant) -> Result<StatusCode, ApiError> {
    if h.webhooks.delete_webhook(&tenant).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("no webhook endpoint is set".into()))
    }
}
