//! The HTTP baseline of `herald-bench http`: axum on tokio's default runtime, as its README writes
//! a server, doing what any JSON API must — read the body, parse it, check the key header,
//! answer `202` with a small JSON body — and nothing Herald adds (validation, storage,
//! queueing). Herald's figures are read against this one, measured in the same run with the same
//! `wrk`, so the machine's speed cancels out.
//!
//!     hello-http 127.0.0.1:8081

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};

static ACCEPTED: AtomicU64 = AtomicU64::new(0);

async fn accept(headers: HeaderMap, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    if headers.get("x-api-key").is_none() {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": {"code": "unauthorized"}})));
    }
    let recipients = body["recipients"].as_array().map_or(0, Vec::len);
    let n = ACCEPTED.fetch_add(1, Ordering::Relaxed);
    (StatusCode::ACCEPTED, Json(json!({"request_id": format!("req_{n:016x}"), "recipients": recipients})))
}

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8081".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    let app =
        Router::new().route("/v1/broadcasts", post(accept)).route("/healthz", axum::routing::get(|| async { "ok" }));
    axum::serve(listener, app).await.expect("serve");
}
