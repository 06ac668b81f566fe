//! `/v1/imports`: CSV files of contacts added to a segment, imported in the background.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

use super::error::ApiError;
use super::extract::Tenant;
use super::limit_param;
use super::schema::{native as doc, Missing, NotHere, Refusals};
use crate::app::Herald;
use crate::domain::ids::check_id;
use crate::domain::FieldError;
use crate::service::imports::{self as uc, ImportError};
use utoipa_axum::{router::OpenApiRouter, routes};

type H = State<Arc<Herald>>;

pub(super) fn routes() -> OpenApiRouter<Arc<Herald>> {
    OpenApiRouter::new().routes(routes!(create, list)).routes(routes!(get))
}

/// The import context, or the answer for a deployment without a file store for imports.
fn imports(h: &Herald) -> Result<&uc::ImportRun, ApiError> {
    h.imports.as_deref().ok_or_else(|| ApiError::Refused {
        status: StatusCode::NOT_IMPLEMENTED,
        code: "not_implemented",
        message: "CSV imports are not available in this deployment".into(),
    })
}

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::TooLarge(max) => ApiError::Refused {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                code: "payload_too_large",
                message: format!("the file is larger than {max} bytes, the most one import takes"),
            },
            ImportError::Body(why) => ApiError::BadRequest { code: "body_incomplete", message: why, fields: vec![] },
            ImportError::Service(s) => s.into(),
        }
    }
}

fn is_csv(headers: &HeaderMap) -> bool {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    ct.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("text/csv"))
}

/// `POST /v1/imports?segment_id=ID` with a `text/csv` body: `202` once the file is stored.
#[utoipa::path(post, path = "/v1/imports", operation_id = "create_import", tag = "native", security(("bearer" = []), ("api_key" = [])),
    params(("segment_id" = String, Query, description = "The segment the file's contacts join")),
    request_body(content = String, content_type = "text/csv", description = "A header line, then one contact a line"),
    responses((status = 202, description = "Stored; imported in the background", body = doc::Import,
            headers(("Location" = String, description = "The import's URL"))),
        Refusals, NotHere,
        (status = 408, description = "The file came too slowly", body = super::schema::ErrorBody),
        (status = 413, description = "The file is larger than one import takes", body = super::schema::ErrorBody),
        (status = 415, description = "The body is not `text/csv`", body = super::schema::ErrorBody),
        (status = 422, description = "`segment_id` is missing or not an id", body = super::schema::ErrorBody),
        (status = 404, description = "No such segment", body = super::schema::ErrorBody)))]
pub async fn create(
    State(h): H,
    Tenant(t): Tenant,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let segment_id = q.get("segment_id").map(String::as_str).unwrap_or("");
    if let Err(m) = check_id(segment_id) {
        let message = if segment_id.is_empty() { "is required".to_string() } else { m };
        return Err(ApiError::Validation(vec![FieldError { field: "segment_id".into(), message }]));
    }
    if !is_csv(&headers) {
        return Err(ApiError::Refused {
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: "unsupported_media_type",
            message: "send the file as CSV with Content-Type: text/csv".into(),
        });
    }
    let stream = body.into_data_stream().map_err(std::io::Error::other).boxed();
    let import = uc::start(imports(&h)?, &t, segment_id, stream).await?;
    let location = format!("/v1/imports/{}", import.id);
    Ok((StatusCode::ACCEPTED, [(header::LOCATION, location)], Json(import.to_json())).into_response())
}

#[utoipa::path(get, path = "/v1/imports/{id}", operation_id = "get_import", tag = "native", security(("bearer" = []), ("api_key" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The import and its progress", body = doc::Import), Refusals, Missing, NotHere))]
pub async fn get(State(h): H, Tenant(t): Tenant, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    match imports(&h)?.imports.get_import(&t, &id).await? {
        Some(import) => Ok(Json(import.to_json())),
        None => Err(ApiError::NotFound("no such import".into())),
    }
}

#[utoipa::path(get, path = "/v1/imports", operation_id = "list_imports", tag = "native", security(("bearer" = []), ("api_key" = [])),
    params(("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "At most this many (20)")),
    responses((status = 200, description = "The tenant's imports, newest first", body = doc::ImportList), Refusals, NotHere))]
pub async fn list(
    State(h): H,
    Tenant(t): Tenant,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit_param(&q, 20, 100)?;
    let all = imports(&h)?.imports.list_imports(&t, limit).await?;
    Ok(Json(json!({"imports": all.iter().map(|i| i.to_json()).collect::<Vec<_>>()})))
}
