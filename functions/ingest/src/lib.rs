//! Herald's ingest Lambda. It is invoked with one of four typed events ([`Event`]): an API
//! Gateway HTTP API request goes through the very router `herald serve` uses, adapted the way
//! `lambda_http` adapts any axum app; an EventBridge event whose `detail` is a native send request
//! goes through the same validation and idempotency (the event id is the idempotency key, since
//! EventBridge may deliver an event twice); SES's status events update the rows they name; and an
//! S3 notice of a CSV file uploaded under `imports/{tenant}/{segment}/` starts its import.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use lambda_http::request::LambdaRequest;
use lambda_http::Context;
use lambda_runtime::LambdaEvent;
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;

use herald::app::Herald;
use herald::domain::TenantId;

/// What the ingest function is invoked with.
#[derive(Debug)]
pub enum Event {
    /// An API Gateway HTTP API (payload 2.0) request.
    Http(Box<LambdaRequest>),
    /// Delivery, bounce, complaint and open events SES publishes to EventBridge. Only AWS can put
    /// them on the bus (IAM decides), so they carry no signature of their own.
    SesStatus(Box<EventBridgeEvent>),
    /// Any other EventBridge event: its `detail` is a native send request.
    Send(Box<EventBridgeEvent>),
    /// Objects created in the import bucket (S3 invokes the function with `Records`).
    Uploads(S3Notice),
}

/// The parts of an S3 event notification Herald reads.
#[derive(Debug, serde::Deserialize)]
pub struct S3Notice {
    #[serde(rename = "Records")]
    pub records: Vec<S3Record>,
}

#[derive(Debug, serde::Deserialize)]
pub struct S3Record {
    #[serde(rename = "eventSource", default)]
    pub event_source: String,
    pub s3: S3Entity,
}

#[derive(Debug, serde::Deserialize)]
pub struct S3Entity {
    pub object: S3Object,
}

#[derive(Debug, serde::Deserialize)]
pub struct S3Object {
    /// URL-encoded, as S3 sends it.
    pub key: String,
    #[serde(rename = "eTag", default)]
    pub e_tag: String,
}

impl Event {
    /// Reads an invocation payload as one of the events, or says why it is none of them.
    pub fn parse(payload: Value) -> Result<Event, lambda_runtime::Error> {
        // EventBridge's envelope has required fields (`detail-type`, `source`) that an HTTP
        // request never has, so trying it first cannot mistake a request for an event.
        if let Ok(event) = serde_json::from_value::<EventBridgeEvent>(payload.clone()) {
            return Ok(match event.source.as_str() {
                "aws.ses" => Event::SesStatus(Box::new(event)),
                _ => Event::Send(Box::new(event)),
            });
        }
        if payload.get("Records").is_some() {
            let notice: S3Notice = serde_json::from_value(payload).map_err(|e| format!("not an S3 notice: {e}"))?;
            if notice.records.iter().any(|r| r.event_source != "aws:s3") {
                return Err("a Records event whose source is not aws:s3".into());
            }
            return Ok(Event::Uploads(notice));
        }
        // A raw `"` in the query (SMAX's documented URL) would make lambda_http panic.
        let payload = herald::http::request_target::encode_api_gateway_event(payload);
        let request = serde_json::from_value::<LambdaRequest>(payload).map_err(|e| {
            format!("the event is neither an API Gateway HTTP API request nor an EventBridge event: {e}")
        })?;
        Ok(Event::Http(Box::new(request)))
    }
}

/// The tenant EventBridge events send for: `EVENTS_TENANT` (events carry no API key; who may put
/// them on the bus is decided by IAM).
pub struct Ingest {
    pub herald: Arc<Herald>,
    pub router: axum::Router,
    pub events_tenant: Option<TenantId>,
}

impl Ingest {
    pub fn new(herald: Arc<Herald>, events_tenant: Option<TenantId>) -> Ingest {
        let router = herald::http::router(herald.clone());
        Ingest::with_router(herald, router, events_tenant)
    }

