//! Part 6: what a delivered recipient costs on AWS. A broadcast runs through the ingest and send
//! handlers against the emulator, with the event source mapping played by hand (receive 10,
//! handle, delete what succeeded), while the adapters' SDK clients count every request and the
//! DynamoDB capacity it consumes (`herald::adapters::aws::meter`). It runs twice over the same
//! audience: first to new contacts (created on first send), then to known ones; then once more
//! to the same contacts as a segment, one audience broadcast fanned out through the queue.
//! Last, the same people 30 days ahead: what the rows' wait costs on EventBridge Scheduler.

use async_trait::async_trait;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use herald::adapters::aws::meter::{Meter, MeterCounts};
use herald::adapters::aws::{DynamoStore, ScheduleTarget, Schedules, SqsQueue};
use herald::app::{Herald, Settings, Stores};
use herald::ports::RequestLog;
use herald::providers::{OutboundMessage, Provider, ProviderError, ProviderReceipt, Providers};
use herald_tests::aws::{
    create_resources, create_schedule_group, fire_schedules, reset_emulator, schedule_names, sdk_config, EventSource,
    Resources, SCHEDULER_ROLE_ARN, SCHEDULE_GROUP,
};

use crate::proc::KEY;

/// US-East (N. Virginia) on-demand prices, USD, as published on aws.amazon.com/sqs/pricing and
/// aws.amazon.com/dynamodb/pricing/on-demand (the on-demand prices in force from November 2024;
/// this machine cannot reach AWS's site to re-check them): SQS standard queue requests per million (beyond the free tier), DynamoDB write and
/// read request units per million.
pub const SQS_PER_MILLION: f64 = 0.40;
pub const WRITE_UNIT_PER_MILLION: f64 = 0.625;
pub const READ_UNIT_PER_MILLION: f64 = 0.125;
/// EventBridge Scheduler, per million scheduled invocations beyond the free tier
/// (aws.amazon.com/eventbridge/pricing, same caveat).
pub const SCHEDULER_PER_MILLION: f64 = 1.00;
pub const PRICES_DATE: &str = "as published from 2024-11-01; not re-checked online from this machine";

#[derive(clap::Args)]
pub struct Args {
    /// The AWS emulator (moto) to run against; it is reset first.
    #[arg(long, env = "HERALD_BENCH_AWS_ENDPOINT")]
    aws_endpoint: String,
    /// Recipients of the broadcast (sent in 1,000-recipient requests).
    #[arg(long, default_value_t = 10_000)]
    recipients: usize,
}

/// A provider that accepts every message, as a real one does when all goes well.
struct Accepting(AtomicU64);

#[async_trait]
impl Provider for Accepting {
    fn name(&self) -> &'static str {
        "bench"
    }
    async fn send(&self, _m: &OutboundMessage) -> Result<ProviderReceipt, ProviderError> {
        Ok(ProviderReceipt { external_message_id: format!("bench-{}", self.0.fetch_add(1, Ordering::Relaxed)) })
    }
}

