//! `Idempotency-Key` for sending endpoints: the same key and body answer the first response
//! again; another body gets `409`; a key whose first request is still running gets `409` too.
//! Only a successful answer is kept: a refusal stored nothing, and leaves the key free. A send
//! request stored under a key has an id derived from the key, so a retry after a crash answers
//! the stored request (`Idempotent-Replayed: true`) instead of storing a second one.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::time::Duration;

use super::error::ApiError;
use crate::app::Herald;
use crate::domain::limits::MAX_IDEMPOTENCY_KEY;
use crate::ports::{Begin, StoredResponse};

/// How long a key stays locked by a request that never finished (its process died).
const LOCK: Duration = Duration::from_secs(60);

/// The fingerprint of a request: its route and its body, with JSON bodies canonicalised (key
/// order and whitespace do not matter).
pub fn fingerprint(route: &str, body: &[u8]) -> String {
    let canonical = serde_json::from_slice::<serde_json::Value>(body).ok().and_then(|v| serde_json::to_vec(&v).ok());
    let mut h = Sha256::new();
    h.update(route.as_bytes());
    h.update([0]);
    h.update(canonical.as_deref().unwrap_or(body));
    hex::encode(h.finalize())
}

/// Runs `handler` at most once per (tenant, key); without a key it just runs it.
pub async fn idempotent<F, Fut>(
    h: &Herald,
    tenant: &str,
    headers: &HeaderMap,
    route: &str,
    body: &[u8],
    handler: F,
) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Response>,
{
    idempotent_with(h, tenant, headers, route, body, IntoResponse::into_response, handler).await
}

/// [`idempotent`] for an API whose errors have their own shape: `shape` renders the key's own
/// errors (malformed, reused, in progress) the way that API renders every other error.
pub async fn idempotent_with<F, Fut>(
    h: &Herald,
    tenant: &str,
    headers: &HeaderMap,
    route: &str,
    body: &[u8],
    shape: fn(ApiError) -> Response,
    handler: F,
) -> Response
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Response>,
{
    let Some(raw) = headers.get("idempotency-key") else { return handler().await };
    let key = match raw.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY && k.chars().all(|c| c.is_ascii_graphic()) => k,
        _ => {
            return shape(ApiError::BadRequest {
                code: "invalid_idempotency_key",
                message: format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
                fields: vec![crate::domain::FieldError {
                    field: "Idempotency-Key".into(),
                    message: "is malformed".into(),
                }],
            })
        }
    };
    let fp = fingerprint(route, body);
    // A begin that failed before its write is simply retried; one whose write landed although
    // its answer was lost finds the key in progress, and the caller is told to retry shortly
    // (the lock it left runs out after `LOCK`).
    let now = crate::domain::now();
    let begun = crate::service::retry_store("taking an idempotency key", 3, || {
        h.idempotency.begin(tenant, key, &fp, now, LOCK)
    });
    match begun.await {
        Err(e) => return shape(ApiError::from(e)),
        Ok(Begin::Replay(stored)) => return replay(stored),
        Ok(Begin::Mismatch) => {
            return shape(ApiError::Conflict {
                code: "idempotency_key_reused",
                message: "this Idempotency-Key was used with a different request body".into(),
                retry_after: None,
            })
        }
        Ok(Begin::InProgress) => {
            let mut r = shape(ApiError::Conflict {
                code: "idempotency_key_in_progress",
                message: "a request with this Idempotency-Key is still being handled; retry shortly".into(),
                retry_after: Some(1),
            });
            r.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
            return r;
        }
        Ok(Begin::New) => {}
    }
    let (response, resumed) = crate::service::ingest::with_idempotency_key(tenant, key, &fp, handler()).await;
    let status = response.status();
    if !status.is_success() {
        // Only an answer that created something is kept under the key. A refusal (429, 422, …)
        // or a 5xx stored nothing, so the caller may retry with the same key; left locked, the
        // key would answer `409` to those retries until the lock expires.
        let abandoned =
            crate::service::retry_store("releasing an idempotency key", 5, || h.idempotency.abandon(tenant, key));
        if let Err(e) = abandoned.await {
            tracing::error!(error = %e, "could not release an idempotency key");
        }
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return shape(ApiError::Internal(format!("could not buffer a response: {e}"))),
    };
    let stored = StoredResponse { status: status.as_u16(), body: String::from_utf8_lossy(&bytes).into_owned() };
    let expires = crate::domain::now() + chrono::Duration::from_std(h.settings.idempotency_ttl).unwrap_or_default();
    let completed = crate::service::retry_store("storing an idempotent response", 5, || {
        h.idempotency.complete(tenant, key, &stored, expires)
    });
    if let Err(e) = completed.await {
        tracing::error!(error = %e, "could not store an idempotent response");
    }
    if resumed {
        // An earlier try stored this request but its answer was lost: this is that answer again.
        parts.headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Response::from_parts(parts, Body::from(bytes))
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut r = (status, stored.body).into_response();
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    r.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    r
}
