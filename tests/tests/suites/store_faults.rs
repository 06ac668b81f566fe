//! Store and queue faults, injected into the embedded adapters: calls that fail before their
//! work, and calls whose write committed although the caller was told it failed. Each test names
//! the stranded or duplicated message it guards against.

use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

use herald::adapters::embedded::{self, EmbeddedQueue, EmbeddedStore, Fault, Faults};
use herald::app::{Herald, Settings, Stores};
use herald::domain::{RecipientRow, Status};
use herald::ports::{JobQueue, Outbox, OutboxEntry, OutgoingJob, ReceivedJob, RowLeases, StatusLookup};
use herald::providers::sandbox::{Sandbox, SandboxBehaviour};
use herald::providers::Providers;
use herald::service::worker::{handle_job, JobResult};
use herald_tests::tenant;

struct Rig {
    _dir: tempfile::TempDir,
    store: Arc<EmbeddedStore>,
    queue: Arc<EmbeddedQueue>,
    store_faults: Arc<Faults>,
    queue_faults: Arc<Faults>,
    h: Arc<Herald>,
}

fn rig(max_receives: u32) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let (store, queue) = embedded::open(dir.path(), max_receives).unwrap();
    let (store_faults, queue_faults) = (Arc::new(Faults::new("store", 0.0)), Arc::new(Faults::new("queue", 0.0)));
    store.inject_faults(store_faults.clone());
    queue.inject_faults(queue_faults.clone());
    let sandbox = Arc::new(Sandbox::new(store.clone(), SandboxBehaviour::default()));
    let settings = Settings { max_receives, ..herald_tests::fast_settings() };
    let h = Arc::new(Herald::new(Stores::from_one(store.clone()), queue.clone(), Providers::all(sandbox), settings));
    Rig { _dir: dir, store, queue, store_faults, queue_faults, h }
}

/// Ingests one recipient (queued, background) and returns its row id.
async fn ingest_one(h: &Herald) -> String {
    ingest_n(h, 1).await.remove(0)
}

/// Ingests `n` recipients (queued, background) and returns their row ids.
async fn ingest_n(h: &Herald, n: usize) -> Vec<String> {
    let recipients: Vec<_> = (0..n).map(|i| json!({"phone": format!("+1415555{i:04}")})).collect();
    let plan = serde_json::from_value::<herald::domain::BroadcastBody>(
        json!({"recipients": recipients, "messages": [{"text": "hi"}], "channel": "sms"}),
    )
    .unwrap()
    .validate()
    .unwrap();
    let accepted = herald::service::ingest::ingest(&h.ingest, &tenant("t"), plan, "native").await.expect("ingest");
    accepted.rows.iter().map(|r| r.id.clone()).collect()
}

async fn row(r: &Rig, id: &str) -> RecipientRow {
    r.store.get_row(&tenant("t"), id).await.unwrap().unwrap()
}

async fn outbox_len(r: &Rig) -> usize {
    r.store.list_outbox(&tenant("t"), None, None, 100).await.unwrap().len()
}

/// Receives every visible job and handles it as a worker would, until none is left.
async fn drain(r: &Rig) {
    for _ in 0..50 {
        let jobs = r.queue.receive(10, Duration::from_secs(30)).await.unwrap();
        if jobs.is_empty() {
            return;
        }
        for job in jobs {
            match handle_job(r.h.deliver.clone(), &job).await {
                JobResult::Delete => r.queue.delete(&job.receipt).await.unwrap(),
                JobResult::Replace(back) => {
                    // Now rather than after their backoff: the test waits for nothing.
                    let now: Vec<OutgoingJob> =
                        back.into_iter().map(|j| OutgoingJob { delay: Duration::ZERO, ..j }).collect();
                    r.queue.replace(&job, &now).await.unwrap()
                }
                JobResult::Leave => {}
            }
        }
    }
    panic!("the queue never drained");
}

async fn receive_one(r: &Rig) -> ReceivedJob {
    let mut jobs = r.queue.receive(1, Duration::ZERO).await.unwrap();
    assert_eq!(jobs.len(), 1, "one job waiting");
    jobs.remove(0)
}