pub async fn run(args: Args) -> Result<Value, String> {
    let endpoint = args.aws_endpoint.trim_end_matches('/').to_string();
    reset_emulator(&endpoint).await?;
    let sdk = sdk_config(&endpoint).await;
    let (plain_ddb, plain_sqs) = (aws_sdk_dynamodb::Client::new(&sdk), aws_sdk_sqs::Client::new(&sdk));
    let resources = create_resources(&plain_ddb, &plain_sqs, 5).await;
    let plain_scheduler = aws_sdk_scheduler::Client::new(&sdk);
    create_schedule_group(&plain_scheduler).await;
    let (herald_meter, esm_meter) = (Meter::new(), Meter::new());
    let (ddb, sqs) = herald_meter.clients(&sdk);
    let (_, esm_sqs) = esm_meter.clients(&sdk);
    let store = Arc::new(DynamoStore::new(ddb, resources.table.clone()));
    let target = ScheduleTarget {
        group: SCHEDULE_GROUP.into(),
        queue_arn: resources.queue_arn.clone(),
        role_arn: SCHEDULER_ROLE_ARN.into(),
        dead_letter_arn: Some(resources.dlq_arn.clone()),
    };
    let schedules = Schedules::new(herald_meter.scheduler_client(&sdk), target);
    let queue = Arc::new(SqsQueue::new(sqs, resources.queue_url.clone()).with_schedules(schedules));
    let h = Arc::new(Herald::new(
        Stores::from_one(store.clone()),
        queue,
        Providers::all(Arc::new(Accepting(AtomicU64::new(0)))),
        // One row at a time, as one record at a time below: the emulator is not thread-safe.
        Settings { job_rows_at_once: 1, ..Settings::default() },
    ));
    herald::service::keys::create_key(store.as_ref(), "acme", Some(KEY)).await.map_err(|e| e.to_string())?;
    let check = DynamoStore::new(plain_ddb, resources.table.clone());
    let ingest = herald_ingest::Ingest::new(h.clone(), None);
    let source = EventSource::new(esm_sqs, &resources.queue_url);

    let mut rounds = Vec::new();
    for round in ["new contacts", "known contacts"] {
        herald_meter.reset();
        esm_meter.reset();
        let started = std::time::Instant::now();
        let mut ids = Vec::new();
        for first in (0..args.recipients).step_by(1000) {
            let body = crate::broadcast_body(first, (args.recipients - first).min(1000));
            let key = format!("cost-{}-{first}", round.replace(' ', "-"));
            let event = crate::apigw_post(&body, Some(&key));
            let answer = ingest.handle(event).await.map_err(|e| e.to_string())?;
            if answer["statusCode"] != 202 {
                return Err(format!("ingest answered {answer}"));
            }
            let v: Value = serde_json::from_str(answer["body"].as_str().unwrap_or("{}")).map_err(|e| e.to_string())?;
            ids.push(v["request_id"].as_str().unwrap_or_default().to_string());
        }
        drain(&source, &h).await;
        let mut sent = 0;
        for id in &ids {
            let counts = check.count_rows(&"acme".into(), id).await.map_err(|e| e.to_string())?;
            sent += counts.by_status.get(&herald::domain::Status::Sent).copied().unwrap_or(0);
        }
        if sent != args.recipients as u64 {
            return Err(format!("{round}: {sent} of {} rows ended sent", args.recipients));
        }
        let figures = per_recipient(&herald_meter.counts(), &esm_meter.counts(), args.recipients);
        println!("cost, {round} ({:.0} s on the emulator): {figures}", started.elapsed().as_secs_f64());
        rounds.push(json!({"round": round, "figures": figures}));
    }
    rounds.push(json!({"round": "segment audience", "figures": audience_round(&h, &herald_meter, &esm_meter, &source, &ingest, &check, args.recipients).await?}));
    let fire = Firing { scheduler: &plain_scheduler, sqs: &plain_sqs, resources: &resources };
    let scheduled = scheduled_round(&h, (&herald_meter, &esm_meter), &source, &ingest, &fire, args.recipients).await?;
    Ok(json!({
        "scheduled": scheduled,
        "recipients": args.recipients,
        "prices": {
            "region": "us-east-1",
            "date": PRICES_DATE,
            "sqs_per_million_requests": SQS_PER_MILLION,
            "dynamodb_per_million_write_units": WRITE_UNIT_PER_MILLION,
            "dynamodb_per_million_read_units": READ_UNIT_PER_MILLION,
            "scheduler_per_million_invocations": SCHEDULER_PER_MILLION,
        },
        "rounds": rounds,
    }))
}

