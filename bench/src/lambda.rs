//! Parts 4 and 5 for the Lambda functions: each release binary is started as Lambda starts it,
//! against a loopback fake of the Lambda runtime API, with DynamoDB and SQS on the emulator.
//! Cold start is the time from exec to the first `GET /2018-06-01/runtime/invocation/next`;
//! then the time to answer the first event; peak RSS is read after that answer. A hello-world
//! `lambda_runtime` binary built with the same profile runs beside them.

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herald::adapters::aws::{DynamoStore, SqsQueue};
use herald::app::{Herald, Settings, Stores};
use herald_tests::aws::{create_resources, reset_emulator, sdk_config, EventSource};

use crate::proc::{median, peak_rss_kib, KEY};

#[derive(clap::Args)]
pub struct Args {
    /// The AWS emulator (moto) to point the functions at; it is reset first.
    #[arg(long, env = "HERALD_BENCH_AWS_ENDPOINT")]
    aws_endpoint: String,
    /// Cold starts per binary.
    #[arg(long, default_value_t = 10)]
    runs: usize,
}

const TENANT: &str = "acme";

#[derive(Default)]
struct Fake {
    events: Mutex<VecDeque<Value>>,
    first_next: Mutex<Option<Instant>>,
    answers: Mutex<Vec<(Instant, Result<Value, String>)>>,
    done: tokio::sync::Notify,
}

async fn next(State(f): State<Arc<Fake>>) -> Response {
    f.first_next.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(Instant::now);
    let event = f.events.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
    let Some(event) = event else {
        // One event per process: the next `next` waits until the process is killed.
        return std::future::pending().await;
    };
    let deadline = chrono::Utc::now().timestamp_millis() + 60_000;
    let mut headers = HeaderMap::new();
    headers.insert("lambda-runtime-aws-request-id", HeaderValue::from_static("8476a536-e9f4-11e8-9739-2dfe598c3fcd"));
    headers.insert("lambda-runtime-deadline-ms", HeaderValue::from(deadline));
    headers.insert(
        "lambda-runtime-invoked-function-arn",
        HeaderValue::from_static("arn:aws:lambda:us-east-1:123456789012:function:herald-bench"),
    );
    headers.insert("lambda-runtime-trace-id", HeaderValue::from_static("Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700"));
    (headers, axum::Json(event)).into_response()
}

async fn response(State(f): State<Arc<Fake>>, UrlPath(_id): UrlPath<String>, body: axum::body::Bytes) -> StatusCode {
    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
    f.answers.lock().unwrap_or_else(|p| p.into_inner()).push((Instant::now(), Ok(v)));
    f.done.notify_one();
    StatusCode::ACCEPTED
}

async fn error(State(f): State<Arc<Fake>>, body: axum::body::Bytes) -> StatusCode {
    let text = String::from_utf8_lossy(&body).into_owned();
    f.answers.lock().unwrap_or_else(|p| p.into_inner()).push((Instant::now(), Err(text)));
    f.done.notify_one();
    StatusCode::ACCEPTED
}

struct Run {
    to_next_ms: f64,
    to_answer_ms: f64,
    peak_rss_kib: u64,
    answer: Value,
}

/// Starts `exe` as Lambda would, hands it `event`, and measures.
async fn invoke(exe: &Path, env: &[(String, String)], event: Value) -> Result<Run, String> {
    let fake = Arc::new(Fake::default());
    fake.events.lock().unwrap_or_else(|p| p.into_inner()).push_back(event);
    let app = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(error))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let log = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "herald-bench")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/herald-bench")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::null())
        .stderr(log.reopen().map_err(|e| e.to_string())?);
    let notified = fake.done.notified();
    let start = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {}: {e} (build it first)", exe.display()))?;
    let waited = tokio::time::timeout(Duration::from_secs(60), notified).await;
    let rss = peak_rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    server.abort();
    let stderr = std::fs::read_to_string(log.path()).unwrap_or_default();
    if waited.is_err() {
        return Err(format!("{} did not answer in 60 s; its output: {stderr}", exe.display()));
    }
    let first_next = (*fake.first_next.lock().unwrap_or_else(|p| p.into_inner())).ok_or("no call to next")?;
    let (at, answer) = fake.answers.lock().unwrap_or_else(|p| p.into_inner()).remove(0);
    let answer = answer.map_err(|e| format!("{} answered an error: {e}; its output: {stderr}", exe.display()))?;
    Ok(Run {
        to_next_ms: first_next.duration_since(start).as_secs_f64() * 1000.0,
        to_answer_ms: at.duration_since(start).as_secs_f64() * 1000.0,
        peak_rss_kib: rss.ok_or("cannot read the peak RSS")?,
        answer,
    })
}

fn status_of(answer: &Value) -> u64 {
    answer["statusCode"].as_u64().unwrap_or(0)
}

