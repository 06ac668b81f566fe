//! One API error type. Every error answers `{"error": {"code", "message", "fields"}}`; a 5xx
//! never carries internals (they are logged instead).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::domain::{FieldError, FieldErrors};
use crate::ports::StoreError;
use crate::service::ServiceError;

#[derive(Debug)]
pub enum ApiError {
    /// The body is not JSON of the expected shape (400).
    BadRequest {
        code: &'static str,
        message: String,
        fields: Vec<FieldError>,
    },
    /// The body parsed but broke rules (422).
    Validation(Vec<FieldError>),
    Unauthorized(&'static str),
    NotFound(String),
    MethodNotAllowed,
    Conflict {
        code: &'static str,
        message: String,
        retry_after: Option<u64>,
    },
    PayloadTooLarge,
    /// The body came too slowly (`herald serve`'s body timeout).
    RequestTimeout,
    UnsupportedMediaType,
    /// Over the tenant's sending rate; `Retry-After` says when to try again (seconds).
    TooManyRequests {
        retry_after: u64,
    },
    /// A store or queue is briefly unavailable: `503` with `Retry-After`, nothing promised, safe
    /// to retry (with the same `Idempotency-Key`). The detail goes to the log.
    Unavailable(String),
    /// Something broke inside Herald; the detail goes to the log, not to the caller.
    Internal(String),
    /// Any other refusal, with its own status, code and message (a CSV body's media type or
    /// size, a feature this deployment lacks).
    Refused {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Refused { status, .. } => *status,
        }
    }

    pub fn field(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::Validation(vec![FieldError { field: field.into(), message: message.into() }])
    }
}

impl From<FieldErrors> for ApiError {
    fn from(e: FieldErrors) -> Self {
        ApiError::Validation(e.0)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => ApiError::Unavailable(e.to_string()),
            StoreError::Corrupt(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(f) => ApiError::Validation(f.0),
            ServiceError::NotFound(what) => ApiError::NotFound(format!("no such {what}")),
            ServiceError::Conflict { code, message } => ApiError::Conflict { code, message, retry_after: None },
            ServiceError::RateLimited(wait) => {
                ApiError::TooManyRequests { retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0) }
            }
            ServiceError::Store(s) => s.into(),
        }
    }
}

impl ApiError {
    /// The error's code, message and field errors, as the native body shows them (dialects with
    /// their own error shape build it from these). An internal error's detail is logged here.
    pub fn describe(self) -> (&'static str, String, Vec<FieldError>) {
        match self {
            ApiError::BadRequest { code, message, fields } => (code, message, fields),
            ApiError::Validation(fields) => {
                let message = match fields.len() {
                    1 => format!("{} {}", fields[0].field, fields[0].message),
                    n => format!("{n} fields are invalid; see fields"),
                };
                ("validation_failed", message, fields)
            }
            ApiError::Unauthorized(m) => ("unauthorized", m.to_string(), vec![]),
            ApiError::NotFound(m) => ("not_found", m, vec![]),
            ApiError::MethodNotAllowed => ("method_not_allowed", "this path does not take that method".into(), vec![]),
            ApiError::Conflict { code, message, .. } => (code, message, vec![]),
            ApiError::PayloadTooLarge => (
                "payload_too_large",
                format!("the body is larger than {} bytes", crate::domain::limits::MAX_BODY_BYTES),
                vec![],
            ),
            ApiError::RequestTimeout => {
                ("request_timeout", "the request body came too slowly; send it again".into(), vec![])
            }
            ApiError::UnsupportedMediaType => {
                ("unsupported_media_type", "send the body as JSON with Content-Type: application/json".into(), vec![])
            }
            ApiError::TooManyRequests { retry_after } => {
                ("rate_limited", format!("this tenant is over its sending rate; retry in {retry_after} s"), vec![])
            }
            ApiError::Unavailable(detail) => {
                tracing::error!(%detail, "storage unavailable");
                ("unavailable", "Herald's storage is briefly unavailable; retry shortly".into(), vec![])
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                ("internal", "Herald could not complete the request; try again".into(), vec![])
            }
            ApiError::Refused { code, message, .. } => (code, message, vec![]),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            ApiError::TooManyRequests { retry_after } => Some(*retry_after),
            ApiError::Conflict { retry_after, .. } => *retry_after,
            ApiError::Unavailable(_) => Some(1),
            _ => None,
        };
        let (code, message, fields) = self.describe();
        let body = json!({"error": {"code": code, "message": message, "fields": fields}});
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = retry_after {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
