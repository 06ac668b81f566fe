//! Port contract suites. Each takes a port implementation and checks the behaviour every
//! adapter must share; `tests/contract_embedded.rs` runs them on SQLite, and the AWS adapters
//! run the very same functions against the emulator.

use chrono::Duration as Span;
use std::sync::Arc;
use std::time::Duration;

use herald::domain::{
    now, Campaign, Channel, Contact, ContactDraft, ContactKey, Email, Job, Phone, RecipientRow, SendRequest, Status,
    Template,
};
use herald::ports::*;

use crate::tenant;

fn job(n: usize) -> OutgoingJob {
    OutgoingJob {
        job: Job {
            tenant_id: "t1".into(),
            request_id: "req_1".into(),
            row_ids: vec![format!("rcp_{n}")],
            fan_out: None,
            import: false,
            recount: None,
            event: None,
        },
        delay: Duration::ZERO,
    }
}

fn row_of(received: &ReceivedJob) -> String {
    serde_json::from_str::<Job>(&received.body).expect("job body").row_ids.join(",")
}

/// Receives until `want` jobs arrived or `patience` ran out (SQS may return fewer per call).
async fn receive_n(q: &dyn JobQueue, want: usize, visibility: Duration, patience: Duration) -> Vec<ReceivedJob> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut got = Vec::new();
    while got.len() < want && tokio::time::Instant::now() < deadline {
        got.extend(q.receive((want - got.len()).min(10), visibility).await.expect("receive"));
        if got.len() < want {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    got
}

/// At-least-once delivery with delay, visibility timeout, receive counts, delete.
pub async fn queue_contract(q: &dyn JobQueue) {
    let mut delayed = job(3);
    delayed.delay = Duration::from_secs(2);
    q.send_batch(&[job(1), job(2), delayed]).await.expect("send");

    let first = receive_n(q, 2, Duration::from_secs(30), Duration::from_secs(3)).await;
    let mut rows: Vec<String> = first.iter().map(row_of).collect();
    rows.sort();
    assert_eq!(rows, vec!["rcp_1", "rcp_2"], "the delayed job must stay hidden");
    assert!(first.iter().all(|r| r.receive_count == 1));
    assert!(q.receive(10, Duration::from_secs(30)).await.unwrap().is_empty(), "received jobs are hidden");

    q.delete(&first[0].receipt).await.expect("delete");
    q.change_visibility(&first[1].receipt, Duration::ZERO).await.expect("change visibility");
    let again = receive_n(q, 1, Duration::from_secs(30), Duration::from_secs(3)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(row_of(&again[0]), row_of(&first[1]), "a job made visible again comes back");
    assert_eq!(again[0].receive_count, 2, "receive count grows");
    q.delete(&again[0].receipt).await.unwrap();

    let later = receive_n(q, 1, Duration::from_secs(30), Duration::from_secs(5)).await;
    assert_eq!(later.iter().map(row_of).collect::<Vec<_>>(), vec!["rcp_3"], "the delayed job arrives after its delay");
    q.delete(&later[0].receipt).await.unwrap();

    // More than one batch call's worth: every job arrives exactly once while none is deleted late.
    let many: Vec<OutgoingJob> = (100..125).map(job).collect();
    q.send_batch(&many).await.expect("send 25");
    let got = receive_n(q, 25, Duration::from_secs(30), Duration::from_secs(5)).await;
    let mut ids: Vec<String> = got.iter().map(row_of).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 25);
    for r in &got {
        q.delete(&r.receipt).await.unwrap();
    }
}

/// A job received `max_receives` times and never deleted is not handed out again.
pub async fn queue_dead_letter_contract(q: &dyn JobQueue, max_receives: u32) {
    q.send_batch(&[job(9)]).await.unwrap();
    for n in 1..=max_receives {
        let got = receive_n(q, 1, Duration::from_secs(30), Duration::from_secs(3)).await;
        assert_eq!(got.len(), 1, "receive {n} of {max_receives}");
        assert_eq!(got[0].receive_count, n);
        q.change_visibility(&got[0].receipt, Duration::ZERO).await.unwrap();
    }
    let after = receive_n(q, 1, Duration::from_secs(30), Duration::from_millis(700)).await;
    assert!(after.is_empty(), "a job past max_receives must be dead-lettered, got {after:?}");
}

/// A deferred job comes back after its delay as a fresh job: however often it is deferred, its
/// receive count starts again, so waits never push it towards the dead-letter queue.
pub async fn queue_defer_contract(q: &dyn JobQueue, max_receives: u32) {
    q.send_batch(&[job(7)]).await.unwrap();
    for n in 1..=max_receives + 2 {
        let got = receive_n(q, 1, Duration::from_secs(30), Duration::from_secs(5)).await;
        assert_eq!(got.len(), 1, "deferral {n}: the job must come back");
        assert_eq!(got[0].receive_count, 1, "deferral {n}: a deferred job's receives start again");
        assert_eq!(row_of(&got[0]), "rcp_7");
        q.defer(&got[0], Duration::ZERO).await.expect("defer");
    }
    let got = receive_n(q, 1, Duration::from_secs(30), Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "still there after {} deferrals", max_receives + 2);
    q.delete(&got[0].receipt).await.unwrap();
    let after = receive_n(q, 1, Duration::from_secs(30), Duration::from_millis(1500)).await;
    assert!(after.is_empty(), "a deferred job leaves no second copy behind: {after:?}");
}

/// A received job replaced by single-row jobs of some of its rows: they arrive as fresh jobs after
/// their own delays, and the received job never comes back; replacing with nothing deletes.
pub async fn queue_replace_contract(q: &dyn JobQueue) {
    let rows: Vec<String> = (1..=3).map(|n| format!("rcp_{n}")).collect();
    let multi = Job {
        tenant_id: "t1".into(),
        request_id: "req_1".into(),
        row_ids: rows,
        fan_out: None,
        import: false,
        recount: None,
        event: None,
    };
    q.send_batch(&[OutgoingJob { job: multi.clone(), delay: Duration::ZERO }]).await.expect("send");
    // Short visibilities throughout: a received job left behind would come back within the test.
    let short = Duration::from_secs(1);
    let got = receive_n(q, 1, short, Duration::from_secs(3)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(serde_json::from_str::<Job>(&got[0].body).expect("job body"), multi, "a job carries its rows");
    let back = [
        OutgoingJob { job: multi.only("rcp_2"), delay: Duration::ZERO },
        OutgoingJob { job: multi.only("rcp_3"), delay: Duration::from_secs(2) },
    ];
    q.replace(&got[0], &back).await.expect("replace");
    let now = receive_n(q, 1, short, Duration::from_secs(3)).await;
    assert_eq!(now.iter().map(row_of).collect::<Vec<_>>(), vec!["rcp_2"], "the undelayed row comes alone");
    assert_eq!(now[0].receive_count, 1, "a replacement is a fresh job");
    q.replace(&now[0], &[]).await.expect("replace with nothing");
    let later = receive_n(q, 1, Duration::from_secs(30), Duration::from_secs(5)).await;
    assert_eq!(later.iter().map(row_of).collect::<Vec<_>>(), vec!["rcp_3"], "the delayed row comes after its delay");
    q.delete(&later[0].receipt).await.unwrap();
    let after = receive_n(q, 1, Duration::from_secs(30), Duration::from_millis(2500)).await;
    assert!(after.is_empty(), "neither the replaced job nor the emptied one comes back: {after:?}");
}

pub fn sample_request(tenant: &str, id: &str, rows: u32) -> (SendRequest, Vec<RecipientRow>) {
    let req = SendRequest {
        id: id.into(),
        tenant_id: tenant.into(),
        created_at: now(),
        source: "native".into(),
        campaign_id: None,
        campaign_name: None,
        messages: vec![],
        variables: Default::default(),
        defaults: Default::default(),
        header_params: vec![],
        body_params: vec![],
        media: None,
        channel: None,
        priority: vec![],
        messaging_tag: None,
        metadata: Default::default(),
        background: true,
        send_at: None,
        send_at_local: None,
        send_window: None,
        throttle: None,
        recipient_count: rows,
        row_count: rows,
        audience: None,
        ordered_member_ids: true,
    };
    let rows = (0..rows).map(|i| RecipientRow::new(&tenant.into(), id, i, i, 0)).collect();
    (req, rows)
}

/// A request's rows per status once the moves made so far are flushed.
async fn flushed_counts(
    r: &dyn Requests,
    tenant: &herald::domain::TenantId,
    request_id: &str,
) -> std::collections::BTreeMap<Status, u64> {
    r.flush_counts().await.expect("flush counts");
    let counts = r.count_rows(tenant, request_id).await.expect("count rows");
    assert!(!counts.stalled, "counters just written are not stalled: {counts:?}");
    counts.by_status
}

/// Requests and rows: storage, paging, counts, and the conditional claim / finish protocol.
pub async fn requests_contract(r: &dyn Requests) {
    let (req, rows) = sample_request("t1", "req_a", 5);
    r.insert_request(&req, &rows).await.expect("insert");
    assert_eq!(r.get_request(&tenant("t1"), "req_a").await.unwrap().as_ref(), Some(&req));
    assert_eq!(r.get_request(&tenant("t2"), "req_a").await.unwrap(), None, "another tenant sees nothing");
    assert_eq!(r.get_row(&tenant("t2"), &rows[0].id).await.unwrap(), None);

    let page1 = r.list_rows(&tenant("t1"), "req_a", None, 2).await.unwrap();
    let page2 = r.list_rows(&tenant("t1"), "req_a", Some(page1[1].seq), 10).await.unwrap();
    let seqs: Vec<u32> = page1.iter().chain(&page2).map(|r| r.seq).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4]);
    assert_eq!(flushed_counts(r, &tenant("t1"), "req_a").await.get(&Status::Queued), Some(&5));

    let t = now();
    let lease = t + Span::seconds(30);
    let id = &rows[0].id;
    let Claim::Claimed(claimed) = r.claim_row(&tenant("t1"), id, t, lease).await.unwrap() else {
        panic!("queued rows are claimable")
    };
    assert_eq!((claimed.status, claimed.attempts), (Status::Sending, 1));
    assert!(matches!(r.claim_row(&tenant("t1"), id, t, lease).await.unwrap(), Claim::Busy(_)), "a leased row is busy");
    assert!(matches!(r.claim_row(&tenant("t2"), id, t, lease).await.unwrap(), Claim::Missing), "tenants are isolated");
    assert!(!r.finish_row(&tenant("t1"), id, 2, Outcome::default()).await.unwrap(), "a stale attempt cannot write");
    let sent = Outcome { status: Some(Status::Sent), external_message_id: Some("ext-1".into()), ..Default::default() };
    assert!(r.finish_row(&tenant("t1"), id, 1, sent.clone()).await.unwrap());
    assert!(!r.finish_row(&tenant("t1"), id, 1, sent).await.unwrap(), "an outcome is written once");
    let row = r.get_row(&tenant("t1"), id).await.unwrap().unwrap();
    assert_eq!((row.status, row.external_message_id.as_deref()), (Status::Sent, Some("ext-1")));
    assert!(row.times.contains_key(&Status::Sent) && row.lease_until.is_none());
    assert!(matches!(r.claim_row(&tenant("t1"), id, t, lease).await.unwrap(), Claim::Done(_)));

    // Retrying rows wait for their next attempt.
    let id = &rows[1].id;
    assert!(matches!(r.claim_row(&tenant("t1"), id, t, lease).await.unwrap(), Claim::Claimed(_)));
    let retry =
        Outcome { status: Some(Status::Retrying), next_attempt_at: Some(t + Span::seconds(60)), ..Default::default() };
    assert!(r.finish_row(&tenant("t1"), id, 1, retry).await.unwrap());
    assert!(matches!(r.claim_row(&tenant("t1"), id, t, lease).await.unwrap(), Claim::NotDue(_)));
    let later = t + Span::seconds(61);
    let Claim::Claimed(again) = r.claim_row(&tenant("t1"), id, later, later + Span::seconds(30)).await.unwrap() else {
        panic!("due")
    };
    assert_eq!(again.attempts, 2);

    // An expired lease means the previous worker died: the row is reclaimed.
    let id = &rows[2].id;
    assert!(matches!(r.claim_row(&tenant("t1"), id, t, t + Span::seconds(1)).await.unwrap(), Claim::Claimed(_)));
    let past = t + Span::seconds(2);
    assert!(matches!(
        r.claim_row(&tenant("t1"), id, past, past + Span::seconds(30)).await.unwrap(),
        Claim::Reclaimed(_)
    ));

    // fail_pending ends pending rows only.
    assert!(r.fail_pending(&tenant("t1"), &rows[3].id, "could not queue").await.unwrap());
    assert!(!r.fail_pending(&tenant("t1"), &rows[0].id, "too late").await.unwrap(), "a sent row stays sent");
    let failed = r.get_row(&tenant("t1"), &rows[3].id).await.unwrap().unwrap();
    assert_eq!((failed.status, failed.error_message.as_deref()), (Status::Failed, Some("could not queue")));

    let counts = flushed_counts(r, &tenant("t1"), "req_a").await;
    assert_eq!(counts.values().sum::<u64>(), 5);
    assert_eq!(counts.get(&Status::Failed), Some(&1));
}

