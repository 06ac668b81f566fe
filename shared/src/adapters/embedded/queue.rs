//! A durable job queue on SQLite with SQS semantics: at-least-once delivery, per-job delay,
//! visibility timeout, receive count, and a dead-letter table after `max_receives` receives.

use async_trait::async_trait;
use rusqlite::params;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

use super::{ms, Db};
use crate::domain::now;
use crate::domain::TenantId;
use crate::ports::{
    DeadLetter, DeadLetterCursor, DeadLetterPage, DeadLetters, JobQueue, OutgoingJob, ReceivedJob, StoreResult,
};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    visible_at INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT,
    in_flight INTEGER NOT NULL DEFAULT 0,
    enqueued_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_visible ON jobs(visible_at);
CREATE INDEX IF NOT EXISTS jobs_receipt ON jobs(receipt);
CREATE TABLE IF NOT EXISTS dead_jobs (
    seq INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    body TEXT NOT NULL,
    receive_count INTEGER NOT NULL,
    enqueued_at INTEGER NOT NULL,
    dead_at INTEGER NOT NULL,
    tenant_id TEXT
);
";

/// The tenant a job body names, for the dead-letter table's `tenant_id` (NULL for a poison body).
pub(super) const TENANT_OF_BODY: &str = "CASE WHEN json_valid(body) THEN json_extract(body, '$.tenant_id') END";

/// A job in the dead-letter table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadJob {
    pub message_id: String,
    pub body: String,
    pub receive_count: u32,
    pub dead_at: chrono::DateTime<chrono::Utc>,
}

pub struct EmbeddedQueue {
    db: Db,
    max_receives: u32,
    wake: Arc<Notify>,
}

impl EmbeddedQueue {
    pub(super) fn new(db: Db, max_receives: u32) -> EmbeddedQueue {
        EmbeddedQueue { db, max_receives: max_receives.max(1), wake: Arc::new(Notify::new()) }
    }

    /// Makes a share of this queue's calls fail (soak tests only); `false` if already armed.
    pub fn inject_faults(&self, faults: Arc<super::Faults>) -> bool {
        self.db.inject_faults(faults)
    }

    /// The armed fault switch, if any.
    pub fn faults(&self) -> Option<&Arc<super::Faults>> {
        self.db.faults()
    }

    /// Notified whenever jobs are enqueued, so idle workers wake at once.
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// After a restart, nobody holds the jobs that were in flight: make them visible now.
    /// Only the process that owns the data directory may call this.
    pub async fn recover_in_flight(&self) -> StoreResult<u64> {
        let t = ms(now());
        self.db
            .write(move |c| {
                Ok(c.execute(
                    "UPDATE jobs SET visible_at = MIN(visible_at, ?1), receipt = NULL, in_flight = 0 WHERE in_flight = 1",
                    params![t],
                )? as u64)
            })
            .await
    }

    /// The rows named by jobs on the queue (waiting, delayed or in flight) and by dead-lettered
    /// jobs, as (tenant, row id); read in one transaction, so a job moving to the dead-letter
    /// table is seen on one side or the other.
    pub async fn rows_with_jobs(&self) -> StoreResult<(HashSet<(String, String)>, HashSet<(String, String)>)> {
        self.db
            .read(|c| {
                let tx = c.transaction()?;
                let read = |table: &str| -> StoreResult<HashSet<(String, String)>> {
                    let mut st = tx.prepare(&format!(
                        "SELECT json_extract(j.body, '$.tenant_id'), r.value FROM {table} j,
                             json_each(j.body, CASE WHEN json_type(j.body, '$.row_ids') = 'array'
                                                    THEN '$.row_ids' ELSE '$.row_id' END) r
                         WHERE json_valid(j.body)"
                    ))?;
                    let rows =
                        st.query_map([], |r| Ok((r.get::<_, Option<String>>(0)?, r.get::<_, Option<String>>(1)?)))?;
                    let mut out = HashSet::new();
                    for r in rows {
                        if let (Some(t), Some(id)) = r? {
                            out.insert((t, id));
                        }
                    }
                    Ok(out)
                };
                Ok((read("jobs")?, read("dead_jobs")?))
            })
            .await
    }

