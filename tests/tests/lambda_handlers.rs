//! The Lambda handlers driven by the event fixtures in `tests/fixtures/` (API Gateway HTTP API
//! v2, SQS, EventBridge), on the embedded adapters: the handler code is the same on AWS.

use aws_lambda_events::event::sqs::SqsEvent;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use serde_json::{json, Value};

use herald::providers::sandbox::{FailKind, SandboxBehaviour};
use herald_ingest::Ingest;
use herald_tests::{fast_settings, tenant, TestServer};

fn fixture(name: &str, replacements: &[(&str, &str)]) -> Value {
    let mut text = std::fs::read_to_string(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    for (from, to) in replacements {
        text = text.replace(from, to);
    }
    serde_json::from_str(&text).unwrap()
}

async fn quiet_server() -> TestServer {
    TestServer::start_with(fast_settings(), SandboxBehaviour::default(), 0).await
}

fn body_of(response: &Value) -> Value {
    serde_json::from_str(response["body"].as_str().expect("a text body")).unwrap()
}

#[tokio::test]
async fn an_http_api_request_runs_through_the_router() {
    let s = quiet_server().await;
    let ingest = Ingest::new(s.herald(), None);
    let event = fixture("apigw_v2_post_broadcast.json", &[("{{API_KEY}}", &s.key)]);
    let first = ingest.handle(event.clone()).await.unwrap();
    assert_eq!(first["statusCode"], 202, "{first}");
    assert_eq!(first["headers"]["content-type"], "application/json");
    let created = body_of(&first);
    let id = created["request_id"].as_str().unwrap();
    assert_eq!(created["metadata"], json!({"order": "1001"}));

    // API Gateway retried the same request: the Idempotency-Key answers it again.
    let again = ingest.handle(event).await.unwrap();
    assert_eq!(body_of(&again)["request_id"], id);
    assert_eq!(s.local.store.counts().await.unwrap().requests, 1);

    let get = fixture("apigw_v2_get_broadcast.json", &[("{{API_KEY}}", &s.key), ("{{REQUEST_ID}}", id)]);
    let answer = ingest.handle(get).await.unwrap();
    assert_eq!(answer["statusCode"], 200);
    assert_eq!(body_of(&answer)["recipients"][0]["phone"], "+14155550123");

    let unauthenticated = fixture("apigw_v2_get_broadcast.json", &[("{{API_KEY}}", "wrong"), ("{{REQUEST_ID}}", id)]);
    assert_eq!(ingest.handle(unauthenticated).await.unwrap()["statusCode"], 401);
}

#[tokio::test]
async fn behind_api_gateway_a_raw_double_quote_in_the_query_reaches_the_route() {
    let s = quiet_server().await;
    let (st, _) = s.put("/v1/templates/shipped", json!({"body": "Order shipped"})).await;
    assert!(st.is_success());
    let (st, _) = s.put("/v1/campaigns/blk-1", json!({"name": "Shipped", "template_ids": ["shipped"]})).await;
    assert!(st.is_success());
    let ingest = Ingest::new(s.herald(), None);
    let query = format!("bot_token={}&block_id=blk-1&messaging_tag=\"CONFIRMED_EVENT_UPDATE\"", s.key);
    let mut event = fixture("apigw_v2_get_broadcast.json", &[("{{API_KEY}}", &s.key), ("{{REQUEST_ID}}", "x")]);
    event["rawPath"] = json!("/compat/smax/bots/default/users/1234567890/send");
    event["requestContext"]["http"]["path"] = event["rawPath"].clone();
    event["requestContext"]["http"]["method"] = json!("POST");
    event["rawQueryString"] = json!(query);
    event["queryStringParameters"] = json!({});
    let answer = ingest.handle(event).await.unwrap();
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert_eq!(body_of(&answer)["success"], true, "{answer}");
    assert_eq!(s.local.store.counts().await.unwrap().requests, 1);
}

#[tokio::test]
async fn an_eventbridge_event_is_a_send_request_with_the_same_validation() {
    let s = quiet_server().await;
    let ingest = Ingest::new(s.herald(), Some("default".into()));
    let event = fixture("eventbridge_send.json", &[]);
    let answer = ingest.handle(event.clone()).await.unwrap();
    assert_eq!(answer["status"], 202, "{answer}");
    let id = answer["body"]["request_id"].as_str().unwrap().to_string();
    let (_, stored) = s.get(&format!("/v1/broadcasts/{id}")).await;
    assert_eq!(stored["source"], "eventbridge");
    assert_eq!(stored["recipients"][0]["email"], "ada@example.com");

    // EventBridge delivers at least once: the same event id sends once.
    let again = ingest.handle(event.clone()).await.unwrap();
    assert_eq!(again["body"]["request_id"], id.as_str());
    assert_eq!(s.local.store.counts().await.unwrap().requests, 1);

    let mut bad = event;
    bad["id"] = json!("another-event");
    bad["detail"]["recipients"] = json!([{"phone": "555"}]);
    let refused = ingest.handle(bad).await.unwrap();
    assert_eq!(refused["status"], 422);
    assert_eq!(refused["body"]["error"]["fields"][0]["field"], "recipients[0].phone");
    assert_eq!(s.local.store.counts().await.unwrap().requests, 1, "a refused event stores nothing");
}

#[tokio::test]
async fn events_need_a_configured_tenant_and_unknown_events_are_errors() {
    let s = quiet_server().await;
    let ingest = Ingest::new(s.herald(), None);
    let err = ingest.handle(fixture("eventbridge_send.json", &[])).await.unwrap_err();
    assert!(err.to_string().contains("EVENTS_TENANT"), "{err}");
    let err = ingest.handle(json!({"hello": "world"})).await.unwrap_err();
    assert!(err.to_string().contains("neither an API Gateway HTTP API request nor an EventBridge event"), "{err}");
}

#[tokio::test]
async fn a_base64_encoded_request_body_is_decoded_before_the_router_reads_it() {
    let s = quiet_server().await;
    let ingest = Ingest::new(s.herald(), None);
    let mut event = fixture("apigw_v2_post_broadcast.json", &[("{{API_KEY}}", &s.key)]);
    let body = event["body"].as_str().unwrap().to_string();
    event["body"] = json!(BASE64.encode(body));
    event["isBase64Encoded"] = json!(true);
    let answer = ingest.handle(event).await.unwrap();
    assert_eq!(answer["statusCode"], 202, "{answer}");
    assert_eq!(body_of(&answer)["metadata"], json!({"order": "1001"}));
}

#[tokio::test]
async fn binary_bodies_and_repeated_headers_reach_api_gateway_whole() {
    use axum::http::header::{CONTENT_TYPE, SET_COOKIE, VARY};
    let s = quiet_server().await;
    let png: &[u8] = &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0xff, 0xfe];
    let router = axum::Router::new()
        .route("/logo.png", axum::routing::get(move || async move { ([(CONTENT_TYPE, "image/png")], png.to_vec()) }))
        .route(
            "/repeated",
            axum::routing::get(|| async {
                axum::http::Response::builder()
                    .header(VARY, "accept")
                    .header(VARY, "origin")
                    .header(SET_COOKIE, "a=1")
                    .header(SET_COOKIE, "b=2")
                    .header(CONTENT_TYPE, "text/plain")
                    .body(axum::body::Body::from("ok"))
                    .unwrap()
            }),
        );
    let ingest = Ingest::with_router(s.herald(), router, None);
    let get = |path: &str| {
        let mut e = fixture("apigw_v2_get_broadcast.json", &[("{{API_KEY}}", &s.key), ("{{REQUEST_ID}}", "x")]);
        e["rawPath"] = json!(path);
        e["requestContext"]["http"]["path"] = json!(path);
        e
    };

    let answer = ingest.handle(get("/logo.png")).await.unwrap();
    assert_eq!(answer["statusCode"], 200, "{answer}");
    assert_eq!(answer["isBase64Encoded"], true, "{answer}");
    assert_eq!(BASE64.decode(answer["body"].as_str().unwrap()).unwrap(), png);

    let answer = ingest.handle(get("/repeated")).await.unwrap();
    assert_eq!(answer["headers"]["vary"], "accept, origin", "{answer}");
    assert_eq!(answer["cookies"], json!(["a=1", "b=2"]), "{answer}");
    assert_eq!(answer["body"], "ok");
}

