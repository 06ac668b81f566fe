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
    let Some(request) = h.requests.get_request(&tenant, &id).await? else {
        return Err(ApiError::NotFound(format!("no send request \"{id}\"")));
    };
    let counts = recount::counts(h.requests.as_ref(), h.queue.as_ref(), &tenant, &id).await?.by_status;
    let progress = h.requests.progress(&tenant, &id).await?;
    let rows = h.requests.list_rows(&tenant, &id, after, limit).await?;
    // An audience's rows have no known last `seq`: a full page may have more behind it.
    let more = |last: &RecipientRow| request.audience.is_some() || last.seq + 1 < request.row_count;
    let next =
        (rows.len() as u32 == limit && rows.last().is_some_and(more)).then(|| rows.last().map(|r| r.seq)).flatten();
    Ok(Json(request_json(&request, &counts, &progress, &rows, next)))
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
    let counts = recount::counts(h.requests.as_ref(), h.queue.as_ref(), tenant, &request.id).await?.by_status;
    let progress = h.requests.progress(tenant, &request.id).await?;
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