    /// Jobs waiting (visible or delayed), in flight, and dead-lettered.
    /// Whether a job has been waiting to be received since `at` or before: the workers are
    /// behind, so rows untouched since then may simply be waiting their turn.
    pub async fn backlog_since(&self, at: chrono::DateTime<chrono::Utc>) -> StoreResult<bool> {
        let at = ms(at);
        self.db
            .read(move |c| {
                let mut st =
                    c.prepare_cached("SELECT EXISTS (SELECT 1 FROM jobs WHERE in_flight = 0 AND visible_at <= ?1)")?;
                Ok(st.query_row(params![at], |r| r.get::<_, bool>(0))?)
            })
            .await
    }

    pub async fn depth(&self) -> StoreResult<(u64, u64, u64)> {
        self.db
            .read(|c| {
                let q = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).map(|n| n as u64);
                Ok((
                    q("SELECT COUNT(*) FROM jobs WHERE in_flight = 0")?,
                    q("SELECT COUNT(*) FROM jobs WHERE in_flight = 1")?,
                    q("SELECT COUNT(*) FROM dead_jobs")?,
                ))
            })
            .await
    }

    pub async fn dead_letters(&self, limit: u32) -> StoreResult<Vec<DeadJob>> {
        self.db
            .read(move |c| {
                let mut st =
                    c.prepare("SELECT message_id, body, receive_count, dead_at FROM dead_jobs ORDER BY seq LIMIT ?1")?;
                let rows = st.query_map(params![limit], |r| {
                    Ok(DeadJob {
                        message_id: r.get(0)?,
                        body: r.get(1)?,
                        receive_count: r.get::<_, i64>(2)? as u32,
                        dead_at: chrono::DateTime::from_timestamp_millis(r.get(3)?).unwrap_or_default(),
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    /// Moves every dead-lettered job back onto the queue with a fresh receive count.
    pub async fn redrive(&self) -> StoreResult<u64> {
        let t = ms(now());
        let n = self
            .db
            .write(move |c| {
                let tx = c.savepoint()?;
                let n = tx.execute(
                    "INSERT INTO jobs (message_id, body, visible_at, receive_count, enqueued_at)
                     SELECT message_id, body, ?1, 0, enqueued_at FROM dead_jobs ORDER BY seq",
                    params![t],
                )?;
                tx.execute("DELETE FROM dead_jobs", [])?;
                tx.commit()?;
                Ok(n as u64)
            })
            .await?;
        self.wake.notify_waiters();
        Ok(n)
    }
}

/// Jobs as (message id, body, visible at), ready for [`insert`].
/// Jobs are received oldest-visible first; a fan-out page due now goes ahead of every row job
/// (it sorts as visible this long ago), so an audience keeps fanning out at its own pace however
/// many of its rows wait to be sent.
const FAN_OUT_AHEAD_MS: i64 = 24 * 60 * 60 * 1000;

fn bodies(jobs: &[OutgoingJob], t: i64) -> StoreResult<Vec<(String, String, i64)>> {
    jobs.iter()
        .map(|j| {
            let body = serde_json::to_string(&j.job)?;
            let ahead = if j.job.fan_out.is_some() && j.delay.is_zero() { FAN_OUT_AHEAD_MS } else { 0 };
            Ok((uuid::Uuid::new_v4().to_string(), body, t + j.delay.as_millis() as i64 - ahead))
        })
        .collect()
}

fn insert(tx: &rusqlite::Connection, items: &[(String, String, i64)], t: i64) -> rusqlite::Result<()> {
    let mut st =
        tx.prepare_cached("INSERT INTO jobs (message_id, body, visible_at, enqueued_at) VALUES (?1, ?2, ?3, ?4)")?;
    for (id, body, visible_at) in items {
        st.execute(params![id, body, visible_at, t])?;
    }
    Ok(())
}

/// Removes the job received with `receipt`; nothing once the job was received again (under a
/// new receipt).
fn delete_received(c: &rusqlite::Connection, receipt: &str) -> StoreResult<()> {
    c.prepare_cached("DELETE FROM jobs WHERE receipt = ?1")?.execute(params![receipt])?;
    Ok(())
}

// Every write below runs inside the engine's own savepoint, rolled back whole if it fails: none
// opens one of its own (two more statements parsed each time).
#[async_trait]
impl JobQueue for EmbeddedQueue {
    async fn send_batch(&self, jobs: &[OutgoingJob]) -> StoreResult<()> {
        let t = ms(now());
        let items = bodies(jobs, t)?;
        self.db.write(move |c| Ok(insert(c, &items, t)?)).await?;
        self.wake.notify_waiters();
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration) -> StoreResult<Vec<ReceivedJob>> {
        let t = ms(now());
        let hidden_until = t + visibility.as_millis() as i64;
        let max_receives = self.max_receives;
        self.db
            .write(move |tx| {
                let mut out = Vec::new();
                {
                    let mut pick = tx.prepare_cached(
                        "SELECT seq, message_id, body, receive_count FROM jobs
                         WHERE visible_at <= ?1 ORDER BY visible_at, seq LIMIT ?2",
                    )?;
                    let candidates = pick
                        .query_map(params![t, (max * 2) as i64], |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, String>(1)?,
                                r.get::<_, String>(2)?,
                                r.get::<_, i64>(3)?,
                            ))
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    // A dead letter takes a `seq` of its own: one kept again after a failed
                    // redrive must never hold the `seq` of a job buried later.
                    let mut bury = tx.prepare_cached(&format!(
                        "INSERT INTO dead_jobs (message_id, body, receive_count, enqueued_at, dead_at, tenant_id)
                         SELECT message_id, body, receive_count, enqueued_at, ?2, {TENANT_OF_BODY} FROM jobs WHERE seq = ?1"
                    ))?;
                    let mut delete = tx.prepare_cached("DELETE FROM jobs WHERE seq = ?1")?;
                    let mut take = tx.prepare_cached(
                        "UPDATE jobs SET receive_count = receive_count + 1, receipt = ?2, visible_at = ?3, in_flight = 1
                         WHERE seq = ?1",
                    )?;
                    for (seq, message_id, body, count) in candidates {
                        if count as u32 >= max_receives {
                            // Received max_receives times and never deleted: dead-letter it.
                            bury.execute(params![seq, t])?;
                            delete.execute(params![seq])?;
                            tracing::warn!(%message_id, receive_count = count, "job moved to the dead-letter table");
                            continue;
                        }
                        if out.len() == max {
                            break;
                        }
                        let receipt = uuid::Uuid::new_v4().to_string();
                        take.execute(params![seq, receipt, hidden_until])?;
                        out.push(ReceivedJob { message_id, receipt, body, receive_count: count as u32 + 1 });
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn delete(&self, receipt: &str) -> StoreResult<()> {
        let receipt = receipt.to_string();
        self.db.write(move |c| delete_received(c, &receipt)).await
    }

    async fn replace(&self, received: &ReceivedJob, jobs: &[OutgoingJob]) -> StoreResult<()> {
        // As on SQS, but in one step: the new jobs in, the received one gone.
        let receipt = received.receipt.clone();
        let t = ms(now());
        let items = bodies(jobs, t)?;
        self.db
            .write(move |c| {
                delete_received(c, &receipt)?;
                Ok(insert(c, &items, t)?)
            })
            .await?;
        if !jobs.is_empty() {
            self.wake.notify_waiters();
        }
        Ok(())
    }

    async fn change_visibility(&self, receipt: &str, timeout: Duration) -> StoreResult<()> {
        let receipt = receipt.to_string();
        let visible_at = ms(now()) + timeout.as_millis() as i64;
        self.db
            .write(move |c| {
                // A deliberate delay, not an in-flight job: a restart must not cut it short.
                c.execute(
                    "UPDATE jobs SET visible_at = ?2, in_flight = 0 WHERE receipt = ?1",
                    params![receipt, visible_at],
                )?;
                Ok(())
            })
            .await
    }
}

/// A dead-letter table row as the port shows it; `None` for a body that is not a job (those
/// name no tenant, so no tenant lists them).
fn dead_letter(r: &rusqlite::Row<'_>) -> rusqlite::Result<Option<DeadLetter>> {
    let body: String = r.get(1)?;
    let Ok(job) = serde_json::from_str(&body) else { return Ok(None) };
    Ok(Some(DeadLetter {
        id: r.get(0)?,
        job,
        reason: None,
        receive_count: r.get::<_, i64>(2)? as u32,
        dead_at: chrono::DateTime::from_timestamp_millis(r.get(3)?).unwrap_or_default(),
    }))
}

#[async_trait]
impl DeadLetters for EmbeddedQueue {
    async fn put_dead_letter(&self, dead: &DeadLetter) -> StoreResult<()> {
        let body = serde_json::to_string(&dead.job)?;
        let (id, tenant) = (dead.id.clone(), dead.job.tenant_id.as_str().to_string());
        let (count, at) = (i64::from(dead.receive_count), ms(dead.dead_at));
        self.db
            .write(move |c| {
                c.execute(
                    "INSERT INTO dead_jobs (message_id, body, receive_count, enqueued_at, dead_at, tenant_id)
                     SELECT ?1, ?2, ?3, ?4, ?4, ?5 WHERE NOT EXISTS (SELECT 1 FROM dead_jobs WHERE tenant_id = ?5 AND message_id = ?1)",
                    params![id, body, count, at, tenant],
                )?;
                Ok(())
            })
            .await
    }

    async fn list_dead_letters(
        &self,
        tenant: &TenantId,
        cursor: Option<&DeadLetterCursor>,
        limit: u32,
    ) -> StoreResult<DeadLetterPage> {
        let tenant = tenant.as_str().to_string();
        let (after_ms, after_id) = cursor.map_or((i64::MIN, String::new()), |c| (c.dead_ms, c.id.clone()));
        self.db
            .read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT message_id, body, receive_count, dead_at FROM dead_jobs
                     WHERE tenant_id = ?1 AND (dead_at, message_id) > (?2, ?3)
                     ORDER BY dead_at, message_id LIMIT ?4",
                )?;
                // One more than the page, to know whether the list goes on.
                let raw = st
                    .query_map(params![tenant, after_ms, after_id, i64::from(limit) + 1], |r| {
                        Ok((r.get::<_, i64>(3)?, r.get::<_, String>(0)?, dead_letter(r)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let more = raw.len() > limit as usize;
                let page = &raw[..raw.len().min(limit as usize)];
                let next =
                    page.last().filter(|_| more).map(|(at, id, _)| DeadLetterCursor { dead_ms: *at, id: id.clone() });
                let dead_letters = page.iter().filter_map(|(_, _, d)| d.clone()).collect();
                Ok(DeadLetterPage { dead_letters, next_cursor: next })
            })
            .await
    }

    async fn take_dead_letter(&self, tenant: &TenantId, id: &str) -> StoreResult<Option<DeadLetter>> {
        let (tenant, id) = (tenant.as_str().to_string(), id.to_string());
        self.db
            .write(move |c| {
                let tx = c.savepoint()?;
                let found = tx
                    .prepare_cached(
                        "SELECT message_id, body, receive_count, dead_at, seq FROM dead_jobs
                         WHERE tenant_id = ?1 AND message_id = ?2 LIMIT 1",
                    )?
                    .query_map(params![tenant, id], |r| Ok((dead_letter(r)?, r.get::<_, i64>(4)?)))?
                    .next()
                    .transpose()?;
                // A body that is no job stays for `herald dlq`: the API never listed it.
                let Some((Some(letter), seq)) = found else { return Ok(None) };
                tx.execute("DELETE FROM dead_jobs WHERE seq = ?1", params![seq])?;
                tx.commit()?;
                Ok(Some(letter))
            })
            .await
    }
}
