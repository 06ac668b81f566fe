//! `POST /v1/broadcasts`, `GET /v1/broadcasts` and `GET /v1/broadcasts/{request_id}`.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::error::ApiError;
use super::extract::{parse_json, JsonBytes, Tenant};
use super::idempotency::{guarded, sending, Input, NATIVE};
use super::limit_param;
use super::schema::{native as doc, BodyRefusals, Missing, Refusals, SendRefusals};
use crate::app::Herald;
use crate::domain::TenantId;
use crate::domain::{BroadcastBody, FieldError, FieldErrors, RecipientRow, RowView, SendRequest, Status};
use crate::ports::{Progress, RequestCursor};
use crate::service::ingest::ingest;
use crate::service::recount;
use utoipa_axum::{router::OpenApiRouter, routes};

/// `/v1/broadcasts`: the send route behind the idempotency guard (it takes only POSTs, so the list
/// goes straight through), and the list.
pub(super) fn routes(h: &Arc<Herald>) -> OpenApiRouter<Arc<Herald>> {
    let send = OpenApiRouter::new().routes(routes!(create, list));
    sending(send, h, NATIVE, Input::JsonBody { owner: None }).routes(routes!(get)).routes(routes!(cancel))
}

/// `POST /v1/broadcasts`: one message (or several) to a list of recipients or an audience.
#[utoipa::path(post, path = "/v1/broadcasts", operation_id = "create_broadcast", tag = "native", security(("bearer" = []), ("api_key" = [])),
    params(("Idempotency-Key" = Option<String>, Header, description = "The same key and body answer the first answer again")),
    request_body = doc::BroadcastBody,
    responses(
        (status = 200, description = "Taken and sent inline: each row as it stands", body = doc::SendRequestView),
        (status = 202, description = "Taken (`background: true`): rows are sent from the queue", body = doc::SendRequestView),
        Refusals, BodyRefusals, SendRefusals,
        (status = 404, description = "A campaign, template or segment it names is not the tenant's", body = super::schema::ErrorBody),
    ))]
pub async fn create(State(h): State<Arc<Herald>>, Tenant(tenant): Tenant, JsonBytes(body): JsonBytes) -> Response {
    // The router's idempotency layer has taken the key, if any.
    run_create(&h, &tenant, &body, "native").await.unwrap_or_else(IntoResponse::into_response)
}

/// Takes a native send request for `tenant` that did not come over HTTP (an event from another
/// system): the same parsing, validation and idempotency as `POST /v1/broadcasts`. `source`
/// names where it came from.
pub async fn submit(h: &Herald, tenant: &TenantId, headers: &HeaderMap, body: &[u8], source: &str) -> Response {
    let run = async { run_create(h, tenant, body, source).await.unwrap_or_else(IntoResponse::into_response) };
    guarded(h, tenant, headers, "POST /v1/broadcasts", body, NATIVE, run).await
}

async fn run_create(h: &Herald, tenant: &TenantId, body: &[u8], source: &str) -> Result<Response, ApiError> {
    let plan = parse_json::<BroadcastBody>(body)?.validate()?;
    let background = plan.background;
    let accepted = ingest(&h.ingest, tenant, plan, source).await?;
    let mut counts = BTreeMap::new();
    for r in &accepted.rows {
        *counts.entry(r.status).or_insert(0u64) += 1;
    }
    let status = if background { StatusCode::ACCEPTED } else { StatusCode::OK };
    let view = request_json(&accepted.request, &counts, &Progress::default(), &accepted.rows, None);
    Ok((status, Json(view)).into_response())
}

/// `GET /v1/broadcasts/{request_id}`: a send request, its summary and a page of its rows.
#[utoipa::path(get, path = "/v1/broadcasts/{request_id}", operation_id = "get_broadcast", tag = "native", security(("bearer" = []), ("api_key" = [])),
    params(
        ("request_id" = String, Path),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Rows in the page (1000)"),
        ("cursor" = Option<u32>, Query, description = "The `next_cursor` of the previous page"),
        ("status" = Option<String>, Query, description = "Only rows in these statuses, comma-separated \
            (`failed,bounced`). A page then reads at most 5,000 rows, so it may hold fewer than `limit` \
            and still have a `next_cursor`"),
    ),
    responses((status = 200, description = "The request", body = doc::SendRequestView), Refusals, Missing))]
