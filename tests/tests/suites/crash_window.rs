//! The window no queue can close: the provider accepted the message, and the worker died before
//! the row said so. Herald's policy: whoever reclaims the row asks the provider first (`lookup`)
//! and resends only if the provider cannot say. These tests measure the duplicates that causes:
//! none with a provider that can answer, exactly one per crash with one that cannot.

use async_trait::async_trait;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use herald::app::{Herald, Settings, Stores};
use herald::providers::{OutboundMessage, Provider, ProviderError, ProviderReceipt, Providers};
use herald_tests::fake::{FakeProvider, Reply};
use herald_tests::tenant;

/// Sends through `inner`, then crashes the worker once, before the outcome is recorded.
struct CrashAfterSend {
    inner: Arc<dyn Provider>,
    crashed: AtomicBool,
}

#[async_trait]
impl Provider for CrashAfterSend {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    async fn send(&self, m: &OutboundMessage) -> Result<ProviderReceipt, ProviderError> {
        let receipt = self.inner.send(m).await?;
        if !self.crashed.swap(true, Ordering::SeqCst) {
            panic!("the worker died after the provider accepted the message");
        }
        Ok(receipt)
    }
    async fn lookup(&self, m: &OutboundMessage) -> Result<Option<ProviderReceipt>, ProviderError> {
        self.inner.lookup(m).await
    }
}