/// Every page of a tenant's requests (of `source`, when given), `limit` at a time: every page
/// but the last is full, and the last says the list is done.
async fn all_requests(r: &dyn Requests, tenant_id: &str, source: Option<&str>, limit: u32) -> Vec<String> {
    let (mut ids, mut cursor) = (Vec::new(), None);
    for _ in 0..100 {
        let page = r.list_requests(&tenant(tenant_id), source, cursor.as_ref(), limit).await.expect("list requests");
        assert!(page.requests.len() <= limit as usize, "a page holds at most its limit");
        assert!(page.requests.iter().all(|q| q.tenant_id.as_str() == tenant_id), "only the tenant's requests");
        ids.extend(page.requests.iter().map(|q| q.id.clone()));
        match page.next_cursor {
            None => return ids,
            Some(next) => {
                assert_eq!(page.requests.len(), limit as usize, "a page before the last is full");
                let text = next.encode();
                assert_eq!(RequestCursor::decode(&text).as_ref(), Some(&next), "a cursor reads back as given");
                cursor = Some(next);
            }
        }
    }
    panic!("the list of {tenant_id}'s requests never ended")
}

/// A tenant's requests newest first, over days with long empty stretches between them, paged
/// in a stable order, by source, and never another tenant's.
pub async fn requests_listing_contract(r: &dyn Requests) {
    let empty = r.list_requests(&tenant("lst_none"), None, None, 10).await.unwrap();
    assert!(empty.requests.is_empty() && empty.next_cursor.is_none(), "a tenant with no requests lists none");
    let start = now() - Span::days(400);
    // Days apart, with a 300-day gap, two requests in the same millisecond, and sources mixed.
    let offsets = [0i64, 0, 1, 2, 2, 303, 303, 304, 399, 399];
    let mut made: Vec<(i64, String, String)> = Vec::new();
    for (i, days) in offsets.iter().enumerate() {
        let id = format!("req_lst{i:02}");
        let (mut req, rows) = sample_request("lst_a", &id, 1);
        req.created_at = start + Span::days(*days) + Span::minutes(i as i64);
        if i == 4 {
            req.created_at = start + Span::days(2) + Span::minutes(3);
        }
        req.source = if i % 3 == 0 { "twilio".into() } else { "native".into() };
        r.insert_request(&req, &rows).await.expect("insert");
        made.push((req.created_at.timestamp_millis(), id, req.source.clone()));
        let (mut other, rows) = sample_request("lst_b", &format!("req_other{i:02}"), 1);
        other.created_at = req.created_at;
        r.insert_request(&other, &rows).await.expect("insert another tenant's");
    }
    // Stored again (a retry whose answer was lost): still listed once.
    let (mut again, rows) = sample_request("lst_a", "req_lst05", 1);
    again.created_at = start + Span::days(303) + Span::minutes(5);
    r.insert_request(&again, &rows).await.expect("insert again");

    made.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
    let newest_first: Vec<String> = made.iter().map(|m| m.1.clone()).collect();
    assert!(made.windows(2).any(|w| w[0].0 == w[1].0), "two requests share a millisecond");
    for limit in [1, 3, 4, 10, 200] {
        assert_eq!(all_requests(r, "lst_a", None, limit).await, newest_first, "pages of {limit}");
    }
    let twilio: Vec<String> = made.iter().filter(|m| m.2 == "twilio").map(|m| m.1.clone()).collect();
    assert_eq!(all_requests(r, "lst_a", Some("twilio"), 2).await, twilio, "one source's requests");
    assert!(all_requests(r, "lst_a", Some("smax_v1"), 5).await.is_empty(), "a source with no requests");
    let others = all_requests(r, "lst_b", None, 4).await;
    assert_eq!(others.len(), offsets.len());
    assert!(others.iter().all(|id| id.starts_with("req_other")), "each tenant sees its own: {others:?}");

    // A page starts right after its cursor, whichever request that is.
    let third = r.list_requests(&tenant("lst_a"), None, None, 3).await.unwrap();
    let from = third.next_cursor.expect("more than three");
    let next = r.list_requests(&tenant("lst_a"), None, Some(&from), 2).await.unwrap();
    assert_eq!(next.requests.iter().map(|q| q.id.as_str()).collect::<Vec<_>>(), newest_first[3..5].to_vec());
    let full = r.list_requests(&tenant("lst_a"), None, None, 1).await.unwrap();
    assert_eq!(full.requests[0], r.get_request(&tenant("lst_a"), &newest_first[0]).await.unwrap().unwrap());
    many_days_of_two_sources(r).await;
}