/// The event source mapping, played by hand until the queue stays empty.
async fn drain(source: &EventSource, h: &Arc<Herald>) {
    let mut empty = 0;
    while empty < 2 {
        let event = source.receive(10, 0).await;
        if event.records.is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        // One record at a time: the emulator's DynamoDB transactions are not thread-safe, and
        // a failed request would be counted as a retry Herald never makes on AWS. Still one
        // batch, as the event source mapping hands it over: its status counts are one write.
        let answer = herald_send::handle_batch_with(h.clone(), event.clone(), 1).await;
        let failed: Vec<String> = answer.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        source.settle(&event, &failed).await;
    }
}

/// The same (known) contacts as a segment, and one broadcast to it: the fan-out jobs' requests
/// count with the rows'. Adding the members is not counted.
async fn audience_round(
    h: &Arc<Herald>,
    herald_meter: &Meter,
    esm_meter: &Meter,
    source: &EventSource,
    ingest: &herald_ingest::Ingest,
    check: &DynamoStore,
    recipients: usize,
) -> Result<Value, String> {
    use herald::domain::{ContactBody, MembersBody, SegmentBody};
    let tenant: herald::domain::TenantId = "acme".into();
    let segment = SegmentBody { name: Some("All".into()) }.validate("all").map_err(|e| format!("{e:?}"))?;
    h.segments.put_segment(&tenant, &segment).await.map_err(|e| e.to_string())?;
    for first in (0..recipients).step_by(10_000) {
        let contacts = (first..(first + 10_000).min(recipients))
            .map(|i| ContactBody { phone: Some(crate::phone(i)), ..Default::default() })
            .collect();
        let body = MembersBody { contact_ids: vec![], contacts };
        herald::service::segments::add_members(h.segments.as_ref(), h.contacts.as_ref(), &tenant, "all", body)
            .await
            .map_err(|e| e.to_string())?;
    }
    herald_meter.reset();
    esm_meter.reset();
    let started = std::time::Instant::now();
    let body = json!({"audience": {"segments": ["all"]}, "messages": [{"text": "Hi {{name}}, your order has shipped"}], "variables": {"name": "Ada"}});
    let answer = ingest.handle(crate::apigw_post(&body.to_string(), None)).await.map_err(|e| e.to_string())?;
    if answer["statusCode"] != 202 {
        return Err(format!("ingest answered {answer}"));
    }
    let v: Value = serde_json::from_str(answer["body"].as_str().unwrap_or("{}")).map_err(|e| e.to_string())?;
    let id = v["request_id"].as_str().unwrap_or_default().to_string();
    drain(source, h).await;
    let counts = check.count_rows(&tenant, &id).await.map_err(|e| e.to_string())?;
    let sent = counts.by_status.get(&herald::domain::Status::Sent).copied().unwrap_or(0);
    if sent != recipients as u64 {
        return Err(format!("segment audience: {sent} of {recipients} rows ended sent ({counts:?})"));
    }
    let figures = per_recipient(&herald_meter.counts(), &esm_meter.counts(), recipients);
    println!("cost, segment audience ({:.0} s on the emulator): {figures}", started.elapsed().as_secs_f64());
    Ok(figures)
}

fn per_recipient(herald: &MeterCounts, esm: &MeterCounts, n: usize) -> Value {
    let n = n as f64;
    let sqs_herald = herald.requests_to("sqs") as f64 / n;
    let sqs_esm = esm.requests_to("sqs") as f64 / n;
    let ddb = herald.requests_to("dynamodb") as f64 / n;
    let (wcu, rcu) = (herald.write_units / n, herald.read_units / n);
    let usd = (sqs_herald + sqs_esm) * SQS_PER_MILLION + wcu * WRITE_UNIT_PER_MILLION + rcu * READ_UNIT_PER_MILLION;
    json!({
        "sqs_requests_by_herald": sqs_herald,
        "sqs_requests_by_event_source": sqs_esm,
        "sqs_requests_total": sqs_herald + sqs_esm,
        "dynamodb_requests": ddb,
        "dynamodb_write_units": wcu,
        "dynamodb_read_units": rcu,
        "usd_per_million_recipients": usd,
        "requests": herald.requests,
        "event_source_requests": esm.requests,
    })
}

