//! `herald serve`: the router and the worker pool on the embedded adapters.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use herald::local::Local;
use herald::providers::sandbox::{FailKind, SandboxBehaviour};
use herald::Settings;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "HERALD_ADDR")]
    addr: SocketAddr,
    /// Directory of the embedded store and queue.
    #[arg(long, default_value = ".herald", env = "HERALD_DATA_DIR")]
    data_dir: PathBuf,
    /// Delivery workers (concurrent provider calls).
    #[arg(long, default_value_t = 32, env = "HERALD_WORKERS")]
    workers: usize,
    /// Provider attempts per message before it is failed.
    #[arg(long, default_value_t = 5)]
    max_attempts: u32,
    /// Receives of a job that end without an answer (a crash, a poison body) before it is
    /// dead-lettered. Retries and waits never count: they go back as fresh jobs.
    #[arg(long, default_value_t = 10)]
    max_receives: u32,
    /// Base of the exponential retry backoff, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    backoff_base_ms: u64,
    /// Waits between a status event's posts to a subscriber that does not take it, in
    /// milliseconds, comma-separated (e.g. `200,200`; empty: one post only). After the last the
    /// event is a subscription failure. Replaces Standard Webhooks' schedule (5 s … 10 h, about
    /// 27 h) for tests.
    #[arg(long, value_name = "MS,MS,...")]
    event_retry_schedule_ms: Option<String>,
    /// Longest wait for one provider call, in milliseconds.
    #[arg(long, default_value_t = 15_000)]
    provider_timeout_ms: u64,
    /// Send requests per second each tenant may make (a burst of twice as many is allowed).
    #[arg(long, default_value_t = 50.0, env = "HERALD_TENANT_RPS")]
    tenant_rps: f64,
    /// Recipients per minute each tenant may send to.
    #[arg(long, default_value_t = 60_000.0, env = "HERALD_TENANT_RECIPIENTS_PER_MINUTE")]
    tenant_recipients_per_minute: f64,
    /// How long a claimed message belongs to its worker, in milliseconds (longer than the
    /// provider timeout).
    #[arg(long, default_value_t = 60_000)]
    lease_ms: u64,
    /// How long a received job stays hidden from other workers, in milliseconds (longer than
    /// the lease).
    #[arg(long, default_value_t = 90_000)]
    visibility_ms: u64,
    /// Make this share (0.0–1.0) of embedded store and queue calls fail, half before their work
    /// and half after it committed (soak tests only; counted in injected-faults.log in the data
    /// directory).
    #[arg(long, default_value_t = 0.0)]
    store_fault_rate: f64,
    /// Make the sandbox provider take this long per message (for tests).
    #[arg(long, default_value_t = 0, env = "HERALD_SANDBOX_DELAY_MS")]
    sandbox_delay_ms: u64,
    /// Make this share (0.0–1.0) of sandbox sends fail (for tests).
    #[arg(long, default_value_t = 0.0, env = "HERALD_SANDBOX_FAIL_RATE")]
    sandbox_fail_rate: f64,
    /// How sandbox failures behave: transient (retried) or permanent.
    #[arg(long, default_value = "transient", env = "HERALD_SANDBOX_FAIL_KIND")]
    sandbox_fail_kind: FailKind,
    /// Let tenants aim webhook endpoints and media links at this machine (http too): for a bot
    /// developed locally. Off by default, since any tenant could then make Herald post to any
    /// local port.
    #[arg(long, env = "HERALD_ALLOW_LOOPBACK_URLS")]
    allow_loopback_urls: bool,
    /// How long a client has to send a request's headers, in milliseconds.
    #[arg(long, default_value_t = 10_000, env = "HERALD_HEADER_TIMEOUT_MS")]
    header_timeout_ms: u64,
    /// How long a client has to send a request's body once its headers are in, in milliseconds.
    #[arg(long, default_value_t = 30_000, env = "HERALD_BODY_TIMEOUT_MS")]
    body_timeout_ms: u64,
    /// Open connections at most; past it the one idle longest is closed to make room.
    #[arg(long, default_value_t = 1024, env = "HERALD_MAX_CONNECTIONS")]
    max_connections: usize,
}

