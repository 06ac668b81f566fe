//! The local shape's database engine: one SQLite file in WAL mode with **one writer thread** that
//! commits every write waiting for it in a single transaction (group commit), answering each
//! caller once that transaction is durable, and a small pool of read connections beside it, so
//! reads never queue behind writes.
//!
//! Each write runs inside a savepoint of the shared transaction: a write that fails (or panics)
//! is rolled back alone and its caller told so; the others still commit. A write's closure may
//! open its own savepoint (`Connection::savepoint`) for a group of statements; it must not begin
//! a transaction of its own.

use rusqlite::{Connection, OpenFlags};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;
use tokio::sync::oneshot;

use crate::ports::{StoreError, StoreResult};

/// Most writes one transaction takes: bounds how long the first of them waits.
const MAX_BATCH: usize = 512;
/// Read connections, opened as needed.
const MAX_READERS: usize = 4;
const BUSY: Duration = Duration::from_secs(10);
/// The writer's page cache, in KiB (SQLite's default is 2 MiB): an import's contact keys are
/// written at random places in a million-entry index, and every page not cached is read again
/// before it is changed. Measured with 200,000 members: 2, 8 and 32 MiB import them in 5.7, 5.4
/// and 4.9 s and send them in 46.7, 46.0 and 44.9 s; every commit also scans the whole cache
/// (`pcache1TruncateUnsafe`), so more is not free.
const WRITER_CACHE_KIB: i64 = 16 * 1024;
/// How often the checkpointer copies the write-ahead log back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(200);
/// Log pages past which the writer checkpoints by itself, should the checkpointer fall behind
/// (SQLite's default is 1,000 pages, about 4 MiB, on the writer's own thread).
const WRITER_CHECKPOINT_PAGES: i64 = 16_384;

pub(crate) struct Engine {
    writes: Sender<Box<dyn Write>>,
    readers: Readers,
    /// The checkpointer stops once this is dropped.
    _alive: Arc<()>,
}

impl Engine {
    /// Opens (creating) the database at `path` and applies `schema` (idempotent DDL).
    #[cfg(test)]
    pub(crate) fn open(path: &Path, schema: &str) -> StoreResult<Engine> {
        Engine::open_with(path, schema, |_| Ok(()))
    }

    /// Opens (creating) the database at `path`, applies `schema` (idempotent DDL), then runs
    /// `prepare` on the writer's connection.
    pub(crate) fn open_with(
        path: &Path,
        schema: &str,
        prepare: impl FnOnce(&Connection) -> StoreResult<()>,
    ) -> StoreResult<Engine> {
        let conn = Connection::open(path)?;
        // WAL + synchronous=NORMAL: a committed transaction survives a killed process; only a
        // power loss can take the last few back.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        // Each write runs in a savepoint, whose journal of the pages it changed need not be a file.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)?;
        conn.busy_timeout(BUSY)?;
        conn.execute_batch(schema)?;
        prepare(&conn)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("herald-db-writer".into())
            .spawn(move || write_loop(conn, rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the database writer: {e}")))?;
        let checkpoints = open_reader(path)?;
        checkpoints.pragma_update(None, "query_only", false)?;
        let alive = Arc::new(());
        let engine = Arc::downgrade(&alive);
        std::thread::Builder::new()
            .name("herald-db-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpoints, engine))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the database checkpointer: {e}")))?;
        Ok(Engine { writes: tx, readers: Readers::new(path.to_path_buf()), _alive: alive })
    }

    /// Runs `f` in the writer's next transaction; answers once it is committed.
    pub(crate) async fn write<R, F>(&self, f: F) -> StoreResult<R>
    where
        F: FnOnce(&mut Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let job: Box<dyn Write> = Box::new(Job { f, answer });
        let sent = self.writes.send(job);
        sent.map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?;
        answered.await.map_err(|_| StoreError::Unavailable("the database writer has stopped".into()))?
    }

    /// Runs `f` on a read connection, off the async runtime. It sees every write already answered.
    pub(crate) async fn read<R, F>(&self, f: F) -> StoreResult<R>
    where
        F: FnOnce(&mut Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || readers.with(f))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }
}

// ---------------------------------------------------------------- the writer

