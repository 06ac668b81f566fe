//! Data directories from before the store and the queue shared one database (`store.db` and
//! `queue.db`): the store file becomes `herald.db`, and the queue's jobs and dead letters move
//! into it, once. Nothing is lost: the old queue file is renamed aside, not deleted, after its
//! rows are copied in the same transaction that records them.

use rusqlite::Connection;
use std::path::Path;

use crate::ports::{StoreError, StoreResult};

const OLD_STORE: &str = "store.db";
const OLD_QUEUE: &str = "queue.db";
/// What the old queue file is renamed to once its jobs are in `herald.db`.
pub const MERGED_QUEUE: &str = "queue.db.merged";

/// The old store file (and its WAL) becomes the database, if there is no database yet.
pub(super) fn rename_store_file(dir: &Path, database: &Path) -> StoreResult<()> {
    let old = dir.join(OLD_STORE);
    if database.exists() || !old.exists() {
        return Ok(());
    }
    let name = database.file_name().and_then(|n| n.to_str()).unwrap_or("herald.db");
    for suffix in ["-wal", "-shm", ""] {
        let from = dir.join(format!("{OLD_STORE}{suffix}"));
        if from.exists() {
            std::fs::rename(&from, dir.join(format!("{name}{suffix}"))).map_err(io)?;
        }
    }
    Ok(())
}

/// Copies the old queue file's jobs and dead letters into the database, then renames it aside.
pub(super) fn take_old_queue(dir: &Path, conn: &Connection) -> StoreResult<()> {
    let old = dir.join(OLD_QUEUE);
    if !old.exists() {
        return Ok(());
    }
    conn.execute("ATTACH DATABASE ?1 AS old_queue", [old.to_string_lossy()])?;
    let copied = conn.execute_batch(
        "BEGIN IMMEDIATE;
         INSERT OR IGNORE INTO jobs (message_id, body, visible_at, receive_count, receipt, in_flight, enqueued_at)
             SELECT message_id, body, visible_at, receive_count, receipt, in_flight, enqueued_at
             FROM old_queue.jobs ORDER BY seq;
         INSERT INTO dead_jobs (message_id, body, receive_count, enqueued_at, dead_at)
             SELECT message_id, body, receive_count, enqueued_at, dead_at FROM old_queue.dead_jobs ORDER BY seq;
         COMMIT;",
    );
    if copied.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    conn.execute_batch("DETACH DATABASE old_queue")?;
    copied?;
    for suffix in ["-wal", "-shm", ""] {
        let from = dir.join(format!("{OLD_QUEUE}{suffix}"));
        if from.exists() {
            std::fs::rename(&from, dir.join(format!("{MERGED_QUEUE}{suffix}"))).map_err(io)?;
        }
    }
    Ok(())
}

/// `request_progress.fan_out_error` (why a fan-out stopped for good), added to a database from
/// before it; a new database has it from its schema.
pub(super) fn add_fan_out_error(conn: &Connection) -> StoreResult<()> {
    let present: i64 = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('request_progress') WHERE name = 'fan_out_error'",
        [],
        |r| r.get(0),
    )?;
    if present == 0 {
        conn.execute_batch("ALTER TABLE request_progress ADD COLUMN fan_out_error TEXT")?;
    }
    Ok(())
}

