//! The ingest Lambda's entry point: configuration from the environment at start-up, clients
//! built on the first event, once per process.

use lambda_runtime::{service_fn, LambdaEvent};
use std::sync::Arc;
use tokio::sync::OnceCell;

use herald::app::aws::{AwsConfig, ConfigError};
use herald_ingest::Ingest;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt().json().with_target(false).without_time().init();
    // Reading the environment is cheap, so a missing setting still stops start-up; the clients
    // wait for the first event, so the runtime hears from a cold process sooner (BENCHMARKS.md 4).
    let config = AwsConfig::from_env()?;
    let events_tenant =
        std::env::var("EVENTS_TENANT").ok().filter(|t| !t.is_empty()).map(herald::domain::TenantId::from);
    let (config, events_tenant, ingest) = (&config, &events_tenant, &OnceCell::new());
    let connect = move || async move {
        let herald = Arc::new(config.clone().connect().await?);
        Ok::<_, ConfigError>(Ingest::new(herald, events_tenant.clone()))
    };
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        ingest.get_or_try_init(connect).await?.handle_in(event.payload, event.context).await
    }))
    .await
}