/// Runs one message through a crash and returns how many times the provider got it.
async fn deliveries_after_a_crash(
    channel_provider: impl Fn(Arc<herald::adapters::embedded::EmbeddedStore>) -> Arc<dyn Provider>,
    recipient: serde_json::Value,
    count: impl Fn() -> usize,
) -> (usize, String) {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = herald::adapters::embedded::open(dir.path(), 10).unwrap();
    let crashing: Arc<dyn Provider> =
        Arc::new(CrashAfterSend { inner: channel_provider(store.clone()), crashed: AtomicBool::new(false) });
    let settings = Settings {
        lease: Duration::from_millis(200),
        visibility: Duration::from_millis(500),
        ..herald_tests::fast_settings()
    };
    let h = Arc::new(Herald::new(Stores::from_one(store.clone()), queue.clone(), Providers::all(crashing), settings));
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(herald::service::worker::run_pool(h.deliver.clone(), 2, Some(queue.wake_handle()), stop_rx));
    let plan = serde_json::from_value::<herald::domain::BroadcastBody>(
        json!({"recipients": [recipient], "messages": [{"text": "once"}]}),
    )
    .unwrap()
    .validate()
    .unwrap();
    let id = herald::service::ingest::ingest(&h.ingest, &tenant("t"), plan, "native").await.unwrap().request.id.clone();
    let row_id = herald::domain::RecipientRow::id_for(&id, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let row = loop {
        let row = h.requests.get_row(&tenant("t"), &row_id).await.unwrap().unwrap();
        if row.status.is_terminal() {
            break row;
        }
        assert!(tokio::time::Instant::now() < deadline, "the row never settled: {row:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = stop.send(true);
    assert_eq!(row.status, herald::domain::Status::Sent, "{row:?}");
    (count(), row.external_message_id.unwrap_or_default())
}

#[tokio::test]
async fn a_provider_that_can_answer_lookup_gets_the_message_once() {
    let outbox: Arc<std::sync::Mutex<Option<Arc<herald::adapters::embedded::EmbeddedStore>>>> = Default::default();
    let o = outbox.clone();
    let (_, external) = deliveries_after_a_crash(
        move |store| {
            *o.lock().unwrap() = Some(store.clone());
            Arc::new(herald::providers::sandbox::Sandbox::new(store, Default::default()))
        },
        json!({"phone": "+14155550123"}),
        // The sandbox's outbox is counted below, from the store.
        || 0,
    )
    .await;
    let store = outbox.lock().unwrap().clone().unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.outbox, 1, "the sandbox answered lookup: no duplicate");
    assert!(external.starts_with("sbx_"));
}

#[tokio::test]
async fn a_provider_that_cannot_answer_lookup_gets_at_most_one_duplicate_per_crash() {
    let fake = FakeProvider::start(Reply::json(200, json!({"ok": true, "result": {"message_id": 9}}))).await;
    let config = herald::providers::config::TelegramConfig {
        base_url: fake.url.clone(),
        bot_token: herald::providers::config::Secret::new("1:A"),
    };
    let f = fake.clone();
    let (sent, _) = deliveries_after_a_crash(
        move |_| {
            Arc::new(herald::providers::telegram::Telegram::new(
                herald::providers::http::client(Duration::from_secs(2)),
                config.clone(),
            ))
        },
        json!({"telegram_chat_id": "77"}),
        move || f.requests().len(),
    )
    .await;
    assert_eq!(sent, 2, "one crash in the window: the message went twice, and no more");
}

/// The rows store, failing the first `n` attempts to record an outcome.
struct FlakyFinish {
    inner: Arc<herald::adapters::embedded::EmbeddedStore>,
    failures_left: std::sync::atomic::AtomicU32,
}

#[async_trait]
impl herald::ports::RowCounters for FlakyFinish {
    async fn flush_counts(&self) -> herald::ports::StoreResult<()> {
        self.inner.flush_counts().await
    }
}

#[async_trait]
impl herald::ports::RequestLog for FlakyFinish {
    async fn insert_request(
        &self,
        r: &herald::domain::SendRequest,
        rows: &[herald::domain::RecipientRow],
    ) -> herald::ports::StoreResult<()> {
        self.inner.insert_request(r, rows).await
    }

    async fn get_request(
        &self,
        t: &herald::domain::TenantId,
        id: &str,
    ) -> herald::ports::StoreResult<Option<herald::domain::SendRequest>> {
        self.inner.get_request(t, id).await
    }

    async fn list_rows(
        &self,
        t: &herald::domain::TenantId,
        id: &str,
        after: Option<u32>,
        limit: u32,
    ) -> herald::ports::StoreResult<Vec<herald::domain::RecipientRow>> {
        self.inner.list_rows(t, id, after, limit).await
    }

    async fn count_rows(
        &self,
        t: &herald::domain::TenantId,
        id: &str,
    ) -> herald::ports::StoreResult<herald::ports::RowCounts> {
        self.inner.count_rows(t, id).await
    }

    async fn add_rows(
        &self,
        t: &herald::domain::TenantId,
        id: &str,
        rows: &[herald::domain::RecipientRow],
    ) -> herald::ports::StoreResult<Vec<String>> {
        self.inner.add_rows(t, id, rows).await
    }

    async fn finish_fan_out(
        &self,
        t: &herald::domain::TenantId,
        id: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> herald::ports::StoreResult<()> {
        self.inner.finish_fan_out(t, id, at).await
    }

    async fn fail_fan_out(
        &self,
        t: &herald::domain::TenantId,
        id: &str,
        at: chrono::DateTime<chrono::Utc>,
        reason: &str,
    ) -> herald::ports::StoreResult<()> {
        self.inner.fail_fan_out(t, id, at, reason).await
    }

    async fn cancel_request(
        &self,
        t: &herald::domain::TenantId,
        id: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> herald::ports::StoreResult<chrono::DateTime<chrono::Utc>> {
        self.inner.cancel_request(t, id, at).await
    }

    async fn progress(
        &self,
        t: &herald::domain::TenantId,
        id: &str,
    ) -> herald::ports::StoreResult<herald::ports::Progress> {
        self.inner.progress(t, id).await
    }

    async fn list_requests(
        &self,
        t: &herald::domain::TenantId,
        source: Option<&str>,
        cursor: Option<&herald::ports::RequestCursor>,
        limit: u32,
    ) -> herald::ports::StoreResult<herald::ports::RequestPage> {
        self.inner.list_requests(t, source, cursor, limit).await
    }
}

#[async_trait]
impl herald::ports::RowLeases for FlakyFinish {
    async fn claim_row(
        &self,
        t: &herald::domain::TenantId,
        id: &str,
        now: herald::domain::DateTimeUtc,
        lease: herald::domain::DateTimeUtc,
    ) -> herald::ports::StoreResult<herald::ports::Claim> {
        self.inner.claim_row(t, id, now, lease).await
    }

    async fn finish_row(
        &self,
        t: &herald::domain::TenantId,
        id: &str,
        attempt: u32,
        o: herald::ports::Outcome,
    ) -> herald::ports::StoreResult<bool> {
        let left = self.failures_left.load(Ordering::SeqCst);
        if left > 0 {
            self.failures_left.store(left - 1, Ordering::SeqCst);
            return Err(herald::ports::StoreError::Unavailable("the store blinked".into()));
        }
        self.inner.finish_row(t, id, attempt, o).await
    }

    async fn fail_pending(&self, t: &herald::domain::TenantId, id: &str, m: &str) -> herald::ports::StoreResult<bool> {
        self.inner.fail_pending(t, id, m).await
    }

    async fn advance_row(
        &self,
        t: &herald::domain::TenantId,
        id: &str,
        s: herald::domain::Status,
        at: herald::domain::DateTimeUtc,
        e: Option<String>,
    ) -> herald::ports::StoreResult<bool> {
        self.inner.advance_row(t, id, s, at, e).await
    }
}

#[async_trait]
impl herald::ports::StatusLookup for FlakyFinish {
    async fn get_row(
        &self,
        t: &herald::domain::TenantId,
        id: &str,
    ) -> herald::ports::StoreResult<Option<herald::domain::RecipientRow>> {
        self.inner.get_row(t, id).await
    }

    async fn find_by_external_id(
        &self,
        p: &str,
        e: &str,
    ) -> herald::ports::StoreResult<Option<(herald::domain::TenantId, String)>> {
        self.inner.find_by_external_id(p, e).await
    }
}

#[tokio::test]
async fn a_store_that_blinks_after_the_provider_accepted_does_not_cause_a_resend() {
    let fake = FakeProvider::start(Reply::json(200, json!({"ok": true, "result": {"message_id": 3}}))).await;
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = herald::adapters::embedded::open(dir.path(), 10).unwrap();
    let mut stores = Stores::from_one(store.clone());
    stores.requests = Arc::new(FlakyFinish { inner: store, failures_left: std::sync::atomic::AtomicU32::new(3) });
    let telegram = herald::providers::telegram::Telegram::new(
        herald::providers::http::client(Duration::from_secs(2)),
        herald::providers::config::TelegramConfig {
            base_url: fake.url.clone(),
            bot_token: herald::providers::config::Secret::new("1:A"),
        },
    );
    let h = Herald::new(stores, queue, Providers::all(Arc::new(telegram)), herald_tests::fast_settings());
    let plan = serde_json::from_value::<herald::domain::BroadcastBody>(
        json!({"recipients": [{"telegram_chat_id": "5"}], "messages": [{"text": "x"}], "background": false}),
    )
    .unwrap()
    .validate()
    .unwrap();
    let accepted = herald::service::ingest::ingest(&h.ingest, &tenant("t"), plan, "native").await.unwrap();
    assert_eq!(
        accepted.rows[0].status,
        herald::domain::Status::Sent,
        "the outcome was recorded after the store came back"
    );
    assert_eq!(fake.requests().len(), 1, "and the message went once");
}
