//! A sending call always answers well inside API Gateway's 30 s, even when the store or the
//! queue never answers: every retrying path runs under one policy with a deadline.

use async_trait::async_trait;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::{Duration, Instant};

use herald::app::{Herald, Stores};
use herald::domain::{RecipientRow, SendRequest, Status, TenantId};
use herald::ports::{
    Claim, JobQueue, Outcome, OutgoingJob, ReceivedJob, RequestLog, RowLeases, StatusLookup, StoreResult,
};
use herald::providers::Providers;
use herald_tests::tenant;

/// A request log and a queue whose every call hangs for ever.
struct Stalled;

async fn hang<T>() -> StoreResult<T> {
    std::future::pending().await
}

impl herald::ports::RowCounters for Stalled {}

#[async_trait]
impl RequestLog for Stalled {
    async fn insert_request(&self, _: &SendRequest, _: &[RecipientRow]) -> StoreResult<()> {
        hang().await
    }

    async fn get_request(&self, _: &TenantId, _: &str) -> StoreResult<Option<SendRequest>> {
        hang().await
    }

    async fn list_rows(&self, _: &TenantId, _: &str, _: Option<u32>, _: u32) -> StoreResult<Vec<RecipientRow>> {
        hang().await
    }

    async fn count_rows(&self, _: &TenantId, _: &str) -> StoreResult<herald::ports::RowCounts> {
        hang().await
    }

    async fn add_rows(&self, _: &TenantId, _: &str, _: &[RecipientRow]) -> StoreResult<Vec<String>> {
        hang().await
    }

    async fn finish_fan_out(&self, _: &TenantId, _: &str, _: DateTime<Utc>) -> StoreResult<()> {
        hang().await
    }

    async fn fail_fan_out(&self, _: &TenantId, _: &str, _: DateTime<Utc>, _: &str) -> StoreResult<()> {
        hang().await
    }

    async fn cancel_request(&self, _: &TenantId, _: &str, _: DateTime<Utc>) -> StoreResult<DateTime<Utc>> {
        hang().await
    }

    async fn progress(&self, _: &TenantId, _: &str) -> StoreResult<herald::ports::Progress> {
        hang().await
    }

    async fn list_requests(
        &self,
        _: &TenantId,
        _: Option<&str>,
        _: Option<&herald::ports::RequestCursor>,
        _: u32,
    ) -> StoreResult<herald::ports::RequestPage> {
        hang().await
    }
}

#[async_trait]
impl RowLeases for Stalled {
    async fn claim_row(&self, _: &TenantId, _: &str, _: DateTime<Utc>, _: DateTime<Utc>) -> StoreResult<Claim> {
        hang().await
    }

    async fn finish_row(&self, _: &TenantId, _: &str, _: u32, _: Outcome) -> StoreResult<bool> {
        hang().await
    }

    async fn fail_pending(&self, _: &TenantId, _: &str, _: &str) -> StoreResult<bool> {
        hang().await
    }

    async fn advance_row(
        &self,
        _: &TenantId,
        _: &str,
        _: Status,
        _: DateTime<Utc>,
        _: Option<String>,
    ) -> StoreResult<bool> {
        hang().await
    }
}

#[async_trait]
impl StatusLookup for Stalled {
    async fn get_row(&self, _: &TenantId, _: &str) -> StoreResult<Option<RecipientRow>> {
        hang().await
    }

    async fn find_by_external_id(&self, _: &str, _: &str) -> StoreResult<Option<(TenantId, String)>> {
        hang().await
    }
}

#[async_trait]
impl JobQueue for Stalled {
    async fn send_batch(&self, _: &[OutgoingJob]) -> StoreResult<()> {
        hang().await
    }
    async fn receive(&self, _: usize, _: Duration) -> StoreResult<Vec<ReceivedJob>> {
        hang().await
    }
    async fn delete(&self, _: &str) -> StoreResult<()> {
        hang().await
    }
    async fn change_visibility(&self, _: &str, _: Duration) -> StoreResult<()> {
        hang().await
    }
    async fn replace(&self, _: &ReceivedJob, _: &[OutgoingJob]) -> StoreResult<()> {
        hang().await
    }
}

/// Herald with the embedded catalog, keys and idempotency, and a stalled request log and queue.
fn stalled_herald(dir: &std::path::Path) -> Herald {
    let (store, _) = herald::adapters::embedded::open(dir, 10).unwrap();
    let mut stores = Stores::from_one(store.clone());
    stores.requests = Arc::new(Stalled);
    let sandbox = Arc::new(herald::providers::sandbox::Sandbox::new(store, Default::default()));
    Herald::new(stores, Arc::new(Stalled), Providers::all(sandbox), herald_tests::fast_settings())
}

async fn timed_submit(h: &Herald, key: Option<&str>) -> (StatusCode, Option<HeaderValue>, Duration) {
    let mut headers = HeaderMap::new();
    if let Some(k) = key {
        headers.insert("idempotency-key", HeaderValue::from_str(k).unwrap());
    }
    let body = br#"{"recipients": [{"phone": "+14155550100"}], "messages": [{"text": "hi"}]}"#;
    let started = Instant::now();
    let answer = herald::http::submit(h, &tenant("default"), &headers, body, "native").await;
    (answer.status(), answer.headers().get("retry-after").cloned(), started.elapsed())
}

#[tokio::test]
async fn a_send_is_answered_503_in_time_when_the_store_and_queue_never_answer() {
    let dir = tempfile::tempdir().unwrap();
    let h = stalled_herald(dir.path());
    let (without_key, with_key) = tokio::join!(timed_submit(&h, None), timed_submit(&h, Some("k-stalled")));
    for (status, retry_after, took) in [without_key, with_key] {
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(retry_after.is_some(), "a 503 says when to come back");
        assert!(took < Duration::from_secs(20), "answered after {took:?}: API Gateway gives up at 30 s");
    }
}
