//! The local shape: embedded store and queue in one directory, the sandbox provider, the worker
//! pool. `herald serve` and the end-to-end tests assemble Herald through [`Local::open`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::adapters::embedded::{self, EmbeddedQueue, EmbeddedStore, Faults};
use crate::app::{Herald, Settings, Stores};
use crate::domain::Job;
use crate::ports::{JobQueue, OutgoingJob, RowLeases, StoreError, StoreResult};
use crate::providers::config::ProviderConfig;
use crate::providers::sandbox::{Sandbox, SandboxBehaviour};
use crate::providers::Providers;

/// The file in the data directory that injected store and queue faults are counted in, one line
/// per fault (`store before`, `queue after-commit`, …).
pub const FAULT_LOG: &str = "injected-faults.log";

/// A Herald on the embedded adapters, owning its data directory.
pub struct Local {
    pub herald: Arc<Herald>,
    pub store: Arc<EmbeddedStore>,
    pub queue: Arc<EmbeddedQueue>,
    pub sandbox: Arc<Sandbox>,
    pub data_dir: PathBuf,
    /// Held while this process owns the directory: one `herald serve` per data directory.
    _lock: File,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("another Herald is already serving from {0} (its lock file is held)")]
    Locked(PathBuf),
    #[error("cannot use data directory {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("provider settings: {0}")]
    Providers(String),
}

impl Local {
    /// Opens the directory for serving: takes its lock, then recovers what a killed process left
    /// behind (in-flight jobs become visible, `sending` rows become reclaimable).
    pub async fn open(dir: &Path, settings: Settings, sandbox: SandboxBehaviour) -> Result<Local, OpenError> {
        Local::open_with(dir, settings, sandbox, &ProviderConfig::default()).await
    }

    /// As [`Local::open`], with real providers for the channels `providers` configures.
    pub async fn open_with(
        dir: &Path,
        settings: Settings,
        sandbox: SandboxBehaviour,
        provider_config: &ProviderConfig,
    ) -> Result<Local, OpenError> {
        let io = |source| OpenError::Io { path: dir.to_path_buf(), source };
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = File::options().create(true).truncate(false).write(true).open(dir.join("serve.lock")).map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(OpenError::Locked(dir.to_path_buf())),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let (store, queue) = embedded::open(dir, settings.max_receives)?;
        let recovered = queue.recover_in_flight().await?;
        let reclaimable = store.expire_leases().await?;
        let keys = store.release_idempotency_locks().await?;
        store.purge_expired().await?;
        store.remove_partial_imports().await?;
        if recovered + reclaimable + keys > 0 {
            tracing::info!(jobs = recovered, rows = reclaimable, keys, "recovered work left by a previous run");
        }
        let sandbox = Arc::new(Sandbox::new(store.clone(), sandbox));
        let client = crate::providers::http::client(settings.provider_timeout + std::time::Duration::from_secs(1));
        let loopback = settings.allow_loopback_urls;
        let providers = Providers::from_config(provider_config, client, sandbox.clone(), store.clone(), loopback)
            .map_err(OpenError::Providers)?;
        let herald = Arc::new(
            Herald::new(
                Stores::from_one(store.clone()).with_imports(store.clone()).with_events(store.clone()),
                queue.clone(),
                providers,
                settings,
            )
            .with_provider_config(provider_config.clone())
            .with_dead_letters(queue.clone()),
        );
        Ok(Local { herald, store, queue, sandbox, data_dir: dir.to_path_buf(), _lock: lock })
    }

    /// Makes a share `rate` of the store's and the queue's calls fail with `Unavailable`, half
    /// before their work and half after it committed; each fault is appended to
    /// [`FAULT_LOG`] in the data directory. For soak tests only: nothing arms it by default.
    pub fn inject_faults(&self, rate: f64) -> Result<(Arc<Faults>, Arc<Faults>), OpenError> {
        let log = self.data_dir.join(FAULT_LOG);
        let io = |source| OpenError::Io { path: log.clone(), source };
        let store = Arc::new(Faults::new("store", rate).with_log(&log).map_err(io)?);
        let queue = Arc::new(Faults::new("queue", rate).with_log(&log).map_err(io)?);
        self.store.inject_faults(store.clone());
        self.queue.inject_faults(queue.clone());
        tracing::warn!(rate, "injecting store and queue faults");
        Ok((store, queue))
    }

