//! `/v1/event-subscriptions`: where a tenant's status events go (`service::events` posts them).
//! The signing secret is shown once, when the subscription is created; another tenant's
//! subscription is answered as unknown.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

use super::error::ApiError;
use super::extract::{parse_json, JsonBytes, Tenant};
use super::limit_param;
use super::schema::{native as doc, BodyRefusals, Missing, NotHere, Refusals};
use crate::app::Herald;
use crate::domain::events::{EventSubscription, SubscriptionBody};
use crate::net::ssrf;
use crate::providers::webhook::new_secret;
use crate::service::events::Events;
use utoipa_axum::{router::OpenApiRouter, routes};

type H = State<Arc<Herald>>;

pub(super) fn routes() -> OpenApiRouter<Arc<Herald>> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(put, get, delete))
        .routes(routes!(failures))
        .routes(routes!(redeliver))
}

fn events(h: &Herald) -> Result<&Events, ApiError> {
    h.events.as_deref().ok_or_else(|| ApiError::Refused {
        status: StatusCode::NOT_IMPLEMENTED,
        code: "not_available",
        message: "status events are not available in this deployment".into(),
    })
}

fn unknown(id: &str) -> ApiError {
    ApiError::NotFound(format!("no event subscription \"{id}\""))
}

#[utoipa::path(put, path = "/v1/event-subscriptions/{id}", operation_id = "put_event_subscription", tag = "native", security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path)), request_body = doc::SubscriptionBody,
    responses((status = 200, description = "Replaced", body = doc::Subscription),
        (status = 201, description = "Created, with its signing secret", body = doc::Subscription),
        Refusals, BodyRefusals, NotHere))]
pub async fn put(
    State(h): H,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    JsonBytes(b): JsonBytes,
) -> Result<Response, ApiError> {
    let ev = events(&h)?;
    let body: SubscriptionBody = parse_json(&b)?;
    body.check(&id)?;
    // The webhook channel's rules: public addresses only (loopback only when the operator allows it).
    let url = ssrf::check_url(&body.url, h.settings.allow_loopback_urls).map_err(|e| ApiError::field("url", e.0))?;
    if let Err(e) = ssrf::check_resolved(&url, h.settings.allow_loopback_urls).await {
        return Err(ApiError::field("url", e.0));
    }
    let now = crate::domain::now();
    let sub = EventSubscription {
        id,
        url: url.to_string(),
        events: body.events,
        secret: new_secret(),
        created_at: now,
        updated_at: now,
    };
    let (stored, created) = ev.store.put_subscription(&tenant, &sub).await?;
    ev.forget(&tenant);
    let mut answer = stored.to_json();
    if created {
        // Shown once: Herald keeps it to sign with, and never returns it again.
        answer["secret"] = json!(stored.secret);
        return Ok((StatusCode::CREATED, Json(answer)).into_response());
    }
    Ok(Json(answer).into_response())
}

#[utoipa::path(get, path = "/v1/event-subscriptions/{id}", operation_id = "get_event_subscription", tag = "native", security(("bearer" = []), ("api_key" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The subscription (never its secret)", body = doc::Subscription),
        Refusals, Missing, NotHere))]
pub async fn get(State(h): H, Tenant(tenant): Tenant, Path(id): Path<String>) -> Result<Response, ApiError> {
    match events(&h)?.store.get_subscription(&tenant, &id).await? {
        Some(s) => Ok(Json(s.to_json()).into_response()),
        None => Err(unknown(&id)),
    }
}

#[utoipa::path(get, path = "/v1/event-subscriptions", operation_id = "list_event_subscriptions", tag = "native", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Every subscription of the tenant", body = doc::SubscriptionList), Refusals, NotHere))]
pub async fn list(State(h): H, Tenant(tenant): Tenant) -> Result<Response, ApiError> {
    let subs = events(&h)?.store.list_subscriptions(&tenant).await?;
    let subs: Vec<_> = subs.iter().map(EventSubscription::to_json).collect();
    Ok(Json(json!({"subscriptions": subs})).into_response())
}

#[utoipa::path(delete, path = "/v1/event-subscriptions/{id}", operation_id = "delete_event_subscription", tag = "native", security(("bearer" = []), ("api_key" = [])), params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), Refusals, Missing, NotHere))]
pub async fn delete(State(h): H, Tenant(tenant): Tenant, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let ev = events(&h)?;
    let gone = ev.store.delete_subscription(&tenant, &id).await?;
    ev.forget(&tenant);
    if gone {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(unknown(&id))
    }
}

/// `GET …/{id}/failures`: events that used up their retries, oldest first.
#[utoipa::path(get, path = "/v1/event-subscriptions/{id}/failures", operation_id = "list_event_failures", tag = "native", security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path), ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "At most this many (100)")),
    responses((status = 200, description = "Events that used up their retries, oldest first", body = doc::FailureList),
        Refusals, Missing, NotHere))]
pub async fn failures(
    State(h): H,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let ev = events(&h)?;
    let limit = limit_param(&q, 100, 1000)?;
    if ev.store.get_subscription(&tenant, &id).await?.is_none() {
        return Err(unknown(&id));
    }
    let failures = ev.store.list_failures(&tenant, &id, limit).await?;
    let failures: Vec<_> = failures.iter().map(|f| f.to_json()).collect();
    Ok(Json(json!({"failures": failures})).into_response())
}

/// `POST …/{id}/failures/{event_id}/redeliver`: the event goes out again, from its first attempt.
#[utoipa::path(post, path = "/v1/event-subscriptions/{id}/failures/{event_id}/redeliver", operation_id = "redeliver_event", tag = "native", security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path), ("event_id" = String, Path)),
    responses((status = 202, description = "Queued again, from its first attempt", body = doc::Redelivered),
        Refusals, Missing, NotHere))]
pub async fn redeliver(
    State(h): H,
    Tenant(tenant): Tenant,
    Path((id, event_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let ev = events(&h)?;
    if crate::service::events::redeliver(ev, &tenant, &id, &event_id).await? {
        Ok((StatusCode::ACCEPTED, Json(json!({"event_id": event_id, "queued": true}))).into_response())
    } else {
        Err(ApiError::NotFound(format!("subscription \"{id}\" has no failed event \"{event_id}\"")))
    }
}