pub async fn run(args: ServeArgs) -> Result<(), String> {
    if !(0.0..=1.0).contains(&args.sandbox_fail_rate) {
        return Err("--sandbox-fail-rate must be between 0.0 and 1.0".into());
    }
    if !(0.0..=1.0).contains(&args.store_fault_rate) {
        return Err("--store-fault-rate must be between 0.0 and 1.0".into());
    }
    let provider_timeout = Duration::from_millis(args.provider_timeout_ms.max(10));
    let (lease, visibility) = (Duration::from_millis(args.lease_ms), Duration::from_millis(args.visibility_ms));
    if lease <= provider_timeout || visibility <= lease {
        return Err(
            "--lease-ms must be longer than --provider-timeout-ms, and --visibility-ms longer than --lease-ms".into()
        );
    }
    let tenant_limits = herald::service::admission::Limits::per_tenant(
        args.tenant_rps,
        args.tenant_recipients_per_minute,
        ("--tenant-rps", "--tenant-recipients-per-minute"),
    )?;
    let limits = connection_limits(&args)?;
    let settings = Settings {
        max_attempts: args.max_attempts.max(1),
        max_receives: args.max_receives.max(1),
        tenant_limits,
        allow_loopback_urls: args.allow_loopback_urls,
        backoff_base: Duration::from_millis(args.backoff_base_ms.max(1)),
        provider_timeout,
        lease,
        visibility,
        event_retry_schedule: retry_schedule(args.event_retry_schedule_ms.as_deref())?,
        ..Settings::default()
    };
    let behaviour = SandboxBehaviour {
        delay: Duration::from_millis(args.sandbox_delay_ms),
        fail_rate: args.sandbox_fail_rate,
        fail_kind: args.sandbox_fail_kind,
    };
    let providers = herald::providers::config::ProviderConfig::from_env().map_err(|e| e.to_string())?;
    let local = Local::open_with(&args.data_dir, settings, behaviour, &providers).await.map_err(|e| e.to_string())?;

    let seed = std::env::var("HERALD_API_KEY").ok().filter(|k| !k.is_empty());
    match herald::service::keys::bootstrap(local.herald.keys.as_ref(), seed.as_deref()).await {
        Ok(Some(key)) => {
            eprintln!("Created tenant \"default\". Its API key (shown once; Herald keeps only its hash):");
            println!("{key}");
        }
        Ok(None) => {}
        Err(e) => return Err(format!("HERALD_API_KEY: {e}")),
    }

    // Armed after start-up, so recovery and the key bootstrap run on a healthy store.
    let faults = match args.store_fault_rate {
        r if r > 0.0 => Some(local.inject_faults(r).map_err(|e| e.to_string())?),
        _ => None,
    };

    let listener =
        tokio::net::TcpListener::bind(args.addr).await.map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers = local.spawn_workers(args.workers, stop_rx);
    // One INFO line a second while there is traffic; each message is a DEBUG line of its own.
    let summary = tokio::spawn(herald::logging::summarise(std::time::Duration::from_secs(1)));
    tracing::info!(addr = %args.addr, data_dir = %args.data_dir.display(), workers = args.workers, "Herald is serving");

    let app = herald::http::router(local.herald.clone());
    herald::http::server::serve(listener, app, limits, async {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing the messages in hand");
    })
    .await
    .map_err(|e| format!("server error: {e}"))?;
    let _ = stop_tx.send(true);
    let _ = workers.await;
    summary.abort();
    if let Some((store, queue)) = faults {
        let ((sb, sa), (qb, qa)) = (store.counts(), queue.counts());
        tracing::warn!(
            store_before = sb,
            store_after_commit = sa,
            queue_before = qb,
            queue_after_commit = qa,
            "store and queue faults injected"
        );
    }
    Ok(())
}

fn connection_limits(args: &ServeArgs) -> Result<herald::http::server::Limits, String> {
    if args.header_timeout_ms == 0 || args.body_timeout_ms == 0 || args.max_connections == 0 {
        return Err("--header-timeout-ms, --body-timeout-ms and --max-connections must be above 0".into());
    }
    Ok(herald::http::server::Limits {
        header_timeout: Duration::from_millis(args.header_timeout_ms),
        body_timeout: Duration::from_millis(args.body_timeout_ms),
        max_connections: args.max_connections,
    })
}

/// `--event-retry-schedule-ms`: waits in milliseconds, comma-separated; empty for none, absent
/// for Standard Webhooks' schedule.
fn retry_schedule(list: Option<&str>) -> Result<Vec<Duration>, String> {
    const MAX_WAITS: usize = 20;
    const MAX_WAIT_MS: u64 = 24 * 3600 * 1000;
    let Some(list) = list else { return Ok(Settings::default().event_retry_schedule) };
    if list.trim().is_empty() {
        return Ok(Vec::new());
    }
    let waits = list
        .split(',')
        .map(|w| w.trim().parse::<u64>().ok().filter(|ms| *ms <= MAX_WAIT_MS).map(Duration::from_millis))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            format!(
                "--event-retry-schedule-ms must be waits in milliseconds (each at most {MAX_WAIT_MS}, a day) \
                 separated by commas, e.g. 200,200 (got {list:?})"
            )
        })?;
    if waits.len() > MAX_WAITS {
        return Err(format!("--event-retry-schedule-ms takes at most {MAX_WAITS} waits (got {})", waits.len()));
    }
    Ok(waits)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
