//! `GET /v1/dead-letters` and `POST /v1/dead-letters/{id}/redrive`: the tenant's jobs the queue
//! gave up on, and putting one back (`service::dead_letters`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

use super::error::ApiError;
use super::extract::Tenant;
use super::limit_param;
use super::schema::{Missing, NotHere, Refusals};
use crate::app::Herald;
use crate::domain::FieldError;
use crate::ports::{DeadLetter, DeadLetterCursor, DeadLetters};
use crate::service::dead_letters as uc;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

/// Dead letters a page lists unless `limit` says otherwise, and at most.
const LIST_DEFAULT: u32 = 50;
const LIST_MAX: u32 = 200;

pub(crate) fn routes() -> OpenApiRouter<Arc<Herald>> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(redrive))
}

/// A dead-lettered job as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DeadLetter)]
pub(crate) struct DeadLetterView {
    pub id: String,
    pub request_id: String,
    pub row_ids: Vec<String>,
    /// `rows`, `fan_out`, `import`, `recount` or `event`.
    #[schema(value_type = String)]
    pub kind: &'static str,
    pub reason: Option<String>,
    pub receive_count: u32,
    pub dead_at: DateTime<Utc>,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(d: DeadLetter) -> Self {
        DeadLetterView {
            kind: uc::kind(&d.job),
            id: d.id,
            request_id: d.job.request_id,
            row_ids: d.job.row_ids,
            reason: d.reason,
            receive_count: d.receive_count,
            dead_at: d.dead_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeadLetterList {
    pub dead_letters: Vec<DeadLetterView>,
    /// The next page's `cursor`; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Redriven {
    pub id: String,
    pub requeued: bool,
}

fn store(h: &Herald) -> Result<&dyn DeadLetters, ApiError> {
    h.dead_letters.as_deref().ok_or_else(|| ApiError::Refused {
        status: StatusCode::NOT_IMPLEMENTED,
        code: "not_implemented",
        message: "dead letters are not kept in this deployment".into(),
    })
}

/// `GET /v1/dead-letters`: the tenant's dead letters, oldest first, `limit` after `cursor`.
#[utoipa::path(get, path = "/v1/dead-letters", operation_id = "list_dead_letters", tag = "native", security(("bearer" = []), ("api_key" = [])),
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Dead letters in the page (50)"),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page"),
    ),
    responses((status = 200, description = "The tenant's dead letters, oldest first", body = DeadLetterList), Refusals, NotHere))]
pub(crate) async fn list(
    State(h): State<Arc<Herald>>,
    Tenant(tenant): Tenant,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let limit = limit_param(&q, LIST_DEFAULT, LIST_MAX)?;
    let cursor = match q.get("cursor") {
        None => None,
        Some(c) => Some(DeadLetterCursor::decode(c).ok_or_else(|| ApiError::BadRequest {
            code: "invalid_query",
            message: "cursor must be the next_cursor of a previous page".into(),
            fields: vec![FieldError { field: "cursor".into(), message: "is not a next_cursor this list gave".into() }],
        })?),
    };
    let page = uc::list(store(&h)?, h.requests.as_ref(), &tenant, cursor.as_ref(), limit).await?;
    Ok(Json(DeadLetterList {
        dead_letters: page.dead_letters.into_iter().map(DeadLetterView::from).collect(),
        next_cursor: page.next_cursor.map(|c| c.encode()),
    }))
}

/// `POST /v1/dead-letters/{id}/redrive`: the job goes back on the queue as a fresh job.
#[utoipa::path(post, path = "/v1/dead-letters/{id}/redrive", operation_id = "redrive_dead_letter", tag = "native", security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path)),
    responses((status = 202, description = "The job is back on the queue", body = Redriven), Refusals, Missing, NotHere))]
pub(crate) async fn redrive(
    State(h): State<Arc<Herald>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Redriven>), ApiError> {
    if !uc::redrive(store(&h)?, h.queue.as_ref(), &tenant, &id).await? {
        return Err(ApiError::NotFound(format!("no dead letter \"{id}\"")));
    }
    Ok((StatusCode::ACCEPTED, Json(Redriven { id, requeued: true })))
}
