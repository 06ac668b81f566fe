//! The port contract suites on the embedded (SQLite) adapters.

use std::sync::Arc;

use herald::adapters::embedded::{self, EmbeddedQueue, EmbeddedStore};
use herald_tests::{contract, tenant};

fn open(max_receives: u32) -> (tempfile::TempDir, Arc<EmbeddedStore>, Arc<EmbeddedQueue>) {
    let dir = tempfile::tempdir().unwrap();
    let (s, q) = embedded::open(dir.path(), max_receives).unwrap();
    (dir, s, q)
}

#[tokio::test]
async fn queue() {
    let (_d, _, q) = open(10);
    contract::queue_contract(q.as_ref()).await;
}

#[tokio::test]
async fn queue_replace_puts_rows_back_on_their_own() {
    let (_d, _, q) = open(10);
    contract::queue_replace_contract(q.as_ref()).await;
    assert_eq!(q.depth().await.unwrap(), (0, 0, 0), "nothing left behind");
}

#[tokio::test]
async fn queue_defer_starts_the_receive_count_again() {
    let (_d, _, q) = open(3);
    contract::queue_defer_contract(q.as_ref(), 3).await;
    assert_eq!(q.depth().await.unwrap(), (0, 0, 0), "nothing dead-lettered");
}

#[tokio::test]
async fn queue_dead_letters_after_max_receives() {
    let (_d, _, q) = open(3);
    contract::queue_dead_letter_contract(q.as_ref(), 3).await;
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1, "the job is kept in the dead-letter table");
    assert_eq!(q.redrive().await.unwrap(), 1);
    assert_eq!(q.depth().await.unwrap(), (1, 0, 0), "redrive puts it back on the queue");
}

#[tokio::test]
async fn the_sweeper_reads_the_rows_of_multi_row_jobs_and_of_jobs_queued_before_them() {
    use herald::ports::JobQueue;
    let dir = tempfile::tempdir().unwrap();
    let (_, q) = embedded::open(dir.path(), 10).unwrap();
    let job = herald::domain::Job {
        tenant_id: "t".into(),
        request_id: "r".into(),
        row_ids: vec!["a".into(), "b".into()],
        fan_out: None,
        import: false,
        recount: None,
        event: None,
    };
    q.send_batch(&[herald::ports::OutgoingJob { job, delay: std::time::Duration::ZERO }]).await.unwrap();
    // A single-row body, as queued before jobs carried several rows.
    let c = rusqlite::Connection::open(dir.path().join(embedded::DATABASE)).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    let old = r#"{"tenant_id":"t","request_id":"r","row_id":"c"}"#;
    c.execute("INSERT INTO jobs (message_id, body, visible_at, enqueued_at) VALUES ('old', ?1, 0, 0)", [old]).unwrap();
    let (live, dead) = q.rows_with_jobs().await.unwrap();
    let named = |ids: &[&str]| ids.iter().map(|id| ("t".to_string(), id.to_string())).collect();
    assert_eq!(live, named(&["a", "b", "c"]));
    assert!(dead.is_empty());
}

#[tokio::test]
async fn queue_recovers_in_flight_jobs_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let job = herald::ports::OutgoingJob {
        job: herald::domain::Job {
            tenant_id: "t".into(),
            request_id: "r".into(),
            row_ids: vec!["x".into()],
            fan_out: None,
            import: false,
            recount: None,
            event: None,
        },
        delay: std::time::Duration::ZERO,
    };
    {
        let (_, q) = embedded::open(dir.path(), 10).unwrap();
        use herald::ports::JobQueue;
        q.send_batch(&[job]).await.unwrap();
        assert_eq!(q.receive(10, std::time::Duration::from_secs(3600)).await.unwrap().len(), 1);
    }
    let (_, q) = embedded::open(dir.path(), 10).unwrap();
    use herald::ports::JobQueue;
    assert!(q.receive(10, std::time::Duration::from_secs(60)).await.unwrap().is_empty(), "still hidden");
    assert_eq!(q.recover_in_flight().await.unwrap(), 1);
    let again = q.receive(10, std::time::Duration::from_secs(60)).await.unwrap();
    assert_eq!(again.len(), 1, "the in-flight job is delivered after the restart");
    assert_eq!(again[0].receive_count, 2);
}

#[tokio::test]
async fn requests_and_rows() {
    let (_d, s, _) = open(10);
    contract::requests_contract(s.as_ref()).await;
}

#[tokio::test]
async fn requests_listed_newest_first() {
    let (_d, s, _) = open(10);
    contract::requests_listing_contract(s.as_ref()).await;
}

