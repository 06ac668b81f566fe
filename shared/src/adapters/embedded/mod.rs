//! The local shape's adapters: a durable store and a durable queue, each a SQLite database in WAL
//! mode inside the data directory (`.herald/` by default).

mod faults;
mod queue;
mod store;

pub use faults::{read_fault_log, Fault, Faults};
pub use queue::{DeadJob, EmbeddedQueue};
pub use store::{EmbeddedStore, StoreCounts};

use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use crate::ports::{StoreError, StoreResult};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Unavailable(format!("sqlite: {e}"))
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// One SQLite connection, used from blocking threads so the async runtime never waits on disk.
#[derive(Clone)]
pub(crate) struct Db {
    conn: Arc<Mutex<Connection>>,
    /// Armed only by soak tests; unset, a call pays one atomic load.
    faults: Arc<OnceLock<Arc<Faults>>>,
}

impl Db {
    pub(crate) fn open(path: &Path, schema: &str) -> StoreResult<Db> {
        let conn = Connection::open(path)?;
        // WAL + synchronous=NORMAL: a committed transaction survives a killed process; only a
        // power loss can take the last few back.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(schema)?;
        Ok(Db { conn: Arc::new(Mutex::new(conn)), faults: Arc::new(OnceLock::new()) })
    }

    /// Arms fault injection; `false` if it was armed already.
    pub(crate) fn inject_faults(&self, faults: Arc<Faults>) -> bool {
        self.faults.set(faults).is_ok()
    }

    pub(crate) fn faults(&self) -> Option<&Arc<Faults>> {
        self.faults.get()
    }

    pub(crate) async fn call<R, F>(&self, f: F) -> StoreResult<R>
    where
        F: FnOnce(&mut Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        let fault = self.faults.get().and_then(|f| Some((f, f.draw()?)));
        if let Some((faults, Fault::Before)) = fault {
            return Err(faults.strike(Fault::Before));
        }
        let conn = self.conn.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?;
        match (result, fault) {
            // The work is done (and committed, if it wrote); the caller is told it failed.
            (Ok(_), Some((faults, Fault::After))) => Err(faults.strike(Fault::After)),
            (result, _) => result,
        }
    }
}

/// Opens (creating if needed) the store and queue in `dir`.
pub fn open(dir: &Path, max_receives: u32) -> StoreResult<(Arc<EmbeddedStore>, Arc<EmbeddedQueue>)> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::Unavailable(format!("cannot create data directory {}: {e}", dir.display())))?;
    let store = EmbeddedStore::open(&dir.join("store.db"))?;
    let queue = EmbeddedQueue::open(&dir.join("queue.db"), max_receives)?;
    Ok((Arc::new(store), Arc::new(queue)))
}

pub(crate) fn ms(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}
