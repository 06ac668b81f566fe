//! The drop-in dialects over HTTP: each vendor's routes under `/compat/...` and their handlers,
//! which read the stores and call the use cases; `crate::dialects` translates requests, answers
//! and errors. Every sending route goes through the idempotency layer with its vendor's error
//! shape.

pub(crate) mod csml;
pub(crate) mod invent;
pub(crate) mod pabbly;
pub(crate) mod smax;
pub(crate) mod twilio;

use axum::http::HeaderValue;
use axum::response::Response;
use std::sync::Arc;

use crate::app::Herald;
use crate::domain::TenantId;
use crate::domain::{Audience, Campaign};
use crate::http::error::ApiError;
use utoipa_axum::router::OpenApiRouter;

/// Every dialect's routes, merged into the main router.
pub(crate) fn routes(h: &Arc<Herald>) -> OpenApiRouter<Arc<Herald>> {
    OpenApiRouter::new()
        .merge(csml::routes(h))
        .merge(smax::routes(h))
        .merge(invent::routes(h))
        .merge(pabbly::routes(h))
        .merge(twilio::routes())
}

/// The header every dialect's send answer carries: the native request id, for
/// `GET /v1/broadcasts/{request_id}`, whatever the vendor's body has room for.
pub const REQUEST_ID_HEADER: &str = "herald-request-id";

/// Adds [`REQUEST_ID_HEADER`] to an answer.
fn with_request_id(mut response: Response, request_id: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    response
}

/// The tenant's campaigns with exactly this name (SMAX blocks and Pabbly API campaigns are
/// named by the caller; Herald names are not unique, so the caller decides what several mean).
async fn campaigns_named(h: &Herald, tenant: &TenantId, name: &str) -> Result<Vec<Campaign>, ApiError> {
    Ok(h.catalog.list_campaigns(tenant).await?.into_iter().filter(|c| c.name == name).collect())
}

/// Every segment an audience names must be the tenant's; the first that is not is named in a
/// `404` (ingest would refuse it too, without saying which).
async fn require_segments(h: &Herald, tenant: &TenantId, audience: &Audience) -> Result<(), ApiError> {
    for id in audience.segments.iter().chain(&audience.exclude_segments) {
        if h.segments.get_segment(tenant, id).await?.is_none() {
            return Err(ApiError::NotFound(format!("no segment \"{id}\"")));
        }
    }
    Ok(())
}
