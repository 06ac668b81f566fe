//! The local shape: embedded store and queue in one directory, the sandbox provider, the worker
//! pool. `herald serve` and the end-to-end tests assemble Herald through [`Local::open`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::adapters::embedded::{self, EmbeddedQueue, EmbeddedStore, Faults};
use crate::app::{Herald, Settings, Stores};
use crate::ports::StoreError;
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
        mut settings: Settings,
        sandbox: SandboxBehaviour,
        provider_config: &ProviderConfig,
    ) -> Result<Local, OpenError> {
        let io = |source| OpenError::Io { path: dir.to_path_buf(), source };
        settings.allow_loopback_webhooks = true;
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
        store.purge_expired().await?;
        if recovered + reclaimable > 0 {
            tracing::info!(jobs = recovered, rows = reclaimable, "recovered work left by a previous run");
        }
        let sandbox = Arc::new(Sandbox::new(store.clone(), sandbox));
        let client = crate::providers::http::client(settings.provider_timeout + std::time::Duration::from_secs(1));
        // Local mode may post webhooks to a bot on this machine; the AWS shape never may.
        let providers = Providers::from_config(provider_config, client, sandbox.clone(), store.clone(), true)
            .map_err(OpenError::Providers)?;
        let herald = Arc::new(
            Herald::new(Stores::from_one(store.clone()), queue.clone(), providers, settings)
                .with_provider_config(provider_config.clone()),
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

    /// Starts `workers` delivery workers; they stop when `shutdown` turns true.
    pub fn spawn_workers(&self, workers: usize, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        let wake = self.queue.wake_handle();
        tokio::spawn(crate::service::worker::run_pool(self.herald.clone(), workers, Some(wake), shutdown))
    }
}
