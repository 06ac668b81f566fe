//! `Idempotency-Key` for sending endpoints: the same key and body answer the first response
//! again; another body gets `409`; a key whose first request is still running gets `409` too.
//! Only a successful answer is kept: a refusal stored nothing, and leaves the key free. A send
//! request stored under a key has an id derived from the key, so a retry after a crash answers
//! the stored request (`Idempotent-Replayed: true`) instead of storing a second one.
//!
//! Every sending route goes through [`sending`], a route layer the router puts in front of the
//! handler, so a new sending route cannot forget it; [`guarded`] is the same guard for a send
//! that does not come over HTTP (an EventBridge event).

use axum::body::Body;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::error::ApiError;
use super::extract::{json_body, Tenant};
use crate::app::Herald;
use crate::domain::limits::MAX_IDEMPOTENCY_KEY;
use crate::domain::TenantId;
use crate::ports::{Begin, StoredResponse};
use utoipa_axum::router::OpenApiRouter;

/// How long a key stays locked by a request that never finished (its process died).
const LOCK: Duration = Duration::from_secs(60);

/// How an API renders an error: Herald's native body, or a dialect's own shape. The key's own
/// errors (malformed, reused, in progress) answer the way that API answers every other error.
pub(crate) type Shape = fn(ApiError) -> Response;

/// Herald's native error body.
pub(crate) const NATIVE: Shape = IntoResponse::into_response;

/// Who sends a sending route's requests, and what a key is bound to besides the route.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Input {
    /// An API key in the headers and a JSON body: every sending route but one. `owner` names
    /// the path parameter that must be the caller's tenant (Invent's org, SMAX's bot), if any.
    JsonBody { owner: Option<&'static str> },
    /// SMAX V1: every query parameter but `bot_token`, no body (so a rotated token still
    /// replays). The tenant is the one the route's admission layer authenticated.
    SmaxQuery,
}

#[derive(Clone)]
struct Guard {
    h: Arc<Herald>,
    shape: Shape,
    input: Input,
}

/// Puts every route of `routes` behind the idempotency guard.
pub(crate) fn sending(
    routes: OpenApiRouter<Arc<Herald>>,
    h: &Arc<Herald>,
    shape: Shape,
    input: Input,
) -> OpenApiRouter<Arc<Herald>> {
    let guard = Guard { h: h.clone(), shape, input };
    routes.route_layer(axum::middleware::from_fn_with_state(guard, guard_request))
}

/// The route layer. A request without a key, whose caller cannot be authenticated, or that
/// names another tenant's org or bot, goes to the handler untouched: the route refuses it in its
/// own words, as it would without a key, and no key is taken.
async fn guard_request(State(g): State<Guard>, req: Request, next: Next) -> Response {
    // Only a POST sends; any other method is refused by the route, and takes no key.
    if req.method() != Method::POST || !req.headers().contains_key("idempotency-key") {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let tenant = match caller(&g, &mut parts).await {
        Some(t) if owner_is(&g, &mut parts, &t).await => t,
        _ => return next.run(Request::from_parts(parts, body)).await,
    };
    // The handler reads the tenant from here rather than authenticating a second time.
    parts.extensions.insert(Tenant(tenant.clone()));
    let route = route_of(&parts);
    let (bound, body) = match g.input {
        Input::SmaxQuery => {
            (crate::dialects::smax::V1Query::parse(parts.uri.query().unwrap_or_default()).canonical(), body)
        }
        Input::JsonBody { .. } => match json_body(&parts.headers, body).await {
            Ok(bytes) => (bytes.to_vec(), Body::from(bytes)),
            Err(e) => return (g.shape)(e),
        },
    };
    let headers = parts.headers.clone();
    let handler = next.run(Request::from_parts(parts, body));
    guarded(&g.h, &tenant, &headers, &route, &bound, g.shape, handler).await
}

/// The caller's tenant, if its credentials name one.
async fn caller(g: &Guard, parts: &mut Parts) -> Option<TenantId> {
    match g.input {
        Input::JsonBody { .. } => Tenant::from_request_parts(parts, &g.h).await.ok().map(|Tenant(t)| t),
        Input::SmaxQuery => parts.extensions.get::<Tenant>().map(|Tenant(t)| t.clone()),
    }
}

/// The route a key is bound to: the method and the path, percent-decoded as the handler reads
/// its parameters (so `…/broadcasts/a%20b/send` and `…/broadcasts/a b/send` are one route).
fn route_of(parts: &Parts) -> String {
    let path = parts.uri.path();
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        let hex =
            path.get(i + 1..i + 3).filter(|h| path.as_bytes()[i] == b'%' && h.bytes().all(|b| b.is_ascii_hexdigit()));
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(path.as_bytes()[i]);
                i += 1;
            }
        }
    }
    format!("{} {}", parts.method, String::from_utf8_lossy(&out))
}

