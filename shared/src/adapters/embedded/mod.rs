//! The local shape's adapters: a durable store and a durable queue on one SQLite database in WAL
//! mode inside the data directory (`.herald/herald.db` by default), written through one group
//! commit writer and read through a pool ([`engine`]).

mod engine;
mod events;
mod faults;
mod imports;
mod migrate;
mod queue;
mod segments;
mod store;

pub use faults::{read_fault_log, Fault, Faults};
pub use queue::{DeadJob, EmbeddedQueue};
pub use store::{EmbeddedStore, StoreCounts};

use rusqlite::Connection;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use engine::Engine;

use crate::ports::{StoreError, StoreResult};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Unavailable(format!("sqlite: {e}"))
    }
}

// A tenant id is a TEXT column, written and read as the bare string.
impl rusqlite::types::ToSql for crate::domain::TenantId {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        self.as_str().to_sql()
    }
}

impl rusqlite::types::FromSql for crate::domain::TenantId {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        String::column_result(value).map(crate::domain::TenantId::new)
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// An adapter's handle on the shared [`Engine`], with its own fault switch (the soak tests fail
/// the store's and the queue's calls apart).
#[derive(Clone)]
pub(crate) struct Db {
    engine: Arc<Engine>,
    /// Armed only by soak tests; unset, a call pays one atomic load.
    faults: Arc<OnceLock<Arc<Faults>>>,
}

impl Db {
    fn new(engine: Arc<Engine>) -> Db {
        Db { engine, faults: Arc::new(OnceLock::new()) }
    }

    /// Arms fault injection; `false` if it was armed already.
    pub(crate) fn inject_faults(&self, faults: Arc<Faults>) -> bool {
        self.faults.set(faults).is_ok()
    }

    pub(crate) fn faults(&self) -> Option<&Arc<Faults>> {
        self.faults.get()
    }

    /// A write, committed with whatever other writes are waiting (group commit).
    pub(crate) async fn write<R, F>(&self, f: F) -> StoreResult<R>
    where
        F: FnOnce(&mut Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        self.with_faults(self.engine.write(f)).await
    }

    /// A read, on a connection of the read pool.
    pub(crate) async fn read<R, F>(&self, f: F) -> StoreResult<R>
    where
        F: FnOnce(&mut Connection) -> StoreResult<R> + Send + 'static,
        R: Send + 'static,
    {
        self.with_faults(self.engine.read(f)).await
    }

    /// Runs `call` unless an armed fault strikes before it; a fault that strikes after lets the
    /// work happen (and commit, for a write) and tells the caller it failed.
    async fn with_faults<R>(&self, call: impl std::future::Future<Output = StoreResult<R>>) -> StoreResult<R> {
        let fault = self.faults.get().and_then(|f| Some((f, f.draw()?)));
        if let Some((faults, Fault::Before)) = fault {
            return Err(faults.strike(Fault::Before));
        }
        match (call.await, fault) {
            (Ok(_), Some((faults, Fault::After))) => Err(faults.strike(Fault::After)),
            (result, _) => result,
        }
    }
}

/// The database file in a data directory: the store's tables and the queue's, so a request and
/// its jobs can share a transaction.
pub const DATABASE: &str = "herald.db";

/// Opens (creating if needed) the store and queue in `dir`, one database shared by both. A data
/// directory from before they shared one (`store.db` and `queue.db`) is carried over: the store
/// file becomes the database and the queue's jobs move into it.
pub fn open(dir: &Path, max_receives: u32) -> StoreResult<(Arc<EmbeddedStore>, Arc<EmbeddedQueue>)> {
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::Unavailable(format!("cannot create data directory {}: {e}", dir.display())))?;
    let path = dir.join(DATABASE);
    migrate::rename_store_file(dir, &path)?;
    let schema = format!("{}\n{}\n{}\n{}", store::SCHEMA, queue::SCHEMA, segments::SCHEMA, imports::SCHEMA);
    let prepare = |c: &Connection| {
        migrate::take_old_queue(dir, c)?;
        migrate::add_row_counts(c)?;
        migrate::add_fan_out_error(c)?;
        migrate::add_events(c)?;
        migrate::add_request_listing(c)?;
        migrate::compact_contacts(c)?;
        migrate::add_dead_letter_tenants(c)
    };
    let engine = Arc::new(Engine::open_with(&path, &schema, prepare)?);
    let store = EmbeddedStore::new(Db::new(engine.clone()), imports::files_root(dir));
    let queue = EmbeddedQueue::new(Db::new(engine), max_receives);
    Ok((Arc::new(store), Arc::new(queue)))
}

pub(crate) fn ms(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}