    /// Starts `workers` delivery workers and the sweeper; they stop when `shutdown` turns true.
    pub fn spawn_workers(&self, workers: usize, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let wake = self.queue.wake_handle();
        let pool = crate::service::worker::run_pool(self.herald.deliver.clone(), workers, Some(wake), shutdown.clone());
        let grace = self.herald.settings.visibility;
        let every = (grace / 3).clamp(Duration::from_millis(100), Duration::from_secs(30));
        let sweeper = sweep_until(self.store.clone(), self.queue.clone(), grace, every, shutdown);
        tokio::spawn(async move {
            tokio::join!(pool, sweeper);
        })
    }

    /// One sweep with this directory's settings (see [`sweep`]).
    pub async fn sweep(&self) -> StoreResult<Swept> {
        sweep(&self.store, &self.queue, self.herald.settings.visibility).await
    }
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Rows given a fresh job.
    pub requeued: u64,
    /// Rows failed because their only job was dead-lettered.
    pub failed: u64,
}

/// Finds rows left pending with no job behind them and puts them right. A row that nothing has
/// touched for `grace` (last change, due time and lease all older) and that no job on the queue
/// names is given a fresh job; one whose only job is in the dead-letter table is failed, as the
/// worker would have done had it been able to write. Such rows come from store or queue writes
/// that failed where nothing could retry them (a dead-letter mark that would not take, an ingest
/// whose clean-up failed too).
///
/// A fresh job goes through the same claim as every job: a row sent meanwhile is `Done`, one
/// being sent is `Busy`, one whose worker died is reclaimed and its provider asked first. So a
/// sweep never causes a second provider call that a duplicate queue delivery would not.
pub async fn sweep(store: &EmbeddedStore, queue: &EmbeddedQueue, grace: Duration) -> StoreResult<Swept> {
    let cutoff = crate::domain::now() - chrono::Duration::from_std(grace).unwrap_or_default();
    // Behind a backlog older than the grace, rows are untouched because they wait their turn,
    // not because their job was lost: looking would read the whole backlog for nothing. The
    // sweep comes again once the workers have caught up.
    if queue.backlog_since(cutoff).await? {
        return Ok(Swept::default());
    }
    let stale = store.stale_pending(cutoff, 1000).await?;
    if stale.is_empty() {
        return Ok(Swept::default());
    }
    // Read after the rows: a job deleted in between belongs to a row that is no longer pending,
    // and requeueing that row is harmless.
    let (live, dead) = queue.rows_with_jobs().await?;
    let mut swept = Swept::default();
    let mut orphans = Vec::new();
    for row in stale {
        let key = (row.tenant_id.to_string(), row.id.clone());
        if live.contains(&key) {
            continue;
        }
        if dead.contains(&key) {
            let message = "could not be delivered: its job was dead-lettered";
            if store.fail_pending(&row.tenant_id, &row.id, message).await? {
                tracing::warn!(row_id = %row.id, "failed a pending row whose job was dead-lettered");
                swept.failed += 1;
            }
            continue;
        }
        tracing::warn!(row_id = %row.id, status = %row.status.as_str(), "row left pending with no job; requeueing it");
        orphans.push(row);
    }
    // Ten to a job where they share a request, as ingest queued them.
    orphans.sort_by(|a, b| (&a.tenant_id, &a.request_id, a.seq).cmp(&(&b.tenant_id, &b.request_id, b.seq)));
    let jobs: Vec<OutgoingJob> =
        Job::for_rows(&orphans).into_iter().map(|job| OutgoingJob { job, delay: Duration::ZERO }).collect();
    for chunk in jobs.chunks(100) {
        queue.send_batch(chunk).await?;
        swept.requeued += chunk.iter().map(|j| j.job.row_ids.len() as u64).sum::<u64>();
    }
    Ok(swept)
}

async fn sweep_until(
    store: Arc<EmbeddedStore>,
    queue: Arc<EmbeddedQueue>,
    grace: Duration,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            changed = shutdown.changed() => if changed.is_err() { break },
        }
        if *shutdown.borrow() {
            break;
        }
        match sweep(&store, &queue, grace).await {
            Ok(s) if s != Swept::default() => tracing::warn!(requeued = s.requeued, failed = s.failed, "swept rows"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not sweep; trying again later"),
        }
    }
}
