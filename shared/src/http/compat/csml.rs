//! CSML Studio's Broadcasts API over HTTP; the translation is `dialects::csml`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use std::sync::Arc;

use super::with_request_id;
use crate::app::Herald;
use crate::dialects::csml::{answer, plan_bytes, RENAMES};
use crate::dialects::rename;
use crate::domain::TenantId;
use crate::http::error::ApiError;
use crate::http::extract::{JsonBytes, Tenant};
use crate::http::idempotency::{sending, Input, NATIVE};
use crate::service::ingest::ingest;

const PATH: &str = "/compat/csml/v1/api/broadcasts";

pub(super) fn routes(h: &Arc<Herald>) -> Router<Arc<Herald>> {
    sending(Router::new().route(PATH, post(send)), h, NATIVE, Input::JsonBody { owner: None })
}

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