#[tokio::test]
async fn ses_status_events_are_read_as_typed_events() {
    let event = json!({"version": "0", "id": "e1", "detail-type": "Email Delivered", "source": "aws.ses",
        "account": "1", "time": "2026-11-21T20:00:00Z", "region": "us-east-1", "resources": [], "detail": {}});
    assert!(matches!(herald_ingest::Event::parse(event.clone()).unwrap(), herald_ingest::Event::SesStatus(_)));
    let mut send = event;
    send["source"] = json!("acme.orders");
    assert!(matches!(herald_ingest::Event::parse(send).unwrap(), herald_ingest::Event::Send(_)));
    let request = fixture("apigw_v2_get_broadcast.json", &[("{{API_KEY}}", "k"), ("{{REQUEST_ID}}", "x")]);
    assert!(matches!(herald_ingest::Event::parse(request).unwrap(), herald_ingest::Event::Http(_)));
}

/// Stores a request of `n` recipients without delivering it; returns the jobs as SQS bodies.
async fn queued_jobs(s: &TestServer, n: usize) -> (String, Vec<String>) {
    let recipients: Vec<Value> = (0..n).map(|i| json!({"phone": format!("+1415555{:04}", i)})).collect();
    let (_, answer) = s.post("/v1/broadcasts", json!({"recipients": recipients, "messages": [{"text": "hi"}]})).await;
    let id = answer["request_id"].as_str().unwrap().to_string();
    let rows = s.herald().requests.list_rows(&tenant("default"), &id, None, 1000).await.unwrap();
    (id, rows.iter().map(|r| serde_json::to_string(&r.job()).unwrap()).collect())
}