/// Whether the path names the caller's own org or bot, where the route names one: a call for
/// another takes no key, and the route refuses it as it refuses any such call.
async fn owner_is(g: &Guard, parts: &mut Parts, tenant: &TenantId) -> bool {
    let Input::JsonBody { owner: Some(name) } = g.input else { return true };
    let params = Path::<HashMap<String, String>>::from_request_parts(parts, &()).await;
    params.is_ok_and(|Path(p)| p.get(name).is_some_and(|v| v == tenant))
}

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

/// Runs `handler` at most once per (tenant, key) when `headers` carry a key; without one it
/// just runs it. `bound` is what the key is bound to besides `route` (the body, as a rule).
pub(crate) async fn guarded(
    h: &Herald,
    tenant: &TenantId,
    headers: &HeaderMap,
    route: &str,
    bound: &[u8],
    shape: Shape,
    handler: impl Future<Output = Response>,
) -> Response {
    let Some(raw) = headers.get("idempotency-key") else { return handler.await };
    let key = match raw.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY && k.chars().all(|c| c.is_ascii_graphic()) => k,
        _ => return shape(malformed()),
    };
    let fp = fingerprint(route, bound);
    if let Err(answer) = take(h, tenant, key, &fp, shape).await {
        return answer;
    }
    let (response, resumed) = crate::service::ingest::with_idempotency_key(tenant, key, &fp, handler).await;
    if !response.status().is_success() {
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
    keep(h, tenant, key, response, resumed, shape).await
}

fn malformed() -> ApiError {
    ApiError::BadRequest {
        code: "invalid_idempotency_key",
        message: format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
        fields: vec![crate::domain::FieldError { field: "Idempotency-Key".into(), message: "is malformed".into() }],
    }
}

/// Takes the key for this request, or answers instead of the handler: the stored answer, or
/// `409` for a key bound to another request or still being handled.
async fn take(h: &Herald, tenant: &TenantId, key: &str, fp: &str, shape: Shape) -> Result<(), Response> {
    // A begin that failed before its write is simply retried; one whose write landed although
    // its answer was lost finds the key in progress, and the caller is told to retry shortly
    // (the lock it left runs out after `LOCK`).
    let now = crate::domain::now();
    let begun =
        crate::service::retry_store("taking an idempotency key", 3, || h.idempotency.begin(tenant, key, fp, now, LOCK));
    match begun.await {
        Ok(Begin::New) => Ok(()),
        Err(e) => Err(shape(ApiError::from(e))),
        Ok(Begin::Replay(stored)) => Err(replay(stored)),
        Ok(Begin::Mismatch) => Err(shape(ApiError::Conflict {
            code: "idempotency_key_reused",
            message: "this Idempotency-Key was used with a different request body".into(),
            retry_after: None,
        })),
        Ok(Begin::InProgress) => {
            let mut r = shape(ApiError::Conflict {
                code: "idempotency_key_in_progress",
                message: "a request with this Idempotency-Key is still being handled; retry shortly".into(),
                retry_after: Some(1),
            });
            r.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
            Err(r)
        }
    }
}

/// Stores a successful answer under the key and hands it on.
async fn keep(h: &Herald, tenant: &TenantId, key: &str, response: Response, resumed: bool, shape: Shape) -> Response {
    let status = response.status();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn route(uri: &str) -> String {
        let (parts, _) = Request::post(uri).body(()).unwrap().into_parts();
        route_of(&parts)
    }

    #[test]
    fn a_route_names_its_parameters_as_the_handler_reads_them() {
        assert_eq!(route("/orgs/acme/broadcasts/a%20b%2Fc/send?x=%20"), "POST /orgs/acme/broadcasts/a b/c/send");
        assert_eq!(route("/v1/broadcasts"), "POST /v1/broadcasts");
        assert_eq!(route("/x/100%25/%zz/%+f/%4"), "POST /x/100%/%zz/%+f/%4", "only a % with two hex digits is decoded");
        assert_eq!(route("/x/%C3%A9"), "POST /x/é");
    }
}