/// Forty days with a request of each of two sources: more days than one read of a store's
/// per-day bookkeeping may cover, listed whole and in order.
async fn many_days_of_two_sources(r: &dyn Requests) {
    let start = now() - Span::days(60);
    let mut made = Vec::new();
    for day in 0..40i64 {
        for (k, source) in ["native", "twilio"].iter().enumerate() {
            let id = format!("req_day{day:02}{k}");
            let (mut req, rows) = sample_request("lst_c", &id, 1);
            req.created_at = start + Span::days(day) + Span::minutes(k as i64 * 7);
            req.source = source.to_string();
            r.insert_request(&req, &rows).await.expect("insert");
            made.push(id);
        }
    }
    made.reverse();
    assert_eq!(all_requests(r, "lst_c", None, 200).await, made, "eighty requests over forty days");
    assert_eq!(all_requests(r, "lst_c", None, 7).await, made, "in pages of seven");
    let twilio: Vec<String> = made.iter().filter(|id| id.ends_with('1')).cloned().collect();
    assert_eq!(all_requests(r, "lst_c", Some("twilio"), 9).await, twilio, "one source over forty days");
}

/// Fan-out's side of the rows: rows added only once (a page made again re-queues only what is
/// still `queued`), counters that follow every move, the progress record, and cancel — after
/// which nothing is claimed, queued rows end `canceled` and no row is added.
pub async fn fan_out_contract(r: &dyn Requests) {
    let t1 = tenant("t1");
    let (mut req, _) = sample_request("t1", "req_aud", 0);
    req.audience = Some(herald::domain::Audience { segments: vec!["s".into()], exclude_segments: vec![] });
    r.insert_request(&req, &[]).await.expect("insert");
    assert_eq!(r.progress(&t1, "req_aud").await.unwrap(), Default::default());
    let member_row = |i: u32, contact: &str| {
        let mut row = RecipientRow::new(&t1, "req_aud", i, i, 0);
        row.id = RecipientRow::id_for_member("req_aud", contact, 0);
        row
    };
    let page: Vec<RecipientRow> = (0..4).map(|i| member_row(i, &format!("ct_{i}"))).collect();
    let mut queued = r.add_rows(&t1, "req_aud", &page).await.unwrap();
    queued.sort();
    let mut ids: Vec<String> = page.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    assert_eq!(queued, ids, "new rows are queued");

    // One row goes out; the page is made again (a crash before its jobs were queued).
    let (t, lease) = (now(), now() + Span::seconds(30));
    assert!(matches!(r.claim_row(&t1, &page[0].id, t, lease).await.unwrap(), Claim::Claimed(_)));
    let sent = Outcome { status: Some(Status::Sent), ..Default::default() };
    assert!(r.finish_row(&t1, &page[0].id, 1, sent).await.unwrap());
    let again = r.add_rows(&t1, "req_aud", &page).await.unwrap();
    assert_eq!(again.len(), 3, "the sent row is neither reset nor queued again: {again:?}");
    assert_eq!(r.get_row(&t1, &page[0].id).await.unwrap().unwrap().status, Status::Sent);
    // The same contact from a second segment, on a later page: the same row.
    assert_eq!(r.add_rows(&t1, "req_aud", &[member_row(1_000, "ct_1")]).await.unwrap(), vec![page[1].id.clone()]);
    let listed = r.list_rows(&t1, "req_aud", None, 10).await.unwrap();
    assert_eq!(listed.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![0, 1, 2, 3], "one row per contact, in seq order");
    let counts = flushed_counts(r, &t1, "req_aud").await;
    assert_eq!((counts.get(&Status::Sent), counts.get(&Status::Queued)), (Some(&1), Some(&3)), "{counts:?}");

    r.finish_fan_out(&t1, "req_aud", t).await.unwrap();
    r.finish_fan_out(&t1, "req_aud", t + Span::seconds(5)).await.unwrap();
    let fanned = r.progress(&t1, "req_aud").await.unwrap().fanned_out_at.expect("fan-out finished");
    assert_eq!(fanned.timestamp_millis(), t.timestamp_millis(), "the first finish stays");
    r.fail_fan_out(&t1, "req_aud", t + Span::seconds(6), "too late").await.unwrap();
    let progress = r.progress(&t1, "req_aud").await.unwrap();
    assert_eq!(progress.fan_out_error, None, "a fan-out that finished did not fail");
    assert_eq!(progress.fanned_out_at.map(|at| at.timestamp_millis()), Some(t.timestamp_millis()));

    // Cancel: another tenant's cancel does nothing; a leased row finishes its attempt.
    assert!(matches!(r.claim_row(&t1, &page[1].id, t, lease).await.unwrap(), Claim::Claimed(_)));
    r.cancel_request(&tenant("t2"), "req_aud", t).await.unwrap();
    assert_eq!(r.progress(&t1, "req_aud").await.unwrap().canceled_at, None, "tenants are isolated");
    let at = r.cancel_request(&t1, "req_aud", t).await.unwrap();
    let later = r.cancel_request(&t1, "req_aud", t + Span::seconds(9)).await.unwrap();
    assert_eq!(at.timestamp_millis(), later.timestamp_millis(), "the first cancel's time stays");
    assert!(r.progress(&t1, "req_aud").await.unwrap().canceled_at.is_some());
    let Claim::Done(done) = r.claim_row(&t1, &page[2].id, t, lease).await.unwrap() else {
        panic!("nothing of a canceled request is claimed")
    };
    assert_eq!(done.status, Status::Canceled);
    let sent = Outcome { status: Some(Status::Sent), ..Default::default() };
    assert!(r.finish_row(&t1, &page[1].id, 1, sent).await.unwrap(), "a row inside its provider call finishes it");
    let extra = member_row(2_000, "ct_new");
    assert!(
        r.add_rows(&t1, "req_aud", std::slice::from_ref(&extra)).await.unwrap().is_empty(),
        "no row after a cancel"
    );
    assert_eq!(r.get_row(&t1, &extra.id).await.unwrap(), None);
    assert!(matches!(r.claim_row(&t1, &page[3].id, t, lease).await.unwrap(), Claim::Done(_)));
    let counts = flushed_counts(r, &t1, "req_aud").await;
    assert_eq!((counts.get(&Status::Sent), counts.get(&Status::Canceled)), (Some(&2), Some(&2)), "{counts:?}");
    assert_eq!(counts.values().sum::<u64>(), 4);
}