fn sqs_event(bodies: &[String]) -> SqsEvent {
    let template = fixture("sqs_event.json", &[]);
    let records: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let mut r = template["Records"][0].clone();
            r["messageId"] = json!(format!("msg-{i}"));
            r["receiptHandle"] = json!(format!("receipt-{i}"));
            r["body"] = json!(body);
            r
        })
        .collect();
    serde_json::from_value(json!({"Records": records})).unwrap()
}

#[tokio::test]
async fn an_sqs_batch_is_delivered_and_only_failures_are_reported() {
    let s = quiet_server().await;
    let (id, mut bodies) = queued_jobs(&s, 7).await;
    // Three poison messages among seven good ones.
    bodies.insert(2, "not json".into());
    bodies.insert(5, json!({"unexpected": true}).to_string());
    bodies.push("{\"tenant_id\": 5}".into());
    let response = herald_send::handle_batch(s.herald(), sqs_event(&bodies)).await;
    let mut failed: Vec<String> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    failed.sort();
    assert_eq!(failed, vec!["msg-2", "msg-5", "msg-9"], "exactly the poison messages come back");
    let (_, done) = s.get(&format!("/v1/broadcasts/{id}")).await;
    assert_eq!(done["summary"]["by_status"], json!({"sent": 7}));
}

/// Stores a request of `n` recipients without delivering it; returns its rows and the jobs ingest
/// queued for it (received, so the queue is empty), as SQS bodies.
async fn ingested_jobs(s: &TestServer, n: usize) -> (Vec<herald::domain::RecipientRow>, Vec<String>) {
    use herald::ports::JobQueue;
    let (id, _) = queued_jobs(s, n).await;
    let rows = s.herald().requests.list_rows(&tenant("default"), &id, None, 1000).await.unwrap();
    let got = s.local.queue.receive(10, std::time::Duration::from_secs(3600)).await.unwrap();
    for j in &got {
        s.local.queue.delete(&j.receipt).await.unwrap();
    }
    (rows, got.into_iter().map(|j| j.body).collect())
}

#[tokio::test]
async fn a_batch_of_multi_row_jobs_sends_every_row_and_a_row_that_must_wait_comes_back_alone() {
    let s = quiet_server().await;
    let (rows, bodies) = ingested_jobs(&s, 13).await;
    let jobs: Vec<herald::domain::Job> = bodies.iter().map(|b| serde_json::from_str(b).unwrap()).collect();
    let mut sizes: Vec<usize> = jobs.iter().map(|j| j.row_ids.len()).collect();
    sizes.sort();
    assert_eq!(sizes, vec![3, 10], "ingest queues a request's rows ten to a job");
    // Another worker holds one row of the ten-row job: that row must wait, its siblings must not.
    let held = &rows[4];
    let now = herald::domain::now();
    let claim =
        s.herald().requests.claim_row(&tenant("default"), &held.id, now, now + chrono::Duration::minutes(5)).await;
    assert!(matches!(claim.unwrap(), herald::ports::Claim::Claimed(_)));

    let response = herald_send::handle_batch(s.herald(), sqs_event(&bodies)).await;
    assert!(response.batch_item_failures.is_empty(), "rows that went back as jobs of their own are not reported");
    let outbox = s.outbox(&rows[0].request_id).await;
    assert_eq!(outbox.len(), 12, "every other row is sent, once");
    let (waiting, in_flight, _) = s.local.queue.depth().await.unwrap();
    assert_eq!((waiting, in_flight), (1, 0), "one fresh job for the row that waits");
    let (live, _) = s.local.queue.rows_with_jobs().await.unwrap();
    assert_eq!(live, [("default".to_string(), held.id.clone())].into(), "the fresh job names that row alone");
}

