//! `POST /v1/providers/{provider}/events`: provider status callbacks and inbound messages, each
//! verified by the provider's signature before anything changes; `GET` answers Meta's
//! subscription challenge. A bad or missing signature is `401` and changes nothing.

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::collections::HashMap;
use std::sync::Arc;

use super::error::ApiError;
use super::extract::read_body;
use super::schema::{native as doc, ErrorBody};
use crate::app::Herald;
use crate::net::signatures::{hub_signature, same, twilio_signature};
use crate::providers::{messenger, twilio, whatsapp};
use crate::service::callbacks::apply;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(super) fn routes() -> OpenApiRouter<Arc<Herald>> {
    OpenApiRouter::new().routes(routes!(verify, receive))
}

/// Meta's subscription check: echo `hub.challenge` when `hub.verify_token` matches.
#[utoipa::path(get, path = "/v1/providers/{provider}/events", operation_id = "verify_provider_subscription", tag = "callbacks",
    params(("provider" = String, Path, description = "`whatsapp` or `messenger`"),
        ("hub.mode" = Option<String>, Query), ("hub.verify_token" = Option<String>, Query), ("hub.challenge" = Option<String>, Query)),
    responses((status = 200, description = "`hub.challenge`, echoed", content_type = "text/plain", body = String),
        (status = 400, description = "A path segment Herald cannot read", body = ErrorBody),
        (status = 401, description = "The verify token does not match", body = ErrorBody),
        (status = 404, description = "No such provider, or no verify token configured", body = ErrorBody)))]
pub async fn verify(
    State(h): State<Arc<Herald>>,
    Path(provider): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let expected = match provider.as_str() {
        "whatsapp" => h.provider_config.whatsapp.as_ref().and_then(|c| c.verify_token.clone()),
        "messenger" => h.provider_config.messenger.as_ref().and_then(|c| c.verify_token.clone()),
        _ => return ApiError::NotFound(format!("{provider} has no subscription check")).into_response(),
    };
    let Some(expected) = expected else {
        return ApiError::NotFound(format!("{provider} has no verify token configured")).into_response();
    };
    let given = q.get("hub.verify_token").map(String::as_str).unwrap_or_default();
    match (q.get("hub.mode").map(String::as_str), q.get("hub.challenge")) {
        (Some("subscribe"), Some(challenge)) if same(given, expected.expose()) => {
            (StatusCode::OK, challenge.clone()).into_response()
        }
        _ => ApiError::Unauthorized("the verify token does not match").into_response(),
    }
}

/// A provider's status callbacks and inbound messages, verified by its signature.
#[utoipa::path(post, path = "/v1/providers/{provider}/events", operation_id = "receive_provider_events", tag = "callbacks",
    params(("provider" = String, Path, description = "`whatsapp`, `messenger` or `sms` (Twilio)"),
        ("X-Hub-Signature-256" = Option<String>, Header, description = "Meta's signature of the body"),
        ("X-Twilio-Signature" = Option<String>, Header, description = "Twilio's signature of the URL and form")),
    request_body(description = "The provider's webhook: Meta's JSON, or Twilio's form",
        content(
            (serde_json::Value = "application/json"),
            (std::collections::BTreeMap<String, String> = "application/x-www-form-urlencoded"))),
    responses(
        (status = 200, description = "Applied: JSON for Meta, empty TwiML for Twilio",
            content((doc::CallbackAnswer = "application/json"), (String = "text/xml"))),
        (status = 400, description = "A path segment Herald cannot read", body = ErrorBody),
        (status = 401, description = "The signature is missing or does not match", body = ErrorBody),
        (status = 404, description = "No such provider, or the provider is not configured", body = ErrorBody),
        (status = 408, description = "The body came too slowly", body = ErrorBody),
        (status = 413, description = "The body is larger than Herald takes", body = ErrorBody),
        (status = 422, description = "The body is not the provider's webhook", body = ErrorBody),
        (status = 500, description = "Herald could not complete the request", body = ErrorBody),
        (status = 503, description = "Herald's storage is briefly unavailable", body = ErrorBody)))]
pub async fn receive(State(h): State<Arc<Herald>>, Path(provider): Path<String>, req: Request) -> Response {
    if !["whatsapp", "messenger", "sms"].contains(&provider.as_str()) {
        return ApiError::NotFound(format!("Herald takes no callbacks from {provider:?}")).into_response();
    }
    let (uri, headers) = (req.uri().clone(), req.headers().clone());
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match handle(&h, &provider, &uri, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(h: &Herald, provider: &str, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    let c = &h.provider_config;
    let (reports, inbound) = match provider {
        "whatsapp" | "messenger" => {
            let secret = match provider {
                "whatsapp" => c.whatsapp.as_ref().and_then(|w| w.app_secret.clone()),
                _ => c.messenger.as_ref().and_then(|m| m.app_secret.clone()),
            }
            .ok_or_else(|| ApiError::NotFound(format!("{provider} callbacks need its app secret configured")))?;
            let given = headers.get("x-hub-signature-256").and_then(|v| v.to_str().ok()).unwrap_or_default();
            if !same(given, &hub_signature(secret.expose(), body)) {
                return Err(ApiError::Unauthorized("X-Hub-Signature-256 is missing or does not match the body"));
            }
            let v: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::field("body", format!("is not a {provider} webhook: {e}")))?;
            if provider == "whatsapp" {
                whatsapp::parse_webhook(&v)
            } else {
                messenger::parse_webhook(&v)
            }
        }
        "sms" => {
            let t = c.sms.as_ref().ok_or_else(|| ApiError::NotFound("sms callbacks need Twilio configured".into()))?;
            let base = c
                .public_url
                .as_ref()
                .ok_or_else(|| ApiError::NotFound("sms callbacks need HERALD_PUBLIC_URL".into()))?;
            // Twilio signs the URL it called: Herald's public URL, this path and query.
            let url =
                format!("{base}{}", uri.path_and_query().map(|p| p.as_str()).unwrap_or("/v1/providers/sms/events"));
            let params: Vec<(String, String)> =
                url::form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
            let given = headers.get("x-twilio-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
            if !same(given, &twilio_signature(t.auth_token.expose(), &url, &params)) {
                return Err(ApiError::Unauthorized("X-Twilio-Signature is missing or does not match"));
            }
            twilio::parse_callback(&params)
        }
        _ => return Err(ApiError::NotFound(format!("Herald takes no callbacks from \"{provider}\""))),
    };
    let applied = apply(&h.callbacks, provider, &reports, &inbound).await?;
    tracing::info!(provider, ?applied, "callback applied");
    if provider == "sms" {
        // Twilio expects TwiML; an empty response sends no reply to an inbound message.
        return Ok(([(header::CONTENT_TYPE, "text/xml")], "<Response></Response>").into_response());
    }
    Ok(Json(serde_json::json!({"ok": true, "applied": applied})).into_response())
}