#[tokio::test]
async fn the_last_receive_marks_the_row_failed_even_when_the_store_blinks() {
    let r = rig(10);
    let id = ingest_one(&r.h).await;
    let job = receive_one(&r).await;
    let last = ReceivedJob { receive_count: r.h.settings.max_receives, ..job };
    // The claim fails three times (delivery gives up), then marking the row failed fails twice.
    r.store_faults.fail_next(5);
    assert_eq!(handle_job(r.h.deliver.clone(), &last).await, JobResult::Leave);
    let row = row(&r, &id).await;
    assert_eq!(row.status, Status::Failed, "the dead-lettered job's row must not stay pending");
    assert!(row.error_message.unwrap().contains("could not be delivered after 10 tries"));
    assert_eq!(outbox_len(&r).await, 0);
}

#[tokio::test]
async fn a_store_error_brings_the_job_back_soon_not_after_the_visibility_timeout() {
    let r = rig(10);
    ingest_one(&r.h).await;
    let job = receive_one(&r).await;
    r.store_faults.fail_next(3);
    match handle_job(r.h.deliver.clone(), &job).await {
        JobResult::Replace(back) => {
            assert_eq!(back.len(), 1, "{back:?}");
            assert!(back[0].delay < r.h.settings.visibility, "{back:?}");
        }
        other => panic!("a transient store error should retry the job, got {other:?}"),
    }
}

#[tokio::test]
async fn a_row_whose_dead_letter_mark_never_took_is_failed_by_the_sweeper() {
    let r = rig(1);
    let id = ingest_one(&r.h).await;
    let job = receive_one(&r).await;
    // Delivery fails and so does every try at marking the row: it is left pending.
    r.store_faults.fail_next(3 + 5);
    assert_eq!(handle_job(r.h.deliver.clone(), &job).await, JobResult::Leave);
    assert!(row(&r, &id).await.status.is_pending());
    // The next receive dead-letters the job.
    assert!(r.queue.receive(10, Duration::ZERO).await.unwrap().is_empty());
    assert_eq!(r.queue.depth().await.unwrap().2, 1, "the job is dead-lettered");
    let swept = herald::local::sweep(&r.store, &r.queue, Duration::ZERO).await.unwrap();
    assert_eq!(swept, herald::local::Swept { requeued: 0, failed: 1 });
    let row = row(&r, &id).await;
    assert_eq!(row.status, Status::Failed);
    assert!(row.error_message.unwrap().contains("dead-lettered"));
    assert_eq!(outbox_len(&r).await, 0, "nothing was sent");
}

#[tokio::test]
async fn a_row_left_queued_with_no_job_is_requeued_and_sent_once() {
    let r = rig(10);
    let id = ingest_one(&r.h).await;
    // The job vanished (as if the enqueue had failed and the clean-up too).
    let job = receive_one(&r).await;
    r.queue.delete(&job.receipt).await.unwrap();
    let grace = Duration::from_secs(60);
    assert_eq!(herald::local::sweep(&r.store, &r.queue, grace).await.unwrap(), Default::default(), "too recent");
    let swept = herald::local::sweep(&r.store, &r.queue, Duration::ZERO).await.unwrap();
    assert_eq!(swept.requeued, 1);
    assert_eq!(
        herald::local::sweep(&r.store, &r.queue, Duration::ZERO).await.unwrap(),
        Default::default(),
        "a row with a job is left alone"
    );
    drain(&r).await;
    assert_eq!(row(&r, &id).await.status, Status::Sent);
    assert_eq!(outbox_len(&r).await, 1);
    assert_eq!(
        herald::local::sweep(&r.store, &r.queue, Duration::ZERO).await.unwrap(),
        Default::default(),
        "a sent row is never requeued"
    );
    assert_eq!(outbox_len(&r).await, 1);
}

