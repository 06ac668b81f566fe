//! Pabbly Chatflow's Broadcasts API over HTTP; the translation is `dialects::pabbly`. Each
//! handler looks up what the body names, then lets the dialect build the plan from it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Map, Value};
use std::sync::Arc;

use super::{campaigns_named, require_segments, with_request_id};
use crate::app::Herald;
use crate::dialects::pabbly::{self, adds_a_campaign, whatsapp_answer, SendFound};
use crate::dialects::pabbly::{BROADCAST_RENAMES, CAMPAIGN_RENAMES, SEND_RENAMES};
use crate::dialects::{dialling_phone, rename};
use crate::domain::TenantId;
use crate::domain::{ContactKey, SendPlan};
use crate::http::error::ApiError;
use crate::http::extract::{JsonBytes, Tenant};
use crate::http::idempotency::{sending, Input, NATIVE};
use crate::http::schema::{dialects as doc, BodyRefusals, ErrorBody, Refusals, SendRefusals};
use crate::service::catalog::create_campaign;
use crate::service::ingest::{ingest, Accepted};
use utoipa_axum::{router::OpenApiRouter, routes};

pub(super) fn routes(h: &Arc<Herald>) -> OpenApiRouter<Arc<Herald>> {
    let routes = OpenApiRouter::new().routes(routes!(send)).routes(routes!(broadcast)).routes(routes!(add_campaign));
    sending(routes, h, NATIVE, Input::JsonBody { owner: None })
}

/// "Send message": one template message to one number, under an API campaign's name if given.
#[utoipa::path(post, path = "/compat/pabbly/api/v1/broadcasts/send", operation_id = "pabbly_send_message", tag = "pabbly", security(("bearer" = []), ("api_key" = [])),
    params(("Idempotency-Key" = Option<String>, Header)),
    request_body = doc::PabblySend,
    responses(
        (status = 200, description = "Sent", body = doc::PabblyAnswer,
            headers(("herald-request-id" = String, description = "The native request id"))),
        (status = 404, description = "A campaign or template it names does not exist", body = ErrorBody),
        Refusals, BodyRefusals, SendRefusals))]
async fn send(State(h): State<Arc<Herald>>, Tenant(t): Tenant, JsonBytes(b): JsonBytes) -> Response {
    send_run(&h, &t, &b).await.unwrap_or_else(IntoResponse::into_response)
}

/// A broadcast to numbers or segments; or, with `campaignName` and `templateNames`, adds an API campaign.
#[utoipa::path(post, path = "/compat/pabbly/api/v1/broadcasts", operation_id = "pabbly_broadcast", tag = "pabbly", security(("bearer" = []), ("api_key" = [])),
    params(("Idempotency-Key" = Option<String>, Header)),
    request_body = doc::PabblyBroadcast,
    responses(
        (status = 200, description = "Sent", body = doc::PabblyAnswer,
            headers(("herald-request-id" = String, description = "The native request id"))),
        (status = 201, description = "An API campaign added", body = doc::PabblyCampaignAnswer),
        (status = 404, description = "A template or segment it names does not exist", body = ErrorBody),
        Refusals, BodyRefusals, SendRefusals))]
async fn broadcast(State(h): State<Arc<Herald>>, Tenant(t): Tenant, JsonBytes(b): JsonBytes) -> Response {
    let run = if adds_a_campaign(&b) { add_campaign_run(&h, &t, &b).await } else { broadcast_run(&h, &t, &b).await };
    run.unwrap_or_else(IntoResponse::into_response)
}

/// "Add API Campaign": templates a send may fire under the campaign's (unique) name.
#[utoipa::path(post, path = "/compat/pabbly/api/v1/broadcasts/api-campaigns", operation_id = "pabbly_add_api_campaign", tag = "pabbly", security(("bearer" = []), ("api_key" = [])),
    params(("Idempotency-Key" = Option<String>, Header)),
    request_body = doc::PabblyCampaign,
    responses(
        (status = 201, description = "Added", body = doc::PabblyCampaignAnswer),
        Refusals, BodyRefusals, SendRefusals,
        // After SendRefusals, whose 409 it replaces: this route's 409 has a reason more.
        (status = 409, description = "An API campaign of that name exists, or the Idempotency-Key is taken", body = ErrorBody)))]
