//! Herald's test kit: an in-process Herald on a loopback port (the same assembly `herald serve`
//! uses), HTTP helpers, and the port contract suites every adapter must pass.

pub mod aws;
pub mod contract;
pub mod fake;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use herald::local::Local;
use herald::providers::sandbox::SandboxBehaviour;
use herald::Settings;

/// A tenant id as tests write them.
pub fn tenant(id: &str) -> herald::domain::TenantId {
    herald::domain::TenantId::new(id)
}

/// A running Herald with a fresh data directory and one key for tenant `default`.
pub struct TestServer {
    pub local: Local,
    pub addr: SocketAddr,
    pub key: String,
    pub http: reqwest::Client,
    stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

/// Settings for tests: short backoff so retries finish in milliseconds, and tenant URLs on
/// loopback allowed, since the fakes that play webhook receivers listen there.
pub fn fast_settings() -> Settings {
    Settings {
        allow_loopback_urls: true,
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(200),
        provider_timeout: Duration::from_secs(2),
        lease: Duration::from_secs(5),
        visibility: Duration::from_secs(10),
        ..Settings::default()
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(fast_settings(), SandboxBehaviour::default(), 8).await
    }

    pub async fn start_with(settings: Settings, sandbox: SandboxBehaviour, workers: usize) -> TestServer {
        TestServer::start_with_providers(settings, sandbox, workers, &Default::default()).await
    }

    /// With real providers for the channels `providers` configures (pointed at fakes in tests).
    pub async fn start_with_providers(
        settings: Settings,
        sandbox: SandboxBehaviour,
        workers: usize,
        providers: &herald::providers::config::ProviderConfig,
    ) -> TestServer {
        TestServer::start_serving(settings, sandbox, workers, providers, Default::default()).await
    }

    /// As [`TestServer::start_with_providers`], with the socket guarded by `limits`.
    pub async fn start_serving(
        settings: Settings,
        sandbox: SandboxBehaviour,
        workers: usize,
        providers: &herald::providers::config::ProviderConfig,
        limits: herald::http::server::Limits,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let local = Local::open_with(dir.path(), settings, sandbox, providers).await.expect("open local Herald");
        let key = herald::service::keys::create_key(local.herald.keys.as_ref(), "default", None).await.expect("key");
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        if workers > 0 {
            local.spawn_workers(workers, stop_rx);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = herald::http::router(local.herald.clone());
        tokio::spawn(herald::http::server::serve(listener, app, limits, std::future::pending()));
        TestServer { local, addr, key, http: reqwest::Client::new(), stop, _dir: dir }
    }

    /// With status events retried after these waits (milliseconds) rather than over a day.
    pub async fn start_with_event_schedule(waits_ms: &[u64]) -> TestServer {
        let schedule = waits_ms.iter().map(|ms| Duration::from_millis(*ms)).collect();
        let settings = Settings { event_retry_schedule: schedule, ..fast_settings() };
        TestServer::start_with(settings, SandboxBehaviour::default(), 8).await
    }

    /// A key for another tenant.
    pub async fn key_for(&self, tenant: &str) -> String {
        herald::service::keys::create_key(self.local.herald.keys.as_ref(), tenant, None).await.expect("key")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends `body` (JSON) with the default key; returns status and JSON body.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(&self.key, method, path, body).await
    }

    pub async fn call_as(&self, key: &str, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        read(req.send().await.expect("request")).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    /// Polls a send request until it has made all its rows and none is pending (or panics after
    /// `timeout`).
    pub async fn wait_terminal(&self, request_id: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (status, body) = self.get(&format!("/v1/broadcasts/{request_id}")).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if body["summary"]["pending"] == json!(0) && body["state"] != "fanning_out" {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "rows still pending after {timeout:?}: {}",
                body["summary"]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the sandbox recorded for the default tenant.
    pub async fn outbox(&self, request_id: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/v1/outbox?request_id={request_id}&limit=1000")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["messages"].as_array().cloned().unwrap_or_default()
    }

    pub fn herald(&self) -> Arc<herald::Herald> {
        self.local.herald.clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub async fn read(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
    (status, body)
}

/// The `field` names of an error body.
pub fn error_fields(body: &Value) -> Vec<String> {
    body["error"]["fields"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["field"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// What a server has stored and queued, to show that a call changed neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub counts: herald::adapters::embedded::StoreCounts,
    pub depth: (u64, u64, u64),
}

impl TestServer {
    pub async fn stored(&self) -> Stored {
        Stored {
            counts: self.local.store.counts().await.expect("store counts"),
            depth: self.local.queue.depth().await.expect("queue depth"),
        }
    }
}

impl Stored {
    /// What changed since `before`, in words (empty when nothing did).
    pub fn changes_since(&self, before: &Stored) -> Vec<String> {
        let mut out = Vec::new();
        if self.counts != before.counts {
            out.push(format!("store changed: {:?} (before the call {:?})", self.counts, before.counts));
        }
        if self.depth != before.depth {
            out.push(format!("queue depth {:?} (before the call {:?})", self.depth, before.depth));
        }
        out
    }
}

/// A client that opens a connection per request: the server answers an oversized body before
/// reading it and closes that connection, and a pooled client may pick the closing connection
/// for the next request.
pub fn unpooled_client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client")
}

/// `n` keys named `{prefix}{i}`, each with the value "v".
pub fn json_keys(prefix: &str, n: usize) -> Value {
    Value::Object((0..n).map(|i| (format!("{prefix}{i}"), json!("v"))).collect())
}

/// `s` cut to at most `max` bytes on a character boundary, with an ellipsis when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A call under an `Idempotency-Key` whose send request was stored but whose answer was lost (its
/// process died after storing): the client's retry with the same key answers that request,
/// replayed, and stores and sends nothing new. `base` serves `h`'s router; `key` is an API key
/// of `tenant`. Run on every store, so the rule holds in both shapes.
pub async fn a_lost_answer_is_answered_again(h: &herald::Herald, base: &str, key: &str, tenant: &str) {
    use herald::ports::Begin;
    let tenant = &herald::domain::TenantId::new(tenant);
    let body = json!({
        "recipients": [{"phone": "+14155550101"}, {"phone": "+14155550102"}],
        "messages": [{"text": "hello"}],
    });
    let fingerprint = herald::http::fingerprint("POST /v1/broadcasts", &serde_json::to_vec(&body).unwrap());
    // The process that died took the key two minutes ago (its lock has run out)...
    let then = herald::domain::now() - chrono::Duration::minutes(2);
    let begun = h.idempotency.begin(tenant, "k-lost", &fingerprint, then, Duration::from_secs(60)).await.unwrap();
    assert_eq!(begun, Begin::New);
    // ...and stored its request before it died.
    let plan = serde_json::from_value::<herald::domain::BroadcastBody>(body.clone()).unwrap().validate().unwrap();
    let stored = herald::service::ingest::with_idempotency_key(
        tenant,
        "k-lost",
        &fingerprint,
        herald::service::ingest::ingest(&h.ingest, tenant, plan, "native"),
    )
    .await;
    let stored_id = stored.0.expect("the first try stores its request").request.id.clone();
    assert!(!stored.1, "the first try stored a new request");

    let http = reqwest::Client::new();
    for attempt in 1..=2 {
        let resp = http
            .post(format!("{base}/v1/broadcasts"))
            .bearer_auth(key)
            .header("idempotency-key", "k-lost")
            .json(&body)
            .send()
            .await
            .unwrap();
        let replayed = resp.headers().get("idempotent-replayed").map(|v| v.to_str().unwrap().to_string());
        let (status, answer) = read(resp).await;
        assert_eq!(status, StatusCode::ACCEPTED, "retry {attempt}: {answer}");
        assert_eq!(replayed.as_deref(), Some("true"), "retry {attempt} replays the stored request");
        assert_eq!(answer["request_id"], json!(stored_id), "retry {attempt} answers the stored request");
        assert_eq!(answer["row_count"], json!(2));
        assert_eq!(answer["recipients"].as_array().map(Vec::len), Some(2), "{answer}");
    }
    // Another key is another request.
    let resp =
        http.post(format!("{base}/v1/broadcasts")).bearer_auth(key).header("idempotency-key", "k-new").json(&body);
    let (status, answer) = read(resp.send().await.unwrap()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_ne!(answer["request_id"], json!(stored_id));
}

/// `/v1/segments` end to end on `base` (a router over any store): members found or created,
/// added once, paged, refused with their paths, invisible to another tenant, gone with their
/// segment. `key` and `other_key` are API keys of two tenants. Run on every store, so both shapes
/// answer alike.
pub async fn segments_over_http(base: &str, key: &str, other_key: &str) {
    let http = reqwest::Client::new();
    let call = |key: &str, method: Method, path: &str, body: Option<Value>| {
        let mut req = http.request(method, format!("{base}{path}")).bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move { read(req.send().await.expect("request")).await }
    };
    let (status, body) = call(key, Method::PUT, "/v1/segments/vip", Some(json!({"name": "VIP"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let contacts: Vec<Value> = (0..30).map(|i| json!({"phone": format!("+1415555{i:04}")})).collect();
    let add = json!({"contacts": contacts});
    let (status, added) = call(key, Method::POST, "/v1/segments/vip/members", Some(add.clone())).await;
    assert_eq!(status, StatusCode::OK, "{added}");
    assert_eq!(added, json!({"added": 30, "already_members": 0, "created_contacts": 30, "member_count": 30}));
    let (_, again) = call(key, Method::POST, "/v1/segments/vip/members", Some(add)).await;
    assert_eq!(again, json!({"added": 0, "already_members": 30, "created_contacts": 0, "member_count": 30}));

    let (mut seen, mut cursor) = (Vec::new(), String::new());
    for _ in 0..20 {
        let (status, page) =
            call(key, Method::GET, &format!("/v1/segments/vip/members?limit=7&cursor={cursor}"), None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        seen.extend(page["contact_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
    }
    let first = seen[0].clone();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 30, "every member is listed once");

    let unknown = json!({"contact_ids": [first, "ghost"]});
    let (status, err) = call(key, Method::POST, "/v1/segments/vip/members", Some(unknown)).await;
    let expected = (StatusCode::UNPROCESSABLE_ENTITY, vec!["contact_ids[1]".to_string()]);
    assert_eq!((status, error_fields(&err)), expected, "{err}");
    let (status, err) = call(key, Method::GET, "/v1/segments/vip/members?cursor=forged", None).await;
    assert_eq!((status, error_fields(&err)), (StatusCode::BAD_REQUEST, vec!["cursor".to_string()]), "{err}");
    for (method, path) in [(Method::GET, "/v1/segments/vip"), (Method::GET, "/v1/segments/vip/members")] {
        assert_eq!(call(other_key, method, path, None).await.0, StatusCode::NOT_FOUND, "{path} of another tenant");
    }

    let remove = json!({"contact_ids": [first]});
    let (_, removed) = call(key, Method::DELETE, "/v1/segments/vip/members", Some(remove)).await;
    assert_eq!(removed, json!({"removed": 1}));
    let (_, got) = call(key, Method::GET, "/v1/segments", None).await;
    assert_eq!(got["segments"][0]["member_count"], json!(29), "{got}");
    assert_eq!(call(key, Method::DELETE, "/v1/segments/vip", None).await.0, StatusCode::NO_CONTENT);
    call(key, Method::PUT, "/v1/segments/vip", Some(json!({"name": "VIP"}))).await;
    let (_, got) = call(key, Method::GET, "/v1/segments/vip", None).await;
    assert_eq!(got["member_count"], json!(0), "a segment created again starts empty");
}