/// A fan-out that stops for good: it is over at its first failure's time with that reason, and a
/// later failure or finish changes neither.
pub async fn fan_out_failure_contract(r: &dyn Requests) {
    let t1 = tenant("t1");
    let (mut req, _) = sample_request("t1", "req_fails", 0);
    req.audience = Some(herald::domain::Audience { segments: vec!["s".into()], exclude_segments: vec![] });
    r.insert_request(&req, &[]).await.expect("insert");
    let t = now();
    r.fail_fan_out(&t1, "req_fails", t, "page 3 cannot be read").await.unwrap();
    r.fail_fan_out(&t1, "req_fails", t + Span::seconds(1), "another reason").await.unwrap();
    r.finish_fan_out(&t1, "req_fails", t + Span::seconds(2)).await.unwrap();
    let progress = r.progress(&t1, "req_fails").await.unwrap();
    assert_eq!(progress.fan_out_error.as_deref(), Some("page 3 cannot be read"), "the first reason stays");
    assert_eq!(progress.fanned_out_at.map(|at| at.timestamp_millis()), Some(t.timestamp_millis()));
    assert_eq!(progress.canceled_at, None);
    assert_eq!(r.progress(&tenant("t2"), "req_fails").await.unwrap(), Default::default(), "tenants are isolated");
}

