//! The ingest Lambda's entry point: configuration from the environment, clients built once.

use lambda_runtime::{service_fn, LambdaEvent};
use std::sync::Arc;

use herald::adapters::aws::AwsConfig;
use herald_ingest::Ingest;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt().json().with_target(false).without_time().init();
    let herald = Arc::new(AwsConfig::from_env()?.connect().await?);
    let ingest = Arc::new(Ingest::new(herald, std::env::var("EVENTS_TENANT").ok().filter(|t| !t.is_empty())));
    lambda_runtime::run(service_fn(|event: LambdaEvent<serde_json::Value>| {
        let ingest = ingest.clone();
        async move { ingest.handle(event.payload).await }
    }))
    .await
}
