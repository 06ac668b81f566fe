//! Templates, campaigns and contacts: create-or-replace, read, delete, list.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;

use super::error::ApiError;
use super::extract::{parse_json, JsonBytes, Tenant};
use crate::app::Herald;
use crate::service::catalog as uc;

type H = State<Arc<Herald>>;

fn saved<T: serde::Serialize>(value: &T, created: bool) -> Response {
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    (status, Json(value)).into_response()
}

pub async fn put_template(
    State(h): H,
    Tenant(t): Tenant,
    Path(id): Path<String>,
    JsonBytes(b): JsonBytes,
) -> Result<Response, ApiError> {
    let (template, created) = uc::put_template(h.catalog.as_ref(), &t, &id, parse_json(&b)?).await?;
    Ok(saved(&template, created))
}

pub async fn get_template(State(h): H, Tenant(t): Tenant, Path(id): Path<String>) -> Result<Response, ApiError> {
    match h.catalog.get_template(&t, &id).await? {
        Some(x) => Ok(Json(x).into_response()),
        None => Err(ApiError::NotFound(format!("no template \"{id}\""))),
    }
}

pub async fn delete_template(State(h): H, Tenant(t): Tenant, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    if h.catalog.delete_template(&t, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no template \"{id}\"")))
    }
}

pub async fn list_templates(State(h): H, Tenant(t): Tenant) -> Result<Response, ApiError> {
    Ok(Json(json!({"templates": h.catalog.list_templates(&t).await?})).into_response())
}

pub async fn put_campaign(
    State(h): H,
    Tenant(t): Tenant,
    Path(id): Path<String>,
    JsonBytes(b): JsonBytes,
) -> Result<Response, ApiError> {
    let (campaign, created) = uc::put_campaign(h.catalog.as_ref(), &t, &id, parse_json(&b)?).await?;
    Ok(saved(&campaign, created))
}

pub async fn get_campaign(State(h): H, Tenant(t): Tenant, Path(id): Path<String>) -> Result<Response, ApiError> {
    match h.catalog.get_campaign(&t, &id).await? {
        Some(x) => Ok(Json(x).into_response()),
        None => Err(ApiError::NotFound(format!("no campaign \"{id}\""))),
    }
}

pub async fn delete_campaign(State(h): H, Tenant(t): Tenant, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    if h.catalog.delete_campaign(&t, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no campaign \"{id}\"")))
    }
}

pub async fn list_campaigns(State(h): H, Tenant(t): Tenant) -> Result<Response, ApiError> {
    Ok(Json(json!({"campaigns": h.catalog.list_campaigns(&t).await?})).into_response())
}

pub async fn put_contact(
    State(h): H,
    Tenant(t): Tenant,
    Path(id): Path<String>,
    JsonBytes(b): JsonBytes,
) -> Result<Response, ApiError> {
    let (contact, created) = uc::put_contact(h.contacts.as_ref(), &t, &id, parse_json(&b)?).await?;
    Ok(saved(&contact.to_json(), created))
}

pub async fn get_contact(State(h): H, Tenant(t): Tenant, Path(id): Path<String>) -> Result<Response, ApiError> {
    match h.contacts.get_contact(&t, &id).await? {
        Some(c) => Ok(Json(c.to_json()).into_response()),
        None => Err(ApiError::NotFound(format!("no contact \"{id}\""))),
    }
}

pub async fn upsert_contact(State(h): H, Tenant(t): Tenant, JsonBytes(b): JsonBytes) -> Result<Response, ApiError> {
    let (contact, created) = uc::upsert_contact(h.contacts.as_ref(), &t, parse_json(&b)?).await?;
    Ok(saved(&contact.to_json(), created))
}