/// A write waiting for the writer: run it inside the shared transaction, then answer it.
trait Write: Send {
    /// Runs the write in a savepoint of the open transaction (rolled back alone if it fails).
    fn run(self: Box<Self>, conn: &mut Connection) -> Box<dyn Answer>;
    /// The transaction could not begin: answer without running.
    fn refuse(self: Box<Self>, why: String);
}

/// A write that ran, waiting to hear whether its transaction committed.
trait Answer: Send {
    fn answer(self: Box<Self>, committed: Result<(), String>);
}

struct Job<F, R> {
    f: F,
    answer: oneshot::Sender<StoreResult<R>>,
}

struct Ran<R> {
    result: StoreResult<R>,
    answer: oneshot::Sender<StoreResult<R>>,
}

impl<F, R> Write for Job<F, R>
where
    F: FnOnce(&mut Connection) -> StoreResult<R> + Send + 'static,
    R: Send + 'static,
{
    fn run(self: Box<Self>, conn: &mut Connection) -> Box<dyn Answer> {
        let Job { f, answer } = *self;
        let result = in_savepoint(conn, f);
        Box::new(Ran { result, answer })
    }

    fn refuse(self: Box<Self>, why: String) {
        let _ = self.answer.send(Err(StoreError::Unavailable(why)));
    }
}

impl<R: Send> Answer for Ran<R> {
    fn answer(self: Box<Self>, committed: Result<(), String>) {
        let result = match committed {
            Ok(()) => self.result,
            // Whatever the write did was rolled back with the transaction.
            Err(why) => Err(StoreError::Unavailable(why)),
        };
        let _ = self.answer.send(result);
    }
}

/// Runs one of the writer's own statements, prepared once per connection.
fn run(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn roll_back(conn: &Connection) -> rusqlite::Result<()> {
    run(conn, "ROLLBACK TO herald_write")?;
    run(conn, "RELEASE herald_write")
}

fn in_savepoint<R>(conn: &mut Connection, f: impl FnOnce(&mut Connection) -> StoreResult<R>) -> StoreResult<R> {
    run(conn, "SAVEPOINT herald_write")?;
    let result = catch_unwind(AssertUnwindSafe(|| f(conn)))
        .unwrap_or_else(|_| Err(StoreError::Unavailable("a store write panicked".into())));
    let end = match result {
        Ok(_) => run(conn, "RELEASE herald_write"),
        Err(_) => roll_back(conn),
    };
    match end {
        Ok(()) => result,
        Err(e) => {
            // Leave nothing of this write behind for the others to commit.
            let _ = roll_back(conn);
            Err(e.into())
        }
    }
}

/// Takes every write waiting (up to [`MAX_BATCH`]), runs them in one transaction, commits, then
/// answers them all; until every [`Engine`] handle is gone.
fn write_loop(mut conn: Connection, writes: Receiver<Box<dyn Write>>) {
    while let Ok(first) = writes.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match writes.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        if let Err(e) = run(&conn, "BEGIN IMMEDIATE") {
            let why = format!("sqlite: {e}");
            batch.into_iter().for_each(|w| w.refuse(why.clone()));
            continue;
        }
        let ran: Vec<Box<dyn Answer>> = batch.into_iter().map(|w| w.run(&mut conn)).collect();
        let committed = run(&conn, "COMMIT").map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            format!("sqlite: {e}")
        });
        ran.into_iter().for_each(|r| r.answer(committed.clone()));
    }
}

/// Copies the write-ahead log back into the database every [`CHECKPOINT_EVERY`], beside the
/// writer rather than inside its commits (a passive checkpoint waits for no one and blocks no
/// one); until the engine is dropped.
fn checkpoint_loop(conn: Connection, engine: Weak<()>) {
    let mut failures = 0u32;
    loop {
        std::thread::sleep(CHECKPOINT_EVERY);
        if engine.upgrade().is_none() {
            return;
        }
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0)) {
            Ok(_) => failures = 0,
            Err(e) => {
                failures += 1;
                // The writer's own checkpoints take over meanwhile; say so once in a while.
                if failures == 1 || failures.is_multiple_of(300) {
                    tracing::warn!(error = %e, failures, "checkpoint failed");
                }
            }
        }
    }
}

// ---------------------------------------------------------------- the readers