/// What EventBridge Scheduler does when a schedule is due, played by hand on the emulator.
struct Firing<'a> {
    scheduler: &'a aws_sdk_scheduler::Client,
    sqs: &'a aws_sdk_sqs::Client,
    resources: &'a Resources,
}

/// The same people, due in 30 days: the requests that park their rows on schedules, and those
/// that turn each fired schedule back into send jobs (the scheduler's `SendMessage`, the send
/// handler's split into jobs of ten). Sending them then costs what the known contacts' round
/// does. The rows are not due yet when fired by hand, so the round stops after the split.
async fn scheduled_round(
    h: &Arc<Herald>,
    (herald_meter, esm_meter): (&Meter, &Meter),
    source: &EventSource,
    ingest: &herald_ingest::Ingest,
    fire: &Firing<'_>,
    recipients: usize,
) -> Result<Value, String> {
    herald_meter.reset();
    esm_meter.reset();
    let send_at = (chrono::Utc::now() + chrono::TimeDelta::days(30)).to_rfc3339();
    for first in (0..recipients).step_by(1000) {
        let mut body: Value = serde_json::from_str(&crate::broadcast_body(first, (recipients - first).min(1000)))
            .map_err(|e| e.to_string())?;
        body["send_at"] = json!(send_at);
        let answer = ingest.handle(crate::apigw_post(&body.to_string(), None)).await.map_err(|e| e.to_string())?;
        if answer["statusCode"] != 202 {
            return Err(format!("ingest answered {answer}"));
        }
    }
    let parked = herald_meter.counts();
    let schedules = schedule_names(fire.scheduler).await.len();
    let r = fire.resources;
    let fired = fire_schedules(fire.scheduler, fire.sqs, &[(&r.queue_arn, &r.queue_url)]).await.len();
    herald_meter.reset();
    esm_meter.reset();
    let mut split = 0;
    while split < fired {
        let event = source.receive(10, 0).await;
        if event.records.is_empty() {
            return Err(format!("{split} of {fired} fired jobs came off the queue"));
        }
        split += event.records.len();
        let answer = herald_send::handle_batch_with(h.clone(), event.clone(), 1).await;
        let failed: Vec<String> = answer.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        source.settle(&event, &failed).await;
    }
    let firing = (herald_meter.counts(), esm_meter.counts());
    let _ = fire.sqs.purge_queue().queue_url(&r.queue_url).send().await;
    let n = recipients as f64;
    let per = |x: u64| x as f64 / n;
    // The scheduler's own SendMessage per fired schedule, as SQS bills it.
    let firing_sqs = per(firing.0.requests_to("sqs") + firing.1.requests_to("sqs")) + per(fired as u64);
    let usd =
        per(fired as u64) * SCHEDULER_PER_MILLION + (per(parked.requests_to("sqs")) + firing_sqs) * SQS_PER_MILLION;
    let figures = json!({
        "wait_days": 30,
        "schedules": schedules,
        "rows_per_schedule": n / schedules.max(1) as f64,
        "scheduler_requests_per_row": per(parked.requests_to("scheduler")),
        "scheduler_invocations_per_row": per(fired as u64),
        "sqs_requests_per_row_while_waiting": per(parked.requests_to("sqs")),
        "sqs_requests_per_row_when_due": firing_sqs,
        "sqs_requests_per_row_hopping": 2.0 * 30.0 * 24.0 * 4.0,
        "usd_per_million_rows_waiting": usd,
        "requests_parking": parked.requests,
        "requests_firing": firing.0.requests,
    });
    println!("cost, scheduled 30 days ahead: {figures}");
    Ok(figures)
}