#[tokio::test]
async fn a_backlog_older_than_the_grace_postpones_the_sweep_until_the_workers_catch_up() {
    let r = rig(10);
    let orphan = ingest_one(&r.h).await;
    let job = receive_one(&r).await;
    r.queue.delete(&job.receipt).await.unwrap();
    // Another request's job waits its turn: the orphan may be waiting too, as far as anyone knows.
    let waiting = ingest_one(&r.h).await;
    assert_eq!(herald::local::sweep(&r.store, &r.queue, Duration::ZERO).await.unwrap(), Default::default());
    drain(&r).await;
    assert_eq!(row(&r, &waiting).await.status, Status::Sent);
    assert!(row(&r, &orphan).await.status.is_pending());
    let swept = herald::local::sweep(&r.store, &r.queue, Duration::ZERO).await.unwrap();
    assert_eq!(swept.requeued, 1, "once the queue has caught up, the orphan is requeued");
    drain(&r).await;
    assert_eq!(row(&r, &orphan).await.status, Status::Sent);
    assert_eq!(outbox_len(&r).await, 2);
}

#[tokio::test]
async fn the_sweeper_never_causes_a_second_send_of_a_row_that_was_claimed_and_sent() {
    let r = rig(10);
    let id = ingest_one(&r.h).await;
    let job = receive_one(&r).await;
    r.queue.delete(&job.receipt).await.unwrap();
    // A worker claimed the row under a long lease, and the provider took the message.
    let now = herald::domain::now();
    let held = r.store.claim_row(&tenant("t"), &id, now, now + chrono::Duration::hours(1)).await.unwrap();
    assert!(matches!(held, herald::ports::Claim::Claimed(_)));
    let entry = OutboxEntry {
        id: "sbx_1".into(),
        tenant_id: "t".into(),
        request_id: row(&r, &id).await.request_id,
        row_id: id.clone(),
        channel: herald::domain::Channel::Sms,
        to: "+14155550100".into(),
        message: json!({"text": "hi"}),
        created_at: now,
    };
    r.store.record(&entry).await.unwrap();
    // Under a live lease the row is not the sweeper's.
    assert_eq!(herald::local::sweep(&r.store, &r.queue, Duration::ZERO).await.unwrap(), Default::default());
    // The worker died: its lease runs out with no job left.
    r.store.expire_leases().await.unwrap();
    let swept = herald::local::sweep(&r.store, &r.queue, Duration::ZERO).await.unwrap();
    assert_eq!(swept.requeued, 1);
    drain(&r).await;
    let row = row(&r, &id).await;
    assert_eq!(row.status, Status::Sent, "the provider was asked and said it had the message");
    assert_eq!(row.external_message_id.as_deref(), Some("sbx_1"));
    assert_eq!(outbox_len(&r).await, 1, "and it was not sent again");
}

#[tokio::test]
async fn rows_left_with_no_job_are_requeued_ten_to_a_job_and_sent_once() {
    let r = rig(10);
    let ids = ingest_n(&r.h, 12).await;
    // Both jobs vanished (as if the enqueue had failed and the clean-up too).
    for job in r.queue.receive(10, Duration::from_secs(60)).await.unwrap() {
        r.queue.delete(&job.receipt).await.unwrap();
    }
    let swept = herald::local::sweep(&r.store, &r.queue, Duration::ZERO).await.unwrap();
    assert_eq!(swept.requeued, 12);
    assert_eq!(r.queue.depth().await.unwrap(), (2, 0, 0), "two jobs for twelve rows of one request");
    drain(&r).await;
    for id in &ids {
        assert_eq!(row(&r, id).await.status, Status::Sent);
    }
    assert_eq!(outbox_len(&r).await, 12);
}

