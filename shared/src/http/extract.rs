//! Request extractors: the caller's tenant from an API key, and a JSON body read within limits
//! with errors that name the offending field.

pub use crate::api::parse_json;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts, HeaderMap};
use std::sync::Arc;

use crate::api::error::ApiError;
use crate::app::Herald;
use crate::domain::limits::MAX_BODY_BYTES;
use crate::domain::TenantId;
use crate::service::keys::authenticate;

/// The authenticated caller's tenant. Keys come as `Authorization: Bearer <key>` or `x-api-key`.
#[derive(Debug, Clone)]
pub struct Tenant(pub TenantId);

impl FromRequestParts<Arc<Herald>> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, h: &Arc<Herald>) -> Result<Self, Self::Rejection> {
        // The idempotency guard authenticated this request already.
        if let Some(t) = parts.extensions.get::<Tenant>() {
            return Ok(t.clone());
        }
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        let key = bearer.or_else(|| parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim));
        let Some(key) = key.filter(|k| !k.is_empty()) else {
            return Err(ApiError::Unauthorized(
                "send an API key as `Authorization: Bearer <key>` or `x-api-key: <key>`",
            ));
        };
        match authenticate(h.keys.as_ref(), key).await? {
            Some(tenant) => Ok(Tenant(tenant)),
            None => Err(ApiError::Unauthorized("the API key is not valid")),
        }
    }
}

/// The raw body, at most [`MAX_BODY_BYTES`], refused unless JSON (or untyped).
pub struct JsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        json_body(&parts.headers, body).await.map(JsonBytes)
    }
}

/// A body refused unless JSON (or untyped), read as [`read_body`] does.
pub(crate) async fn json_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::UnsupportedMediaType);
        }
    }
    read_within(headers, body).await
}

/// Reads a body within [`MAX_BODY_BYTES`]: `413` past it, `408` when it comes too slowly.
pub(crate) async fn read_body(req: Request) -> Result<Bytes, ApiError> {
    let (parts, body) = req.into_parts();
    read_within(&parts.headers, body).await
}

/// A body declared over the limit is still read to its end and thrown away, up to this much,
/// before the `413` goes out: closing a connection while the client is still sending makes the
/// kernel reset it, and the client sees a broken connection instead of the answer.
const DRAIN_AT_MOST: usize = 8 * MAX_BODY_BYTES;

async fn read_within(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    use futures::StreamExt;
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let mut data = body.into_data_stream();
    if let Some(n) = declared.filter(|n| *n > MAX_BODY_BYTES) {
        if n <= DRAIN_AT_MOST {
            drain(&mut data).await;
        }
        return Err(ApiError::PayloadTooLarge);
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = data.next().await {
        let chunk = chunk.map_err(|e| match super::server::is_body_timeout(e.into_inner().as_ref()) {
            true => ApiError::RequestTimeout,
            false => ApiError::PayloadTooLarge,
        })?;
        if buf.len() + chunk.len() > MAX_BODY_BYTES {
            // A body of no declared length (chunked) is answered at once: one that ends with
            // the client's half-close would have the connection closed under the answer.
            return Err(ApiError::PayloadTooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// Reads and drops a body until it ends, fails (a timeout) or passes [`DRAIN_AT_MOST`].
async fn drain(data: &mut axum::body::BodyDataStream) {
    use futures::StreamExt;
    let mut seen = 0;
    while seen <= DRAIN_AT_MOST {
        match data.next().await {
            Some(Ok(chunk)) => seen += chunk.len(),
            _ => return,
        }
    }
}
