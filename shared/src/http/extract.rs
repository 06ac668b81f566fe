//! Request extractors: the caller's tenant from an API key, and a JSON body read within limits
//! with errors that name the offending field.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts};
use serde::de::DeserializeOwned;
use std::sync::Arc;

use super::error::ApiError;
use crate::app::Herald;
use crate::domain::limits::MAX_BODY_BYTES;
use crate::domain::FieldError;
use crate::service::keys::authenticate;

/// The authenticated caller's tenant. Keys come as `Authorization: Bearer <key>` or `x-api-key`.
#[derive(Debug, Clone)]
pub struct Tenant(pub String);

impl FromRequestParts<Arc<Herald>> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, h: &Arc<Herald>) -> Result<Self, Self::Rejection> {
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
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
            let essence = ct.split(';').next().unwrap_or_default().trim();
            if essence != "application/json" && !essence.ends_with("+json") {
                return Err(ApiError::UnsupportedMediaType);
            }
        }
        read_body(req).await.map(JsonBytes)
    }
}

/// Reads a body within [`MAX_BODY_BYTES`]: `413` past it, `408` when it comes too slowly.
pub(crate) async fn read_body(req: Request) -> Result<Bytes, ApiError> {
    let too_big = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n > MAX_BODY_BYTES);
    if too_big {
        return Err(ApiError::PayloadTooLarge);
    }
    axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES).await.map_err(|e| {
        match super::server::is_body_timeout(e.into_inner().as_ref()) {
            true => ApiError::RequestTimeout,
            false => ApiError::PayloadTooLarge,
        }
    })
}

/// Parses a JSON object into `T`. A syntax error answers `400` on `body`; a value of the wrong
/// shape answers `400` naming its path (`recipients[2].phone`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bad = |field: String, message: String| ApiError::BadRequest {
        code: "invalid_json",
        message: format!("{field} {message}"),
        fields: vec![FieldError { field, message }],
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("body".into(), "is empty; send a JSON object".into()));
    }
    let value =
        crate::domain::json::parse_value(bytes).map_err(|e| bad("body".into(), format!("is not valid JSON: {e}")))?;
    serde_path_to_error::deserialize(crate::domain::json::Strict(value)).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() { "body".to_string() } else { path };
        bad(field, strip_position(&e.into_inner().to_string()))
    })
}

/// serde_json appends " at line 1 column 12"; the field path already says where.
fn strip_position(s: &str) -> String {
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}