/// Row counts per request and status, kept by triggers in the transaction of every row write, so
/// a broadcast's summary never reads its rows. A database from before them gets the table, the
/// triggers and the counts of the rows it holds, in one transaction.
pub(super) fn add_row_counts(conn: &Connection) -> StoreResult<()> {
    let present: i64 =
        conn.query_row("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'row_counts'", [], |r| {
            r.get(0)
        })?;
    if present > 0 {
        return Ok(());
    }
    let added = conn.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE row_counts (
             tenant_id TEXT NOT NULL, request_id TEXT NOT NULL, status TEXT NOT NULL, n INTEGER NOT NULL,
             PRIMARY KEY (tenant_id, request_id, status)
         ) WITHOUT ROWID;
         CREATE TRIGGER row_counts_insert AFTER INSERT ON recipient_rows BEGIN
             INSERT INTO row_counts (tenant_id, request_id, status, n) VALUES (new.tenant_id, new.request_id, new.status, 1)
                 ON CONFLICT (tenant_id, request_id, status) DO UPDATE SET n = n + 1;
         END;
         CREATE TRIGGER row_counts_update AFTER UPDATE OF status ON recipient_rows WHEN old.status <> new.status BEGIN
             UPDATE row_counts SET n = n - 1
                 WHERE tenant_id = old.tenant_id AND request_id = old.request_id AND status = old.status;
             INSERT INTO row_counts (tenant_id, request_id, status, n) VALUES (new.tenant_id, new.request_id, new.status, 1)
                 ON CONFLICT (tenant_id, request_id, status) DO UPDATE SET n = n + 1;
         END;
         CREATE TRIGGER row_counts_delete AFTER DELETE ON recipient_rows BEGIN
             UPDATE row_counts SET n = n - 1
                 WHERE tenant_id = old.tenant_id AND request_id = old.request_id AND status = old.status;
         END;
         INSERT INTO row_counts (tenant_id, request_id, status, n)
             SELECT tenant_id, request_id, status, COUNT(*) FROM recipient_rows GROUP BY tenant_id, request_id, status;
         COMMIT;",
    );
    if added.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    Ok(added?)
}

/// The status event tables (subscriptions, dead letters, completion marks): new tables only, so
/// a database from before them gets them as they are created on a new one.
pub(super) fn add_events(conn: &Connection) -> StoreResult<()> {
    Ok(conn.execute_batch(super::events::SCHEMA)?)
}

/// `requests.created_ms` and `requests.source`, and the indexes that list a tenant's requests
/// newest first (all of them, or one source's). A database from before them gets them filled
/// from each request's document, in one transaction; the time is read with chrono, so it is the
/// same millisecond the store writes for a new request.
pub(super) fn add_request_listing(conn: &Connection) -> StoreResult<()> {
    let present: i64 =
        conn.query_row("SELECT COUNT(*) FROM pragma_table_info('requests') WHERE name = 'created_ms'", [], |r| {
            r.get(0)
        })?;
    if present > 0 {
        return Ok(());
    }
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let added = fill_request_listing(conn).and_then(|()| Ok(conn.execute_batch("COMMIT")?));
    if added.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    added
}

fn fill_request_listing(conn: &Connection) -> StoreResult<()> {
    conn.execute_batch(
        "ALTER TABLE requests ADD COLUMN created_ms INTEGER NOT NULL DEFAULT 0;
         ALTER TABLE requests ADD COLUMN source TEXT NOT NULL DEFAULT '';
         CREATE INDEX requests_newest ON requests(tenant_id, created_ms, id);
         CREATE INDEX requests_newest_by_source ON requests(tenant_id, source, created_ms, id);",
    )?;
    let docs: Vec<(i64, String)> = conn
        .prepare("SELECT rowid, data FROM requests")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut write = conn.prepare("UPDATE requests SET created_ms = ?2, source = ?3 WHERE rowid = ?1")?;
    for (rowid, data) in docs {
        let request: crate::domain::SendRequest = serde_json::from_str(&data)?;
        write.execute(rusqlite::params![rowid, request.created_at.timestamp_millis(), request.source])?;
    }
    Ok(())
}

/// `dead_jobs.tenant_id`, so a tenant's dead letters are listed by an index instead of reading
/// every body, added to a database from before it (a new one has it from its schema). Every
/// open fills it for dead letters that lack it (those an old queue file brought in) and makes
/// sure of the index; poison bodies name no tenant and stay without.
pub(super) fn add_dead_letter_tenants(conn: &Connection) -> StoreResult<()> {
    let present: i64 =
        conn.query_row("SELECT COUNT(*) FROM pragma_table_info('dead_jobs') WHERE name = 'tenant_id'", [], |r| {
            r.get(0)
        })?;
    if present == 0 {
        conn.execute_batch("ALTER TABLE dead_jobs ADD COLUMN tenant_id TEXT")?;
    }
    conn.execute_batch(&format!(
        "UPDATE dead_jobs SET tenant_id = {} WHERE tenant_id IS NULL;
         CREATE INDEX IF NOT EXISTS dead_jobs_by_tenant ON dead_jobs(tenant_id, dead_at, message_id);",
        super::queue::TENANT_OF_BODY
    ))?;
    Ok(())
}