    /// An ingest function serving `router` for HTTP events.
    pub fn with_router(herald: Arc<Herald>, router: axum::Router, events_tenant: Option<TenantId>) -> Ingest {
        let router = router.layer(axum::middleware::map_response(join_repeated_headers));
        Ingest { herald, router, events_tenant }
    }

    /// One invocation, without a Lambda context (tests, local runs).
    pub async fn handle(&self, payload: Value) -> Result<Value, lambda_runtime::Error> {
        self.handle_in(payload, Context::default()).await
    }

    /// One invocation: an HTTP API request, an SES status event, a send event or uploads.
    pub async fn handle_in(&self, payload: Value, context: Context) -> Result<Value, lambda_runtime::Error> {
        match Event::parse(payload)? {
            Event::Http(request) => self.http(*request, context).await,
            Event::SesStatus(event) => self.ses_status(&event).await,
            Event::Send(event) => self.send(&event).await,
            Event::Uploads(notice) => self.uploads(&notice).await,
        }
    }

    /// Starts an import per uploaded file. A key that names no tenant and segment is logged and
    /// passed over (sending it again would not help); a store that blinks fails the invocation,
    /// so S3's retry comes again, and the import id, derived from the upload, keeps it one import.
    async fn uploads(&self, notice: &S3Notice) -> Result<Value, lambda_runtime::Error> {
        use herald::service::imports::{start_uploaded, Upload};
        let Some(imports) = &self.herald.imports else {
            return Err("IMPORT_BUCKET is not set: uploads cannot be imported".into());
        };
        let mut started = Vec::new();
        for record in &notice.records {
            let upload = match Upload::from_notice(&record.s3.object.key, &record.s3.object.e_tag) {
                Ok(u) => u,
                Err(why) => {
                    tracing::warn!(key = %record.s3.object.key, %why, "upload passed over");
                    continue;
                }
            };
            let import = start_uploaded(imports, &upload.tenant, &upload.segment_id, &upload.import_id, &upload.key)
                .await
                .map_err(|e| format!("import of {} not started: {e}", upload.key))?;
            started.push(json!({"import_id": import.id, "state": import.state}));
        }
        Ok(json!({"imports": started}))
    }

    /// Through `lambda_http`'s own adapter, which base64-encodes binary bodies and moves
    /// `Set-Cookie` into the answer's `cookies`.
    async fn http(&self, request: LambdaRequest, context: Context) -> Result<Value, lambda_runtime::Error> {
        let adapter = lambda_http::Adapter::from(self.router.clone());
        let response = adapter.oneshot(LambdaEvent::new(request, context)).await?;
        Ok(serde_json::to_value(response)?)
    }

    async fn ses_status(&self, event: &EventBridgeEvent) -> Result<Value, lambda_runtime::Error> {
        let event = serde_json::to_value(event)?;
        let reports: Vec<_> = herald::providers::email::parse_event(&event).into_iter().collect();
        let applied = herald::service::callbacks::apply(&self.herald.callbacks, "email", &reports, &[]).await?;
        Ok(json!({"status": 200, "applied": applied}))
    }

    async fn send(&self, event: &EventBridgeEvent) -> Result<Value, lambda_runtime::Error> {
        let Some(tenant) = &self.events_tenant else {
            return Err("EVENTS_TENANT is not set: it names the tenant EventBridge events send for".into());
        };
        let id = event.id.clone().unwrap_or_default();
        let body = serde_json::to_vec(&event.detail)?;
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

/// API Gateway's payload 2.0 has one value per header name and wants repeats joined with commas;
/// serialising a header map as it is keeps only the first. `Set-Cookie` is left alone: the
/// adapter moves every one of them into `cookies`.
async fn join_repeated_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let repeated: Vec<_> = headers
        .keys()
        .filter(|k| *k != axum::http::header::SET_COOKIE && headers.get_all(*k).iter().nth(1).is_some())
        .cloned()
        .collect();
    for name in repeated {
        let joined: Vec<&[u8]> = headers.get_all(&name).iter().map(HeaderValue::as_bytes).collect();
        if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b", "[..])) {
            headers.insert(name, value);
        }
    }
    response
}