/// Many workers race to claim one row: exactly one wins.
pub async fn claim_race_contract(r: Arc<dyn Requests>) {
    let (req, rows) = sample_request("t1", "req_race", 1);
    r.insert_request(&req, &rows).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let r = r.clone();
        let id = rows[0].id.clone();
        tasks.push(tokio::spawn(async move {
            let t = now();
            matches!(
                r.claim_row(&tenant("t1"), &id, t, t + Span::seconds(30)).await.unwrap(),
                Claim::Claimed(_) | Claim::Reclaimed(_)
            )
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += t.await.unwrap() as u32;
    }
    assert_eq!(wins, 1, "exactly one claimer may own a row");
}

fn phone(s: &str) -> Phone {
    Phone::parse(s).unwrap()
}

/// Contacts: find-or-create without duplicates, unique keys, merge or keep.
pub async fn contacts_contract(c: Arc<dyn Contacts>) {
    let draft = ContactDraft { phone: Some(phone("+14155550100")), name: Some("Ada".into()), ..Default::default() };
    let (a, created) = c.upsert_contact(&tenant("t1"), &draft, false).await.unwrap();
    assert!(created);
    assert_eq!(a.name.as_deref(), Some("Ada"));
    let renamed = ContactDraft { name: Some("Grace".into()), ..draft.clone() };
    let (same, created) = c.upsert_contact(&tenant("t1"), &renamed, false).await.unwrap();
    assert_eq!(
        (same.id.as_str(), created, same.name.as_deref()),
        (a.id.as_str(), false, Some("Ada")),
        "find-or-create keeps"
    );
    let (merged, _) = c.upsert_contact(&tenant("t1"), &renamed, true).await.unwrap();
    assert_eq!(merged.name.as_deref(), Some("Grace"), "merge applies the draft");
    assert_eq!(c.get_contact(&tenant("t1"), &a.id).await.unwrap().unwrap().name.as_deref(), Some("Grace"));

    let key = ContactKey::Phone(phone("+14155550100"));
    assert_eq!(c.find_contact(&tenant("t1"), &key).await.unwrap().map(|x| x.id), Some(a.id.clone()));
    assert_eq!(c.find_contact(&tenant("t2"), &key).await.unwrap(), None, "tenants are isolated");
    assert_eq!(c.get_contact(&tenant("t2"), &a.id).await.unwrap(), None);
    let (other_tenant, created) = c.upsert_contact(&tenant("t2"), &draft, false).await.unwrap();
    assert!(created && other_tenant.id != a.id, "the same phone is a new contact in another tenant");

    let mut b = Contact::new("ct_b".into());
    b.email = Some(Email::parse("b@example.com").unwrap());
    c.put_contact(&tenant("t1"), &b).await.unwrap();
    b.phone = Some(phone("+14155550100"));
    match c.put_contact(&tenant("t1"), &b).await {
        Err(ContactWriteError::KeyTaken { field: "phone", other }) => assert_eq!(other, a.id),
        other => panic!("a taken phone must be refused, got {other:?}"),
    }
    b.phone = None;
    b.email = Some(Email::parse("b2@example.com").unwrap());
    c.put_contact(&tenant("t1"), &b).await.unwrap();
    let old = ContactKey::Email(Email::parse("b@example.com").unwrap());
    assert_eq!(c.find_contact(&tenant("t1"), &old).await.unwrap(), None, "a replaced email frees its key");

    // Concurrent find-or-create by one phone makes one contact.
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let d = ContactDraft { phone: Some(phone("+14155550199")), ..Default::default() };
            c.upsert_contact(&tenant("t1"), &d, false).await.unwrap().0.id
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "racing find-or-create must agree on one contact: {ids:?}");
}

fn template(id: &str) -> Template {
    Template {
        id: id.into(),
        channel: Some(Channel::Sms),
        body: "Hi {{name}}".into(),
        subject: None,
        header: None,
        language: None,
        whatsapp: None,
        created_at: now(),
        updated_at: now(),
    }
}

pub async fn catalog_contract(c: &dyn Catalog) {
    c.put_template(&tenant("t1"), &template("b")).await.unwrap();
    c.put_template(&tenant("t1"), &template("a")).await.unwrap();
    let mut changed = template("a");
    changed.body = "Changed".into();
    c.put_template(&tenant("t1"), &changed).await.unwrap();
    assert_eq!(c.get_template(&tenant("t1"), "a").await.unwrap().unwrap().body, "Changed");
    assert_eq!(c.get_template(&tenant("t2"), "a").await.unwrap(), None);
    let ids: Vec<String> = c.list_templates(&tenant("t1")).await.unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(ids, vec!["a", "b"]);
    assert!(c.list_templates(&tenant("t2")).await.unwrap().is_empty());
    assert!(!c.delete_template(&tenant("t2"), "a").await.unwrap(), "another tenant cannot delete");
    assert!(c.delete_template(&tenant("t1"), "a").await.unwrap());
    assert!(!c.delete_template(&tenant("t1"), "a").await.unwrap());

    let camp = Campaign {
        id: "welcome".into(),
        name: "Welcome".into(),
        template_ids: vec!["b".into()],
        defaults: [("name".to_string(), "there".to_string())].into(),
        send_window: None,
        created_at: now(),
        updated_at: now(),
    };
    c.put_campaign(&tenant("t1"), &camp).await.unwrap();
    assert_eq!(c.get_campaign(&tenant("t1"), "welcome").await.unwrap(), Some(camp.clone()));
    assert_eq!(c.get_campaign(&tenant("t2"), "welcome").await.unwrap(), None);
    assert_eq!(c.list_campaigns(&tenant("t1")).await.unwrap().len(), 1);
    let other = Campaign { name: "Other".into(), ..camp.clone() };
    assert!(!c.create_campaign(&tenant("t1"), &other).await.unwrap(), "the id is taken");
    assert_eq!(c.get_campaign(&tenant("t1"), "welcome").await.unwrap(), Some(camp.clone()), "and stays as it was");
    assert!(c.create_campaign(&tenant("t2"), &other).await.unwrap(), "another tenant's id space");
    assert_eq!(c.get_campaign(&tenant("t2"), "welcome").await.unwrap(), Some(other));
    assert!(c.delete_campaign(&tenant("t1"), "welcome").await.unwrap());
    assert_eq!(c.get_campaign(&tenant("t1"), "welcome").await.unwrap(), None);
}

pub async fn keys_contract(k: &dyn ApiKeys) {
    // Settings: defaults until set, replaced whole, per tenant.
    assert_eq!(k.get_settings(&tenant("acme")).await.unwrap(), TenantSettings::default());
    let secret = Some("0123456789abcdef0123456789abcdef".to_string());
    let set =
        TenantSettings { timezone: Some("Asia/Tokyo".into()), updated_at: Some(now()), twilio_signing_secret: secret };
    k.put_settings(&tenant("acme"), &set).await.unwrap();
    assert_eq!(k.get_settings(&tenant("acme")).await.unwrap(), set);
    assert_eq!(k.get_settings(&tenant("acme")).await.unwrap().tz(), chrono_tz::Asia::Tokyo);
    assert_eq!(k.get_settings(&tenant("other")).await.unwrap(), TenantSettings::default(), "tenants are isolated");
    k.put_settings(&tenant("acme"), &TenantSettings::default()).await.unwrap();
    assert_eq!(k.get_settings(&tenant("acme")).await.unwrap().tz(), chrono_tz::UTC);
    assert_eq!(k.count_tenants().await.unwrap(), 0, "settings make no tenant");
    assert!(k.ensure_tenant(&tenant("acme")).await.unwrap());
    assert!(!k.ensure_tenant(&tenant("acme")).await.unwrap());
    let key = herald::service::keys::create_key(k, "acme", None).await.unwrap();
    assert_eq!(herald::service::keys::authenticate(k, &key).await.unwrap().as_deref(), Some("acme"));
    assert_eq!(herald::service::keys::authenticate(k, &format!("{key}x")).await.unwrap(), None);
    assert_eq!(herald::service::keys::authenticate(k, "").await.unwrap(), None);
    let listed = k.list_keys(&tenant("acme")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(key.starts_with(&listed[0].display_prefix) && listed[0].display_prefix.len() < key.len());
    assert!(k.list_keys(&tenant("other")).await.unwrap().is_empty());
    assert_eq!(k.count_tenants().await.unwrap(), 1);

    // Revocation: only by the owning tenant, once, and the key stops working at once.
    let lookup = listed[0].lookup.clone();
    assert!(!k.revoke_key(&tenant("other"), &lookup, now()).await.unwrap(), "another tenant cannot revoke it");
    assert!(k.revoke_key(&tenant("acme"), &lookup, now()).await.unwrap());
    assert!(!k.revoke_key(&tenant("acme"), &lookup, now()).await.unwrap(), "revoked once");
    assert_eq!(
        herald::service::keys::authenticate(k, &key).await.unwrap(),
        None,
        "a revoked key authenticates nothing"
    );
    assert!(k.list_keys(&tenant("acme")).await.unwrap()[0].revoked_at.is_some());
}

pub async fn idempotency_contract(i: &dyn Idempotency) {
    let t = now();
    let lock = Duration::from_secs(60);
    assert_eq!(i.begin(&tenant("t1"), "k1", "fp-a", t, lock).await.unwrap(), Begin::New);
    assert_eq!(i.begin(&tenant("t1"), "k1", "fp-a", t, lock).await.unwrap(), Begin::InProgress);
    assert_eq!(i.begin(&tenant("t1"), "k1", "fp-b", t, lock).await.unwrap(), Begin::Mismatch);
    assert_eq!(i.begin(&tenant("t2"), "k1", "fp-b", t, lock).await.unwrap(), Begin::New, "keys are per tenant");
    let answer = StoredResponse { status: 202, body: "{\"request_id\":\"req_1\"}".into() };
    i.complete(&tenant("t1"), "k1", &answer, t + Span::hours(24)).await.unwrap();
    assert_eq!(i.begin(&tenant("t1"), "k1", "fp-a", t, lock).await.unwrap(), Begin::Replay(answer));
    assert_eq!(i.begin(&tenant("t1"), "k1", "fp-b", t, lock).await.unwrap(), Begin::Mismatch);

    // An abandoned key can be used again; a stale lock is taken over.
    assert_eq!(i.begin(&tenant("t1"), "k2", "fp", t, lock).await.unwrap(), Begin::New);
    i.abandon(&tenant("t1"), "k2").await.unwrap();
    assert_eq!(i.begin(&tenant("t1"), "k2", "fp", t, lock).await.unwrap(), Begin::New);
    assert_eq!(i.begin(&tenant("t1"), "k2", "fp", t + Span::seconds(61), lock).await.unwrap(), Begin::New);

    // An expired answer is forgotten.
    i.complete(&tenant("t1"), "k3", &StoredResponse { status: 200, body: "{}".into() }, t - Span::seconds(1))
        .await
        .unwrap();
    assert_eq!(i.begin(&tenant("t1"), "k3", "fp", t, lock).await.unwrap(), Begin::New);
    i.complete(&tenant("t1"), "k3", &StoredResponse { status: 200, body: "{}".into() }, t - Span::seconds(1))
        .await
        .unwrap();
    assert_eq!(i.begin(&tenant("t1"), "k3", "other", t, lock).await.unwrap(), Begin::New);
}

pub async fn outbox_contract(o: &dyn Outbox) {
    let entry = |n: u32, tenant: &str, req: &str| OutboxEntry {
        id: format!("sbx_{n:04}"),
        tenant_id: tenant.into(),
        request_id: req.into(),
        row_id: format!("rcp_{n}"),
        channel: Channel::Sms,
        to: "+14155550100".into(),
        message: serde_json::json!({"text": "hi"}),
        created_at: now(),
    };
    for n in 0..5 {
        o.record(&entry(n, "t1", if n < 3 { "req_1" } else { "req_2" })).await.unwrap();
    }
    o.record(&entry(9, "t2", "req_1")).await.unwrap();
    assert_eq!(o.find_by_row(&tenant("t1"), "rcp_1").await.unwrap().map(|e| e.id), Some("sbx_0001".into()));
    assert_eq!(o.find_by_row(&tenant("t2"), "rcp_1").await.unwrap(), None);
    assert_eq!(o.list_outbox(&tenant("t1"), None, None, 100).await.unwrap().len(), 5);
    assert_eq!(o.list_outbox(&tenant("t1"), Some("req_1"), None, 100).await.unwrap().len(), 3);
    let page = o.list_outbox(&tenant("t1"), None, None, 2).await.unwrap();
    let rest = o.list_outbox(&tenant("t1"), None, Some(&page[1].id), 100).await.unwrap();
    assert_eq!(page.len() + rest.len(), 5);
    assert_eq!(rest[0].id, "sbx_0002");
    assert_eq!(o.list_outbox(&tenant("t2"), None, None, 100).await.unwrap().len(), 1);
}

/// Status callbacks: a provider's message id finds its row, and reports only move it forward.
pub async fn callbacks_contract(r: &dyn Requests) {
    let (req, rows) = sample_request("t1", "req_cb", 1);
    r.insert_request(&req, &rows).await.unwrap();
    let id = &rows[0].id;
    let t = now();
    assert!(matches!(r.claim_row(&tenant("t1"), id, t, t + Span::seconds(30)).await.unwrap(), Claim::Claimed(_)));
    let sent = Outcome {
        status: Some(Status::Sent),
        external_message_id: Some("wamid.CB1".into()),
        provider: Some("whatsapp".into()),
        ..Default::default()
    };
    assert!(r.finish_row(&tenant("t1"), id, 1, sent).await.unwrap());
    assert_eq!(r.find_by_external_id("whatsapp", "wamid.CB1").await.unwrap(), Some(("t1".into(), id.clone())));
    assert_eq!(r.find_by_external_id("sms", "wamid.CB1").await.unwrap(), None, "ids are per provider");
    assert_eq!(r.find_by_external_id("whatsapp", "wamid.nope").await.unwrap(), None);

    assert!(r.advance_row(&tenant("t1"), id, Status::Delivered, t + Span::seconds(1), None).await.unwrap());
    assert!(
        !r.advance_row(&tenant("t1"), id, Status::Sent, t + Span::seconds(2), None).await.unwrap(),
        "a late sent never overwrites delivered"
    );
    assert!(r.advance_row(&tenant("t1"), id, Status::Read, t + Span::seconds(3), None).await.unwrap());
    assert!(!r.advance_row(&tenant("t1"), id, Status::Failed, t + Span::seconds(4), Some("x".into())).await.unwrap());
    assert!(!r.advance_row(&tenant("t2"), id, Status::Read, t, None).await.unwrap(), "tenants are isolated");
    let row = r.get_row(&tenant("t1"), id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Read);
    assert!(row.times.contains_key(&Status::Delivered) && row.error_message.is_none());
    let counts = flushed_counts(r, &tenant("t1"), "req_cb").await;
    assert_eq!(counts, [(Status::Read, 1)].into(), "the counters follow every forward move");
}

/// Tenant webhook endpoints: one per tenant, replaced whole, isolated.
pub async fn webhook_endpoints_contract(w: &dyn WebhookEndpoints) {
    assert_eq!(w.get_webhook(&tenant("t1")).await.unwrap(), None);
    let e = WebhookEndpoint {
        url: "https://bot.example.com/hook".into(),
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        created_at: now(),
        updated_at: now(),
    };
    w.put_webhook(&tenant("t1"), &e).await.unwrap();
    assert_eq!(w.get_webhook(&tenant("t1")).await.unwrap(), Some(e.clone()));
    assert_eq!(w.get_webhook(&tenant("t2")).await.unwrap(), None, "tenants are isolated");
    let moved = WebhookEndpoint { url: "https://bot.example.com/v2".into(), ..e };
    w.put_webhook(&tenant("t1"), &moved).await.unwrap();
    assert_eq!(w.get_webhook(&tenant("t1")).await.unwrap().unwrap().url, "https://bot.example.com/v2");
    assert!(!w.delete_webhook(&tenant("t2")).await.unwrap());
    assert!(w.delete_webhook(&tenant("t1")).await.unwrap());
    assert_eq!(w.get_webhook(&tenant("t1")).await.unwrap(), None);
}

// ---------------------------------------------------------------- segments

fn segment(id: &str, name: &str) -> herald::domain::Segment {
    herald::domain::Segment { id: id.into(), name: name.into(), created_at: now(), updated_at: now() }
}

/// Every member of a segment, paged `limit` at a time; panics on a page past `max_pages`.
pub async fn all_members(s: &dyn Segments, tenant_id: &str, seg: &str, limit: u32, max_pages: usize) -> Vec<String> {
    let (mut all, mut cursor) = (Vec::new(), None::<String>);
    for _ in 0..max_pages {
        let page = s.list_members(&tenant(tenant_id), seg, cursor.as_deref(), limit).await.expect("page");
        assert!(page.contact_ids.len() <= limit as usize, "a page holds at most its limit");
        all.extend(page.contact_ids);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return all,
        }
    }
    panic!("more than {max_pages} pages of {limit}");
}

/// Segments: create or rename, idempotent membership with exact counts, stable paging over a
/// large segment, delete then re-create is empty, a contact's segments, tenant isolation.
pub async fn segments_contract(s: &dyn Segments) {
    let t1 = tenant("t1");
    let (vip, created) = s.put_segment(&t1, &segment("vip", "VIP")).await.unwrap();
    assert!(created);
    let ids: Vec<String> = (0..3_000).map(|i| format!("ct_{i:05}")).collect();
    assert_eq!(s.add_members(&t1, "vip", &ids).await.unwrap(), 3_000);
    let mut renamed = segment("vip", "Very important");
    renamed.created_at = now() + Span::days(1);
    let (after, created) = s.put_segment(&t1, &renamed).await.unwrap();
    assert!(!created, "a second put renames");
    assert_eq!((after.name.as_str(), after.created_at), ("Very important", vip.created_at), "created_at is kept");
    assert_eq!(s.get_segment(&t1, "vip").await.unwrap(), Some(after.clone()));
    assert_eq!(s.member_count(&t1, "vip").await.unwrap(), 3_000, "a rename keeps the members");

    // Idempotent: members already in count once, duplicates in one call count once.
    let again = vec![ids[0].clone(), ids[1].clone(), "ct_new".into(), "ct_new".into()];
    assert_eq!(s.add_members(&t1, "vip", &again).await.unwrap(), 1);
    assert_eq!(s.member_count(&t1, "vip").await.unwrap(), 3_001);

    // Paging by 1,000 walks every shard: the union is exactly the members, each once.
    let mut listed = all_members(s, "t1", "vip", 1_000, 10).await;
    let count = listed.len();
    listed.sort();
    listed.dedup();
    assert_eq!(count, listed.len(), "no member is listed twice");
    let mut want: Vec<String> = ids.iter().cloned().chain(["ct_new".to_string()]).collect();
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(
        all_members(s, "t1", "vip", 333, 100).await.len(),
        3_001,
        "pages across shard ends reach the same members"
    );
    match s.list_members(&t1, "vip", Some("not-a-cursor"), 10).await {
        Err(MembersError::BadCursor(_)) => {}
        other => panic!("a forged cursor must be refused, got {other:?}"),
    }

    let gone = vec![ids[0].clone(), ids[1].clone(), "ct_never".into()];
    assert_eq!(s.remove_members(&t1, "vip", &gone).await.unwrap(), 2, "only members are removed");
    assert_eq!(s.remove_members(&t1, "vip", &gone).await.unwrap(), 0, "removing twice removes nothing");
    assert_eq!(s.member_count(&t1, "vip").await.unwrap(), 2_999);

    s.put_segment(&t1, &segment("beta", "Beta")).await.unwrap();
    s.add_members(&t1, "beta", &[ids[2].clone()]).await.unwrap();
    assert_eq!(s.segments_of(&t1, &ids[2]).await.unwrap(), ["beta", "vip"]);
    assert_eq!(s.segments_of(&t1, &ids[0]).await.unwrap(), Vec::<String>::new(), "a removed member is in none");
    let listed: Vec<String> = s.list_segments(&t1).await.unwrap().into_iter().map(|x| x.id).collect();
    assert_eq!(listed, ["beta", "vip"]);

    segments_isolation_and_delete(s, &ids).await;
}

async fn segments_isolation_and_delete(s: &dyn Segments, ids: &[String]) {
    let (t1, t2) = (tenant("t1"), tenant("t2"));
    assert_eq!(s.get_segment(&t2, "vip").await.unwrap(), None, "tenants are isolated");
    assert!(s.list_segments(&t2).await.unwrap().is_empty());
    assert!(matches!(s.add_members(&t2, "vip", &ids[..1]).await, Err(MembersError::NoSegment)));
    assert!(matches!(s.list_members(&t2, "vip", None, 10).await, Err(MembersError::NoSegment)));
    assert!(matches!(s.member_count(&t2, "vip").await, Err(MembersError::NoSegment)));
    assert!(s.segments_of(&t2, &ids[2]).await.unwrap().is_empty());
    assert!(!s.delete_segment(&t2, "vip").await.unwrap(), "another tenant cannot delete it");

    assert!(s.delete_segment(&t1, "vip").await.unwrap());
    assert!(!s.delete_segment(&t1, "vip").await.unwrap());
    assert_eq!(s.get_segment(&t1, "vip").await.unwrap(), None);
    assert!(matches!(s.remove_members(&t1, "vip", &ids[..1]).await, Err(MembersError::NoSegment)));
    assert_eq!(s.segments_of(&t1, &ids[2]).await.unwrap(), ["beta"], "a deleted segment is nobody's");

    let (_, created) = s.put_segment(&t1, &segment("vip", "VIP again")).await.unwrap();
    assert!(created, "created again");
    assert_eq!(s.member_count(&t1, "vip").await.unwrap(), 0, "a segment created again starts empty");
    assert!(all_members(s, "t1", "vip", 1_000, 2).await.is_empty());
    assert_eq!(s.segments_of(&t1, &ids[2]).await.unwrap(), ["beta"]);
    assert_eq!(s.add_members(&t1, "vip", &ids[2..4]).await.unwrap(), 2, "old members are new again");
    assert_eq!(s.segments_of(&t1, &ids[2]).await.unwrap(), ["beta", "vip"]);
    assert_eq!(s.member_count(&t1, "vip").await.unwrap(), 2);
}

/// CSV imports: a chunk's lines become contacts and members with counts; the same chunk applied
/// again counts nothing; a line whose keys belong to two contacts is refused; a deleted segment
/// and a failed import end it.
pub async fn imports_contract<S: Imports + Segments + Contacts>(s: &S) {
    use herald::domain::import::{parse_chunk, read_header, ImportState};
    let t = crate::tenant("t1");
    let seg = |id: &str| herald::domain::SegmentBody { name: Some(id.into()) }.validate(id).unwrap();
    s.put_segment(&t, &seg("vip")).await.unwrap();
    let taken = |phone: &str, email: &str| ContactDraft {
        phone: Some(herald::domain::Phone::parse(phone).unwrap()),
        email: Some(herald::domain::Email::parse(email).unwrap()),
        ..Default::default()
    };
    s.upsert_contact(&t, &taken("+14155550190", "a@example.com"), true).await.unwrap();
    s.upsert_contact(
        &t,
        &ContactDraft { email: Some(herald::domain::Email::parse("b@example.com").unwrap()), ..Default::default() },
        true,
    )
    .await
    .unwrap();

    let file =
        "phone,email,name\n+14155550101,,Ann\n+14155550102,,Bo\n+14155550190,,Renamed\n+14155550190,b@example.com,\n";
    let (columns, offset, line) = read_header(file.as_bytes(), true).unwrap();
    let import =
        herald::domain::import::Import::new(&t, "vip", "imp_1", file.len() as u64, columns.clone(), offset, line);
    s.create_import(&import).await.unwrap();
    let chunk = parse_chunk(&columns, &file.as_bytes()[offset as usize..], offset, line, true).unwrap();
    let done = s.apply_chunk(&import, chunk.clone()).await.unwrap().expect("applied");
    assert_eq!(done.state, ImportState::Completed);
    assert_eq!((done.lines, done.created, done.updated, done.unchanged, done.rejected), (4, 2, 1, 0, 1));
    assert_eq!(done.errors.len(), 1);
    assert_eq!(done.errors[0].line, 5);
    assert!(done.errors[0].reason.contains("already belongs to contact"), "{:?}", done.errors);
    assert_eq!(s.member_count(&t, "vip").await.unwrap(), 3);
    let renamed = s.find_contact(&t, &ContactKey::Phone(herald::domain::Phone::parse("+14155550190").unwrap())).await;
    assert_eq!(renamed.unwrap().unwrap().name.as_deref(), Some("Renamed"));

    // Applied again (a job delivered twice): nothing moves.
    assert_eq!(s.apply_chunk(&import, chunk.clone()).await.unwrap(), None);
    assert_eq!(s.get_import(&t, "imp_1").await.unwrap().unwrap(), done);
    assert_eq!(s.list_imports(&t, 10).await.unwrap(), vec![done.clone()]);
    assert!(s.list_imports(&crate::tenant("t2"), 10).await.unwrap().is_empty(), "tenant isolation");
    assert!(s.get_import(&crate::tenant("t2"), "imp_1").await.unwrap().is_none(), "tenant isolation");

    // The same lines in a second import: every one unchanged.
    let again = herald::domain::import::Import { id: "imp_2".into(), ..import.clone() };
    s.create_import(&again).await.unwrap();
    let second = s.apply_chunk(&again, chunk.clone()).await.unwrap().unwrap();
    assert_eq!((second.created, second.updated, second.unchanged, second.rejected), (0, 0, 3, 1));

    // A new line whose prepared id is already a contact's (a chunk made twice over in one
    // process) makes a contact of its own and leaves that one as it was.
    let ann = ContactKey::Phone(herald::domain::Phone::parse("+14155550101").unwrap());
    let ann_before = s.find_contact(&t, &ann).await.unwrap().expect("Ann, imported above");
    let file = "phone,name\n+14155550177,Cy\n";
    let (cols, offset, line) = read_header(file.as_bytes(), true).unwrap();
    let fourth = herald::domain::import::Import::new(&t, "vip", "imp_4", file.len() as u64, cols.clone(), offset, line);
    s.create_import(&fourth).await.unwrap();
    let mut reused = parse_chunk(&cols, &file.as_bytes()[offset as usize..], offset, line, true).unwrap();
    reused.prepare();
    reused.created[0].id = ann_before.id.clone();
    let done = s.apply_chunk(&fourth, reused).await.unwrap().expect("applied");
    assert_eq!((done.created, done.rejected), (1, 0));
    assert_eq!(
        s.find_contact(&t, &ann).await.unwrap(),
        Some(ann_before.clone()),
        "the contact whose id was taken is unchanged"
    );
    let cy = s.find_contact(&t, &ContactKey::Phone(herald::domain::Phone::parse("+14155550177").unwrap())).await;
    let cy = cy.unwrap().expect("the line's contact");
    assert_ne!(cy.id, ann_before.id);
    assert_eq!(cy.name.as_deref(), Some("Cy"));

    // A segment deleted under a running import ends it; failing it keeps why.
    let third = herald::domain::import::Import { id: "imp_3".into(), segment_id: "gone".into(), ..import.clone() };
    s.put_segment(&t, &seg("gone")).await.unwrap();
    s.create_import(&third).await.unwrap();
    s.delete_segment(&t, "gone").await.unwrap();
    assert!(matches!(s.apply_chunk(&third, chunk.clone()).await, Err(MembersError::NoSegment)));
    assert!(s.fail_import(&t, "imp_3", "the segment was deleted", herald::domain::now()).await.unwrap());
    assert!(!s.fail_import(&t, "imp_3", "twice", herald::domain::now()).await.unwrap(), "only a running import fails");
    let failed = s.get_import(&t, "imp_3").await.unwrap().unwrap();
    assert_eq!((failed.state, failed.failure.as_deref()), (ImportState::Failed, Some("the segment was deleted")));
    assert_eq!(s.apply_chunk(&third, chunk).await.unwrap(), None, "an ended import takes no chunk");
}

// ---------------------------------------------------------------- status events

/// Event subscriptions, dead letters and completion marks: a replaced subscription keeps its
/// secret, failures are listed oldest first and taken once, a mark is set once, tenants are
/// isolated.
pub async fn event_store_contract(e: &dyn EventStore) {
    use herald::domain::events::{EventFailure, EventSubscription};
    let (t1, t2) = (tenant("t1"), tenant("t2"));
    let at = now();
    let sub = EventSubscription {
        id: "hooks".into(),
        url: "https://example.com/a".into(),
        events: vec!["message.*".into()],
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        created_at: at,
        updated_at: at,
    };
    assert_eq!(e.put_subscription(&t1, &sub).await.unwrap(), (sub.clone(), true));
    let later = at + Span::seconds(5);
    let replaced = EventSubscription {
        url: "https://example.com/b".into(),
        secret: "whsec_other".into(),
        created_at: later,
        updated_at: later,
        ..sub.clone()
    };
    let (stored, created) = e.put_subscription(&t1, &replaced).await.unwrap();
    assert!(!created);
    assert_eq!((stored.secret.as_str(), stored.created_at), (sub.secret.as_str(), at), "the secret stays");
    assert_eq!(stored.url, "https://example.com/b");
    assert_eq!(e.get_subscription(&t1, "hooks").await.unwrap(), Some(stored.clone()));
    assert_eq!(e.get_subscription(&t2, "hooks").await.unwrap(), None, "tenants are isolated");
    let second = EventSubscription { id: "a-first".into(), ..sub.clone() };
    e.put_subscription(&t1, &second).await.unwrap();
    let ids: Vec<String> = e.list_subscriptions(&t1).await.unwrap().into_iter().map(|s| s.id).collect();
    assert_eq!(ids, ["a-first", "hooks"]);
    assert!(e.list_subscriptions(&t2).await.unwrap().is_empty());

    let failure = |id: &str, secs: i64| EventFailure {
        subscription_id: "hooks".into(),
        event_id: id.into(),
        kind: "message.sent".into(),
        body: r#"{"type":"message.sent"}"#.into(),
        attempts: 8,
        last_error: "answered 500".into(),
        last_status: Some(500),
        first_attempt_at: at,
        last_attempt_at: at + Span::seconds(secs),
        request_id: "req_1".into(),
    };
    e.put_failure(&t1, &failure("msg_b", 20)).await.unwrap();
    e.put_failure(&t1, &failure("msg_a", 10)).await.unwrap();
    let listed: Vec<String> =
        e.list_failures(&t1, "hooks", 10).await.unwrap().into_iter().map(|f| f.event_id).collect();
    assert_eq!(listed, ["msg_a", "msg_b"], "oldest last attempt first");
    assert_eq!(e.list_failures(&t1, "hooks", 1).await.unwrap().len(), 1);
    assert!(e.list_failures(&t2, "hooks", 10).await.unwrap().is_empty());
    assert_eq!(e.take_failure(&t2, "hooks", "msg_a").await.unwrap(), None);
    assert_eq!(e.take_failure(&t1, "hooks", "msg_a").await.unwrap(), Some(failure("msg_a", 10)));
    assert_eq!(e.take_failure(&t1, "hooks", "msg_a").await.unwrap(), None, "taken once");

    assert!(e.mark_completed(&t1, "req_1").await.unwrap());
    assert!(!e.mark_completed(&t1, "req_1").await.unwrap(), "marked once");
    assert!(e.mark_completed(&t2, "req_1").await.unwrap());

    assert!(!e.delete_subscription(&t2, "hooks").await.unwrap());
    assert!(e.delete_subscription(&t1, "hooks").await.unwrap());
    assert_eq!(e.get_subscription(&t1, "hooks").await.unwrap(), None);
    e.put_subscription(&t1, &sub).await.unwrap();
    assert!(e.list_failures(&t1, "hooks", 10).await.unwrap().is_empty(), "failures go with their subscription");
}

// ---------------------------------------------------------------- dead-lettered jobs

/// Dead letters: kept once per id, listed oldest first a page at a time with a cursor that
/// means the same in every store, taken once, and never seen or taken by another tenant.
pub async fn dead_letters_contract(d: &dyn DeadLetters) {
    let (t1, t2) = (tenant("t1"), tenant("t2"));
    // Milliseconds: what every store keeps of the time.
    let at = chrono::DateTime::from_timestamp_millis(now().timestamp_millis()).unwrap();
    let letter = |tenant: &str, id: &str, secs: i64| DeadLetter {
        id: id.into(),
        job: Job { tenant_id: tenant.into(), request_id: format!("req_{id}"), ..job(0).job },
        reason: None,
        receive_count: 3,
        dead_at: at + Span::seconds(secs),
    };
    // Kept out of order; two in one millisecond sort by id.
    for (id, secs) in [("m-c", 20), ("m-a", 10), ("m-e", 30), ("m-b", 20), ("m-d", 30)] {
        d.put_dead_letter(&letter("t1", id, secs)).await.unwrap();
    }
    d.put_dead_letter(&letter("t2", "m-z", 5)).await.unwrap();
    let again = DeadLetter { receive_count: 9, ..letter("t1", "m-a", 99) };
    d.put_dead_letter(&again).await.unwrap();

    let mut ids = Vec::new();
    let mut cursor: Option<DeadLetterCursor> = None;
    for _ in 0..10 {
        let page = d.list_dead_letters(&t1, cursor.as_ref(), 2).await.unwrap();
        assert!(page.dead_letters.len() <= 2);
        ids.extend(page.dead_letters.iter().map(|l| l.id.clone()));
        // The cursor is portable: through its text, as the API hands it out.
        cursor = page.next_cursor.map(|c| DeadLetterCursor::decode(&c.encode()).expect("a cursor reads back"));
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(ids, ["m-a", "m-b", "m-c", "m-d", "m-e"], "oldest first, each once");
    let all = d.list_dead_letters(&t1, None, 200).await.unwrap();
    assert_eq!(all.next_cursor, None);
    assert_eq!(all.dead_letters[0], letter("t1", "m-a", 10), "one kept already stays as it was");

    let others = d.list_dead_letters(&t2, None, 200).await.unwrap();
    assert_eq!(others.dead_letters.iter().map(|l| l.id.as_str()).collect::<Vec<_>>(), ["m-z"], "tenants are isolated");
    assert_eq!(d.take_dead_letter(&t2, "m-b").await.unwrap(), None, "not another tenant's");
    assert_eq!(d.take_dead_letter(&t1, "m-b").await.unwrap(), Some(letter("t1", "m-b", 20)));
    assert_eq!(d.take_dead_letter(&t1, "m-b").await.unwrap(), None, "taken once");
    assert_eq!(d.take_dead_letter(&t1, "no-such").await.unwrap(), None);
    let left: Vec<String> =
        d.list_dead_letters(&t1, None, 200).await.unwrap().dead_letters.into_iter().map(|l| l.id).collect();
    assert_eq!(left, ["m-a", "m-c", "m-d", "m-e"]);
    // Taken and kept again (a redrive whose job could not be queued): listed as before.
    let taken = d.take_dead_letter(&t1, "m-c").await.unwrap().unwrap();
    d.put_dead_letter(&taken).await.unwrap();
    assert_eq!(d.list_dead_letters(&t1, None, 200).await.unwrap().dead_letters.len(), 4);
}
