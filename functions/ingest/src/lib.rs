//! Herald's ingest Lambda: API Gateway HTTP API events go through the very router `herald serve`
//! uses; EventBridge events whose `detail` is a native send request go through the same
//! validation and idempotency (the event id is the idempotency key, since EventBridge may
//! deliver an event twice).

use axum::http::{HeaderMap, HeaderValue};
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use lambda_http::request::LambdaRequest;
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

use herald::app::Herald;

/// The tenant EventBridge events send for: `EVENTS_TENANT` (events carry no API key; who may put
/// them on the bus is decided by IAM).
pub struct Ingest {
    pub herald: Arc<Herald>,
    pub router: axum::Router,
    pub events_tenant: Option<String>,
}

impl Ingest {
    pub fn new(herald: Arc<Herald>, events_tenant: Option<String>) -> Ingest {
        let router = herald::http::router(herald.clone());
        Ingest { herald, router, events_tenant }
    }

    /// One invocation: an HTTP API request or an EventBridge event.
    pub async fn handle(&self, event: Value) -> Result<Value, lambda_runtime::Error> {
        // SES publishes delivery, bounce, complaint and open events to EventBridge; only AWS
        // (through IAM) can put them on the bus, so they need no signature of their own.
        if event["source"] == "aws.ses" {
            let reports: Vec<_> = herald::providers::email::parse_event(&event).into_iter().collect();
            let applied = herald::service::callbacks::apply(&self.herald.callbacks, "email", &reports, &[]).await?;
            return Ok(serde_json::json!({"status": 200, "applied": applied}));
        }
        if event.get("detail-type").is_some() && event.get("detail").is_some() {
            return self.handle_event(event).await;
        }
        // A raw `"` in the query (SMAX's documented URL) would make lambda_http panic.
        let event = herald::http::request_target::encode_api_gateway_event(event);
        let request: LambdaRequest = serde_json::from_value(event).map_err(|e| {
            format!("the event is neither an API Gateway HTTP API request nor an EventBridge event: {e}")
        })?;
        let request: lambda_http::Request = request.into();
        let response = self.router.clone().oneshot(request).await?;
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await?;
        let mut out = ApiGatewayV2httpResponse::default();
        out.status_code = i64::from(parts.status.as_u16());
        out.headers = parts.headers;
        out.body = (!bytes.is_empty()).then(|| lambda_http::Body::Text(String::from_utf8_lossy(&bytes).into_owned()));
        out.is_base64_encoded = false;
        Ok(serde_json::to_value(out)?)
    }

    async fn handle_event(&self, event: Value) -> Result<Value, lambda_runtime::Error> {
        let Some(tenant) = &self.events_tenant else {
            return Err("EVENTS_TENANT is not set: it names the tenant EventBridge events send for".into());
        };
        let id = event.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        let body = serde_json::to_vec(&event["detail"])?;
        let mut headers = HeaderMap::new();
        if let Ok(key) = HeaderValue::from_str(&format!("eventbridge:{id}")) {
            if !id.is_empty() {
                headers.insert("idempotency-key", key);
            }
        }
        let response = herald::http::submit(&self.herald, tenant, &headers, &body, "eventbridge").await;
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await?;
        let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status >= 400 {
            tracing::warn!(event_id = %id, status, error = %answer["error"]["message"], "event refused");
        }
        Ok(json!({"status": status, "body": answer}))
    }
}