#[tokio::test]
async fn the_sweeper_sees_every_row_a_multi_row_job_names() {
    let r = rig(1);
    let ids = ingest_n(&r.h, 12).await;
    let swept = herald::local::sweep(&r.store, &r.queue, Duration::ZERO).await.unwrap();
    assert_eq!(swept, Default::default(), "rows named by jobs of ten are left alone");
    // The ten-row job is received and never settled: the next receive dead-letters it.
    let first = receive_one(&r).await;
    let job: herald::domain::Job = serde_json::from_str(&first.body).unwrap();
    assert_eq!(job.row_ids, ids[..10]);
    let rest = r.queue.receive(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(rest.len(), 1, "the two-row job");
    assert_eq!(r.queue.depth().await.unwrap(), (0, 1, 1));
    let swept = herald::local::sweep(&r.store, &r.queue, Duration::ZERO).await.unwrap();
    assert_eq!(swept, herald::local::Swept { requeued: 0, failed: 10 }, "the dead-lettered job's rows fail, no more");
    for id in &ids[..10] {
        assert_eq!(row(&r, id).await.status, Status::Failed);
    }
    assert!(row(&r, &ids[10]).await.status.is_pending());
}

#[tokio::test]
async fn a_claim_whose_answer_was_lost_is_still_ours() {
    let r = rig(10);
    let id = ingest_one(&r.h).await;
    let job: herald::domain::Job = serde_json::from_str(&receive_one(&r).await.body).unwrap();
    r.store_faults.fail_next_after_commit(1);
    let started = std::time::Instant::now();
    let d = herald::service::deliver::deliver(&r.h.deliver, &job.tenant_id, &job.row_ids[0]).await.expect("delivered");
    assert_eq!(d, herald::service::deliver::Delivery::Done);
    assert!(started.elapsed() < r.h.settings.lease, "no wait for the lease");
    assert_eq!(row(&r, &id).await.status, Status::Sent);
    assert_eq!(outbox_len(&r).await, 1);
}

#[tokio::test]
async fn an_outcome_whose_answer_was_lost_keeps_the_retry_job() {
    let r = rig(10);
    let id = ingest_one(&r.h).await;
    let job = receive_one(&r).await;
    // The provider fails transiently, so the attempt's outcome is `retrying`.
    let failing = Arc::new(Sandbox::new(r.store.clone(), SandboxBehaviour { fail_rate: 1.0, ..Default::default() }));
    let h = Arc::new(Herald::new(
        Stores::from_one(r.store.clone()),
        r.queue.clone(),
        Providers::all(failing),
        r.h.settings.clone(),
    ));
    // The attempt's store calls: claim, the request, the contact, then the outcome, which commits
    // but is reported failed.
    r.store_faults.script([None, None, None, Some(Fault::After)]);
    let result = handle_job(h.deliver.clone(), &job).await;
    assert!(
        matches!(&result, JobResult::Replace(back) if back.len() == 1),
        "the retry job must be kept, got {result:?}"
    );
    assert_eq!(row(&r, &id).await.status, Status::Retrying);
    assert_eq!(r.store_faults.counts(), (0, 1));
}

#[tokio::test]
async fn ingest_converges_when_its_writes_commit_but_report_failure() {
    let r = rig(10);
    // The request's rows are written, but the store says no; then the jobs are queued, but the
    // queue says no. Both are retried; the duplicate job is harmless.
    r.store_faults.fail_next_after_commit(1);
    r.queue_faults.fail_next_after_commit(1);
    let id = ingest_one(&r.h).await;
    assert_eq!(r.store.counts().await.unwrap().requests, 1);
    assert_eq!(r.queue.depth().await.unwrap().0, 2, "the first enqueue landed, and so did the retry");
    drain(&r).await;
    assert_eq!(row(&r, &id).await.status, Status::Sent);
    assert_eq!(outbox_len(&r).await, 1, "sent once");
}

#[tokio::test]
async fn a_send_answered_503_converges_on_retry_with_the_same_idempotency_key() {
    let server = herald_tests::TestServer::start().await;
    let faults = Arc::new(Faults::new("store", 1.0));
    server.local.store.inject_faults(faults.clone());
    let body = json!({"recipients": [{"phone": "+14155550100"}], "messages": [{"text": "hi"}], "channel": "sms"});
    let send = || {
        server
            .http
            .post(format!("http://{}/v1/broadcasts", server.addr))
            .bearer_auth(&server.key)
            .header("idempotency-key", "k-503")
            .json(&body)
            .send()
    };
    let r = send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(answer["error"]["code"], "unavailable");
    assert!(!answer.to_string().contains("injected"), "no internals in a 5xx: {answer}");
    faults.set_rate(0.0);
    assert_eq!(server.local.store.counts().await.unwrap().requests, 0, "nothing was stored");
    let r = send().await.unwrap();
    assert_eq!(r.status(), 202);
    let again = send().await.unwrap();
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(server.local.store.counts().await.unwrap().requests, 1, "one request in the end");
}