pub async fn get(
    State(h): State<Arc<Herald>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let limit = limit_param(&q, 1000, 1000)?;
    let after = match q.get("cursor") {
        None => None,
        Some(c) => Some(c.parse::<u32>().map_err(|_| ApiError::BadRequest {
            code: "invalid_query",
            message: "cursor must be the next_cursor of a previous page".into(),
            fields: vec![FieldError { field: "cursor".into(), message: "is not a cursor".into() }],
        })?),
    };
    let wanted = status_param(&q)?;
    let Some(request) = h.requests.get_request(&tenant, &id).await? else {
        return Err(ApiError::NotFound(format!("no send request \"{id}\"")));
    };
    // Progress before counts: once fan-out is seen over, every row it made is counted (the other
    // way round, a fan-out ending between the two reads showed a broadcast completed short of its
    // last page).
    let progress = h.requests.progress(&tenant, &id).await?;
    let counts = recount::counts(h.requests.as_ref(), h.queue.as_ref(), &tenant, &id).await?.by_status;
    let (rows, next) = match wanted {
        None => rows_page(&h, &tenant, &request, after, limit).await?,
        Some(wanted) => rows_in_status(&h, &tenant, &request, after, limit, &wanted).await?,
    };
    Ok(Json(request_json(&request, &counts, &progress, &rows, next)))
}

/// A page of a request's rows after `after`, and the `seq` the next page starts after, if any.
async fn rows_page(
    h: &Herald,
    tenant: &TenantId,
    request: &SendRequest,
    after: Option<u32>,
    limit: u32,
) -> Result<(Vec<RecipientRow>, Option<u32>), ApiError> {
    let rows = h.requests.list_rows(tenant, &request.id, after, limit).await?;
    // An audience's rows have no known last `seq`: a full page may have more behind it.
    let more = |last: &RecipientRow| request.audience.is_some() || last.seq + 1 < request.row_count;
    let next =
        (rows.len() as u32 == limit && rows.last().is_some_and(more)).then(|| rows.last().map(|r| r.seq)).flatten();
    Ok((rows, next))
}

/// Rows a filtered page reads at most: a filter that matches few rows of a large request answers
/// a short page (even an empty one) with a `next_cursor`, rather than reading the whole request.
const FILTER_READ_MAX: u32 = 5_000;

/// `?status=failed,bounced`: the statuses a page keeps, `None` for every row.
fn status_param(q: &HashMap<String, String>) -> Result<Option<Vec<Status>>, ApiError> {
    let Some(text) = q.get("status") else { return Ok(None) };
    let wanted: Option<Vec<Status>> = text.split(',').map(|s| Status::parse(s.trim())).collect();
    match wanted {
        Some(w) if !w.is_empty() => Ok(Some(w)),
        _ => Err(ApiError::BadRequest {
            code: "invalid_query",
            message: "status must be one or more row statuses separated by commas, such as failed,bounced".into(),
            fields: vec![FieldError {
                field: "status".into(),
                message: format!("is not a row status (one of {})", Status::ALL.map(|s| s.as_str()).join(", ")),
            }],
        }),
    }
}

/// Up to `limit` rows in one of `wanted` after `after`, read a page of `list_rows` at a time until
/// `limit` match or [`FILTER_READ_MAX`] rows were read. The cursor is the last `seq` read, so the
/// next page goes on from there, whether or not that row matched.
async fn rows_in_status(
    h: &Herald,
    tenant: &TenantId,
    request: &SendRequest,
    mut after: Option<u32>,
    limit: u32,
    wanted: &[Status],
) -> Result<(Vec<RecipientRow>, Option<u32>), ApiError> {
    let mut kept = Vec::new();
    let mut read = 0;
    // Reads grow from `limit` as matches prove sparse, so a small page of a sparse status
    // takes a few reads, not thousands.
    let mut size = limit;
    while read < FILTER_READ_MAX {
        let (page, next) = rows_page(h, tenant, request, after, size.min(FILTER_READ_MAX - read)).await?;
        size = (size * 2).min(1_000);
        let len = page.len();
        for (i, row) in page.into_iter().enumerate() {
            read += 1;
            after = Some(row.seq);
            if wanted.contains(&row.status) {
                kept.push(row);
            }
            if kept.len() as u32 == limit {
                // Rows may follow; whether any matches is the next page's to find out.
                let more = next.is_some() || i + 1 < len;
                return Ok((kept, after.filter(|_| more)));
            }
        }
        if next.is_none() {
            return Ok((kept, None));
        }
    }
    Ok((kept, after))
}