/// Read connections, opened on demand up to [`MAX_READERS`]; `query_only`, so a write sent here
/// by mistake fails loudly instead of bypassing the writer.
#[derive(Clone)]
struct Readers(Arc<ReaderPool>);

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<(Vec<Connection>, usize)>,
    returned: Condvar,
}

impl Readers {
    fn new(path: PathBuf) -> Readers {
        Readers(Arc::new(ReaderPool { path, idle: Mutex::new((Vec::new(), 0)), returned: Condvar::new() }))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Connection) -> StoreResult<R>) -> StoreResult<R> {
        let mut conn = self.take()?;
        let result = catch_unwind(AssertUnwindSafe(|| f(&mut conn)))
            .unwrap_or_else(|_| Err(StoreError::Unavailable("a store read panicked".into())));
        let pool = &self.0;
        pool.idle.lock().unwrap_or_else(|p| p.into_inner()).0.push(conn);
        pool.returned.notify_one();
        result
    }

    fn take(&self) -> StoreResult<Connection> {
        let pool = &self.0;
        let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(c) = idle.0.pop() {
                return Ok(c);
            }
            if idle.1 < MAX_READERS {
                idle.1 += 1;
                drop(idle);
                return open_reader(&pool.path).inspect_err(|_| {
                    pool.idle.lock().unwrap_or_else(|p| p.into_inner()).1 -= 1;
                });
            }
            idle = pool.returned.wait(idle).unwrap_or_else(|p| p.into_inner());
        }
    }
}

fn open_reader(path: &Path) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> (tempfile::TempDir, Arc<Engine>) {
        let dir = tempfile::tempdir().unwrap();
        let e = Engine::open(&dir.path().join("t.db"), "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER);")
            .unwrap();
        (dir, Arc::new(e))
    }

    fn put(k: &str, v: i64) -> impl FnOnce(&mut Connection) -> StoreResult<()> + Send + 'static {
        let k = k.to_string();
        move |c| Ok(c.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", rusqlite::params![k, v]).map(|_| ())?)
    }

    async fn count(e: &Engine) -> i64 {
        e.read(|c| Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?)).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_all_commit_and_are_read_back() {
        let (_d, e) = engine();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                tokio::spawn({
                    let e = e.clone();
                    async move { e.write(put(&format!("k{i}"), i)).await }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(count(&e).await, 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_failing_write_is_rolled_back_alone() {
        let (_d, e) = engine();
        e.write(put("dup", 1)).await.unwrap();
        let failing = e.write(|c| {
            c.execute("INSERT INTO t (k, v) VALUES ('half', 1)", [])?;
            c.execute("INSERT INTO t (k, v) VALUES ('dup', 2)", [])?; // primary key taken
            Ok(())
        });
        let (failed, ok) = tokio::join!(failing, e.write(put("other", 3)));
        assert!(failed.is_err());
        ok.unwrap();
        let keys: Vec<String> = e
            .read(|c| {
                let mut st = c.prepare("SELECT k FROM t ORDER BY k")?;
                let keys = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
                Ok(keys)
            })
            .await
            .unwrap();
        assert_eq!(keys, ["dup", "other"], "the failed write's first insert is gone too");
    }

    #[tokio::test]
    async fn a_panicking_write_fails_its_caller_and_the_writer_goes_on() {
        let (_d, e) = engine();
        let r: StoreResult<()> = e.write(|_| panic!("boom")).await;
        assert!(r.is_err());
        e.write(put("after", 1)).await.unwrap();
        assert_eq!(count(&e).await, 1);
    }

    #[tokio::test]
    async fn a_write_sent_to_a_reader_is_refused() {
        let (_d, e) = engine();
        let r = e.read(put("sneaky", 1)).await;
        assert!(r.is_err(), "readers are query_only");
        assert_eq!(count(&e).await, 0);
    }

    #[tokio::test]
    async fn a_write_may_group_statements_in_a_savepoint_of_its_own() {
        let (_d, e) = engine();
        e.write(|c| {
            let sp = c.savepoint()?;
            sp.execute("INSERT INTO t (k, v) VALUES ('a', 1)", [])?;
            sp.execute("INSERT INTO t (k, v) VALUES ('b', 2)", [])?;
            sp.commit()?;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(count(&e).await, 2);
    }
}
