//! Templates, campaigns and contacts: create-or-replace, read, delete, list.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

use super::error::ApiError;
use super::extract::{parse_json, JsonBytes, Tenant};
use super::schema::{native as doc, BodyRefusals, Missing, Refusals};
use crate::app::Herald;
use crate::service::catalog as uc;
use utoipa_axum::{router::OpenApiRouter, routes};

type H = State<Arc<Herald>>;

pub(super) fn routes() -> OpenApiRouter<Arc<Herald>> {
    OpenApiRouter::new()
        .routes(routes!(list_templates))
        .routes(routes!(put_template, get_template, delete_template))
        .routes(routes!(list_campaigns))
        .routes(routes!(put_campaign, get_campaign, delete_campaign))
        .routes(routes!(upsert_contact))
        .routes(routes!(put_contact, get_contact))
}

fn saved<T: serde::Serialize>(value: &T, created: bool) -> Response {
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    (status, Json(value)).into_response()
}

#[utoipa::path(put, path = "/v1/templates/{id}", tag = "native", security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path)), request_body = doc::TemplateBody,
    responses((status = 200, description = "Replaced", body = doc::Template), (status = 201, description = "Created", body = doc::Template),
        Refusals, BodyRefusals))]
pub async fn put_template(
    State(h): H,
    Tenant(t): Tenant,
    Path(id): Path<String>,
    JsonBytes(b): JsonBytes,
) -> Result<Response, ApiError> {
    let (template, created) = uc::put_template(h.catalog.as_ref(), &t, &id, parse_json(&b)?).await?;
    Ok(saved(&template, created))
}

#[utoipa::path(get, path = "/v1/templates/{id}", tag = "native", security(("bearer" = []), ("api_key" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The template", body = doc::Template), Refusals, Missing))]
pub async fn get_template(State(h): H, Tenant(t): Tenant, Path(id): Path<String>) -> Result<Response, ApiError> {
    match h.catalog.get_template(&t, &id).await? {
        Some(x) => Ok(Json(x).into_response()),
        None => Err(ApiError::NotFound(format!("no template \"{id}\""))),
    }
}

#[utoipa::path(delete, path = "/v1/templates/{id}", tag = "native", security(("bearer" = []), ("api_key" = [])), params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), Refusals, Missing))]
pub async fn delete_template(State(h): H, Tenant(t): Tenant, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    if h.catalog.delete_template(&t, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no template \"{id}\"")))
    }
}

#[utoipa::path(get, path = "/v1/templates", tag = "native", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Every template of the tenant", body = doc::TemplateList), Refusals))]
pub async fn list_templates(State(h): H, Tenant(t): Tenant) -> Result<Response, ApiError> {
    Ok(Json(json!({"templates": h.catalog.list_templates(&t).await?})).into_response())
}

#[utoipa::path(put, path = "/v1/campaigns/{id}", tag = "native", security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path)), request_body = doc::CampaignBody,
    responses((status = 200, description = "Replaced", body = doc::Campaign), (status = 201, description = "Created", body = doc::Campaign),
        Refusals, BodyRefusals))]
pub async fn put_campaign(
    State(h): H,
    Tenant(t): Tenant,
    Path(id): Path<String>,
    JsonBytes(b): JsonBytes,
) -> Result<Response, ApiError> {
    let (campaign, created) = uc::put_campaign(h.catalog.as_ref(), &t, &id, parse_json(&b)?).await?;
    Ok(saved(&campaign, created))
}

#[utoipa::path(get, path = "/v1/campaigns/{id}", tag = "native", security(("bearer" = []), ("api_key" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The campaign", body = doc::Campaign), Refusals, Missing))]
pub async fn get_campaign(State(h): H, Tenant(t): Tenant, Path(id): Path<String>) -> Result<Response, ApiError> {
    match h.catalog.get_campaign(&t, &id).await? {
        Some(x) => Ok(Json(x).into_response()),
        None => Err(ApiError::NotFound(format!("no campaign \"{id}\""))),
    }
}

#[utoipa::path(delete, path = "/v1/campaigns/{id}", tag = "native", security(("bearer" = []), ("api_key" = [])), params(("id" = String, Path)),
    responses((status = 204, description = "Deleted"), Refusals, Missing))]
pub async fn delete_campaign(State(h): H, Tenant(t): Tenant, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    if h.catalog.delete_campaign(&t, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no campaign \"{id}\"")))
    }
}

#[utoipa::path(get, path = "/v1/campaigns", tag = "native", security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "Every campaign of the tenant", body = doc::CampaignList), Refusals))]
pub async fn list_campaigns(State(h): H, Tenant(t): Tenant) -> Result<Response, ApiError> {
    Ok(Json(json!({"campaigns": h.catalog.list_campaigns(&t).await?})).into_response())
}

#[utoipa::path(put, path = "/v1/contacts/{id}", tag = "native", security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path)), request_body = doc::ContactBody,
    responses((status = 200, description = "Updated: the fields given are merged in", body = doc::Contact),
        (status = 201, description = "Created", body = doc::Contact),
        Refusals, BodyRefusals))]
pub async fn put_contact(
    State(h): H,
    Tenant(t): Tenant,
    Path(id): Path<String>,
    JsonBytes(b): JsonBytes,
) -> Result<Response, ApiError> {
    let (contact, created) = uc::put_contact(h.contacts.as_ref(), &t, &id, parse_json(&b)?).await?;
    Ok(saved(&contact.to_json(), created))
}

#[utoipa::path(get, path = "/v1/contacts/{id}", tag = "native", security(("bearer" = []), ("api_key" = [])), params(("id" = String, Path)),
    responses((status = 200, description = "The contact", body = doc::Contact), Refusals, Missing))]
pub async fn get_contact(State(h): H, Tenant(t): Tenant, Path(id): Path<String>) -> Result<Response, ApiError> {
    match h.contacts.get_contact(&t, &id).await? {
        Some(c) => Ok(Json(c.to_json()).into_response()),
        None => Err(ApiError::NotFound(format!("no contact \"{id}\""))),
    }
}

/// `POST /v1/contacts`: finds the contact by its identifiers, or creates it.
#[utoipa::path(post, path = "/v1/contacts", tag = "native", security(("bearer" = []), ("api_key" = [])), request_body = doc::ContactBody,
    responses((status = 200, description = "Found and updated", body = doc::Contact),
        (status = 201, description = "Created", body = doc::Contact),
        Refusals, BodyRefusals))]
pub async fn upsert_contact(State(h): H, Tenant(t): Tenant, JsonBytes(b): JsonBytes) -> Result<Response, ApiError> {
    let (contact, created) = uc::upsert_contact(h.contacts.as_ref(), &t, parse_json(&b)?).await?;
    Ok(saved(&contact.to_json(), created))
}
