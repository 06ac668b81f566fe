//! `GET/PUT /v1/settings`: what a tenant sets for itself. Today its `timezone`: the one Herald
//! uses for a recipient whose contact has none and whose phone number's country has several.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;

use super::error::ApiError;
use super::extract::{parse_json, JsonBytes, Tenant};
use super::schema::{native as doc, BodyRefusals, Refusals};
use crate::app::Herald;
use crate::domain::{check_timezone, FieldErrors};
use crate::ports::TenantSettings;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(super) fn routes() -> OpenApiRouter<Arc<Herald>> {
    OpenApiRouter::new().routes(routes!(put, get)).routes(routes!(new_twilio_secret))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    timezone: Option<String>,
}

fn view(s: &TenantSettings) -> Value {
    json!({"timezone": s.tz().name(), "updated_at": s.updated_at})
}

#[utoipa::path(get, path = "/v1/settings", operation_id = "get_settings", tag = "native", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The tenant's settings", body = doc::Settings), Refusals))]
pub async fn get(State(h): State<Arc<Herald>>, Tenant(tenant): Tenant) -> Result<Json<Value>, ApiError> {
    Ok(Json(view(&h.keys.get_settings(&tenant).await?)))
}

/// Replaces the settings whole: a field left out goes back to its default.
#[utoipa::path(put, path = "/v1/settings", operation_id = "put_settings", tag = "native", security(("bearer" = []), ("api_key" = [])), request_body = doc::SettingsBody,
    responses((status = 200, description = "Replaced", body = doc::Settings), Refusals, BodyRefusals))]
pub async fn put(
    State(h): State<Arc<Herald>>,
    Tenant(tenant): Tenant,
    JsonBytes(b): JsonBytes,
) -> Result<Json<Value>, ApiError> {
    let body: Body = parse_json(&b)?;
    let mut errs = FieldErrors::new();
    let timezone = body.timezone.and_then(|t| errs.take("timezone", check_timezone(&t)));
    errs.finish(()).map_err(ApiError::from)?;
    // The Twilio signing secret is not a setting the caller writes here: it stays as it was.
    let kept = h.keys.get_settings(&tenant).await?.twilio_signing_secret;
    let settings = TenantSettings { timezone, updated_at: Some(crate::domain::now()), twilio_signing_secret: kept };
    h.keys.put_settings(&tenant, &settings).await?;
    Ok(Json(view(&settings)))
}

/// `POST /v1/account/twilio-signing-secret`: makes (or replaces) the secret Twilio status
/// callbacks are signed with, and answers it this once.
#[utoipa::path(post, path = "/v1/account/twilio-signing-secret", tag = "native", security(("bearer" = []), ("api_key" = [])),
    responses((status = 201, description = "Made; shown this once", body = doc::TwilioSigningSecret), Refusals))]
pub async fn new_twilio_secret(
    State(h): State<Arc<Herald>>,
    Tenant(tenant): Tenant,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let secret = hex::encode(bytes);
    let mut settings = h.keys.get_settings(&tenant).await?;
    settings.twilio_signing_secret = Some(secret.clone());
    h.keys.put_settings(&tenant, &settings).await?;
    if let Some(ev) = &h.events {
        ev.forget(&tenant);
    }
    Ok((axum::http::StatusCode::CREATED, Json(json!({"twilio_signing_secret": secret}))))
}
