//! `herald dlq list` and `herald dlq redrive` on a data directory whose queue dead-lettered a job.

use std::process::Command;
use std::time::Duration;

use herald::ports::{JobQueue, OutgoingJob, RequestLog};

#[tokio::test]
async fn dead_letters_are_listed_with_their_rows_and_redriven() {
    let dir = tempfile::tempdir().unwrap();
    let row_id;
    {
        let (store, queue) = herald::adapters::embedded::open(dir.path(), 2).unwrap();
        let req_id = "req_00000000000000000000000000000001";
        let request: herald::domain::SendRequest = serde_json::from_value(serde_json::json!({
            "id": req_id, "tenant_id": "acme", "created_at": "2026-11-21T20:00:00Z", "source": "native",
            "messages": [], "background": true, "recipient_count": 1, "row_count": 1
        }))
        .unwrap();
        let row = herald::domain::RecipientRow::new(&"acme".into(), req_id, 0, 0, 0);
        row_id = row.id.clone();
        store.insert_request(&request, std::slice::from_ref(&row)).await.unwrap();
        queue.send_batch(&[OutgoingJob { job: row.job(), delay: Duration::ZERO }]).await.unwrap();
        for _ in 0..2 {
            let got = queue.receive(1, Duration::from_secs(60)).await.unwrap();
            queue.change_visibility(&got[0].receipt, Duration::ZERO).await.unwrap();
        }
        assert!(queue.receive(1, Duration::from_secs(60)).await.unwrap().is_empty(), "dead-lettered");
    }
    let herald = |args: &[&str]| {
        let out =
            Command::new(env!("CARGO_BIN_EXE_herald")).args(args).arg("--data-dir").arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (listed, _) = herald(&["dlq", "list"]);
    assert!(listed.contains(&row_id) && listed.contains("queued"), "{listed}");
    let (_, said) = herald(&["dlq", "redrive"]);
    assert!(said.contains("moved 1 job"), "{said}");
    let (listed, _) = herald(&["dlq", "list"]);
    assert!(listed.contains("empty"), "{listed}");
    let (_, queue) = herald::adapters::embedded::open(dir.path(), 2).unwrap();
    assert_eq!(queue.depth().await.unwrap(), (1, 0, 0), "the job is back on the queue");
}
