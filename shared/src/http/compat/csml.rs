//! CSML Studio's Broadcasts API over HTTP; the translation is `dialects::csml`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::Arc;

use super::with_request_id;
use crate::app::Herald;
use crate::dialects::csml::{answer, plan_bytes, RENAMES};
use crate::dialects::rename;
use crate::domain::TenantId;
use crate::http::error::ApiError;
use crate::http::extract::{JsonBytes, Tenant};
use crate::http::idempotency::{sending, Input, NATIVE};
use crate::http::schema::{dialects as doc, BodyRefusals, Refusals, SendRefusals};
use crate::service::ingest::ingest;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(super) fn routes(h: &Arc<Herald>) -> OpenApiRouter<Arc<Herald>> {
    sending(OpenApiRouter::new().routes(routes!(send)), h, NATIVE, Input::JsonBody { owner: None })
}

/// A flow trigger to the contact whose `webhook_user_id` is `client.user_id`.
#[utoipa::path(post, path = "/compat/csml/v1/api/broadcasts", operation_id = "csml_send_broadcast", tag = "csml", security(("api_key" = []), ("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header)),
    request_body = doc::CsmlBody,
    responses(
        (status = 200, description = "Queued", body = doc::CsmlAnswer,
            headers(("herald-request-id" = String, description = "The native request id"))),
        Refusals, BodyRefusals, SendRefusals))]
async fn send(State(h): State<Arc<Herald>>, Tenant(tenant): Tenant, JsonBytes(body): JsonBytes) -> Response {
    run(&h, &tenant, &body).await.unwrap_or_else(IntoResponse::into_response)
}

async fn run(h: &Herald, tenant: &TenantId, body: &[u8]) -> Result<Response, ApiError> {
    let plan = plan_bytes(body)?;
    let source = plan.source.clone();
    let user_id = plan.recipients.first().and_then(|r| r.webhook_user_id.clone());
    let accepted = ingest(&h.ingest, tenant, plan, "csml").await.map_err(|e| rename(e.into(), RENAMES))?;
    let answer = answer(tenant, &source, user_id.as_deref(), &accepted.request)?;
    Ok(with_request_id((StatusCode::OK, Json(answer)).into_response(), &accepted.request.id))
}