/// `contacts` and `contact_keys` as `WITHOUT ROWID` tables, each one B-tree keyed by its
/// primary key, and no index of keys by contact (a contact's keys are read from its document):
/// a new contact with a phone and an email was ten B-tree inserts and is five. A database from
/// before gets its two tables copied into the new shape, in one transaction.
pub(super) fn compact_contacts(conn: &Connection) -> StoreResult<()> {
    let sql: String =
        conn.query_row("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'contact_keys'", [], |r| {
            r.get(0)
        })?;
    if sql.contains("WITHOUT ROWID") {
        return Ok(());
    }
    let copied = conn.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE contacts_compact (
             tenant_id TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (tenant_id, id)
         ) WITHOUT ROWID;
         INSERT INTO contacts_compact (tenant_id, id, data) SELECT tenant_id, id, data FROM contacts;
         DROP TABLE contacts;
         ALTER TABLE contacts_compact RENAME TO contacts;
         CREATE TABLE contact_keys_compact (
             tenant_id TEXT NOT NULL, key TEXT NOT NULL, contact_id TEXT NOT NULL, PRIMARY KEY (tenant_id, key)
         ) WITHOUT ROWID;
         INSERT INTO contact_keys_compact (tenant_id, key, contact_id)
             SELECT tenant_id, key, contact_id FROM contact_keys;
         DROP TABLE contact_keys;
         ALTER TABLE contact_keys_compact RENAME TO contact_keys;
         COMMIT;",
    );
    if copied.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    Ok(copied?)
}

fn io(e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("cannot move an old data file: {e}"))
}

#[cfg(test)]
mod tests {
    use super::super::open;
    use crate::ports::JobQueue;
    use rusqlite::Connection;
    use std::time::Duration;

