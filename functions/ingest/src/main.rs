//! Herald's ingest Lambda: API Gateway HTTP API → the same router `herald serve` uses.
//!
//! Until the AWS adapters land, it runs on the embedded adapters in `HERALD_DATA_DIR`
//! (default `/tmp/herald`), which is what `cargo lambda watch` uses locally.

use std::path::PathBuf;
use std::sync::Arc;

use herald::adapters::embedded;
use herald::app::{Herald, Settings, Stores};
use herald::providers::{sandbox::Sandbox, Providers};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tracing_subscriber::fmt().json().with_target(false).without_time().init();
    let dir = PathBuf::from(std::env::var("HERALD_DATA_DIR").unwrap_or_else(|_| "/tmp/herald".into()));
    let settings = Settings::default();
    let (store, queue) = embedded::open(&dir, settings.max_receives)?;
    if let Ok(seed) = std::env::var("HERALD_API_KEY") {
        herald::service::keys::bootstrap(store.as_ref(), Some(&seed)).await?;
    }
    let sandbox = Arc::new(Sandbox::new(store.clone(), Default::default()));
    let h = Arc::new(Herald::new(Stores::from_one(store), queue, Providers::all(sandbox), settings));
    lambda_http::run(herald::http::router(h)).await
}