/// Requests a page of `GET /v1/broadcasts` lists unless `limit` says otherwise, and at most.
const LIST_DEFAULT: u32 = 50;
const LIST_MAX: u32 = 200;
/// Requests whose summaries are read at once for one page.
const SUMMARIES_AT_ONCE: usize = 8;

/// `GET /v1/broadcasts`: the tenant's send requests newest first, each as
/// `GET /v1/broadcasts/{request_id}` shows it less its rows (state and summary from the
/// counters), `limit` a page after `cursor`, only those of one `source` when asked.
#[utoipa::path(get, path = "/v1/broadcasts", operation_id = "list_broadcasts", tag = "native", security(("bearer" = []), ("api_key" = [])),
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 200, description = "Requests in the page (50)"),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page"),
        ("source" = Option<String>, Query, description = "Only requests that came this way: `native` or a dialect"),
    ),
    responses((status = 200, description = "A page of requests, newest first, without rows", body = doc::BroadcastList),
        Refusals, (status = 422, description = "`limit`, `cursor` or `source` is not one, each named in `fields`",
            body = super::schema::ErrorBody)))]
pub async fn list(
    State(h): State<Arc<Herald>>,
    Tenant(tenant): Tenant,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    use futures::{StreamExt, TryStreamExt};
    let (limit, cursor, source) = list_query(&q)?;
    let page = h.requests.list_requests(&tenant, source, cursor.as_ref(), limit).await?;
    let (h, tenant) = (&*h, &tenant);
    // Owned requests: a stream of borrowed ones trips the handler's `Send` bound.
    let data: Vec<Value> = futures::stream::iter(page.requests)
        .map(|request| async move { summary_json(h, tenant, &request).await })
        .buffered(SUMMARIES_AT_ONCE)
        .try_collect()
        .await?;
    Ok(Json(json!({"data": data, "next_cursor": page.next_cursor.map(|c| c.encode())})))
}

/// `limit`, `cursor` and `source` of a list, each refused by name when it is not one.
fn list_query(q: &HashMap<String, String>) -> Result<(u32, Option<RequestCursor>, Option<&str>), ApiError> {
    let mut errs = FieldErrors::new();
    let limit = match q.get("limit").map(|v| v.parse::<u32>()) {
        None => LIST_DEFAULT,
        Some(Ok(n)) if (1..=LIST_MAX).contains(&n) => n,
        Some(_) => {
            errs.push("limit", format!("must be a whole number from 1 to {LIST_MAX}"));
            LIST_DEFAULT
        }
    };
    let cursor = q.get("cursor").and_then(|c| {
        let read = RequestCursor::decode(c);
        if read.is_none() {
            errs.push("cursor", "is not a next_cursor this list gave");
        }
        read
    });
    let source = q.get("source").map(String::as_str);
    let plain = |s: &str| {
        (1..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
    };
    if source.is_some_and(|s| !plain(s)) {
        errs.push("source", "must be native or a dialect's name, such as twilio");
    }
    Ok(errs.finish((limit, cursor, source))?)
}

/// A request as the list shows it: its view without rows.
async fn summary_json(h: &Herald, tenant: &TenantId, request: &SendRequest) -> Result<Value, ApiError> {
    // Progress before counts, as in `get`.
    let progress = h.requests.progress(tenant, &request.id).await?;
    let counts = recount::counts(h.requests.as_ref(), h.queue.as_ref(), tenant, &request.id).await?.by_status;
    let mut view = request_json(request, &counts, &progress, &[], None);
    if let Some(fields) = view.as_object_mut() {
        fields.remove("recipients");
        fields.remove("next_cursor");
    }
    Ok(view)
}

/// `POST /v1/broadcasts/{request_id}/cancel`: answers the request as it stands once canceled.
#[utoipa::path(post, path = "/v1/broadcasts/{request_id}/cancel", operation_id = "cancel_broadcast", tag = "native", security(("bearer" = []), ("api_key" = [])),
    params(("request_id" = String, Path)),
    responses((status = 200, description = "The request, canceled (a completed one as it stands)", body = doc::SendRequestView),
        Refusals, Missing))]
