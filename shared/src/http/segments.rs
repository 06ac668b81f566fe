//! `/v1/segments`: segments and their members. Another tenant's segment is answered as unknown.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

use super::error::ApiError;
use super::extract::{parse_json, JsonBytes, Tenant};
use super::limit_param;
use crate::app::Herald;
use crate::domain::segment::MAX_MEMBER_PAGE;
use crate::domain::{MembersBody, Segment};
use crate::service::segments::{self as uc, SegmentsError};

type H = State<Arc<Herald>>;

impl From<SegmentsError> for ApiError {
    fn from(e: SegmentsError) -> Self {
        match e {
            SegmentsError::BadRequest { code, message, fields } => {
                ApiError::BadRequest { code, message, fields: fields.0 }
            }
            SegmentsError::Service(s) => s.into(),
        }
    }
}

fn view(segment: &Segment, member_count: u64) -> Value {
    json!({
        "id": segment.id,
        "name": segment.name,
        "member_count": member_count,
        "created_at": segment.created_at,
        "updated_at": segment.updated_at,
    })
}

pub async fn put(
    State(h): H,
    Tenant(t): Tenant,
    Path(id): Path<String>,
    JsonBytes(b): JsonBytes,
) -> Result<Response, ApiError> {
    let (segment, created) = uc::put_segment(h.segments.as_ref(), &t, &id, parse_json(&b)?).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    // No member count: counting a large segment costs reads on AWS a rename should not pay.
    Ok((status, Json(segment)).into_response())
}

pub async fn get(State(h): H, Tenant(t): Tenant, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (segment, count) = uc::get_segment(h.segments.as_ref(), &t, &id).await?;
    Ok(Json(view(&segment, count)))
}

pub async fn list(State(h): H, Tenant(t): Tenant) -> Result<Json<Value>, ApiError> {
    let all = uc::list_segments(h.segments.as_ref(), &t).await?;
    Ok(Json(json!({"segments": all.iter().map(|(s, n)| view(s, *n)).collect::<Vec<_>>()})))
}

pub async fn delete(State(h): H, Tenant(t): Tenant, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    match h.segments.delete_segment(&t, &id).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::NotFound("no such segment".into())),
    }
}

pub async fn add_members(
    State(h): H,
    Tenant(t): Tenant,
    Path(id): Path<String>,
    JsonBytes(b): JsonBytes,
) -> Result<Json<uc::Added>, ApiError> {
    let body: MembersBody = parse_json(&b)?;
    Ok(Json(uc::add_members(h.segments.as_ref(), h.contacts.as_ref(), &t, &id, body).await?))
}

pub async fn remove_members(
    State(h): H,
    Tenant(t): Tenant,
    Path(id): Path<String>,
    JsonBytes(b): JsonBytes,
) -> Result<Json<Value>, ApiError> {
    let body: MembersBody = parse_json(&b)?;
    let removed = uc::remove_members(h.segments.as_ref(), h.contacts.as_ref(), &t, &id, body).await?;
    Ok(Json(json!({"removed": removed})))
}

pub async fn list_members(
    State(h): H,
    Tenant(t): Tenant,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit_param(&q, 100, MAX_MEMBER_PAGE)?;
    let cursor = q.get("cursor").map(String::as_str).filter(|c| !c.is_empty());
    let page = uc::list_members(h.segments.as_ref(), &t, &id, cursor, limit).await?;
    Ok(Json(json!({"contact_ids": page.contact_ids, "next_cursor": page.next_cursor})))
}
