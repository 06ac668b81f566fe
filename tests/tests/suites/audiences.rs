//! Audience broadcasts through the front door: a broadcast to segments is fanned out through the
//! queue into one row per member, a contact in two segments gets one message, excluded members
//! none; cancel stops what is not yet sent; another tenant's segments and requests are 404.

use herald::providers::sandbox::SandboxBehaviour;
use herald_tests::{error_fields, fast_settings, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

/// A phone number for member `i` (100,000 distinct ones).
fn phone(i: usize) -> String {
    const AREAS: [u32; 10] = [415, 212, 312, 617, 206, 303, 512, 702, 404, 305];
    format!("+1{}555{:04}", AREAS[i / 10_000 % AREAS.len()], i % 10_000)
}

/// Creates segment `id` holding the contacts with the phones of `members` (found or created).
async fn segment(s: &TestServer, id: &str, members: std::ops::Range<usize>) {
    let (status, body) = s.put(&format!("/v1/segments/{id}"), json!({"name": id})).await;
    assert!(status.is_success(), "{status} {body}");
    let all: Vec<usize> = members.collect();
    for chunk in all.chunks(10_000) {
        let contacts: Vec<Value> = chunk.iter().map(|i| json!({"phone": phone(*i)})).collect();
        let (status, body) = s.post(&format!("/v1/segments/{id}/members"), json!({"contacts": contacts})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
}

async fn broadcast(s: &TestServer, audience: Value) -> Value {
    let body = json!({"audience": audience, "messages": [{"text": "Hello"}], "channel": "sms"});
    let (status, answer) = s.post("/v1/broadcasts", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    answer
}

/// Polls until the request has left `fanning_out` and no row is pending.
async fn settled(s: &TestServer, id: &str, timeout: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (status, body) = s.get(&format!("/v1/broadcasts/{id}?limit=1")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["state"] != "fanning_out" && body["summary"]["pending"] == json!(0) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "not settled after {timeout:?}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A segment of `members.len()` new contacts, made by a CSV import (the members API's own tests
/// are in segments.rs; an import of 100,000 lines takes seconds where a hundred thousand
/// contacts through the members API take a minute in a debug build).
async fn imported_segment(s: &TestServer, id: &str, members: std::ops::Range<usize>) {
    let (status, body) = s.put(&format!("/v1/segments/{id}"), json!({"name": id})).await;
    assert!(status.is_success(), "{status} {body}");
    let mut csv = String::from("phone\n");
    for i in members.clone() {
        csv.push_str(&phone(i));
        csv.push('\n');
    }
    let req = s.http.post(s.url(&format!("/v1/imports?segment_id={id}"))).bearer_auth(&s.key);
    let (status, import) =
        herald_tests::read(req.header("content-type", "text/csv").body(csv).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{import}");
    let path = format!("/v1/imports/{}", import["import_id"].as_str().unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let (_, now) = s.get(&path).await;
        if now["state"] != "running" {
            assert_eq!(
                (now["state"].clone(), now["created"].clone()),
                (json!("completed"), json!(members.len())),
                "{now}"
            );
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "import still running: {now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_member_segment_gets_exactly_one_message_each() {
    const MEMBERS: usize = 100_000;
    let s = TestServer::start().await;
    imported_segment(&s, "everyone", 0..MEMBERS).await;
    let before = s.stored().await.counts;
    let answer = broadcast(&s, json!({"segments": ["everyone"]})).await;
    assert_eq!(answer["state"], "fanning_out", "{answer}");
    assert_eq!(answer["summary"]["total"], Value::Null, "the total is not known before fan-out: {answer}");
    let id = answer["request_id"].as_str().unwrap();

    let done = settled(&s, id, Duration::from_secs(600)).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["summary"]["total"], json!(MEMBERS), "{done}");
    assert_eq!(done["summary"]["by_status"], json!({"sent": MEMBERS}), "{done}");
    assert_eq!((done["recipient_count"].clone(), done["row_count"].clone()), (json!(MEMBERS), json!(MEMBERS)));
    assert_eq!(answer["row_count"], Value::Null, "not known while fanning out: {answer}");
    let after = s.stored().await.counts;
    assert_eq!(after.rows - before.rows, MEMBERS as u64, "one row per member");
    assert_eq!(after.outbox - before.outbox, MEMBERS as u64, "one sandbox record per member");
    assert_eq!(after.contacts, before.contacts, "fan-out creates no contact");

    // The rows page through in a stable order and name every member once.
    let mut seen = HashSet::new();
    let mut cursor: Option<u64> = None;
    loop {
        let path = match cursor {
            Some(c) => format!("/v1/broadcasts/{id}?limit=1000&cursor={c}"),
            None => format!("/v1/broadcasts/{id}?limit=1000"),
        };
        let (_, page) = s.get(&path).await;
        for r in page["recipients"].as_array().unwrap() {
            assert!(seen.insert(r["contact_id"].as_str().unwrap().to_string()), "a contact listed twice: {r}");
        }
        match page["next_cursor"].as_u64() {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen.len(), MEMBERS);
}

#[tokio::test]
async fn a_contact_in_two_segments_gets_one_message_and_excluded_members_none() {
    let s = TestServer::start().await;
    segment(&s, "a", 0..30).await;
    segment(&s, "b", 20..50).await;
    segment(&s, "blocked", 0..5).await;
    let answer = broadcast(&s, json!({"segments": ["a", "b"], "exclude_segments": ["blocked"]})).await;
    let id = answer["request_id"].as_str().unwrap();
    let done = settled(&s, id, Duration::from_secs(60)).await;
    assert_eq!(done["summary"]["total"], json!(45), "{done}");
    let sent: Vec<String> = s.outbox(id).await.iter().map(|m| m["to"].as_str().unwrap().to_string()).collect();
    let distinct: HashSet<&String> = sent.iter().collect();
    assert_eq!(sent.len(), 45, "{sent:?}");
    assert_eq!(distinct.len(), 45, "someone got two messages: {sent:?}");
    for i in 0..5 {
        assert!(!distinct.contains(&phone(i)), "excluded member {i} got a message");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_every_row_not_already_inside_a_provider_call() {
    const WORKERS: usize = 4;
    let sandbox = SandboxBehaviour { delay: Duration::from_millis(20), ..Default::default() };
    let s = TestServer::start_with(fast_settings(), sandbox, WORKERS).await;
    segment(&s, "all", 0..3_000).await;
    let answer = broadcast(&s, json!({"segments": ["all"]})).await;
    let id = answer["request_id"].as_str().unwrap().to_string();
    // Let some go out first.
    loop {
        let (_, now) = s.get(&format!("/v1/broadcasts/{id}?limit=1")).await;
        if now["summary"]["by_status"]["sent"].as_u64().unwrap_or(0) >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, canceled) = s.post(&format!("/v1/broadcasts/{id}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::OK, "{canceled}");
    let at_answer = s.stored().await.counts.outbox;
    assert_eq!(canceled["state"], "canceled", "{canceled}");
    assert!(canceled["canceled_at"].is_string(), "{canceled}");

    let done = settled(&s, &id, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "canceled", "{done}");
    let after = s.stored().await.counts.outbox;
    assert!(after - at_answer <= WORKERS as u64, "{} sends began after the cancel was answered", after - at_answer);
    let by = &done["summary"]["by_status"];
    let (sent, gone) = (by["sent"].as_u64().unwrap_or(0), by["canceled"].as_u64().unwrap_or(0));
    assert!(gone > 0, "{done}");
    assert_eq!(sent + gone, done["summary"]["rows_made"].as_u64().unwrap(), "every row is sent or canceled: {done}");
    assert_eq!(sent, after, "each sent row has its one sandbox record");

    // Canceling again changes nothing; the rows say `canceled`.
    let (status, again) = s.post(&format!("/v1/broadcasts/{id}/cancel"), json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["canceled_at"], canceled["canceled_at"]);
    let (_, page) = s.get(&format!("/v1/broadcasts/{id}?limit=1000")).await;
    let statuses: HashSet<&str> =
        page["recipients"].as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap()).collect();
    assert!(statuses.contains("canceled"), "{statuses:?}");
}

#[tokio::test]
async fn another_tenants_segments_and_broadcasts_are_not_found() {
    let s = TestServer::start().await;
    segment(&s, "mine", 0..3).await;
    let other = s.key_for("other").await;
    let body = json!({"audience": {"segments": ["mine"]}, "messages": [{"text": "Hi"}]});
    let (status, answer) = s.call_as(&other, Method::POST, "/v1/broadcasts", Some(body)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");

    let id = broadcast(&s, json!({"segments": ["mine"]})).await["request_id"].as_str().unwrap().to_string();
    let (status, _) = s.call_as(&other, Method::POST, &format!("/v1/broadcasts/{id}/cancel"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s.call_as(&other, Method::GET, &format!("/v1/broadcasts/{id}"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let done = settled(&s, &id, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "completed", "another tenant's cancel touched nothing: {done}");
    let (status, _) = s.post("/v1/broadcasts/req_nosuch/cancel", json!({})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn an_audience_is_checked_before_anything_is_stored() {
    let s = TestServer::start().await;
    segment(&s, "x", 0..1).await;
    let cases = [
        (json!({"audience": {"segments": ["x"]}, "recipients": [{"phone": phone(1)}]}), "audience"),
        (json!({"audience": {"segments": []}}), "audience.segments"),
        (json!({"audience": {"segments": ["x", "x"]}}), "audience.segments[1]"),
        (json!({"audience": {"segments": ["x"], "exclude_segments": ["x"]}}), "audience.exclude_segments[0]"),
        (json!({"audience": {"segments": ["bad id"]}}), "audience.segments[0]"),
        (json!({"audience": {"segments": ["x"]}, "background": false}), "background"),
    ];
    let before = s.stored().await.counts;
    for (mut body, field) in cases {
        body["messages"] = json!([{"text": "Hi"}]);
        let (status, answer) = s.post("/v1/broadcasts", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {answer}");
        assert!(error_fields(&answer).iter().any(|f| f.starts_with(field)), "{body} → {answer}");
    }
    let unknown_field = json!({"audience": {"segments": ["x"], "other": 1}, "messages": [{"text": "Hi"}]});
    let (status, answer) = s.post("/v1/broadcasts", unknown_field).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, answer) =
        s.post("/v1/broadcasts", json!({"audience": {"segments": ["nosuch"]}, "messages": [{"text": "Hi"}]})).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{answer}");
    assert_eq!(s.stored().await.counts.requests, before.requests, "nothing stored");
}

/// A page of members that cannot be read: a permanent failure ends the fan-out (the rows made
/// before it still send, the request says why, the job is gone); a transient one comes again.
mod unreadable_pages {
    use super::*;
    use async_trait::async_trait;
    use herald::adapters::embedded::{self, EmbeddedStore};
    use herald::app::{Herald, Stores};
    use herald::domain::{Segment, TenantId};
    use herald::ports::{JobQueue, MemberPage, MembersError, Segments, StoreError, StoreResult};
    use herald::providers::sandbox::Sandbox;
    use herald::providers::Providers;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// The embedded store's segments, with every listing of `segment`'s members failing while
    /// `failures_left` lasts (`u32::MAX`: always), as `fault` says.
    struct Unreadable {
        inner: Arc<EmbeddedStore>,
        segment: &'static str,
        fault: fn() -> MembersError,
        failures_left: AtomicU32,
        listings: AtomicU32,
    }

    #[async_trait]
    impl Segments for Unreadable {
        async fn put_segment(&self, t: &TenantId, s: &Segment) -> StoreResult<(Segment, bool)> {
            self.inner.put_segment(t, s).await
        }
        async fn get_segment(&self, t: &TenantId, id: &str) -> StoreResult<Option<Segment>> {
            self.inner.get_segment(t, id).await
        }
        async fn list_segments(&self, t: &TenantId) -> StoreResult<Vec<Segment>> {
            self.inner.list_segments(t).await
        }
        async fn delete_segment(&self, t: &TenantId, id: &str) -> StoreResult<bool> {
            self.inner.delete_segment(t, id).await
        }
        async fn add_members(&self, t: &TenantId, seg: &str, ids: &[String]) -> Result<u64, MembersError> {
            self.inner.add_members(t, seg, ids).await
        }
        async fn remove_members(&self, t: &TenantId, seg: &str, ids: &[String]) -> Result<u64, MembersError> {
            self.inner.remove_members(t, seg, ids).await
        }
        async fn list_members(
            &self,
            t: &TenantId,
            seg: &str,
            cursor: Option<&str>,
            limit: u32,
        ) -> Result<MemberPage, MembersError> {
            if seg == self.segment {
                self.listings.fetch_add(1, Ordering::SeqCst);
                let left = self.failures_left.load(Ordering::SeqCst);
                if left > 0 {
                    if left != u32::MAX {
                        self.failures_left.fetch_sub(1, Ordering::SeqCst);
                    }
                    return Err((self.fault)());
                }
            }
            self.inner.list_members(t, seg, cursor, limit).await
        }
        async fn member_count(&self, t: &TenantId, seg: &str) -> Result<u64, MembersError> {
            self.inner.member_count(t, seg).await
        }
        async fn segments_of(&self, t: &TenantId, contact: &str) -> StoreResult<Vec<String>> {
            self.inner.segments_of(t, contact).await
        }
    }

    /// A Herald over the embedded store with `broken`'s members unreadable, served on loopback
    /// with its workers running.
    struct Rig {
        base: String,
        key: String,
        http: reqwest::Client,
        segments: Arc<Unreadable>,
        queue: Arc<embedded::EmbeddedQueue>,
        stop: tokio::sync::watch::Sender<bool>,
        _dir: tempfile::TempDir,
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            let _ = self.stop.send(true);
        }
    }

    async fn rig(fault: fn() -> MembersError, failures: u32) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (store, queue) = embedded::open(dir.path(), 10).unwrap();
        let segments = Arc::new(Unreadable {
            inner: store.clone(),
            segment: "broken",
            fault,
            failures_left: AtomicU32::new(failures),
            listings: AtomicU32::new(0),
        });
        let mut stores = Stores::from_one(store.clone());
        stores.segments = segments.clone();
        let sandbox = Arc::new(Sandbox::new(store.clone(), SandboxBehaviour::default()));
        let h = Arc::new(Herald::new(stores, queue.clone(), Providers::all(sandbox), fast_settings()));
        let key = herald::service::keys::create_key(h.keys.as_ref(), "default", None).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = herald::http::router(h.clone());
        tokio::spawn(herald::http::server::serve(listener, app, Default::default(), std::future::pending()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(herald::service::worker::run_pool(h.deliver.clone(), 4, Some(queue.wake_handle()), stopped));
        Rig { base, key, http: reqwest::Client::new(), segments, queue, stop, _dir: dir }
    }

    impl Rig {
        async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
            let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
            if let Some(b) = body {
                req = req.json(&b);
            }
            herald_tests::read(req.send().await.unwrap()).await
        }

        async fn segment(&self, id: &str, members: std::ops::Range<usize>) {
            self.call(Method::PUT, &format!("/v1/segments/{id}"), Some(json!({"name": id}))).await;
            let contacts: Vec<Value> = members.map(|i| json!({"phone": phone(i)})).collect();
            let path = format!("/v1/segments/{id}/members");
            let (status, body) = self.call(Method::POST, &path, Some(json!({"contacts": contacts}))).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }

        /// Broadcasts to `segments` and waits until it has settled; its final view.
        async fn broadcast(&self, segments: &[&str]) -> Value {
            let body = json!({"audience": {"segments": segments}, "messages": [{"text": "Hi"}], "channel": "sms"});
            let (status, answer) = self.call(Method::POST, "/v1/broadcasts", Some(body)).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
            let id = answer["request_id"].as_str().unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let (_, view) = self.call(Method::GET, &format!("/v1/broadcasts/{id}"), None).await;
                if view["state"] != "fanning_out" && view["summary"]["pending"] == json!(0) {
                    return view;
                }
                assert!(tokio::time::Instant::now() < deadline, "not settled: {view}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        async fn sandbox_records(&self, request_id: &str) -> usize {
            let path = format!("/v1/outbox?request_id={request_id}&limit=1000");
            let (_, body) = self.call(Method::GET, &path, None).await;
            body["messages"].as_array().unwrap().len()
        }
    }

    async fn a_permanent_failure_ends_the_fan_out(fault: fn() -> MembersError) {
        let r = rig(fault, u32::MAX).await;
        r.segment("fine", 0..3).await;
        r.segment("broken", 3..5).await;
        r.segment("after", 5..7).await;
        let done = r.broadcast(&["fine", "broken", "after"]).await;
        let id = done["request_id"].as_str().unwrap();
        assert_eq!(done["state"], "completed", "{done}");
        let why = done["fan_out_error"].as_str().unwrap_or_else(|| panic!("no fan_out_error: {done}"));
        assert!(why.starts_with("fan-out stopped in segment \"broken\" after 1 page of members: "), "{why}");
        assert_eq!(done["summary"]["total"], json!(3), "{done}");
        assert_eq!(r.sandbox_records(id).await, 3, "the rows made before the failure still send");
        // A job retried forever would list the broken segment again every backoff (20 ms here).
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(r.segments.listings.load(Ordering::SeqCst), 1, "the failing page is read once");
        let left = r.queue.receive(10, Duration::from_secs(30)).await.unwrap();
        assert!(left.is_empty(), "the fan-out job is deleted: {left:?}");
    }

    #[tokio::test]
    async fn a_page_the_store_cannot_read_ends_the_fan_out_as_failed() {
        a_permanent_failure_ends_the_fan_out(|| MembersError::Store(StoreError::Corrupt("bad member".into()))).await;
    }

    #[tokio::test]
    async fn a_refused_cursor_ends_the_fan_out_as_failed() {
        a_permanent_failure_ends_the_fan_out(|| MembersError::BadCursor("is not a cursor".into())).await;
    }

    #[tokio::test]
    async fn a_page_the_store_briefly_cannot_read_comes_again() {
        let r = rig(|| MembersError::Store(StoreError::Unavailable("blink".into())), 3).await;
        r.segment("fine", 0..3).await;
        r.segment("broken", 3..5).await;
        let done = r.broadcast(&["fine", "broken"]).await;
        assert_eq!((done["state"].clone(), done["fan_out_error"].clone()), (json!("completed"), Value::Null), "{done}");
        assert_eq!(r.sandbox_records(done["request_id"].as_str().unwrap()).await, 5);
        assert_eq!(r.segments.listings.load(Ordering::SeqCst), 4, "three failures, then the page");
    }
}

/// A status filter reads at most 5,000 rows a page: over a large audience where nothing matches
/// it answers empty pages that go on from the last row read, until the rows are done.
#[tokio::test]
async fn a_status_filter_over_a_large_audience_reads_a_bounded_page_and_goes_on() {
    let s = TestServer::start().await;
    segment(&s, "many", 0..5_500).await;
    let id = broadcast(&s, json!({"segments": ["many"]})).await["request_id"].as_str().unwrap().to_string();
    settled(&s, &id, Duration::from_secs(120)).await;

    // Where five unfiltered pages of 1,000 end: the 5,000th row.
    let mut cursor = None;
    for _ in 0..5 {
        let after = cursor.map(|c: u64| format!("&cursor={c}")).unwrap_or_default();
        let (_, page) = s.get(&format!("/v1/broadcasts/{id}?limit=1000{after}")).await;
        cursor = page["next_cursor"].as_u64();
    }
    let (status, first) = s.get(&format!("/v1/broadcasts/{id}?status=failed&limit=1000")).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["recipients"], json!([]), "nothing failed");
    assert_eq!(first["next_cursor"].as_u64(), cursor, "goes on from the last row read");
    let (_, last) = s.get(&format!("/v1/broadcasts/{id}?status=failed&limit=1000&cursor={}", cursor.unwrap())).await;
    assert_eq!((&last["recipients"], &last["next_cursor"]), (&json!([]), &Value::Null), "the rows are done");
    let (_, sent) = s.get(&format!("/v1/broadcasts/{id}?status=sent&limit=1000&cursor={}", cursor.unwrap())).await;
    assert_eq!(sent["recipients"].as_array().unwrap().len(), 500, "{}", sent["next_cursor"]);
}

/// A request stored before audience rows kept their contact's ordered id has no
/// `ordered_member_ids`: it reads back as `false`, so a page its fan-out expands again after an
/// upgrade names its rows by the older, hashed form and makes no second row.
#[test]
fn a_request_stored_before_ordered_member_ids_reads_back_as_hashed() {
    let (mut req, _) = herald_tests::contract::sample_request("t1", "req_old", 0);
    assert_eq!(serde_json::to_value(&req).unwrap()["ordered_member_ids"], json!(true), "new requests say so");
    req.ordered_member_ids = false;
    let old = serde_json::to_value(&req).unwrap();
    assert!(old.get("ordered_member_ids").is_none(), "older requests were stored without it: {old}");
    let back: herald::domain::SendRequest = serde_json::from_value(old).unwrap();
    assert!(!back.ordered_member_ids);
}