#[tokio::test]
async fn the_rows_of_a_job_are_delivered_at_once() {
    let slow = SandboxBehaviour { delay: std::time::Duration::from_millis(300), ..Default::default() };
    let s = TestServer::start_with(fast_settings(), slow, 0).await;
    let (rows, bodies) = ingested_jobs(&s, 10).await;
    assert_eq!(bodies.len(), 1, "one job of ten");
    let started = std::time::Instant::now();
    let response = herald_send::handle_batch(s.herald(), sqs_event(&bodies)).await;
    assert!(response.batch_item_failures.is_empty());
    // One after another, ten 300 ms calls would take 3 s.
    assert!(started.elapsed() < std::time::Duration::from_millis(1500), "{:?}", started.elapsed());
    assert_eq!(s.outbox(&rows[0].request_id).await.len(), 10);
}

#[tokio::test]
async fn a_job_queued_before_multi_row_jobs_is_still_delivered() {
    let s = quiet_server().await;
    let (rows, _) = ingested_jobs(&s, 1).await;
    let old = json!({"tenant_id": "default", "request_id": rows[0].request_id, "row_id": rows[0].id}).to_string();
    let response = herald_send::handle_batch(s.herald(), sqs_event(&[old])).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(s.outbox(&rows[0].request_id).await.len(), 1);
}

#[tokio::test]
async fn a_transient_failure_goes_back_as_a_fresh_job_so_it_uses_up_no_receive() {
    let behaviour = SandboxBehaviour { fail_rate: 1.0, fail_kind: FailKind::Transient, ..Default::default() };
    let s = TestServer::start_with(fast_settings(), behaviour, 0).await;
    let (id, bodies) = queued_jobs(&s, 1).await;
    let waiting = s.local.queue.depth().await.unwrap().0;
    let response = herald_send::handle_batch(s.herald(), sqs_event(&bodies)).await;
    assert!(response.batch_item_failures.is_empty(), "a retry is not reported: reported, it would count a receive");
    assert_eq!(s.local.queue.depth().await.unwrap().0, waiting + 1, "the retry waits as a fresh job");
    let (_, state) = s.get(&format!("/v1/broadcasts/{id}")).await;
    assert_eq!(state["recipients"][0]["status"], "retrying");
    assert!(state["recipients"][0]["next_attempt_at"].is_string());
}

/// The dead-letter queue's ARN as template.yaml hands it to the send function.
const DEAD_LETTER_QUEUE_ARN: &str = "arn:aws:sqs:us-east-1:123456789012:herald-jobs-dlq";

#[tokio::test]
async fn a_record_from_the_dead_letter_queue_is_kept_for_its_tenant_not_delivered() {
    std::env::set_var("DEAD_LETTER_QUEUE_ARN", DEAD_LETTER_QUEUE_ARN);
    let s = quiet_server().await;
    let (id, bodies) = queued_jobs(&s, 1).await;
    // A job, a body that is no job, and the job again (SQS hands a message over at least once).
    let mut event = sqs_event(&[bodies[0].clone(), "not json".into()]);
    event.records.push(event.records[0].clone());
    for r in &mut event.records {
        r.event_source_arn = Some(DEAD_LETTER_QUEUE_ARN.into());
    }
    let response = herald_send::handle_batch(s.herald(), event).await;
    assert!(response.batch_item_failures.is_empty(), "kept, or let go when it names no tenant");

    let (_, page) = s.get("/v1/dead-letters").await;
    let dead = page["dead_letters"].as_array().unwrap();
    assert_eq!(dead.len(), 1, "{page}");
    assert_eq!((dead[0]["id"].as_str(), dead[0]["request_id"].as_str()), (Some("msg-0"), Some(id.as_str())));
    assert_eq!(dead[0]["receive_count"], s.herald().settings.max_receives);
    assert_eq!(dead[0]["dead_at"], "2026-11-21T18:00:00.500Z", "when the dead-letter queue first handed it out");
    let rows = s.herald().requests.list_rows(&tenant("default"), &id, None, 10).await.unwrap();
    assert_eq!(rows[0].status, herald::domain::Status::Queued, "a dead letter is kept, not delivered");
}
