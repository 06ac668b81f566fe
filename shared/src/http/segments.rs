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
use super::schema::{native as doc, BodyRefusals, Missing, Refusals};
use crate::app::Herald;
use crate::domain::segment::MAX_MEMBER_PAGE;
use crate::domain::{MembersBody, Segment};
use crate::service::segments::{self as uc, SegmentsError};
use utoipa_axum::{router::OpenApiRouter, routes};

type H = State<Arc<Herald>>;

pub(super) fn routes() -> OpenApiRouter<Arc<Herald>> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(put, get, delete)).routes(routes!(
        add_members,
        list_members,
        remove_members
    ))
}

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

#[utoipa::path(put, path = "/v1/segments/{id}", operation_id = "put_segment", tag = "native", security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path)), request_body = doc::SegmentBody,
    responses((status = 200, description = "Renamed", body = doc::Segment), (status = 201, description = "Created", body = doc::Segment),
        Refusals, BodyRefusals))]
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

#[utoipa::path(get, path = "/v1/segments/{id}", operation_id = "get_segment", tag = "native", security(("bearer" = []), ("api_key" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The segment and its member count", body = doc::SegmentView), Refusals, Missing))]
pub async fn get(State(h): H, Tenant(t): Tenant, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let (segment, count) = uc::get_segment(h.segments.as_ref(), &t, &id).await?;
    Ok(Json(view(&segment, count)))
}

#[utoipa::path(get, path = "/v1/segments", operation_id = "list_segments", tag = "native", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Every segment of the tenant", body = doc::SegmentList), Refusals))]
pub async fn list(State(h): H, Tenant(t): Tenant) -> Result<Json<Value>, ApiError> {
    let all = uc::list_segments(h.segments.as_ref(), &t).await?;
    Ok(Json(json!({"segments": all.iter().map(|(s, n)| view(s, *n)).collect::<Vec<_>>()})))
}

#[utoipa::path(delete, path = "/v1/segments/{id}", operation_id = "delete_segment", tag = "native", security(("bearer" = []), ("api_key" = [])), params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), Refusals, Missing))]
pub async fn delete(State(h): H, Tenant(t): Tenant, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    match h.segments.delete_segment(&t, &id).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::NotFound("no such segment".into())),
    }
}

#[utoipa::path(post, path = "/v1/segments/{id}/members", tag = "native", security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path)), request_body = doc::MembersBody,
    responses((status = 200, description = "Added (contacts given by identifiers are found or created)", body = doc::MembersAdded),
        Refusals, BodyRefusals, Missing))]
pub async fn add_members(
    State(h): H,
    Tenant(t): Tenant,
    Path(id): Path<String>,
    JsonBytes(b): JsonBytes,
) -> Result<Json<uc::Added>, ApiError> {
    let body: MembersBody = parse_json(&b)?;
    Ok(Json(uc::add_members(h.segments.as_ref(), h.contacts.as_ref(), &t, &id, body).await?))
}

#[utoipa::path(delete, path = "/v1/segments/{id}/members", tag = "native", security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path)), request_body = doc::MembersBody,
    responses((status = 200, description = "Removed", body = doc::MembersRemoved), Refusals, BodyRefusals, Missing))]
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

#[utoipa::path(get, path = "/v1/segments/{id}/members", tag = "native", security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Members in the page (100)"),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page")),
    responses((status = 200, description = "A page of member contact ids", body = doc::MemberPage), Refusals, Missing))]
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
