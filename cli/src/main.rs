//! `herald`: run Herald locally and talk to a running Herald.

mod chaos;
mod client;
mod serve;
mod soak;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "Herald: one HTTP call, a message on any channel, tracked to its final status"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "human", env = "HERALD_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API on a local socket with the embedded store, queue and sandbox provider.
    Serve(serve::ServeArgs),
    /// Manage API keys in a data directory.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Inspect and redrive jobs in the local dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Fault-injection run: a real herald serve, a chaos provider, SIGKILLs; counts lost and
    /// duplicated messages and fails if any were lost.
    Soak(soak::SoakArgs),
    /// Send a message through a running Herald (POST /v1/broadcasts).
    Send(client::SendArgs),
    /// Follow a send request until every row is terminal, then print its rows.
    Status(client::StatusArgs),
    /// Import a CSV file of contacts into a segment of a running Herald (POST /v1/imports), with
    /// a progress bar, then print the import's counts and refused lines.
    Import(client::ImportArgs),
    /// Print the OpenAPI document of the API, as `GET /openapi.json` serves it
    /// (`herald openapi > docs/openapi.json`).
    Openapi,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a tenant's API key and print it once (only its hash is stored).
    Create {
        /// Tenant name; created if it does not exist.
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List a tenant's keys (prefixes only).
    List {
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Revoke a tenant's key by the prefix `keys list` shows; it stops working at once.
    /// To rotate a key, create a new one, move your clients to it, then revoke the old one.
    Revoke {
        #[arg(long)]
        tenant: String,
        /// The key's prefix, as `keys list` shows it (e.g. hk_3f9a2b1c).
        #[arg(long)]
        prefix: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// The dead-lettered jobs with their rows' status and reason.
    List {
        #[arg(long, default_value = ".herald", env = "HERALD_DATA_DIR")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Put every dead-lettered job back on the queue (a running `herald serve` picks them up).
    /// A job whose row already ended (`failed` after its last try) is dropped when it comes back.
    Redrive {
        #[arg(long, default_value = ".herald", env = "HERALD_DATA_DIR")]
        data_dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct StoreArgs {
    /// Data directory of the embedded store.
    #[arg(long, default_value = ".herald", env = "HERALD_DATA_DIR")]
    data_dir: PathBuf,
    /// Which store holds the keys: the embedded one, or an AWS deployment's DynamoDB table
    /// (named by TABLE_NAME; needs a herald built with `--features aws`).
    #[arg(long, value_enum, default_value = "embedded")]
    store: StoreKind,
}

#[derive(Clone, Copy, ValueEnum)]
enum StoreKind {
    Embedded,
    Dynamodb,
}

impl StoreArgs {
    async fn open(&self) -> Result<std::sync::Arc<dyn herald::ports::ApiKeys>, String> {
        match self.store {
            StoreKind::Embedded => {
                let (store, _) = herald::adapters::embedded::open(&self.data_dir, 10).map_err(|e| e.to_string())?;
                Ok(store)
            }
            #[cfg(feature = "aws")]
            StoreKind::Dynamodb => {
                Ok(std::sync::Arc::new(herald::app::aws::store_from_env().await.map_err(|e| e.to_string())?))
            }
            #[cfg(not(feature = "aws"))]
            StoreKind::Dynamodb => Err(
                "this herald was built without AWS support: run it with `cargo run --release --features aws -- keys …`"
                    .into(),
            ),
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Keys { command: KeysCommand::Create { tenant, store } } => keys_create(&tenant, &store).await,
        Command::Keys { command: KeysCommand::List { tenant, store } } => keys_list(&tenant, &store).await,
        Command::Keys { command: KeysCommand::Revoke { tenant, prefix, store } } => {
            keys_revoke(&tenant, &prefix, &store).await
        }
        Command::Dlq { command: DlqCommand::List { data_dir, limit } } => dlq_list(&data_dir, limit).await,
        Command::Dlq { command: DlqCommand::Redrive { data_dir } } => dlq_redrive(&data_dir).await,
        Command::Soak(args) => soak::run(args).await,
        Command::Send(args) => client::send(args).await,
        Command::Status(args) => client::status(args).await,
        Command::Import(args) => client::import(args).await,
        Command::Openapi => openapi().await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The document is built with the router, which wants a wired Herald: a throwaway one does.
async fn openapi() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let local = herald::local::Local::open(dir.path(), herald::Settings::default(), Default::default())
        .await
        .map_err(|e| e.to_string())?;
    println!("{}", herald::http::openapi(&local.herald));
    Ok(())
}

async fn keys_create(tenant: &str, store: &StoreArgs) -> Result<(), String> {
    let store = store.open().await?;
    let key = herald::service::keys::create_key(store.as_ref(), tenant, None).await.map_err(|e| e.to_string())?;
    eprintln!("API key for tenant {tenant:?} (shown once; Herald keeps only its hash):");
    println!("{key}");
    // On stderr, so `KEY=$(herald keys create …)` still captures the key alone.
    eprintln!("Twilio account SID (the Twilio dialect's username): {}", herald::dialects::twilio::account_sid(tenant));
    Ok(())
}

async fn keys_list(tenant: &str, store: &StoreArgs) -> Result<(), String> {
    let tenant = parse_tenant(tenant)?;
    let store = store.open().await?;
    let keys = store.list_keys(&tenant).await.map_err(|e| e.to_string())?;
    if keys.is_empty() {
        return Err(format!("tenant {tenant:?} has no keys"));
    }
    println!("{:<14} {:<26} STATE", "PREFIX", "CREATED");
    for k in keys {
        let state = if k.revoked_at.is_some() { "revoked" } else { "active" };
        println!("{:<14} {:<26} {}", format!("{}…", k.display_prefix), k.created_at.to_rfc3339(), state);
    }
    Ok(())
}

async fn keys_revoke(tenant: &str, prefix: &str, store: &StoreArgs) -> Result<(), String> {
    let tenant = parse_tenant(tenant)?;
    let store = store.open().await?;
    let prefix = prefix.trim_end_matches('…');
    let keys = store.list_keys(&tenant).await.map_err(|e| e.to_string())?;
    let matching: Vec<_> = keys.iter().filter(|k| k.display_prefix.starts_with(prefix) && prefix.len() >= 6).collect();
    let key = match matching.as_slice() {
        [one] => one,
        [] => return Err(format!("tenant {tenant:?} has no key with prefix {prefix:?} (see `herald keys list`)")),
        _ => return Err(format!("prefix {prefix:?} matches {} keys; give more of it", matching.len())),
    };
    if key.revoked_at.is_some() {
        return Err(format!("key {}… is already revoked", key.display_prefix));
    }
    store.revoke_key(&tenant, &key.lookup, chrono_now()).await.map_err(|e| e.to_string())?;
    eprintln!("revoked key {}… of tenant {tenant:?}", key.display_prefix);
    Ok(())
}

/// A `--tenant` argument, under the rules every tenant id was created with.
fn parse_tenant(tenant: &str) -> Result<herald::domain::TenantId, String> {
    herald::domain::TenantId::parse(tenant).map_err(|m| format!("tenant {m}"))
}

fn chrono_now() -> herald::domain::DateTimeUtc {
    herald::domain::now()
}

async fn dlq_list(dir: &std::path::Path, limit: u32) -> Result<(), String> {
    use herald::ports::StatusLookup;
    let (store, queue) = herald::adapters::embedded::open(dir, 10).map_err(|e| e.to_string())?;
    let dead = queue.dead_letters(limit).await.map_err(|e| e.to_string())?;
    if dead.is_empty() {
        println!("the dead-letter queue is empty");
        return Ok(());
    }
    println!("{:<38} {:<44} {:>8}  {:<26} STATUS / REASON", "MESSAGE", "ROW", "RECEIVES", "DEAD SINCE");
    for d in dead {
        let job: Option<herald::domain::Job> = serde_json::from_str(&d.body).ok();
        let mut lines = Vec::new();
        match &job {
            None => lines.push(("(not a Herald job)".to_string(), "-".to_string())),
            // A job may name several rows: a line each.
            Some(j) => {
                for id in &j.row_ids {
                    lines.push(match store.get_row(&j.tenant_id, id).await.map_err(|e| e.to_string())? {
                        Some(r) => (r.id.clone(), format!("{} {}", r.status, r.error_message.unwrap_or_default())),
                        None => (id.clone(), "(no such row)".into()),
                    });
                }
            }
        }
        for (row, state) in lines {
            println!(
                "{:<38} {:<44} {:>8}  {:<26} {}",
                d.message_id,
                row,
                d.receive_count,
                d.dead_at.to_rfc3339(),
                state.trim()
            );
        }
    }
    Ok(())
}

async fn dlq_redrive(dir: &std::path::Path) -> Result<(), String> {
    let (_, queue) = herald::adapters::embedded::open(dir, 10).map_err(|e| e.to_string())?;
    let n = queue.redrive().await.map_err(|e| e.to_string())?;
    eprintln!("moved {n} job(s) from the dead-letter queue back onto the queue");
    Ok(())
}