pub async fn cancel(
    State(h): State<Arc<Herald>>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (request, progress) =
        crate::service::cancel::cancel(h.requests.as_ref(), h.events.as_deref(), &tenant, &id).await?;
    let counts = recount::counts(h.requests.as_ref(), h.queue.as_ref(), &tenant, &id).await?.by_status;
    Ok(Json(request_json(&request, &counts, &progress, &[], None)))
}

/// A send window as the API spells it.
pub(crate) fn window_json(w: &crate::domain::schedule::SendWindow) -> Value {
    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    json!({
        "days": w.days.iter().filter_map(|d| DAYS.get(*d as usize)).collect::<Vec<_>>(),
        "from": w.from.format("%H:%M").to_string(),
        "until": w.until.format("%H:%M").to_string(),
    })
}

/// The API view of a send request: its settings, a status summary and a page of its rows.
pub(crate) fn request_json(
    req: &SendRequest,
    counts: &BTreeMap<Status, u64>,
    progress: &Progress,
    rows: &[RecipientRow],
    next: Option<u32>,
) -> Value {
    let made: u64 = counts.values().sum();
    let pending: u64 = counts.iter().filter(|(s, _)| s.is_pending()).map(|(_, n)| n).sum();
    let fanning_out = req.audience.is_some() && progress.fanned_out_at.is_none() && progress.canceled_at.is_none();
    // Canceled is final the moment it is answered; `summary.pending` shows what is still settling.
    let state = if progress.canceled_at.is_some() {
        "canceled"
    } else if fanning_out {
        "fanning_out"
    } else if pending == 0 {
        "completed"
    } else if pending == made && counts.get(&Status::Queued) == Some(&made) {
        "queued"
    } else if counts.get(&Status::Scheduled) == Some(&pending) {
        // Nothing is in flight: every row still to go waits for its due time.
        "scheduled"
    } else {
        "sending"
    };
    // An audience's total is known once fan-out has made its last row.
    let total = (!fanning_out).then_some(made);
    // An audience's counts are its rows', once known; a recipient list's were fixed at ingest.
    let (recipient_count, row_count) = match (&req.audience, total) {
        (None, _) => (Some(u64::from(req.recipient_count)), Some(u64::from(req.row_count))),
        (Some(_), Some(rows)) => (Some(rows / req.messages.len().max(1) as u64), Some(rows)),
        (Some(_), None) => (None, None),
    };
    let by_status: serde_json::Map<String, Value> = counts.iter().map(|(s, n)| (s.to_string(), json!(n))).collect();
    let recipients: Vec<Value> = rows
        .iter()
        .map(|row| {
            RowView { row, broadcast_id: req.campaign_id.as_deref(), broadcast_name: req.campaign_name.as_deref() }
                .to_json()
        })
        .collect();
    json!({
        "request_id": req.id,
        "created_at": req.created_at,
        "source": req.source,
        "campaign_id": req.campaign_id,
        "campaign_name": req.campaign_name,
        "background": req.background,
        "send_at": req.send_at,
        "send_at_local": req.send_at_local.map(|t| t.format("%Y-%m-%dT%H:%M").to_string()),
        "send_window": req.send_window.as_ref().map(window_json),
        "throttle": req.throttle,
        "metadata": req.metadata,
        "recipient_count": recipient_count,
        "row_count": row_count,
        "audience": req.audience,
        "state": state,
        "canceled_at": progress.canceled_at,
        // Why an audience's fan-out stopped before its last member, when it did.
        "fan_out_error": progress.fan_out_error,
        "summary": {
            "total": total,
            "rows_made": made,
            "pending": pending,
            "scheduled": counts.get(&Status::Scheduled).copied().unwrap_or(0),
            "terminal": made - pending,
            "by_status": by_status,
        },
        "recipients": recipients,
        "next_cursor": next,
    })
}