#[tokio::test]
async fn fan_out_rows_counts_and_cancel() {
    let (_d, s, _) = open(10);
    contract::fan_out_contract(s.as_ref()).await;
}

#[tokio::test]
async fn a_fan_out_that_stops_for_good_keeps_its_first_reason() {
    let (_d, s, _) = open(10);
    contract::fan_out_failure_contract(s.as_ref()).await;
}

#[tokio::test]
async fn status_callbacks_find_rows_and_move_forward_only() {
    let (_d, s, _) = open(10);
    contract::callbacks_contract(s.as_ref()).await;
}

#[tokio::test]
async fn racing_claims_have_one_winner() {
    let (_d, s, _) = open(10);
    contract::claim_race_contract(s).await;
}

#[tokio::test]
async fn contacts() {
    let (_d, s, _) = open(10);
    contract::contacts_contract(s).await;
}

#[tokio::test]
async fn catalog() {
    let (_d, s, _) = open(10);
    contract::catalog_contract(s.as_ref()).await;
}

#[tokio::test]
async fn api_keys() {
    let (_d, s, _) = open(10);
    contract::keys_contract(s.as_ref()).await;
}

#[tokio::test]
async fn idempotency() {
    let (_d, s, _) = open(10);
    contract::idempotency_contract(s.as_ref()).await;
}

#[tokio::test]
async fn webhook_endpoints() {
    let (_d, s, _) = open(10);
    contract::webhook_endpoints_contract(s.as_ref()).await;
}

#[tokio::test]
async fn event_store() {
    let (_d, s, _) = open(10);
    contract::event_store_contract(s.as_ref()).await;
}

#[tokio::test]
async fn outbox() {
    let (_d, s, _) = open(10);
    contract::outbox_contract(s.as_ref()).await;
}

#[tokio::test]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let (req, rows) = contract::sample_request("t1", "req_keep", 3);
    {
        let (s, _) = embedded::open(dir.path(), 10).unwrap();
        use herald::ports::RequestLog;
        s.insert_request(&req, &rows).await.unwrap();
    }
    let (s, _) = embedded::open(dir.path(), 10).unwrap();
    use herald::ports::RequestLog;
    assert_eq!(s.get_request(&tenant("t1"), "req_keep").await.unwrap(), Some(req));
    assert_eq!(s.list_rows(&tenant("t1"), "req_keep", None, 10).await.unwrap(), rows);
}

#[tokio::test]
async fn segments() {
    let (_d, s, _) = open(10);
    contract::segments_contract(s.as_ref()).await;
}

#[tokio::test]
async fn imports() {
    let (_d, s, _) = open(10);
    contract::imports_contract(s.as_ref()).await;
}

#[tokio::test]
async fn dead_letters() {
    let (_d, _, q) = open(10);
    contract::dead_letters_contract(q.as_ref()).await;
}

#[tokio::test]
async fn dead_letters_from_before_their_tenant_column_are_listed_for_their_tenant() {
    use herald::ports::DeadLetters;
    let dir = tempfile::tempdir().unwrap();
    {
        // The dead-letter table as it was before `tenant_id`.
        let c = rusqlite::Connection::open(dir.path().join(embedded::DATABASE)).unwrap();
        c.execute_batch(
            "CREATE TABLE dead_jobs (seq INTEGER PRIMARY KEY, message_id TEXT NOT NULL, body TEXT NOT NULL,
                 receive_count INTEGER NOT NULL, enqueued_at INTEGER NOT NULL, dead_at INTEGER NOT NULL);
             INSERT INTO dead_jobs VALUES (7, 'm-old', '{\"tenant_id\":\"t1\",\"request_id\":\"req_1\",\"row_ids\":[\"rcp_1\"]}', 10, 0, 5);
             INSERT INTO dead_jobs VALUES (8, 'm-poison', 'not json', 10, 0, 6);
             INSERT INTO dead_jobs VALUES (9, 'm-odd', '{\"tenant_id\":\"t1\"}', 10, 0, 7);",
        )
        .unwrap();
    }
    let (_, q) = embedded::open(dir.path(), 10).unwrap();
    let page = q.list_dead_letters(&tenant("t1"), None, 10).await.unwrap();
    assert_eq!(page.dead_letters.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["m-old"]);
    assert_eq!(page.dead_letters[0].job.row_ids, ["rcp_1"]);
    assert_eq!(q.take_dead_letter(&tenant("t1"), "m-odd").await.unwrap(), None, "a body that is no job");
    assert_eq!(q.dead_letters(10).await.unwrap().len(), 3, "bodies that are no job are kept for the CLI");
}