async fn add_campaign(State(h): State<Arc<Herald>>, Tenant(t): Tenant, JsonBytes(b): JsonBytes) -> Response {
    add_campaign_run(&h, &t, &b).await.unwrap_or_else(IntoResponse::into_response)
}

/// The seed's answer, with the native request id.
fn answer(accepted: &Accepted, contacts: Vec<Value>, extra: Map<String, Value>) -> Response {
    let body = whatsapp_answer(accepted, contacts, extra);
    with_request_id((StatusCode::OK, Json(body)).into_response(), &accepted.request.id)
}

async fn send_run(h: &Herald, tenant: &TenantId, body: &[u8]) -> Result<Response, ApiError> {
    let (plan, contacts) = send_plan(h, tenant, body).await?;
    let accepted = ingest(&h.ingest, tenant, plan, "pabbly").await.map_err(|e| rename(e.into(), SEND_RENAMES))?;
    Ok(answer(&accepted, contacts, Map::new()))
}

/// A "send message" body as a native plan, with the `contacts` its answer lists.
pub(crate) async fn send_plan(h: &Herald, tenant: &TenantId, body: &[u8]) -> Result<(SendPlan, Vec<Value>), ApiError> {
    let b = pabbly::read_send(body)?;
    let campaigns = match &b.campaign_name {
        Some(name) => campaigns_named(h, tenant, name).await?,
        None => Vec::new(),
    };
    let template = match &b.template_name {
        Some(name) => h.catalog.get_template(tenant, name).await?,
        None => None,
    };
    let contact = match b.destination.as_deref().and_then(|d| dialling_phone(d).ok()) {
        Some(phone) => h.contacts.find_contact(tenant, &ContactKey::Phone(phone)).await?,
        None => None,
    };
    pabbly::send_plan(b, SendFound { campaigns, template, contact })
}

async fn broadcast_run(h: &Herald, tenant: &TenantId, body: &[u8]) -> Result<Response, ApiError> {
    let b = pabbly::read_broadcast(body)?;
    let template = match &b.template_name {
        Some(name) => h.catalog.get_template(tenant, name).await?,
        None => None,
    };
    // Known numbers are looked up a few at a time: a broadcast may name a thousand.
    let contacts: Vec<_> = futures::stream::iter(pabbly::broadcast_phones(&b))
        .map(|p| async move { h.contacts.find_contact(tenant, &ContactKey::Phone(p)).await })
        .buffered(16)
        .try_collect()
        .await?;
    let (plan, shown, name) = pabbly::broadcast_plan(b, template, contacts)?;
    if let Some(audience) = &plan.audience {
        require_segments(h, tenant, audience).await?;
    }
    let accepted = ingest(&h.ingest, tenant, plan, "pabbly").await.map_err(|e| rename(e.into(), BROADCAST_RENAMES))?;
    let extra = pabbly::broadcast_data(&accepted, name);
    Ok(answer(&accepted, shown, extra))
}

/// Adds an API campaign. Its name must be unique, since sends find it by name: its id is
/// derived from the name and created only if free, so of racing adds of one name exactly one
/// creates it.
async fn add_campaign_run(h: &Herald, tenant: &TenantId, body: &[u8]) -> Result<Response, ApiError> {
    let b = pabbly::read_campaign(body)?;
    let name = b.campaign_name.clone().unwrap_or_default();
    if b.campaign_name.is_some() && !campaigns_named(h, tenant, &name).await?.is_empty() {
        return Err(pabbly::campaign_exists(&name));
    }
    let id = pabbly::api_campaign_id(&name);
    let created = create_campaign(h.catalog.as_ref(), tenant, &id, pabbly::campaign_body(b))
        .await
        .map_err(|e| rename(e.into(), CAMPAIGN_RENAMES))?;
    let Some(c) = created else { return Err(pabbly::campaign_exists(&name)) };
    Ok((StatusCode::CREATED, Json(pabbly::campaign_answer(&c))).into_response())
}
