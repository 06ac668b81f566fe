//! The AWS adapters and Lambda handlers against the AWS wire protocol (moto's server). Turned on by
//! the `aws-emulator` feature, which `scripts/test.sh` sets after starting the emulator; with the
//! feature on and no emulator, every test here fails with a message saying so.
#![cfg(feature = "aws-emulator")]

use async_trait::async_trait;
use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use herald::adapters::aws::{DynamoStore, ScheduleTarget, Schedules, SqsQueue};
use herald::app::aws::AwsConfig;
use herald::app::{Herald, Settings, Stores};
use herald::domain::Status;
use herald::ports::{RequestLog, RowCounters, RowLeases};
use herald::providers::{OutboundMessage, Provider, ProviderError, ProviderReceipt, Providers};
use herald_ingest::Ingest;
use herald_tests::aws::{
    create_resources, create_schedule_group, emulator_endpoint, fire_schedules, reset_emulator, schedule_names,
    sdk_config, EventSource, Resources, SCHEDULER_ROLE_ARN, SCHEDULE_GROUP,
};
use herald_tests::{contract, tenant};

/// The emulator is shared state: one test at a time, each on a freshly reset emulator.
static EMULATOR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Aws {
    ddb: aws_sdk_dynamodb::Client,
    sqs: aws_sdk_sqs::Client,
    scheduler: aws_sdk_scheduler::Client,
    endpoint: String,
    table: String,
    queue_url: String,
    dlq_url: String,
    queue_arn: String,
    dlq_arn: String,
    _guard: tokio::sync::MutexGuard<'static, ()>,
}

/// Resets the emulator and creates the table, the queue and its dead-letter queue as
/// template.yaml declares them.
async fn setup(max_receives: u32) -> Aws {
    let guard = EMULATOR.lock().await;
    let endpoint = emulator_endpoint();
    reset_emulator(&endpoint).await.unwrap_or_else(|e| panic!("{e}"));
    let sdk = sdk_config(&endpoint).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let scheduler = aws_sdk_scheduler::Client::new(&sdk);
    let Resources { table, queue_url, dlq_url, queue_arn, dlq_arn } = create_resources(&ddb, &sqs, max_receives).await;
    create_schedule_group(&scheduler).await;
    Aws { ddb, sqs, scheduler, endpoint, table, queue_url, dlq_url, queue_arn, dlq_arn, _guard: guard }
}

impl Aws {
    /// The environment the Lambda functions start from, pointing every client at the emulator.
    fn export_env(&self) {
        for (k, v) in [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("TABLE_NAME", self.table.as_str()),
            ("QUEUE_URL", self.queue_url.as_str()),
            ("QUEUE_ARN", self.queue_arn.as_str()),
            ("DEAD_LETTER_QUEUE_ARN", self.dlq_arn.as_str()),
            ("SCHEDULE_GROUP", SCHEDULE_GROUP),
            ("SCHEDULER_ROLE_ARN", SCHEDULER_ROLE_ARN),
        ] {
            std::env::set_var(k, v);
        }
    }

    fn store(&self) -> Arc<DynamoStore> {
        Arc::new(DynamoStore::new(self.ddb.clone(), self.table.clone()))
    }
    fn queue(&self) -> Arc<SqsQueue> {
        Arc::new(SqsQueue::new(self.sqs.clone(), self.queue_url.clone()))
    }

    /// The queue as the template wires it: waits over 15 minutes go to the schedule group.
    fn scheduling_queue(&self) -> Arc<SqsQueue> {
        let target = ScheduleTarget {
            group: SCHEDULE_GROUP.into(),
            queue_arn: self.queue_arn.clone(),
            role_arn: SCHEDULER_ROLE_ARN.into(),
            dead_letter_arn: Some(self.dlq_arn.clone()),
        };
        let queue = SqsQueue::new(self.sqs.clone(), self.queue_url.clone());
        Arc::new(queue.with_schedules(Schedules::new(self.scheduler.clone(), target)))
    }

    /// Fires every schedule by hand, as EventBridge Scheduler would when due.
    async fn fire(&self) -> Vec<(String, String)> {
        let queues =
            [(self.queue_arn.as_str(), self.queue_url.as_str()), (self.dlq_arn.as_str(), self.dlq_url.as_str())];
        fire_schedules(&self.scheduler, &self.sqs, &queues).await
    }

    /// Receives like the Lambda event source mapping does and builds the SQS event it would pass.
    async fn receive_event(&self, max: i32) -> SqsEvent {
        EventSource::new(self.sqs.clone(), &self.queue_url).receive(max, 0).await
    }

    /// Settles a handled batch the way the event source mapping does: deletes what succeeded.
    async fn settle(&self, event: &SqsEvent, failed: &[String]) {
        EventSource::new(self.sqs.clone(), &self.queue_url).settle(event, failed).await
    }

    /// Makes the batch's jobs visible again at once, as if their visibility timeout had run out.
    async fn show_again(&self, event: &SqsEvent) {
        for r in &event.records {
            let _ = self
                .sqs
                .change_message_visibility()
                .queue_url(&self.queue_url)
                .receipt_handle(r.receipt_handle.clone().unwrap())
                .visibility_timeout(0)
                .send()
                .await;
        }
    }