    #[tokio::test]
    async fn an_old_data_directory_keeps_its_records_and_its_jobs() {
        let dir = tempfile::tempdir().unwrap();
        // The old layout: the store's tables in store.db, the queue's in queue.db.
        let store = Connection::open(dir.path().join("store.db")).unwrap();
        store.execute_batch(super::super::store::SCHEMA).unwrap();
        store.execute("INSERT INTO tenants (id, created_at) VALUES ('acme', 1)", []).unwrap();
        drop(store);
        let queue = Connection::open(dir.path().join("queue.db")).unwrap();
        queue.execute_batch(super::super::queue::SCHEMA).unwrap();
        queue
            .execute(
                "INSERT INTO jobs (message_id, body, visible_at, enqueued_at) VALUES ('m1', '{\"x\":1}', 0, 0)",
                [],
            )
            .unwrap();
        queue
            .execute(
                "INSERT INTO dead_jobs (message_id, body, receive_count, enqueued_at, dead_at)
                 VALUES ('m0', 'poison', 10, 0, 0)",
                [],
            )
            .unwrap();
        drop(queue);

        let (store, queue) = open(dir.path(), 10).unwrap();
        assert_eq!(crate::ports::ApiKeys::count_tenants(&*store).await.unwrap(), 1);
        let jobs = queue.receive(10, Duration::from_secs(30)).await.unwrap();
        assert_eq!(jobs.iter().map(|j| j.body.as_str()).collect::<Vec<_>>(), ["{\"x\":1}"]);
        assert_eq!(queue.dead_letters(10).await.unwrap().len(), 1);
        assert!(dir.path().join("herald.db").exists());
        assert!(!dir.path().join("store.db").exists() && !dir.path().join("queue.db").exists());
        assert!(dir.path().join(super::MERGED_QUEUE).exists(), "the old queue file is kept aside");
        drop((store, queue));

        // Opening again changes nothing.
        let (_, queue) = open(dir.path(), 10).unwrap();
        assert_eq!(queue.dead_letters(10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn requests_stored_before_the_list_are_listed_newest_first() {
        use crate::ports::RequestLog;
        let dir = tempfile::tempdir().unwrap();
        let db = Connection::open(dir.path().join(super::super::DATABASE)).unwrap();
        db.execute_batch(super::super::store::SCHEMA).unwrap();
        for (id, at, source) in
            [("req_old", "2026-01-02T03:04:05Z", "native"), ("req_new", "2026-01-02T03:04:05.5Z", "twilio")]
        {
            let doc = serde_json::json!({"id": id, "tenant_id": "acme", "created_at": at, "source": source,
                "messages": [], "background": true, "recipient_count": 0, "row_count": 0});
            db.execute("INSERT INTO requests (tenant_id, id, data) VALUES ('acme', ?1, ?2)", [id, &doc.to_string()])
                .unwrap();
        }
        drop(db);
        let (store, _) = open(dir.path(), 10).unwrap();
        let acme = crate::domain::TenantId::new("acme");
        let page = store.list_requests(&acme, None, None, 10).await.unwrap();
        assert_eq!(page.requests.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["req_new", "req_old"]);
        let twilio = store.list_requests(&acme, Some("twilio"), None, 10).await.unwrap();
        assert_eq!(twilio.requests.len(), 1);
    }

    #[tokio::test]
    async fn contacts_stored_before_the_compact_tables_keep_their_keys() {
        use crate::domain::{Contact, ContactDraft, ContactKey, Email, Phone, TenantId};
        use crate::ports::Contacts;
        let dir = tempfile::tempdir().unwrap();
        let db = Connection::open(dir.path().join(super::super::DATABASE)).unwrap();
        db.execute_batch(
            "CREATE TABLE contacts (tenant_id TEXT NOT NULL, id TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (tenant_id, id));
             CREATE TABLE contact_keys (
                 tenant_id TEXT NOT NULL, key TEXT NOT NULL, contact_id TEXT NOT NULL, PRIMARY KEY (tenant_id, key)
             );
             CREATE INDEX contact_keys_contact ON contact_keys(tenant_id, contact_id);",
        )
        .unwrap();
        let phone = Phone::parse("+14155550123").unwrap();
        let mut contact = Contact::new("ct_old".into());
        contact.apply(&ContactDraft { phone: Some(phone.clone()), ..Default::default() });
        db.execute(
            "INSERT INTO contacts (tenant_id, id, data) VALUES ('acme', 'ct_old', ?1)",
            [serde_json::to_string(&contact).unwrap()],
        )
        .unwrap();
        for key in contact.keys() {
            db.execute(
                "INSERT INTO contact_keys (tenant_id, key, contact_id) VALUES ('acme', ?1, 'ct_old')",
                [key.as_key()],
            )
            .unwrap();
        }
        drop(db);

        let (store, _) = open(dir.path(), 10).unwrap();
        let acme = TenantId::new("acme");
        let found = store.find_contact(&acme, &ContactKey::Phone(phone.clone())).await.unwrap().unwrap();
        assert_eq!(found.id, "ct_old");
        // A change of keys lets the old one go and takes the new one, read from the document.
        let mut moved = found.clone();
        let email = Email::parse("ada@example.com").unwrap();
        moved.apply(&ContactDraft { email: Some(email.clone()), ..Default::default() });
        moved.phone = None;
        store.put_contact(&acme, &moved).await.unwrap();
        assert!(store.find_contact(&acme, &ContactKey::Phone(phone)).await.unwrap().is_none());
        assert_eq!(store.find_contact(&acme, &ContactKey::Email(email)).await.unwrap().unwrap().id, "ct_old");
        drop(store);

        let db = Connection::open(dir.path().join(super::super::DATABASE)).unwrap();
        let shapes: Vec<String> = db
            .prepare("SELECT sql FROM sqlite_master WHERE name IN ('contacts', 'contact_keys') ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(shapes.iter().all(|s| s.contains("WITHOUT ROWID")), "{shapes:?}");
        let index: i64 = db
            .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'contact_keys_contact'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(index, 0);
        drop(db);
        // Opening again changes nothing.
        let (store, _) = open(dir.path(), 10).unwrap();
        assert_eq!(store.get_contact(&acme, "ct_old").await.unwrap().unwrap().email, moved.email);
    }
}
