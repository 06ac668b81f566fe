//! Invent's "Send a Transactional Broadcast" over HTTP; the translation is `dialects::invent`.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

use super::with_request_id;
use crate::app::Herald;
use crate::dialects::invent::{self, recipient_json, RENAMES};
use crate::dialects::rename;
use crate::domain::TenantId;
use crate::domain::{Contact, ContactKey, RecipientRow, SendPlan};
use crate::http::error::ApiError;
use crate::http::extract::{JsonBytes, Tenant};
use crate::http::idempotency::{sending, Input, NATIVE};
use crate::http::schema::{dialects as doc, BodyRefusals, Refusals, SendRefusals};
use crate::ports::{MembersError, StoreError};
use crate::service::ingest::{ingest, Accepted};
use utoipa_axum::{router::OpenApiRouter, routes};

pub(super) fn routes(h: &Arc<Herald>) -> OpenApiRouter<Arc<Herald>> {
    sending(OpenApiRouter::new().routes(routes!(send)), h, NATIVE, Input::JsonBody { owner: Some("org_id") })
}

/// "Send a Transactional Broadcast": the broadcast is a Herald campaign, the org the tenant.
#[utoipa::path(post, path = "/compat/invent/orgs/{org_id}/broadcasts/{broadcast_id}/send", operation_id = "invent_send_broadcast", tag = "invent",
    security(("bearer" = []), ("api_key" = [])),
    params(("org_id" = String, Path, description = "The tenant id"), ("broadcast_id" = String, Path, description = "A campaign id"),
        ("Idempotency-Key" = Option<String>, Header)),
    request_body = doc::InventBody,
    responses(
        (status = 200, description = "Sent (or queued, `background: true`): each row as Invent's recipient", body = doc::InventAnswer,
            headers(("herald-request-id" = String, description = "The native request id"))),
        (status = 404, description = "No such org for this key, or no such broadcast", body = crate::http::schema::ErrorBody),
        Refusals, BodyRefusals, SendRefusals))]
async fn send(
    State(h): State<Arc<Herald>>,
    Tenant(tenant): Tenant,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBytes(body): JsonBytes,
) -> Response {
    // A path axum cannot read (bad percent-encoding) is answered in JSON like every other error.
    let Ok(Path((org_id, broadcast_id))) = path else {
        return ApiError::NotFound("no such org or broadcast".into()).into_response();
    };
    if org_id != tenant {
        // The same answer whether or not the org exists: a key cannot probe for other tenants.
        return ApiError::NotFound(format!("no org \"{org_id}\"")).into_response();
    }
    run(&h, &tenant, &broadcast_id, &body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn run(h: &Herald, tenant: &TenantId, broadcast_id: &str, body: &[u8]) -> Result<Response, ApiError> {
    let plan = plan(h, tenant, broadcast_id, body).await?;
    let accepted = ingest(&h.ingest, tenant, plan, "invent").await.map_err(|e| rename(e.into(), RENAMES))?;
    let recipients = broadcast_recipients(h, tenant, &accepted).await?;
    let answer = (StatusCode::OK, Json(json!({ "recipients": recipients }))).into_response();
    Ok(with_request_id(answer, &accepted.request.id))
}

/// The body as a native plan for the broadcast (campaign) `broadcast_id`.
pub(crate) async fn plan(h: &Herald, tenant: &TenantId, broadcast_id: &str, body: &[u8]) -> Result<SendPlan, ApiError> {
    let b = invent::read(body)?;
    let Some(campaign) = h.catalog.get_campaign(tenant, broadcast_id).await? else {
        return Err(ApiError::NotFound(format!("no broadcast \"{broadcast_id}\"")));
    };
    invent::plan(b, campaign.id)
}

/// Each row as Invent's `BroadcastRecipient`, each contact and each segment read once.
async fn broadcast_recipients(h: &Herald, tenant: &TenantId, accepted: &Accepted) -> Result<Vec<Value>, ApiError> {
    let mut contacts: HashMap<String, Option<(Contact, Vec<Value>)>> = HashMap::new();
    let mut segments: HashMap<String, Option<Value>> = HashMap::new();
    let mut out = Vec::with_capacity(accepted.rows.len());
    for row in &accepted.rows {
        let contact = match contact_id_of(h, tenant, row).await? {
            Some(id) => match contacts.get(&id) {
                Some(c) => c.clone(),
                None => {
                    let c = match h.contacts.get_contact(tenant, &id).await? {
                        Some(c) => Some((c, contact_segments(h, tenant, &id, &mut segments).await?)),
                        None => None,
                    };
                    contacts.insert(id, c.clone());
                    c
                }
            },
            None => None,
        };
        out.push(recipient_json(&accepted.request, row, contact.as_ref().map(|(c, s)| (c, s.as_slice()))));
    }
    Ok(out)
}

/// The segments contact `id` is in, as Invent's `Segment`s (each read once per answer).
async fn contact_segments(
    h: &Herald,
    tenant: &TenantId,
    id: &str,
    seen: &mut HashMap<String, Option<Value>>,
) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    for segment_id in h.segments.segments_of(tenant, id).await? {
        if !seen.contains_key(&segment_id) {
            let found = match h.segments.get_segment(tenant, &segment_id).await? {
                Some(seg) => match h.segments.member_count(tenant, &segment_id).await {
                    Ok(n) => Some(invent::segment_json(&seg, n)),
                    // Deleted since `segments_of` answered: not one of the contact's any more.
                    Err(MembersError::NoSegment) => None,
                    Err(MembersError::BadCursor(e)) => return Err(StoreError::Corrupt(e).into()),
                    Err(MembersError::Store(e)) => return Err(e.into()),
                },
                None => None,
            };
            seen.insert(segment_id.clone(), found);
        }
        out.extend(seen[&segment_id].clone());
    }
    Ok(out)
}

/// The contact a row is for. A queued row (`background: true`) may not have resolved a new
/// phone or email yet; then an existing contact holding it is shown, else none.
async fn contact_id_of(h: &Herald, tenant: &TenantId, row: &RecipientRow) -> Result<Option<String>, ApiError> {
    if row.contact_id.is_some() {
        return Ok(row.contact_id.clone());
    }
    let spec = &row.recipient;
    let named = spec.contact_id.clone().or_else(|| {
        spec.contact_channel_id.as_deref().and_then(Contact::parse_channel_id).map(|(id, _)| id.to_string())
    });
    // A named contact that does not exist (yet) leaves the row to find-or-create by phone or email.
    if let Some(id) = named {
        if h.contacts.get_contact(tenant, &id).await?.is_some() {
            return Ok(Some(id));
        }
    }
    let keys = spec.phone.clone().map(ContactKey::Phone).into_iter().chain(spec.email.clone().map(ContactKey::Email));
    for key in keys {
        if let Some(c) = h.contacts.find_contact(tenant, &key).await? {
            return Ok(Some(c.id));
        }
    }
    Ok(None)
}