    async fn depth(&self, url: &str) -> u64 {
        let attrs = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap();
        let n = |k| attrs.get(&k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        n(QueueAttributeName::ApproximateNumberOfMessages)
            + n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
    }
}

// ------------------------------------------------------------- the port contracts on AWS

#[tokio::test]
async fn sqs_queue_contract() {
    let aws = setup(10).await;
    contract::queue_contract(aws.queue().as_ref()).await;
}

#[tokio::test]
async fn sqs_dead_letters_after_max_receive_count() {
    let aws = setup(3).await;
    contract::queue_dead_letter_contract(aws.queue().as_ref(), 3).await;
    assert_eq!(aws.depth(&aws.dlq_url).await, 1, "the job sits in the dead-letter queue");
}

#[tokio::test]
async fn sqs_replace_puts_rows_back_on_their_own() {
    let aws = setup(10).await;
    contract::queue_replace_contract(aws.queue().as_ref()).await;
    assert_eq!(aws.depth(&aws.queue_url).await, 0, "nothing left behind");
}

#[tokio::test]
async fn sqs_defer_starts_the_receive_count_again() {
    let aws = setup(3).await;
    contract::queue_defer_contract(aws.queue().as_ref(), 3).await;
    assert_eq!(aws.depth(&aws.dlq_url).await, 0, "nothing dead-lettered");
}

#[tokio::test]
async fn sqs_hops_a_wait_longer_than_15_minutes_as_a_fresh_delayed_message() {
    use herald::ports::JobQueue;
    let aws = setup(3).await;
    let queue = aws.queue();
    queue
        .send_batch(&[herald::ports::OutgoingJob {
            job: herald::domain::Job {
                tenant_id: "t".into(),
                request_id: "r".into(),
                row_ids: vec!["x".into()],
                fan_out: None,
                import: false,
                recount: None,
                event: None,
            },
            delay: Duration::ZERO,
        }])
        .await
        .unwrap();
    let got = queue.receive(1, Duration::from_secs(30)).await.unwrap().remove(0);
    queue.defer(&got, Duration::from_secs(6 * 3600)).await.unwrap();
    let attrs = aws
        .sqs
        .get_queue_attributes()
        .queue_url(&aws.queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    assert_eq!(attrs[&QueueAttributeName::ApproximateNumberOfMessagesDelayed], "1", "a fresh delayed message");
    assert_eq!(aws.depth(&aws.queue_url).await, 0, "the received message is gone, so its receive count is too");
}

#[tokio::test]
async fn dynamodb_requests_contract() {
    let aws = setup(10).await;
    contract::requests_contract(aws.store().as_ref()).await;
}

#[tokio::test]
async fn dynamodb_requests_listed_newest_first() {
    let aws = setup(10).await;
    contract::requests_listing_contract(aws.store().as_ref()).await;
}

#[tokio::test]
async fn dynamodb_fan_out_rows_counts_and_cancel() {
    let aws = setup(10).await;
    contract::fan_out_contract(aws.store().as_ref()).await;
}

#[tokio::test]
async fn dynamodb_a_fan_out_that_stops_for_good_keeps_its_first_reason() {
    let aws = setup(10).await;
    contract::fan_out_failure_contract(aws.store().as_ref()).await;
}

#[tokio::test]
async fn dynamodb_status_callbacks_find_rows_and_move_forward_only() {
    let aws = setup(10).await;
    contract::callbacks_contract(aws.store().as_ref()).await;
}

#[tokio::test]
async fn dynamodb_racing_claims_have_one_winner() {
    let aws = setup(10).await;
    contract::claim_race_contract(aws.store()).await;
}

#[tokio::test]
async fn dynamodb_contacts_contract() {
    let aws = setup(10).await;
    contract::contacts_contract(aws.store()).await;
}

#[tokio::test]
async fn dynamodb_catalog_contract() {
    let aws = setup(10).await;
    contract::catalog_contract(aws.store().as_ref()).await;
}

#[tokio::test]
async fn dynamodb_keys_contract() {
    let aws = setup(10).await;
    contract::keys_contract(aws.store().as_ref()).await;
}

#[tokio::test]
async fn dynamodb_idempotency_contract() {
    let aws = setup(10).await;
    contract::idempotency_contract(aws.store().as_ref()).await;
}

#[tokio::test]
async fn dynamodb_webhook_endpoints_contract() {
    let aws = setup(10).await;
    contract::webhook_endpoints_contract(aws.store().as_ref()).await;
}

#[tokio::test]
async fn dynamodb_event_store_contract() {
    let aws = setup(10).await;
    contract::event_store_contract(aws.store().as_ref()).await;
}

#[tokio::test]
async fn dynamodb_dead_letters_contract() {
    let aws = setup(3).await;
    contract::dead_letters_contract(aws.store().as_ref()).await;
}

#[tokio::test]
async fn dynamodb_outbox_contract() {
    let aws = setup(10).await;
    contract::outbox_contract(aws.store().as_ref()).await;
}

#[tokio::test]
async fn dynamodb_segments_contract() {
    let aws = setup(10).await;
    contract::segments_contract(aws.store().as_ref()).await;
}

#[tokio::test]
async fn dynamodb_imports_contract() {
    let aws = setup(10).await;
    contract::imports_contract(aws.store().as_ref()).await;
}

// ------------------------------------------------------------- the Lambda handlers on AWS

fn fixture(name: &str, replacements: &[(&str, &str)]) -> Value {
    let mut text = std::fs::read_to_string(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    for (from, to) in replacements {
        text = text.replace(from, to);
    }
    serde_json::from_str(&text).unwrap()
}

/// Counters are written after their rows, so a process that dies in between leaves them behind.
/// Once they have stood still for the stall time, a status page asks for a recount; its jobs read
/// the rows through the send handler and correct the counters.
#[tokio::test]
async fn dynamodb_counters_left_behind_by_a_dead_process_are_recounted() {
    let aws = setup(5).await;
    let stall = Duration::from_millis(1_500);
    let store = Arc::new(DynamoStore::new(aws.ddb.clone(), aws.table.clone()).with_count_stall(stall));
    let h = Arc::new(Herald::new(
        Stores::from_one(store.clone()),
        aws.queue(),
        Providers::all(Arc::new(herald::providers::sandbox::Sandbox::new(store.clone(), Default::default()))),
        herald_tests::fast_settings(),
    ));
    let t = tenant("t1");
    let (req, rows) = contract::sample_request("t1", "req_lost", 30);
    store.insert_request(&req, &rows).await.unwrap();
    let send = |store: Arc<DynamoStore>, ids: Vec<String>| async move {
        for id in ids {
            let at = herald::domain::now();
            let claim = store.claim_row(&tenant("t1"), &id, at, at + chrono::Duration::seconds(30)).await.unwrap();
            assert!(matches!(claim, herald::domain::Claim::Claimed(_)), "{claim:?}");
            let sent = herald::domain::Outcome { status: Some(Status::Sent), ..Default::default() };
            assert!(store.finish_row(&tenant("t1"), &id, 1, sent).await.unwrap());
        }
    };
    // A process sends ten rows and dies before flushing; this one sends five and flushes.
    let dead = Arc::new(DynamoStore::new(aws.ddb.clone(), aws.table.clone()));
    send(dead, rows[..10].iter().map(|r| r.id.clone()).collect()).await;
    send(store.clone(), rows[10..15].iter().map(|r| r.id.clone()).collect()).await;
    store.flush_counts().await.unwrap();
    let behind = BTreeMap::from([(Status::Queued, 25), (Status::Sent, 5)]);
    let counts = store.count_rows(&t, "req_lost").await.unwrap();
    assert_eq!((&counts.by_status, counts.stalled), (&behind, false), "moving counters are not stalled");

    tokio::time::sleep(stall).await;
    let counts = herald::service::recount::counts(store.as_ref(), h.queue.as_ref(), &t, "req_lost").await.unwrap();
    assert_eq!((&counts.by_status, counts.stalled), (&behind, true), "still counters with rows pending are stalled");
    assert_eq!(store.recount(&t, "req_lost", None).await.unwrap(), None, "one recount at a time");
    let stalled = store.count_rows(&t, "req_lost").await.unwrap();
    assert!(!stalled.stalled, "a recount under way is not asked for again");

    let right = BTreeMap::from([(Status::Queued, 15), (Status::Sent, 15)]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let event = aws.receive_event(10).await;
        let response = herald_send::handle_batch(h.clone(), event.clone()).await;
        assert!(response.batch_item_failures.is_empty());
        aws.settle(&event, &[]).await;
        let counts = store.count_rows(&t, "req_lost").await.unwrap();
        if counts.by_status == right {
            assert!(!counts.stalled, "counters just recounted are not stalled");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the recount never corrected {counts:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(aws.depth(&aws.queue_url).await, 0, "the recount's jobs are done");
    tokio::time::sleep(stall).await;
    assert!(!store.count_rows(&t, "req_lost").await.unwrap().stalled, "nothing moved since the recount found them");

    // A recount during which a counter moves leaves the counters alone: the move may be one it
    // read its row before or after.
    send(Arc::new(DynamoStore::new(aws.ddb.clone(), aws.table.clone())), vec![rows[15].id.clone()]).await;
    // A move lost after a recount is found too, the next recount waiting longer than the last.
    let deadline = std::time::Instant::now() + stall * 8;
    while !store.count_rows(&t, "req_lost").await.unwrap().stalled {
        assert!(std::time::Instant::now() < deadline, "counters behind their rows again were never found stalled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut step = store.recount(&t, "req_lost", None).await.unwrap().expect("claimed");
    send(store.clone(), vec![rows[16].id.clone()]).await;
    store.flush_counts().await.unwrap();
    while let Some(next) = store.recount(&t, "req_lost", Some(step)).await.unwrap() {
        if let Some(at) = next.settle_at {
            let wait = at - chrono::Utc::now().timestamp_millis();
            tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
        }
        step = next;
    }
    let left = BTreeMap::from([(Status::Queued, 14), (Status::Sent, 16)]);
    assert_eq!(store.count_rows(&t, "req_lost").await.unwrap().by_status, left, "a moved counter stops the correction");
}

#[tokio::test]
async fn a_request_travels_from_the_ingest_handler_through_sqs_and_the_send_handler_to_dynamodb() {
    let aws = setup(5).await;
    // The functions' own start-up path: configuration from the environment, AWS_ENDPOINT_URL
    // pointing every client at the emulator.
    aws.export_env();
    let herald = Arc::new(AwsConfig::from_env().unwrap().connect().await.unwrap());
    let key = herald::service::keys::create_key(herald.keys.as_ref(), "acme", None).await.unwrap();
    let ingest = Ingest::new(herald.clone(), None);

    let answer = ingest.handle(fixture("apigw_v2_post_broadcast.json", &[("{{API_KEY}}", &key)])).await.unwrap();
    assert_eq!(answer["statusCode"], 202, "{answer}");
    let created: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    let id = created["request_id"].as_str().unwrap().to_string();

    let event = aws.receive_event(10).await;
    assert_eq!(event.records.len(), 1, "one job per row on SQS");
    let response = herald_send::handle_batch(herald.clone(), event.clone()).await;
    assert!(response.batch_item_failures.is_empty());
    aws.settle(&event, &[]).await;
    assert_eq!(aws.depth(&aws.queue_url).await, 0);

    let get = fixture("apigw_v2_get_broadcast.json", &[("{{API_KEY}}", &key), ("{{REQUEST_ID}}", &id)]);
    let answer = ingest.handle(get).await.unwrap();
    assert_eq!(answer["statusCode"], 200);
    let state: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(state["state"], "completed");
    let row = &state["recipients"][0];
    assert_eq!(row["status"], "sent");
    assert!(row["external_message_id"].as_str().unwrap().starts_with("sbx_"));
    let (_, outbox) =
        (0, herald.outbox.as_ref().unwrap().list_outbox(&tenant("acme"), Some(&id), None, 10).await.unwrap());
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].message["text"], "Your order 1001 has shipped, Ada.");

    std::env::remove_var("TABLE_NAME");
    let missing = AwsConfig::from_env().unwrap_err();
    assert_eq!(missing.name, "TABLE_NAME", "a missing setting stops start-up and is named");
}

fn herald_on(aws: &Aws, providers: Option<Providers>, settings: Settings) -> Arc<Herald> {
    let store = aws.store();
    let providers = providers.unwrap_or_else(|| {
        Providers::all(Arc::new(herald::providers::sandbox::Sandbox::new(store.clone(), Default::default())))
    });
    Arc::new(Herald::new(Stores::from_one(store), aws.queue(), providers, settings))
}

async fn queue_rows(h: &Herald, n: usize) -> String {
    let recipients: Vec<Value> = (0..n).map(|i| json!({"phone": format!("+1415555{:04}", i)})).collect();
    let plan = serde_json::from_value::<herald::domain::BroadcastBody>(
        json!({"recipients": recipients, "messages": [{"text": "hi"}]}),
    )
    .unwrap()
    .validate()
    .unwrap();
    herald::service::ingest::ingest(&h.ingest, &tenant("acme"), plan, "native").await.unwrap().request.id.clone()
}

#[tokio::test]
async fn a_batch_of_ten_with_three_poison_messages_reports_exactly_those_three() {
    let aws = setup(5).await;
    // One row of a job at a time, ten jobs at once: the emulator's DynamoDB is not thread-safe.
    let h = herald_on(&aws, None, Settings { job_rows_at_once: 1, ..herald_tests::fast_settings() });
    // Seven jobs: six of ten rows and one of one.
    let id = queue_rows(&h, 61).await;
    let poison = ["not json", "{\"row_id\": 1}", "[]"];
    for p in poison {
        aws.sqs.send_message().queue_url(&aws.queue_url).message_body(p).send().await.unwrap();
    }
    let mut event = aws.receive_event(10).await;
    while event.records.len() < 10 {
        let more = aws.receive_event(10).await;
        assert!(!more.records.is_empty(), "expected 10 messages on the queue");
        event.records.extend(more.records);
    }
    let response = herald_send::handle_batch(h.clone(), event.clone()).await;
    let failed: Vec<String> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    let poison_ids: Vec<String> = event
        .records
        .iter()
        .filter(|r| poison.contains(&r.body.as_deref().unwrap()))
        .map(|r| r.message_id.clone().unwrap())
        .collect();
    let mut a = failed.clone();
    a.sort();
    let mut b = poison_ids;
    b.sort();
    assert_eq!(a, b, "exactly the poison messages are reported");
    aws.settle(&event, &failed).await;
    // A row whose store call blinked (the emulator's DynamoDB answers errors under load) went
    // back as a job of its own, not as a failure of its batch: a later batch sends it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let counts = h.requests.count_rows(&tenant("acme"), &id).await.unwrap().by_status;
        if counts.get(&herald::domain::Status::Sent) == Some(&61) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "rows left unsent: {counts:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
        let more = aws.receive_event(10).await;
        let response = herald_send::handle_batch(h.clone(), more.clone()).await;
        let failed: Vec<String> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        aws.settle(&more, &failed).await;
    }
}

/// A provider whose every call crashes the worker: a poison job for a valid row.
struct Explodes;

#[async_trait]
impl Provider for Explodes {
    fn name(&self) -> &'static str {
        "explodes"
    }
    async fn send(&self, _: &OutboundMessage) -> Result<ProviderReceipt, ProviderError> {
        panic!("the provider crashed the worker");
    }
}

#[tokio::test]
async fn a_poison_job_reaches_the_dead_letter_queue_and_its_row_says_failed() {
    let max_receives = 5;
    let aws = setup(max_receives).await;
    let settings =
        Settings { max_receives, max_attempts: 20, lease: Duration::from_millis(500), ..herald_tests::fast_settings() };
    let h = herald_on(&aws, Some(Providers::all(Arc::new(Explodes))), settings);
    let id = queue_rows(&h, 1).await;
    let row_id = herald::domain::RecipientRow::id_for(&id, 0);
    let mut receives = 0;
    for _ in 0..12 {
        let event = aws.receive_event(10).await;
        if event.records.is_empty() {
            if aws.depth(&aws.queue_url).await == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
            continue;
        }
        receives += 1;
        let response = herald_send::handle_batch(h.clone(), event.clone()).await;
        assert_eq!(response.batch_item_failures.len(), 1, "a crashed job is reported, never deleted");
        // Let the job come back at once, as if its visibility timeout had run out.
        aws.show_again(&event).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    assert_eq!(receives, max_receives, "received maxReceiveCount times, then dead-lettered");
    assert_eq!(aws.depth(&aws.queue_url).await, 0);
    assert_eq!(aws.depth(&aws.dlq_url).await, 1, "the poison job is in the dead-letter queue");
    let row = h.requests.get_row(&tenant("acme"), &row_id).await.unwrap().unwrap();
    assert_eq!(row.status, herald::domain::Status::Failed);
    let msg = row.error_message.unwrap();
    assert!(msg.contains("could not be delivered after 5 tries") && msg.contains("crashed"), "{msg}");
}

/// The sandbox, except that one row's call crashes the worker: a poison row among good siblings.
struct ExplodesFor(String, Arc<herald::providers::sandbox::Sandbox>);

#[async_trait]
impl Provider for ExplodesFor {
    fn name(&self) -> &'static str {
        "sandbox"
    }
    async fn send(&self, m: &OutboundMessage) -> Result<ProviderReceipt, ProviderError> {
        if m.row_id == self.0 {
            panic!("the provider crashed the worker");
        }
        self.1.send(m).await
    }
}

#[tokio::test]
async fn a_poison_row_of_a_multi_row_job_dead_letters_alone_and_its_siblings_are_sent() {
    let max_receives = 3;
    let aws = setup(max_receives).await;
    let settings = Settings {
        max_receives,
        max_attempts: 20,
        lease: Duration::from_millis(500),
        // The emulator's DynamoDB is not thread-safe.
        job_rows_at_once: 1,
        ..herald_tests::fast_settings()
    };
    let sandbox = Arc::new(herald::providers::sandbox::Sandbox::new(aws.store(), Default::default()));
    let id = queue_rows(&herald_on(&aws, None, settings.clone()), 3).await;
    let poison_row = herald::domain::RecipientRow::id_for(&id, 1);
    let h = herald_on(&aws, Some(Providers::all(Arc::new(ExplodesFor(poison_row.clone(), sandbox)))), settings);
    let mut receives = Vec::new();
    for _ in 0..15 {
        let event = aws.receive_event(10).await;
        if event.records.is_empty() {
            if aws.depth(&aws.queue_url).await == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
            continue;
        }
        let response = herald_send::handle_batch(h.clone(), event.clone()).await;
        for r in &event.records {
            let job: herald::domain::Job = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
            receives.push((job.row_ids.len(), response.batch_item_failures.len()));
        }
        aws.settle(&event, &response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect::<Vec<_>>())
            .await;
        // Let a reported job come back at once, as if its visibility timeout had run out.
        aws.show_again(&event).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    // The job of three once, its crash not reported; then the poison row alone, until dead-lettered.
    assert_eq!(receives, vec![(3, 0), (1, 1), (1, 1), (1, 1)]);
    assert_eq!(aws.depth(&aws.queue_url).await, 0);
    assert_eq!(aws.depth(&aws.dlq_url).await, 1, "only the poison row's job is in the dead-letter queue");
    let counts = h.requests.count_rows(&tenant("acme"), &id).await.unwrap().by_status;
    assert_eq!(counts.get(&herald::domain::Status::Sent), Some(&2), "its siblings are sent: {counts:?}");
    let row = h.requests.get_row(&tenant("acme"), &poison_row).await.unwrap().unwrap();
    assert_eq!(row.status, herald::domain::Status::Failed);
    assert!(row.error_message.unwrap().contains("could not be delivered after 3 tries"));
}

#[tokio::test]
async fn email_goes_through_ses_and_its_events_move_the_row() {
    let aws = setup(5).await;
    let sdk = sdk_config(&aws.endpoint).await;
    let ses = aws_sdk_sesv2::Client::new(&sdk);
    ses.create_email_identity().email_identity("news@herald.example.com").send().await.expect("verify the sender");
    let store = aws.store();
    let sandbox = Arc::new(herald::providers::sandbox::Sandbox::new(store.clone(), Default::default()));
    let config = herald::providers::config::ProviderConfig {
        email_from: Some("news@herald.example.com".into()),
        ..Default::default()
    };
    let providers = Providers::all(sandbox).with_ses(&config, &sdk);
    let h = Arc::new(Herald::new(Stores::from_one(store), aws.queue(), providers, herald_tests::fast_settings()));
    let plan = serde_json::from_value::<herald::domain::BroadcastBody>(json!({
        "recipients": [{"email": "ada@example.com"}],
        "template": {"channel": "email", "subject": "Your order", "body": "It shipped."},
        "background": false
    }))
    .unwrap()
    .validate()
    .unwrap();
    let accepted = herald::service::ingest::ingest(&h.ingest, &tenant("acme"), plan, "native").await.unwrap();
    let row = &accepted.rows[0];
    assert_eq!(row.status, herald::domain::Status::Sent, "{:?}", row.error_message);
    assert_eq!(row.provider.as_deref(), Some("email"));
    let message_id = row.external_message_id.clone().expect("SES message id");

    // SES's delivery event, as EventBridge hands it to the ingest function.
    let ingest = Ingest::new(h.clone(), None);
    let event = json!({
        "version": "0", "id": "e-1", "detail-type": "Email Delivered", "source": "aws.ses", "account": "123456789012",
        "time": "2026-11-21T20:00:05Z", "region": "us-east-1", "resources": [],
        "detail": {"eventType": "Delivery", "mail": {"messageId": message_id, "destination": ["ada@example.com"]},
                   "delivery": {"recipients": ["ada@example.com"]}}
    });
    let answer = ingest.handle(event).await.unwrap();
    assert_eq!(answer["applied"]["moved"], 1, "{answer}");
    let row = h.requests.get_row(&tenant("acme"), &row.id).await.unwrap().unwrap();
    assert_eq!(row.status, herald::domain::Status::Delivered);
}

#[tokio::test]
async fn provider_credentials_come_from_the_secret_named_by_provider_secrets_arn() {
    use herald_tests::fake::{FakeProvider, Reply};
    let aws = setup(5).await;
    let fake = FakeProvider::start(Reply::json(200, json!({"ok": true, "result": {"message_id": 5}}))).await;
    let sm = aws_sdk_secretsmanager::Client::new(&sdk_config(&aws.endpoint).await);
    let secret = json!({"HERALD_TELEGRAM_BOT_TOKEN": "777:from-the-secret", "TELEGRAM_BASE_URL": fake.url});
    let arn = sm
        .create_secret()
        .name("herald/providers")
        .secret_string(secret.to_string())
        .send()
        .await
        .unwrap()
        .arn
        .unwrap();
    aws.export_env();
    std::env::set_var("PROVIDER_SECRETS_ARN", &arn);
    std::env::set_var("HERALD_SLACK_BOT_TOKEN", "xoxb-from-the-environment");
    let config = AwsConfig::from_env().unwrap();
    std::env::remove_var("HERALD_SLACK_BOT_TOKEN");
    let printed = format!("{config:?}");
    assert!(printed.contains("SLACK_BOT_TOKEN") && !printed.contains("xoxb-from-the-environment"), "{printed}");
    assert!(!printed.contains("from-the-secret"), "the secret is read at connect, never kept in config");
    let h = Arc::new(config.connect().await.unwrap());
    std::env::remove_var("PROVIDER_SECRETS_ARN");
    let plan = serde_json::from_value::<herald::domain::BroadcastBody>(
        json!({"recipients": [{"telegram_chat_id": "42"}], "messages": [{"text": "hi"}], "background": false}),
    )
    .unwrap()
    .validate()
    .unwrap();
    let accepted = herald::service::ingest::ingest(&h.ingest, &tenant("acme"), plan, "native").await.unwrap();
    assert_eq!(accepted.rows[0].status, herald::domain::Status::Sent, "{:?}", accepted.rows[0].error_message);
    assert_eq!(fake.requests()[0].path, "/bot777:from-the-secret/sendMessage");

    // A secret that is not a JSON object of strings stops start-up and says so.
    let bad = sm.create_secret().name("herald/bad").secret_string("[1]").send().await.unwrap().arn.unwrap();
    std::env::set_var("PROVIDER_SECRETS_ARN", &bad);
    let err = AwsConfig::from_env().unwrap().connect().await.err().unwrap();
    std::env::remove_var("PROVIDER_SECRETS_ARN");
    assert_eq!(err.name, "PROVIDER_SECRETS_ARN");
}

/// The partition keys of a segment's member items, as stored.
async fn member_partitions(aws: &Aws, prefix: &str) -> std::collections::BTreeMap<String, usize> {
    let items = aws
        .ddb
        .scan()
        .table_name(&aws.table)
        .filter_expression("begins_with(pk, :p)")
        .expression_attribute_values(":p", aws_sdk_dynamodb::types::AttributeValue::S(prefix.into()))
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default();
    let mut parts = std::collections::BTreeMap::new();
    for item in items {
        *parts.entry(item["pk"].as_s().unwrap().clone()).or_insert(0) += 1;
    }
    parts
}

#[tokio::test]
async fn dynamodb_members_spread_over_sixteen_partitions_under_the_live_incarnation() {
    use herald::ports::Segments;
    let aws = setup(5).await;
    let store = aws.store();
    let seg = herald::domain::Segment {
        id: "vip".into(),
        name: "VIP".into(),
        created_at: herald::domain::now(),
        updated_at: herald::domain::now(),
    };
    store.put_segment(&tenant("t1"), &seg).await.unwrap();
    let ids: Vec<String> = (0..400).map(|i| format!("ct_{i}")).collect();
    store.add_members(&tenant("t1"), "vip", &ids).await.unwrap();
    let first = member_partitions(&aws, "T#t1#SEG#vip#").await;
    assert_eq!(first.len(), 16, "one partition per shard: {:?}", first.keys().collect::<Vec<_>>());
    assert!(first.values().all(|n| (10..=40).contains(n)), "members spread evenly: {first:?}");
    assert_eq!(first.values().sum::<usize>(), 400);

    // Deleting writes one item; the old members stay under a key no live segment names.
    store.delete_segment(&tenant("t1"), "vip").await.unwrap();
    store.put_segment(&tenant("t1"), &seg).await.unwrap();
    store.add_members(&tenant("t1"), "vip", &ids[..3]).await.unwrap();
    let now: Vec<String> =
        member_partitions(&aws, "T#t1#SEG#vip#").await.into_keys().filter(|pk| !first.contains_key(pk)).collect();
    assert!(!now.is_empty() && now.len() <= 3, "the new members live under a new incarnation: {now:?}");
    assert_eq!(store.member_count(&tenant("t1"), "vip").await.unwrap(), 3);
}

#[tokio::test]
async fn dynamodb_segments_through_the_api() {
    let aws = setup(5).await;
    let h = herald_on(&aws, None, herald_tests::fast_settings());
    let key = herald::service::keys::create_key(h.keys.as_ref(), "acme", None).await.unwrap();
    let other = herald::service::keys::create_key(h.keys.as_ref(), "other", None).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = herald::http::router(h.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    herald_tests::segments_over_http(&base, &key, &other).await;
}

// ------------------------------------------------------------- idempotency and receive budget

#[tokio::test]
async fn dynamodb_a_key_whose_request_was_stored_answers_that_request_after_the_answer_was_lost() {
    let aws = setup(5).await;
    let h = herald_on(&aws, None, herald_tests::fast_settings());
    let key = herald::service::keys::create_key(h.keys.as_ref(), "acme", None).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = herald::http::router(h.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    herald_tests::a_lost_answer_is_answered_again(&h, &base, &key, "acme").await;
}

/// Answers every send with a transient error.
struct AlwaysBusy;

#[async_trait]
impl Provider for AlwaysBusy {
    fn name(&self) -> &'static str {
        "busy"
    }
    async fn send(&self, _: &OutboundMessage) -> Result<ProviderReceipt, ProviderError> {
        Err(ProviderError::Transient { code: Some("503".into()), message: "try again later".into(), retry_after: None })
    }
}

#[tokio::test]
async fn provider_retries_on_the_send_lambda_never_use_up_the_jobs_receives() {
    let max_receives = 3;
    let aws = setup(max_receives).await;
    let settings = Settings { max_receives, max_attempts: 7, ..herald_tests::fast_settings() };
    let h = herald_on(&aws, Some(Providers::all(Arc::new(AlwaysBusy))), settings);
    let id = queue_rows(&h, 1).await;
    let row_id = herald::domain::RecipientRow::id_for(&id, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let row = h.requests.get_row(&tenant("acme"), &row_id).await.unwrap().unwrap();
        if row.status.is_terminal() {
            assert_eq!(row.status, herald::domain::Status::Failed);
            let msg = row.error_message.unwrap();
            assert!(msg.starts_with("gave up after 7 attempts"), "the row used every attempt: {msg}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "row still {:?} after 90 s", row.status);
        let event = aws.receive_event(10).await;
        if event.records.is_empty() {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        let response = herald_send::handle_batch(h.clone(), event.clone()).await;
        let failed: Vec<String> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        assert!(failed.is_empty(), "a retry goes back as a fresh message, never as a reported failure");
        aws.settle(&event, &failed).await;
    }
    assert_eq!(aws.depth(&aws.dlq_url).await, 0, "nothing was dead-lettered");
}

// ------------------------------------------------------------- CSV imports through S3

/// Hands every queued job to the send handler until the queue is empty.
async fn drain(aws: &Aws, herald: &Arc<Herald>) {
    for _ in 0..200 {
        let event = aws.receive_event(10).await;
        if event.records.is_empty() {
            return;
        }
        // A batch's jobs one after another: the emulator's DynamoDB checks a transaction's
        // conditions without a lock, so two jobs racing for one item (a repeated import chunk
        // creating a contact) can both win there, as they cannot on DynamoDB. Jobs racing in a
        // batch are the business of the tests that hand whole batches to the handler.
        let response = herald_send::handle_batch_with(herald.clone(), event.clone(), 1).await;
        assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
        aws.settle(&event, &[]).await;
    }
    panic!("the queue did not empty");
}

async fn bucket_keys(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    let out = s3.list_objects_v2().bucket(bucket).send().await.unwrap();
    out.contents().iter().filter_map(|o| o.key().map(String::from)).collect()
}

#[tokio::test]
async fn imports_travel_from_the_ingest_handler_and_from_s3_uploads_through_the_send_handler() {
    // Few: the emulator copies its table on every transaction. Several chunks are the service's
    // business, tested on the embedded store (tests/imports.rs).
    const LINES: u64 = 120;
    let aws = setup(5).await;
    aws.export_env();
    let bucket = "herald-imports-test";
    std::env::set_var("IMPORT_BUCKET", bucket);
    // One line at a time: the emulator's DynamoDB is not thread-safe.
    std::env::set_var("IMPORT_LINES_AT_ONCE", "1");
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk_config(&aws.endpoint).await).force_path_style(true).build(),
    );
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    let herald = Arc::new(AwsConfig::from_env().unwrap().connect().await.unwrap());
    std::env::remove_var("IMPORT_BUCKET");
    std::env::remove_var("IMPORT_LINES_AT_ONCE");
    let key = herald::service::keys::create_key(herald.keys.as_ref(), "acme", None).await.unwrap();
    let ingest = Ingest::new(herald.clone(), None);
    let segment = herald::domain::SegmentBody { name: Some("VIP".into()) }.validate("vip").unwrap();
    herald.segments.put_segment(&tenant("acme"), &segment).await.unwrap();

    // Through the API: the body goes to the bucket, the send handler reads it in chunks.
    let mut csv = String::from("phone,name,timezone\n");
    for i in 0..LINES {
        csv.push_str(&format!("+1415555{i:04},Member {i},America/Los_Angeles\n"));
    }
    csv.push_str("12,Bad,\n");
    let body = serde_json::to_string(&csv).unwrap();
    let event =
        fixture("apigw_v2_post_import.json", &[("{{API_KEY}}", &key), ("{{SEGMENT}}", "vip"), ("\"{{BODY}}\"", &body)]);
    let answer = ingest.handle(event).await.unwrap();
    assert_eq!(answer["statusCode"], 202, "{answer}");
    let started: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    let id = started["import_id"].as_str().unwrap().to_string();
    drain(&aws, &herald).await;
    let imports = herald.imports.as_ref().expect("imports set up from IMPORT_BUCKET");
    let done = imports.imports.get_import(&tenant("acme"), &id).await.unwrap().unwrap();
    assert_eq!(done.state, herald::domain::import::ImportState::Completed, "{done:?}");
    assert_eq!((done.lines, done.created, done.rejected), (LINES + 1, LINES, 1));
    assert_eq!(done.errors[0].line, LINES + 2);
    assert_eq!(herald.segments.member_count(&tenant("acme"), "vip").await.unwrap(), LINES);

    // Uploaded to the bucket straight: its event starts the import, once however often it comes.
    let upload = "email,plan\nnew@example.com,gold\n+not-an-email,\n";
    let object = "imports/acme/vip/June list.csv";
    s3.put_object().bucket(bucket).key(object).body(upload.as_bytes().to_vec().into()).send().await.unwrap();
    let notice = fixture(
        "s3_object_created.json",
        &[("{{BUCKET}}", bucket), ("{{KEY}}", "imports/acme/vip/June+list.csv"), ("{{ETAG}}", "0123abcd")],
    );
    let first = ingest.handle(notice.clone()).await.unwrap();
    let again = ingest.handle(notice).await.unwrap();
    assert_eq!(first["imports"][0]["import_id"], again["imports"][0]["import_id"], "{first} {again}");
    drain(&aws, &herald).await;
    let id = first["imports"][0]["import_id"].as_str().unwrap();
    let done = imports.imports.get_import(&tenant("acme"), id).await.unwrap().unwrap();
    assert_eq!((done.lines, done.created, done.rejected), (2, 1, 1), "{done:?}");
    assert_eq!(herald.segments.member_count(&tenant("acme"), "vip").await.unwrap(), LINES + 1);
    assert_eq!(bucket_keys(&s3, bucket).await, Vec::<String>::new(), "every file is deleted once imported");

    // An upload for a segment that does not exist is kept as a failed import saying so.
    s3.put_object()
        .bucket(bucket)
        .key("imports/acme/nope/a.csv")
        .body(b"phone\n".to_vec().into())
        .send()
        .await
        .unwrap();
    let notice = fixture(
        "s3_object_created.json",
        &[("{{BUCKET}}", bucket), ("{{KEY}}", "imports/acme/nope/a.csv"), ("{{ETAG}}", "e")],
    );
    let answer = ingest.handle(notice).await.unwrap();
    assert_eq!(answer["imports"][0]["state"], "failed", "{answer}");
}

// ------------------------------------------------------------- waits on EventBridge Scheduler

/// The rows of a request that ended `status`.
async fn rows_in(store: &DynamoStore, id: &str, status: Status) -> usize {
    let rows = store.list_rows(&tenant("acme"), id, None, 1_000).await.unwrap();
    rows.iter().filter(|r| r.status == status).count()
}

/// Jobs due days ahead become one schedule per request and minute, made once however often they
/// are queued, and the job a schedule puts on the queue is split and sent like any other.
#[tokio::test]
async fn jobs_due_beyond_15_minutes_wait_on_one_schedule_per_minute_and_are_sent_once_fired() {
    use herald::ports::{JobQueue, OutgoingJob};
    let aws = setup(5).await;
    let store = aws.store();
    let sandbox = Arc::new(herald::providers::sandbox::Sandbox::new(store.clone(), Default::default()));
    let queue = aws.scheduling_queue();
    let herald = Arc::new(Herald::new(
        Stores::from_one(store.clone()),
        queue.clone(),
        Providers::all(sandbox),
        Settings::default(),
    ));
    let id = queue_rows(&herald, 25).await;
    // Take the rows' jobs off the queue and hand them back due in two days, one row per job, as
    // the send function hands back rows a send window holds.
    let mut jobs = Vec::new();
    while aws.depth(&aws.queue_url).await > 0 {
        let event = aws.receive_event(10).await;
        for r in &event.records {
            let job: herald::domain::Job = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
            for row in &job.row_ids {
                let one = herald::domain::Job { row_ids: vec![row.clone()], ..job.clone() };
                jobs.push(OutgoingJob { job: one, delay: Duration::from_secs(2 * 86_400) });
            }
        }
        aws.settle(&event, &[]).await;
    }
    assert_eq!(jobs.len(), 25);
    let now = chrono::Utc::now();
    queue.send_batch(&jobs).await.unwrap();
    queue.send_batch(&jobs).await.unwrap();
    assert_eq!(aws.depth(&aws.queue_url).await, 0, "nothing hops on SQS");
    let names = schedule_names(&aws.scheduler).await;
    assert_eq!(names.len(), 1, "one schedule for the request's minute, made once: {names:?}");

    let s = aws.scheduler.get_schedule().group_name(SCHEDULE_GROUP).name(&names[0]).send().await.unwrap();
    let due = (now + chrono::TimeDelta::days(2)).format("%Y-%m-%dT%H:%M").to_string();
    let expression = s.schedule_expression().unwrap();
    assert!(expression.starts_with(&format!("at({due}")) && expression.ends_with(":00)"), "{expression}");
    assert_eq!(s.schedule_expression_timezone(), Some("UTC"));
    assert_eq!(s.flexible_time_window().unwrap().mode().as_str(), "OFF");
    assert_eq!(s.action_after_completion().map(|a| a.as_str()), Some("DELETE"));
    let target = s.target().unwrap();
    assert_eq!(target.arn(), aws.queue_arn);
    assert_eq!(target.role_arn(), SCHEDULER_ROLE_ARN);
    assert_eq!(target.dead_letter_config().and_then(|d| d.arn()), Some(aws.dlq_arn.as_str()));
    let merged: herald::domain::Job = serde_json::from_str(target.input().unwrap()).unwrap();
    assert_eq!(merged.row_ids.len(), 25, "the minute's rows travel in one message");

    let fired = aws.fire().await;
    assert_eq!(fired.len(), 1);
    assert_eq!(schedule_names(&aws.scheduler).await.len(), 0, "a fired schedule deletes itself");
    let event = aws.receive_event(10).await;
    let response = herald_send::handle_batch(herald.clone(), event.clone()).await;
    assert!(response.batch_item_failures.is_empty());
    aws.settle(&event, &[]).await;
    assert_eq!(aws.depth(&aws.queue_url).await, 3, "split into jobs of ten rows");
    drain(&aws, &herald).await;
    assert_eq!(rows_in(&store, &id, Status::Sent).await, 25);
}

/// A broadcast due in two days, through the functions' own start-up path: its rows wait on a
/// schedule, a schedule that fires early hands them back to one, and a cancel ends them.
#[tokio::test]
async fn a_broadcast_due_in_two_days_waits_on_a_schedule_through_the_handlers_and_cancels() {
    let aws = setup(5).await;
    aws.export_env();
    let herald = Arc::new(AwsConfig::from_env().unwrap().connect().await.unwrap());
    let key = herald::service::keys::create_key(herald.keys.as_ref(), "acme", None).await.unwrap();
    let ingest = Ingest::new(herald.clone(), None);
    let send_at = (chrono::Utc::now() + chrono::TimeDelta::days(2)).to_rfc3339();
    let mut post = fixture("apigw_v2_post_broadcast.json", &[("{{API_KEY}}", &key)]);
    let body = json!({"recipients": [{"phone": "+14155550123"}, {"phone": "+14155550124"}],
                      "messages": [{"text": "Doors open at nine"}], "send_at": send_at});
    post["body"] = json!(body.to_string());
    let answer = ingest.handle(post).await.unwrap();
    assert_eq!(answer["statusCode"], 202, "{answer}");
    let id = serde_json::from_str::<Value>(answer["body"].as_str().unwrap()).unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(aws.depth(&aws.queue_url).await, 0, "no SQS message waits");
    assert_eq!(schedule_names(&aws.scheduler).await.len(), 1);
    let store = aws.store();
    assert_eq!(rows_in(&store, &id, Status::Scheduled).await, 2);

    // Fired early (a clock skew, a hand-made test): the rows are not due, so they go back to a
    // schedule, not to SQS hops, and nothing is sent.
    aws.fire().await;
    drain(&aws, &herald).await;
    assert_eq!(aws.depth(&aws.queue_url).await, 0);
    assert_eq!(schedule_names(&aws.scheduler).await.len(), 1, "back on a schedule");
    assert_eq!(rows_in(&store, &id, Status::Scheduled).await, 2);

    let cancel =
        herald::service::cancel::cancel(herald.requests.as_ref(), herald.events.as_deref(), &tenant("acme"), &id).await;
    assert!(cancel.is_ok(), "{cancel:?}");
    aws.fire().await;
    drain(&aws, &herald).await;
    assert_eq!(rows_in(&store, &id, Status::Canceled).await, 2, "a canceled row is not sent when its schedule fires");
    assert_eq!(schedule_names(&aws.scheduler).await.len(), 0, "and is not scheduled again");

    std::env::remove_var("QUEUE_ARN");
    let missing = AwsConfig::from_env().unwrap_err();
    assert_eq!(missing.name, "QUEUE_ARN", "a schedule group without the queue's ARN stops start-up");
}

/// Status events in the AWS shape: subscriptions in DynamoDB, the events on SQS through the send
/// handler, `broadcast.completed` once the counters (flushed per batch) show every row final.
#[tokio::test]
async fn status_events_travel_through_sqs_and_the_send_handler() {
    use herald::domain::events::EventSubscription;
    use herald::ports::EventStore;
    let aws = setup(10).await;
    let store = aws.store();
    let sandbox = Arc::new(herald::providers::sandbox::Sandbox::new(store.clone(), Default::default()));
    let settings = Settings { job_rows_at_once: 1, ..herald_tests::fast_settings() };
    let stores = Stores::from_one(store.clone()).with_events(store.clone());
    let h = Arc::new(Herald::new(stores, aws.queue(), Providers::all(sandbox), settings));
    let rx = herald_tests::fake::FakeProvider::start(herald_tests::fake::Reply::raw(200, "")).await;
    let now = herald::domain::now();
    let sub = EventSubscription {
        id: "all".into(),
        url: rx.url.clone(),
        events: vec!["*".into()],
        secret: herald::providers::webhook::new_secret(),
        created_at: now,
        updated_at: now,
    };
    store.put_subscription(&tenant("acme"), &sub).await.unwrap();
    let id = queue_rows(&h, 2).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while rx.requests().len() < 3 {
        assert!(std::time::Instant::now() < deadline, "events posted: {}", rx.requests().len());
        let event = aws.receive_event(10).await;
        let response = herald_send::handle_batch(h.clone(), event.clone()).await;
        let failed: Vec<String> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        aws.settle(&event, &failed).await;
    }
    let key = herald::providers::webhook::signing_key(&sub.secret).unwrap();
    let mut kinds: Vec<String> = Vec::new();
    for r in rx.requests() {
        let (eid, ts) = (&r.headers["webhook-id"], r.headers["webhook-timestamp"].parse::<i64>().unwrap());
        assert_eq!(r.headers["webhook-signature"], herald::providers::webhook::sign(&key, eid, ts, &r.body));
        kinds.push(r.json()["type"].as_str().unwrap().to_string());
    }
    kinds.sort();
    assert_eq!(kinds, ["broadcast.completed", "message.sent", "message.sent"]);
    let completed = rx.requests().iter().map(|r| r.json()).find(|e| e["type"] == "broadcast.completed").unwrap();
    assert_eq!(completed["data"]["request_id"], json!(id));
}

/// DynamoDB cancels a row when its job claims it, not in bulk: that claim emits the row's
/// `message.canceled`, once, and the last one completes the request.
#[tokio::test]
async fn rows_canceled_at_their_claim_emit_message_canceled_once() {
    use herald::domain::events::EventSubscription;
    use herald::ports::EventStore;
    let aws = setup(10).await;
    let store = aws.store();
    let sandbox = Arc::new(herald::providers::sandbox::Sandbox::new(store.clone(), Default::default()));
    let settings = Settings { job_rows_at_once: 1, ..herald_tests::fast_settings() };
    let stores = Stores::from_one(store.clone()).with_events(store.clone());
    let h = Arc::new(Herald::new(stores, aws.queue(), Providers::all(sandbox), settings));
    let rx = herald_tests::fake::FakeProvider::start(herald_tests::fake::Reply::raw(200, "")).await;
    let now = herald::domain::now();
    let sub = EventSubscription {
        id: "c".into(),
        url: rx.url.clone(),
        events: vec!["message.canceled".into(), "broadcast.completed".into()],
        secret: herald::providers::webhook::new_secret(),
        created_at: now,
        updated_at: now,
    };
    store.put_subscription(&tenant("acme"), &sub).await.unwrap();
    let body = json!({"recipients": [{"phone": "+14155550101"}, {"phone": "+14155550102"}],
        "messages": [{"text": "hi"}], "background": true});
    let plan = serde_json::from_value::<herald::domain::BroadcastBody>(body).unwrap().validate().unwrap();
    let id =
        herald::service::ingest::ingest(&h.ingest, &tenant("acme"), plan, "native").await.unwrap().request.id.clone();
    herald::service::cancel::cancel(h.requests.as_ref(), h.events.as_deref(), &tenant("acme"), &id).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while rx.requests().len() < 3 {
        assert!(std::time::Instant::now() < deadline, "events posted: {}", rx.requests().len());
        let event = aws.receive_event(10).await;
        let response = herald_send::handle_batch(h.clone(), event.clone()).await;
        let failed: Vec<String> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        aws.settle(&event, &failed).await;
    }
    // Whatever is left on the queue (the rows' jobs, already done) posts nothing more.
    for _ in 0..3 {
        let event = aws.receive_event(10).await;
        let response = herald_send::handle_batch(h.clone(), event.clone()).await;
        let failed: Vec<String> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        aws.settle(&event, &failed).await;
    }
    let mut kinds: Vec<String> = rx.requests().iter().map(|r| r.json()["type"].as_str().unwrap().to_string()).collect();
    kinds.sort();
    assert_eq!(kinds, ["broadcast.completed", "message.canceled", "message.canceled"]);
    let mut rows: Vec<String> =
        rx.requests().iter().filter_map(|r| r.json()["data"]["id"].as_str().map(String::from)).collect();
    rows.dedup();
    assert_eq!(rows.len(), 2, "one event per row");
}

#[tokio::test]
async fn a_twilio_status_callback_goes_through_sqs_signed_with_the_secret_in_dynamodb() {
    use herald::dialects::twilio as tw;
    use herald_tests::fake::{FakeProvider, Reply};
    let aws = setup(5).await;
    let store = aws.store();
    let sandbox = herald::providers::sandbox::Sandbox::new(store.clone(), Default::default());
    let stores = Stores::from_one(store.clone()).with_events(store.clone());
    let h =
        Arc::new(Herald::new(stores, aws.queue(), Providers::all(Arc::new(sandbox)), herald_tests::fast_settings()));
    let rx = FakeProvider::start(Reply::raw(200, "")).await;
    let secret = "00112233445566778899aabbccddeeff";
    let settings = herald::ports::TenantSettings { twilio_signing_secret: Some(secret.into()), ..Default::default() };
    h.keys.put_settings(&tenant("acme"), &settings).await.unwrap();
    let url = format!("{}/cb?customer=7", rx.url);
    let form = format!("To=%2B14155550123&From=%2B15005550006&Body=hi&StatusCallback={}", urlencode(&url));
    let plan = tw::message_plan(tw::read_message_form(form.as_bytes()), chrono::Utc::now(), true).unwrap();
    let accepted = herald::service::ingest::ingest(&h.ingest, &tenant("acme"), plan, "twilio").await.unwrap();
    drain(&aws, &h).await;
    let got = rx.requests();
    assert_eq!(got.len(), 1, "one callback for the one move: {got:?}");
    let params = got[0].form();
    assert_eq!(got[0].headers["x-twilio-signature"], herald::net::signatures::twilio_signature(secret, &url, &params));
    let fields: std::collections::HashMap<_, _> = params.into_iter().collect();
    assert_eq!(fields["MessageSid"], tw::request_sid("SM", &accepted.request.id));
    assert_eq!(fields["MessageStatus"], "sent");
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The API's answer to `method path` through the ingest handler, as API Gateway passes it.
async fn api(ingest: &Ingest, key: &str, method: &str, path: &str, query: &str) -> (u16, Value) {
    let mut event = fixture("apigw_v2_get_broadcast.json", &[("{{API_KEY}}", key)]);
    event["rawPath"] = json!(path);
    event["requestContext"]["http"]["path"] = json!(path);
    event["requestContext"]["http"]["method"] = json!(method);
    event["rawQueryString"] = json!(query);
    let params: serde_json::Map<String, Value> = url_pairs(query);
    event["queryStringParameters"] = Value::Object(params);
    let answer = ingest.handle(event).await.unwrap();
    let body = serde_json::from_str(answer["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    (answer["statusCode"].as_u64().unwrap() as u16, body)
}

fn url_pairs(query: &str) -> serde_json::Map<String, Value> {
    query.split('&').filter_map(|p| p.split_once('=')).map(|(k, v)| (k.to_string(), json!(v))).collect()
}

/// A job whose worker dies on every receive goes to the dead-letter queue; the send function,
/// fed from that queue, keeps it for its tenant; the API lists it to that tenant alone, and a
/// redrive puts it back on the jobs queue, where it sends its row.
#[tokio::test]
async fn a_dead_lettered_job_is_kept_listed_and_redriven_through_the_functions() {
    let aws = setup(2).await;
    aws.export_env();
    std::env::set_var("MAX_RECEIVE_COUNT", "2");
    let herald = Arc::new(AwsConfig::from_env().unwrap().connect().await.unwrap());
    std::env::remove_var("MAX_RECEIVE_COUNT");
    let key = herald::service::keys::create_key(herald.keys.as_ref(), "acme", None).await.unwrap();
    let other = herald::service::keys::create_key(herald.keys.as_ref(), "rival", None).await.unwrap();
    let ingest = Ingest::new(herald.clone(), None);
    let answer = ingest.handle(fixture("apigw_v2_post_broadcast.json", &[("{{API_KEY}}", &key)])).await.unwrap();
    assert_eq!(answer["statusCode"], 202, "{answer}");
    let created: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    let request_id = created["request_id"].as_str().unwrap().to_string();

    // Received twice, handled never (the worker died each time): SQS moves it on.
    for _ in 0..2 {
        let event = aws.receive_event(10).await;
        assert_eq!(event.records.len(), 1);
        aws.show_again(&event).await;
    }
    assert!(aws.receive_event(10).await.records.is_empty(), "moved to the dead-letter queue");
    let dead_source = EventSource::new(aws.sqs.clone(), &aws.dlq_url).with_arn(&aws.dlq_arn);
    let event = dead_source.receive(10, 1).await;
    assert_eq!(event.records.len(), 1);
    let response = herald_send::handle_batch(herald.clone(), event.clone()).await;
    assert!(response.batch_item_failures.is_empty(), "{:?}", response.batch_item_failures);
    // Delivered twice (at least once): kept once.
    assert!(herald_send::handle_batch(herald.clone(), event.clone()).await.batch_item_failures.is_empty());
    dead_source.settle(&event, &[]).await;
    assert_eq!(aws.depth(&aws.dlq_url).await, 0, "SQS lets go of it once kept");

    let (status, list) = api(&ingest, &key, "GET", "/v1/dead-letters", "limit=10").await;
    assert_eq!(status, 200, "{list}");
    let dead = list["dead_letters"].as_array().unwrap();
    assert_eq!(dead.len(), 1, "{list}");
    assert_eq!(dead[0]["request_id"], request_id.as_str());
    assert_eq!((dead[0]["kind"].as_str(), dead[0]["receive_count"].as_u64()), (Some("rows"), Some(2)));
    assert_eq!(list["next_cursor"], Value::Null);
    let id = dead[0]["id"].as_str().unwrap().to_string();
    assert_eq!(Some(id.as_str()), event.records[0].message_id.as_deref());

    let (status, theirs) = api(&ingest, &other, "GET", "/v1/dead-letters", "").await;
    assert_eq!((status, theirs["dead_letters"].as_array().map(Vec::len)), (200, Some(0)), "{theirs}");
    let redrive = format!("/v1/dead-letters/{id}/redrive");
    assert_eq!(api(&ingest, &other, "POST", &redrive, "").await.0, 404, "not another tenant's to redrive");
    let (status, answer) = api(&ingest, &key, "POST", &redrive, "").await;
    assert_eq!((status, answer), (202, json!({"id": id, "requeued": true})));
    assert_eq!(api(&ingest, &key, "POST", &redrive, "").await.0, 404, "redriven once");

    let event = aws.receive_event(10).await;
    assert_eq!(event.records.len(), 1, "back on the jobs queue");
    assert!(herald_send::handle_batch(herald.clone(), event.clone()).await.batch_item_failures.is_empty());
    aws.settle(&event, &[]).await;
    let rows = herald.requests.list_rows(&tenant("acme"), &request_id, None, 10).await.unwrap();
    assert_eq!(rows[0].status, Status::Sent, "the redriven job sent its row");
}