pub async fn run(args: Args, bin_dir: &Path) -> Result<Value, String> {
    let endpoint = args.aws_endpoint.trim_end_matches('/').to_string();
    reset_emulator(&endpoint).await?;
    let sdk = sdk_config(&endpoint).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let resources = create_resources(&ddb, &sqs, 5).await;
    let store = Arc::new(DynamoStore::new(ddb.clone(), resources.table.clone()));
    herald::service::keys::create_key(store.as_ref(), TENANT, Some(KEY)).await.map_err(|e| e.to_string())?;

    // The send function's events: real jobs, queued by the library as ingest queues them.
    let h = Herald::new(
        Stores::from_one(store.clone()),
        Arc::new(SqsQueue::new(sqs.clone(), resources.queue_url.clone())),
        herald::providers::Providers::all(Arc::new(herald::providers::sandbox::Sandbox::new(
            store.clone(),
            Default::default(),
        ))),
        Settings::default(),
    );
    // Jobs carry up to ten rows: queue enough rows for one job per measured event.
    let body = crate::broadcast_body(0, (args.runs + 10) * herald::domain::Job::MAX_ROWS);
    let plan = herald::benching::native(body.as_bytes()).map_err(|e| format!("{e:?}"))?;
    herald::service::ingest::ingest(&h.ingest, &TENANT.into(), plan, "native").await.map_err(|e| format!("{e:?}"))?;
    let source = EventSource::new(sqs.clone(), &resources.queue_url);
    let mut records = Vec::new();
    while records.len() < args.runs + 10 {
        let event = source.receive(10, 1).await;
        if event.records.is_empty() {
            return Err(format!("only {} jobs reached the queue", records.len()));
        }
        records.extend(event.records);
    }
    let sqs_event = |rs: &[aws_lambda_events::event::sqs::SqsMessage]| json!({"Records": rs.iter().map(|r| serde_json::to_value(r).expect("record")).collect::<Vec<_>>()});

    let env: Vec<(String, String)> = [
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("TABLE_NAME", resources.table.as_str()),
        ("QUEUE_URL", resources.queue_url.as_str()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let exe = |name: &str| -> PathBuf { bin_dir.join(name) };

    // Cold starts, interleaved so that drift on the machine touches all three alike.
    let (mut hello, mut ingest, mut send) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.runs {
        hello.push(invoke(&exe("hello-lambda"), &[], json!({"hello": i})).await?);
        let r = invoke(&exe("ingest"), &env, crate::apigw_post(&crate::broadcast_body(100 + i, 1), None)).await?;
        if status_of(&r.answer) != 202 {
            return Err(format!("ingest answered {}", r.answer));
        }
        ingest.push(r);
        let r = invoke(&exe("send"), &env, sqs_event(&records[10 + i..11 + i])).await?;
        if r.answer["batchItemFailures"].as_array().is_none_or(|f| !f.is_empty()) {
            return Err(format!("send answered {}", r.answer));
        }
        send.push(r);
    }
    let cold = |runs: &[Run]| {
        json!({
            "to_next_ms": median(runs.iter().map(|r| r.to_next_ms).collect()),
            "to_first_answer_ms": median(runs.iter().map(|r| r.to_answer_ms).collect()),
            "peak_rss_kib": median(runs.iter().map(|r| r.peak_rss_kib as f64).collect()),
        })
    };
    let (hello_c, ingest_c, send_c) = (cold(&hello), cold(&ingest), cold(&send));
    let ratio =
        |c: &Value| c["to_next_ms"].as_f64().unwrap_or(f64::NAN) / hello_c["to_next_ms"].as_f64().unwrap_or(f64::NAN);

    // Memory under the loads.
    let big = invoke(&exe("ingest"), &env, crate::apigw_post(&crate::broadcast_body(1000, 1000), None)).await?;
    if status_of(&big.answer) != 202 {
        return Err(format!("ingest of 1,000 recipients answered {}", big.answer));
    }
    let batch = invoke(&exe("send"), &env, sqs_event(&records[..10])).await?;
    if batch.answer["batchItemFailures"].as_array().is_none_or(|f| !f.is_empty()) {
        return Err(format!("send of a 10-message batch answered {}", batch.answer));
    }
    let figures = json!({
        "runs": args.runs,
        "hello": hello_c,
        "ingest": {"cold": ingest_c, "ratio_to_hello": ratio(&ingest_c)},
        "send": {"cold": send_c, "ratio_to_hello": ratio(&send_c)},
        "memory": {
            "ingest_1000_recipients": {"peak_rss_kib": big.peak_rss_kib, "answer_ms": big.to_answer_ms},
            "send_10_messages": {"peak_rss_kib": batch.peak_rss_kib, "answer_ms": batch.to_answer_ms},
        },
    });
    println!("lambda: {figures}");
    Ok(figures)
}
