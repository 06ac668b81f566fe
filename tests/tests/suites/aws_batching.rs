//! Batching limits of the AWS adapters against a loopback fake that speaks the DynamoDB and SQS
//! JSON protocols (the emulator accepts 26-item batches and never leaves work unprocessed, so it
//! cannot show these paths).

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::adapters::aws::{DynamoStore, SqsQueue};
use herald::domain::Job;
use herald::ports::{JobQueue, OutgoingJob, RequestLog};
use herald_tests::aws::sdk_config;
use herald_tests::contract::sample_request;

/// What the fake saw and how it misbehaves.
#[derive(Default)]
struct Fake {
    /// Items (or entries) per call, in call order.
    calls: Vec<usize>,
    /// Everything it accepted.
    accepted: Vec<String>,
    /// How many calls leave part of their work undone.
    stingy_calls: usize,
}

async fn serve(fake: Arc<Mutex<Fake>>) -> String {
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let fake = fake.clone();
            async move { answer(&fake, &headers, &body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn answer(fake: &Mutex<Fake>, headers: &HeaderMap, body: &[u8]) -> axum::response::Response {
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let mut f = fake.lock().unwrap();
    let stingy = f.stingy_calls > 0;
    f.stingy_calls = f.stingy_calls.saturating_sub(1);
    let (content_type, out) = match target.as_str() {
        "DynamoDB_20120810.BatchWriteItem" => {
            let (table, writes) = req["RequestItems"].as_object().unwrap().iter().next().unwrap();
            let writes = writes.as_array().unwrap().clone();
            f.calls.push(writes.len());
            // A stingy call takes only the first 7 items and hands the rest back.
            let take = if stingy { 7.min(writes.len()) } else { writes.len() };
            for w in &writes[..take] {
                f.accepted.push(w["PutRequest"]["Item"]["pk"]["S"].as_str().unwrap().to_string());
            }
            let rest = &writes[take..];
            let unprocessed = if rest.is_empty() { json!({}) } else { json!({ table: rest }) };
            ("application/x-amz-json-1.0", json!({"UnprocessedItems": unprocessed}))
        }
        "DynamoDB_20120810.PutItem" => ("application/x-amz-json-1.0", json!({})),
        "AmazonSQS.SendMessageBatch" => {
            let entries = req["Entries"].as_array().unwrap().clone();
            f.calls.push(entries.len());
            let mut ok = Vec::new();
            let mut failed = Vec::new();
            for (i, e) in entries.iter().enumerate() {
                let id = e["Id"].as_str().unwrap();
                if stingy && i % 3 == 0 {
                    failed
                        .push(json!({"Id": id, "SenderFault": false, "Code": "InternalError", "Message": "try again"}));
                } else {
                    f.accepted.push(e["MessageBody"].as_str().unwrap().to_string());
                    ok.push(json!({"Id": id, "MessageId": format!("m-{}", f.accepted.len()), "MD5OfMessageBody": "x"}));
                }
            }
            ("application/x-amz-json-1.0", json!({"Successful": ok, "Failed": failed}))
        }
        other => return (StatusCode::BAD_REQUEST, format!("the fake does not speak {other}")).into_response(),
    };
    (StatusCode::OK, [("content-type", content_type)], out.to_string()).into_response()
}

#[tokio::test]
async fn rows_are_written_in_groups_of_25_and_unprocessed_items_are_resent() {
    let fake = Arc::new(Mutex::new(Fake { stingy_calls: 3, ..Default::default() }));
    let endpoint = serve(fake.clone()).await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk_config(&endpoint).await), "herald".into());
    let (req, rows) = sample_request("t1", "req_batch", 60);
    tokio::time::timeout(Duration::from_secs(20), store.insert_request(&req, &rows)).await.unwrap().unwrap();

    let f = fake.lock().unwrap();
    assert!(f.calls.iter().all(|n| *n <= 25), "a call carried more than 25 items: {:?}", f.calls);
    assert!(f.calls.len() > 3, "unprocessed items must be re-sent: {:?}", f.calls);
    let mut written = f.accepted.clone();
    written.sort();
    written.dedup();
    assert_eq!(written.len(), 60, "every row written exactly once in the end");
    assert_eq!(f.accepted.len(), 60, "no row written twice");
}

#[tokio::test]
async fn jobs_are_sent_in_groups_of_10_and_failed_entries_are_retried() {
    let fake = Arc::new(Mutex::new(Fake { stingy_calls: 4, ..Default::default() }));
    let endpoint = serve(fake.clone()).await;
    let queue =
        SqsQueue::new(aws_sdk_sqs::Client::new(&sdk_config(&endpoint).await), format!("{endpoint}/123456789012/jobs"));
    let jobs: Vec<OutgoingJob> = (0..45)
        .map(|i| OutgoingJob {
            job: Job {
                tenant_id: "t".into(),
                request_id: "r".into(),
                row_ids: vec![format!("row-{i}")],
                fan_out: None,
                import: false,
                recount: None,
                event: None,
            },
            delay: Duration::from_secs(if i == 0 { 4000 } else { 0 }),
        })
        .collect();
    queue.send_batch(&jobs).await.unwrap();

    let f = fake.lock().unwrap();
    assert!(f.calls.iter().all(|n| *n <= 10), "a call carried more than 10 entries: {:?}", f.calls);
    assert!(f.calls.len() > 5, "failed entries must be retried: {:?}", f.calls);
    let mut rows: Vec<String> =
        f.accepted.iter().map(|b| serde_json::from_str::<Job>(b).unwrap().row_ids.join(",")).collect::<Vec<_>>();
    rows.sort();
    rows.dedup();
    assert_eq!(rows.len(), 45, "every job enqueued");
    assert_eq!(f.accepted.len(), 45, "no job enqueued twice");
}
